"""
The side-by-side benchmark: every peer in the same run, ratios to the named one.

One command measures issue 9's scenarios 1 (line echo), 3 (memory per idle
connection) and 5 (connection churn) against the same peers, records the
syscalls per echoed line of each server with C{strace -c} for the one line in
flight case, runs C{bench/frames.py} for scenario 2 (when it is in the
checkout) and C{bench/tailcall.py} for scenario 4, checks that the load
generator is not what is measured, and writes C{docs/benchmarks.md} and the
bar chart C{docs/benchmarks.png}.

How it measures
===============

Each peer is a small server in C{bench/servers/}, started as its own process
on a 127.0.0.1 port. The load comes from C{lineblast}, a C client built here
from C{bench/loadgen/lineblast.c} with the system compiler: epoll, N
connections, K lines in flight on each, every echoed byte compared with what
was sent (a mismatch fails the run), lines counted over a fixed window after a
warm-up, with the server's and the machine's CPU time read at the window's
edges. The same client opens the idle connections of scenario 3 and does the
connect / one line / close loops of scenario 5. Every server and every client
runs in a session of its own (see "Sessions" below).

A I{run} is one pass over every cell and every peer, back to back, with fresh
server processes; the peers' order rotates from run to run. Each figure is the
median over the runs of the ratio to the named peer (C{LineReceiver}) measured
in the same run, with the minimum and maximum of those ratios.

Usage, from the repository root::

    .venv/bin/python bench/run.py            # full: 5 runs, writes docs/
    .venv/bin/python bench/run.py --quick    # smoke test: short, 1 run

Nothing here is imported by the library or the test suite.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _harness import (
    BENCH,
    BUILD,
    REPO,
    RESULTS,
    BenchError,
    ServerProcess,
    build_loadgen,
    cc_version,
    parse_pairs,
)

SERVERS = BENCH / "servers"
LOADGEN = BUILD / "lineblast"
TAILCALL = BENCH / "tailcall.py"
TAILCALL_REPORT = RESULTS / "tailcall.md"
#: bench/tailcall.py takes about 20 minutes on 2 shared cores; stop it after 2 h.
TAILCALL_TIMEOUT = 7200
#: Scenario 2 is measured by bench/frames.py, run as a subprocess if present.
FRAMES = BENCH / "frames.py"
FRAMES_JSON = RESULTS / "frames.json"
FRAMES_TIMEOUT = 3600

#: The peer every ratio is relative to.
BASELINE = "linereceiver"

# Typography for the report, spelled as escapes so the source stays ASCII.
TIMES = "\u00d7"
DASH = "\u2013"
GEQ = "\u2265"
LEQ = "\u2264"
PROPTO = "\u221d"


@dataclass(frozen=True)
class Peer:
    """
    One server under test.

    @ivar key: Short name used in the results.
    @ivar label: What the tables call it.
    @ivar script: Its file in C{bench/servers/}.
    @ivar experiment: Measured only where it answers a question (the one
        line in flight cells and the syscall counts), not a peer users write.
    """

    key: str
    label: str
    script: str
    experiment: bool = False


PEERS = [
    Peer("stateproto", "txstateproto StateProtocol", "stateproto_echo.py"),
    Peer("linereceiver", "Twisted LineReceiver", "linereceiver_echo.py"),
    Peer("protocol", "bare Twisted Protocol (raw bytes)", "protocol_echo.py"),
    Peer("asyncio", "asyncio streams", "asyncio_echo.py"),
    Peer("uvloop", "asyncio streams on uvloop", "uvloop_echo.py"),
    Peer(
        "eager",
        "bare Protocol + eager send (experiment)",
        "protocol_eager_echo.py",
        experiment=True,
    ),
]
PEER_BY_KEY = {peer.key: peer for peer in PEERS}


@dataclass(frozen=True)
class EchoCell:
    """
    One cell of scenario 1.

    @ivar size: Payload bytes per line (plus C{\\r\\n} on the wire).
    @ivar conns: Connections.
    @ivar inflight: Lines in flight per connection.
    """

    size: int
    conns: int
    inflight: int

    @property
    def key(self) -> str:
        """
        The cell's name in the results.
        """
        return f"echo-{self.size}B-{self.conns}c-{self.inflight}k"

    @property
    def label(self) -> str:
        """
        The cell's name in the tables.
        """
        size = "1 KiB" if self.size == 1024 else f"{self.size} B"
        conns = "1 conn" if self.conns == 1 else f"{self.conns} conns"
        return f"{size}, {conns}, {self.inflight} in flight"


ECHO_CELLS = [
    EchoCell(16, 1, 32),
    EchoCell(16, 100, 32),
    EchoCell(1024, 1, 32),
    EchoCell(1024, 100, 32),
    EchoCell(16, 1, 1),
    EchoCell(16, 100, 1),
]
#: The cell where the bare Protocol must reach 2.5x LineReceiver, or the
#: client is what is being measured.
CEILING_CELL = EchoCell(16, 100, 32)
CEILING_TARGET = 2.5
#: The client's headroom: the bare Protocol (C{PROBE_PEER}) driven with four
#: times the ceiling cell's lines in flight. If the same client then drives
#: several times the ceiling cell's rate, it is not what limits that cell.
PROBE_CELL = EchoCell(16, 100, 128)
PROBE_PEER = "protocol"
#: How much faster than the ceiling cell the probe must go for the report to
#: say that the client has headroom.
HEADROOM_TARGET = 2.0
#: Scenario 2's "linear time" for one large frame: time ~ size**k, k <= this.
LINEAR_EXPONENT = 1.25
# Scenario 4's targets: under 1 us per tail call, and no growth over the
# steps. "No growth" is read as a peak below one byte per step: a tail-call
# chain peaks at a few kB whatever N is, while recursion keeps about 1 kB per
# level, so even one byte per step kept would show.
TAILCALL_NS_TARGET = 1000.0
TAILCALL_BYTES_PER_STEP = 1.0
TAILCALL_TIME_ROW = "noreturn, sync steps"
#: Pairs of windows per set-up in the sessions check (see "Sessions").
SESSIONS_PAIRS = 6

#: Concurrent connect / one line / close loops in scenario 5.
CHURN_CONCURRENCY = 16
#: Connections opened and kept before the memory baseline is read, so that
#: one-time allocations (first accept, caches) are not charged per connection.
IDLE_WARM = 100
#: Syscall tracing: which servers, which connection counts, one line in flight.
STRACE_PEERS = ["stateproto", "linereceiver", "protocol", "eager", "asyncio", "uvloop"]
STRACE_CONNS = [1, 100]


@dataclass
class Settings:
    """
    How long and how often to measure.
    """

    runs: int = 5
    warmup: float = 0.5
    duration: float = 2.0
    idle_conns: int = 5000
    strace_duration: float = 2.0
    quick: bool = False


def progress(message: str) -> None:
    """
    Say what is running, on stderr (stdout holds the tables).
    """
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- the load generator --------------------------------------------------------


def preflight(peers: Sequence[Peer], chart_needed: bool) -> None:
    """
    Fail before measuring anything if a peer or the chart cannot be made.

    @param peers: The peers to be measured (the uvloop one needs uvloop).
    @param chart_needed: Whether a missing matplotlib is an error (the full
        run, whose chart the README shows) or only a note (C{--quick}).
    @raise BenchError: If a needed package is missing.
    """
    hint = "install the bench extra: make bench, or .venv/bin/pip install -e '.[bench]'"
    if (
        any(p.key == "uvloop" for p in peers)
        and importlib.util.find_spec("uvloop") is None
    ):
        raise BenchError(f"uvloop is not installed ({hint})")
    if chart_needed and importlib.util.find_spec("matplotlib") is None:
        raise BenchError(f"matplotlib is not installed, so no chart ({hint})")


def blast(
    mode: str,
    port: int,
    args: Sequence[str],
    timeout: float,
    own_session: bool = True,
) -> dict[str, str]:
    """
    Run C{lineblast} once and return its result.

    @param own_session: Run it in a session of its own (see "Sessions"); only
        the method check of C{run_sessions_check} says False.

    @raise BenchError: If it exits non-zero (a mismatch, a closed connection)
        or does not finish in time.
    """
    command = [str(LOADGEN), mode, "-p", str(port), *args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            start_new_session=own_session,  # see "Sessions" below
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{' '.join(command)} took over {timeout} s") from e
    if done.returncode != 0:
        raise BenchError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip()}"
        )
    return parse_pairs(done.stdout)


# -- servers -------------------------------------------------------------------

# Sessions: why every server and every client process gets a session of its own.
# Linux's scheduler (with sched_autogroup_enabled, the default on desktop
# and many server kernels, and on the benchmark machine) shares the CPU
# fairly between sessions first and only then between the processes of
# one session. A server and its load generator started from one session
# would split one session's share between them, so that a client working
# harder (which it does against a faster server) would take CPU from the
# very server it measures, and the bare Protocol ceiling would be cut
# most. In their own sessions each competes with other work on the machine
# on its own, as a server does when its clients are elsewhere.


def rss_kib(pid: int) -> int:
    """
    Resident set size of process C{pid} in KiB, from C{/proc}.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for process {pid}")


class Server(ServerProcess):
    """
    One peer's server process, on a port the kernel picked.

    @ivar peer: Whose server it is.
    @ivar own_session: Whether it (and the clients run against it) has a
        session of its own (see "Sessions"); only the method check of
        C{run_sessions_check} says False.
    """

    def __init__(self, peer: Peer, own_session: bool = True) -> None:
        self.peer = peer
        self.own_session = own_session
        super().__init__(
            # --exit-on-eof: the server stops when its stdin pipe closes, so
            # a driver that is killed leaves no server behind.
            [sys.executable, str(SERVERS / peer.script), "--exit-on-eof"],
            RESULTS / f"server-{peer.key}.log",
            peer.script,
            own_session=own_session,
            stdin_pipe=True,
        )

    @property
    def pid(self) -> int:
        """
        The server's process id.
        """
        return self.process.pid

    def check(self) -> None:
        """
        @raise BenchError: If the server has died.
        """
        if self.process.poll() is not None:
            raise BenchError(
                f"{self.peer.script} died ({self.process.returncode}); "
                f"see {self.log_path}"
            )


