"""
Tail calls: txstateproto's C{noreturn} against Twisted's own recursion.

A chain of N state hand-overs is run three ways, in one run of this script:

  - txstateproto: an undecorated generator C{step(n)} that ends with
    C{noreturn(step(n - 1))}, driven by C{Coroutine(step(N))}, with N = 10^6,
    in three variants: (a) synchronous steps; (b) each step first does
    C{yield succeed(None)} (an already-fired Deferred); (c) each step waits
    on an unfired Deferred that the driver loop fires (the driver keeps a
    list of pending Deferreds and fires them one by one). Plus N = 10^5 tail
    calls into a C{@coroutine}-decorated C{step} (the pending Coroutine is
    adopted by the running one).
  - Twisted's C{inlineCallbacks} doing the same recursion as
    C{return (yield f(n - 1))}, which grows the Python stack and the Deferred
    chain, at depths 10^3, 10^4 and 10^5.
  - C{async def} recursion with C{return await f(n - 1)}, where each level is
    wrapped by C{Deferred.fromCoroutine} (what C{ensureDeferred} does), at
    the same depths.

Each peer depth runs in a subprocess (this file with C{--child}) with a
300 s timeout, so a crash or a runaway cannot take the script down. The peers
are run twice: at Python's default recursion limit, where they fail (the
table says at which depth), and with the recursion limit raised and a 1 GiB
thread stack, which is what it takes to get them to 10^5 at all.

Times are medians (with min-max) of 5 runs (3 with C{--quick}); peak memory
comes from C{tracemalloc} in one separate pass, so tracing does not distort
the times. For peers deeper than 10^4 (10^3 with C{--quick}) tracemalloc is
unusable (it walks the whole stack on every allocation: hours at 10^5), so
those rows give the growth of the child's peak RSS instead, marked "RSS".
The ratio column divides each row's time per step by C{inlineCallbacks}'
time per level at depth 10^4 (raised limit).

Run from the repository root::

    PYTHONPATH=. .venv/bin/python bench/tailcall.py            # ~20 minutes
    PYTHONPATH=. .venv/bin/python bench/tailcall.py --quick    # N/10, 3 runs

or C{python bench/tailcall.py} where txstateproto is installed. The table is
printed and written as Markdown to C{bench/results/tailcall.md}.
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
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import twisted
from twisted.internet.defer import Deferred, inlineCallbacks, succeed

try:
    import txstateproto
    from txstateproto import Coroutine, coroutine, noreturn
except ImportError:  # Run from a checkout without PYTHONPATH=.: use the checkout.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import txstateproto
    from txstateproto import Coroutine, coroutine, noreturn

#: How long one peer subprocess may run before it is reported as timed out.
CHILD_TIMEOUT = 300.0

#: Thread stack for the peers when the recursion limit is raised: the
#: recursion is real Python (and C) recursion, and 10^5 levels need it.
PEER_STACK_SIZE = 1024**3

#: Recursion limit per level of peer recursion when it is raised (several
#: Python frames per level; generous so that only the C stack could fail).
PEER_FRAMES_PER_LEVEL = 50

#: The peer level whose time per level is the denominator of the ratios.
REFERENCE_DEPTH = 10**4

#: The deepest peer recursion traced with tracemalloc (divided by 10 with
#: --quick). Under tracemalloc every allocation walks the whole Python stack
#: (CPython counts the frames even when it stores one), so tracing a
#: recursion of depth D costs O(D) per allocation: about 95 s at 10^4 and
#: hours at 10^5. Deeper peers report the growth of the child's peak RSS
#: instead, which also counts the C stack.
TRACEMALLOC_MAX_DEPTH = 10**4

MACHINE_NOTE = "This machine has two shared cores; figures vary with load."

ChainBody = Generator[Deferred[None] | None, None, int]


# -- txstateproto: the chains under test ---------------------------------------


def sync_step(n: int) -> ChainBody:
    """
    Hand over to the next step at once, without waiting on anything.
    """
    if n == 0:
        return 0
    noreturn(sync_step(n - 1))
    yield  # Unreachable; makes this a generator function.


def fired_step(n: int) -> ChainBody:
    """
    Wait on an already-fired Deferred, then hand over to the next step.
    """
    if n == 0:
        return 0
    yield succeed(None)
    noreturn(fired_step(n - 1))


def unfired_step(n: int, pending: list[Deferred[None]]) -> ChainBody:
    """
    Wait on a Deferred that the driver fires later, then hand over.
    """
    if n == 0:
        return 0
    d: Deferred[None] = Deferred()
    pending.append(d)
    yield d
    noreturn(unfired_step(n - 1, pending))


@coroutine
def decorated_step(n: int) -> ChainBody:
    """
    Hand over to the next step, itself a decorated coroutine, at once.
    """
    if n == 0:
        return 0
    noreturn(decorated_step(n - 1))
    yield  # Unreachable; makes this a generator function.


def run_sync(n: int) -> Deferred[int]:
    """
    Run the synchronous chain of C{n} steps.
    """
    return Coroutine(sync_step(n))


def run_fired(n: int) -> Deferred[int]:
    """
    Run the chain of C{n} steps that each yield a fired Deferred.
    """
    return Coroutine(fired_step(n))


def run_unfired(n: int) -> Deferred[int]:
    """
    Run the chain of C{n} steps that each wait on an unfired Deferred,
    firing the pending Deferreds one by one as a reactor would.
    """
    pending: list[Deferred[None]] = []
    result = Coroutine(unfired_step(n, pending))
    while pending:
        pending.pop().callback(None)
    return result


def run_decorated(n: int) -> Deferred[int]:
    """
    Run the chain of C{n} tail calls into a decorated coroutine.
    """
    return decorated_step(n)


# -- the peers -----------------------------------------------------------------


@inlineCallbacks
def ic_recurse(n: int) -> Generator[Deferred[int], int, int]:
    """
    Recurse C{n} levels with C{inlineCallbacks}.
    """
    if n == 0:
        return 0
    result = yield ic_recurse(n - 1)
    return result


def co_recurse(n: int) -> Deferred[int]:
    """
    Recurse C{n} levels of C{async def}, each wrapped as a Deferred.
    """
    return Deferred.fromCoroutine(_co_body(n))


async def _co_body(n: int) -> int:
    """
    The body of one level of L{co_recurse}.
    """
    if n == 0:
        return 0
    return await co_recurse(n - 1)


# Instrumented copies, used only after a failure to find its depth (so the
# timed functions above carry no bookkeeping).
_deepest: list[int] = [0]


@inlineCallbacks
def _ic_probe(n: int, level: int = 0) -> Generator[Deferred[int], int, int]:
    """
    L{ic_recurse}, recording the deepest level entered.
    """
    _deepest[0] = max(_deepest[0], level)
    if n == 0:
        return 0
    result = yield _ic_probe(n - 1, level + 1)
    return result


def _co_probe(n: int, level: int = 0) -> Deferred[int]:
    """
    L{co_recurse}, recording the deepest level entered.
    """
    _deepest[0] = max(_deepest[0], level)
    return Deferred.fromCoroutine(_co_probe_body(n, level))


async def _co_probe_body(n: int, level: int) -> int:
    """
    The body of one level of L{_co_probe}.
    """
    if n == 0:
        return 0
    return await _co_probe(n - 1, level + 1)


PEERS: dict[str, tuple[str, Callable[[int], Deferred[int]], Callable[..., Any]]] = {
    "ic": ("inlineCallbacks yield f(n-1)", ic_recurse, _ic_probe),
    "co": ("async def await f(n-1), fromCoroutine", co_recurse, _co_probe),
}

LIMITS = {"default": "default recursion limit", "raised": "raised limit"}


# -- measuring -----------------------------------------------------------------


def outcome_of(d: Deferred[int]) -> tuple[bool, str]:
    """
    Say whether C{d} fired with 0 (the right answer), and if not, why.
    """
    box: list[object] = []
    d.addBoth(box.append)
    if not box:
        return False, "did not fire"
    result = box[0]
    if result == 0:
        return True, ""
    if hasattr(result, "value"):  # A Failure.
        return False, type(result.value).__name__
    return False, f"wrong result {result!r:.60}"


def time_once(run: Callable[[int], Deferred[int]], n: int) -> tuple[int, str]:
    """
    Time one run of C{n} steps; return nanoseconds and an error, if any.
    """
    gc.collect()
    start = time.perf_counter_ns()
    d = run(n)
    elapsed = time.perf_counter_ns() - start
    _, error = outcome_of(d)
    return elapsed, error


def peak_once(run: Callable[[int], Deferred[int]], n: int) -> tuple[int, str]:
    """
    Run C{n} steps under C{tracemalloc}; return the peak bytes and an error.
    """
    gc.collect()
    tracemalloc.start()
    try:
        d = run(n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    _, error = outcome_of(d)
    return peak, error


@dataclass
class Row:
    """
    One line of the results table.
    """

    scenario: str
    n: int
    times_ns: list[float] = field(default_factory=list)
    peak: int | None = None
    #: How C{peak} was measured: "tracemalloc", or "RSS" where tracing is
    #: infeasible (see L{TRACEMALLOC_MAX_DEPTH}).
    peak_method: str = "tracemalloc"
    failure: str = ""

    def per_step(self) -> float | None:
        """
        The median time per step in nanoseconds, if it ran.
        """
        if not self.times_ns:
            return None
        return statistics.median(self.times_ns) / self.n


def measure_ours(
    label: str, run: Callable[[int], Deferred[int]], n: int, runs: int
) -> Row:
    """
    Time and trace one txstateproto scenario in this process.
    """
    row = Row(label, n)
    time_once(run, min(n, 1000))  # Warm up.
    for _ in range(runs):
        elapsed, error = time_once(run, n)
        if error:
            row.failure = error
            return row
        row.times_ns.append(elapsed)
    row.peak, row.failure = peak_once(run, n)
    return row


def child_call(peer: str, depth: int, limit: str, mode: str) -> dict[str, Any]:
    """
    Run one peer measurement in a subprocess and return its JSON answer.
    """
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        peer,
        str(depth),
        "--limit",
        limit,
        "--mode",
        mode,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CHILD_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {CHILD_TIMEOUT:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("{"):
            answer: dict[str, Any] = json.loads(line)
            return answer
    if done.returncode < 0:
        return {"error": f"crashed (signal {-done.returncode})"}
    tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
    return {"error": f"exit {done.returncode}: {tail[0][:50]}"}


def measure_peer(peer: str, depth: int, limit: str, runs: int, trace_up_to: int) -> Row:
    """
    Time and trace one peer at one depth, one subprocess per run.

    The first failure (an exception, a crash, a timeout) ends the row: the
    same recursion fails the same way every time.
    """
    row = Row(f"{PEERS[peer][0]} ({LIMITS[limit]})", depth)
    rss: list[int] = []
    for _ in range(runs):
        answer = child_call(peer, depth, limit, "time")
        if "error" in answer:
            row.failure = answer["error"]
            return row
        row.times_ns.append(answer["ns"])
        if answer.get("rss") is not None:
            rss.append(answer["rss"])
    if depth > trace_up_to:
        if rss:
            row.peak = int(statistics.median(rss))
        row.peak_method = "RSS"
        return row
    answer = child_call(peer, depth, limit, "memory")
    if "error" in answer:
        row.failure = "memory pass: " + answer["error"]
    else:
        row.peak = answer["peak"]
    return row


def resident_bytes() -> int | None:
    """
    Return this process's resident set size now (Linux only).
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int | None:
    """
    Return this process's peak resident set size so far (Linux only).
    """
    try:
        import resource  # Unix only.
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_main(peer: str, depth: int, limit: str, mode: str) -> None:
    """
    In the subprocess: run one peer once and print one JSON line.
    """
    warnings.simplefilter("ignore")  # "coroutine was never awaited" on failure.
    _, run, probe = PEERS[peer]
    answer: dict[str, Any] = {}

    def work() -> None:
        if limit == "raised":
            sys.setrecursionlimit(depth * PEER_FRAMES_PER_LEVEL + 1000)
        try:
            time_once(run, min(depth, 50))  # Warm up.
            if mode == "time":
                before = resident_bytes()
                value, error = time_once(run, depth)
                answer["ns"] = value
                after = peak_resident_bytes()
                if before is not None and after is not None:
                    answer["rss"] = max(after - before, 0)
            else:
                value, error = peak_once(run, depth)
                answer["peak"] = value
            if error:
                _deepest[0] = 0
                probe(depth)
                answer.clear()
                answer["error"] = f"{error} at depth {_deepest[0]:,}"
        except BaseException as exc:  # Report anything, even a RecursionError.
            answer.clear()
            answer["error"] = f"{type(exc).__name__}: {str(exc)[:50]}"

    threading.stack_size(PEER_STACK_SIZE)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(json.dumps(answer), flush=True)


