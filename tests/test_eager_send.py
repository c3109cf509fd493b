"""
Tests for L{StateProtocol}'s direct writes and eager send on plain TCP
connections, over real sockets on 127.0.0.1 with the global reactor.

While a chunk is handled, what the handler writes goes straight into the
TCP transport's send buffer, and at the end of C{dataReceived} it is sent
at once when nothing is queued ahead (the C{send()} that the transport's
C{doWrite()} would make on the next reactor turn, made on its socket). An in-memory
transport cannot show any of this, so every test here uses loopback
sockets: the reply goes out without registering the socket for writing; a
send the kernel cannot take whole (or at all) falls back to the reactor
with the order kept, and a send error is reported by the reactor;
writes through C{self.transport} interleave correctly; STARTTLS after a
write still sends that write in plaintext; C{drain} still sees the
transport's back-pressure; and other transports keep the ordinary path.

Every wait is on an event (a Deferred fired by a protocol), never on time.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor, tcp
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    connectProtocol,
)
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.certs import certificates
from tests.helpers import Body
from txstateproto import StateProtocol, _protocol
from txstateproto._tls import start_tls
from txstateproto.testing import ProtocolHarness

Test = Generator[Any, Any, Any]


class Server(StateProtocol):
    """
    A server whose handler is a function given to the constructor; it fires
    C{made} once connected and C{paused} on the transport's first
    C{pauseProducing}.
    """

    def __init__(self, script: Callable[[Server], Body]) -> None:
        super().__init__()
        self._script = script
        self.made: Deferred[Server] = Deferred()
        self.paused: Deferred[None] = Deferred()
        self.drained: list[bool] = []

    def connectionMade(self) -> None:
        super().connectionMade()
        self.made.callback(self)

    def start(self) -> Body:
        return self._script(self)

    def pauseProducing(self) -> None:
        super().pauseProducing()
        if not self.paused.called:
            self.paused.callback(None)


class Client(Protocol):
    """
    A plain Twisted client: collects what it receives, fires C{until} once
    C{expected} bytes have arrived, and C{lost} when the connection closes.
    """

    def __init__(self, expected: int = 0) -> None:
        self.received = bytearray()
        self.expected = expected
        self.until: Deferred[None] = Deferred()
        self.lost: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if len(self.received) >= self.expected and not self.until.called:
            self.until.callback(None)

    def wait_for(self, total: int) -> Deferred[None]:
        """
        Fire once C{total} bytes in all have arrived.
        """
        self.expected = total
        self.until = Deferred()
        if len(self.received) >= total:
            self.until.callback(None)
        return self.until

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.lost.callback(None)


class _Socket:
    """
    A transport's socket with its C{send} replaced: every other attribute is
    the real socket's.
    """

    def __init__(
        self, real: socket.socket, send: Callable[[Callable[[bytes], int], bytes], int]
    ) -> None:
        self._real = real
        self._send = send

    def send(self, data: bytes) -> int:
        """
        Call the replacement with the real C{send} and C{data}.
        """
        return self._send(self._real.send, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _Loopback(TestCase):
    """
    Listen on 127.0.0.1, connect clients, record writer registrations.
    """

    timeout = 30

    def setUp(self) -> None:
        self.writers: list[object] = []
        original = reactor.addWriter

        def add_writer(writer: Any) -> None:
            self.writers.append(writer)
            original(writer)

        self.patch(reactor, "addWriter", add_writer)

    @inlineCallbacks
    def connect(
        self, script: Callable[[Server], Body], client: Protocol
    ) -> Generator[Any, Any, Server]:
        """
        Serve C{script} on a fresh port, connect C{client}, and return the
        connected server protocol.
        """
        servers: list[Server] = []

        def build() -> Server:
            servers.append(Server(script))
            return servers[-1]

        port: IListeningPort = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(Factory.forProtocol(build))
        self.addCleanup(port.stopListening)
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        while not servers:
            yield _turn()
        server = yield servers[0].made
        self.addCleanup(_close, server, client)
        return server

    def server_registrations(self, server: Server) -> int:
        """
        How many times the server's transport asked to be told when it can
        write.
        """
        return sum(1 for w in self.writers if w is server.transport)


def _turn() -> Deferred[None]:
    """
    Fire on the reactor's next iteration.
    """
    d: Deferred[None] = Deferred()
    reactor.callLater(0, d.callback, None)
    return d


@inlineCallbacks
def _close(server: Server, client: Protocol) -> Test:
    """
    Close both ends and wait until both have gone.
    """
    assert client.transport is not None
    client.transport.loseConnection()
    if isinstance(client, Client):
        yield client.lost
    yield server.when_closed()


def echo(p: Server) -> Body:
    """
    Echo every line.
    """
    while True:
        line = yield p.read_line()
        p.write_line(line)


def echo_and_drain(p: Server) -> Body:
    """
    Echo every line, waiting on C{drain} after each reply (as the echo
    example does); record in C{p.drained} whether each had fired at once.
    """
    while True:
        line = yield p.read_line()
        p.write_line(line)
        writable = p.drain()
        p.drained.append(writable.called)
        yield writable


class EagerSendTests(_Loopback):
    """
    Replies written while a chunk is handled leave at the end of that
    C{dataReceived}, without a reactor turn, whenever that is safe.
    """

    def test_detects_plain_tcp_only(self) -> None:
        """
        The direct path applies to Twisted's plain TCP connection classes
        alone: not to an in-memory transport, nor to a subclass.
        """
        h = ProtocolHarness(Server(echo))
        self.assertIsNone(h.protocol._direct)

        class Custom(tcp.Server):
            pass

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        p = Server(echo)
        transport = Custom(a, p, ("127.0.0.1", 1), None, 1, reactor)  # type: ignore[arg-type]
        p.makeConnection(transport)
        self.addCleanup(transport.connectionLost, Failure(ConnectionError()))
        self.assertIsNone(p._direct)

    def test_not_used_when_the_transport_lacks_what_it_needs(self) -> None:
        """
        A plain TCP transport missing one of the attributes the direct path
        uses (as an older or newer Twisted might) gets the ordinary path.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        p = Server(echo)
        transport = tcp.Server(a, p, ("127.0.0.1", 1), None, 1, reactor)  # type: ignore[arg-type]
        self.patch(
            _protocol,
            "_DIRECT_NEEDS",
            (*_protocol._DIRECT_NEEDS, "_attribute_a_later_twisted_dropped"),
        )
        p.makeConnection(transport)
        self.addCleanup(transport.connectionLost, Failure(ConnectionError()))
        self.assertIsNone(p._direct)

    @inlineCallbacks
    def test_reply_sent_without_writer_registration(self) -> Test:
        """
        A request/response exchange of one line at a time: each reply is
        sent from C{dataReceived} itself, and the server's socket is never
        registered for writing.
        """
        client = Client()
        server = yield self.connect(echo, client)
        self.assertIs(server._direct, server.transport)
        assert client.transport is not None
        for n in range(20):
            line = b"request %d\r\n" % n
            total = len(client.received) + len(line)
            client.transport.write(line)
            yield client.wait_for(total)
        self.assertEqual(
            bytes(client.received), b"".join(b"request %d\r\n" % n for n in range(20))
        )
        self.assertEqual(self.server_registrations(server), 0)

    @inlineCallbacks
    def quiet_turn(self) -> Test:
        """
        Wait until no reactor turn has a batch sent in it (the end-of-turn
        call of any earlier one has run).
        """
        while _protocol._TURN.reactor is not None:
            yield _turn()

    @inlineCallbacks
    def one_turn(
        self, count: int, script: Callable[[Server], Body] = echo
    ) -> Generator[Any, Any, tuple[list[Client], list[Server]]]:
        """
        Connect C{count} servers running C{script} (by default L{echo}) and
        their clients, wait for a quiet turn, then hand each server a line
        (C{line <n>}) back to back, as the reactor does when one poll
        reports every socket readable.

        @return: The clients and the servers, in the same order.
        """
        clients = [Client() for _ in range(count)]
        servers = []
        for client in clients:
            servers.append((yield self.connect(script, client)))
        yield self.quiet_turn()
        for n, server in enumerate(servers):
            server.dataReceived(b"line %d\r\n" % n)
        return clients, servers

    @inlineCallbacks
    def test_later_batches_of_a_turn_leave_at_its_end(self) -> Test:
        """
        Of the connections that get a chunk in one reactor turn, the first
        sends its reply at the end of its C{dataReceived}; the others leave
        theirs in their transports until the end of the turn, when they go
        out in order, still without a writer registration.
        """
        clients, servers = yield self.one_turn(3)
        first, second, third = (server.transport for server in servers)
        self.assertEqual(first._tempDataLen, 0)  # type: ignore[union-attr]
        self.assertEqual(second._tempDataLen, 8)  # type: ignore[union-attr]
        self.assertEqual(third._tempDataLen, 8)  # type: ignore[union-attr]
        self.assertEqual(_protocol._TURN.waiting, servers[1:])
        for n, client in enumerate(clients):
            yield client.wait_for(8)
            self.assertEqual(bytes(client.received), b"line %d\r\n" % n)
        self.assertEqual(_protocol._TURN.waiting, [])
        for server in servers:
            self.assertEqual(self.server_registrations(server), 0)

    @inlineCallbacks
    def test_drain_leaves_a_small_batch_for_the_end_of_the_turn(self) -> Test:
        """
        A handler that waits on C{drain} after each reply (as a server
        bounding its replies does) gets a fired Deferred while the batch is
        far below the transport's C{bufferSize}, and the batch still waits
        for the end of the turn like the others.
        """
        clients, servers = yield self.one_turn(3, echo_and_drain)
        self.assertEqual([server.drained for server in servers], [[True]] * 3)
        self.assertEqual(servers[1].transport._tempDataLen, 8)  # type: ignore[union-attr]
        self.assertEqual(servers[2].transport._tempDataLen, 8)  # type: ignore[union-attr]
        self.assertEqual(_protocol._TURN.waiting, servers[1:])
        for n, client in enumerate(clients):
            yield client.wait_for(8)
            self.assertEqual(bytes(client.received), b"line %d\r\n" % n)
        for server in servers:
            self.assertEqual(self.server_registrations(server), 0)

    @inlineCallbacks
    def test_drain_after_each_reply_keeps_a_chunk_in_one_send(self) -> Test:
        """
        Pipelined lines answered with C{drain} after each reply (the echo
        example's loop) leave in one C{send()}, as without the drains.
        """
        client = Client()
        server = yield self.connect(echo_and_drain, client)
        transport = server.transport
        assert transport is not None
        sent: list[bytes] = []

        def record(send: Callable[[bytes], int], data: bytes) -> int:
            sent.append(data)
            return send(data)

        transport.socket = _Socket(transport.socket, record)  # type: ignore[attr-defined]
        yield self.quiet_turn()
        lines = b"one\r\ntwo\r\nthree\r\n"
        server.dataReceived(lines)
        yield client.wait_for(len(lines))
        self.assertEqual(bytes(client.received), lines)
        self.assertEqual(sent, [lines])
        self.assertEqual(self.server_registrations(server), 0)

    @inlineCallbacks
    def test_connection_lost_before_its_turn_ends(self) -> Test:
        """
        A connection lost while its batch waits for the end of the turn is
        skipped then: nothing is sent, nothing is registered, nothing fails,
        and the other waiting batches still go out.
        """
        clients, servers = yield self.one_turn(3)
        lost = servers[1].transport
        assert lost is not None
        lost.connectionLost(Failure(ConnectionLost()))  # type: ignore[attr-defined]
        yield clients[2].wait_for(8)
        yield clients[1].lost
        self.assertEqual(bytes(clients[2].received), b"line 2\r\n")
        self.assertEqual(bytes(clients[1].received), b"")
        self.assertEqual(self.server_registrations(servers[1]), 0)

    @inlineCallbacks
    def test_a_cancelled_end_of_turn_call_is_recovered(self) -> Test:
        """
        If the end-of-turn call is cancelled before it runs (trial's janitor
        cancels leftover calls), the batches it was to send go out with the
        next batch sent, and sending goes on as usual.
        """
        clients, servers = yield self.one_turn(2)
        _protocol._TURN.call.cancel()
        yield _turn()
        waiting = servers[1].transport
        self.assertEqual(waiting._tempDataLen, 8)  # type: ignore[union-attr]
        servers[0].dataReceived(b"c\r\n")
        yield clients[1].wait_for(8)
        yield clients[0].wait_for(11)
        self.assertEqual(bytes(clients[0].received), b"line 0\r\nc\r\n")
        self.assertEqual(bytes(clients[1].received), b"line 1\r\n")
        yield self.quiet_turn()
        servers[1].dataReceived(b"d\r\n")
        yield clients[1].wait_for(11)
        for server in servers:
            self.assertEqual(self.server_registrations(server), 0)

    @inlineCallbacks
    def test_partial_send_falls_back_to_the_reactor(self) -> Test:
        """
        A reply larger than the kernel takes at once is sent in part; the
        rest goes out on the reactor's writable events, in order, and a
        reply written while bytes are still queued follows them.
        """
        block = bytes(range(256)) * 512  # 128 KiB

        def script(p: Server) -> Body:
            assert p.transport is not None
            p.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
                socket.SOL_SOCKET, socket.SO_SNDBUF, 16384
            )
            while True:
                line = yield p.read_line()
                if line == b"BIG":
                    for _ in range(32):
                        p.write(block)
                p.write_line(b"END " + line)

        client = Client()
        server = yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"BIG\r\n")
        # Ask for more while most of the 4 MiB reply is still queued.
        yield client.wait_for(1)
        client.transport.write(b"small\r\n")
        expected = block * 32 + b"END BIG\r\nEND small\r\n"
        yield client.wait_for(len(expected))
        self.assertEqual(len(client.received), len(expected))
        self.assertTrue(bytes(client.received) == expected)
        self.assertGreater(self.server_registrations(server), 0)

    @inlineCallbacks
    def test_eagain_falls_back_to_the_reactor(self) -> Test:
        """
        A send that the kernel refuses whole (C{EAGAIN}) leaves the reply
        queued for the reactor, which sends it once the socket is writable.
        """
        client = Client()
        server = yield self.connect(echo, client)
        transport: Any = server.transport
        refused: list[bytes] = []

        def refuse_once(send: Callable[[bytes], int], data: bytes) -> int:
            if not refused:
                refused.append(bytes(data))
                raise BlockingIOError(errno.EAGAIN, "try again")
            return send(data)

        transport.socket = _Socket(transport.socket, refuse_once)
        assert client.transport is not None
        client.transport.write(b"first\r\n")
        yield client.wait_for(len(b"first\r\n"))
        client.transport.write(b"second\r\n")
        yield client.wait_for(len(b"first\r\nsecond\r\n"))
        self.assertEqual(refused, [b"first\r\n"])
        self.assertEqual(bytes(client.received), b"first\r\nsecond\r\n")
        self.assertEqual(self.server_registrations(server), 1)

    @inlineCallbacks
    def test_send_error_is_reported_by_the_reactor(self) -> Test:
        """
        A send that fails (C{EPIPE}) is left for the reactor's own
        C{doWrite()}, which meets the error again and reports it: the
        connection is lost with it, and the handler's pending read is
        cancelled.
        """
        client = Client()
        server = yield self.connect(echo, client)
        transport: Any = server.transport

        def broken(send: Callable[[bytes], int], data: bytes) -> int:
            raise BrokenPipeError(errno.EPIPE, "broken pipe")

        transport.socket = _Socket(transport.socket, broken)
        assert client.transport is not None
        client.transport.write(b"doomed\r\n")
        yield server.when_closed()
        yield client.lost
        assert server.disconnect_reason is not None
        self.assertIsInstance(server.disconnect_reason.value, ConnectionLost)
        self.assertEqual(bytes(client.received), b"")

    @inlineCallbacks
    def test_order_kept_with_transport_writes(self) -> Test:
        """
        Writes through C{self.transport} in the same chunk interleave with
        C{write} and C{write_line} in the order they were made.
        """

        def script(p: Server) -> Body:
            assert p.transport is not None
            while True:
                line = yield p.read_line()
                p.write(b"1:" + line)
                p.transport.write(b" 2:transport")
                p.write_line(b" 3:line")
                p.transport.writeSequence([b"4:", b"sequence\r\n"])

        client = Client()
        yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"a\r\nb\r\n")
        expected = b"".join(
            b"1:%s 2:transport 3:line\r\n4:sequence\r\n" % x for x in (b"a", b"b")
        )
        yield client.wait_for(len(expected))
        self.assertEqual(bytes(client.received), expected)

    @inlineCallbacks
    def test_text_is_rejected_while_batching(self) -> Test:
        """
        Writing C{str} while a chunk is handled raises L{TypeError} in the
        handler, as C{transport.write()} does, and nothing of it is sent.
        """
        errors: list[str] = []

        def script(p: Server) -> Body:
            yield p.read_line()
            for call in (p.write, p.write_line):
                try:
                    call("text")  # type: ignore[arg-type]
                except TypeError:
                    errors.append(call.__name__)
            p.write_line(b"ok")

        client = Client()
        server = yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"go\r\n")
        yield client.lost
        yield server.when_closed()
        self.assertEqual(errors, ["write", "write_line"])
        self.assertEqual(bytes(client.received), b"ok\r\n")

    @inlineCallbacks
    def test_conversation_ending_after_a_write_sends_it(self) -> Test:
        """
        A handler that writes and returns in the same chunk closes the
        connection only after the write has been delivered.
        """

        def script(p: Server) -> Body:
            line = yield p.read_line()
            p.write_line(b"bye " + line)

        client = Client()
        server = yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"alice\r\n")
        yield client.lost
        yield server.when_closed()
        self.assertEqual(bytes(client.received), b"bye alice\r\n")

    @inlineCallbacks
    def test_drain_sees_back_pressure_within_a_chunk(self) -> Test:
        """
        A handler writing 64 KiB blocks with C{drain} between them, all in
        the handling of one chunk, stops when the transport's buffer fills
        (the peer is not reading), and goes on once the peer reads.
        """
        block = b"x" * 65536
        blocks = 256  # 16 MiB: far more than the socket buffers hold
        progress: list[int] = []

        def script(p: Server) -> Body:
            assert p.transport is not None
            p.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
                socket.SOL_SOCKET, socket.SO_SNDBUF, 65536
            )
            yield p.read_line()
            for n in range(blocks):
                p.write(block)
                progress.append(n)
                yield p.drain()
            p.write_line(b"done")

        client = Client()
        server = yield self.connect(script, client)
        assert client.transport is not None
        client.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
            socket.SOL_SOCKET, socket.SO_RCVBUF, 65536
        )
        client.transport.pauseProducing()  # type: ignore[attr-defined]
        client.transport.write(b"go\r\n")
        yield server.paused
        # Paused after a few blocks, not after writing everything.
        self.assertLess(len(progress), blocks // 4)
        client.transport.resumeProducing()  # type: ignore[attr-defined]
        total = len(block) * blocks + len(b"done\r\n")
        yield client.wait_for(total)
        self.assertEqual(len(progress), blocks)
        self.assertEqual(bytes(client.received[-6:]), b"done\r\n")

    @inlineCallbacks
    def test_large_batch_reaches_the_transport_early(self) -> Test:
        """
        A handler writing a lot in one chunk without C{drain} hands it to
        the transport as it goes (past 64 KiB), so the transport's
        back-pressure reaches the protocol before the chunk is done.
        """
        block = b"y" * 65536
        paused_after: list[bool] = []

        def script(p: Server) -> Body:
            assert p.transport is not None
            p.transport.getHandle().setsockopt(  # type: ignore[attr-defined]
                socket.SOL_SOCKET, socket.SO_SNDBUF, 65536
            )
            yield p.read_line()
            for _ in range(16):
                p.write(block)
                paused_after.append(p._write_paused)

        client = Client()
        server = yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"go\r\n")
        yield client.wait_for(len(block) * 16)
        yield server.when_closed()
        self.assertIn(True, paused_after[:-1])


