"""
Instructions per command of the kvstore example's server, counted by
valgrind's callgrind, in process.

The kvstore's share of a redis-benchmark run is hard to see in requests/s
on two shared cores: the client takes one core, other work moves the rest.
Here a L{KVStoreProtocol} on a C{StringTransport} is fed the exact bytes
redis-benchmark sends (C{PING\\r\\n} inline for PING_INLINE, multibulk
C{SET key:__rand_int__ xxx} and C{GET key:__rand_int__}), either 16
commands per chunk (C{-P 16}: one chunk is what one read returns) or one
(C{-P 1}), and every reply is taken from the transport after each chunk.
Each case runs in a child Python under callgrind twice, with 0 and with N
commands, and the difference divided by N is the cost of one command,
start-up excluded. No reactor, no socket: what the server does per
command and per read, above the reactor.

Cases (C{<test>-<per chunk>}):

  - C{kvstore-ping_inline-16}, C{kvstore-set-16}, C{kvstore-get-16}.
  - C{kvstore-ping_inline-1}, C{kvstore-set-1}, C{kvstore-get-1}.
  - C{protocol-ping_inline-16}, C{protocol-ping_inline-1}: the floor, a
    bare Twisted C{Protocol} whose C{dataReceived} writes one C{+PONG} per
    LF received (no parse, no store): what any Twisted server pays per
    read before it does anything.

Usage (from the repository root, valgrind installed)::

    .venv/bin/python bench/instructions_kvstore.py [--steps N] [CASE ...]
    .venv/bin/python bench/instructions_kvstore.py --profile CASE  # cProfile
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from _harness import callgrind_instructions

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import sys
sys.path.insert(0, {repo!r})
from twisted.internet.protocol import Protocol
from twisted.internet.testing import StringTransport

from examples.kvstore import KVStoreProtocol, Store

server, test = sys.argv[1], sys.argv[2]
per_chunk, n = int(sys.argv[3]), int(sys.argv[4])


def multibulk(*args):
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


# What redis-benchmark sends (its default -d 3 value, key:__rand_int__ with
# no -r, so one key).
COMMANDS = {{
    "ping_inline": b"PING\r\n",
    "set": multibulk(b"SET", b"key:__rand_int__", b"xxx"),
    "get": multibulk(b"GET", b"key:__rand_int__"),
}}


class Pong(Protocol):
    def dataReceived(self, data):
        self.transport.write(b"+PONG\r\n" * data.count(b"\n"))


if server == "kvstore":
    protocol = KVStoreProtocol()
    protocol.store = Store()
    protocol.store.data[b"key:__rand_int__"] = b"xxx"
else:
    protocol = Pong()
transport = StringTransport()
protocol.makeConnection(transport)
chunk = COMMANDS[test] * per_chunk
# One chunk before counting: the first read of a connection is not the
# steady state.
protocol.dataReceived(chunk)
transport.clear()
for _ in range(n // per_chunk):
    protocol.dataReceived(chunk)
    transport.clear()
"""

CASES = [
    "kvstore-ping_inline-16",
    "kvstore-set-16",
    "kvstore-get-16",
    "protocol-ping_inline-16",
    "kvstore-ping_inline-1",
    "kvstore-set-1",
    "kvstore-get-1",
    "protocol-ping_inline-1",
]


def _argv(case: str, steps: int) -> list[str]:
    """
    The child's arguments for a case.

    @param case: One of L{CASES}.
    @param steps: How many commands to feed.
    @return: C{[server, test, per_chunk, steps]} as strings.
    """
    server, test, per_chunk = case.split("-")
    return [server, test, per_chunk, str(steps)]


def count(case: str, steps: int) -> int:
    """
    Run one case under callgrind.

    @param case: One of L{CASES}.
    @param steps: How many commands to feed.
    @return: The instructions it executed.
    @raise RuntimeError: If callgrind's output has no count.
    """
    return callgrind_instructions(
        ["-c", CHILD.format(repo=str(REPO)), *_argv(case, steps)]
    )


def profile(case: str, steps: int) -> None:
    """
    Run one case under cProfile and print its top functions by own time.

    @param case: One of L{CASES}.
    @param steps: How many commands to feed.
    """
    code = (
        "import cProfile, pstats, sys\n"
        "source = sys.argv.pop(1)\n"
        "profiler = cProfile.Profile()\n"
        "profiler.runctx(source, {'__name__': '__child__'}, {})\n"
        "pstats.Stats(profiler).sort_stats('tottime').print_stats(25)\n"
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            CHILD.format(repo=str(REPO)),
            *_argv(case, steps),
        ],
        check=True,
    )


def main() -> None:
    """
    Print a Markdown table of instructions per command for each case.
    """
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16_000)
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the cases instead"
    )
    parser.add_argument("cases", nargs="*", metavar="CASE", help=", ".join(CASES))
    args = parser.parse_args()
    cases = args.cases or CASES
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(
            f"unknown case(s) {', '.join(unknown)}; choose from {', '.join(CASES)}"
        )
    if args.profile:
        for case in cases:
            print(f"## {case}", flush=True)
            profile(case, args.steps)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: apt-get install valgrind")
    print(f"| case | instructions/command (callgrind, N={args.steps:,}) |")
    print("|---|---:|")
    for case in cases:
        per_step = (count(case, args.steps) - count(case, 0)) / args.steps
        print(f"| {case} | {per_step:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
