"""
A/B of line-echo servers in one run: the tool for deciding whether a change
to the send or receive path is worth keeping before a full C{make bench}.

Each peer is one of C{bench/servers/*_echo.py}, optionally run against
another checkout of txstateproto (a C{git worktree} of the commit before the
change), so that the old and the new code are measured side by side, in
alternating order, with the same client (C{lineblast}, built as
C{bench/run.py} builds it). It prints each window as it is measured, then
per peer the median rate and the median (min-max) of its per-run ratio to
the first peer.

Usage, from the repository root::

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/ab_echo.py \\
        lr=linereceiver_echo.py old=stateproto_echo.py@/tmp/before \\
        new=stateproto_echo.py --cell "-c 100 -k 32 -s 16" --runs 5

A peer is C{name=server} or C{name=server@checkout}: C{server} is a file of
C{bench/servers/}, C{checkout} a directory put first on the server's
C{PYTHONPATH} (so its C{txstateproto} is the one imported). C{--cell} is
C{lineblast}'s connection, in-flight and size options. The client and the
servers share the machine's cores (two here): compare within a run.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

from _harness import REPO, build_loadgen

SERVERS = REPO / "bench" / "servers"


def start(server: str, checkout: str | None) -> tuple[subprocess.Popen[str], int]:
    """
    Start C{bench/servers/<server>} on a free port and read the port it
    announces.

    @return: The process and its port.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [path for path in (checkout, str(REPO)) if path is not None]
    )
    process = subprocess.Popen(
        [sys.executable, str(SERVERS / server), "--port", "0"],
        cwd=SERVERS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    found = re.search(r"PORT (\d+)", line)
    if found is None:
        process.kill()
        raise SystemExit(f"{server} did not announce a port: {line!r}")
    return process, int(found.group(1))


def main() -> int:
    """
    Measure the peers and print the comparison.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("peers", nargs="+", help="name=server.py[@checkout]")
    parser.add_argument("--cell", default="-c 100 -k 32 -s 16")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    options = parser.parse_args()
    blast = build_loadgen("lineblast", lambda text: print(text, flush=True))
    started: dict[str, tuple[subprocess.Popen[str], int]] = {}
    try:
        for peer in options.peers:
            name, _, spec = peer.partition("=")
            server, _, checkout = spec.partition("@")
            started[name] = start(server, checkout or None)
        rates: dict[str, list[float]] = {name: [] for name in started}
        names = list(started)
        for run in range(options.runs):
            # Rotated from run to run, so no peer always goes first.
            for name in names[run % len(names) :] + names[: run % len(names)]:
                process, port = started[name]
                out = subprocess.run(
                    [
                        str(blast),
                        "echo",
                        "-p",
                        str(port),
                        *options.cell.split(),
                        "-w",
                        str(options.warmup),
                        "-d",
                        str(options.duration),
                        "-P",
                        str(process.pid),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                fields = dict(re.findall(r"(\w+)=([\d.]+)", out))
                rates[name].append(float(fields["per_sec"]))
                print(
                    f"run {run + 1}/{options.runs} {name}: "
                    f"{float(fields['per_sec']):,.0f} lines/s, server "
                    f"{fields.get('server_cpu', '?')} cores, client "
                    f"{fields['client_cpu']} cores",
                    flush=True,
                )
    finally:
        for process, _port in started.values():
            process.terminate()
            process.wait()
    base = names[0]
    print(f"\n{options.cell}, {options.runs} runs, {os.cpu_count()} CPU(s) shared")
    for name in names:
        ratios = [a / b for a, b in zip(rates[name], rates[base], strict=True)]
        print(
            f"{name}: {statistics.median(rates[name]):,.0f} lines/s, "
            f"{statistics.median(ratios):.2f}x {base} "
            f"({min(ratios):.2f}-{max(ratios):.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
