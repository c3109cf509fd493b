"""
In-process line echo: C{StateProtocol} against C{LineReceiver}, no sockets.

The hot path of issue 9 without the reactor, the kernel or a load generator:
each peer's echo protocol (written exactly as in C{bench/servers/}) is
connected to an in-memory transport and fed the same pre-built chunks; the
time to echo every line is measured, and the echo is checked byte for byte
after the timed part. It isolates what the library costs per line, so a
change to C{_protocol.py}, C{_buffer.py} or the engine can be measured in
seconds; C{bench/run.py} remains the benchmark that counts.

Cells (lines are the payload plus C{\\r\\n}):

  - C{16B-pipelined}, C{1KiB-pipelined}: 32 lines per chunk (what a client
    with 32 lines in flight delivers per read).
  - C{16B-split}: 16 B lines in 1000-byte chunks, so lines straddle chunks.
  - C{16B-one}: one line per chunk (one line in flight).

Transports:

  - C{tcp} (the default): Twisted's own L{twisted.internet.tcp.Server} on one
    end of a socket pair, with a stub reactor that records writer
    registrations. After each chunk the driver does what the reactor's next
    turn would: C{doWrite()} if the transport registered for writing, then
    it reads the echo from the other end. Both peers pay the real C{send()}
    and C{recv()}; the table also gives writer registrations per line (each
    costs two C{epoll_ctl} calls and a reactor turn on a real reactor).
  - C{fd}: a L{twisted.internet.abstract.FileDescriptor} with a stub reactor
    and no socket: C{write()} and C{writeSequence()} run Twisted's own code
    (the one a TCP connection runs), and after each chunk the driver does
    what C{doWrite()} does on the next reactor turn (join the queued pieces
    into one C{bytes}), without a socket. StateProtocol's direct writes do
    not apply to it (it is not a plain TCP transport).
  - C{string}: L{twisted.internet.testing.StringTransport}.

Each figure is the median over C{--runs} runs (peers alternate within a
run), reported as lines/s and as the ratio StateProtocol / LineReceiver of
the same run (median and min-max of the per-run ratios). The machine has two
shared cores: compare ratios, and rerun before trusting a small change.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/micro_echo.py
    PYTHONPATH=. .venv/bin/python bench/micro_echo.py --runs 15 --cells 16B-one
    PYTHONPATH=. .venv/bin/python bench/micro_echo.py --profile 16B-pipelined
    PYTHONPATH=. .venv/bin/python bench/micro_echo.py --framing

C{--profile CELL} runs StateProtocol alone under C{cProfile} on that cell and
prints the top functions by internal and by cumulative time. C{--framing}
instead times the framing helpers on a C{StringTransport}: 64-byte 32-bit
length-prefixed frames echoed with C{read_frame}/C{write_frame} against
C{Int32StringReceiver}, and RESP commands read with C{read_command} (a
pipelined SET/GET mix and inline PINGs), in CPU microseconds per unit.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import socket
import statistics
import sys
import time
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import tcp
from twisted.internet.abstract import FileDescriptor
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import Int32StringReceiver, LineReceiver

try:
    from txstateproto import StateProtocol
except ImportError:  # Run from a checkout without PYTHONPATH=.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from txstateproto import StateProtocol
from txstateproto.protocols import read_command, read_frame, write_frame


class StateEcho(StateProtocol):
    """
    The C{StateProtocol} echo, as in C{bench/servers/stateproto_echo.py}.
    """

    def start(self) -> Generator[Any, Any, None]:
        while True:
            line = yield self.read_line()
            self.write_line(line)


class LineEcho(LineReceiver):
    """
    The C{LineReceiver} echo, as in C{bench/servers/linereceiver_echo.py}.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)  # type: ignore[no-untyped-call]


PEERS: dict[str, Callable[[], Protocol]] = {
    "StateProtocol": StateEcho,
    "LineReceiver": LineEcho,
}


