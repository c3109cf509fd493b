"""
Scenario 2: 32-bit length-prefixed frames, txstateproto against Twisted's
C{Int32StringReceiver}, in one run.

Two measurements, both with the two peers side by side:

  1. Echo throughput. Each peer is a server in its own process on a
     127.0.0.1 port (this script re-run with C{--serve PEER}): a
     L{StateProtocol} whose handler is C{read_frame} / C{write_frame} from
     L{txstateproto.protocols.prefixed}, and an C{Int32StringReceiver} whose
     C{stringReceived} calls C{sendString}. The load comes from
     C{frameblast}, a C client built here from C{bench/loadgen/frameblast.c}
     with the system compiler (epoll, one thread, every echoed byte checked),
     sending 64-byte frames pipelined, in two cells: one connection with 64
     frames in flight, and 16 connections with 16 each. A run is one pass
     over every cell and both peers, with a fresh server each time and the
     peers' order alternating from run to run; each figure is the median
     over the runs, with min-max, and the ratio is ours divided by
     C{Int32StringReceiver}'s in the same run. The client reports its own CPU
     time: far below one core means it was not the bottleneck.

  2. Large frames, in-process: the time to receive one 16 MiB and one 64 MiB
     frame fed in 64 KiB reads (C{dataReceived} calls) to each peer over an
     in-memory transport, median of 3 runs (C{--large-runs}), in a child
     process that keeps freed memory (see L{LARGE_CHILD_ENV}). A receiver
     that copies what it has buffered on every read (as
     C{IntNStringReceiver.dataReceived} does) is quadratic in the frame
     size; ours must be linear, so its 64 MiB time is about 4 times its
     16 MiB time. C{--quick} uses 4 and 16 MiB instead (the same factor of
     4), once.

Usage, from the repository root::

    PYTHONPATH=. .venv/bin/python bench/frames.py            # 5 runs: 5 to 10 minutes
    PYTHONPATH=. .venv/bin/python bench/frames.py --quick    # 1 short run: ~15 s
    PYTHONPATH=. .venv/bin/python bench/frames.py --json bench/results/frames.json

The Markdown tables go to stdout (and to C{bench/results/frames.md}),
progress to stderr; C{--json PATH} also writes every figure as JSON (the
layout is described in L{write_json}). C{bench/run.py} runs this script as
its scenario 2. Nothing here is imported by the library or the test suite.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import (
    BUILD,
    REPO,
    RESULTS,
    BenchError,
    ServerProcess,
    build_loadgen,
    cc_version,
    parse_pairs,
)

REPORT = RESULTS / "frames.md"
LOADGEN = BUILD / "frameblast"

#: The peers: key -> what the tables call it. The first is the reference.
PEERS = {
    "int32": "Twisted `Int32StringReceiver`",
    "stateproto": "txstateproto `read_frame`/`write_frame`",
}
BASELINE = "int32"

#: The large-frame case also times the floor: bytearray appends and one copy.
FLOOR = "floor"
FLOOR_LABEL = "floor: `bytearray +=` each read, one copy"

#: Echo cells: name -> (connections, frames in flight per connection).
CELLS = {
    "1 conn x 64 in flight": (1, 64),
    "16 conns x 16 in flight": (16, 16),
}
FRAME_SIZE = 64

#: Large frames, fed in reads of this size. --quick uses 4 and 16 MiB: the
#: same factor of 4 between the two, without Twisted's quadratic 64 MiB case
#: (20 to 100 s per run on a shared machine).
LARGE_SIZES = (16 * 1024 * 1024, 64 * 1024 * 1024)
QUICK_LARGE_SIZES = (4 * 1024 * 1024, 16 * 1024 * 1024)
READ_SIZE = 64 * 1024

DASH = "\u2013"


def progress(message: str) -> None:
    """
    Say what is happening, on stderr (stdout is the table).
    """
    sys.stderr.write(f"frames.py: {message}\n")
    sys.stderr.flush()


# -- the servers (this script with --serve) -----------------------------------


def serve(peer: str, port: int) -> None:
    """
    Serve 32-bit length-prefixed echo with C{peer} on 127.0.0.1 until
    SIGTERM, after printing C{PORT <n> LOOP <reactor class>}.

    @param peer: C{"stateproto"} or C{"int32"}.
    @param port: The port, or 0 for any free one.
    """
    from twisted.internet import reactor
    from twisted.internet.address import IPv4Address
    from twisted.internet.protocol import Protocol, ServerFactory

    factory = ServerFactory()
    protocol_class = _echo_class(peer)
    factory.protocol = protocol_class
    listening = reactor.listenTCP(port, factory, backlog=1024, interface="127.0.0.1")
    address = listening.getHost()
    assert isinstance(address, IPv4Address)
    kind = type(reactor)
    sys.stdout.write(
        f"PORT {address.port} LOOP {kind.__module__}.{kind.__qualname__}\n"
    )
    sys.stdout.flush()
    assert issubclass(protocol_class, Protocol)
    reactor.run()


def _echo_class(peer: str) -> Any:
    """
    The echo protocol class of C{peer}, written the way a user would.
    """
    if peer == "int32":
        from twisted.protocols.basic import Int32StringReceiver

        class Int32Echo(Int32StringReceiver):
            def stringReceived(self, string: bytes) -> None:
                self.sendString(string)  # type: ignore[no-untyped-call]

        return Int32Echo

    from txstateproto import StateProtocol
    from txstateproto.protocols import read_frame, write_frame

    class FrameEcho(StateProtocol):
        def start(self) -> Generator[Any, Any, None]:
            while True:
                frame = yield read_frame(self)
                write_frame(self, frame)

    return FrameEcho


class Server(ServerProcess):
    """
    One peer's echo server process (this script with C{--serve}), in its own
    session (so the scheduler does not make it share the client's CPU share).

    @ivar peer: Whose server it is.
    """

    def __init__(self, peer: str) -> None:
        self.peer = peer
        super().__init__(
            [sys.executable, str(Path(__file__).resolve()), "--serve", peer],
            RESULTS / f"frames-server-{peer}.log",
            f"the {peer} server",
        )


# -- the client -----------------------------------------------------------------


def blast(
    server: Server, conns: int, inflight: int, settings: Settings
) -> dict[str, float]:
    """
    Run C{frameblast} once against C{server} and return its figures.

    @raise BenchError: On a mismatch, a closed connection, or a hang.
    """
    command = [
        str(LOADGEN),
        "-p",
        str(server.port),
        "-c",
        str(conns),
        "-k",
        str(inflight),
        "-s",
        str(FRAME_SIZE),
        "-w",
        str(settings.warmup),
        "-d",
        str(settings.duration),
        "-P",
        str(server.process.pid),
        "-T",
        "120",
    ]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            timeout=settings.warmup + settings.duration + 60,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"frameblast hung: {' '.join(command)}") from e
    if done.returncode != 0:
        raise BenchError(f"frameblast failed against {server.peer}: {done.stderr}")
    pairs = parse_pairs(done.stdout)
    return {
        key: float(pairs[key])
        for key in ("per_sec", "client_cpu", "server_cpu", "machine_cpu")
        if key in pairs
    }


# -- large frames, in-process -------------------------------------------------


def _chunks(size: int) -> list[bytes]:
    """
    One frame of C{size} bytes with its 32-bit prefix, cut in 64 KiB reads.
    """
    body = bytes(range(256)) * (size // 256) + bytes(size % 256)
    stream = size.to_bytes(4, "big") + body
    del body
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def _floor(size: int) -> float:
    """
    The least any receiver can do with one frame of C{size} bytes in 64 KiB
    reads: append each read to a C{bytearray}, then copy the body out once.
    Its growth from one size to the next is the memory system's, not a
    parser's.

    @return: Seconds.
    """
    chunks = _chunks(size)
    gc.collect()
    start = time.perf_counter()
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
    body = bytes(memoryview(buffer)[4:])
    elapsed = time.perf_counter() - start
    if len(body) != size:
        raise BenchError("the floor lost bytes")
    return elapsed


def receive_large(peer: str, size: int) -> float:
    """
    Feed one frame of C{size} bytes in 64 KiB reads to C{peer} over an
    in-memory transport and time it until the frame is delivered.

    @return: Seconds from the first read to the frame being delivered.
    @raise BenchError: If the frame is not delivered whole.
    """
    from twisted.internet.testing import StringTransport
    from twisted.protocols.basic import Int32StringReceiver

    from txstateproto import StateProtocol
    from txstateproto.protocols import read_frame

    got: list[int] = []
    protocol: Any
    if peer == FLOOR:
        return _floor(size)
    if peer == "int32":

        class Int32Sink(Int32StringReceiver):
            MAX_LENGTH = 2**31

            def stringReceived(self, string: bytes) -> None:
                got.append(len(string))

        protocol = Int32Sink()
    else:

        class FrameSink(StateProtocol):
            max_frame_size = 2**31

            def start(self) -> Generator[Any, Any, None]:
                frame = yield read_frame(self)
                got.append(len(frame))

        protocol = FrameSink()
    protocol.makeConnection(StringTransport())
    chunks = _chunks(size)
    gc.collect()
    received = protocol.dataReceived
    start = time.perf_counter()
    for chunk in chunks:
        received(chunk)
    elapsed = time.perf_counter() - start
    if got != [size]:
        raise BenchError(f"{peer} delivered {got} for one frame of {size} bytes")
    return elapsed


#: The environment of the large-frame child: glibc keeps freed memory in the
#: process (no mmap per large block, no trimming), so that after one
#: unmeasured pass both sizes reuse pages already touched. Otherwise glibc
#: maps every block over 32 MiB (its largest dynamic mmap threshold) fresh,
#: and on a VM whose first touch of a page is slow the 64 MiB case measures
#: page faults: the floor alone grew 17.6 times for 4 times the size.
LARGE_CHILD_ENV = {
    "MALLOC_MMAP_THRESHOLD_": str(2**30),
    "MALLOC_TRIM_THRESHOLD_": str(2**32),
}


def large_in_child(settings: Settings) -> dict[int, dict[str, list[float]]]:
    """
    Run the large-frame measurements in a child process (see
    L{LARGE_CHILD_ENV}) and return its times.

    @return: Frame size -> peer key (and C{floor}) -> seconds per run.
    @raise BenchError: If the child fails.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO), **LARGE_CHILD_ENV)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--large-child",
        json.dumps({"sizes": list(settings.large_sizes), "runs": settings.large_runs}),
    ]
    done = subprocess.run(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, text=True, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"the large-frame child exited {done.returncode}")
    raw = json.loads(done.stdout)
    return {int(size): by_peer for size, by_peer in raw.items()}


