"""
redis-benchmark against the kvstore example and its peers, in one run.

Usage, from the checkout root::

    .venv/bin/python bench/redis.py              # 5 runs, ~2 s per measurement
    .venv/bin/python bench/redis.py --quick      # 1 run, ~0.5 s per measurement
    .venv/bin/python bench/redis.py --json bench/results/redis.json
    .venv/bin/python bench/redis.py --floor      # PING_INLINE beside floors
    .venv/bin/python bench/redis.py --ab /tmp/before  # against a worktree

It needs C{redis-server} and C{redis-benchmark} (Debian: C{apt-get install
redis-server redis-tools}) and fakeredis with its TCP server in the venv
(C{pip install 'fakeredis[tcp-server]'}).

Four servers, each in its own process on a 127.0.0.1 port:

  - C{redis-server}: the real Redis, persistence off (C{--save ''
    --appendonly no}).
  - C{asyncio}: C{bench/servers/asyncio_resp.py}, a minimal RESP server on
    asyncio streams (C{readuntil}/C{readexactly}, replies coalesced while
    input is buffered).
  - C{fakeredis}: fakeredis's C{TcpFakeServer} (a thread per connection),
    what Python users reach for today.
  - C{kvstore}: the example as its README runs it, C{twistd -n stateproto
    --protocol examples.kvstore.KVStoreProtocol}.

For each server, C{redis-benchmark -c 50 -t ping_inline,set,get} runs
without pipelining and with C{-P 16}. A I{run} measures every server in both
modes, back to back, the servers' order rotated from run to run; the number
of requests of each measurement is set from a short probe so that it lasts
about C{--seconds}. The report gives, per test and mode, each server's
median requests/s over the runs with min-max, and the kvstore's ratios to
redis-server and to the asyncio server, computed within each run (servers
measured seconds apart) and then summarised as median (min-max). A second
table gives each server's CPU time per request (from C{/proc/<pid>/stat},
all threads), which other load on the machine moves much less than
requests/s, and the peers' CPU per request over the kvstore's.

With C{--floor}, it measures instead how much of the kvstore's time per
request is the reactor's, the framework's and its own: PING_INLINE, C{-P 1}
and C{-P 16}, against the kvstore, the asyncio server and four floors on the
same reactor (C{epoll}), from a bare Twisted C{Protocol} answering a fixed
reply per request (no parse, no StateProtocol, no store) to one parsing the
inline commands it answers (L{FLOOR_SERVER}), reporting each one's server
CPU time per request, and the asyncio server's over each, medians of
C{--runs}.

With C{--ab CHECKOUT}, it measures this checkout's kvstore against the one
in C{CHECKOUT} (a git worktree of an earlier commit: C{git worktree add
/tmp/before <commit>}), with the asyncio server beside them, every test and
mode, and reports the ratios within each run: for deciding whether a change
is worth a full run.

The client (redis-benchmark) and the server share the machine's cores; on
a two-core machine that is one core each at best, with whatever else runs
taking its share. The report says so, with the load average before and
after.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import io
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
SERVERS_DIR = ROOT / "bench" / "servers"
RESULTS = ROOT / "bench" / "results"

#: The servers, in the order of the report's columns.
NAMES = ["redis-server", "asyncio", "fakeredis", "kvstore"]

#: The tests, as redis-benchmark's -t names them and as it reports them.
TESTS = {"ping_inline": "PING_INLINE", "set": "SET", "get": "GET"}

#: The pipelining modes: requests in flight per client.
PIPELINES = [1, 16]

#: Targets from issue 7: (pipeline, peer) -> the least kvstore/peer ratio.
TARGETS = {(16, "asyncio"): 2.0, (16, "redis-server"): 0.3, (1, "asyncio"): 0.9}

#: The longest a server may take to start (a safety net).
DEADLINE = 60.0

#: The longest one redis-benchmark run may take (a safety net), and, for a
#: run sized to last some seconds, that many times its length: a client that
#: stops getting replies (redis-benchmark spins when fakeredis drops a
#: connection) is given up on in about a minute, not five.
RUN_DEADLINE = 300.0
RUN_DEADLINE_FACTOR = 30.0


class Server:
    """
    One server process on a 127.0.0.1 port.

    @ivar name: Its column in the report.
    @ivar port: The port it listens on.
    """

    def __init__(
        self,
        name: str,
        argv: list[str],
        find_port: Callable[[IO[bytes]], int],
        root: Path = ROOT,
    ):
        """
        Start C{argv} in C{root} (a checkout, also its C{PYTHONPATH}) and
        learn its port with C{find_port} (reading its output), then wait
        until it answers PING.
        """
        self.name = name
        env = dict(os.environ)
        env["PYTHONPATH"] = str(root)
        self.process = subprocess.Popen(
            argv,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            assert self.process.stdout is not None
            self.port = find_port(self.process.stdout)
            _wait_for_pong(self.port)
        except BaseException:
            self.stop()
            raise
        # Drain its output from now on, so a chatty server never blocks.
        self._log = RESULTS / f"server-redis-{name.replace('/', '_')}.log"
        self._drain = subprocess.Popen(
            ["cat"], stdin=self.process.stdout, stdout=self._log.open("wb")
        )

    def cpu_seconds(self) -> float:
        """
        The CPU time (user and system, all threads) the server has used.
        """
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1]
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        """
        SIGTERM the server, then SIGKILL it if it lingers.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        drain = getattr(self, "_drain", None)
        if drain is not None:
            drain.wait(timeout=15)