class _StubReactor:
    """
    Just enough reactor for a FileDescriptor: it records which descriptors
    want to write, and counts registrations.
    """

    def __init__(self) -> None:
        self.writers: set[object] = set()
        self.registrations = 0

    def addWriter(self, writer: object) -> None:
        if writer not in self.writers:
            self.writers.add(writer)
            self.registrations += 1

    def removeWriter(self, writer: object) -> None:
        self.writers.discard(writer)

    def addReader(self, reader: object) -> None:
        pass

    def removeReader(self, reader: object) -> None:
        pass


class _Address:
    """
    A stand-in peer address for logs and reprs.
    """

    def __repr__(self) -> str:
        return "IPv4Address(TCP, '127.0.0.1', 1)"


class FDTransport(FileDescriptor):
    """
    Twisted's real write path (C{FileDescriptor.write}/C{writeSequence})
    without a socket; L{flush} stands for the next reactor turn's C{doWrite}.
    """

    def __init__(self) -> None:
        super().__init__(reactor=_StubReactor())  # type: ignore[arg-type]
        self.connected = 1
        self.sent: list[bytes] = []

    def flush(self) -> None:
        """
        Do what C{doWrite()} does with the queued pieces: join them into one
        C{bytes} (the send itself is left out).
        """
        if self._tempDataBuffer:
            self.sent.append(b"".join(self._tempDataBuffer))
            self._tempDataBuffer = []
            self._tempDataLen = 0

    def output(self) -> bytes:
        self.flush()
        return b"".join(self.sent)

    def getPeer(self) -> _Address:
        return _Address()

    def getHost(self) -> _Address:
        return _Address()

    def loseConnection(self, *args: object) -> None:
        self.connected = 0


class TCPTransport:
    """
    A real L{tcp.Server} on one end of a socket pair; L{flush} is the next
    reactor turn (C{doWrite} if registered) plus reading the echo.
    """

    def __init__(self) -> None:
        self.reactor = _StubReactor()
        ours, self.peer = socket.socketpair()
        for sock in (ours, self.peer):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.peer.setblocking(False)
        self._socket = ours
        self.sent: list[bytes] = []
        self.server: tcp.Server | None = None

    def connect(self, protocol: Protocol) -> None:
        """
        Make the transport and connect C{protocol}, as a listening port does.
        """
        self.server = tcp.Server(
            self._socket,
            protocol,
            ("127.0.0.1", 1),
            None,  # type: ignore[arg-type]
            1,
            self.reactor,  # type: ignore[arg-type]
        )
        protocol.makeConnection(self.server)

    def flush(self) -> None:
        if self.server in self.reactor.writers:
            self.server.doWrite()  # type: ignore[union-attr]
        recv = self.peer.recv
        sent = self.sent
        try:
            while True:
                sent.append(recv(1 << 20))
        except BlockingIOError:
            pass

    def output(self) -> bytes:
        self.flush()
        return b"".join(self.sent)

    def close(self) -> None:
        self._socket.close()
        self.peer.close()


class StringEchoTransport(StringTransport):
    """
    StringTransport with the same C{flush}/C{output} interface.
    """

    def flush(self) -> None:
        pass

    def output(self) -> bytes:
        return self.value()


TRANSPORTS: dict[str, Callable[[], Any]] = {
    "tcp": TCPTransport,
    "fd": FDTransport,
    "string": StringEchoTransport,
}


def make_cell(name: str, lines: int) -> tuple[list[bytes], bytes]:
    """
    Build a cell's chunks and the stream they make up.

    @param name: The cell's name.
    @param lines: How many lines in all.
    @return: The chunks and their concatenation (what the echo must return).
    """
    size = 1024 if name.startswith("1KiB") else 16
    rows = []
    for i in range(lines):
        head = b"%08d" % i
        rows.append(head + b"x" * (size - len(head)) + b"\r\n")
    stream = b"".join(rows)
    if name.endswith("pipelined"):
        chunks = [b"".join(rows[i : i + 32]) for i in range(0, lines, 32)]
    elif name.endswith("split"):
        chunks = [stream[i : i + 1000] for i in range(0, len(stream), 1000)]
    else:
        chunks = rows
    return chunks, stream