def large_child(spec: str) -> None:
    """
    The large-frame child: one unmeasured pass of the floor at the largest
    size (it touches the pages every later pass reuses), then the runs; the
    times go to stdout as JSON.

    @param spec: JSON with C{sizes} and C{runs}.
    """
    options = json.loads(spec)
    sizes = [int(size) for size in options["sizes"]]
    _floor(max(sizes))
    times: dict[int, dict[str, list[float]]] = {
        size: {peer: [] for peer in [*PEERS, FLOOR]} for size in sizes
    }
    runs = int(options["runs"])
    for run in range(runs):
        for size in sizes:
            order = list(PEERS) if run % 2 == 0 else list(reversed(PEERS))
            for peer in [*order, FLOOR]:
                seconds = receive_large(peer, size)
                times[size][peer].append(seconds)
                progress(
                    f"large run {run + 1}/{runs} {size >> 20} MiB {peer}: "
                    f"{seconds:.3f} s"
                )
    sys.stdout.write(json.dumps(times) + "\n")


# -- the run ------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """
    How long and how often to measure.
    """

    runs: int
    warmup: float
    duration: float
    large_runs: int
    large_sizes: tuple[int, int]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """
    The values with their median, minimum and maximum.
    """
    return {
        "values": list(values),
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def measure(settings: Settings) -> dict[str, Any]:
    """
    Run both measurements and return every figure.
    """
    build_loadgen("frameblast", progress)
    echo: dict[str, Any] = {}
    samples: dict[str, dict[str, list[dict[str, float]]]] = {
        cell: {peer: [] for peer in PEERS} for cell in CELLS
    }
    loops: dict[str, str] = {}
    for run in range(settings.runs):
        order = list(PEERS) if run % 2 == 0 else list(reversed(PEERS))
        for cell, (conns, inflight) in CELLS.items():
            for peer in order:
                server = Server(peer)
                try:
                    loops[peer] = server.loop
                    figures = blast(server, conns, inflight, settings)
                finally:
                    server.stop()
                samples[cell][peer].append(figures)
                progress(
                    f"run {run + 1}/{settings.runs} {cell} {peer}: "
                    f"{figures['per_sec']:.0f} frames/s"
                )
    for cell, by_peer in samples.items():
        entry: dict[str, Any] = {
            "connections": CELLS[cell][0],
            "in_flight": CELLS[cell][1],
        }
        for peer, runs in by_peer.items():
            entry[peer] = {
                "frames_per_sec": summary([r["per_sec"] for r in runs]),
                "client_cpu": summary([r.get("client_cpu", 0.0) for r in runs]),
                "server_cpu": summary([r.get("server_cpu", 0.0) for r in runs]),
                "machine_cpu": summary([r.get("machine_cpu", 0.0) for r in runs]),
            }
        entry["ratio"] = summary(
            [
                mine["per_sec"] / base["per_sec"]
                for mine, base in zip(
                    by_peer["stateproto"], by_peer[BASELINE], strict=True
                )
            ]
        )
        echo[cell] = entry

    large: dict[str, Any] = {}
    times: dict[int, dict[str, list[float]]] = {
        size: {peer: [] for peer in [*PEERS, FLOOR]} for size in settings.large_sizes
    }
    for size, timed in large_in_child(settings).items():
        for peer, values in timed.items():
            times[size][peer] = values
    for size, seconds in times.items():
        size_entry = {peer: summary(values) for peer, values in seconds.items()}
        size_entry["vs_floor"] = summary(
            [
                mine / floor
                for mine, floor in zip(
                    seconds["stateproto"], seconds[FLOOR], strict=True
                )
            ]
        )
        size_entry["ratio"] = summary(
            [
                mine / base
                for mine, base in zip(
                    seconds["stateproto"], seconds[BASELINE], strict=True
                )
            ]
        )
        large[f"{size >> 20} MiB"] = size_entry
    small, big = settings.large_sizes
    growth = {
        peer: summary(
            [b / s for s, b in zip(times[small][peer], times[big][peer], strict=True)]
        )
        for peer in [*PEERS, FLOOR]
    }
    return {
        "machine": machine_facts(loops),
        "settings": {
            "runs": settings.runs,
            "warmup_s": settings.warmup,
            "duration_s": settings.duration,
            "large_runs": settings.large_runs,
            "large_sizes": list(settings.large_sizes),
            "frame_size": FRAME_SIZE,
            "read_size": READ_SIZE,
        },
        "peers": PEERS,
        "echo": echo,
        "large": large,
        "large_growth": {
            "sizes": [small, big],
            "linear_would_be": big / small,
            **growth,
        },
    }


def machine_facts(loops: dict[str, str]) -> dict[str, Any]:
    """
    What the figures belong to.
    """
    import twisted

    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "reactors": loops,
        "cc": cc_version(),
    }


# -- the report -------------------------------------------------------------------


def _span(entry: dict[str, Any], fmt: str) -> str:
    """
    C{median (min-max)} of a summary.
    """
    return f"{entry['median']:{fmt}} ({entry['min']:{fmt}}{DASH}{entry['max']:{fmt}})"


def render(results: dict[str, Any]) -> str:
    """
    The Markdown tables.
    """
    settings = results["settings"]
    ours, base = PEERS["stateproto"], PEERS[BASELINE]
    lines = [
        f"### 32-bit length-prefixed echo, {settings['frame_size']} B frames, frames/s",
        "",
        f"Median of {settings['runs']} run(s) (min{DASH}max); each run a fresh server "
        f"per peer, {settings['warmup_s']} s warm-up, {settings['duration_s']} s "
        "window. Ratio: ours / "
        f"{base} in the same run (above 1 is faster).",
        "",
        f"| cell | {base} | {ours} | ratio | server CPU (cores), ours / theirs "
        "| client CPU (cores, max) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for cell, entry in results["echo"].items():
        client = max(entry[p]["client_cpu"]["max"] for p in PEERS)
        lines.append(
            f"| {cell} | {_span(entry[BASELINE]['frames_per_sec'], ',.0f')} "
            f"| {_span(entry['stateproto']['frames_per_sec'], ',.0f')} "
            f"| {_span(entry['ratio'], '.2f')} "
            f"| {entry['stateproto']['server_cpu']['median']:.2f} / "
            f"{entry[BASELINE]['server_cpu']['median']:.2f} "
            f"| {client:.2f} |"
        )
    growth = results["large_growth"]
    lines += [
        "",
        f"### One large frame received in {settings['read_size'] >> 10} KiB reads, "
        "in-process, seconds",
        "",
        f"Median of {settings['large_runs']} run(s) (min{DASH}max). Ratio: ours / "
        f"{base}. Growth: time for {growth['sizes'][1] >> 20} MiB / time for "
        f"{growth['sizes'][0] >> 20} MiB (linear is "
        f"{growth['linear_would_be']:.0f}, quadratic "
        f"{growth['linear_would_be'] ** 2:.0f}). The floor is the least any "
        "receiver does (append each read, copy the body out once); a linear "
        "parser tracks it, so ours / floor stays near 1 at every size. Measured "
        "in a child process where glibc keeps freed memory "
        "(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), after one "
        "unmeasured pass, so that both sizes reuse touched pages instead of "
        "timing first-touch page faults.",
        "",
        f"| frame | {base} | {ours} | ratio | {FLOOR_LABEL} | ours / floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for size, entry in results["large"].items():
        lines.append(
            f"| {size} | {_span(entry[BASELINE], '.3f')} "
            f"| {_span(entry['stateproto'], '.3f')} | {_span(entry['ratio'], '.3f')} "
            f"| {_span(entry[FLOOR], '.3f')} | {_span(entry['vs_floor'], '.2f')} |"
        )
    lines.append(
        f"| growth | {_span(growth[BASELINE], '.1f')} "
        f"| {_span(growth['stateproto'], '.1f')} | | {_span(growth[FLOOR], '.1f')} | |"
    )
    machine = results["machine"]
    lines += [
        "",
        f"Python {machine['python']} ({machine['implementation']}), Twisted "
        f"{machine['twisted']}, {machine['cpus']} CPUs, load average at the end "
        f"{machine['load_average'][0]:.2f}; client `frameblast` built with "
        f"{machine['cc']} (`-O2`).",
    ]
    return "\n".join(lines) + "\n"


def write_json(results: dict[str, Any], path: Path) -> None:
    """
    Write every figure as JSON.

    Layout: C{machine} (versions, CPUs, load), C{settings}, C{peers} (key ->
    label), C{echo} (cell -> C{connections}, C{in_flight}, per peer key
    C{frames_per_sec}/C{client_cpu}/C{server_cpu}/C{machine_cpu} summaries,
    and C{ratio}), C{large} (C{"16 MiB"}/C{"64 MiB"} -> per peer key and
    C{floor} a summary of seconds, C{ratio}, and C{vs_floor}: ours / floor),
    C{large_growth} (per peer key and C{floor} a summary of the large / small
    time ratio, C{sizes}, C{linear_would_be}). A summary is C{values},
    C{median}, C{min}, C{max}; ratios are ours / C{int32} in the same run.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    """
    Measure, print the tables, write the report (and the JSON if asked).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 short run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--large-runs",
        type=int,
        default=3,
        help="runs of the large-frame case (default 3: Twisted's 64 MiB frame "
        "takes 20 to 100 s per run)",
    )
    parser.add_argument(
        "--serve", choices=sorted(PEERS), help=argparse.SUPPRESS
    )  # internal: be one of the servers
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--large-child", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.serve:
        serve(options.serve, options.port)
        return 0
    if options.large_child:
        large_child(options.large_child)
        return 0
    if options.quick:
        settings = Settings(
            runs=1,
            warmup=0.3,
            duration=0.7,
            large_runs=1,
            large_sizes=QUICK_LARGE_SIZES,
        )
    else:
        settings = Settings(
            runs=5,
            warmup=1.0,
            duration=3.0,
            large_runs=options.large_runs,
            large_sizes=LARGE_SIZES,
        )
    try:
        results = measure(settings)
    except BenchError as e:
        progress(f"error: {e}")
        return 1
    table = render(results)
    sys.stdout.write(table)
    RESULTS.mkdir(exist_ok=True)
    REPORT.write_text(table, encoding="utf-8")
    progress(f"wrote {REPORT}")
    if options.json:
        write_json(results, options.json)
        progress(f"wrote {options.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
