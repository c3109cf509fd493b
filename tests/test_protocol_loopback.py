"""
Tests for L{txstateproto._protocol} over real TCP connections on the
loopback interface (127.0.0.1 and ::1), with the global reactor.

These check what the in-memory transport cannot: that closing after a
large write flushes it through Twisted's producer machinery, that C{drain}
really waits for the socket, that C{pause} and the receive high-water mark
really stop reading from the socket, and that half-close and a peer's
disconnect behave on a real TCP transport. Every wait is on an event (a
Deferred fired by the protocol or the transport), never on time; trial's
reactor check fails a test that leaves a timer or a socket behind.
"""

from __future__ import annotations

import socket
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
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.helpers import Body, capture_log
from txstateproto import ConnectionState, EndOfStreamError, StateProtocol, coroutine

Test = Generator[Any, Any, None]


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
        self.assertTrue(server.disconnect_reason.check(ConnectionDone))  # type: ignore[union-attr]

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
                if getattr(c.func, "__self__", None) is server
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
        self.assertTrue(server.disconnect_reason.check(ConnectionLost))  # type: ignore[union-attr]
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