CELLS = {
    "16B-pipelined": 40000,
    "1KiB-pipelined": 20000,
    "16B-split": 40000,
    "16B-one": 20000,
}


def run_once(
    peer: Callable[[], Protocol], transport_kind: str, chunks: Sequence[bytes]
) -> tuple[float, bytes, int]:
    """
    Connect a fresh protocol, feed every chunk, and time it.

    @return: The CPU seconds taken, the bytes echoed, and the writer
        registrations (C{tcp} transport only, else 0).
    """
    protocol = peer()
    transport = TRANSPORTS[transport_kind]()
    if isinstance(transport, TCPTransport):
        transport.connect(protocol)
    else:
        protocol.makeConnection(transport)
    received = protocol.dataReceived
    flush = transport.flush
    gc.collect()
    began = time.process_time()
    for chunk in chunks:
        received(chunk)
        flush()
    elapsed = time.process_time() - began
    out = transport.output()
    protocol.connectionLost(None)  # type: ignore[arg-type]
    registrations = 0
    if isinstance(transport, TCPTransport):
        registrations = transport.reactor.registrations
        transport.close()
    return elapsed, out, registrations


def measure(cells: Sequence[str], transport_kind: str, runs: int, scale: float) -> None:
    """
    Print lines/s per peer, the StateProtocol/LineReceiver ratio, and writer
    registrations per line, per cell.
    """
    print(f"transport={transport_kind} runs={runs} (CPU time; ratio >1: faster)")
    print(
        f"{'cell':15} {'StateProtocol':>13} {'LineReceiver':>13} "
        f"{'ratio':>6} {'min-max':>10}  {'writer registrations/line':>25}"
    )
    for cell in cells:
        lines = max(64, int(CELLS[cell] * scale))
        chunks, stream = make_cell(cell, lines)
        times: dict[str, list[float]] = {name: [] for name in PEERS}
        registered: dict[str, int] = {}
        ratios = []
        for run in range(runs):
            order = list(PEERS) if run % 2 == 0 else list(reversed(PEERS))
            this_run = {}
            for name in order:
                elapsed, out, registrations = run_once(
                    PEERS[name], transport_kind, chunks
                )
                if out != stream:
                    raise SystemExit(f"{name} echoed wrong bytes in {cell}")
                times[name].append(elapsed)
                this_run[name] = elapsed
                registered[name] = registrations
            ratios.append(this_run["LineReceiver"] / this_run["StateProtocol"])
        state = lines / statistics.median(times["StateProtocol"])
        line = lines / statistics.median(times["LineReceiver"])
        print(
            f"{cell:15} {state:13,.0f} {line:13,.0f} "
            f"{statistics.median(ratios):5.2f}x {min(ratios):4.2f}-{max(ratios):4.2f}"
            f"  {registered['StateProtocol'] / lines:12.2f}"
            f" {registered['LineReceiver'] / lines:12.2f}"
        )


def profile(cell: str, transport_kind: str, scale: float) -> None:
    """
    Run StateProtocol on one cell under cProfile and print the top entries.
    """
    lines = max(64, int(CELLS[cell] * scale))
    chunks, stream = make_cell(cell, lines)
    profiler = cProfile.Profile()
    profiler.enable()
    _, out, _ = run_once(StateEcho, transport_kind, chunks)
    profiler.disable()
    if out != stream:
        raise SystemExit(f"StateProtocol echoed wrong bytes in {cell}")
    print(f"cProfile, StateProtocol, {cell}, {lines} lines, transport={transport_kind}")
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(18)
    stats.sort_stats("cumulative").print_stats(12)


class StateFrames(StateProtocol):
    """
    A 32-bit length-prefixed frame echo with C{read_frame} / C{write_frame}.
    """

    def start(self) -> Generator[Any, Any, None]:
        while True:
            body = yield read_frame(self)
            write_frame(self, body)