# -- reporting -----------------------------------------------------------------


def machine_facts() -> list[str]:
    """
    Describe the machine and software the figures come from.
    """
    return [
        f"CPU count: {os.cpu_count()}",
        f"Python: {platform.python_version()} ({platform.python_implementation()})",
        f"Twisted: {twisted.__version__}",
        f"txstateproto: {txstateproto.__version__} "
        f"({Path(txstateproto.__file__).parent})",
        MACHINE_NOTE,
    ]


HEADERS = [
    "scenario",
    "N",
    "ns/step median",
    "min-max",
    "peak bytes",
    "bytes/step",
    "ratio to inlineCallbacks@10^4",
]


def table_cells(rows: list[Row], reference: float | None) -> list[list[str]]:
    """
    Format every row of the table as strings.
    """
    cells = []
    for row in rows:
        per_step = row.per_step()
        if per_step is None:
            cells.append([row.scenario, f"{row.n:,}", row.failure, "-", "-", "-", "-"])
            continue
        low = min(row.times_ns) / row.n
        high = max(row.times_ns) / row.n
        if row.peak is None:
            peak, each = row.failure or "-", "-"
        else:
            suffix = "" if row.peak_method == "tracemalloc" else f" {row.peak_method}"
            peak = f"{row.peak:,}{suffix}"
            each = f"{row.peak / row.n:,.3f}{suffix}"
        ratio = "-" if reference is None else f"{per_step / reference:.3f}"
        cells.append(
            [
                row.scenario,
                f"{row.n:,}",
                f"{per_step:,.0f}",
                f"{low:,.0f}-{high:,.0f}",
                peak,
                each,
                ratio,
            ]
        )
    return cells


