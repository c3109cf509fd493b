"""
Memory per idle connection, in process: C{StateProtocol} against
C{LineReceiver}, measured with C{tracemalloc}.

For each peer, N connections (5,000 by default) are made over
L{twisted.internet.testing.StringTransport}; on each, one line is echoed,
the output is taken, and the handler is left waiting for the next line
(C{StateProtocol} suspended in C{read_line()}, C{LineReceiver} between
calls). The figure is the growth of traced memory divided by N, minus the
same figure for a bare C{Protocol} on the same transport (the transport and
the bookkeeping every peer pays), so what is left is what the line protocol
itself keeps per connection. C{bench/run.py}'s scenario 3 measures the same
thing as server RSS over real sockets.

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/micro_idle.py
    PYTHONPATH=. .venv/bin/python bench/micro_idle.py --connections 1000 --top

C{--top} prints where StateProtocol's idle memory is allocated (the largest
lines of a tracemalloc comparison).
"""

from __future__ import annotations

import argparse
import gc
import sys
import tracemalloc
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import LineReceiver

try:
    from txstateproto import StateProtocol
except ImportError:  # Run from a checkout without PYTHONPATH=.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from txstateproto import StateProtocol


class StateEcho(StateProtocol):
    """
    The C{StateProtocol} echo of C{bench/servers/stateproto_echo.py}.
    """

    def start(self) -> Generator[Any, Any, None]:
        while True:
            line = yield self.read_line()
            self.write_line(line)


class LineEcho(LineReceiver):
    """
    The C{LineReceiver} echo of C{bench/servers/linereceiver_echo.py}.
    """

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)  # type: ignore[no-untyped-call]


class Bare(Protocol):
    """
    A bare Protocol echoing raw bytes: the baseline subtracted from both.
    """

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)


PEERS: dict[str, Callable[[], Protocol]] = {
    "bare Protocol": Bare,
    "LineReceiver": LineEcho,
    "StateProtocol": StateEcho,
}


def connect_idle(make: Callable[[], Protocol], count: int) -> list[Protocol]:
    """
    Make C{count} connections, echo one line on each, leave them idle.
    """
    kept = []
    for n in range(count):
        protocol = make()
        transport = StringTransport()
        protocol.makeConnection(transport)
        line = b"line %d\r\n" % n
        protocol.dataReceived(line)
        if transport.value() != line:
            raise SystemExit(f"{type(protocol).__name__} did not echo")
        transport.clear()
        kept.append(protocol)
    return kept


def per_connection(make: Callable[[], Protocol], count: int) -> float:
    """
    Traced bytes per idle connection (transport included).
    """
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = connect_idle(make, count)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / count


def top(count: int) -> None:
    """
    Print where StateProtocol's idle connections' memory is allocated.
    """
    gc.collect()
    tracemalloc.start(8)
    first = tracemalloc.take_snapshot()
    kept = connect_idle(StateEcho, count)
    gc.collect()
    second = tracemalloc.take_snapshot()
    tracemalloc.stop()
    print(f"\nStateProtocol: largest allocations kept per connection ({count}):")
    for stat in second.compare_to(first, "lineno")[:15]:
        frame = stat.traceback[0]
        print(
            f"{stat.size_diff / count:8.0f} B  {stat.count_diff / count:5.2f} blocks"
            f"  {frame.filename.split('site-packages/')[-1]}:{frame.lineno}"
        )
    del kept


def main(argv: Sequence[str]) -> int:
    """
    Parse the command line and measure.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3, help="median of this many")
    parser.add_argument("--top", action="store_true", help="where the memory goes")
    options = parser.parse_args(argv)
    count = options.connections
    figures: dict[str, float] = {}
    for name, make in PEERS.items():
        samples = sorted(per_connection(make, count) for _ in range(options.runs))
        figures[name] = samples[len(samples) // 2]
    base = figures["bare Protocol"]
    print(f"Python {sys.version.split()[0]}, {count} idle connections per peer")
    print(f"{'peer':15} {'traced B/conn':>14} {'minus bare Protocol':>20}")
    for name, value in figures.items():
        print(f"{name:15} {value:14,.0f} {value - base:20,.0f}")
    extra = figures["StateProtocol"] - figures["LineReceiver"]
    ratio = figures["StateProtocol"] / figures["LineReceiver"]
    print(
        f"StateProtocol keeps {extra:,.0f} bytes more per idle connection than "
        f"LineReceiver ({ratio:.2f}x on this transport; over TCP, add both to "
        f"the real transport's own cost to compare with bench/run.py)"
    )
    if options.top:
        top(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
