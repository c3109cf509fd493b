"""
Shared fixtures for the L{StateProtocol} tests: a protocol scripted by a
function, a log capture, transports that count what they are asked, and a
check that nothing keeps a protocol alive.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from txstateproto import StateProtocol

#: What a script returns: the body C{start()} hands to the engine.
Body = Generator[Any, Any, Any]


class Scripted(StateProtocol):
    """
    A L{StateProtocol} whose C{start()} runs a function given to the
    constructor, so that each test writes its handler inline.
    """

    def __init__(self, script: Callable[[Scripted], Any]) -> None:
        """
        @param script: Called with the protocol; returns what C{start()}
            returns (usually a generator).
        """
        super().__init__()
        self._script = script

    def start(self) -> Any:
        """
        Run the script.
        """
        return self._script(self)


def capture_log(case: SynchronousTestCase) -> list[LogEvent]:
    """
    Collect every event logged in the C{txstateproto} namespace while the
    test runs.

    @param case: The test; the observer is removed in its clean-up.
    @return: The list the events are appended to.
    """
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "txstateproto":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


class CountingTransport(StringTransport):
    """
    A L{StringTransport} that records every C{pauseProducing} and
    C{resumeProducing} call, so tests can check that they alternate.
    """

    def __init__(self) -> None:
        super().__init__()
        self.reading_calls: list[str] = []

    def pauseProducing(self) -> None:
        """
        Record the call, then pause as L{StringTransport} does.
        """
        self.reading_calls.append("pause")
        super().pauseProducing()

    def resumeProducing(self) -> None:
        """
        Record the call, then resume as L{StringTransport} does.
        """
        self.reading_calls.append("resume")
        super().resumeProducing()


@contextmanager
def gc_disabled() -> Iterator[None]:
    """
    Turn the cyclic garbage collector off for the block, so that only
    reference counting frees objects: anything still alive is kept by a
    real reference or by a cycle.
    """
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def released(scenario: Callable[[], object]) -> bool:
    """
    Run C{scenario} with the garbage collector off and say whether what it
    returns is freed as soon as the last reference goes.

    @param scenario: Builds the object (typically a protocol that has run
        and closed its connection), drops every other reference to it, and
        returns it.
    @return: Whether a weak reference to it is dead once the scenario's
        result is dropped.
    """
    with gc_disabled():
        ref = weakref.ref(scenario())
        return ref() is None


def yields(*waits: object) -> Body:
    """
    A body that waits on each of C{waits} in turn and returns nothing.

    @param waits: Deferreds (or anything else a body may yield).
    """
    # Not `yield from`: a tuple's iterator has no send() for the results.
    for wait in waits:  # noqa: UP028
        yield wait


def idle() -> Scripted:
    """
    A protocol whose handler waits for ever, so that the test drives its
    reads and writes directly.
    """
    return Scripted(lambda p: yields(Deferred()))