def text_table(cells: list[list[str]]) -> str:
    """
    Lay the table out in aligned columns for the terminal.
    """
    widths = [
        max(len(line[i]) for line in [HEADERS, *cells]) for i in range(len(HEADERS))
    ]

    def line(values: list[str]) -> str:
        parts = [
            value.ljust(width) if i == 0 else value.rjust(width)
            for i, (value, width) in enumerate(zip(values, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(HEADERS), rule, *(line(values) for values in cells)])


def markdown_table(cells: list[list[str]]) -> str:
    """
    Lay the table out as Markdown.
    """
    head = "| " + " | ".join(HEADERS) + " |"
    align = "|" + "|".join(["---"] + ["---:"] * (len(HEADERS) - 1)) + "|"
    body = ["| " + " | ".join(values) + " |" for values in cells]
    return "\n".join([head, align, *body])


def progress(message: str) -> None:
    """
    Say what is running now, on stderr so stdout holds only the report.
    """
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def main(quick: bool) -> None:
    """
    Run every scenario, print the table and write it as Markdown.
    """
    scale = 10 if quick else 1
    runs = 3 if quick else 5
    facts = machine_facts()
    for fact in facts:
        print(fact)
    print(
        f"Mode: {'--quick (N/10, 3 runs)' if quick else 'full (5 runs)'}; "
        f"times are medians; peak memory comes from a separate pass."
    )
    print(flush=True)

    ours: list[tuple[str, Callable[[int], Deferred[int]], int]] = [
        ("noreturn, sync steps", run_sync, 10**6),
        ("noreturn, yield succeed(None)", run_fired, 10**6),
        ("noreturn, yield unfired Deferred", run_unfired, 10**6),
        ("noreturn into @coroutine", run_decorated, 10**5),
    ]
    rows: list[Row] = []
    for label, run, n in ours:
        progress(f"{label}, N={n // scale:,}")
        rows.append(measure_ours(label, run, n // scale, runs))

    depths = [10**3 // scale, 10**4 // scale, 10**5 // scale]
    if REFERENCE_DEPTH not in depths:
        depths.append(REFERENCE_DEPTH)
    reference: float | None = None
    for peer in PEERS:
        for limit in LIMITS:
            for depth in depths:
                progress(f"{PEERS[peer][0]} ({LIMITS[limit]}), depth {depth:,}")
                row = measure_peer(
                    peer, depth, limit, runs, TRACEMALLOC_MAX_DEPTH // scale
                )
                rows.append(row)
                if (peer, limit, depth) == ("ic", "raised", REFERENCE_DEPTH):
                    reference = row.per_step()

    cells = table_cells(rows, reference)
    notes = [
        "ns/step: per tail call for txstateproto, per recursion level for the peers.",
        "Peak bytes: tracemalloc (Python heap, traced in a separate untimed "
        "pass); 'RSS' marks peers deeper than "
        f"{TRACEMALLOC_MAX_DEPTH // scale:,}, where tracemalloc is O(stack "
        "depth) per allocation, so the figure is the growth of the child's "
        "peak resident set instead (heap and C stack).",
        "Ratio: the row's ns/step divided by inlineCallbacks' ns/level at "
        f"depth {REFERENCE_DEPTH:,} with the raised recursion limit; below 1 "
        "is faster.",
        f"Raised limit: sys.setrecursionlimit({PEER_FRAMES_PER_LEVEL} x depth "
        f"+ 1000) in a thread with a {PEER_STACK_SIZE >> 20} MiB stack.",
    ]
    print(text_table(cells))
    print()
    for note in notes:
        print(note)
    results = Path(__file__).resolve().parent / "results"
    results.mkdir(exist_ok=True)
    facts_md = "\n".join(f"- {fact}" for fact in facts)
    notes_md = "\n".join(f"- {note}" for note in notes)
    mode = "--quick" if quick else "full"
    (results / "tailcall.md").write_text(
        f"# Tail calls vs Twisted recursion ({mode} run, "
        f"{time.strftime('%Y-%m-%d %H:%M')})\n\n{facts_md}\n\n"
        f"{markdown_table(cells)}\n\n{notes_md}\n",
        encoding="utf-8",
    )
    print(f"\nWritten to {results / 'tailcall.md'}")


def parse_args(argv: list[str]) -> argparse.Namespace:
    """
    Read the command line.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument(
        "--quick", action="store_true", help="N/10 and 3 runs: a smoke test"
    )
    parser.add_argument(
        "--child",
        nargs=2,
        metavar=("PEER", "DEPTH"),
        help="internal: run one peer measurement and print JSON",
    )
    parser.add_argument("--limit", choices=sorted(LIMITS), default="default")
    parser.add_argument("--mode", choices=["time", "memory"], default="time")
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args(sys.argv[1:])
    if args.child:
        child_main(args.child[0], int(args.child[1]), args.limit, args.mode)
    else:
        main(args.quick)
