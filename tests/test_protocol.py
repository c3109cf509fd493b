"""
Tests for L{txstateproto._protocol}: L{StateProtocol}'s reads, writes,
timers, side tasks, pause and back-pressure, endings, logging, and what it
leaves behind.

Every test drives the protocol through L{ProtocolHarness} (a
C{StringTransport} and a C{Clock}) or a bare C{StringTransport}; nothing
here touches a socket or real time.
"""

from __future__ import annotations

import gc
from collections.abc import Generator
from itertools import pairwise
from typing import Any
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IHalfCloseableProtocol, IPushProducer
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import (
    Body,
    CountingTransport,
    Scripted,
    capture_log,
    idle,
    released,
    yields,
)
from txstateproto import (
    ConnectionState,
    Coroutine,
    EndOfStreamError,
    FrameTooLongError,
    LineTooLongError,
    StateProtocol,
    _protocol,
    coroutine,
    noreturn,
)
from txstateproto._buffer import ReceiveBuffer
from txstateproto.testing import ProtocolHarness

# Hypothesis runs many examples; wall-clock deadlines on two shared cores
# would only make the property test flaky.
_settings = settings(deadline=None, max_examples=200)


_take_until = ReceiveBuffer.take_until


def reader(results: list[object], count: int | None = None) -> Scripted:
    """
    A protocol that reads lines and appends each to C{results}, C{count}
    times or for ever.
    """

    def script(p: Scripted) -> Body:
        n = 0
        while count is None or n < count:
            results.append((yield p.read_line()))
            n += 1

    return Scripted(script)


def waiter(gate: Deferred[None], results: list[object]) -> Scripted:
    """
    A protocol that first waits on C{gate} (a busy handler), then reads
    lines for ever into C{results}.
    """

    def script(p: Scripted) -> Body:
        yield gate
        while True:
            results.append((yield p.read_line()))

    return Scripted(script)


class Crasher(StateProtocol):
    """
    A handler with a bug: it divides by zero after the first line.
    """

    def start(self) -> Body:
        """
        Read a line, then crash.
        """
        yield self.read_line()
        self.compute()

    def compute(self) -> None:
        """
        The buggy step.
        """
        1 / 0  # noqa: B018


class ReadLineTests(SynchronousTestCase):
    """
    C{read_line} returns the next line without its delimiter, within
    C{max_line_length}.
    """

    def test_returns_line_without_delimiter(self) -> None:
        """
        A line is delivered without its delimiter.
        """
        results: list[object] = []
        h = ProtocolHarness(reader(results))
        h.feed(b"hello\r\n")
        self.assertEqual(results, [b"hello"])

    def test_line_split_into_single_bytes(self) -> None:
        """
        A line arriving one byte at a time, the delimiter split too, is one
        line.
        """
        results: list[object] = []
        h = ProtocolHarness(reader(results))
        h.feed(b"hello\r\nworld\r\n", chunk_size=1)
        self.assertEqual(results, [b"hello", b"world"])

    def test_many_lines_in_one_chunk_handled_in_one_call(self) -> None:
        """
        Every line of one chunk is handed to the handler within that one
        C{dataReceived} call.
        """
        results: list[object] = []
        h = ProtocolHarness(reader(results))
        h.feed(b"a\r\nb\r\n\r\nc\r\nd")
        self.assertEqual(results, [b"a", b"b", b"", b"c"])

    def test_unsatisfied_read_is_not_retried_without_new_bytes(self) -> None:
        """
        A line arriving alone costs one buffer search, the one that takes
        it: that take leaves the buffer empty, and the handler's next read
        queues without a search; the queued read is not searched again
        until more bytes arrive.
        """
        results: list[object] = []
        h = ProtocolHarness(reader(results))
        with mock.patch.object(
            ReceiveBuffer, "take_until", autospec=True, side_effect=_take_until
        ) as take_until:
            for n in range(10):
                h.feed(b"line %d\r\n" % n)
        self.assertEqual(len(results), 10)
        self.assertEqual(take_until.call_count, 10)

    def test_pipelined_lines_respect_max_line_length(self) -> None:
        """
        Lines that a read with a larger limit split ahead are still checked
        against C{max_line_length} when C{read_line} takes them.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            results.append((yield p.read_until(b"\r\n", max_length=100)))
            results.append((yield p.read_until(b"\r\n", max_length=100)))
            results.append((yield p.read_line()))
            try:
                yield p.read_line()
            except LineTooLongError as e:
                results.append(("too long", e.limit, e.limit_name))

        h = ProtocolHarness(Scripted(script))
        h.protocol.max_line_length = 5
        h.feed(b"a\r\nb\r\nshort\r\ntoo long\r\nc\r\n")
        self.assertEqual(
            results, [b"a", b"b", b"short", ("too long", 5, "max_line_length")]
        )

    def test_waiting_reader_keeps_no_received_chunk(self) -> None:
        """
        Once every buffered line is read and the handler waits for the next,
        the protocol holds no received bytes and no spare containers (what
        an idle connection costs).
        """
        results: list[object] = []
        h = ProtocolHarness(reader(results))
        h.feed(b"one\r\ntwo\r\n")
        self.assertEqual(results, [b"one", b"two"])
        p = h.protocol
        self.assertEqual(p._buffer._data, b"")
        # One read queued, held without a list.
        self.assertIsNotNone(p._head_read)
        self.assertIsNone(p._more_reads)
        self.assertIsNone(p._tasks)
        self.assertIsNone(p._drains)
        self.assertIsNone(p._closed_waiters)
        # The engine waits on the read, and the protocol on the conversation,
        # as direct waiters: neither keeps a callback entry.
        assert p._head_read is not None
        # (Nor a callback list: it is made only when a callback is added.)
        self.assertIsNone(p._head_read._chain)
        assert p.conversation is not None
        self.assertIsNone(p.conversation._chain)

    def test_protocol_state_stays_out_of_the_instance_dict(self) -> None:
        """
        A connected protocol that has read, written, timed out a read and
        waited on C{drain()} keeps its own state in slots: the instance dict
        holds only what Twisted's C{Protocol} and the subclass set, so a
        subclass's attributes do not push it past the keys CPython shares
        between instances.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            results.append((yield p.read_line()))
            p.write_line(b"reply")
            yield p.drain()
            try:
                yield p.read_line(timeout=1)
            except defer.TimeoutError:
                results.append("timed out")
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        h.protocol.idle_timeout = 30
        h.feed(b"one\r\n")
        h.clock.advance(1)
        self.assertEqual(results, [b"one", "timed out"])
        own = set(StateProtocol.__slots__)
        self.assertEqual(own & set(vars(h.protocol)), set())
        # Protocol's, the harness script's, and the limit set above.
        self.assertLessEqual(
            set(vars(h.protocol)),
            {"connected", "transport", "factory", "_script", "idle_timeout"},
        )

    def test_buffered_line_returns_fired_deferred_without_timer(self) -> None:
        """
        A read the buffer can satisfy returns an already-fired Deferred and
        schedules no timeout, even when given one.
        """
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(waiter(gate, []))
        h.feed(b"first\r\nsecond\r\n")
        d = h.protocol.read_line(timeout=5)
        self.assertEqual(self.successResultOf(d), b"first")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_buffered_read_behaves_as_succeed(self) -> None:
        """
        The already-fired Deferred of a read the buffer satisfied (made
        without C{Deferred.__init__}) behaves as L{succeed}'s does: callbacks
        run at once and chain, cancelling does nothing, it can be returned
        from another Deferred's callback, and C{inlineCallbacks} and
        C{await} take its result.
        """
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(waiter(gate, []))
        h.feed(b"a\r\nb\r\nc\r\nd\r\n")
        p = h.protocol

        d = p.read_line()
        self.assertIsInstance(d, Deferred)
        self.assertTrue(d.called)
        self.assertEqual(d.result, b"a")
        seen: list[object] = []
        d.addCallback(lambda line: line + b"!").addBoth(seen.append)
        self.assertEqual(seen, [b"a!"])
        d.cancel()
        self.assertIsNone(self.successResultOf(d))

        outer: Deferred[None] = Deferred()
        outer.addCallback(lambda _: p.read_line())
        outer.callback(None)
        self.assertEqual(self.successResultOf(outer), b"b")

        @inlineCallbacks
        def with_inline_callbacks() -> Generator[Any, Any, bytes]:
            return (yield p.read_line())

        self.assertEqual(self.successResultOf(with_inline_callbacks()), b"c")

        async def with_await() -> bytes:
            return await p.read_line()

        self.assertEqual(
            self.successResultOf(Deferred.fromCoroutine(with_await())), b"d"
        )

    def test_reads_record_their_creator_when_deferred_debugging_is_on(
        self,
    ) -> None:
        """
        With C{Deferred.debug} on, reads are made through C{Deferred.__init__}
        (which records where each was created), buffered or queued, and
        still work.
        """
        self.patch(Deferred, "debug", True)
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(waiter(gate, []))
        h.feed(b"first\r\n")
        p = h.protocol
        buffered = p.read_line()
        queued = p.read_line()
        self.assertTrue(buffered._debugInfo.creator)  # type: ignore[attr-defined]
        self.assertTrue(queued._debugInfo.creator)  # type: ignore[attr-defined]
        self.assertEqual(self.successResultOf(buffered), b"first")
        h.feed(b"second\r\n")
        self.assertEqual(self.successResultOf(queued), b"second")

    def test_delimiter_is_configurable(self) -> None:
        """
        The C{delimiter} attribute is the line terminator for reads and
        C{write_line}.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            line = yield p.read_line()
            results.append(line)
            p.write_line(line.upper())

        p = Scripted(script)
        p.delimiter = b"\n"
        h = ProtocolHarness(p)
        h.feed(b"x\ry\n")
        self.assertEqual(results, [b"x\ry"])
        self.assertEqual(h.take_output(), b"X\rY\n")

    def test_line_of_exactly_the_limit_is_accepted(self) -> None:
        """
        A line of C{max_line_length} bytes is accepted.
        """
        results: list[object] = []
        p = reader(results)
        p.max_line_length = 10
        h = ProtocolHarness(p)
        h.feed(b"0123456789\r\n")
        self.assertEqual(results, [b"0123456789"])

    def test_pending_read_fails_as_soon_as_line_is_too_long(self) -> None:
        """
        A pending read fails with L{LineTooLongError} as soon as
        C{max_line_length} plus the delimiter's length has arrived without a
        delimiter, not later.
        """
        h = ProtocolHarness(idle())
        p = h.protocol
        p.max_line_length = 10
        d = p.read_line()
        # Eleven bytes could still be "0123456789\r" + "\n".
        h.feed(b"0123456789\r")
        self.assertNoResult(d)
        h.feed(b"x")
        error = self.failureResultOf(d, LineTooLongError).value
        self.assertEqual(
            (error.limit, error.length, error.limit_name),
            (10, 12, "max_line_length"),
        )
        self.assertIn("max_line_length=10", str(error))

    def test_too_long_line_in_buffer_fails_at_once(self) -> None:
        """
        A read issued when the buffer already holds an over-long line fails
        at once and consumes nothing.
        """
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(waiter(gate, []))
        h.protocol.max_line_length = 4
        h.feed(b"abcdefgh")
        self.failureResultOf(h.protocol.read_line(), LineTooLongError)
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"abcdefgh")

    def test_memory_bounded_while_line_never_ends(self) -> None:
        """
        A peer that never sends the delimiter makes the pending read fail
        before the buffer holds more than the limit plus one chunk.
        """
        failures: list[Failure] = []

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line()
            except LineTooLongError:
                failures.append(Failure())
                # Keep the data buffered: the test inspects its size.
                yield Deferred()

        p = Scripted(script)
        p.max_line_length = 1000
        h = ProtocolHarness(p)
        for _ in range(100):
            h.feed(b"x" * 64)
            if failures:
                break
        self.assertEqual(len(failures), 1)
        self.assertLessEqual(len(p._buffer), 1000 + 2 + 64)


class ReadUntilTests(SynchronousTestCase):
    """
    C{read_until} reads up to a separator of the caller's choice.
    """

    def test_reads_up_to_separator(self) -> None:
        """
        The bytes before the separator are returned and the separator is
        consumed.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            results.append((yield p.read_until(b";;")))
            results.append((yield p.read_until(b";;")))

        h = ProtocolHarness(Scripted(script))
        h.feed(b"ab;", chunk_size=1)
        h.feed(b";c;d;;", chunk_size=2)
        self.assertEqual(results, [b"ab", b"c;d"])

    def test_max_length_error_names_max_length(self) -> None:
        """
        Exceeding C{max_length} fails the read with a L{LineTooLongError}
        whose limit is named C{max_length}.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_until(b";", max_length=3)
        h.feed(b"abcd")
        error = self.failureResultOf(d, LineTooLongError).value
        self.assertEqual((error.limit, error.limit_name), (3, "max_length"))
        self.assertIn("max_length=3", str(error))

    def test_max_length_defaults_to_max_line_length(self) -> None:
        """
        Without C{max_length}, C{max_line_length} is the limit.
        """
        h = ProtocolHarness(idle())
        h.protocol.max_line_length = 2
        d = h.protocol.read_until(b";")
        h.feed(b"abc")
        self.assertEqual(self.failureResultOf(d, LineTooLongError).value.limit, 2)

    def test_rejects_empty_separator_and_negative_limit(self) -> None:
        """
        An empty separator or a negative C{max_length} raises L{ValueError}
        at once.
        """
        h = ProtocolHarness(idle())
        self.assertRaises(ValueError, h.protocol.read_until, b"")
        self.assertRaises(ValueError, h.protocol.read_until, b";", max_length=-1)


class ReadExactlyTests(SynchronousTestCase):
    """
    C{read_exactly} reads a fixed count within C{max_frame_size}.
    """

    def test_reads_exact_count_across_chunks(self) -> None:
        """
        The read fires only once C{n} bytes are there, with exactly C{n}.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            results.append((yield p.read_exactly(5)))
            results.append((yield p.read_exactly(0)))
            results.append((yield p.read_exactly(2)))

        h = ProtocolHarness(Scripted(script))
        h.feed(b"abcd")
        self.assertEqual(results, [])
        h.feed(b"efg")
        self.assertEqual(results, [b"abcde", b"", b"fg"])

    def test_over_max_frame_size_fails_before_buffering(self) -> None:
        """
        A count above C{max_frame_size} fails with L{FrameTooLongError} at
        once, and the read is not queued.
        """
        h = ProtocolHarness(idle())
        h.protocol.max_frame_size = 8
        error = self.failureResultOf(
            h.protocol.read_exactly(9), FrameTooLongError
        ).value
        self.assertEqual((error.limit, error.length), (8, 9))
        self.assertIn("max_frame_size=8", str(error))
        d = h.protocol.read_some()
        h.feed(b"xyz")
        self.assertEqual(self.successResultOf(d), b"xyz")

    def test_rejects_negative_count(self) -> None:
        """
        A negative count raises L{ValueError} at once.
        """
        h = ProtocolHarness(idle())
        self.assertRaises(ValueError, h.protocol.read_exactly, -1)

    def test_buffered_read_fires_at_once_without_a_timer(self) -> None:
        """
        With nothing queued and the bytes buffered, the read has fired when
        returned, consumes exactly C{n} bytes and schedules no timeout.
        """
        h = ProtocolHarness(idle())
        h.feed(b"abcdef")
        d = h.protocol.read_exactly(4, timeout=5)
        self.assertEqual(self.successResultOf(d), b"abcd")
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"ef")

    def test_buffered_read_waits_behind_a_queued_read(self) -> None:
        """
        A read issued while another is queued does not take buffered bytes
        ahead of it, even if they would satisfy it.
        """
        h = ProtocolHarness(idle())
        h.feed(b"ab")
        first = h.protocol.read_line()
        second = h.protocol.read_exactly(2)
        self.assertNoResult(first)
        self.assertNoResult(second)
        h.feed(b"\r\ncd")
        self.assertEqual(self.successResultOf(first), b"ab")
        self.assertEqual(self.successResultOf(second), b"cd")

    def test_buffered_read_lifts_the_receive_pause(self) -> None:
        """
        Taking buffered bytes below C{receive_high_water} resumes reading
        from the transport.
        """
        h = ProtocolHarness(idle())
        h.protocol.receive_high_water = 10
        h.feed(b"x" * 12)
        self.assertTrue(h.reading_paused)
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(3)), b"xxx")
        self.assertFalse(h.reading_paused)

    def test_short_buffer_after_half_close_fails_with_partial(self) -> None:
        """
        After the peer half-closed, a read the buffer cannot satisfy fails
        at once with L{EndOfStreamError} carrying what was buffered.
        """
        h = ProtocolHarness(idle())
        h.protocol.half_close = True
        h.feed(b"abc")
        h.protocol.readConnectionLost()
        error = self.failureResultOf(h.protocol.read_exactly(5), EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"abc", 5))


