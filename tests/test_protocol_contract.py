"""
Tests for the rules of issue 4 (L{StateProtocol}'s contract and its
handling of bad input) that C{tests/test_protocol.py} does not cover on its
own: the conversation as a public handle, crash isolation between
connections, the cancel cascade into a sub-request's canceller, bytes that
arrive while a handler is busy, the one family of limit errors, the cost of
a read the buffer satisfies, and the issue's own C{Greeter} served by
ordinary Twisted machinery.

Everything here is deterministic: L{ProtocolHarness} (a C{StringTransport}
and a C{Clock}), or L{twisted.test.iosim} pumped by hand with a
L{MemoryReactorClock}.
"""

from __future__ import annotations

import gc
import statistics
import tracemalloc
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.test.iosim import ConnectionCompleter
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, Scripted, capture_log, idle, released
from txstateproto import (
    ConnectionState,
    FrameTooLongError,
    LineTooLongError,
    ProtocolError,
    StateProtocol,
    coroutine,
    noreturn,
)
from txstateproto.testing import ProtocolHarness


class Backend:
    """
    A stand-in for a service a handler queries: each C{lookup} is a
    sub-request answered after C{delay} seconds of C{clock}, with a
    canceller that records the cancel and cancels its timer.

    @ivar events: What happened, in order (C{"lookup KEY"},
        C{"cancelled KEY"}).
    """

    def __init__(
        self,
        clock: task.Clock,
        delay: float = 5,
        events: list[str] | None = None,
    ) -> None:
        self.clock = clock
        self.delay = delay
        self.events: list[str] = [] if events is None else events

    def lookup(self, key: bytes) -> Deferred[bytes]:
        """
        Start a sub-request for C{key}.
        """
        name = key.decode()

        def cancel(d: Deferred[bytes]) -> None:
            self.events.append(f"cancelled {name}")
            call.cancel()

        d: Deferred[bytes] = Deferred(cancel)
        call = self.clock.callLater(self.delay, d.callback, b"value of " + key)
        self.events.append(f"lookup {name}")
        return d


