"""
Instructions per step of the coroutine engine's hot paths, counted by
valgrind's callgrind.

Wall-clock figures on a machine with two shared cores move with whatever
else runs; instruction counts do not (the same binary, input and
environment give the same count). Each case runs in a child Python under
callgrind twice, with 0 and with N steps, and the difference divided by N is
the cost of one step, start-up excluded.

Cases:

  - C{floor}: make a generator, start it, and catch the BaseException it
    raises: the least a raise-based tail call can cost in CPython.
  - C{noreturn}: one synchronous C{noreturn(step(n - 1))} hand-over.
  - C{noreturn-decorated}: a tail call into a C{@coroutine}-decorated step.
  - C{yield-fired}: C{yield succeed(None)} in a loop (a read the buffer
    already satisfied looks like this to the engine).
  - C{inlineCallbacks-fired}: the same loop under Twisted's
    C{inlineCallbacks}, the peer.
  - C{echo-32}, C{echo-1}: one echoed 16-byte line of a C{StateProtocol}
    line echo (as in C{bench/servers/stateproto_echo.py}) on a
    C{StringTransport}, fed 32 lines per chunk (pipelined) or one (one line
    in flight: a read that waits for bytes, and its resume, per line).
  - C{LineReceiver-echo-32}, C{LineReceiver-echo-1}: the same with
    Twisted's C{LineReceiver}, the peer.
  - C{int32-echo-64}, C{int32-echo-1}: one echoed 64-byte frame with a
    32-bit length prefix, a C{StateProtocol} doing C{read_frame} /
    C{write_frame} (as in C{bench/frames.py}), fed 64 frames per chunk or
    one.
  - C{Int32StringReceiver-echo-64}, C{Int32StringReceiver-echo-1}: the
    same with Twisted's C{Int32StringReceiver}, the peer.

Usage (from the repository root, valgrind installed)::

    .venv/bin/python bench/instructions.py [--steps N] [CASE ...]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from _harness import callgrind_instructions

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
sys.path.insert(0, {repo!r})
from twisted.internet.defer import inlineCallbacks, succeed
from txstateproto import Coroutine, coroutine, noreturn

case, n = sys.argv[1], int(sys.argv[2])


class Signal(BaseException):
    pass


def raising(i):
    raise Signal
    yield


def floor(n):
    for i in range(n):
        g = raising(i)
        try:
            g.send(None)
        except Signal:
            pass


def step(n):
    if n:
        noreturn(step(n - 1))
    return n
    yield


@coroutine
def decorated(n):
    if n:
        noreturn(decorated(n - 1))
    return n
    yield


def fired(n):
    for _ in range(n):
        yield succeed(None)


@inlineCallbacks
def fired_ic(n):
    for _ in range(n):
        yield succeed(None)


def echo(peer, per_chunk, n):
    from twisted.internet.testing import StringTransport
    from twisted.protocols.basic import LineReceiver
    from txstateproto import StateProtocol

    class Echo(StateProtocol):
        def start(self):
            while True:
                line = yield self.read_line()
                self.write_line(line)

    class LineEcho(LineReceiver):
        def lineReceived(self, line):
            self.sendLine(line)

    protocol = Echo() if peer == "stateproto" else LineEcho()
    transport = StringTransport()
    protocol.makeConnection(transport)
    chunk = b"0123456789abcdef\r\n" * per_chunk
    # One chunk before counting: the first read of a connection is not
    # the steady state.
    protocol.dataReceived(chunk)
    transport.clear()
    for _ in range(n // per_chunk):
        protocol.dataReceived(chunk)
        transport.clear()


def frame_echo(peer, per_chunk, n):
    from twisted.internet.testing import StringTransport
    from twisted.protocols.basic import Int32StringReceiver
    from txstateproto import StateProtocol
    from txstateproto.protocols import read_frame, write_frame

    class FrameEcho(StateProtocol):
        def start(self):
            while True:
                frame = yield read_frame(self)
                write_frame(self, frame)

    class Int32Echo(Int32StringReceiver):
        def stringReceived(self, string):
            self.sendString(string)

    protocol = FrameEcho() if peer == "stateproto" else Int32Echo()
    transport = StringTransport()
    protocol.makeConnection(transport)
    frame = b"\0\0\0\x40" + bytes(range(64))
    chunk = frame * per_chunk
    protocol.dataReceived(chunk)
    transport.clear()
    for _ in range(n // per_chunk):
        protocol.dataReceived(chunk)
        transport.clear()
    # Exactly n frames, whatever --steps is (20,000 is not a multiple of 64).
    if n % per_chunk:
        protocol.dataReceived(frame * (n % per_chunk))
        transport.clear()


if case == "floor":
    floor(n)
elif case == "int32-echo-64":
    frame_echo("stateproto", 64, n)
elif case == "int32-echo-1":
    frame_echo("stateproto", 1, n)
elif case == "Int32StringReceiver-echo-64":
    frame_echo("int32", 64, n)
elif case == "Int32StringReceiver-echo-1":
    frame_echo("int32", 1, n)
elif case == "echo-32":
    echo("stateproto", 32, n)
elif case == "echo-1":
    echo("stateproto", 1, n)
elif case == "LineReceiver-echo-32":
    echo("linereceiver", 32, n)
elif case == "LineReceiver-echo-1":
    echo("linereceiver", 1, n)
elif case == "noreturn":
    Coroutine(step(n))
elif case == "noreturn-decorated":
    decorated(n)
elif case == "yield-fired":
    Coroutine(fired(n))
elif case == "inlineCallbacks-fired":
    fired_ic(n)
else:
    raise SystemExit("unknown case " + case)
"""

CASES = [
    "floor",
    "noreturn",
    "noreturn-decorated",
    "yield-fired",
    "inlineCallbacks-fired",
    "echo-32",
    "LineReceiver-echo-32",
    "echo-1",
    "LineReceiver-echo-1",
    "int32-echo-64",
    "Int32StringReceiver-echo-64",
    "int32-echo-1",
    "Int32StringReceiver-echo-1",
]


def count(case: str, steps: int) -> int:
    """
    Run one case under callgrind and return the instructions it executed.
    """
    return callgrind_instructions(
        ["-c", CHILD.format(repo=str(REPO)), case, str(steps)]
    )


def main() -> None:
    """
    Print a Markdown table of instructions per step for each case.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    cases = args.cases or CASES
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(
            f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}"
        )
    floor = None
    print(f"| case | instructions/step (callgrind, N={args.steps:,}) | x floor |")
    print("|---|---:|---:|")
    for case in cases:
        per_step = (count(case, args.steps) - count(case, 0)) / args.steps
        if case == "floor":
            floor = per_step
        ratio = f"{per_step / floor:.2f}" if floor else "-"
        print(f"| {case} | {per_step:,.0f} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