def _read_until(stream: IO[bytes], pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    """
    Read a server's output line by line until C{pattern} matches a line.

    @raise RuntimeError: If the output ends first.
    """
    seen = b""
    while True:
        line = stream.readline()
        if not line:
            raise RuntimeError(f"server exited before {pattern.pattern!r}:\n{seen!r}")
        seen += line
        found = pattern.search(line)
        if found is not None:
            return found


def _free_port() -> int:
    """
    A TCP port free on 127.0.0.1 right now (for redis-server, which cannot
    be told to pick one).
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_pong(port: int) -> None:
    """
    Poll until the server on C{port} answers a PING (multibulk: fakeredis
    does not parse inline commands).

    @raise RuntimeError: If it does not within L{DEADLINE}.
    """
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"*1\r\n$4\r\nPING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"nothing answered PING on 127.0.0.1:{port}")


def start_servers(
    names: list[str] | None = None, before: Path | None = None
) -> dict[str, Server]:
    """
    Start the servers.

    @param names: Which of L{NAMES} to start; all by default.
    @param before: Another checkout (a git worktree of an earlier commit):
        its kvstore is started too, as C{before}, the same way.
    @return: The servers, by name.
    """
    port = _free_port()
    announced = re.compile(rb"^PORT (\d+) ")

    def announced_port(stream: IO[bytes]) -> int:
        return int(_read_until(stream, announced).group(1))

    def fixed_port(stream: IO[bytes]) -> int:
        return port

    def twistd_port(stream: IO[bytes]) -> int:
        listening = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(")
        return int(_read_until(stream, listening).group(1))

    fakeredis = (
        "import fakeredis, sys\n"
        "server = fakeredis.TcpFakeServer(('127.0.0.1', 0))\n"
        "print('PORT', server.server_address[1], 'LOOP threads', flush=True)\n"
        "server.serve_forever()\n"
    )
    twistd = Path(sys.executable).parent / "twistd"
    starts: dict[str, tuple[list[str], Callable[[IO[bytes]], int]]] = {
        "redis-server": (
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
            ],
            fixed_port,
        ),
        "asyncio": (
            [sys.executable, str(SERVERS_DIR / "asyncio_resp.py")],
            announced_port,
        ),
        "fakeredis": ([sys.executable, "-c", fakeredis], announced_port),
        "kvstore": (
            [
                str(twistd),
                "--pidfile=",
                "-n",
                "stateproto",
                "--protocol",
                "examples.kvstore.KVStoreProtocol",
                "--listen",
                "tcp:0:interface=127.0.0.1",
            ],
            twistd_port,
        ),
    }
    servers: dict[str, Server] = {}
    try:
        for name in names or NAMES:
            argv, find_port = starts[name]
            servers[name] = Server(name, argv, find_port)
        if before is not None:
            argv, find_port = starts["kvstore"]
            servers["before"] = Server("before", argv, find_port, before)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


#: The floor servers for --floor, on the epoll reactor, one +PONG per
#: request (an inline line counted by its LF, a multibulk command by its
#: "*", which redis-benchmark's PING, SET and GET never hold elsewhere),
#: however the requests are cut into reads; each CONFIG GET is sent alone
#: at start and gets a name and an empty value. By its argument: "write", a
#: bare Twisted Protocol with transport.write(); "eager", the same sending
#: at once on the socket; "stateproto", a StateProtocol handler that waits
#: with read_scanned() for the buffered bytes, takes them all and writes
#: (StateProtocol's eager send included): the least a handler on it costs;
#: "parse", the eager bare Protocol that parses the inline commands it
#: answers (lines kept across reads, each split into arguments, its name
#: looked up in a table): the least a Python server on Twisted that reads
#: its commands costs, with no framework at all.
FLOOR_SERVER = """
import sys
from twisted.internet import epollreactor
epollreactor.install()
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from txstateproto import StateProtocol

MODE = sys.argv[1]


def reply_to(data):
    if b"CONFIG" in data:
        # redis-benchmark's CONFIG GETs at start (sent together) want a
        # name and a value each.
        return b"*2\\r\\n$1\\r\\nx\\r\\n$0\\r\\n\\r\\n" * data.count(b"*")
    if b"*" in data:
        return b"+PONG\\r\\n" * data.count(b"*")
    return b"+PONG\\r\\n" * data.count(b"\\n")


class Floor(Protocol):
    def dataReceived(self, data):
        self.send(reply_to(data))

    def send(self, reply):
        queued = self.transport.dataBuffer or self.transport._tempDataLen
        if MODE != "write" and not queued:
            # Sent at once, as asyncio's transport (and StateProtocol's
            # eager send) does; what the socket does not take is left to
            # the transport.
            try:
                sent = self.transport.socket.send(reply)
            except BlockingIOError:
                sent = 0
            reply = reply[sent:]
        if reply:
            self.transport.write(reply)


def rest(data, start, stop):
    return bytes(data[start:stop]), stop


class StateFloor(StateProtocol):
    def start(self):
        while True:
            data = yield self.read_scanned(rest, 65536)
            self.write(reply_to(data))


INLINE = {b"ping": b"+PONG\\r\\n"}
UNKNOWN = b"-ERR unknown command\\r\\n"


class Parsing(Floor):
    partial = b""

    def dataReceived(self, data):
        if b"*" in data:
            # Multibulk: only the CONFIG GETs at start, in this mode.
            self.send(reply_to(data))
            return
        lines = (self.partial + data).split(b"\\n")
        self.partial = lines.pop()
        replies = []
        for line in lines:
            args = line.split()
            if args:
                replies.append(INLINE.get(args[0].lower(), UNKNOWN))
        self.send(b"".join(replies))


protocol = {"stateproto": StateFloor, "parse": Parsing}.get(MODE, Floor)
port = reactor.listenTCP(0, Factory.forProtocol(protocol), interface="127.0.0.1")
print("PORT", port.getHost().port, "LOOP epoll", flush=True)
reactor.run()
"""


def floor(runs: int, seconds: float, progress: IO[str]) -> str:
    """
    Measure the kvstore beside the floor servers (L{FLOOR_SERVER}, with
    Twisted's deferred write and with an eager send) and the asyncio server
    on PING_INLINE, C{-P 1} and C{-P 16}.

    @param runs: How many times to measure each.
    @param seconds: About how long one measurement lasts.
    @param progress: Where to write each measurement as it is made.
    @return: The Markdown report.
    """
    servers = start_servers(["kvstore", "asyncio"])
    announced = re.compile(rb"^PORT (\d+) ")
    try:
        for name, mode in (
            ("floor", "write"),
            ("eager floor", "eager"),
            ("StateProtocol floor", "stateproto"),
            ("parsing floor", "parse"),
        ):
            servers[name] = Server(
                name,
                [sys.executable, "-c", FLOOR_SERVER, mode],
                lambda stream: int(_read_until(stream, announced).group(1)),
            )
        cpu: dict[tuple[str, int], list[float]] = {}
        rates: dict[tuple[str, int], list[float]] = {}
        order = list(servers)
        for run in range(runs):
            # Rotated from run to run, as in the main measurement.
            for name in order[run % len(order) :] + order[: run % len(order)]:
                server = servers[name]
                for pipeline in PIPELINES:
                    count = int((20_000 if pipeline == 1 else 200_000) * seconds)
                    before = server.cpu_seconds()
                    rate = benchmark(server.port, pipeline, count, "ping_inline")
                    used = (server.cpu_seconds() - before) / count * 1e6
                    cpu.setdefault((name, pipeline), []).append(used)
                    rates.setdefault((name, pipeline), []).append(rate)
                    progress.write(
                        f"run {run + 1}/{runs}: {name} -P {pipeline} PING_INLINE: "
                        f"{rate:,.0f} req/s, {used:.1f} us CPU/req\n"
                    )
    finally:
        for server in servers.values():
            server.stop()
    names = [
        "floor",
        "eager floor",
        "StateProtocol floor",
        "parsing floor",
        "asyncio",
        "kvstore",
    ]
    lines = [
        "# PING_INLINE: the kvstore against a bare Twisted Protocol",
        "",
        f"Server CPU time per request in microseconds (user + system, from "
        f"`/proc`), and requests/s; medians of {runs} runs (min-max). The "
        f"floor is a bare Twisted `Protocol` on the same epoll reactor "
        f"writing a fixed reply per read: with `transport.write` (sent on "
        f"the next reactor turn), and with the reply sent at once on the "
        f"socket when nothing is queued (the eager send the kvstore makes "
        f"through StateProtocol). The StateProtocol floor is the least a "
        f"StateProtocol handler does per read (wait with `read_scanned` and "
        f"take the whole buffer, write a fixed reply): "
        f"what any server on StateProtocol pays. The parsing floor is the "
        f"eager bare `Protocol` parsing what it answers (lines kept across "
        f"reads, split into arguments, the name looked up in a table): the "
        f"least any Python server on Twisted that reads its commands pays, "
        f"with no framework. asyncio is "
        f"`bench/servers/asyncio_resp.py`. The ratios are the asyncio "
        f"server's CPU per request over each one's (at least 2 with `-P 16` "
        f"and 0.9 without is what issue 7 asks of the kvstore), computed "
        f"within each run. redis-benchmark shares the {os.cpu_count()} "
        f"CPU(s).",
        "",
        "| -P | "
        + " | ".join(f"{n} CPU/req" for n in names)
        + " | "
        + " | ".join(f"asyncio / {n}" for n in names if n != "asyncio")
        + " |",
        "|---|" + "---|" * (2 * len(names) - 1),
    ]
    for pipeline in PIPELINES:
        peer = cpu[("asyncio", pipeline)]
        cells = [summary(cpu[(n, pipeline)]) for n in names]
        cells += [
            summary([a / b for a, b in zip(peer, cpu[(n, pipeline)], strict=True)])
            for n in names
            if n != "asyncio"
        ]
        lines.append(f"| {pipeline} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Requests/s:",
        "",
        "| -P | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for pipeline in PIPELINES:
        lines.append(
            f"| {pipeline} | "
            + " | ".join(summary(rates[(n, pipeline)]) for n in names)
            + " |"
        )
    return "\n".join(lines) + "\n"


def ab(before: Path, runs: int, seconds: float, progress: IO[str]) -> str:
    """
    Measure this checkout's kvstore against another's (C{before}), with the
    asyncio server beside them, on every test and mode, in one run.

    @param before: The other checkout.
    @param runs: How many times to measure each.
    @param seconds: About how long one measurement lasts.
    @param progress: Where to write each measurement as it is made.
    @return: The Markdown report.
    """
    servers = start_servers(["asyncio", "kvstore"], before)
    try:
        samples, cpu, errors = measure(servers, runs, seconds, progress)
    finally:
        for server in servers.values():
            server.stop()

    def within(table: dict[str, Any], a: str, b: str, p: int, t: str) -> str:
        pairs = zip(table[a][p][t], table[b][p][t], strict=False)
        return summary([x / y for x, y in pairs if y])

    lines = [
        f"# redis-benchmark: the kvstore against its version in {before}",
        "",
        f"`redis-benchmark -c 50`, medians of {runs} runs (min-max), the "
        f"servers' order rotated from run to run; ratios within each run. "
        f"redis-benchmark shares the {os.cpu_count()} CPU(s) with the server.",
        "",
        "| test | -P | asyncio | before | kvstore | kvstore / before "
        "| before / asyncio | kvstore / asyncio | CPU/req before | CPU/req "
        "kvstore | CPU before / kvstore |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pipeline in PIPELINES:
        for test in TESTS.values():
            rates = [
                summary(samples[n][pipeline][test])
                for n in ("asyncio", "before", "kvstore")
            ]
            lines.append(
                f"| {test} | {pipeline} | "
                + " | ".join(rates)
                + f" | {within(samples, 'kvstore', 'before', pipeline, test)}"
                + f" | {within(samples, 'before', 'asyncio', pipeline, test)}"
                + f" | {within(samples, 'kvstore', 'asyncio', pipeline, test)}"
                + f" | {summary(cpu['before'][pipeline][test])}"
                + f" | {summary(cpu['kvstore'][pipeline][test])}"
                + f" | {within(cpu, 'before', 'kvstore', pipeline, test)} |"
            )
    for name, by_mode in errors.items():
        for what, message in by_mode.items():
            lines.append(f"\nError: {name} `{what}`: {message.strip()[-200:]}")
    return "\n".join(lines) + "\n"


def benchmark(
    port: int,
    pipeline: int,
    requests: int,
    test: str,
    deadline: float = RUN_DEADLINE,
) -> float:
    """
    Run redis-benchmark once for one test.

    Each test runs on its own, so that a server that cannot serve one test
    (fakeredis and inline commands) is still measured on the others.

    @param test: The test's C{-t} name (C{ping_inline}, C{set}, C{get}).
    @param deadline: Seconds after which the run is given up on.
    @return: Requests/s.
    @raise RuntimeError: If it fails or reports an error.
    """
    argv = [
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-c",
        "50",
        "-n",
        str(requests),
        "-P",
        str(pipeline),
        "-t",
        test,
        "--csv",
    ]
    try:
        result = subprocess.run(
            argv, capture_output=True, timeout=deadline, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"{' '.join(argv)}: no result after {deadline:.0f} s"
        ) from None
    out = result.stdout.decode()
    err = result.stderr.decode()
    if result.returncode != 0 or "rror" in out + err:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}\n{out}{err}")
    rates = {row["test"]: float(row["rps"]) for row in csv.DictReader(io.StringIO(out))}
    if TESTS[test] not in rates:
        raise RuntimeError(f"{' '.join(argv)}: no result for {TESTS[test]}\n{out}")
    return rates[TESTS[test]]


def load_average() -> str:
    """
    The 1-minute load average, for the report.
    """
    return f"{os.getloadavg()[0]:.2f}"


def summary(values: list[float]) -> str:
    """
    C{median (min-max)} of samples, for a table cell.
    """
    if not values:
        return "n/a"
    median = statistics.median(values)
    if len(values) == 1:
        return _number(median)
    return f"{_number(median)} ({_number(min(values))}-{_number(max(values))})"


def _number(value: float) -> str:
    """
    A rate or ratio, rounded for reading.
    """
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def measure(
    servers: dict[str, Server], runs: int, seconds: float, progress: IO[str]
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """
    Probe each server, mode and test, then run every measurement C{runs}
    times.

    @return: The rates (server -> pipeline -> test -> [rps per run]), the
        server's CPU time per request in microseconds (same shape), and the
        errors (server -> "-P n test" -> message).
    """
    samples: dict[str, Any] = {
        n: {p: {t: [] for t in TESTS.values()} for p in PIPELINES} for n in servers
    }
    cpu: dict[str, Any] = {
        n: {p: {t: [] for t in TESTS.values()} for p in PIPELINES} for n in servers
    }
    errors: dict[str, Any] = {}
    requests: dict[tuple[str, int, str], int] = {}
    for name, server in servers.items():
        for pipeline in PIPELINES:
            for test in TESTS:
                probe_n = 2000 if pipeline == 1 else 10000
                try:
                    rate = benchmark(
                        server.port, pipeline, probe_n, test, 2 * RUN_DEADLINE_FACTOR
                    )
                except RuntimeError as e:
                    errors.setdefault(name, {})[f"-P {pipeline} {test}"] = str(e)
                    progress.write(f"{name} -P {pipeline} {test}: probe failed\n")
                    continue
                n = max(1000, min(2_000_000, int(rate * seconds)))
                requests[(name, pipeline, test)] = n
                progress.write(
                    f"{name} -P {pipeline} {test}: probe {rate:,.0f} req/s -> -n {n}\n"
                )
    order = list(servers)
    for run in range(runs):
        rotated = order[run % len(order) :] + order[: run % len(order)]
        for name in rotated:
            for pipeline in PIPELINES:
                for test, label in TESTS.items():
                    count = requests.get((name, pipeline, test))
                    if count is None:
                        continue
                    before = servers[name].cpu_seconds()
                    try:
                        rate = benchmark(
                            servers[name].port,
                            pipeline,
                            count,
                            test,
                            max(2.0, seconds) * RUN_DEADLINE_FACTOR,
                        )
                    except RuntimeError as e:
                        errors.setdefault(name, {})[f"-P {pipeline} {test}"] = str(e)
                        # Not retried: a server that failed once (or hung)
                        # would only cost more time.
                        del requests[(name, pipeline, test)]
                        progress.write(
                            f"run {run + 1}: {name} -P {pipeline} {test}: {e}\n"
                        )
                        continue
                    used = servers[name].cpu_seconds() - before
                    samples[name][pipeline][label].append(rate)
                    cpu[name][pipeline][label].append(used / count * 1e6)
                    progress.write(
                        f"run {run + 1}/{runs}: {name} -P {pipeline} {label}: "
                        f"{rate:,.0f} req/s, {used / count * 1e6:.1f} us CPU/req\n"
                    )
    return samples, cpu, errors


def ratios(samples: dict[str, Any], peer: str, pipeline: int, test: str) -> list[float]:
    """
    The kvstore's rate over C{peer}'s, run by run (where both have one).
    """
    ours = samples["kvstore"][pipeline][test]
    theirs = samples[peer][pipeline][test]
    return [a / b for a, b in zip(ours, theirs, strict=False) if b]


def cpu_ratios(cpu: dict[str, Any], peer: str, pipeline: int, test: str) -> list[float]:
    """
    C{peer}'s CPU per request over the kvstore's, run by run: like a rate
    ratio, above 1 means the kvstore does more with the same CPU.
    """
    ours = cpu["kvstore"][pipeline][test]
    theirs = cpu[peer][pipeline][test]
    return [b / a for a, b in zip(ours, theirs, strict=False) if a]


def report(
    samples: dict[str, Any],
    cpu: dict[str, Any],
    errors: dict[str, Any],
    meta: dict[str, Any],
) -> str:
    """
    The Markdown report.
    """
    lines = [
        "# redis-benchmark: the kvstore example and its peers",
        "",
        f"`redis-benchmark -c 50 -t ping_inline,set,get`, without and with "
        f"`-P 16`; medians of {meta['runs']} runs (min-max), requests/s. "
        f"Ratios are the kvstore's rate over the peer's within each run.",
        "",
        f"**The client shares the cores with the server**: this machine has "
        f"{meta['cpus']} CPU(s), and redis-benchmark runs on them beside the "
        f"server under test (load average {meta['load_before']} before, "
        f"{meta['load_after']} after). Absolute figures move with the "
        f"machine's load; compare within a run.",
        "",
        "| test | -P | redis-server | asyncio | fakeredis | kvstore "
        "| kvstore / redis-server | kvstore / asyncio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pipeline in PIPELINES:
        for test in TESTS.values():
            cells = [summary(samples[name][pipeline][test]) for name in NAMES]
            to_redis = ratios(samples, "redis-server", pipeline, test)
            to_asyncio = ratios(samples, "asyncio", pipeline, test)
            lines.append(
                f"| {test} | {pipeline} | "
                + " | ".join(cells)
                + f" | {_ratio_cell(to_redis, pipeline, 'redis-server')}"
                + f" | {_ratio_cell(to_asyncio, pipeline, 'asyncio')} |"
            )
    lines += [
        "",
        "Server CPU time per request (user + system, all threads, from "
        "`/proc`), in microseconds: less moved by other load than requests/s, "
        "since it counts only the server's own work. The ratios are the "
        "peer's CPU per request over the kvstore's (above 1: the kvstore "
        "needs less CPU per request).",
        "",
        "| test | -P | redis-server | asyncio | fakeredis | kvstore "
        "| redis-server / kvstore | asyncio / kvstore |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for pipeline in PIPELINES:
        for test in TESTS.values():
            cells = [summary(cpu[name][pipeline][test]) for name in NAMES]
            lines.append(
                f"| {test} | {pipeline} | "
                + " | ".join(cells)
                + f" | {summary(cpu_ratios(cpu, 'redis-server', pipeline, test))}"
                + f" | {summary(cpu_ratios(cpu, 'asyncio', pipeline, test))} |"
            )
    lines += [
        "",
        "Targets (issue 7): with `-P 16`, kvstore ≥ 2x asyncio and ≥ 0.3x "
        "redis-server; without pipelining, ≥ 0.9x asyncio. A ratio cell ends "
        "in ✓ when its median meets its target, ✗ when not.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        "",
        f"Command: `{meta['command']}`",
    ]
    if errors:
        lines += ["", "Errors (those measurements are left out):", ""]
        for name, by_mode in errors.items():
            for what, message in by_mode.items():
                last = message.strip().splitlines()[-1] if message.strip() else ""
                lines.append(f"- {name} `{what}`: {last}")
    return "\n".join(lines) + "\n"


def _ratio_cell(values: list[float], pipeline: int, peer: str) -> str:
    """
    A ratio summary, marked against its target if it has one.
    """
    cell = summary(values)
    target = TARGETS.get((pipeline, peer))
    if target is None or not values:
        return cell
    mark = "✓" if statistics.median(values) >= target else "✗"
    return f"{cell} {mark} (≥ {target})"


def versions() -> dict[str, str]:
    """
    What ran: Python, Twisted, fakeredis, redis-server, redis-benchmark.
    """
    import twisted

    found = {"Python": platform.python_version(), "Twisted": twisted.__version__}
    # Not imported: this script's own name shadows the redis package that
    # fakeredis imports.
    try:
        found["fakeredis"] = importlib.metadata.version("fakeredis")
    except importlib.metadata.PackageNotFoundError:
        found["fakeredis"] = "missing"
    for tool in ("redis-server", "redis-benchmark"):
        out = subprocess.run([tool, "--version"], capture_output=True, check=False)
        text = out.stdout.decode().split()
        found[tool] = next(
            (w for w in text if w[:1].isdigit() or w.startswith("v=")), "?"
        )
    return found


def main(argv: list[str] | None = None) -> int:
    """
    Parse the command line, measure, and write the report.

    @return: The exit status.
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else ""
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 run of ~0.5 s measurements"
    )
    parser.add_argument("--runs", type=int, help="runs (default 5, 1 with --quick)")
    parser.add_argument(
        "--seconds",
        type=float,
        help="length of one measurement (default 2, 0.5 with --quick)",
    )
    parser.add_argument(
        "--json", type=Path, help="also write samples and report as JSON here"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="the Markdown report (default bench/results/redis.md, or "
        "bench/results/quick/redis.md with --quick)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="PING_INLINE only: the kvstore's CPU per request beside a bare "
        "Twisted Protocol's",
    )
    parser.add_argument(
        "--ab",
        type=Path,
        metavar="CHECKOUT",
        help="this checkout's kvstore against the one in CHECKOUT (a git "
        "worktree of an earlier commit), with the asyncio server",
    )
    options = parser.parse_args(argv)
    runs = options.runs or (1 if options.quick else 5)
    seconds = options.seconds or (0.5 if options.quick else 2.0)
    out = options.out or (
        RESULTS / "quick" / "redis.md" if options.quick else RESULTS / "redis.md"
    )
    for tool in ("redis-server", "redis-benchmark"):
        if shutil.which(tool) is None:
            sys.stderr.write(
                f"{tool} not found: apt-get install redis-server redis-tools\n"
            )
            return 2
    RESULTS.mkdir(parents=True, exist_ok=True)
    if options.ab is not None:
        text = ab(options.ab.resolve(), runs, seconds, sys.stderr)
        text += f"\nCommand: `python bench/redis.py {' '.join(sys.argv[1:])}`\n"
        sys.stdout.write(text)
        (RESULTS / "redis-ab.md").write_text(text)
        return 0
    if options.floor:
        text = floor(runs, seconds, sys.stderr)
        text += f"\nCommand: `python bench/redis.py {' '.join(sys.argv[1:])}`\n"
        sys.stdout.write(text)
        (RESULTS / "redis-floor.md").write_text(text)
        return 0
    meta: dict[str, Any] = {
        "runs": runs,
        "seconds": seconds,
        "cpus": os.cpu_count(),
        "load_before": load_average(),
        "versions": versions(),
        "command": " ".join(
            ["python", "bench/redis.py", *(argv if argv is not None else sys.argv[1:])]
        ),
    }
    servers = start_servers()
    try:
        samples, cpu, errors = measure(servers, runs, seconds, sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
    meta["load_after"] = load_average()
    text = report(samples, cpu, errors, meta)
    sys.stdout.write(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(
            json.dumps(
                {
                    "meta": meta,
                    "samples": samples,
                    "cpu_us_per_request": cpu,
                    "errors": errors,
                    "ratios": {
                        f"{peer} -P {p} {t}": ratios(samples, peer, p, t)
                        for peer in ("redis-server", "asyncio")
                        for p in PIPELINES
                        for t in TESTS.values()
                    },
                    "report": text,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