class StartTLSTests(_Loopback):
    """
    A write made just before C{start_tls}, in the same chunk, goes out in
    plaintext ahead of the handshake.
    """

    @inlineCallbacks
    def test_write_before_start_tls_is_plaintext(self) -> Test:
        """
        The server answers STARTTLS with a plaintext line and upgrades in the
        same C{dataReceived}; a plain client reads that line unencrypted,
        starts TLS itself, and gets its next line echoed over TLS.
        """
        certs = certificates()
        server_options = CertificateOptions(
            privateKey=certs.server.key, certificate=certs.server.certificate
        )

        def script(p: Server) -> Body:
            yield p.read_line()
            p.write_line(b"GO AHEAD")
            yield start_tls(p, server_options)
            line = yield p.read_line()
            p.write_line(b"secret " + line)

        client = Client()
        yield self.connect(script, client)
        assert client.transport is not None
        client.transport.write(b"STARTTLS\r\n")
        yield client.wait_for(len(b"GO AHEAD\r\n"))
        self.assertEqual(bytes(client.received), b"GO AHEAD\r\n")
        del client.received[:]
        client.transport.startTLS(  # type: ignore[attr-defined]
            optionsForClientTLS("localhost", trustRoot=certs.ca.twisted_certificate())
        )
        client.transport.write(b"hello\r\n")
        yield client.wait_for(len(b"secret hello\r\n"))
        self.assertEqual(bytes(client.received), b"secret hello\r\n")

    @inlineCallbacks
    def test_tls_listener_uses_the_ordinary_path(self) -> Test:
        """
        Behind a TLS layer (what C{listenSSL} and C{ssl:} endpoints build),
        the protocol's transport is the TLS protocol, which is left alone.
        """
        certs = certificates()
        servers: list[Server] = []

        def build() -> Server:
            servers.append(Server(echo))
            return servers[-1]

        factory = TLSMemoryBIOFactory(
            CertificateOptions(
                privateKey=certs.server.key, certificate=certs.server.certificate
            ),
            False,
            Factory.forProtocol(build),
        )
        port: IListeningPort = yield TCP4ServerEndpoint(
            reactor, 0, interface="127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)
        client = Client()
        client_factory = TLSMemoryBIOFactory(
            optionsForClientTLS("localhost", trustRoot=certs.ca.twisted_certificate()),
            True,
            Factory.forProtocol(lambda: client),
        )
        wrapped = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port),
            client_factory.buildProtocol(None),
        )
        wrapped.write(b"over tls\r\n")
        yield client.wait_for(len(b"over tls\r\n"))
        self.assertEqual(bytes(client.received), b"over tls\r\n")
        server = servers[0]
        self.assertIsNone(server._direct)
        wrapped.loseConnection()
        yield client.lost
        yield server.when_closed()