class PeekTests(SynchronousTestCase):
    """
    C{peek} shows the next buffered bytes without consuming or waiting.
    """

    def test_shows_up_to_n_without_consuming(self) -> None:
        """
        At most C{n} bytes are shown, and the next read still gets them.
        """
        h = ProtocolHarness(idle())
        h.feed(b"abc")
        h.feed(b"def")
        self.assertEqual(h.protocol.peek(2), b"ab")
        self.assertEqual(h.protocol.peek(4), b"abcd")
        self.assertEqual(h.protocol.peek(100), b"abcdef")
        self.assertEqual(h.protocol.peek(0), b"")
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(6)), b"abcdef")

    def test_empty_when_nothing_buffered(self) -> None:
        """
        With nothing buffered it returns C{b""} at once and queues nothing.
        """
        h = ProtocolHarness(idle())
        self.assertEqual(h.protocol.peek(4), b"")
        d = h.protocol.read_some()
        h.feed(b"x")
        self.assertEqual(self.successResultOf(d), b"x")

    def test_empty_while_reads_are_queued(self) -> None:
        """
        While a read is queued, the buffered bytes are that read's, so
        nothing is shown; once it is satisfied, what follows is.
        """
        h = ProtocolHarness(idle())
        h.feed(b"ab")
        d = h.protocol.read_exactly(3)
        self.assertEqual(h.protocol.peek(2), b"")
        h.feed(b"cde")
        self.assertEqual(self.successResultOf(d), b"abc")
        self.assertEqual(h.protocol.peek(5), b"de")

    def test_rejects_negative_count(self) -> None:
        """
        A negative count raises L{ValueError} at once.
        """
        h = ProtocolHarness(idle())
        self.assertRaises(ValueError, h.protocol.peek, -1)


def _scan_word(
    data: bytes | bytearray, start: int, stop: int
) -> tuple[bytes, int] | None:
    """
    A scan for L{StateProtocol.take_scanned}: bytes up to a space, within
    C{data[start:stop]}.
    """
    end = data.find(b" ", start, stop)
    if end < 0:
        return None
    return bytes(data[start:end]), end + 1