@contextmanager
def servers(peers: Sequence[Peer]) -> Iterator[dict[str, Server]]:
    """
    Start one server per peer; stop them all on the way out, whatever happens.
    """
    with ExitStack() as stack:
        started: dict[str, Server] = {}
        for peer in peers:
            server = Server(peer)
            stack.callback(server.stop)
            started[peer.key] = server
        yield started


# -- results -------------------------------------------------------------------


@dataclass
class Sample:
    """
    One measurement of one peer in one cell of one run.

    @ivar value: Lines/s, connections/s, or bytes per idle connection.
    @ivar client_cpu: The client's CPU time over the window, in cores.
    @ivar server_cpu: The server's CPU time over the window, in cores.
    @ivar machine_cpu: CPU time used by everything on the machine over the
        window, in cores (so C{machine_cpu - server_cpu - client_cpu} is what
        other work took).
    """

    scenario: str
    cell: str
    peer: str
    run: int
    value: float
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    machine_cpu: float = 0.0


@dataclass
class Results:
    """
    Everything one invocation measured, saved as JSON beside the report.
    """

    machine: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    strace: list[dict[str, Any]] = field(default_factory=list)
    tailcall: str = ""
    frames: Any = None
    frames_table: str = ""
    notes: list[str] = field(default_factory=list)

    def values(self, scenario: str, cell: str, peer: str) -> dict[int, Sample]:
        """
        The samples of one peer in one cell, by run.
        """
        return {
            s.run: s
            for s in self.samples
            if s.scenario == scenario and s.cell == cell and s.peer == peer
        }

    def ratios(self, scenario: str, cell: str, peer: str) -> list[float]:
        """
        Per run, the peer's value divided by the baseline's in the same run.
        """
        mine = self.values(scenario, cell, peer)
        base = self.values(scenario, cell, BASELINE)
        return [
            mine[run].value / base[run].value
            for run in sorted(mine)
            if run in base and base[run].value > 0
        ]

    def median(self, scenario: str, cell: str, peer: str) -> float | None:
        """
        The peer's median absolute value in the cell.
        """
        values = [s.value for s in self.values(scenario, cell, peer).values()]
        return statistics.median(values) if values else None


# -- scenarios -----------------------------------------------------------------


def rotated(peers: Sequence[Peer], run: int) -> list[Peer]:
    """
    The peers in the order of run C{run}: rotated so none is always first.
    """
    shift = run % len(peers)
    return [*peers[shift:], *peers[:shift]]


@dataclass(frozen=True)
class Window:
    """
    What C{lineblast} measured over one window.

    @ivar rate: Lines (or connections) per second.
    @ivar client_cpu: The client's CPU, in cores.
    @ivar server_cpu: The server's CPU, in cores.
    @ivar machine_cpu: The whole machine's CPU, in cores.
    """

    rate: float
    client_cpu: float
    server_cpu: float
    machine_cpu: float


def measure_throughput(
    server: Server, mode: str, args: Sequence[str], settings: Settings
) -> Window:
    """
    Drive C{server} with C{lineblast} for one window.

    C{lineblast} reads the server's CPU time and the machine's (C{/proc}) at
    the instants its measuring window opens and closes, so warm-up, start-up
    and exit are not counted.
    """
    server.check()
    result = blast(
        mode,
        server.port,
        [
            *args,
            *("-w", str(settings.warmup), "-d", str(settings.duration)),
            *("-P", str(server.pid)),
        ],
        timeout=settings.warmup + settings.duration + 60,
        own_session=server.own_session,
    )
    server.check()
    return Window(
        rate=float(result["per_sec"]),
        client_cpu=float(result["client_cpu"]),
        server_cpu=float(result.get("server_cpu", "nan")),
        machine_cpu=float(result.get("machine_cpu", "nan")),
    )


def run_echo_and_churn(
    results: Results, settings: Settings, peers: Sequence[Peer], churn: bool
) -> None:
    """
    Scenario 1 (and 5 with C{churn}): every cell, every peer, C{runs} times.

    Each run also measures the client's headroom: the bare C{Protocol} with
    C{PROBE_CELL}'s deeper pipeline, to show how many lines/s the same client
    can drive when the server's turn-around is not what limits it.
    """

    def measure(
        run: int, scenario: str, cell: str, label: str, server: Server, args: list[str]
    ) -> None:
        mode = "churn" if scenario == "churn" else "echo"
        unit = "connections/s" if scenario == "churn" else "lines/s"
        window = measure_throughput(server, mode, args, settings)
        progress(
            f"run {run + 1}/{settings.runs} {label}: {server.peer.label} "
            f"{window.rate:,.0f} {unit} (server {window.server_cpu:.2f}, "
            f"client {window.client_cpu:.2f}, machine {window.machine_cpu:.2f} cores)"
        )
        results.samples.append(
            Sample(
                scenario,
                cell,
                server.peer.key,
                run,
                window.rate,
                window.client_cpu,
                window.server_cpu,
                window.machine_cpu,
            )
        )

    def echo_args(cell: EchoCell) -> list[str]:
        return [
            *("-c", str(cell.conns), "-k", str(cell.inflight), "-s", str(cell.size))
        ]

    for run in range(settings.runs):
        order = rotated(peers, run)
        with servers(order) as started:
            for peer in order:
                results.machine[f"loop:{peer.key}"] = started[peer.key].loop
            for cell in ECHO_CELLS:
                for peer in order:
                    if peer.experiment and cell.inflight != 1:
                        continue
                    server = started[peer.key]
                    measure(run, "echo", cell.key, cell.label, server, echo_args(cell))
            if PROBE_PEER in started:
                measure(
                    run,
                    "probe",
                    PROBE_CELL.key,
                    f"client headroom, {PROBE_CELL.label}",
                    started[PROBE_PEER],
                    echo_args(PROBE_CELL),
                )
            if not churn:
                continue
            for peer in order:
                if peer.experiment:
                    continue
                args = ["-c", str(CHURN_CONCURRENCY), "-s", "16"]
                measure(run, "churn", "churn", "churn", started[peer.key], args)


def run_sessions_check(results: Results, settings: Settings) -> None:
    """
    The method check behind "Sessions": the ceiling cell with and without.

    The bare C{Protocol} and C{LineReceiver} are started twice: in sessions
    of their own, each driven by a client in a session of its own (how every
    other figure is measured), and in this script's session, driven by a
    client in it too (how the first quick run measured them). The two set-ups
    alternate, C{SESSIONS_PAIRS} pairs of windows each, the order flipping
    every round.
    """
    setups = {"own": True, "shared": False}
    peers = [PEER_BY_KEY[PROBE_PEER], PEER_BY_KEY[BASELINE]]
    with ExitStack() as stack:
        started: dict[tuple[str, str], Server] = {}
        for name, own in setups.items():
            for peer in peers:
                server = Server(peer, own_session=own)
                stack.callback(server.stop)
                started[(name, peer.key)] = server
        args = ["-c", str(CEILING_CELL.conns), "-k", str(CEILING_CELL.inflight)]
        args += ["-s", str(CEILING_CELL.size)]
        for round_ in range(SESSIONS_PAIRS):
            names = list(setups) if round_ % 2 == 0 else list(reversed(setups))
            for name in names:
                for peer in peers:
                    window = measure_throughput(
                        started[(name, peer.key)], "echo", args, settings
                    )
                    results.samples.append(
                        Sample(
                            "sessions",
                            name,
                            peer.key,
                            round_,
                            window.rate,
                            window.client_cpu,
                            window.server_cpu,
                            window.machine_cpu,
                        )
                    )
                ratio = results.ratios("sessions", name, PROBE_PEER)[-1]
                progress(
                    f"sessions check {round_ + 1}/{SESSIONS_PAIRS}, {name} "
                    f"sessions: bare Protocol {ratio:.2f}{TIMES} LineReceiver"
                )


def idle_memory(peer: Peer, settings: Settings) -> float:
    """
    Server RSS growth per idle connection, in bytes, on a fresh server.

    The client opens C{IDLE_WARM} connections, then C{idle_conns} more; on
    each it sends one line and waits for its echo, so every handler has run
    and is suspended waiting for the next line. RSS is read after each batch.
    """
    server = Server(peer)
    client: subprocess.Popen[str] | None = None
    try:
        batches = f"{IDLE_WARM},{settings.idle_conns}"
        client = subprocess.Popen(
            [str(LOADGEN), "idle", "-p", str(server.port), "-b", batches, "-T", "300"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # see "Sessions" above
        )
        assert client.stdin is not None
        assert client.stdout is not None
        rss: list[int] = []
        for expected in (IDLE_WARM, IDLE_WARM + settings.idle_conns):
            line = client.stdout.readline()
            if line.strip() != f"ready {expected}":
                client.kill()
                _, err = client.communicate()
                raise BenchError(
                    f"idle client on {peer.script}: expected 'ready {expected}', "
                    f"got {line!r}: {err.strip()}"
                )
            server.check()
            rss.append(rss_kib(server.pid))
            client.stdin.write("next\n")
            client.stdin.flush()
        client.stdin.close()
        client.wait(60)
        if client.returncode != 0:
            raise BenchError(f"idle client exited {client.returncode}")
        return (rss[1] - rss[0]) * 1024 / settings.idle_conns
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait()
        server.stop()


def run_memory(results: Results, settings: Settings, peers: Sequence[Peer]) -> None:
    """
    Scenario 3: bytes of server RSS per idle connection, C{runs} times.
    """
    for run in range(settings.runs):
        for peer in rotated(peers, run):
            if peer.experiment:
                continue
            per_conn = idle_memory(peer, settings)
            progress(
                f"run {run + 1}/{settings.runs} idle memory: {peer.label} "
                f"{per_conn:,.0f} bytes per connection"
            )
            results.samples.append(Sample("memory", "idle", peer.key, run, per_conn))


def parse_strace(text: str) -> dict[str, int]:
    """
    Calls per syscall from C{strace -c}'s summary table.
    """
    calls: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]):
            name = parts[-1]
            if name != "total":
                calls[name] = int(parts[3])
    return calls


