"""
Tests for L{txstateproto._protocol} over real TCP connections on the
loopback interface (127.0.0.1 and ::1), with the global reactor.

These check what the in-memory transport cannot: that closing after a
large write flushes it through Twisted's producer machinery, that C{drain}
really waits for the socket, that C{pause} and the receive high-water mark
really stop reading from the socket, and that half-close and a peer's
disconnect behave on a real TCP transport.

L{IssueLoopbackTests} holds the ones issue 4 names: a line echo to 100
concurrent clients sending in seeded random chunks; a client that
disconnects while the handler waits on a sub-request (canceller called,
C{finally} run, nothing left in the reactor, compared precisely with a
snapshot); and 100 MB floods without a newline, with the server's buffer
and the process's traced memory bounded.

Every wait is on an event (a Deferred fired by the protocol or the
transport) or a counted number of reactor turns, never on time; trial's
reactor check fails a test that leaves a timer or a socket behind.
"""

from __future__ import annotations

import random
import socket
import tracemalloc
import weakref
from collections import deque
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    TCP6ClientEndpoint,
    TCP6ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import Body, capture_log, gc_disabled
from txstateproto import (
    ConnectionState,
    EndOfStreamError,
    LineTooLongError,
    StateProtocol,
    coroutine,
    noreturn,
)

Test = Generator[Any, Any, Any]


def _ipv6_loopback() -> bool:
    """
    Whether this machine can listen on C{::1}.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


def _turns(count: int) -> Deferred[None]:
    """
    Fire after the reactor has run C{count} more iterations (each polls for
    I/O), without reference to time.
    """
    d: Deferred[None] = Deferred()

    def turn(left: int) -> None:
        if left:
            reactor.callLater(0, turn, left - 1)
        else:
            d.callback(None)

    turn(count)
    return d


class Recorder(Factory):
    """
    A server factory that keeps the protocols it builds and fires
    C{first} with the first one.
    """

    def __init__(self, make: Callable[[], StateProtocol]) -> None:
        self.make = make
        self.built: list[StateProtocol] = []
        self.first: Deferred[StateProtocol] = Deferred()

    def buildProtocol(self, addr: object) -> StateProtocol:
        """
        Build, keep, and announce the first protocol.
        """
        p = self.make()
        self.built.append(p)
        if len(self.built) == 1:
            self.first.callback(p)
        return p


class Collector(Protocol):
    """
    A plain Twisted client: sends C{greeting} on connect, optionally shuts
    its write side, collects everything it receives and fires C{lost} with
    the reason.
    """

    def __init__(self, greeting: bytes = b"", shut_write: bool = False) -> None:
        self.greeting = greeting
        self.shut_write = shut_write
        self.received = bytearray()
        # Fired with the exception, not the Failure: a Failure given to
        # callback() would fail the Deferred.
        self.lost: Deferred[BaseException] = Deferred()

    def connectionMade(self) -> None:
        """
        Send the greeting.
        """
        assert self.transport is not None
        if self.greeting:
            self.transport.write(self.greeting)
        if self.shut_write:
            self.transport.loseWriteConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        """
        Collect.
        """
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Report the end.
        """
        assert reason.value is not None
        self.lost.callback(reason.value)


class Echo(StateProtocol):
    """
    Echo lines until C{QUIT}.
    """

    def start(self) -> Body:
        """
        Echo each line back.
        """
        while True:
            line = yield self.read_line()
            if line == b"QUIT":
                return
            self.write_line(line)


class EchoClient(StateProtocol):
    """
    Send words one at a time, keep the replies, then say C{QUIT} and wait
    for the server to close.
    """

    def __init__(self, words: list[bytes]) -> None:
        super().__init__()
        self.words = words
        self.replies: list[bytes] = []

    def start(self) -> Body:
        """
        Talk, then wait to be closed.
        """
        for word in self.words:
            self.write_line(word)
            self.replies.append((yield self.read_line(timeout=30)))
        self.write_line(b"QUIT")
        yield self.read_some()