class TakeScannedTests(SynchronousTestCase):
    """
    C{take_scanned} parses a whole message in place and consumes it, or
    consumes nothing; it never waits.
    """

    def test_takes_whole_messages_and_leaves_the_rest(self) -> None:
        """
        Each call consumes one scanned message; an incomplete one is left
        for the ordinary reads.
        """
        h = ProtocolHarness(idle())
        h.feed(b"one two thr")
        self.assertEqual(h.protocol.take_scanned(_scan_word, 100), b"one")
        self.assertEqual(h.protocol.take_scanned(_scan_word, 100), b"two")
        self.assertIsNone(h.protocol.take_scanned(_scan_word, 100))
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"thr")

    def test_nothing_while_reads_are_queued(self) -> None:
        """
        While a read is queued, the scan is not called and nothing is taken:
        the buffered bytes are that read's.
        """
        h = ProtocolHarness(idle())
        h.feed(b"ab c ")
        d = h.protocol.read_exactly(6)
        self.assertIsNone(h.protocol.take_scanned(_scan_word, 100))
        h.feed(b"d")
        self.assertEqual(self.successResultOf(d), b"ab c d")

    def test_limit_bounds_the_message(self) -> None:
        """
        A message longer than C{limit} is not scanned, however much is
        buffered.
        """
        h = ProtocolHarness(idle())
        h.feed(b"x" * 50 + b" ")
        self.assertIsNone(h.protocol.take_scanned(_scan_word, 50))
        self.assertEqual(h.protocol.take_scanned(_scan_word, 51), b"x" * 50)

    def test_lifts_the_receive_pause(self) -> None:
        """
        Consuming the buffer below C{receive_high_water} resumes reading from
        the transport, as a read would.
        """
        h = ProtocolHarness(idle())
        h.protocol.receive_high_water = 10
        h.feed(b"abcdefgh ijk")
        self.assertTrue(h.reading_paused)
        self.assertEqual(h.protocol.take_scanned(_scan_word, 100), b"abcdefgh")
        self.assertFalse(h.reading_paused)


class ReadScannedTests(SynchronousTestCase):
    """
    C{read_scanned} waits for a byte, then runs its scan once on what is
    buffered: it fires with the scan's value, or with C{None} (nothing
    consumed) when the scan takes nothing.
    """

    def test_buffered_fires_at_once(self) -> None:
        """
        With bytes buffered and no read queued, the scan runs at once and
        the Deferred has fired with its value; the message is consumed.
        """
        h = ProtocolHarness(idle())
        h.feed(b"one two")
        d = h.protocol.read_scanned(_scan_word, 100)
        self.assertEqual(self.successResultOf(d), b"one")
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"two")

    def test_waits_for_a_byte_then_scans_once(self) -> None:
        """
        With nothing buffered it waits; the first chunk is scanned once,
        and an incomplete message fires it with C{None}, nothing consumed.
        """
        calls: list[bytes] = []

        def scan(
            data: bytes | bytearray, start: int, stop: int
        ) -> tuple[bytes, int] | None:
            calls.append(bytes(data[start:stop]))
            return _scan_word(data, start, stop)

        h = ProtocolHarness(idle())
        d = h.protocol.read_scanned(scan, 100)
        self.assertNoResult(d)
        self.assertEqual(calls, [])
        h.feed(b"hel")
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(calls, [b"hel"])
        h.feed(b"lo ")
        d = h.protocol.read_scanned(scan, 100)
        self.assertEqual(self.successResultOf(d), b"hello")
        self.assertEqual(calls, [b"hel", b"hello "])

    def test_resumes_a_handler_per_chunk(self) -> None:
        """
        A handler that yields it gets each chunk's scanned value, in order,
        as the chunks arrive, and reads what the scan leaves its own way.
        """
        got: list[object] = []

        def script(p: Scripted) -> Body:
            while True:
                word = yield p.read_scanned(_scan_word, 100)
                if word is None:
                    word = b"read: " + (yield p.read_exactly(2))
                got.append(word)

        h = ProtocolHarness(Scripted(script))
        h.feed(b"a ")
        h.feed(b"bc ")
        h.feed(b"d")
        self.assertEqual(got, [b"a", b"bc"])
        h.feed(b"e")
        self.assertEqual(got, [b"a", b"bc", b"read: de"])

    def test_queued_behind_another_read(self) -> None:
        """
        Behind another read it waits its turn, and scans what that read
        left.
        """
        h = ProtocolHarness(idle())
        first = h.protocol.read_exactly(3)
        second = h.protocol.read_scanned(_scan_word, 100)
        h.feed(b"abcdef gh")
        self.assertEqual(self.successResultOf(first), b"abc")
        self.assertEqual(self.successResultOf(second), b"def")

    def test_queued_behind_a_read_that_takes_everything(self) -> None:
        """
        If the read ahead takes every buffered byte, it waits for the next.
        """
        h = ProtocolHarness(idle())
        first = h.protocol.read_exactly(3)
        second = h.protocol.read_scanned(_scan_word, 100)
        h.feed(b"abc")
        self.assertEqual(self.successResultOf(first), b"abc")
        self.assertNoResult(second)
        h.feed(b"x ")
        self.assertEqual(self.successResultOf(second), b"x")

    def test_cancel_consumes_nothing(self) -> None:
        """
        Cancelling the wait removes the read: the next read gets the bytes.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_scanned(_scan_word, 100, timeout=5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.feed(b"w ")
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"w ")

    def test_limit_bounds_the_scan(self) -> None:
        """
        The scan sees at most C{limit} bytes.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_scanned(_scan_word, 5)
        h.feed(b"abcdefgh ")
        self.assertIsNone(self.successResultOf(d))
        d = h.protocol.read_scanned(_scan_word, 9)
        self.assertEqual(self.successResultOf(d), b"abcdefgh")

    def test_scan_errors_fail_the_read(self) -> None:
        """
        Whatever the scan raises fails the Deferred, buffered or waiting,
        and nothing is consumed.
        """

        def broken(
            data: bytes | bytearray, start: int, stop: int
        ) -> tuple[bytes, int] | None:
            raise KeyError("bad scan")

        h = ProtocolHarness(idle())
        h.feed(b"ab")
        self.failureResultOf(h.protocol.read_scanned(broken, 100), KeyError)
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"ab")
        d = h.protocol.read_scanned(broken, 100)
        h.feed(b"cd")
        self.failureResultOf(d, KeyError)
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"cd")

    def test_scan_end_outside_the_window_fails(self) -> None:
        """
        A scan that claims to end outside its window fails the read with
        L{ValueError}; nothing is consumed.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_scanned(lambda data, start, stop: (1, stop + 1), 100)
        h.feed(b"xy")
        self.assertIn("outside", str(self.failureResultOf(d, ValueError).value))
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"xy")

    def test_negative_limit(self) -> None:
        """
        A negative limit raises at once, naming the limit.
        """
        h = ProtocolHarness(idle())
        with self.assertRaisesRegex(ValueError, "limit >= 0, not -1"):
            h.protocol.read_scanned(_scan_word, -1)

    def test_lifts_the_receive_pause(self) -> None:
        """
        Consuming the buffer below C{receive_high_water} resumes reading
        from the transport, as a read would.
        """
        h = ProtocolHarness(idle())
        h.protocol.receive_high_water = 10
        h.feed(b"abcdefgh ijk")
        self.assertTrue(h.reading_paused)
        d = h.protocol.read_scanned(_scan_word, 100)
        self.assertEqual(self.successResultOf(d), b"abcdefgh")
        self.assertFalse(h.reading_paused)

    def test_end_of_stream(self) -> None:
        """
        With C{half_close}, a wait pending at end of stream, or begun after
        it with nothing buffered, fails with L{EndOfStreamError}; buffered
        bytes are still scanned.
        """
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = p.read_scanned(_scan_word, 100)
        h.half_close()
        error = self.failureResultOf(d, EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"", None))
        self.failureResultOf(p.read_scanned(_scan_word, 100), EndOfStreamError)

        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        h.feed(b"last ")
        h.half_close()
        self.assertEqual(self.successResultOf(p.read_scanned(_scan_word, 100)), b"last")

    def test_after_the_connection_is_lost(self) -> None:
        """
        A wait begun after the connection is lost fails with the reason.
        """
        h = ProtocolHarness(idle())
        h.lose_connection()
        self.failureResultOf(h.protocol.read_scanned(_scan_word, 100), ConnectionDone)


class TakePrefixedTests(SynchronousTestCase):
    """
    C{take_prefixed} takes a whole length-prefixed message and consumes it,
    or consumes nothing; it never waits.
    """

    def test_takes_whole_messages_and_leaves_the_rest(self) -> None:
        """
        Each call consumes one message; an incomplete one is left for the
        counted reads.
        """
        h = ProtocolHarness(idle())
        h.feed(b"\x00\x03one\x00\x00\x00\x05th")
        self.assertEqual(h.protocol.take_prefixed(2, 100), b"one")
        self.assertEqual(h.protocol.take_prefixed(2, 100), b"")
        self.assertIsNone(h.protocol.take_prefixed(2, 100))
        self.assertEqual(self.successResultOf(h.protocol.read_some()), b"\x00\x05th")

    def test_nothing_while_reads_are_queued(self) -> None:
        """
        While a read is queued, nothing is taken: the buffered bytes are
        that read's. A bad size is still refused.
        """
        h = ProtocolHarness(idle())
        h.feed(b"\x02ab")
        d = h.protocol.read_exactly(4)
        self.assertIsNone(h.protocol.take_prefixed(1, 100))
        with self.assertRaises(ValueError):
            h.protocol.take_prefixed(3, 100)
        h.feed(b"c")
        self.assertEqual(self.successResultOf(d), b"\x02abc")

    def test_over_the_limit_is_left_for_the_reads(self) -> None:
        """
        A message announcing more than C{max_length} is not taken, however
        much is buffered.
        """
        h = ProtocolHarness(idle())
        h.feed(b"\x05hello")
        self.assertIsNone(h.protocol.take_prefixed(1, 4))
        self.assertEqual(h.protocol.take_prefixed(1, 5), b"hello")

    def test_lifts_the_receive_pause(self) -> None:
        """
        Consuming the buffer below C{receive_high_water} resumes reading from
        the transport, as a read would.
        """
        h = ProtocolHarness(idle())
        h.protocol.receive_high_water = 10
        h.feed(b"\x08abcdefgh\x03ijk")
        self.assertTrue(h.reading_paused)
        self.assertEqual(h.protocol.take_prefixed(1, 100), b"abcdefgh")
        self.assertFalse(h.reading_paused)


class ReadSomeTests(SynchronousTestCase):
    """
    C{read_some} returns what is buffered, at most C{max_bytes}, or waits
    for the next chunk.
    """

    def test_returns_buffered_bytes_up_to_max(self) -> None:
        """
        Buffered bytes are returned at once, at most C{max_bytes} at a time.
        """
        h = ProtocolHarness(idle())
        h.feed(b"abcdef")
        self.assertEqual(self.successResultOf(h.protocol.read_some(4)), b"abcd")
        self.assertEqual(self.successResultOf(h.protocol.read_some(4)), b"ef")

    def test_waits_for_next_chunk(self) -> None:
        """
        With nothing buffered the read fires with the next chunk.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_some()
        self.assertNoResult(d)
        h.feed(b"xy")
        self.assertEqual(self.successResultOf(d), b"xy")

    def test_rejects_max_below_one(self) -> None:
        """
        C{max_bytes} below 1 raises L{ValueError} at once.
        """
        h = ProtocolHarness(idle())
        self.assertRaises(ValueError, h.protocol.read_some, 0)