class Int32Frames(Int32StringReceiver):
    """
    The same echo on Twisted's C{Int32StringReceiver}.
    """

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class StateCommands(StateProtocol):
    """
    Reads RESP commands with C{read_command} and counts them (no replies:
    this measures the reading).
    """

    count = 0

    def start(self) -> Generator[Any, Any, None]:
        while True:
            yield read_command(self)
            self.count += 1


def _framing_time(
    factory: Callable[[], Protocol], chunk: bytes, chunks: int
) -> tuple[float, Protocol]:
    """
    Feed C{chunk} C{chunks} times to a fresh protocol on a StringTransport.

    @return: The CPU seconds taken and the protocol.
    """
    protocol = factory()
    transport = StringTransport()
    protocol.makeConnection(transport)
    gc.collect()
    began = time.process_time()
    for _ in range(chunks):
        protocol.dataReceived(chunk)
        transport.clear()
    return time.process_time() - began, protocol


def measure_framing(runs: int) -> None:
    """
    Print the CPU time per unit of the framing cells (StringTransport):
    64-byte Int32 frames echoed, 32 per chunk, StateProtocol vs
    Int32StringReceiver; and RESP commands read, 16 per chunk (a SET/GET
    mix as redis-benchmark sends them) and 32 inline PINGs per chunk.
    """
    frame = (64).to_bytes(4, "big") + b"x" * 64
    set_command = b"*3\r\n$3\r\nSET\r\n$16\r\nkey:000000000001\r\n$3\r\nxxx\r\n"
    get_command = b"*2\r\n$3\r\nGET\r\n$16\r\nkey:000000000001\r\n"
    chunks = 2000
    cases: list[tuple[str, Callable[[], Protocol], bytes, int]] = [
        ("64B-frames StateProtocol", StateFrames, frame * 32, 32),
        ("64B-frames Int32StringReceiver", Int32Frames, frame * 32, 32),
        ("RESP SET/GET", StateCommands, (set_command + get_command) * 8, 16),
        ("RESP PING inline", StateCommands, b"PING\r\n" * 32, 32),
    ]
    print(f"framing cells, StringTransport, runs={runs} (CPU us per unit)")
    for name, factory, chunk, units in cases:
        samples = []
        for _ in range(runs):
            elapsed, protocol = _framing_time(factory, chunk, chunks)
            if isinstance(protocol, StateCommands) and protocol.count != chunks * units:
                raise SystemExit(f"{name}: read {protocol.count} commands")
            samples.append(elapsed / (chunks * units) * 1e6)
        print(
            f"{name:32} {statistics.median(samples):6.2f} us "
            f"({min(samples):.2f}-{max(samples):.2f})"
        )


def main(argv: Sequence[str]) -> int:
    """
    Parse the command line and run.
    """
    parser = argparse.ArgumentParser(
        description="In-process line echo: StateProtocol vs LineReceiver."
    )
    parser.add_argument("--runs", type=int, default=21, help="runs per cell")
    parser.add_argument(
        "--cells",
        default=",".join(CELLS),
        help=f"comma-separated cells out of {', '.join(CELLS)}",
    )
    parser.add_argument(
        "--transport", choices=[*TRANSPORTS, "all"], default="tcp", help="see above"
    )
    parser.add_argument(
        "--scale", type=float, default=0.25, help="multiply the lines per cell"
    )
    parser.add_argument("--profile", metavar="CELL", help="cProfile StateProtocol")
    parser.add_argument(
        "--framing",
        action="store_true",
        help="instead, time the framing cells (read_frame, read_command)",
    )
    options = parser.parse_args(argv)
    if options.framing:
        measure_framing(min(options.runs, 7))
        return 0
    cells = [c for c in options.cells.split(",") if c]
    for cell in cells:
        if cell not in CELLS:
            parser.error(f"unknown cell {cell!r}")
    kinds = list(TRANSPORTS) if options.transport == "all" else [options.transport]
    if options.profile:
        if options.profile not in CELLS:
            parser.error(f"unknown cell {options.profile!r}")
        for kind in kinds:
            profile(options.profile, kind, options.scale)
        return 0
    print(f"Python {sys.version.split()[0]}")
    for kind in kinds:
        measure(cells, kind, options.runs, options.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