class ConversationHandleTests(SynchronousTestCase):
    """
    The conversation is a public L{Coroutine} that callers can wait for,
    pause and cancel.
    """

    def test_waiting_on_the_conversation_gives_the_handler_result(self) -> None:
        """
        A caller waiting on C{conversation} gets what C{start()} returned,
        once the handler has returned.
        """

        def script(p: Scripted) -> Body:
            line = yield p.read_line()
            return line.upper()

        p = Scripted(script)
        h = ProtocolHarness(p)
        assert p.conversation is not None
        got: list[object] = []
        p.conversation.addCallback(got.append)
        self.assertEqual(got, [])
        h.feed(b"done\r\n")
        self.assertEqual(got, [b"DONE"])
        self.assertTrue(h.closed)

    def test_pausing_the_conversation_holds_the_handler(self) -> None:
        """
        Pausing C{conversation} itself holds the handler at its wait (the
        line that arrives is kept, not handed over) until it is unpaused;
        the bytes after it stay buffered for the next read.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            while True:
                results.append((yield p.read_line()))

        p = Scripted(script)
        h = ProtocolHarness(p)
        assert p.conversation is not None
        p.conversation.pause()
        h.feed(b"one\r\ntwo\r\n")
        self.assertEqual(results, [])
        p.conversation.unpause()
        self.assertEqual(results, [b"one", b"two"])

    def test_cancelling_the_conversation_closes_the_connection(self) -> None:
        """
        Cancelling C{conversation} runs the handler's C{finally}, closes
        the connection, and is not logged.
        """
        events = capture_log(self)
        cleaned: list[str] = []

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line(timeout=30)
            finally:
                cleaned.append("finally")

        p = Scripted(script)
        h = ProtocolHarness(p)
        assert p.conversation is not None
        p.conversation.cancel()
        self.assertEqual(cleaned, ["finally"])
        self.assertTrue(h.closed)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(events, [])


class Crashy(StateProtocol):
    """
    Echo lines; crash on C{CRASH}.
    """

    def start(self) -> Body:
        """
        Echo each line; divide by zero on C{CRASH}.
        """
        while True:
            line = yield self.read_line()
            if line == b"CRASH":
                1 / 0  # noqa: B018
            self.write_line(line)


class CrashIsolationTests(SynchronousTestCase):
    """
    A handler that raises closes its own connection and no other.
    """

    def test_crash_on_one_connection_leaves_the_others_running(self) -> None:
        """
        Of two connections served by one factory, the one whose handler
        raises is logged once (with its own peer) and closed; the other
        keeps its conversation, its buffer and its connection.
        """
        events = capture_log(self)
        factory = Factory.forProtocol(Crashy)
        clock = task.Clock()
        peers: list[IAddress] = [
            IPv4Address("TCP", "127.0.0.1", 40001),
            IPv4Address("TCP", "127.0.0.1", 40002),
        ]
        harnesses = []
        for peer in peers:
            p = factory.buildProtocol(peer)
            assert isinstance(p, Crashy)
            harnesses.append(ProtocolHarness(p, clock, peer))
        bad, good = harnesses
        good.feed(b"before\r\nhal")
        bad.feed(b"CRASH\r\n")
        self.assertTrue(bad.closed)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertEqual(
            [(e["log_level"], e["peer"]) for e in events],
            [(LogLevel.critical, peers[0])],
        )
        self.assertFalse(good.closed)
        self.assertIs(good.protocol.state, ConnectionState.CONNECTED)
        good.feed(b"f\r\n")
        self.assertEqual(good.take_output(), b"before\r\nhalf\r\n")
        assert good.protocol.conversation is not None
        self.assertFalse(good.protocol.conversation.called)


class SubRequestCancelTests(SynchronousTestCase):
    """
    Connection loss cascades a cancel into a sub-request the handler waits
    on, however deeply nested: its canceller is called, then the C{finally}
    blocks run innermost first.
    """

    def test_loss_calls_the_sub_request_canceller_innermost_first(self) -> None:
        """
        A handler waiting on a sub-request two coroutines down has the
        sub-request's canceller called first, then each C{finally} inner to
        outer; nothing is logged, the reason is kept, and no timer, producer
        or reference cycle is left.
        """
        events = capture_log(self)
        order: list[str] = []
        seen: dict[str, Any] = {}

        def scenario() -> StateProtocol:
            clock = task.Clock()
            backend = Backend(clock, events=order)

            @coroutine
            def fetch(key: bytes) -> Body:
                try:
                    return (yield backend.lookup(key))
                finally:
                    order.append("fetch finally")

            def serve(p: Scripted, key: bytes) -> Body:
                try:
                    p.write_line((yield fetch(key)))
                finally:
                    order.append("serve finally")

            def heartbeat(p: Scripted) -> Body:
                while True:
                    yield p.sleep(1)

            def script(p: Scripted) -> Body:
                p.spawn(heartbeat(p))
                key = yield p.read_line(timeout=30)
                noreturn(serve(p, key))

            p = Scripted(script)
            p.idle_timeout = 60
            h = ProtocolHarness(p, clock)
            h.feed(b"k\r\n")
            self.assertEqual(order, ["lookup k"])
            # The sub-request's timer, the heartbeat's and the idle timer.
            self.assertEqual(len(clock.getDelayedCalls()), 3)
            h.lose_connection(Failure(ConnectionLost("reset")))
            seen["calls"] = clock.getDelayedCalls()
            seen["producer"] = h.transport.producer
            seen["reason"] = p.disconnect_reason
            return p

        self.assertTrue(released(scenario))
        self.assertEqual(
            order, ["lookup k", "cancelled k", "fetch finally", "serve finally"]
        )
        self.assertEqual(seen["calls"], [])
        self.assertIsNone(seen["producer"])
        self.assertTrue(seen["reason"].check(ConnectionLost))
        self.assertEqual(events, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_side_task_cancel_reaches_its_sub_request(self) -> None:
        """
        A side task waiting on a sub-request inside a nested coroutine has
        the canceller called and its C{finally} run when the main handler
        ends, and nothing is logged.
        """
        events = capture_log(self)
        clock = task.Clock()
        backend = Backend(clock)
        order: list[str] = []

        @coroutine
        def poll(p: Scripted) -> Body:
            try:
                yield backend.lookup(b"status")
            finally:
                order.append("poll finally")

        def side(p: Scripted) -> Body:
            try:
                yield poll(p)
            finally:
                order.append("side finally")

        def script(p: Scripted) -> Body:
            p.spawn(side(p))
            yield p.read_line()

        h = ProtocolHarness(Scripted(script), clock)
        h.feed(b"bye\r\n")
        self.assertEqual(
            backend.events + order,
            ["lookup status", "cancelled status", "poll finally", "side finally"],
        )
        self.assertTrue(h.closed)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(events, [])


class BusyHandlerTests(SynchronousTestCase):
    """
    Bytes that arrive in the same chunk as the ones a handler waits for, or
    while it is busy on a sub-request, are neither dropped nor reordered.
    """

    def _lookup_server(
        self, results: list[object], backend: Backend, high_water: int
    ) -> Scripted:
        def script(p: Scripted) -> Body:
            while True:
                line = yield p.read_line()
                results.append(line)
                p.write_line((yield backend.lookup(line)))
                results.append((yield p.read_exactly(2)))

        p = Scripted(script)
        p.receive_high_water = high_water
        return p

    def test_bytes_after_the_awaited_line_wait_for_the_handler(self) -> None:
        """
        A chunk holding a line, the two bytes after it and the next lines
        (the last one split) is consumed in order around the sub-request
        each line starts, whatever arrives while the handler is busy.
        """
        clock = task.Clock()
        backend = Backend(clock)
        results: list[object] = []
        h = ProtocolHarness(self._lookup_server(results, backend, 1 << 20), clock)
        h.feed(b"a\r\n12b\r\n34c")
        self.assertEqual(results, [b"a"])
        h.feed(b"\r\n56d\r\n7")
        h.feed(b"8")
        clock.advance(5)
        self.assertEqual(results, [b"a", b"12", b"b"])
        clock.pump([5, 5, 5])
        self.assertEqual(results, [b"a", b"12", b"b", b"34", b"c", b"56", b"d", b"78"])
        self.assertEqual(
            h.take_output(),
            b"value of a\r\nvalue of b\r\nvalue of c\r\nvalue of d\r\n",
        )
        self.assertEqual(
            backend.events, ["lookup a", "lookup b", "lookup c", "lookup d"]
        )

    def test_bytes_past_the_high_water_mark_are_kept_in_order(self) -> None:
        """
        While a busy handler's buffer is past C{receive_high_water} reading
        is paused, and every byte that arrived (including any the transport
        delivered after the pause) is still handed over in order.
        """
        clock = task.Clock()
        backend = Backend(clock)
        results: list[object] = []
        h = ProtocolHarness(self._lookup_server(results, backend, 16), clock)
        lines = [b"line%02d" % i for i in range(20)]
        stream = b"".join(line + b"\r\n" + b"%02d" % i for i, line in enumerate(lines))
        h.feed(stream, chunk_size=7)
        self.assertTrue(h.reading_paused)
        self.assertEqual(results, [lines[0]])
        while len(results) < 2 * len(lines):
            clock.advance(5)
        self.assertFalse(h.reading_paused)
        expected: list[object] = []
        for i, line in enumerate(lines):
            expected += [line, b"%02d" % i]
        self.assertEqual(results, expected)


class LimitErrorFamilyTests(SynchronousTestCase):
    """
    Every limit error is a L{ProtocolError} raised at the handler's
    C{yield}, carrying the limit it names.
    """

    def _catch(
        self, read: Callable[[Scripted], Deferred[bytes]], data: bytes
    ) -> tuple[ProtocolError, bytes]:
        """
        Run a handler that catches L{ProtocolError} around C{read}, answers
        with the message and returns; feed it C{data}; give the error and
        what it wrote.
        """
        caught: list[ProtocolError] = []

        def script(p: Scripted) -> Body:
            try:
                yield read(p)
            except ProtocolError as e:
                caught.append(e)
                p.write_line(str(e).encode())

        p = Scripted(script)
        p.max_line_length = 8
        p.max_frame_size = 64
        h = ProtocolHarness(p)
        h.feed(data)
        self.assertTrue(h.closed)
        [error] = caught
        return error, h.take_output()

    def test_one_except_clause_catches_every_limit_at_the_yield(self) -> None:
        """
        One C{except ProtocolError} around the C{yield} catches a
        L{LineTooLongError} for a long line and for C{read_until} past
        C{max_length}, and a L{FrameTooLongError} for C{read_exactly}
        beyond C{max_frame_size}; each carries its limit, and its message
        (which the handler can send the peer) names it.
        """
        cases = [
            (lambda p: p.read_line(), LineTooLongError, 8, "max_line_length"),
            (
                lambda p: p.read_until(b";", max_length=3),
                LineTooLongError,
                3,
                "max_length",
            ),
            (lambda p: p.read_exactly(100), FrameTooLongError, 64, "max_frame_size"),
        ]
        for read, kind, limit, name in cases:
            error, output = self._catch(read, b"0123456789A")
            self.assertIsInstance(error, kind)
            assert isinstance(error, (LineTooLongError, FrameTooLongError))
            self.assertEqual((error.limit, error.limit_name), (limit, name))
            self.assertIn(f"{name}={limit}".encode(), output)

    def test_handler_can_discard_an_over_long_line_and_read_on(self) -> None:
        """
        A handler that catches L{LineTooLongError} can read the over-long
        bytes out of the buffer (they are still there) and go on with the
        next line.
        """
        results: list[object] = []

        def script(p: Scripted) -> Body:
            try:
                yield p.read_line()
            except LineTooLongError:
                results.append((yield p.read_some(1024)))
            results.append((yield p.read_line()))

        p = Scripted(script)
        p.max_line_length = 8
        h = ProtocolHarness(p)
        h.feed(b"0123456789A")
        h.feed(b"ok\r\n")
        self.assertEqual(results, [b"0123456789A", b"ok"])


def _median_peak(read: Callable[[], object], rounds: int) -> float:
    """
    The median, over C{rounds} calls, of the memory C{read()} allocated at
    its peak, as tracemalloc sees it (the result included).
    """
    peaks = []
    for _ in range(rounds):
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = read()
        peaks.append(tracemalloc.get_traced_memory()[1] - before)
        del result
    return statistics.median(peaks)


class HotPathTests(SynchronousTestCase):
    """
    A read the buffer can already satisfy is cheap: no timer, no queue
    entry, and no allocation beyond its result.
    """

    def test_buffered_read_allocates_only_its_result(self) -> None:
        """
        Each kind of read, when the buffer satisfies it, costs no more
        memory than its result (the bytes and an already-fired Deferred
        holding them), and schedules nothing even with a timeout.
        """
        rounds = 200
        line = bytearray(b"abcdefgh")
        gc.collect()
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        result_only = _median_peak(lambda: succeed(bytes(line)), rounds)
        kinds: list[tuple[str, bytes, Callable[[StateProtocol], Deferred[bytes]]]] = [
            ("read_line", b"\r\n", lambda p: p.read_line(timeout=5)),
            ("read_until", b";", lambda p: p.read_until(b";", timeout=5)),
            ("read_exactly", b"", lambda p: p.read_exactly(8, timeout=5)),
            ("read_some", b"", lambda p: p.read_some(8, timeout=5)),
        ]
        for name, separator, read in kinds:
            h = ProtocolHarness(idle())
            h.feed((bytes(line) + separator) * (rounds + 1))
            cost = _median_peak(lambda: read(h.protocol), rounds)  # noqa: B023
            self.assertLessEqual(cost, result_only, name)
            self.assertEqual(self.successResultOf(read(h.protocol)), b"abcdefgh")
            self.assertEqual(h.clock.getDelayedCalls(), [], name)


class _ClockedFactory(Factory):
    """
    A L{Factory} whose protocols use a given clock (a memory reactor's) for
    their timers and get the attributes given, as a test needs.
    """

    def __init__(
        self,
        protocol: type[StateProtocol],
        clock: MemoryReactorClock,
        **attributes: object,
    ) -> None:
        self.protocol = protocol
        self.clock = clock
        self.attributes = attributes

    def buildProtocol(self, addr: IAddress | None) -> StateProtocol | None:
        """
        Build the protocol, set its clock and the attributes.
        """
        p = super().buildProtocol(addr)
        assert isinstance(p, StateProtocol)
        p.clock = self.clock
        for name, value in self.attributes.items():
            setattr(p, name, value)
        return p


class Greeter(StateProtocol):
    """
    The handler from the issue, verbatim but for type hints and a
    C{backend} set by the test.
    """

    backend: Backend

    def start(self) -> Body:
        """
        Greet, read a name, hand over to C{chatting}.
        """
        self.write_line(b"HELLO")
        name = yield self.read_line(timeout=30)
        noreturn(self.chatting(name))

    def chatting(self, name: bytes) -> Body:
        """
        Answer each line from the backend until C{QUIT}.
        """
        while True:
            line = yield self.read_line()
            if line == b"QUIT":
                return
            reply = yield self.backend.lookup(line)
            self.write_line(reply)


class GreeterClient(StateProtocol):
    """
    A client conversation for L{Greeter}: expects the greeting, gives a
    name, asks two questions, says C{QUIT}, and waits for the close.
    """

    def __init__(self) -> None:
        super().__init__()
        self.transcript: list[bytes] = []

    def start(self) -> Body:
        """
        Talk to the greeter.
        """
        self.transcript.append((yield self.read_line(timeout=10)))
        self.write_line(b"alice")
        for question in (b"weather", b"time"):
            self.write_line(question)
            self.transcript.append((yield self.read_line(timeout=10)))
        self.write_line(b"QUIT")
        yield self.read_some()


class GreeterTests(SynchronousTestCase):
    """
    The issue's C{Greeter} is served with C{Factory.forProtocol}-style
    machinery on an endpoint and is talked to by a L{StateProtocol} client
    through C{connectProtocol}.
    """

    def test_greeter_served_on_an_endpoint_and_used_as_a_client(self) -> None:
        """
        Over a memory reactor's endpoints and an iosim pump, the greeter
        answers each line from its backend, and both sides close cleanly
        when it returns on C{QUIT}, leaving no timer.
        """
        reactor = MemoryReactorClock()
        backend = Backend(reactor, delay=2)
        TCP4ServerEndpoint(reactor, 4321).listen(
            _ClockedFactory(Greeter, reactor, backend=backend)
        )
        client = GreeterClient()
        client.clock = reactor
        connected = connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", 4321), client
        )
        pump = ConnectionCompleter(reactor).succeedOnce()
        assert pump is not None
        self.assertIs(self.successResultOf(connected), client)
        server = pump.server
        assert isinstance(server, Greeter)
        pump.flush()
        self.assertEqual(client.transcript, [b"HELLO"])
        self.assertEqual(backend.events, ["lookup weather"])
        reactor.advance(2)
        pump.flush()
        reactor.advance(2)
        pump.flush()
        self.assertEqual(
            client.transcript, [b"HELLO", b"value of weather", b"value of time"]
        )
        self.assertIs(server.state, ConnectionState.CLOSED)
        self.assertIs(client.state, ConnectionState.CLOSED)
        assert server.disconnect_reason is not None
        self.assertTrue(server.disconnect_reason.check(ConnectionDone))
        assert server.conversation is not None
        assert client.conversation is not None
        self.assertIsNone(self.successResultOf(server.conversation))
        self.assertIsNone(self.successResultOf(client.conversation))
        self.assertEqual(reactor.getDelayedCalls(), [])