def strace_one(peer: Peer, conns: int, settings: Settings) -> dict[str, Any]:
    """
    Syscalls per echoed line of one server, 16 B lines, one in flight.

    C{strace -c -f} attaches to the running server, the client runs with no
    warm-up, and strace detaches; every line the client counts was echoed
    while it was attached. Accepting the connections is included, spread
    over thousands of lines.
    """
    server = Server(peer)
    tracer: subprocess.Popen[str] | None = None
    out = RESULTS / f"strace-{peer.key}-{conns}.txt"
    try:
        tracer = subprocess.Popen(
            ["strace", "-c", "-f", "-o", str(out), "-p", str(server.pid)],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert tracer.stderr is not None
        # strace says "Process N attached" once it is tracing.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready, _, _ = select.select([tracer.stderr], [], [], 1)
            if ready and "attached" in tracer.stderr.readline():
                break
            if tracer.poll() is not None:
                raise BenchError(f"strace exited {tracer.returncode}")
        args = ["-c", str(conns), "-k", "1", "-s", "16", "-w", "0"]
        result = blast(
            "echo",
            server.port,
            [*args, "-d", str(settings.strace_duration)],
            timeout=settings.strace_duration + 60,
        )
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
        lines = int(result["total"])
        calls = parse_strace(out.read_text())
        return {"peer": peer.key, "conns": conns, "lines": lines, "calls": calls}
    finally:
        if tracer is not None and tracer.poll() is None:
            tracer.kill()
            tracer.wait()
        server.stop()


def run_strace(results: Results, settings: Settings) -> None:
    """
    The eager-send investigation: syscalls per line with one line in flight.
    """
    if shutil.which("strace") is None:
        results.notes.append(
            "strace is not installed (`apt-get install strace`): the syscall "
            "counts were not measured."
        )
        progress("strace not found: skipping the syscall counts")
        return
    for peer_key in STRACE_PEERS:
        for conns in STRACE_CONNS:
            entry = strace_one(PEER_BY_KEY[peer_key], conns, settings)
            total = sum(entry["calls"].values()) / max(entry["lines"], 1)
            progress(
                f"strace {PEER_BY_KEY[peer_key].label}, {conns} conns: "
                f"{total:.2f} syscalls per line over {entry['lines']:,} lines"
            )
            results.strace.append(entry)


def run_script(
    what: str, script: Path, args: Sequence[str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """
    Run one of the other benchmark scripts from the repository root, its
    progress going to our stderr.

    @param what: The scenario, for the progress line.
    @param script: The script.
    @param args: Its arguments.
    @param timeout: Seconds it may take.
    @return: The finished process, its stdout captured as text.
    @raise BenchError: If it takes longer or exits non-zero.
    """
    command = [sys.executable, str(script), *args]
    progress(f"{what}: " + " ".join(command))
    name = f"bench/{script.name}"
    try:
        done = subprocess.run(
            command,
            cwd=REPO,
            env=dict(os.environ, PYTHONPATH=str(REPO)),
            stdout=subprocess.PIPE,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{name} took over {timeout} s") from e
    if done.returncode != 0:
        raise BenchError(f"{name} exited {done.returncode}")
    return done


def run_frames(results: Results, settings: Settings) -> None:
    """
    Scenario 2: run C{bench/frames.py} and keep what its C{--json} says.

    @raise BenchError: If it fails or writes no JSON.
    """
    if not FRAMES.exists():
        results.notes.append(
            "Scenario 2 was not measured: `bench/frames.py` is not in this checkout."
        )
        progress("bench/frames.py not found: skipping scenario 2")
        return
    RESULTS.mkdir(exist_ok=True)
    FRAMES_JSON.unlink(missing_ok=True)
    args = ["--json", str(FRAMES_JSON), *(["--quick"] if settings.quick else [])]
    done = run_script("scenario 2", FRAMES, args, FRAMES_TIMEOUT)
    if not FRAMES_JSON.exists():
        raise BenchError(f"bench/frames.py wrote no {FRAMES_JSON}")
    results.frames = json.loads(FRAMES_JSON.read_text(encoding="utf-8"))
    results.frames_table = done.stdout


def run_tailcall(results: Results, settings: Settings, mode: str) -> None:
    """
    Scenario 4: run C{bench/tailcall.py} (or reuse its last report).

    C{tailcall.py} always writes C{bench/results/tailcall.md}. A C{--quick}
    run must not replace a full report there (the full run takes 20 minutes
    and C{--tailcall reuse} embeds it), so in quick mode the previous report
    is put back afterwards and the quick one is moved to
    C{bench/results/quick/tailcall.md}.
    """
    if not TAILCALL.exists():
        results.tailcall = (
            "_Not measured: `bench/tailcall.py` is not in this checkout._"
        )
        return
    report = TAILCALL_REPORT
    if mode == "run":
        args = ["--quick"] if settings.quick else []
        previous = TAILCALL_REPORT.read_bytes() if TAILCALL_REPORT.exists() else None
        try:
            run_script("scenario 4", TAILCALL, args, TAILCALL_TIMEOUT)
        finally:
            if settings.quick:
                report = RESULTS / "quick" / "tailcall.md"
                report.parent.mkdir(parents=True, exist_ok=True)
                report.unlink(missing_ok=True)
                if TAILCALL_REPORT.exists():
                    TAILCALL_REPORT.replace(report)
                if previous is not None:
                    TAILCALL_REPORT.write_bytes(previous)
    if not report.exists():
        results.tailcall = "_Not measured: `bench/tailcall.py` wrote no report._"
        return
    text = report.read_text(encoding="utf-8")
    # Its title becomes a sub-heading of ours.
    results.tailcall = re.sub(r"^# ", "### ", text, count=1, flags=re.MULTILINE)


# -- the machine ---------------------------------------------------------------


def machine_facts() -> dict[str, str]:
    """
    What the report says about the machine and the software.
    """
    import twisted

    import txstateproto

    facts = {
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "twisted": twisted.__version__,
        "txstateproto": txstateproto.__version__,
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }
    try:
        autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled").read_text()
        facts["autogroup"] = "on" if autogroup.strip() == "1" else "off"
    except OSError:
        facts["autogroup"] = "absent"
    try:
        facts["uvloop"] = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        facts["uvloop"] = "not installed"
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.MULTILINE)
        facts["cpu"] = model.group(1) if model else platform.machine()
    except OSError:
        facts["cpu"] = platform.machine()
    facts["cc"] = cc_version()
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    facts["commit"] = commit.stdout.strip() or "unknown"
    # Several people work in one checkout: say if the library measured is
    # not exactly the commit (uncommitted edits to txstateproto/ or bench/).
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(REPO),
            "status",
            "--porcelain",
            "--",
            "txstateproto",
            "bench",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    facts["uncommitted"] = " ".join(
        sorted(
            line[3:]
            for line in dirty.stdout.splitlines()
            if line[3:].endswith((".py", ".c")) and not line.startswith("??")
        )
    )
    return facts


# -- the report ----------------------------------------------------------------


def fmt_ratio(ratios: Sequence[float]) -> str:
    """
    C{median x (min-max)}, or the median alone for one run.
    """
    if not ratios:
        return "n/a"
    median = statistics.median(ratios)
    if len(ratios) == 1:
        return f"{median:.2f}{TIMES}"
    return f"{median:.2f}{TIMES} ({min(ratios):.2f}{DASH}{max(ratios):.2f})"


def fmt_rate(value: float | None) -> str:
    """
    A rate with thousands separators.
    """
    return "n/a" if value is None else f"{value:,.0f}"


def table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """
    A Markdown table, first column left-aligned, the others right-aligned.
    """
    lines = ["| " + " | ".join(head) + " |"]
    lines.append("|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def efficiency(sample: Sample) -> float:
    """
    Lines (or connections) per second of the server's own CPU time.
    """
    if not sample.server_cpu or math.isnan(sample.server_cpu):
        return math.nan
    return sample.value / sample.server_cpu


def efficiency_ratios(
    results: Results, scenario: str, cell: str, peer: str
) -> list[float]:
    """
    Per run, the peer's lines per server CPU-second over the baseline's.
    """
    mine = results.values(scenario, cell, peer)
    base = results.values(scenario, cell, BASELINE)
    ratios = [
        efficiency(mine[run]) / efficiency(base[run])
        for run in sorted(mine)
        if run in base and efficiency(base[run]) > 0
    ]
    return [r for r in ratios if not math.isnan(r)]


def other_load(sample: Sample) -> float:
    """
    Cores that work other than the server and the client took in the window.
    """
    return max(sample.machine_cpu - sample.server_cpu - sample.client_cpu, 0.0)


def echo_section(results: Results, peers: Sequence[Peer]) -> str:
    """
    Scenario 1's tables: ratios, absolute medians, CPU, and the ceiling check.
    """
    others = [p for p in peers if p.key != BASELINE]
    cells = [c for c in ECHO_CELLS if results.values("echo", c.key, BASELINE)]
    if not cells:
        return "_Not measured in this run._\n"
    head = ["cell", "LineReceiver lines/s", *(p.label for p in others)]
    rows = [
        [
            c.label,
            fmt_rate(results.median("echo", c.key, BASELINE)),
            *(fmt_ratio(results.ratios("echo", c.key, p.key)) for p in others),
        ]
        for c in cells
    ]
    absolute = [
        [c.label, *(fmt_rate(results.median("echo", c.key, p.key)) for p in peers)]
        for c in cells
    ]
    efficient = [
        [
            c.label,
            fmt_rate(
                statistics.median(
                    [
                        efficiency(s)
                        for s in results.values("echo", c.key, BASELINE).values()
                    ]
                )
            ),
            *(
                fmt_ratio(efficiency_ratios(results, "echo", c.key, p.key))
                for p in others
            ),
        ]
        for c in cells
    ]
    cpu_rows = []
    for c in cells:
        row = [c.label]
        for p in peers:
            samples = list(results.values("echo", c.key, p.key).values())
            if samples:
                client = statistics.median(s.client_cpu for s in samples)
                server = statistics.median(s.server_cpu for s in samples)
                rest = statistics.median(other_load(s) for s in samples)
                row.append(f"{server:.2f} / {client:.2f} / {rest:.2f}")
            else:
                row.append("n/a")
        cpu_rows.append(row)
    parts = [
        "Ratios to `LineReceiver` (higher is better): median over the runs of "
        f"the per-run ratio, with min{DASH}max. Lines are the payload size plus "
        "`\\r\\n`.\n",
        table(head, rows),
        "",
        "Medians in lines/s:\n",
        table(["cell", *(p.label for p in peers)], absolute),
        "",
        "CPU during the measuring window, in cores (medians): server / client "
        "/ everything else on the machine (any other work; the machine "
        f"has {results.machine.get('cores', '?')}). `lineblast` reads these from "
        "`/proc` at the instants its window opens and closes. A server well "
        "below 1.00 while the other work is high was starved, not idle.\n",
        table(["cell", *(p.label for p in peers)], cpu_rows),
        "",
        "The same cells per second of the server's own CPU time (lines per "
        "server CPU-second, ratio to `LineReceiver`'s in the same run): what "
        "each server costs per line, whatever share of the machine it got. "
        "It leaves out the kernel's work on the server's behalf that runs in "
        "the client's system calls on loopback, so it is a second view, not "
        "the figure the targets name.\n",
        table(
            ["cell", "LineReceiver lines/CPU-s", *(p.label for p in others)], efficient
        ),
        "",
        ceiling_verdict(results),
    ]
    return "\n".join(parts)


def ceiling_verdict(results: Results) -> str:
    """
    Is the load generator what is measured? The ceiling cell and the probe.
    """
    ceiling = results.ratios("echo", CEILING_CELL.key, PROBE_PEER)
    if not ceiling:
        return ""
    median = statistics.median(ceiling)
    verdict = "met" if median >= CEILING_TARGET else "NOT met"
    cell = CEILING_CELL.key
    text = (
        f"**Is the client the bottleneck?** The bare Twisted `Protocol` "
        f"ceiling at 16 B, {CEILING_CELL.conns} conns, "
        f"{CEILING_CELL.inflight} in flight is {fmt_ratio(ceiling)} "
        f"`LineReceiver` in throughput; the issue asks for {GEQ} "
        f"{CEILING_TARGET}{TIMES}: {verdict}. Per server CPU-second it is "
        f"{fmt_ratio(efficiency_ratios(results, 'echo', cell, PROBE_PEER))}."
    )
    probe = results.values("probe", PROBE_CELL.key, PROBE_PEER)
    cell_runs = results.values("echo", cell, PROBE_PEER)
    headroom = [
        probe[run].value / cell_runs[run].value
        for run in sorted(probe)
        if run in cell_runs and cell_runs[run].value > 0
    ]
    if headroom:
        client = statistics.median(s.client_cpu for s in probe.values())
        text += (
            f" Client headroom: with {PROBE_CELL.inflight} lines in flight per "
            f"connection instead of {CEILING_CELL.inflight}, the same client "
            f"drives the bare `Protocol` at "
            f"{fmt_rate(results.median('probe', PROBE_CELL.key, PROBE_PEER))} "
            f"lines/s, {fmt_ratio(headroom)} its rate in the ceiling cell, "
            f"using {client:.2f} of a core"
        )
        if statistics.median(headroom) >= HEADROOM_TARGET:
            text += (
                ": the client can send and check lines several times faster "
                "than the ceiling cell asks of it, so what limits that cell is "
                "each connection's round trip (a batch of lines out, the same "
                "batch back, through two processes that share the cores with "
                "other work), not the client's rate."
            )
        else:
            text += (
                f": less than {HEADROOM_TARGET:g}{TIMES}, so the client may be "
                "part of what limits the ceiling cell."
            )
    cpu = list(results.values("echo", cell, PROBE_PEER).values())
    if cpu:
        rest = statistics.median(other_load(s) for s in cpu)
        text += (
            f" Other work on the machine took a median {rest:.2f} cores during "
            "that cell's windows."
        )
    return text + "\n"


def sessions_verdict(results: Results) -> str:
    """
    What the sessions check found, if it ran.
    """
    own = results.ratios("sessions", "own", PROBE_PEER)
    shared = results.ratios("sessions", "shared", PROBE_PEER)
    if not own or not shared:
        return ""

    def server_cpu(name: str) -> str:
        samples = results.values("sessions", name, PROBE_PEER).values()
        return f"{statistics.median(s.server_cpu for s in samples):.2f}"

    return (
        f"\n**Method check: sessions.** With `sched_autogroup` "
        f"({results.machine.get('autogroup', '?')} here) the scheduler shares "
        "the CPU between sessions first, so a server and its client in one "
        "session split one share. The ceiling cell measured alternately, "
        f"{len(own)} pairs of windows each: with every server and client in "
        f"a session of its own (as every figure in this report), the bare "
        f"`Protocol` is {fmt_ratio(own)} `LineReceiver`, its server using a "
        f"median {server_cpu('own')} cores; with servers and client in one "
        f"session, {fmt_ratio(shared)}, its server using "
        f"{server_cpu('shared')} cores.\n"
    )


def frames_section(results: Results) -> str:
    """
    Scenario 2, from C{bench/frames.py}'s JSON (its printed table as given).
    """
    if results.frames is None:
        return "_Not measured in this run._\n"
    text = results.frames_table.strip()
    return (
        "Measured by `bench/frames.py` (run by `bench/run.py`; raw figures in "
        "`bench/results/frames.json`).\n\n" + (text or "_It printed no table._") + "\n"
    )


def single_table(
    results: Results,
    scenario: str,
    cell: str,
    peers: Sequence[Peer],
    unit: str,
    better: str,
) -> str:
    """
    Scenarios 3 and 5: one row per peer.
    """
    if not results.values(scenario, cell, BASELINE):
        return "_Not measured in this run._\n"
    rows = [
        [
            p.label,
            fmt_rate(results.median(scenario, cell, p.key)),
            fmt_ratio(results.ratios(scenario, cell, p.key)),
        ]
        for p in peers
        if results.values(scenario, cell, p.key)
    ]
    return (
        f"Ratio to `LineReceiver` ({better} is better): median over the runs of "
        f"the per-run ratio, with min{DASH}max.\n\n"
        + table(["peer", f"median {unit}", "ratio to LineReceiver"], rows)
        + "\n"
    )


def strace_section(results: Results) -> str:
    """
    Syscalls per echoed line, by server and connection count.
    """
    if not results.strace:
        return "_Not measured in this run._\n"
    shown = ["epoll_wait", "epoll_pwait", "epoll_ctl", "recvfrom", "read", "sendto"]
    shown += ["write"]
    shown += ["writev", "sendmsg", "mmap", "mremap", "munmap"]
    present = [
        name for name in shown if any(name in e["calls"] for e in results.strace)
    ]
    rows = []
    for entry in results.strace:
        lines = max(entry["lines"], 1)
        calls = entry["calls"]
        rows.append(
            [
                f"{PEER_BY_KEY[entry['peer']].label}, {entry['conns']} conn"
                + ("s" if entry["conns"] > 1 else ""),
                f"{entry['lines']:,}",
                *(f"{calls.get(name, 0) / lines:.2f}" for name in present),
                f"{sum(calls.values()) / lines:.2f}",
            ]
        )
    return table(["server", "lines echoed", *present, "all syscalls"], rows) + "\n"


EAGER_SEND_INTRO = """\
Most real clients wait for each reply before sending the next request. The
table counts the syscalls each server makes per echoed line in that case (16 B
lines, one line in flight per connection), with `strace -c -f` attached to the
server process for the whole client run (accepting the connections included,
spread over all the lines). strace slows the servers down a lot, so these runs
say nothing about speed, only about how many calls each line costs; the speed
is in the "1 in flight" rows of scenario 1.

`StateProtocol` sends eagerly on plain TCP (below); `LineReceiver` and the
bare `Protocol` use Twisted's `transport.write()` as it is. The experiment row
is `bench/servers/protocol_eager_echo.py`: the bare `Protocol` echo calling
`socket.send()` itself when that is safe and handing whatever the kernel did
not take to `transport.write()`. It shows what the lever is worth on the
cheapest server Twisted allows, apart from the rest of `StateProtocol`'s cost.
"""

EAGER_SEND_MECHANISM = """\
Why: Twisted's `transport.write()` does not send. It appends to the
transport's buffer and calls `startWriting()`, which registers the socket with
epoll for writing (`epoll_ctl`). The bytes go out on the next reactor turn:
`epoll_wait` reports the socket writable, `doWrite()` sends, and, the buffer
being empty, `stopWriting()` unregisters it (`epoll_ctl` again). So each reply
of a request/response exchange costs two `epoll_ctl` and one extra
`epoll_wait` on top of the `recv` and the `send`. uvloop (libuv's
`uv_try_write`) sends at once and registers for writing only when the kernel
did not take everything; so does asyncio's selector transport, which however
returns to `epoll_wait` once more per line because the stream's reader task is
woken through `call_soon`, and (in the table, where present) maps and unmaps
memory on every read: it calls `recv(256 KiB)`, a buffer above glibc's
`mmap` threshold, and shrinks it to the bytes received.

How `StateProtocol` sends eagerly (kept: "Writes" in the module docstring of
`txstateproto/_protocol.py`; tests over loopback in
`tests/test_eager_send.py`):

- *What it needs from the transport:* the internals of Twisted's
  `abstract.FileDescriptor` and `tcp.Connection`, several of them private.
  While a received chunk is handled, `write()` and `write_line()` append to
  the transport's own send buffer (`_tempDataBuffer`, `_tempDataLen`), so
  `self.transport.write()` made meanwhile keeps its place in the order; at
  the end of `dataReceived` the batch is sent at once, with the one `send()`
  that `doWrite()` would make on the next reactor turn (through
  `writeSomeData()`), made on the transport's `socket` directly. Every
  attribute relied on (`TLS`, `dataBuffer`, `offset`, `producer`,
  `producerPaused`, `_writeDisconnecting`, `_aborting`,
  `_maybePauseProducer`, `startWriting`, `socket`, ...)
  is checked at `connectionMade`: a Twisted release lacking one gets the
  ordinary path instead of an `AttributeError`.
- *How it detects that it applies:* at `connectionMade`, `type(transport)`
  must be exactly `twisted.internet.tcp.Server` or `tcp.Client`, not a
  subclass. TLS listeners and endpoints (a `TLSMemoryBIOProtocol` in
  between), other wrappers (`ProtocolWrapper`, HAProxy, SSH channels,
  stdio), UNIX sockets, the IOCP reactor's classes and test transports
  (`StringTransport`) fail that check and keep `transport.write()`. Then, on
  every write and every send, `transport.TLS` must be false: `start_tls()`
  on a plain connection keeps the same `tcp.Server` and only flips `TLS`,
  so bytes written before it still leave first in plaintext and every later
  write goes through TLS. The send at the end of the chunk is made only when
  nothing is queued from an earlier turn (`len(dataBuffer) == offset`), the
  connection and its write side are not closing or aborting, and the
  protocol is the transport's unpaused streaming producer: the cases in
  which `doWrite()`, having sent everything, would call nothing back.
- *Fallback:* after a partial send, `EAGAIN` or an error (any `OSError`
  counts as nothing sent), what is left is put where `doWrite()` leaves a
  partial send (`dataBuffer` from `offset`) and the socket is registered
  for writing, so the reactor sends the rest when it can, or its own
  `doWrite()` meets the error again and reports it. If any condition above
  fails, the
  batch is registered for writing in the same way. A batch past 64 KiB is
  handed over at once, and so is one that `drain()` finds would take the
  transport past its `bufferSize` (where its own `write()` would pause the
  handler), so the transport's back-pressure still pauses the handler in
  time; a smaller one stays for the end of the turn, and `drain()` answers
  as the transport would, so a handler that drains after every reply (as
  the echo and kvstore examples do) keeps its replies batched.
- *Where:* once per `dataReceived`, after every complete message in the
  chunk has been handled, so that one `send()` carries all the replies the
  chunk produced; and when: the first connection to have a batch in a
  reactor turn sends it at the end of its `dataReceived` and schedules one
  `callLater(0)` for the end of the turn, while the other connections with
  a batch in the same turn leave it in their transports until that call,
  which sends them back to back. A lone exchange is answered at once; with
  many connections ready in one poll, the replies leave together after all
  of them are read (as Twisted's deferred write sends them, without its
  writer registrations), so the client, woken by the first, finds the
  others ready instead of being woken once per reply. Writes made at other
  times (timers, side tasks) take the ordinary `transport.write()` path and
  its next-turn send.
- *What it gains:* when it was added (commit `210d538`, strace as here, 2
  shared cores, loaded), `StateProtocol`'s syscalls per echoed line went from
  6.01 to 3.00 at 1 connection (`epoll_ctl` 2.00 to 0.00, `epoll_wait` 2.00
  to 1.00) and from 4.66 to 2.28 at 100 connections. Sending without
  `doWrite()` (commit `44b2f67`) spared the `stopWriting()` that it made on
  a socket never registered (1,176 to 1,041 server bytecodes per one-line
  round trip, `bench/opcodes.py --lines 1`), and on the socket itself
  (commit `4b893bc`) the frames of `writeSomeData()` and `untilConcludes()`
  (with other chunk-path changes, 69,726 to 66,235 callgrind instructions
  per round trip, `bench/opcodes.py --instructions --lines 1`). Sending the
  later batches of a turn at its end (commit `a8bef92`) raised
  `StateProtocol`'s ratio to `LineReceiver` in every echo cell; most at 100
  connections (one line in flight: 1.10x to 1.47x; 32 in flight: 1.12x to
  1.19x in one `bench/ab_echo.py` run of 5, 2 shared cores), at the cost
  of one more `epoll_wait` per turn. This run measures it again: see the
  findings above and the table.
"""


def strace_per_line(results: Results) -> dict[tuple[str, int], dict[str, float]]:
    """
    Syscalls per echoed line, by (peer, connections), with C{all} for the sum.
    """
    table_: dict[tuple[str, int], dict[str, float]] = {}
    for entry in results.strace:
        lines = max(entry["lines"], 1)
        per = {name: n / lines for name, n in entry["calls"].items()}
        per["all"] = sum(entry["calls"].values()) / lines
        table_[(entry["peer"], entry["conns"])] = per
    return table_


def paired_ratios(results: Results, cell: str, peer: str, other: str) -> list[float]:
    """
    Per run, C{peer}'s echo rate divided by C{other}'s in the same run.
    """
    return pair_ratios(results, "echo", cell, peer, other)


def eager_findings(results: Results) -> str:
    """
    What the syscall counts and the one line in flight rows say, as bullets.
    """
    per_line = strace_per_line(results)
    bullets = []

    def span(peers: Sequence[str], conns: int, name: str) -> str:
        values = [
            v.get(name, 0.0)
            for (p, c), v in per_line.items()
            if p in peers and c == conns
        ]
        if not values:
            return "n/a"
        low, high = f"{min(values):.2f}", f"{max(values):.2f}"
        return low if low == high else f"{low}{DASH}{high}"

    groups = (
        (
            "Twisted's `transport.write()` (LineReceiver, bare Protocol)",
            ["linereceiver", "protocol"],
        ),
        ("StateProtocol (eager send on plain TCP)", ["stateproto"]),
        ("The eager-send experiment", ["eager"]),
        ("asyncio streams", ["asyncio"]),
        ("uvloop streams", ["uvloop"]),
    )
    for label, peers in groups:
        parts = []
        for conns in STRACE_CONNS:
            if not any(p in peers and c == conns for p, c in per_line):
                continue
            wait = "epoll_pwait" if "uvloop" in peers else "epoll_wait"
            parts.append(
                f"{conns} conn{'s' if conns > 1 else ''}: "
                f"{span(peers, conns, 'epoll_ctl')} `epoll_ctl`, "
                f"{span(peers, conns, wait)} `{wait}`, "
                f"{span(peers, conns, 'all')} in all"
            )
        if parts:
            bullets.append(f"- {label}, per line: " + "; ".join(parts) + ".")
    compared = []
    for conns in STRACE_CONNS:
        before = per_line.get(("linereceiver", conns))
        after = per_line.get(("stateproto", conns))
        if before is None or after is None:
            continue
        compared.append(
            f"{conns} conn{'s' if conns > 1 else ''}: {before['all']:.2f} to "
            f"{after['all']:.2f} in all, `epoll_ctl` "
            f"{before.get('epoll_ctl', 0.0):.2f} to {after.get('epoll_ctl', 0.0):.2f}"
        )
    if compared:
        bullets.append(
            "- Syscalls per line, `LineReceiver` to `StateProtocol`: "
            + "; ".join(compared)
            + "."
        )
    if per_line:
        bullets.append(
            "- At 100 connections several sockets are ready at each "
            "`epoll_wait` (all the more under strace, which slows the server), "
            "so that call is shared between lines; the `epoll_ctl` pair of "
            "`transport.write()` is per reply, so it is not shared."
        )
    for cell in (c for c in ECHO_CELLS if c.inflight == 1):
        ours = results.ratios("echo", cell.key, "stateproto")
        gain = paired_ratios(results, cell.key, "eager", "protocol")
        if not ours and not gain:
            continue
        asyncio_ = results.ratios("echo", cell.key, "asyncio")
        uvloop_ = results.ratios("echo", cell.key, "uvloop")
        parts = []
        if ours:
            parts.append(f"`StateProtocol` {fmt_ratio(ours)} `LineReceiver`")
        if gain:
            vs_lr = results.ratios("echo", cell.key, "eager")
            parts.append(
                f"the eager send makes the bare `Protocol` {fmt_ratio(gain)} "
                f"as fast as without it, that is {fmt_ratio(vs_lr)} `LineReceiver`"
            )
        bullets.append(
            f"- Throughput, {cell.label}: "
            + "; ".join(parts)
            + f" (asyncio streams {fmt_ratio(asyncio_)}, uvloop {fmt_ratio(uvloop_)})."
        )
    return "\n".join(bullets) + "\n" if bullets else ""


def verdict(ratios: Sequence[float], target: float, higher: bool) -> str:
    """
    Whether a median ratio meets a target, and by how much it misses.
    """
    if not ratios:
        return "not measured"
    median = statistics.median(ratios)
    if (median >= target) if higher else (median <= target):
        return "met"
    if higher:
        return (
            f"**missed**: {median / target:.2f} of the target "
            f"({target / median:.2f}{TIMES} faster needed)"
        )
    return f"**missed**: {median / target:.2f}{TIMES} the target"


def aim(ratios: Sequence[float], target: float, higher: bool) -> str:
    """
    What to add to a met target's status about the issue's aim beyond it.
    """
    median = statistics.median(ratios)
    if (median >= target) if higher else (median <= target):
        return f"; aim {target:g}{TIMES} met too"
    return f"; aim {target:g}{TIMES} not yet"


def pair_ratios(
    results: Results, scenario: str, cell: str, peer: str, other: str
) -> list[float]:
    """
    Per run, C{peer}'s value over C{other}'s in the same run.
    """
    mine = results.values(scenario, cell, peer)
    theirs = results.values(scenario, cell, other)
    return [
        mine[run].value / theirs[run].value
        for run in sorted(mine)
        if run in theirs and theirs[run].value > 0
    ]


def targets_section(results: Results) -> str:
    """
    Issue 9's targets against this run's medians, one row per target and cell.
    """
    rows = []
    for cell in ECHO_CELLS:
        ratios = results.ratios("echo", cell.key, "stateproto")
        if cell.inflight > 1:
            goal = f"{GEQ} 1.0{TIMES} `LineReceiver` (aim 1.2{TIMES})"
            status = verdict(ratios, 1.0, higher=True)
            if status == "met":
                status += aim(ratios, 1.2, higher=True)
        else:
            goal = f"{GEQ} 0.95{TIMES} `LineReceiver` (aim {GEQ} asyncio streams)"
            status = verdict(ratios, 0.95, higher=True)
            vs_asyncio = pair_ratios(results, "echo", cell.key, "stateproto", "asyncio")
            if vs_asyncio:
                status += f"; {fmt_ratio(vs_asyncio)} asyncio streams"
        rows.append([f"StateProtocol, {cell.label}", goal, fmt_ratio(ratios), status])
    memory = results.ratios("memory", "idle", "stateproto")
    status = verdict(memory, 1.5, higher=False)
    if status == "met":
        status += aim(memory, 1.25, higher=False)
    rows.append(
        [
            "StateProtocol, idle connection memory",
            f"{LEQ} 1.5{TIMES} `LineReceiver` (aim {LEQ} 1.25{TIMES})",
            fmt_ratio(memory),
            status,
        ]
    )
    vs_asyncio = pair_ratios(results, "memory", "idle", "stateproto", "asyncio")
    rows.append(
        [
            "StateProtocol, idle connection memory",
            f"{LEQ} 0.5{TIMES} asyncio streams",
            fmt_ratio(vs_asyncio),
            verdict(vs_asyncio, 0.5, higher=False),
        ]
    )
    ceiling = results.ratios("echo", CEILING_CELL.key, PROBE_PEER)
    rows.append(
        [
            f"bare `Protocol` (the client check), {CEILING_CELL.label}",
            f"{GEQ} {CEILING_TARGET}{TIMES} `LineReceiver`",
            fmt_ratio(ceiling),
            verdict(ceiling, CEILING_TARGET, higher=True),
        ]
    )
    rows += frames_targets(results)
    rows += tailcall_targets(results)
    return (
        "Issue 9's targets against this run (medians of the per-run ratios, "
        f"min{DASH}max; the tail call rows from scenario 4's table, where "
        f"ns/step is a median of runs and the peak is a separate traced pass)."
        "\n\n" + table(["what", "target", "measured", "status"], rows) + "\n"
    )


def tailcall_rows(text: str | None) -> list[dict[str, str]]:
    """
    The rows of the table in C{bench/tailcall.py}'s report, keyed by its
    column headers (C{scenario}, C{N}, C{ns/step median}, C{peak bytes},
    C{bytes/step}, C{ratio to inlineCallbacks@10^4}, ...).

    @param text: The report as embedded, or C{None}.
    @return: One dict per row, values as printed; empty if there is no table.
    """
    if not text:
        return []
    lines = [line.strip() for line in text.splitlines() if line.startswith("|")]
    if len(lines) < 3:
        return []

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    head = cells(lines[0])
    return [
        dict(zip(head, cells(line), strict=False))
        for line in lines[2:]
        if len(cells(line)) == len(head)
    ]


def _number(text: str) -> float | None:
    """
    A figure as C{tailcall.py} prints it (C{1,706}, C{0.021},
    C{21,479,424 RSS}), or C{None} where it printed none (C{-}, an error).
    """
    try:
        return float(text.split()[0].replace(",", ""))
    except (IndexError, ValueError):
        return None


def tailcall_targets(results: Results) -> list[list[str]]:
    """
    Scenario 4's targets' rows: time per synchronous tail call, and a peak
    memory that does not grow with the steps, from C{tailcall.py}'s table.
    """
    rows = tailcall_rows(results.tailcall)
    ours = [row for row in rows if row.get("scenario", "").startswith("noreturn")]
    if not ours:
        return [["tail calls (scenario 4)", "(scenario 4)", "n/a", "not measured"]]
    out = []
    for row in ours:
        if row["scenario"] != TAILCALL_TIME_ROW:
            continue
        ns = _number(row.get("ns/step median", ""))
        if ns is None:
            continue
        out.append(
            [
                f"tail call, `{row['scenario']}`, N = {row.get('N', '?')}",
                f"< {TAILCALL_NS_TARGET:,.0f} ns per step",
                f"{ns:,.0f} ns/step ({row.get('min-max', '?')})",
                "met"
                if ns < TAILCALL_NS_TARGET
                else f"**missed**: {ns / TAILCALL_NS_TARGET:.2f}{TIMES} the target",
            ]
        )
    per_step = [
        (row["scenario"], row.get("N", "?"), _number(row.get("bytes/step", "")))
        for row in ours
    ]
    known = [(name, n, b) for name, n, b in per_step if b is not None]
    if known:
        name, n, worst = max(known, key=lambda item: item[2])
        out.append(
            [
                "tail calls, peak memory over the steps (every `noreturn` row)",
                f"no growth: peak < {TAILCALL_BYTES_PER_STEP:g} byte per step",
                f"at most {worst:.3f} B/step (`{name}`, N = {n})",
                "met"
                if worst < TAILCALL_BYTES_PER_STEP
                else f"**missed**: {worst:.3f} B/step",
            ]
        )
    return out


def frame_ratios(frames: Any) -> list[tuple[str, list[float]]]:
    """
    Per echo cell of C{frames.py}'s JSON, ours over C{Int32StringReceiver}'s.
    """
    try:
        return [
            (cell, [float(v) for v in data["ratio"]["values"]])
            for cell, data in frames["echo"].items()
        ]
    except (KeyError, TypeError, ValueError):
        return []


def frames_targets(results: Results) -> list[list[str]]:
    """
    The Int32 frame targets' rows, from C{frames.py}'s JSON.

    Linear time is taken as: with time proportional to size^k, measured
    between the two sizes, k at most C{LINEAR_EXPONENT} (1 is linear, 2
    quadratic; the margin is for a loaded machine and the memory system,
    whose own floor, appending each read and one copy, is shown beside).
    """
    frames = results.frames
    if frames is None:
        return [["StateProtocol, Int32 frames", "(scenario 2)", "n/a", "not measured"]]
    rows = []
    size = frames.get("settings", {}).get("frame_size", "?")
    for cell, ratios in frame_ratios(frames):
        rows.append(
            [
                f"StateProtocol, {size} B frames, {cell}",
                f"{GEQ} 1.0{TIMES} `Int32StringReceiver`",
                fmt_ratio(ratios),
                verdict(ratios, 1.0, higher=True),
            ]
        )
    try:
        growth = frames["large_growth"]
        small, large = growth["sizes"]
        linear = float(growth["linear_would_be"])
        ours = float(growth["stateproto"]["median"])
        theirs = float(growth["int32"]["median"])
        floor = float(growth.get("floor", {}).get("median", linear))
    except (KeyError, TypeError, ValueError):
        return rows
    # time ~ size**k: k = 1 is linear, 2 quadratic.
    scale = math.log(large / small)

    def exponent(growth: float) -> float:
        return math.log(growth) / scale if growth > 0 else math.nan

    rows.append(
        [
            f"StateProtocol, one frame in 64 KiB reads, {small >> 20} MiB vs "
            f"{large >> 20} MiB",
            f"linear time: k {LEQ} {LINEAR_EXPONENT:g} in time {PROPTO} size^k "
            "(1 linear, 2 quadratic)",
            f"k = {exponent(ours):.2f}, grows {ours:.1f}{TIMES} "
            f"(`Int32StringReceiver` k = {exponent(theirs):.2f}; floor "
            f"k = {exponent(floor):.2f})",
            "met"
            if exponent(ours) <= LINEAR_EXPONENT
            else f"**missed**: k = {exponent(ours):.2f}",
        ]
    )
    return rows


def elapsed_line(settings: dict[str, Any]) -> str:
    """
    How long the run took, and whether that includes C{tailcall.py}.
    """
    seconds = settings.get("elapsed_seconds")
    if seconds is None:
        return ""
    tailcall = {
        "run": "including `bench/tailcall.py`",
        "reuse": "without `bench/tailcall.py`, whose last report is embedded",
        "skip": "without `bench/tailcall.py`",
    }.get(settings.get("tailcall", ""), "")
    if "tailcall" not in settings.get("sections", ["tailcall"]):
        tailcall = "without `bench/tailcall.py`"
    return f"- Elapsed: {seconds / 60:.1f} minutes" + (
        f" ({tailcall})." if tailcall else "."
    )


def machine_load(results: Results) -> str:
    """
    Say how much other work ran during the measuring windows (as measured,
    not assumed).
    """
    loads = sorted(
        other_load(sample) for sample in results.samples if sample.machine_cpu
    )
    if not loads:
        return ""
    return (
        f"Work other than the server and the client took a median "
        f"{statistics.median(loads):.2f} cores (at most {loads[-1]:.2f}) during "
        f"the {len(loads)} measuring windows that read it."
    )


def render(results: Results, peers: Sequence[Peer]) -> str:
    """
    The whole of C{docs/benchmarks.md}.
    """
    m = results.machine
    s = results.settings
    loops = ", ".join(
        f"{PEER_BY_KEY[k.split(':', 1)[1]].label}: `{v}`"
        for k, v in sorted(m.items())
        if k.startswith("loop:")
    )
    quick = (
        "\n> **Smoke-test run (`--quick`): short windows and one run; these "
        "numbers are not the benchmark.**\n"
        if s.get("quick")
        else ""
    )
    out = [
        "# Benchmarks",
        "",
        "Generated by `make bench` (`.venv/bin/python bench/run.py`); do not "
        "edit by hand. Every peer is measured in the same run, and every figure "
        "is a ratio to the named peer (`LineReceiver`) measured in the same "
        "run.",
        quick,
        "![Ratios to LineReceiver](benchmarks.png)",
        "",
        "## Machine",
        "",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores: "
        f"**2 shared cores**. {machine_load(results)} Absolute numbers move "
        "with whatever else runs on shared cores; the ratios, taken between "
        "peers measured back to back in each run, are the figures to read.",
        f"- Linux {m.get('kernel', '?')}; {m.get('implementation', 'CPython')} "
        f"{m.get('python', '?')}; Twisted {m.get('twisted', '?')}; uvloop "
        f"{m.get('uvloop', '?')}; txstateproto {m.get('txstateproto', '?')} "
        f"at commit `{m.get('commit', '?')}`"
        + (
            f", plus uncommitted changes to {m['uncommitted']} (the working "
            "tree is what was measured)."
            if m.get("uncommitted")
            else "."
        ),
        f"- Event loops: {loops}." if loops else "",
        f"- Load generator: `bench/loadgen/lineblast.c` built with "
        f"{m.get('cc', 'cc')} (`-O2`), one thread, epoll.",
        f"- Date: {m.get('date', '?')}.",
        elapsed_line(s),
        "",
        "## Method",
        "",
        "Each server (`bench/servers/`) runs in its own process on a 127.0.0.1 "
        "port, in a session of its own, and so does each `lineblast` run (the "
        "scheduler shares the CPU between sessions first: see the sessions "
        "check under scenario 1). `lineblast` keeps K lines in flight on each "
        "of N connections, checks every echoed byte against what it sent (a "
        "mismatch fails the run), and counts lines over a "
        f"{s.get('duration', '?')} s window after {s.get('warmup', '?')} s of "
        f"warm-up. A run is one pass over every cell and every peer with fresh "
        f"server processes, the peers' order rotating from run to run; "
        f"{s.get('runs', '?')} run(s). Each figure is the median of the per-run "
        f"ratios, with min{DASH}max. `lineblast` also reads the server's and "
        "the machine's CPU time from `/proc` at the instants its window opens "
        "and closes. No Debian package fits as the load generator: "
        "iperf/iperf3, tcpbench and netperfmeter measure one-way bulk "
        "throughput, wrk speaks HTTP, and none keeps K lines in flight and "
        "checks the echo.",
        "",
        "Each server is written the way its users write it: `StateProtocol` "
        "as `while True: line = yield self.read_line(); self.write_line(line)`, "
        "`LineReceiver.lineReceived` calling `sendLine`, the bare `Protocol` "
        "writing each chunk back, asyncio as in its documentation "
        "(`readline`, `write`, `await drain()`). Each framework keeps its "
        "default socket options (asyncio and uvloop set `TCP_NODELAY`, "
        "Twisted does not); the client sets `TCP_NODELAY`.",
        "",
        "## Targets",
        "",
        targets_section(results),
        "## Scenario 1: line echo",
        "",
        echo_section(results, peers),
        sessions_verdict(results),
        "## Scenario 2: length-prefixed frames",
        "",
        frames_section(results),
        "",
        "## Scenario 3: memory per idle connection",
        "",
        f"A fresh server per measurement. The client opens {IDLE_WARM} "
        f"connections, then {s.get('idle_conns', '?'):,} more; on each it sends "
        "one line and waits for the echo, so every handler has run once and "
        "is suspended waiting for the next line (`StateProtocol` in "
        "`read_line()`, asyncio in `readline()`). The figure is the growth of "
        "the server's `VmRSS` between the two batches divided by the "
        "connections added (kernel socket buffers are not in RSS).",
        "",
        single_table(results, "memory", "idle", peers, "bytes/conn", "lower"),
        "## Scenario 4: tail calls",
        "",
        "Measured by `bench/tailcall.py` (embedded from its report "
        "`bench/results/tailcall.md`).",
        "",
        results.tailcall or "_Not measured in this run._",
        "",
        "## Scenario 5: connection churn",
        "",
        f"{CHURN_CONCURRENCY} concurrent loops of: connect, send one 16 B "
        "line, read the echo, close (the client closes first).",
        "",
        single_table(results, "churn", "churn", peers, "connections/s", "higher"),
        "## Eager send: syscalls per echoed line, one line in flight",
        "",
        EAGER_SEND_INTRO,
        strace_section(results),
        "Findings from the numbers of this run:\n",
        eager_findings(results),
        EAGER_SEND_MECHANISM,
    ]
    if results.notes:
        out += ["## Notes", "", *(f"- {note}" for note in results.notes), ""]
    return "\n".join(out)


def large_growth(frames: Any) -> list[tuple[str, float]]:
    """
    From C{frames.py}'s JSON, each receiver's time for the larger frame over
    its time for the smaller one (4 is linear, 16 quadratic), by label.
    """
    try:
        growth = frames["large_growth"]
        found = [
            ("Int32StringReceiver", float(growth["int32"]["median"])),
            ("StateProtocol", float(growth["stateproto"]["median"])),
        ]
        if "floor" in growth:
            found.append(("floor", float(growth["floor"]["median"])))
    except (KeyError, TypeError, ValueError):
        return []
    return found


def chart(results: Results, peers: Sequence[Peer], path: Path) -> bool:
    """
    Draw the ratios as bars: line echo and churn across the top; below,
    idle memory, Int32 frames, the large frame's growth and tail calls.

    @return: False if matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    others = [p for p in peers if p.key != BASELINE]
    groups: list[tuple[str, str, str]] = [
        ("echo", c.key, c.label.replace(", ", "\n", 1)) for c in ECHO_CELLS
    ]
    groups.append(("churn", "churn", "churn\nconnect, line, close"))
    groups = [g for g in groups if results.values(g[0], g[1], BASELINE)]
    memory = results.values("memory", "idle", BASELINE)
    framed = frame_ratios(results.frames) if results.frames is not None else []
    growth = large_growth(results.frames) if results.frames is not None else []
    tail = [
        (row["scenario"], ratio)
        for row in tailcall_rows(results.tailcall)
        if row.get("scenario", "").startswith("noreturn")
        and (ratio := _number(row.get("ratio to inlineCallbacks@10^4", ""))) is not None
    ]
    fig = plt.figure(figsize=(16, 11))
    grid = fig.add_gridspec(2, 4, height_ratios=[1.1, 1])
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(len(others), 1)

    def bars(ax: Any, items: list[tuple[str, str]]) -> None:
        for i, peer in enumerate(others):
            medians, low, high = [], [], []
            for scenario, cell in items:
                ratios = results.ratios(scenario, cell, peer.key)
                median = statistics.median(ratios) if ratios else math.nan
                medians.append(median)
                low.append(median - min(ratios) if ratios else 0.0)
                high.append(max(ratios) - median if ratios else 0.0)
            xs = [x + (i - (len(others) - 1) / 2) * width for x in range(len(items))]
            ax.bar(
                xs,
                medians,
                width,
                yerr=[low, high],
                capsize=2,
                label=peer.label,
                color=colors(i % 10),
            )
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--")

    def simple(ax: Any, labels: list[str], values: list[float], color: Any) -> None:
        ax.bar(range(len(values)), values, 0.5, color=color)
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(labels, fontsize=8)

    throughput = fig.add_subplot(grid[0, :])
    bars(throughput, [(g[0], g[1]) for g in groups])
    throughput.set_xticks(range(len(groups)))
    throughput.set_xticklabels([g[2] for g in groups], fontsize=8)
    throughput.set_ylabel("ratio to Twisted LineReceiver\n(higher is better)")
    throughput.set_title("Scenarios 1 and 5: line echo and churn, throughput")
    # Head room above the tallest bar, so that the legend covers none.
    throughput.set_ylim(0, throughput.get_ylim()[1] * 1.3)
    throughput.legend(fontsize=8, loc="upper left", ncol=3)

    mem_axes = fig.add_subplot(grid[1, 0])
    if memory:
        bars(mem_axes, [("memory", "idle")])
        mem_axes.set_xticks([0])
        mem_axes.set_xticklabels(["idle connection\nRSS per connection"], fontsize=8)
    mem_axes.set_ylabel("ratio to Twisted LineReceiver (lower is better)")
    mem_axes.set_title("Scenario 3: memory per idle conn.", fontsize=10)

    frame_axes = fig.add_subplot(grid[1, 1])
    if framed:
        medians = [statistics.median(r) for _, r in framed]
        frame_axes.bar(
            range(len(framed)),
            medians,
            0.5,
            yerr=[
                [m - min(r) for m, (_, r) in zip(medians, framed, strict=True)],
                [max(r) - m for m, (_, r) in zip(medians, framed, strict=True)],
            ],
            capsize=2,
            color=colors(0),
        )
        frame_axes.axhline(1.0, color="black", linewidth=1, linestyle="--")
        frame_axes.set_xticks(range(len(framed)))
        frame_axes.set_xticklabels(
            [cell.replace(" x ", "\n", 1) for cell, _ in framed], fontsize=8
        )
    frame_axes.set_ylabel("StateProtocol / Int32StringReceiver (higher is better)")
    size = (results.frames or {}).get("settings", {}).get("frame_size", "?")
    frame_axes.set_title(f"Scenario 2: Int32 frames, {size} B", fontsize=10)

    growth_axes = fig.add_subplot(grid[1, 2])
    if growth:
        simple(
            growth_axes,
            [label for label, _ in growth],
            [value for _, value in growth],
            [colors(7), colors(0), colors(8)][: len(growth)],
        )
        growth_axes.set_yscale("log")
        top = max(64.0, max(value for _, value in growth) * 1.5)
        growth_axes.set_ylim(1, top)
        ticks = [2.0**k for k in range(int(math.log2(top)) + 1)]
        growth_axes.set_yticks(ticks, [f"{t:g}" for t in ticks])
        growth_axes.minorticks_off()
        growth_axes.axhline(4, color="black", linewidth=1, linestyle="--")
        growth_axes.axhline(16, color="red", linewidth=1, linestyle=":")
        growth_axes.text(-0.4, 4.3, "linear", fontsize=8)
        growth_axes.text(-0.4, 17, "quadratic", fontsize=8, color="red")
    sizes = (results.frames or {}).get("large_growth", {}).get("sizes", [0, 0])
    growth_axes.set_ylabel("growth: time for 4x the size (lower is better)")
    growth_axes.set_title(
        f"Scenario 2: one frame, {sizes[0] >> 20} to {sizes[1] >> 20} MiB",
        fontsize=10,
    )

    tail_axes = fig.add_subplot(grid[1, 3])
    if tail:
        simple(
            tail_axes,
            [name.removeprefix("noreturn").lstrip(", ") for name, _ in tail],
            [value for _, value in tail],
            colors(0),
        )
        tail_axes.axhline(1.0, color="black", linewidth=1, linestyle="--")
        for label in tail_axes.get_xticklabels():
            label.set_rotation(20)
            label.set_horizontalalignment("right")
    tail_axes.set_ylabel("ratio to inlineCallbacks@10^4, per step")
    tail_axes.set_title("Scenario 4: noreturn (lower is better)", fontsize=10)

    runs = results.settings.get("runs", "?")
    fig.suptitle(
        f"txstateproto vs peers, median of {runs} runs (bars: min{DASH}max); "
        f"{results.machine.get('cores', '?')} shared cores, "
        f"Python {results.machine.get('python', '?')}, "
        f"Twisted {results.machine.get('twisted', '?')}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def summary(results: Results, peers: Sequence[Peer]) -> str:
    """
    A plain-text summary for the terminal.
    """
    lines = []
    others = [p for p in peers if p.key != BASELINE]
    for c in ECHO_CELLS:
        if results.values("echo", c.key, BASELINE):
            base = fmt_rate(results.median("echo", c.key, BASELINE))
            ratios = "  ".join(
                f"{p.key} {fmt_ratio(results.ratios('echo', c.key, p.key))}"
                for p in others
            )
            lines.append(f"{c.label:32} LineReceiver {base:>10}/s  {ratios}")
    for scenario, cell, unit in (
        ("memory", "idle", "B/conn"),
        ("churn", "churn", "conn/s"),
    ):
        if results.values(scenario, cell, BASELINE):
            base = fmt_rate(results.median(scenario, cell, BASELINE))
            ratios = "  ".join(
                f"{p.key} {fmt_ratio(results.ratios(scenario, cell, p.key))}"
                for p in others
            )
            lines.append(f"{scenario:32} LineReceiver {base:>7} {unit}  {ratios}")
    ceiling = results.ratios("echo", CEILING_CELL.key, PROBE_PEER)
    if ceiling:
        lines.append(
            f"client check: bare Protocol {fmt_ratio(ceiling)} LineReceiver at "
            f"{CEILING_CELL.label} (target {GEQ} {CEILING_TARGET}{TIMES}); probe at "
            f"{PROBE_CELL.inflight} in flight "
            f"{fmt_rate(results.median('probe', PROBE_CELL.key, PROBE_PEER))} lines/s"
        )
    own = results.ratios("sessions", "own", PROBE_PEER)
    shared = results.ratios("sessions", "shared", PROBE_PEER)
    if own and shared:
        lines.append(
            f"sessions check: own sessions {fmt_ratio(own)}, "
            f"one shared session {fmt_ratio(shared)}"
        )
    for entry in results.strace:
        per_line = {k: v / max(entry["lines"], 1) for k, v in entry["calls"].items()}
        lines.append(
            f"strace {entry['peer']:>12} {entry['conns']:>3} conns: "
            f"epoll_ctl {per_line.get('epoll_ctl', 0):.2f}/line, "
            f"all {sum(per_line.values()):.2f}/line"
        )
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------

SECTIONS = ("echo", "churn", "sessions", "frames", "memory", "strace", "tailcall")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """
    Read the command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark txstateproto against its peers, side by side."
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: short windows, 1 run, 500 idle connections, "
        "tailcall --quick; writes to bench/results/quick/ unless --out is given",
    )
    parser.add_argument("--runs", type=int, help="runs per figure (default 5)")
    parser.add_argument("--duration", type=float, help="measuring window, seconds")
    parser.add_argument("--warmup", type=float, help="warm-up, seconds")
    parser.add_argument("--idle", type=int, help="idle connections (default 5000)")
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run, of {','.join(SECTIONS)}",
    )
    parser.add_argument(
        "--tailcall",
        choices=["run", "reuse", "skip"],
        default="run",
        help="scenario 4: run bench/tailcall.py, reuse its last report, or skip; "
        "with --from-json, reuse re-embeds the current report",
    )
    parser.add_argument("--out", type=Path, help="where to write benchmarks.md/.png")
    parser.add_argument(
        "--from-json",
        type=Path,
        help="do not measure: render the report from a saved results JSON",
    )
    return parser.parse_args(argv)


def settings_from(options: argparse.Namespace) -> Settings:
    """
    The settings for this invocation.
    """
    settings = Settings()
    if options.quick:
        settings = Settings(
            runs=1,
            warmup=0.2,
            duration=0.5,
            idle_conns=500,
            strace_duration=0.5,
            quick=True,
        )
    if options.runs is not None:
        settings.runs = options.runs
    if options.duration is not None:
        settings.duration = options.duration
    if options.warmup is not None:
        settings.warmup = options.warmup
    if options.idle is not None:
        settings.idle_conns = options.idle
    return settings


def load_json(path: Path) -> Results:
    """
    Results saved by an earlier invocation.
    """
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw["samples"] = [Sample(**s) for s in raw["samples"]]
    return Results(**raw)


def main(argv: Sequence[str]) -> int:
    """
    Measure, then write the report and the chart.
    """
    options = parse_args(argv)
    settings = settings_from(options)
    out: Path = options.out or (RESULTS / "quick" if settings.quick else REPO / "docs")
    failed = 0
    peers = PEERS
    if options.from_json:
        results = load_json(options.from_json)
        if options.tailcall == "reuse":
            # Re-render with the current tailcall.py report.
            run_tailcall(results, settings, "reuse")
            results.settings["tailcall"] = "reuse"
    else:
        sections = {s.strip() for s in options.only.split(",") if s.strip()}
        unknown = sections - set(SECTIONS)
        if unknown:
            print(f"unknown sections: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        results = Results(machine=machine_facts(), settings=asdict(settings))
        results.settings["sections"] = sorted(sections)
        results.settings["tailcall"] = options.tailcall
        started = time.monotonic()
        saved = RESULTS / (
            "benchmarks-quick.json" if settings.quick else "benchmarks.json"
        )
        try:
            preflight(peers, chart_needed=not settings.quick)
            build_loadgen("lineblast", progress)
        except BenchError as e:
            print(f"bench/run.py: {e}", file=sys.stderr)
            return 1
        steps: list[tuple[str, Callable[[], None]]] = []
        if sections & {"echo", "churn"}:
            if "echo" not in sections:
                progress("churn runs with echo; measuring both")
            steps.append(
                (
                    "echo",
                    lambda: run_echo_and_churn(
                        results, settings, peers, "churn" in sections
                    ),
                )
            )
        if "sessions" in sections:
            steps.append(("sessions", lambda: run_sessions_check(results, settings)))
        if "memory" in sections:
            steps.append(("memory", lambda: run_memory(results, settings, peers)))
        if "strace" in sections:
            steps.append(("strace", lambda: run_strace(results, settings)))
        if "frames" in sections:
            steps.append(("frames", lambda: run_frames(results, settings)))
        if "tailcall" in sections and options.tailcall != "skip":
            steps.append(
                ("tailcall", lambda: run_tailcall(results, settings, options.tailcall))
            )
        # One failing section (a server that dies, frames.py or tailcall.py
        # failing) must not lose the others' figures: note it, go on, save
        # the raw results after every section, and exit 1 at the end.
        for name, step in steps:
            try:
                step()
            except BenchError as e:
                failed += 1
                progress(f"section {name} failed: {e}")
                results.notes.append(f"Section `{name}` failed: {e}")
            results.settings["elapsed_seconds"] = round(time.monotonic() - started)
            RESULTS.mkdir(exist_ok=True)
            saved.write_text(json.dumps(asdict(results), indent=1), encoding="utf-8")
        progress(f"raw results saved to {saved}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.md").write_text(render(results, peers), encoding="utf-8")
    drawn = chart(results, peers, out / "benchmarks.png")
    print(summary(results, peers))
    print(f"\nWritten: {out / 'benchmarks.md'}", end="")
    print(
        f", {out / 'benchmarks.png'}"
        if drawn
        else " (no chart: pip install matplotlib)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
