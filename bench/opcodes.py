"""
Python bytecodes the server executes per echo round trip over a real loopback
TCP connection, reactor and transport included: C{StateProtocol} against
C{LineReceiver}.

C{bench/instructions.py} counts machine instructions on a
C{StringTransport}, which leaves out what differs most between the two on a
real socket: C{LineReceiver} writes through C{transport.write()} and the
reply leaves on the reactor's next turn (a writer registration, a second
poll, an unregistration), while C{StateProtocol} collects its replies and
sends them at the end of C{dataReceived}. This script runs both in one
process on the default reactor, with a blocking client socket sending one
chunk of N lines and reading the whole echo back per round trip, and counts
the bytecodes executed (C{sys.settrace} with opcode events) from the send to
the last byte of the echo, per Python function. Counts do not depend on the
machine's load, so they compare changes made on a shared machine; the
wall-clock figures are C{bench/run.py}'s.

With C{--instructions}, each peer instead runs in a child Python under
valgrind's callgrind, twice (with 0 and with R measured round trips after
the same warm-up), and the difference over R is the machine instructions of
one round trip in user space: the server's and the client loop's (the same
for both peers), allocation and C code included, system calls excluded.

Usage (from the repository root)::

    PYTHONPATH=. .venv/bin/python bench/opcodes.py [--lines N] [--rounds R] [--top K]
    PYTHONPATH=. .venv/bin/python bench/opcodes.py --instructions [--lines N]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import shutil
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

# The same echo protocols as the in-process memory benchmark (bench/ is on
# sys.path when a script in it runs).
from _harness import callgrind_instructions
from micro_idle import LineEcho, StateEcho
from twisted.internet import protocol

PEERS: dict[str, type[protocol.Protocol]] = {
    "StateProtocol": StateEcho,
    "LineReceiver": LineEcho,
}


def serve(
    peer: type[protocol.Protocol], lines: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """
    Serve C{peer} on a loopback port, connect to it, and warm it up.

    @return: A function making one round trip of C{lines} 16-byte lines, and
        one closing the connection and the port.
    """
    from twisted.internet import reactor

    port = reactor.listenTCP(  # type: ignore[attr-defined]
        0, protocol.Factory.forProtocol(peer), interface="127.0.0.1"
    )
    client = socket.create_connection(("127.0.0.1", port.getHost().port))
    client.setblocking(False)
    chunk = b"0123456789abcdef\r\n" * lines

    def round_trip() -> None:
        client.sendall(chunk)
        got = 0
        while got < len(chunk):
            reactor.iterate(0)  # type: ignore[attr-defined]
            with contextlib.suppress(BlockingIOError):
                got += len(client.recv(1 << 20))

    def close() -> None:
        client.close()
        port.stopListening()

    for _ in range(20):
        # The connection's first exchanges are not the steady state.
        round_trip()
    return round_trip, close


def instructions(name: str, lines: int, rounds: int) -> float:
    """
    Count the instructions of one round trip of peer C{name} under callgrind.

    @return: Instructions per round trip (user space, both ends).
    """
    totals = []
    for n in (0, rounds):
        totals.append(
            callgrind_instructions(
                [
                    __file__,
                    "--child",
                    name,
                    "--lines",
                    str(lines),
                    "--rounds",
                    str(n),
                ]
            )
        )
    return (totals[1] - totals[0]) / rounds


def count(
    peer: type[protocol.Protocol], lines: int, rounds: int
) -> tuple[float, collections.Counter[str]]:
    """
    Serve C{peer} on a loopback port and count the bytecodes of C{rounds}
    round trips of C{lines} 16-byte lines each.

    @return: Bytecodes per round trip, and the counts per function (totals
        over the rounds).
    """
    round_trip, close = serve(peer, lines)
    counts: collections.Counter[str] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: object) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{code.co_qualname} ({Path(code.co_filename).name})"] += 1
        return trace

    sys.settrace(trace)
    try:
        for _ in range(rounds):
            round_trip()
    finally:
        sys.settrace(None)
    close()
    # The driver's own loop is not the server's work.
    for name in list(counts):
        if name.startswith("serve.<locals>.round_trip"):
            del counts[name]
    return sum(counts.values()) / rounds, counts


def main() -> None:
    """
    Print bytecodes per round trip for each peer, and the top functions.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=32, help="lines per chunk")
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--top", type=int, default=8, help="functions listed")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count machine instructions with callgrind instead",
    )
    parser.add_argument("--child", choices=list(PEERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        round_trip, close = serve(PEERS[args.child], args.lines)
        for _ in range(args.rounds):
            round_trip()
        close()
        return
    if args.instructions:
        if shutil.which("valgrind") is None:
            raise SystemExit("valgrind is not installed: apt-get install valgrind")
        per = {name: instructions(name, args.lines, args.rounds) for name in PEERS}
        print(
            f"{args.lines} lines of 16 B per chunk, {args.rounds} round trips, "
            f"callgrind instructions (user space, server and client loop)"
        )
        for name, value in per.items():
            print(
                f"{name}: {value:,.0f} per round trip, {value / args.lines:,.0f} "
                f"per line, {value / per['LineReceiver']:.2f}x LineReceiver"
            )
        return
    results = {
        name: count(peer, args.lines, args.rounds) for name, peer in PEERS.items()
    }
    base = results["LineReceiver"][0]
    print(f"{args.lines} lines of 16 B per chunk, {args.rounds} round trips")
    for name, (per_round, counts) in results.items():
        print(
            f"{name}: {per_round:,.0f} bytecodes per round trip, "
            f"{per_round / args.lines:,.1f} per line, {per_round / base:.2f}x "
            f"LineReceiver"
        )
        for function, n in counts.most_common(args.top):
            print(f"    {n / args.rounds:8,.1f}  {function}")


if __name__ == "__main__":
    main()