class ChunkedSender(Collector):
    """
    A plain Twisted client that sends its chunks one per reactor turn, with
    Nagle's algorithm off, so that they leave as separate segments and the
    server reads them in varying pieces; it collects what comes back.
    """

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__()
        self.chunks = deque(chunks)
        self._next: IDelayedCall | None = None

    def connectionMade(self) -> None:
        """
        Turn Nagle off and start sending.
        """
        self.transport.setTcpNoDelay(True)  # type: ignore[union-attr]
        self._send()

    def _send(self) -> None:
        """
        Send the next chunk, and schedule the one after for the next turn.
        """
        self._next = None
        if self.chunks:
            self.transport.write(self.chunks.popleft())  # type: ignore[union-attr]
            self._next = reactor.callLater(0, self._send)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Stop sending, then report the end.
        """
        if self._next is not None:
            self._next.cancel()
            self._next = None
        super().connectionLost(reason)


class Flood(Collector):
    """
    A plain Twisted client that streams C{total} bytes without a newline as
    a pull producer (one block each time the transport's buffer empties, so
    the client's own memory stays constant), then closes.

    @ivar sent: How many bytes it has handed to the transport.
    """

    block = b"x" * (256 * 1024)

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.sent = 0

    def connectionMade(self) -> None:
        """
        Register as a pull producer: the transport asks for each block.
        """
        self.transport.registerProducer(self, False)  # type: ignore[union-attr]

    def resumeProducing(self) -> None:
        """
        Write the next block, or close once everything is sent.
        """
        transport: Any = self.transport
        left = self.total - self.sent
        if left <= 0:
            transport.unregisterProducer()
            transport.loseConnection()
            return
        data = self.block if left >= len(self.block) else self.block[:left]
        self.sent += len(data)
        transport.write(data)

    def stopProducing(self) -> None:
        """
        The connection is going away; C{connectionLost} reports it.
        """


class ReactorSnapshot:
    """
    What the global reactor holds at one moment (timers, readers, writers),
    to compare with later: the test's own machinery (trial's timeout call,
    the reactor's waker) is in both and cancels out.
    """

    def __init__(self) -> None:
        # Keep the objects, not only their ids, so that the ids stay unique.
        self.calls = list(reactor.getDelayedCalls())
        self.readers = list(reactor.getReaders())
        self.writers = list(reactor.getWriters())

    def new_calls(self) -> list[IDelayedCall]:
        """
        The timers scheduled since the snapshot and still pending.
        """
        old = {id(c) for c in self.calls}
        return [c for c in reactor.getDelayedCalls() if id(c) not in old]

    def new_readers(self) -> set[object]:
        """
        The readers added since the snapshot.
        """
        old = {id(r) for r in self.readers}
        return {r for r in reactor.getReaders() if id(r) not in old}

    def new_writers(self) -> set[object]:
        """
        The writers added since the snapshot.
        """
        old = {id(w) for w in self.writers}
        return {w for w in reactor.getWriters() if id(w) not in old}


def _random_stream(rng: random.Random, client: int) -> list[bytes]:
    """
    A client's lines: 10 to 40, each unique (client and line number first),
    then up to 200 random bytes that may include a lone carriage return but
    never a line feed.
    """
    alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789 \r"
    return [
        b"%d:%d:" % (client, n)
        + bytes(rng.choice(alphabet) for _ in range(rng.randint(0, 200)))
        for n in range(rng.randint(10, 40))
    ]


def _random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """
    Split C{data} at random points: many single bytes (so delimiters split),
    and pieces up to 1 KiB.
    """
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 1, 2, rng.randint(3, 64), rng.randint(65, 1024)])
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


class LoopbackTests(TestCase):
    """
    L{StateProtocol} on real TCP connections over the loopback interface.
    """

    # Fail fast rather than hang if an event never comes.
    timeout = 30

    @coroutine
    def _listen(self, endpoint: Any, make: Callable[[], StateProtocol]) -> Test:
        """
        Listen on C{endpoint}; return the factory and the port number. The
        listening port is closed in the test's clean-up.
        """
        factory = Recorder(make)
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return (factory, port.getHost().port)

    @coroutine
    def _echo(self, server_endpoint: Any, client_endpoint: Any) -> Test:
        factory, port = yield self._listen(server_endpoint, Echo)
        client = EchoClient([b"one", b"two", b"three"])
        yield connectProtocol(client_endpoint(port), client)
        server = yield factory.first
        yield gatherResults([client.when_closed(), server.when_closed()])
        self.assertEqual(client.replies, [b"one", b"two", b"three"])
        self.assertIs(server.state, ConnectionState.CLOSED)
        assert server.disconnect_reason is not None
        self.assertTrue(server.disconnect_reason.check(ConnectionDone))

    def test_echo_over_ipv4(self) -> Deferred[None]:
        """
        A StateProtocol server and client talk over 127.0.0.1 and both
        close cleanly when the server's handler returns.
        """
        return self._echo(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"),
            lambda port: TCP4ClientEndpoint(reactor, "127.0.0.1", port),
        )

    def test_echo_over_ipv6(self) -> Deferred[None]:
        """
        The same conversation works over ::1.
        """
        return self._echo(
            TCP6ServerEndpoint(reactor, 0, interface="::1"),
            lambda port: TCP6ClientEndpoint(reactor, "::1", port),
        )

    if not _ipv6_loopback():
        test_echo_over_ipv6.skip = "no IPv6 loopback on this machine"  # type: ignore[attr-defined]

    @coroutine
    def test_return_flushes_a_large_write_before_closing(self) -> Test:
        """
        A handler that writes 4 MiB and returns at once gets it all to the
        peer before the connection closes cleanly: the protocol unregisters
        as producer before closing, so the transport does not wait for it.
        """
        size = 4 * 1024 * 1024

        class Blaster(StateProtocol):
            def start(self) -> Body:
                self.write(b"x" * size)
                yield None

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Blaster
        )
        client = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        reason = yield client.lost
        server = yield factory.first
        yield server.when_closed()
        self.assertEqual(len(client.received), size)
        self.assertIsInstance(reason, ConnectionDone)

    @coroutine
    def test_drain_waits_for_the_socket(self) -> Test:
        """
        A handler writing 16 MiB with C{drain} between chunks is held back
        by a peer that does not read (it has written only a few chunks
        after many reactor turns), and goes on when the peer reads again;
        every byte arrives.
        """
        chunk = b"y" * (256 * 1024)
        chunks = 64
        progress: list[int] = [0]

        class Streamer(StateProtocol):
            def start(self) -> Body:
                # Small, fixed socket buffers: the kernel cannot absorb more
                # than a fraction of the stream for a peer that is not
                # reading.
                handle = self.transport.getHandle()  # type: ignore[union-attr]
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                for i in range(chunks):
                    self.write(chunk)
                    progress.append(i + 1)
                    yield self.drain()

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Streamer
        )

        class Stalled(Collector):
            def connectionMade(self) -> None:
                assert self.transport is not None
                handle = self.transport.getHandle()  # type: ignore[attr-defined]
                handle.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                self.transport.pauseProducing()  # type: ignore[attr-defined]

        client = Stalled()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        server = yield factory.first
        # Let the reactor run I/O for a while with the client not reading.
        # Without drain() the handler would have queued all 64 chunks in
        # its first run.
        yield _turns(20)
        self.assertGreaterEqual(progress[-1], 1)
        self.assertLess(progress[-1], 8)
        self.assertNoResult(server.drain())
        client.transport.resumeProducing()  # type: ignore[union-attr]
        reason = yield client.lost
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual(len(client.received), len(chunk) * chunks)
        self.assertEqual(progress[-1], chunks)

    @coroutine
    def test_peer_disconnect_cancels_the_conversation_silently(self) -> Test:
        """
        A client that connects and goes away cancels the server's
        conversation (its C{finally} runs, its read timer is cancelled) and
        nothing is logged.
        """
        events = capture_log(self)
        cleaned: list[str] = []

        class Waiting(StateProtocol):
            def start(self) -> Body:
                try:
                    yield self.read_line(timeout=60)
                finally:
                    cleaned.append("finally")

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Waiting
        )
        client = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        server = yield factory.first
        client.transport.loseConnection()  # type: ignore[union-attr]
        yield gatherResults([server.when_closed(), client.lost])
        self.assertEqual(cleaned, ["finally"])
        self.assertEqual(
            [
                c
                for c in reactor.getDelayedCalls()
                if getattr(getattr(c, "func", None), "__self__", None) is server
            ],
            [],
        )
        self.assertEqual(events, [])

    @coroutine
    def test_peer_abort_is_connection_lost_and_not_logged(self) -> Test:
        """
        A client that aborts (RST) ends the server's conversation with
        C{disconnect_reason} a L{ConnectionLost}, and nothing is logged.
        """
        events = capture_log(self)
        first_line: Deferred[bytes] = Deferred()

        class Reader(StateProtocol):
            def start(self) -> Body:
                first_line.callback((yield self.read_line()))
                yield self.read_line()

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Reader
        )
        client = Collector(b"hello\r\n")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        server = yield factory.first
        line = yield first_line
        self.assertEqual(line, b"hello")
        client.transport.abortConnection()  # type: ignore[union-attr]
        yield gatherResults([server.when_closed(), client.lost])
        assert server.disconnect_reason is not None
        self.assertTrue(server.disconnect_reason.check(ConnectionLost))
        self.assertEqual(events, [])

    @coroutine
    def test_half_close_over_tcp(self) -> Test:
        """
        With C{half_close}, a client that shuts its write side gets the
        server's answer, computed after L{EndOfStreamError}, before the
        connection closes.
        """

        class Counter(StateProtocol):
            half_close = True

            def start(self) -> Body:
                lines = 0
                try:
                    while True:
                        yield self.read_line()
                        lines += 1
                except EndOfStreamError as e:
                    partial = e.partial
                self.write_line(b"%d lines, then %s" % (lines, partial))

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Counter
        )
        client = Collector(b"a\r\nb\r\nrest", shut_write=True)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        reason = yield client.lost
        server = yield factory.first
        yield server.when_closed()
        self.assertEqual(bytes(client.received), b"2 lines, then rest\r\n")
        self.assertIsInstance(reason, ConnectionDone)

    @coroutine
    def test_pause_and_high_water_stop_reading_the_socket(self) -> Test:
        """
        C{pause} takes the socket out of the reactor's readers and
        C{unpause} puts it back; a busy handler's full buffer does the same
        until a read needs the bytes.
        """
        gate: Deferred[None] = Deferred()
        pauses: list[Deferred[None]] = []
        payload = b"z" * 65536

        class Busy(StateProtocol):
            receive_high_water = 1024

            def connectionMade(self) -> None:
                super().connectionMade()
                transport: Any = self.transport
                pause = transport.pauseProducing

                def spy() -> None:
                    pause()
                    while pauses:
                        pauses.pop(0).callback(None)

                transport.pauseProducing = spy

            def start(self) -> Body:
                yield gate
                data = yield self.read_exactly(len(payload))
                self.write(b"got %d" % len(data))

        factory, port = yield self._listen(
            TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1"), Busy
        )
        client = Collector()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        server = yield factory.first
        transport = server.transport

        server.pause()
        self.assertNotIn(transport, reactor.getReaders())
        server.unpause()
        self.assertIn(transport, reactor.getReaders())

        buffer_full: Deferred[None] = Deferred()
        pauses.append(buffer_full)
        client.transport.write(payload)  # type: ignore[union-attr]
        yield buffer_full
        self.assertNotIn(transport, reactor.getReaders())
        gate.callback(None)
        reason = yield client.lost
        self.assertEqual(bytes(client.received), b"got 65536")
        self.assertIsInstance(reason, ConnectionDone)


class BufferWatch:
    """
    What a server's receive buffer held around each C{dataReceived}, kept
    as running maxima and totals so that watching costs no memory.

    @ivar before: The most bytes buffered when a chunk arrived.
    @ivar after: The most bytes left buffered once the chunk was handled.
    @ivar chunk: The largest chunk received.
    @ivar total: The bytes received in all.
    """

    def __init__(self) -> None:
        self.before = 0
        self.after = 0
        self.chunk = 0
        self.total = 0


def _watched(base: type[StateProtocol], watch: BufferWatch) -> type[StateProtocol]:
    """
    A subclass of C{base} that records its buffer's length in C{watch}.

    The length is read from the protocol's private C{_buffer}: the
    behaviour under test is how big that buffer gets.
    """

    class Watched(base):  # type: ignore[valid-type,misc]
        def dataReceived(self, data: bytes) -> None:
            buffered = len(self._buffer)
            watch.before = max(watch.before, buffered)
            watch.chunk = max(watch.chunk, len(data))
            watch.total += len(data)
            super().dataReceived(data)
            watch.after = max(watch.after, len(self._buffer))

    return Watched


class IssueLoopbackTests(TestCase):
    """
    The three loopback tests issue 4 asks for: many concurrent clients with
    random chunking, a disconnect while the handler waits on a sub-request,
    and a flood without a newline.
    """

    timeout = 60

    @coroutine
    def _listen_on(self, factory: Factory, backlog: int = 50) -> Test:
        """
        Listen with C{factory} on 127.0.0.1; return the port. It is closed
        in the test's clean-up.
        """
        endpoint = TCP4ServerEndpoint(
            reactor, 0, backlog=backlog, interface="127.0.0.1"
        )
        port = yield endpoint.listen(factory)
        self.addCleanup(port.stopListening)
        return port

    @coroutine
    def test_echo_to_100_concurrent_clients_with_random_chunking(self) -> Test:
        """
        A line echo served by C{Factory.forProtocol} to 100 clients at once,
        each sending its lines in random chunks (split delimiters included)
        one chunk per reactor turn, echoes every byte to each client in
        order, and closes each connection cleanly on C{QUIT}.
        """
        clients_count = 100
        rng = random.Random(20261125)
        servers: list[StateProtocol] = []
        open_now = [0, 0]  # connections open now, most open at once
        chunk_ends: list[bool] = []  # per server read: did it end mid-line?

        class LineEcho(Echo):
            def connectionMade(self) -> None:
                servers.append(self)
                open_now[0] += 1
                open_now[1] = max(open_now)
                super().connectionMade()

            def dataReceived(self, data: bytes) -> None:
                chunk_ends.append(not data.endswith(b"\r\n"))
                super().dataReceived(data)

            def connectionLost(self, reason: Failure = connectionDone) -> None:
                open_now[0] -= 1
                super().connectionLost(reason)

        # A backlog above the client count: no SYN waits for a retry.
        port = yield self._listen_on(Factory.forProtocol(LineEcho), backlog=128)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        expected: list[bytes] = []
        clients: list[ChunkedSender] = []
        for i in range(clients_count):
            lines = _random_stream(rng, i)
            stream = b"".join(line + b"\r\n" for line in lines)
            expected.append(stream)
            clients.append(ChunkedSender(_random_chunks(rng, stream + b"QUIT\r\n")))
        yield gatherResults([connectProtocol(endpoint, c) for c in clients])
        reasons = yield gatherResults([c.lost for c in clients])
        yield gatherResults([s.when_closed() for s in servers])
        self.assertEqual(len(servers), clients_count)
        self.assertEqual(open_now[1], clients_count)
        wrong = [i for i, c in enumerate(clients) if bytes(c.received) != expected[i]]
        self.assertEqual(wrong, [])
        self.assertEqual(
            {type(r) for r in reasons},
            {ConnectionDone},
        )
        # The chunking reached the server: some reads ended inside a line.
        self.assertIn(True, chunk_ends)

    @coroutine
    def _disconnect_during_sub_request(
        self, disconnect: Callable[[Any], None], reason_type: type[Exception]
    ) -> Test:
        """
        Serve a handler that waits on a sub-request two coroutines down,
        with a side task, an idle timer and the reactor as its clock;
        disconnect the client with C{disconnect(transport)} while it waits,
        and check that nothing is left in the reactor.
        """
        events = capture_log(self)
        # One turn first: trial schedules its timeout call only once the
        # test method has returned its Deferred.
        yield _turns(1)
        snapshot = ReactorSnapshot()
        order: list[str] = []
        waiting: Deferred[None] = Deferred()

        def lookup(key: bytes) -> Deferred[bytes]:
            # The backend: answers after a minute unless cancelled.
            def cancel(d: Deferred[bytes]) -> None:
                order.append("canceller")
                call.cancel()

            d: Deferred[bytes] = Deferred(cancel)
            call = reactor.callLater(60, d.callback, b"value of " + key)
            waiting.callback(None)
            return d

        @coroutine
        def fetch(key: bytes) -> Body:
            try:
                return (yield lookup(key))
            finally:
                order.append("fetch finally")

        class Handler(StateProtocol):
            idle_timeout = 600

            def start(self) -> Body:
                self.spawn(self.heartbeat())
                key = yield self.read_line(timeout=60)
                noreturn(self.serve(key))

            def heartbeat(self) -> Body:
                try:
                    while True:
                        yield self.sleep(30)
                finally:
                    order.append("heartbeat finally")

            def serve(self, key: bytes) -> Body:
                try:
                    self.write_line((yield fetch(key)))
                finally:
                    order.append("serve finally")

        factory = Recorder(Handler)
        port = yield self._listen_on(factory)
        client = Collector(b"key\r\n")
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        server = yield factory.first
        yield waiting
        # The sub-request's timer, the heartbeat's sleep and the idle timer;
        # the listening port and both ends of the connection.
        self.assertEqual(len(snapshot.new_calls()), 3)
        self.assertEqual(
            snapshot.new_readers(), {port, server.transport, client.transport}
        )
        disconnect(client.transport)
        yield gatherResults([server.when_closed(), client.lost])
        self.assertEqual(
            order,
            ["canceller", "fetch finally", "serve finally", "heartbeat finally"],
        )
        assert server.disconnect_reason is not None
        self.assertTrue(server.disconnect_reason.check(reason_type))
        self.assertEqual(snapshot.new_calls(), [])
        self.assertEqual(snapshot.new_readers(), {port})
        self.assertEqual(snapshot.new_writers(), set())
        self.assertEqual(events, [])
        self.assertEqual(self.flushLoggedErrors(), [])
        # Nor does a reference cycle keep the protocol alive: once out of
        # the call stack that closed it, dropping the test's references
        # frees it without the garbage collector.
        yield _turns(1)
        ref = weakref.ref(server)
        with gc_disabled():
            del server
            factory.built.clear()
            factory.first = Deferred()
            self.assertIsNone(ref())

    def test_client_close_cancels_the_sub_request(self) -> Deferred[None]:
        """
        A client that closes (FIN) while the handler waits on a sub-request
        gets the sub-request's canceller called, every C{finally} run
        innermost first, nothing logged, and leaves no timer, reader or
        writer in the reactor but the listening port, and no cycle keeping
        the protocol alive.
        """
        return self._disconnect_during_sub_request(
            lambda transport: transport.loseConnection(), ConnectionDone
        )

    def test_client_abort_cancels_the_sub_request(self) -> Deferred[None]:
        """
        The same holds for a client that aborts (RST): the server's
        C{disconnect_reason} is then a L{ConnectionLost}.
        """
        return self._disconnect_during_sub_request(
            lambda transport: transport.abortConnection(), ConnectionLost
        )

    @coroutine
    def test_flood_without_newline_is_cut_off_by_max_line_length(self) -> Test:
        """
        A client streaming 100 MB without a newline to a line handler is cut
        off by the handler's L{LineTooLongError}: the connection is closed
        and logged as a warning after a small part of the flood, and the
        server's buffer never holds more than C{max_line_length} (plus a
        partial delimiter) before a chunk, nor more than that and one chunk.
        """
        events = capture_log(self)
        watch = BufferWatch()

        class Lines(StateProtocol):
            def start(self) -> Body:
                while True:
                    yield self.read_line()

        factory = Recorder(_watched(Lines, watch))
        port = yield self._listen_on(factory)
        total = 100 * 1024 * 1024
        client = Flood(total)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        server = yield factory.first
        yield gatherResults([server.when_closed(), client.lost])
        limit = Lines.max_line_length + len(Lines.delimiter) - 1
        self.assertLessEqual(watch.before, limit)
        self.assertLessEqual(watch.after, limit + watch.chunk)
        self.assertLess(client.sent, total)
        self.assertEqual(
            [(e["log_level"], e["error_type"]) for e in events],
            [(LogLevel.warn, LineTooLongError)],
        )
        self.assertIn("max_line_length=16384", events[0]["error"])
        self.assertEqual(self.flushLoggedErrors(), [])

    @coroutine
    def test_100_mb_flood_without_newline_keeps_memory_bounded(self) -> Test:
        """
        A handler that survives a 100 MB flood without a newline (it
        catches each L{LineTooLongError} and discards the over-long bytes)
        receives all of it while its buffer stays under C{max_line_length}
        plus one chunk, and the whole process's traced memory (client side
        included) grows by less than 1 MiB; not a byte is lost.
        """
        watch = BufferWatch()
        counts = {"errors": 0, "discarded": 0}

        class Discarding(StateProtocol):
            def start(self) -> Body:
                while True:
                    try:
                        yield self.read_line()
                    except LineTooLongError:
                        counts["errors"] += 1
                        counts["discarded"] += len((yield self.read_some(1 << 20)))

        factory = Recorder(_watched(Discarding, watch))
        port = yield self._listen_on(factory)
        total = 100 * 1024 * 1024
        client = Flood(total)
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            self.addCleanup(tracemalloc.stop)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        server = yield factory.first
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        reason = yield client.lost
        peak = tracemalloc.get_traced_memory()[1]
        yield server.when_closed()
        self.assertIsInstance(reason, ConnectionDone)
        self.assertEqual((client.sent, watch.total), (total, total))
        self.assertEqual(counts["discarded"] + len(server._buffer), total)
        self.assertGreater(counts["errors"], 0)
        limit = Discarding.max_line_length + len(Discarding.delimiter) - 1
        self.assertLessEqual(watch.before, limit)
        self.assertLessEqual(watch.after, limit + watch.chunk)
        self.assertLess(peak - baseline, 1024 * 1024)

    @coroutine
    def test_flood_while_busy_on_a_sub_request_is_held_back(self) -> Test:
        """
        A flood that arrives while the handler is busy on a sub-request (no
        read pending) fills the buffer only to C{receive_high_water} plus one
        chunk: reading from the socket stops and TCP holds the client back.
        When the handler reads again, its L{LineTooLongError} closes the
        connection.
        """
        events = capture_log(self)
        watch = BufferWatch()
        sub_request: Deferred[None] = Deferred()
        reading_stopped: Deferred[None] = Deferred()

        class Busy(StateProtocol):
            receive_high_water = 256 * 1024

            def start(self) -> Body:
                yield sub_request
                yield self.read_line()

            def connectionMade(self) -> None:
                super().connectionMade()
                transport: Any = self.transport
                pause = transport.pauseProducing

                def spy() -> None:
                    pause()
                    if not reading_stopped.called:
                        reading_stopped.callback(None)

                transport.pauseProducing = spy

        factory = Recorder(_watched(Busy, watch))
        port = yield self._listen_on(factory)
        total = 100 * 1024 * 1024
        client = Flood(total)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        server = yield factory.first
        yield reading_stopped
        # Let the client write until TCP stops it: its producer is no longer
        # asked for more once the socket buffers are full.
        yield _turns(50)
        self.assertNotIn(server.transport, reactor.getReaders())
        self.assertLessEqual(watch.after, Busy.receive_high_water + watch.chunk)
        self.assertLess(client.sent, total // 10)
        sub_request.callback(None)
        yield gatherResults([server.when_closed(), client.lost])
        self.assertEqual(
            [(e["log_level"], e["error_type"]) for e in events],
            [(LogLevel.warn, LineTooLongError)],
        )
        self.assertLess(client.sent, total // 10)