class ReadOrderAndCancelTests(SynchronousTestCase):
    """
    Reads are satisfied in the order they were issued; a cancelled read
    leaves the queue and consumes nothing.
    """

    def test_reads_satisfied_in_issue_order(self) -> None:
        """
        Two readers waiting at once get the lines in the order they asked.
        """
        h = ProtocolHarness(idle())
        first = h.protocol.read_line()
        second = h.protocol.read_exactly(3)
        third = h.protocol.read_line()
        h.feed(b"one\r\ntwothree\r\n")
        self.assertEqual(
            [self.successResultOf(d) for d in (first, second, third)],
            [b"one", b"two", b"three"],
        )

    def test_cancelled_read_consumes_nothing(self) -> None:
        """
        Cancelling a queued read fails it with L{CancelledError}, and the
        bytes that arrive later go to the next read.
        """
        h = ProtocolHarness(idle())
        first = h.protocol.read_line()
        second = h.protocol.read_line()
        first.cancel()
        self.failureResultOf(first, CancelledError)
        h.feed(b"line\r\n")
        self.assertEqual(self.successResultOf(second), b"line")

    def test_cancelled_read_in_the_middle_leaves_the_queue(self) -> None:
        """
        Cancelling a read queued between two others removes it alone: the
        reads around it get the bytes in order, and the queue holds nothing
        once they have.
        """
        h = ProtocolHarness(idle())
        reads = [h.protocol.read_line() for _ in range(4)]
        reads[1].cancel()
        reads[2].cancel()
        self.failureResultOf(reads[1], CancelledError)
        self.failureResultOf(reads[2], CancelledError)
        h.feed(b"one\r\ntwo\r\n")
        self.assertEqual(self.successResultOf(reads[0]), b"one")
        self.assertEqual(self.successResultOf(reads[3]), b"two")
        self.assertIsNone(h.protocol._head_read)
        self.assertIsNone(h.protocol._more_reads)

    def test_cancelling_the_first_read_lets_the_next_take_buffered_bytes(
        self,
    ) -> None:
        """
        When the first queued read is cancelled, the read behind it is given
        what is already buffered at once, after the cancelled one has failed.
        """
        h = ProtocolHarness(idle())
        h.feed(b"hi\r\n")
        order: list[str] = []
        first = h.protocol.read_exactly(10)
        first.addErrback(lambda f: order.append(f"first {f.type.__name__}"))
        second = h.protocol.read_line()
        second.addCallback(lambda line: order.append(f"second {line!r}"))
        first.cancel()
        self.assertEqual(order, ["first CancelledError", "second b'hi'"])

    def test_timed_out_first_read_lets_the_next_take_buffered_bytes(self) -> None:
        """
        When the first queued read times out, the read behind it is given
        what is already buffered at once.
        """
        h = ProtocolHarness(idle())
        h.feed(b"hi\r\n")
        first = h.protocol.read_exactly(10, timeout=5)
        second = h.protocol.read_line()
        h.clock.advance(5)
        self.failureResultOf(first, defer.TimeoutError)
        self.assertEqual(self.successResultOf(second), b"hi")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_read_queued_behind_a_pending_read_waits_its_turn(self) -> None:
        """
        A read issued while another is queued does not take buffered bytes
        ahead of it.
        """
        h = ProtocolHarness(idle())
        line = h.protocol.read_line()
        h.feed(b"abc")
        some = h.protocol.read_some()
        self.assertNoResult(some)
        h.feed(b"\r\nxyz")
        self.assertEqual(self.successResultOf(line), b"abc")
        self.assertEqual(self.successResultOf(some), b"xyz")

    def test_reader_that_reads_again_in_callback_keeps_order(self) -> None:
        """
        A reader resumed by a read that reads again at once gets the next
        bytes before later-queued readers.
        """
        h = ProtocolHarness(idle())
        got: list[object] = []

        def again(line: bytes) -> None:
            got.append(line)
            h.protocol.read_line().addCallback(got.append)

        h.protocol.read_line().addCallback(again)
        later = h.protocol.read_line()
        h.feed(b"a\r\nb\r\nc\r\n")
        # The follow-up read was issued after `later`, so it waits behind it.
        self.assertEqual(got, [b"a", b"c"])
        self.assertEqual(self.successResultOf(later), b"b")


class TimeoutTests(SynchronousTestCase):
    """
    Reads with C{timeout=} fail with Twisted's L{defer.TimeoutError} and
    leave no DelayedCall behind, however they end.
    """

    def test_every_read_kind_times_out(self) -> None:
        """
        Each kind of read fails with L{defer.TimeoutError} when its time is
        up, and no timer remains.
        """
        h = ProtocolHarness(idle())
        p = h.protocol
        for read in (
            lambda: p.read_line(timeout=5),
            lambda: p.read_until(b";", timeout=5),
            lambda: p.read_exactly(3, timeout=5),
            lambda: p.read_some(timeout=5),
            lambda: p.read_scanned(_scan_word, 100, timeout=5),
        ):
            d = read()
            h.clock.advance(4.9)
            self.assertNoResult(d)
            h.clock.advance(0.1)
            error = self.failureResultOf(d, defer.TimeoutError).value
            self.assertIn("5 seconds", str(error))
            self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_satisfied_read_cancels_its_timer(self) -> None:
        """
        A read satisfied in time leaves no DelayedCall.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_line(timeout=5)
        h.feed(b"ok\r\n")
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_cancelled_read_cancels_its_timer(self) -> None:
        """
        Cancelling a read with a timeout cancels its DelayedCall.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_exactly(3, timeout=5)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_timed_out_read_consumes_nothing(self) -> None:
        """
        The bytes that had arrived for a timed-out read stay for the next.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.read_line(timeout=1)
        h.feed(b"par")
        h.clock.advance(1)
        self.failureResultOf(d, defer.TimeoutError)
        following = h.protocol.read_line()
        h.feed(b"tial\r\n")
        self.assertEqual(self.successResultOf(following), b"partial")

    def test_timeout_caught_by_handler_lets_it_go_on(self) -> None:
        """
        A handler that catches the timeout can write and read again.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line(timeout=10)
            except defer.TimeoutError:
                p.write_line(b"still there?")
            results.append((yield p.read_line()))

        h = ProtocolHarness(Scripted(script))
        h.clock.advance(10)
        self.assertEqual(h.take_output(), b"still there?\r\n")
        h.feed(b"yes\r\n")
        self.assertEqual(results, [b"yes"])

    def test_uncaught_timeout_closes_with_warning(self) -> None:
        """
        A read timeout the handler does not catch closes the connection and
        is logged as a warning, not as a crash.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            yield p.read_line(timeout=30)

        h = ProtocolHarness(Scripted(script))
        h.clock.advance(30)
        self.assertTrue(h.closed)
        self.assertEqual([e["log_level"] for e in events], [LogLevel.warn])
        self.assertIn("timed out", events[0]["error"])
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(h.clock.getDelayedCalls(), [])


class WriteTests(SynchronousTestCase):
    """
    C{write}, C{write_line} and C{drain} with the transport's back-pressure.
    """

    def test_write_and_write_line(self) -> None:
        """
        C{write} sends bytes as they are; C{write_line} adds the delimiter.
        """

        def script(p: Scripted) -> Body:
            p.write(b"raw")
            p.write_line(b"line")
            yield Deferred()

        h = ProtocolHarness(Scripted(script))
        self.assertEqual(h.take_output(), b"rawline\r\n")

    def test_write_line_long_and_short_lines(self) -> None:
        """
        C{write_line} sends short lines (one concatenated write) and lines
        above the concatenation threshold (two pieces) intact and in order.
        """
        long_line = b"x" * _protocol._CONCAT_MAX

        def script(p: Scripted) -> Body:
            p.write_line(b"short")
            p.write_line(long_line)
            p.write_line(b"")
            yield Deferred()

        h = ProtocolHarness(Scripted(script))
        self.assertEqual(h.take_output(), b"short\r\n" + long_line + b"\r\n\r\n")

    def test_write_rejects_text(self) -> None:
        """
        C{write} and C{write_line} raise L{TypeError} for C{str}, as
        Twisted's transports do.
        """
        h = ProtocolHarness(idle())
        with self.assertRaises(TypeError):
            h.protocol.write("text")  # type: ignore[arg-type]
        with self.assertRaises(TypeError):
            h.protocol.write_line("text")  # type: ignore[arg-type]
        self.assertEqual(h.take_output(), b"")

    def test_drain_fires_at_once_while_transport_accepts(self) -> None:
        """
        C{drain} returns a fired Deferred while the transport has room.
        """
        h = ProtocolHarness(idle())
        self.assertIsNone(self.successResultOf(h.protocol.drain()))

    def test_drain_waits_for_transport_to_resume(self) -> None:
        """
        After the transport pauses its producer, C{drain} waits until it
        resumes, and the handler goes on then.
        """
        steps: list[str] = []

        def script(p: Scripted) -> Body:
            for chunk in (b"a", b"b", b"c"):
                p.write(chunk)
                yield p.drain()
                steps.append(chunk.decode())

        p = Scripted(script)
        h = ProtocolHarness(p)
        self.assertEqual(steps, ["a", "b", "c"])
        self.assertTrue(h.closed)

        paused: list[str] = []

        def slow(p: Scripted) -> Body:
            p.write(b"x")
            p.pauseProducing()  # What a full transport does.
            yield p.drain()
            paused.append("drained")

        h = ProtocolHarness(Scripted(slow))
        self.assertEqual(paused, [])
        h.resume_writing()
        self.assertEqual(paused, ["drained"])

    def test_cancelled_drain_is_forgotten(self) -> None:
        """
        A cancelled C{drain} fails with L{CancelledError} and is not fired
        again when the transport resumes.
        """
        h = ProtocolHarness(idle())
        h.pause_writing()
        cancelled = h.protocol.drain()
        kept = h.protocol.drain()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        h.resume_writing()
        self.assertIsNone(self.successResultOf(kept))

    def test_drain_waiter_that_refills_buffer_keeps_others_waiting(self) -> None:
        """
        If the first resumed drain's waiter fills the transport again, the
        remaining drains keep waiting for the next resume.
        """
        h = ProtocolHarness(idle())
        h.pause_writing()
        first = h.protocol.drain()
        second = h.protocol.drain()
        first.addCallback(lambda _: h.pause_writing())
        h.resume_writing()
        self.successResultOf(first)
        self.assertNoResult(second)
        h.resume_writing()
        self.successResultOf(second)

    def test_drain_after_connection_lost_fails_with_reason(self) -> None:
        """
        C{drain} on a lost connection, or pending when it is lost, fails
        with the reason the connection was lost.
        """
        h = ProtocolHarness(idle())
        h.pause_writing()
        pending = h.protocol.drain()
        h.lose_connection(Failure(ConnectionLost("reset")))
        self.failureResultOf(pending, ConnectionLost)
        late = self.failureResultOf(h.protocol.drain(), ConnectionLost)
        self.assertIn("reset", late.getErrorMessage())


class LifecycleTests(SynchronousTestCase):
    """
    The conversation runs from C{connectionMade}; when it ends, writes are
    flushed and the connection closed.
    """

    def test_implements_half_close_and_push_producer(self) -> None:
        """
        The protocol provides L{IHalfCloseableProtocol} and L{IPushProducer}
        and registers itself as the transport's streaming producer.
        """
        p = idle()
        self.assertTrue(IHalfCloseableProtocol.providedBy(p))
        self.assertTrue(IPushProducer.providedBy(p))
        h = ProtocolHarness(p)
        self.assertIs(h.transport.producer, p)
        self.assertTrue(h.transport.streaming)

    def test_state_goes_from_not_connected_to_closed(self) -> None:
        """
        C{state} is C{NOT_CONNECTED}, then C{CONNECTED}, then C{CLOSED},
        with C{disconnect_reason} set at the end.
        """
        p = idle()
        self.assertIs(p.state, ConnectionState.NOT_CONNECTED)
        self.assertIsNone(p.conversation)
        h = ProtocolHarness(p)
        self.assertIs(p.state, ConnectionState.CONNECTED)
        self.assertIsInstance(p.conversation, Coroutine)
        self.assertIsNone(p.disconnect_reason)
        reason = Failure(ConnectionLost("gone"))
        h.lose_connection(reason)
        self.assertIs(p.state, ConnectionState.CLOSED)
        self.assertIs(p.disconnect_reason, reason)

    def test_return_flushes_writes_and_closes(self) -> None:
        """
        When C{start()} returns, what it wrote is sent and the connection is
        closed, with the producer unregistered first.
        """

        def script(p: Scripted) -> Body:
            name = yield p.read_line()
            p.write_line(b"bye " + name)

        p = Scripted(script)
        h = ProtocolHarness(p)
        closed = p.when_closed()
        h.feed(b"bob\r\n")
        self.assertEqual(h.take_output(), b"bye bob\r\n")
        self.assertTrue(h.closed)
        self.assertIsNone(h.transport.producer)
        self.successResultOf(closed)
        self.assertIsNone(self.successResultOf(p.conversation))

    def test_start_as_async_def(self) -> None:
        """
        C{start()} may be an C{async def} awaiting the reads.
        """
        results: list[object] = []

        class Async(StateProtocol):
            async def start(self) -> None:  # type: ignore[override]
                results.append(await self.read_line())

        h = ProtocolHarness(Async())
        h.feed(b"hi\r\n")
        self.assertEqual(results, [b"hi"])
        self.assertTrue(h.closed)

    def test_start_returning_a_deferred(self) -> None:
        """
        A C{start()} returning a Deferred is waited on, then the connection
        is closed.
        """
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(Scripted(lambda p: gate))
        self.assertFalse(h.closed)
        gate.callback(None)
        self.assertTrue(h.closed)

    def test_start_returning_a_coroutine(self) -> None:
        """
        A C{start()} returning a L{Coroutine} makes it the conversation.
        """

        @coroutine
        def body(p: Scripted) -> Body:
            yield p.read_line()

        p = Scripted(body)
        h = ProtocolHarness(p)
        self.assertFalse(h.closed)
        h.feed(b"x\r\n")
        self.assertTrue(h.closed)

    def test_noreturn_hands_over_between_states(self) -> None:
        """
        States handed over with L{noreturn} run in turn on one conversation.
        """

        class Greeter(StateProtocol):
            def start(self) -> Body:
                self.write_line(b"HELLO")
                name = yield self.read_line()
                noreturn(self.chatting(name))

            def chatting(self, name: bytes) -> Body:
                while True:
                    line = yield self.read_line()
                    if line == b"QUIT":
                        return
                    self.write_line(name + b" said " + line)

        h = ProtocolHarness(Greeter())
        h.feed(b"bob\r\nhi\r\nQUIT\r\n")
        self.assertEqual(h.take_output(), b"HELLO\r\nbob said hi\r\n")
        self.assertTrue(h.closed)

    def test_when_closed_waits_for_cleanup(self) -> None:
        """
        C{when_closed} fires once the connection is closed and the
        conversation's asynchronous clean-up has ended.
        """

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line()
            finally:
                yield p.sleep(2)

        p = Scripted(script)
        h = ProtocolHarness(p)
        closed = p.when_closed()
        h.lose_connection()
        self.assertNoResult(closed)
        h.clock.advance(2)
        self.successResultOf(closed)
        self.successResultOf(p.when_closed())

    def test_close_during_first_run_cancels_conversation(self) -> None:
        """
        A transport that delivers C{connectionLost} synchronously while
        C{start()} first runs still gets the conversation cancelled.
        """

        def script(p: Scripted) -> Body:
            assert p.transport is not None
            p.transport.loseConnection()
            yield p.sleep(10)

        p = Scripted(script)
        h = ProtocolHarness(p)
        self.assertTrue(h.closed)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.successResultOf(p.when_closed())

    def test_cancelled_when_closed_is_harmless(self) -> None:
        """
        Cancelling a C{when_closed} wait ends only that wait; the close
        later fires the others without error.
        """
        h = ProtocolHarness(idle())
        cancelled = h.protocol.when_closed()
        kept = h.protocol.when_closed()
        cancelled.cancel()
        self.failureResultOf(cancelled, CancelledError)
        h.lose_connection()
        self.successResultOf(kept)

    def test_clock_defaults_to_global_reactor(self) -> None:
        """
        Without a clock set, timers use the global reactor.
        """
        self.assertIs(StateProtocol().clock, reactor)

    def test_repr_names_class_peer_state_and_buffered_bytes(self) -> None:
        """
        C{repr} names the class, the peer, the state, the buffered byte count
        and what the conversation waits on.
        """
        gate: Deferred[None] = Deferred()
        h = ProtocolHarness(waiter(gate, []))
        h.feed(b"12345")
        text = repr(h.protocol)
        self.assertIn("Scripted", text)
        self.assertIn("127.0.0.1", text)
        self.assertIn("state=connected", text)
        self.assertIn("buffered=5", text)
        self.assertIn("script", text)


class ConnectionLossTests(SynchronousTestCase):
    """
    Losing the connection cancels the conversation and side tasks,
    cascading, fails what no one will satisfy, and is not logged.
    """

    def test_loss_cancels_conversation_innermost_first(self) -> None:
        """
        The cancel reaches the innermost wait first; C{finally} blocks run
        inner to outer and the pending read's timer is gone.
        """
        order: list[str] = []

        def inner(p: Scripted) -> Body:
            try:
                yield p.read_line(timeout=60)
            finally:
                order.append("inner")

        @coroutine
        def middle(p: Scripted) -> Body:
            try:
                yield inner(p)
            finally:
                order.append("middle")

        def script(p: Scripted) -> Body:
            try:
                yield middle(p)
            except CancelledError:
                order.append("outer cancelled")
                raise

        h = ProtocolHarness(Scripted(script))
        h.lose_connection()
        self.assertEqual(order, ["inner", "middle", "outer cancelled"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_loss_cancels_sleep_timer(self) -> None:
        """
        A conversation sleeping when the connection is lost leaves no
        DelayedCall.
        """

        def script(p: Scripted) -> Body:
            yield p.sleep(100)

        h = ProtocolHarness(Scripted(script))
        self.assertEqual(len(h.clock.getDelayedCalls()), 1)
        h.lose_connection()
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_loss_logs_nothing(self) -> None:
        """
        The L{CancelledError} that connection loss delivers is not logged,
        now or when the garbage is collected.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            yield p.read_line(timeout=5)

        h = ProtocolHarness(Scripted(script))
        h.protocol.spawn(yields(h.protocol.sleep(5)))
        h.lose_connection(Failure(ConnectionLost("reset by peer")))
        del h
        gc.collect()
        self.assertEqual(events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_cleanup_hitting_the_lost_connection_is_not_logged(self) -> None:
        """
        Clean-up code that waits on C{drain} after the loss ends the
        conversation with the loss itself, which is not logged either.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line()
            finally:
                p.write_line(b"bye")
                yield p.drain()

        p = Scripted(script)
        h = ProtocolHarness(p)
        h.lose_connection()
        self.assertTrue(p.conversation is not None and p.conversation.called)
        self.assertEqual(events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_reads_after_loss_fail_with_a_copy_of_the_reason(self) -> None:
        """
        A read that can no longer be satisfied fails with the reason the
        connection was lost, as a new exception (so a traceback it takes on
        cannot reach back from C{disconnect_reason}).
        """
        h = ProtocolHarness(idle())
        pending = h.protocol.read_exactly(4)
        reason = Failure(ConnectionLost("reset"))
        h.lose_connection(reason)
        for d in (pending, h.protocol.read_line()):
            error = self.failureResultOf(d, ConnectionLost).value
            self.assertIsNot(error, reason.value)
            self.assertEqual(str(error), str(reason.value))

    def test_buffered_bytes_still_readable_after_loss(self) -> None:
        """
        Bytes that arrived before the loss can still be read; only a read
        that needs more fails.
        """
        h = ProtocolHarness(idle())
        h.feed(b"last\r\npart")
        h.lose_connection()
        self.assertEqual(self.successResultOf(h.protocol.read_line()), b"last")
        self.failureResultOf(h.protocol.read_line(), ConnectionDone)

    def test_read_before_connection_fails(self) -> None:
        """
        A read before C{connectionMade} fails: nothing can arrive.
        """
        self.failureResultOf(StateProtocol().read_line(), ConnectionDone)


class LoggingTests(SynchronousTestCase):
    """
    A crash is logged once, with the protocol class, the peer and the
    traceback; a L{ProtocolError} is a warning; a cancel is silent.
    """

    def test_crash_logged_once_with_class_peer_and_traceback(self) -> None:
        """
        An exception escaping the conversation is logged exactly once at
        critical level with the class, the peer and the traceback, and the
        connection is closed.
        """
        events = capture_log(self)

        h = ProtocolHarness(Crasher(), peer=IPv4Address("TCP", "10.0.0.7", 5555))
        h.feed(b"go\r\n")
        self.assertTrue(h.closed)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(event["log_level"], LogLevel.critical)
        self.assertEqual(event["protocol"], "Crasher")
        self.assertEqual(event["peer"], IPv4Address("TCP", "10.0.0.7", 5555))
        traceback = event["log_failure"].getTraceback()
        self.assertIn("compute", traceback)
        self.assertIn("ZeroDivisionError", traceback)

    def test_crash_in_start_itself_is_logged_and_closes(self) -> None:
        """
        A C{start()} that raises before returning a body is logged as a
        crash and the connection closed.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            raise KeyError("no body")

        h = ProtocolHarness(Scripted(script))
        self.assertTrue(h.closed)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertEqual([e["what"] for e in events], ["start()"])
        self.assertIsNone(h.transport.producer)

    def test_missing_start_is_logged(self) -> None:
        """
        A subclass without C{start()} is logged as a crash naming the
        missing method.
        """
        capture_log(self)
        h = ProtocolHarness(StateProtocol())
        self.assertTrue(h.closed)
        [failure] = self.flushLoggedErrors(NotImplementedError)
        self.assertIn("start()", failure.getErrorMessage())

    def test_protocol_error_logged_as_warning_not_crash(self) -> None:
        """
        A L{ProtocolError} escaping the conversation is logged once as a
        warning without a failure, and the connection closed.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            yield p.read_line()

        p = Scripted(script)
        p.max_line_length = 4
        h = ProtocolHarness(p)
        h.feed(b"far too long")
        self.assertTrue(h.closed)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(len(events), 1)
        event = events[0]
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertNotIn("log_failure", event)
        self.assertIs(event["error_type"], LineTooLongError)
        self.assertIn("max_line_length=4", event["error"])
        self.assertEqual(event["protocol"], "Scripted")

    def test_cancel_by_handler_owner_is_silent(self) -> None:
        """
        Cancelling the conversation while connected closes the connection
        and logs nothing.
        """
        events = capture_log(self)
        h = ProtocolHarness(Scripted(lambda p: yields(p.read_line())))
        assert h.protocol.conversation is not None
        h.protocol.conversation.cancel()
        self.assertTrue(h.closed)
        self.assertEqual(events, [])

    def test_conversation_failure_is_consumed(self) -> None:
        """
        After logging, the conversation's failure is consumed: later
        callbacks see C{None}, and no "unhandled error" is logged at garbage
        collection.
        """
        events = capture_log(self)

        def script(p: Scripted) -> Body:
            yield None
            raise ValueError("bad")

        p = Scripted(script)
        ProtocolHarness(p)
        assert p.conversation is not None
        self.assertIsNone(self.successResultOf(p.conversation))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        del p
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(len(events), 1)


class SpawnAndSleepTests(SynchronousTestCase):
    """
    Side tasks are tied to the connection; C{sleep} runs on C{clock}.
    """

    def test_sleep_fires_after_its_time(self) -> None:
        """
        C{sleep(n)} fires after C{n} seconds of C{clock}.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.sleep(3)
        h.clock.advance(2.9)
        self.assertNoResult(d)
        h.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(d))

    def test_cancelled_sleep_cancels_its_timer(self) -> None:
        """
        Cancelling C{sleep} cancels its DelayedCall.
        """
        h = ProtocolHarness(idle())
        d = h.protocol.sleep(3)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_spawned_task_result_passes_through(self) -> None:
        """
        Waiting on a spawned task gives its result.
        """
        results: list[object] = []

        def beat(p: Scripted) -> Generator[Any, Any, int]:
            yield p.sleep(1)
            return 7

        def script(p: Scripted) -> Body:
            results.append((yield p.spawn(beat(p))))
            yield Deferred()

        h = ProtocolHarness(Scripted(script))
        h.clock.advance(1)
        self.assertEqual(results, [7])

    def test_spawned_task_cancelled_on_connection_loss(self) -> None:
        """
        A side task is cancelled, C{finally} included, when the connection
        is lost, and leaves no timer.
        """
        cleaned: list[str] = []

        def heartbeat(p: Scripted) -> Body:
            try:
                while True:
                    yield p.sleep(1)
                    p.write(b".")
            finally:
                cleaned.append("heartbeat")

        def script(p: Scripted) -> Body:
            p.spawn(heartbeat(p))
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        h.clock.pump([1, 1])
        self.assertEqual(h.take_output(), b"..")
        h.lose_connection()
        self.assertEqual(cleaned, ["heartbeat"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_spawned_task_cancelled_when_conversation_ends(self) -> None:
        """
        A side task is cancelled when the main conversation returns; its
        L{CancelledError} is consumed, not logged.
        """
        events = capture_log(self)
        cleaned: list[str] = []

        def side(p: Scripted) -> Body:
            try:
                yield p.sleep(100)
            finally:
                cleaned.append("side")

        def script(p: Scripted) -> Body:
            p.spawn(side(p))
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        h.feed(b"done\r\n")
        self.assertEqual(cleaned, ["side"])
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(events, [])

    def test_spawned_task_failure_logged_and_closes(self) -> None:
        """
        A side task's crash is logged once and closes the connection.
        """
        events = capture_log(self)

        def bad(p: Scripted) -> Body:
            yield p.sleep(1)
            raise RuntimeError("task broke")

        def script(p: Scripted) -> Body:
            p.spawn(bad(p))
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        h.clock.advance(1)
        self.assertTrue(h.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(len(events), 1)
        self.assertIn("side task", events[0]["what"])

    def test_spawn_of_already_failed_task_is_logged(self) -> None:
        """
        A task that fails before C{spawn} returns is logged and closes too.
        """
        capture_log(self)
        h = ProtocolHarness(idle())

        def bad() -> Body:
            raise RuntimeError("at once")
            yield None

        h.protocol.spawn(bad())
        self.assertTrue(h.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_spawn_after_close_cancels_at_once(self) -> None:
        """
        A task spawned after the connection is closed is cancelled at once.
        """
        h = ProtocolHarness(idle())
        h.lose_connection()
        spawned = h.protocol.spawn(yields(h.protocol.sleep(5)))
        self.assertIsNone(self.successResultOf(spawned))
        self.assertEqual(h.clock.getDelayedCalls(), [])


class IdleTimeoutTests(SynchronousTestCase):
    """
    C{idle_timeout} closes a connection that received nothing for that long.
    """

    def _idle(self, timeout: float | None) -> ProtocolHarness:
        p = reader([])
        p.idle_timeout = timeout
        return ProtocolHarness(p)

    def test_no_timer_by_default(self) -> None:
        """
        Without C{idle_timeout} no DelayedCall is scheduled.
        """
        h = self._idle(None)
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_closes_after_idle_timeout_and_logs_info(self) -> None:
        """
        After C{idle_timeout} seconds without a byte the connection is
        closed, logged at info level with the timeout.
        """
        events = capture_log(self)
        h = self._idle(10)
        h.clock.advance(9.9)
        self.assertFalse(h.closed)
        h.clock.advance(0.1)
        self.assertTrue(h.closed)
        self.assertEqual(
            [(e["log_level"], e["timeout"]) for e in events], [(LogLevel.info, 10)]
        )
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_received_bytes_postpone_the_close(self) -> None:
        """
        Each received chunk restarts the idle period.
        """
        h = self._idle(10)
        for _ in range(5):
            h.clock.advance(6)
            h.feed(b"x")
        self.assertFalse(h.closed)
        h.clock.advance(9)
        self.assertFalse(h.closed)
        h.clock.advance(1)
        self.assertTrue(h.closed)

    def test_idle_timer_cancelled_on_loss(self) -> None:
        """
        Losing the connection cancels the idle timer.
        """
        h = self._idle(10)
        h.lose_connection()
        self.assertEqual(h.clock.getDelayedCalls(), [])


class HalfCloseTests(SynchronousTestCase):
    """
    With C{half_close}, the peer shutting its side ends reads with
    L{EndOfStreamError} while writes go on; without it, the connection
    closes.
    """

    def test_pending_line_read_fails_with_partial(self) -> None:
        """
        A line read pending at end of stream fails with the partial bytes
        and no expected count.
        """
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = p.read_line()
        h.feed(b"unfinished")
        h.half_close()
        self.assertIs(p.state, ConnectionState.PEER_CLOSED)
        error = self.failureResultOf(d, EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"unfinished", None))
        self.assertFalse(h.closed)

    def test_buffered_reads_succeed_then_end_of_stream(self) -> None:
        """
        After end of stream, buffered data is still read; reads needing more
        fail with L{EndOfStreamError} carrying what the read needed.
        """
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        h.feed(b"line\r\nabc")
        h.half_close()
        self.assertEqual(self.successResultOf(p.read_line()), b"line")
        error = self.failureResultOf(p.read_exactly(5), EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"abc", 5))
        error = self.failureResultOf(p.read_some(), EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"", 1))

    def test_handler_answers_after_peer_half_closed(self) -> None:
        """
        A handler reading until end of stream can still write its answer,
        and the connection closes when it returns.
        """

        def script(p: Scripted) -> Body:
            lines = []
            try:
                while True:
                    lines.append((yield p.read_line()))
            except EndOfStreamError:
                pass
            p.write_line(b"%d lines" % len(lines))

        p = Scripted(script)
        p.half_close = True
        h = ProtocolHarness(p)
        h.feed(b"a\r\nb\r\n")
        h.half_close()
        self.assertEqual(h.take_output(), b"2 lines\r\n")
        self.assertTrue(h.closed)

    def test_without_half_close_end_of_stream_closes(self) -> None:
        """
        By default, the peer shutting its write side closes the connection
        and cancels the conversation, logging nothing.
        """
        events = capture_log(self)
        p = reader([])
        h = ProtocolHarness(p)
        h.half_close()
        self.assertTrue(h.closed)
        self.assertIs(p.state, ConnectionState.CLOSED)
        self.assertEqual(events, [])


class PauseTests(SynchronousTestCase):
    """
    C{pause}/C{unpause} hold the conversation and stop reading from the
    transport, balanced with the receive buffer's high-water pause.
    """

    def _harness(self, results: list[object]) -> ProtocolHarness:
        p = reader(results)
        return ProtocolHarness(p)

    def test_pause_stops_reading_and_holds_conversation(self) -> None:
        """
        While paused the transport is not read from and the handler does not
        run; C{unpause} resumes both.
        """
        results: list[object] = []
        h = self._harness(results)
        h.protocol.pause()
        self.assertEqual(h.transport.producerState, "paused")
        h.feed(b"a\r\nb\r\n")
        self.assertEqual(results, [])
        h.protocol.unpause()
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(results, [b"a", b"b"])

    def test_pauses_count(self) -> None:
        """
        Each C{pause} needs its own C{unpause}.
        """
        results: list[object] = []
        h = self._harness(results)
        h.protocol.pause()
        h.protocol.pause()
        h.feed(b"a\r\n")
        h.protocol.unpause()
        self.assertEqual(h.transport.producerState, "paused")
        self.assertEqual(results, [])
        h.protocol.unpause()
        self.assertEqual(h.transport.producerState, "producing")
        self.assertEqual(results, [b"a"])

    def test_unpause_without_pause_does_nothing(self) -> None:
        """
        An unmatched C{unpause} calls nothing on the transport.
        """
        transport = CountingTransport()
        p = reader([])
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.unpause()
        self.assertEqual(transport.reading_calls, [])

    def test_pause_holds_a_timer_that_fires(self) -> None:
        """
        A sleep that ends while paused resumes the handler only on
        C{unpause}.
        """
        steps: list[str] = []

        def script(p: Scripted) -> Body:
            yield p.sleep(1)
            steps.append("woke")
            yield Deferred()

        h = ProtocolHarness(Scripted(script))
        h.protocol.pause()
        h.clock.advance(1)
        self.assertEqual(steps, [])
        h.protocol.unpause()
        self.assertEqual(steps, ["woke"])

    def test_user_pause_then_high_water_is_balanced(self) -> None:
        """
        A user pause followed by a full buffer pauses the transport once;
        unpausing keeps it paused until reads drain the buffer, then resumes
        it once.
        """
        transport = CountingTransport()
        results: list[object] = []
        p = reader(results)
        p.receive_high_water = 8
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.pause()
        p.dataReceived(b"aaaa\r\nbbbb\r\n")
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(results, [])
        p.unpause()
        self.assertEqual(results, [b"aaaa", b"bbbb"])
        self.assertEqual(transport.reading_calls, ["pause", "resume"])
        self.assertEqual(transport.producerState, "producing")

    def test_high_water_then_user_pause_is_balanced(self) -> None:
        """
        A full buffer followed by a user pause and unpause leaves reading
        paused until the buffer drains, with one pause and one resume.
        """
        transport = CountingTransport()
        gate: Deferred[None] = Deferred()
        results: list[object] = []
        p = waiter(gate, results)
        p.receive_high_water = 8
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.dataReceived(b"aaaa\r\nbbbb\r\n")
        self.assertEqual(transport.reading_calls, ["pause"])
        p.pause()
        p.unpause()
        self.assertEqual(transport.reading_calls, ["pause"])
        gate.callback(None)
        self.assertEqual(results, [b"aaaa", b"bbbb"])
        self.assertEqual(transport.reading_calls, ["pause", "resume"])

    def test_high_water_lifted_while_user_paused_stays_paused(self) -> None:
        """
        Reads that drain a full buffer while the user has paused do not
        resume reading; the user's C{unpause} does.
        """
        transport = CountingTransport()
        p = idle()
        p.receive_high_water = 4
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.dataReceived(b"0123456789")
        p.pause()
        self.assertEqual(self.successResultOf(p.read_some()), b"0123456789")
        self.assertEqual(transport.reading_calls, ["pause"])
        p.unpause()
        self.assertEqual(transport.reading_calls, ["pause", "resume"])


class ReceiveBackPressureTests(SynchronousTestCase):
    """
    Reading from the transport pauses while more than C{receive_high_water}
    bytes are buffered with no read to consume them.
    """

    def test_pauses_when_no_read_consumes_the_buffer(self) -> None:
        """
        A busy handler lets the buffer pass the high-water mark: reading is
        paused, and resumed once the handler has read it down.
        """
        gate: Deferred[None] = Deferred()
        results: list[object] = []
        h = ProtocolHarness(waiter(gate, results))
        h.protocol.receive_high_water = 10
        h.feed(b"line one\r\n")
        self.assertFalse(h.reading_paused)
        h.feed(b"x")
        self.assertTrue(h.reading_paused)
        gate.callback(None)
        self.assertEqual(results, [b"line one"])
        self.assertFalse(h.reading_paused)

    def test_not_paused_while_reads_keep_up(self) -> None:
        """
        A chunk far above the high-water mark that the handler consumes at
        once does not pause reading.
        """
        results: list[object] = []
        transport = CountingTransport()
        p = reader(results)
        p.receive_high_water = 10
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.dataReceived(b"line\r\n" * 100)
        self.assertEqual(len(results), 100)
        self.assertEqual(transport.reading_calls, [])

    def test_large_exact_read_lifts_the_pause(self) -> None:
        """
        A read that needs more than the high-water mark resumes reading so
        that its bytes can arrive.
        """
        gate: Deferred[bytes] = Deferred()
        results: list[object] = []

        def script(p: Scripted) -> Body:
            size = yield gate
            results.append((yield p.read_exactly(size)))

        h = ProtocolHarness(Scripted(script))
        h.protocol.receive_high_water = 10
        h.feed(b"x" * 11)
        self.assertTrue(h.reading_paused)
        gate.callback(30)
        self.assertFalse(h.reading_paused)
        h.feed(b"y" * 19)
        self.assertEqual(results, [b"x" * 11 + b"y" * 19])

    def test_no_pause_calls_after_connection_lost(self) -> None:
        """
        Once the connection is lost, draining the buffer does not touch the
        transport.
        """
        transport = CountingTransport()
        p = idle()
        p.receive_high_water = 4
        p.clock = task.Clock()
        p.makeConnection(transport)
        p.dataReceived(b"0123456789")
        p.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(p.read_some())
        self.assertEqual(transport.reading_calls, ["pause"])


class ReleaseTests(SynchronousTestCase):
    """
    After the connection ends, however it ends, no DelayedCall, producer
    registration or reference cycle keeps the protocol alive.
    """

    def _assert_clean(self, h: ProtocolHarness) -> None:
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertIsNone(h.transport.producer)

    def test_finished_conversation_leaves_nothing(self) -> None:
        """
        A conversation that returned leaves no timer, no producer and no
        cycle.
        """

        def scenario() -> StateProtocol:
            def script(p: Scripted) -> Body:
                yield p.read_line(timeout=5)
                yield p.sleep(1)

            p = Scripted(script)
            p.idle_timeout = 30
            h = ProtocolHarness(p)
            h.feed(b"hi\r\n")
            h.clock.advance(1)
            self.assertTrue(h.closed)
            self._assert_clean(h)
            return p

        self.assertTrue(released(scenario))

    def test_lost_connection_leaves_nothing(self) -> None:
        """
        A connection lost while the conversation reads with a timeout, a
        side task sleeps, a drain waits and the idle timer runs leaves no
        timer, no producer and no cycle.
        """

        def scenario() -> StateProtocol:
            def script(p: Scripted) -> Body:
                p.spawn(yields(p.sleep(10)))
                p.drain()
                try:
                    yield p.read_line(timeout=5)
                finally:
                    yield p.read_line()

            p = Scripted(script)
            p.idle_timeout = 30
            h = ProtocolHarness(p)
            h.pause_writing()
            pending = p.drain()
            h.feed(b"par")
            h.lose_connection(Failure(ConnectionLost("reset")))
            self.failureResultOf(pending, ConnectionLost)
            self._assert_clean(h)
            return p

        self.assertTrue(released(scenario))

    def test_crashed_conversation_leaves_nothing(self) -> None:
        """
        A crash, once logged, leaves no timer, no producer and no cycle.
        """

        def scenario() -> StateProtocol:
            def script(p: Scripted) -> Body:
                yield p.read_line()
                raise ValueError("boom")

            p = Scripted(script)
            h = ProtocolHarness(p)
            h.feed(b"x\r\n")
            self._assert_clean(h)
            return p

        self.assertTrue(released(scenario))
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_protocol_error_and_timeout_leave_nothing(self) -> None:
        """
        A conversation ended by a L{LineTooLongError} or a read timeout
        leaves no timer, no producer and no cycle.
        """

        def too_long() -> StateProtocol:
            p = Scripted(lambda p: yields(p.read_line()))
            p.max_line_length = 2
            h = ProtocolHarness(p)
            h.feed(b"abcdef")
            self._assert_clean(h)
            return p

        def timed_out() -> StateProtocol:
            p = Scripted(lambda p: yields(p.read_line(timeout=1)))
            h = ProtocolHarness(p)
            h.clock.advance(1)
            self._assert_clean(h)
            return p

        self.assertTrue(released(too_long))
        self.assertTrue(released(timed_out))

    def test_plain_string_transport_leaves_nothing(self) -> None:
        """
        With a bare C{StringTransport} and C{connectionLost} called by hand,
        as a transport would, nothing but the caller holds the protocol.
        """

        def scenario() -> StateProtocol:
            clock = task.Clock()
            transport = StringTransport()
            p = reader([])
            p.clock = clock
            p.makeConnection(transport)
            p.dataReceived(b"a\r\nb")
            p.connectionLost(Failure(ConnectionDone()))
            self.assertEqual(clock.getDelayedCalls(), [])
            self.assertIsNone(transport.producer)
            return p

        self.assertTrue(released(scenario))


# -- any split of the input gives the same reads ------------------------------

_ALPHABET = st.sampled_from([b"a", b"b", b"\r", b"\n", b";"])

_OPS = st.one_of(
    st.tuples(st.just("line")),
    st.tuples(st.just("until"), st.sampled_from([b";", b"ab"]), st.integers(0, 6)),
    st.tuples(st.just("exactly"), st.integers(0, 6)),
    st.tuples(st.just("some"), st.integers(1, 6)),
)

#: The max_line_length the property test uses, small so that limits trip.
_MAX_LINE = 5


def _run_ops(ops: list[tuple[Any, ...]], chunks: list[bytes]) -> list[object]:
    """
    Run C{ops} as one conversation fed C{chunks}, then end of stream, and
    return each op's result: the bytes, or the error's type and numbers.
    """
    results: list[object] = []

    def script(p: Scripted) -> Body:
        for op in ops:
            try:
                if op[0] == "line":
                    data = yield p.read_line()
                elif op[0] == "until":
                    data = yield p.read_until(op[1], max_length=op[2])
                elif op[0] == "exactly":
                    data = yield p.read_exactly(op[1])
                else:
                    data = yield p.read_some(op[1])
            except LineTooLongError as e:
                results.append(("too long", e.limit, e.limit_name))
                return
            except EndOfStreamError as e:
                results.append(("end", e.partial, e.expected))
                return
            results.append(data)

    p = Scripted(script)
    p.half_close = True
    p.max_line_length = _MAX_LINE
    h = ProtocolHarness(p)
    h.feed_chunks(chunks)
    h.half_close()
    return results


def _model(ops: list[tuple[Any, ...]], data: bytes, got: list[object]) -> list[object]:
    """
    What C{ops} must give on C{data}, computed directly with C{bytes.find}.

    C{read_some}'s length depends on how the bytes arrived, so the model
    takes the length the protocol returned (C{got}) and checks only that it
    is allowed: between 1 and the maximum, and no more than is there.
    """
    expected: list[object] = []
    pos = 0
    for i, op in enumerate(ops):
        rest = data[pos:]
        if op[0] in ("line", "until"):
            sep, limit, name = (
                (b"\r\n", _MAX_LINE, "max_line_length")
                if op[0] == "line"
                else (op[1], op[2], "max_length")
            )
            found = rest.find(sep)
            if 0 <= found <= limit:
                expected.append(rest[:found])
                pos += found + len(sep)
                continue
            if len(rest) >= limit + len(sep):
                expected.append(("too long", limit, name))
            else:
                expected.append(("end", rest, None))
            return expected
        if op[0] == "exactly":
            if len(rest) >= op[1]:
                expected.append(rest[: op[1]])
                pos += op[1]
                continue
            expected.append(("end", rest, op[1]))
            return expected
        if not rest:
            expected.append(("end", b"", 1))
            return expected
        actual = got[i] if i < len(got) else None
        size = len(actual) if isinstance(actual, bytes) else min(op[1], len(rest))
        if not 1 <= size <= min(op[1], len(rest)):
            size = min(op[1], len(rest))
        expected.append(rest[:size])
        pos += size
    return expected


class ChunkingPropertyTests(SynchronousTestCase):
    """
    However the incoming bytes are split into chunks, a mixed sequence of
    reads gives the same results.
    """

    @_settings
    @given(
        data=st.lists(_ALPHABET, max_size=60).map(b"".join),
        ops=st.lists(_OPS, min_size=1, max_size=15),
        cuts=st.lists(st.integers(0, 60), max_size=20),
    )
    def test_any_split_gives_the_same_reads(
        self, data: bytes, ops: list[tuple[Any, ...]], cuts: list[int]
    ) -> None:
        """
        Fed in any chunks (one byte at a time included), the reads give what
        a direct model of the whole stream gives.
        """
        points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        chunks = [data[a:b] for a, b in pairwise(points)]
        whole = _run_ops(ops, [data])
        self.assertEqual(whole, _model(ops, data, []))
        split = _run_ops(ops, chunks)
        self.assertEqual(split, _model(ops, data, split))
        drip = _run_ops(ops, [data[i : i + 1] for i in range(len(data))])
        self.assertEqual(drip, _model(ops, data, drip))
        if not any(op[0] == "some" for op in ops):
            # Without read_some, the results are identical whatever the split.
            self.assertEqual(split, whole)
            self.assertEqual(drip, whole)

    @_settings
    @given(
        lines=st.lists(
            st.text("ab;", max_size=7).map(str.encode)
            | st.lists(_ALPHABET, max_size=6).map(b"".join),
            min_size=2,
            max_size=25,
        ),
        ops=st.lists(
            st.one_of(
                st.tuples(st.just("line")),
                st.tuples(st.just("line")),
                # Line reads with other limits than max_line_length.
                st.tuples(st.just("until"), st.just(b"\r\n"), st.integers(0, 8)),
                _OPS,
            ),
            min_size=1,
            max_size=30,
        ),
        cuts=st.lists(st.integers(0, 200), max_size=6),
    )
    def test_pipelined_lines_give_the_same_reads(
        self, lines: list[bytes], ops: list[tuple[Any, ...]], cuts: list[int]
    ) -> None:
        """
        Many short lines arriving together (which the buffer splits ahead
        for consecutive line reads), read with line reads mixed with every
        other kind of read, give what the model of the whole stream gives.
        """
        data = b"\r\n".join(lines) + b"\r\n"
        points = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
        chunks = [data[a:b] for a, b in pairwise(points)]
        whole = _run_ops(ops, [data])
        self.assertEqual(whole, _model(ops, data, whole))
        split = _run_ops(ops, chunks)
        self.assertEqual(split, _model(ops, data, split))
