"""
Tests for L{txstateproto._tls}: STARTTLS inside a handler, the plaintext
injection rule, peer identity, mutual TLS listeners, client verification and
the L{connect} helper.

The connection tests run over real loopback sockets on 127.0.0.1 (TLS is the
subject), with certificates issued per process by L{tests.certs}; the rest use
in-memory transports.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.certs import CertificateSet, Issued, certificates
from txstateproto import ConnectionState, StateProtocol, coroutine
from txstateproto._tls import (
    PeerIdentity,
    TLSHandshakeError,
    connect,
    mutual_tls_factory,
    peer_identity,
    start_tls,
)

Body = Generator[Any, Any, Any]


class Scripted(StateProtocol):
    """
    A L{StateProtocol} whose handler is a function given to the constructor.
    """

    def __init__(self, script: Callable[[Scripted], Body]) -> None:
        super().__init__()
        self._script = script

    def start(self) -> Body:
        return self._script(self)


def server_options(
    issued: Issued, client_ca: Issued | None = None
) -> CertificateOptions:
    """
    Server TLS options presenting C{issued}, and requiring a client
    certificate signed by C{client_ca} if given.

    Keys and certificates are passed as C{cryptography} objects: pyOpenSSL
    deprecates its own types, which C{PrivateCertificate.options()} uses.
    """
    if client_ca is None:
        return CertificateOptions(privateKey=issued.key, certificate=issued.certificate)
    return CertificateOptions(
        privateKey=issued.key,
        certificate=issued.certificate,
        trustRoot=client_ca.twisted_certificate(),
    )


def client_options(
    certs: CertificateSet, hostname: str = "localhost", client: Issued | None = None
) -> Any:
    """
    Client TLS options trusting the test authority and expecting
    C{hostname}, optionally presenting a client certificate.
    """
    extra = {}
    if client is not None:
        extra = {"privateKey": client.key, "certificate": client.certificate}
    return optionsForClientTLS(
        hostname,
        trustRoot=certs.ca.twisted_certificate(),
        extraCertificateOptions=extra,
    )


class LoopbackMixin:
    """
    Listen on 127.0.0.1 and collect log events; everything is torn down
    by the test's clean-ups.
    """

    def setUp(self) -> None:
        self.certs = certificates()
        self.events: list[LogEvent] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def listen(self, factory: Factory) -> Generator[Any, Any, int]:
        """
        Listen with C{factory} on a free port of 127.0.0.1.

        @return: The port number.
        """
        port: IListeningPort = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
        return port.getHost().port  # type: ignore[attr-defined,no-any-return]

    def tls_events(self, text: str) -> list[LogEvent]:
        """
        The events of the C{txstateproto.tls} namespace whose format
        contains C{text}.
        """
        return [
            e
            for e in self.events
            if e.get("log_namespace") == "txstateproto.tls"
            and text in e.get("log_format", "")
        ]


class StartTLSTests(LoopbackMixin, TestCase):
    """
    L{start_tls} upgrades a running conversation, on both sides.
    """

    timeout = 15

    @defer.inlineCallbacks
    def test_upgrade_both_directions(self) -> Generator[Any, Any, None]:
        """
        A server and a client handler both call start_tls after the
        STARTTLS exchange and then talk over TLS, each seeing the other's
        certificate identity.
        """
        certs = self.certs
        seen: dict[str, Any] = {}

        def server(p: Scripted) -> Body:
            p.write_line(b"220 hello")
            seen["command"] = yield p.read_line()
            p.write_line(b"220 go ahead")
            seen["client identity"] = yield start_tls(
                p, server_options(certs.server, client_ca=certs.ca)
            )
            seen["server encrypted"] = ISSLTransport.providedBy(p.transport)
            line = yield p.read_line()
            p.write_line(b"echo " + line)

        server_factory = Factory.forProtocol(lambda: Scripted(server))
        port = yield self.listen(server_factory)

        def client(p: Scripted) -> Body:
            seen["greeting"] = yield p.read_line()
            p.write_line(b"STARTTLS")
            seen["go ahead"] = yield p.read_line()
            seen["server identity"] = yield start_tls(
                p, client_options(certs, client=certs.client)
            )
            seen["client encrypted"] = ISSLTransport.providedBy(p.transport)
            p.write_line(b"PING")
            seen["echo"] = yield p.read_line()

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        self.assertEqual(seen["greeting"], b"220 hello")
        self.assertEqual(seen["command"], b"STARTTLS")
        self.assertEqual(seen["echo"], b"echo PING")
        self.assertTrue(seen["server encrypted"])
        self.assertTrue(seen["client encrypted"])
        self.assertEqual(seen["server identity"].dns_names, ("localhost",))
        self.assertEqual(seen["client identity"].common_name, "alice")

    @defer.inlineCallbacks
    def test_plaintext_after_starttls_is_discarded(self) -> Generator[Any, Any, None]:
        """
        A line pipelined after STARTTLS in the same packet (C{EVIL}) never
        reaches a read after the upgrade; the discard is logged with the byte
        count and the peer.
        """
        certs = self.certs
        after_upgrade: list[bytes] = []

        def server(p: Scripted) -> Body:
            p.write_line(b"220 hello")
            yield p.read_line()
            p.write_line(b"220 go ahead")
            yield start_tls(p, server_options(certs.server))
            line = yield p.read_line()
            after_upgrade.append(line)
            p.write_line(b"got " + line)

        port = yield self.listen(Factory.forProtocol(lambda: Scripted(server)))
        replies: list[bytes] = []

        def client(p: Scripted) -> Body:
            yield p.read_line()
            p.write(b"STARTTLS\r\nEVIL\r\n")
            yield p.read_line()
            yield start_tls(p, client_options(certs))
            p.write_line(b"HELLO")
            replies.append((yield p.read_line()))

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        client_address = proto.transport.getHost()
        yield proto.when_closed()
        self.assertEqual(after_upgrade, [b"HELLO"])
        self.assertEqual(replies, [b"got HELLO"])
        [event] = self.tls_events("discarded")
        self.assertEqual(event["count"], len(b"EVIL\r\n"))
        self.assertEqual(event["preview"], b"EVIL\r\n")
        self.assertEqual(
            (event["peer"].host, event["peer"].port),
            (client_address.host, client_address.port),
        )

    @defer.inlineCallbacks
    def test_client_discards_plaintext_after_go_ahead(
        self,
    ) -> Generator[Any, Any, None]:
        """
        On the client side too, plaintext sent after the go-ahead reply and
        before the handshake (a man in the middle's injection) is discarded.
        """
        certs = self.certs

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write(b"220 go ahead\r\nEVIL\r\n")
            yield start_tls(p, server_options(certs.server))
            p.write_line(b"WELCOME")
            yield p.read_line()

        port = yield self.listen(Factory.forProtocol(lambda: Scripted(server)))
        lines: list[bytes] = []

        def client(p: Scripted) -> Body:
            p.write_line(b"STARTTLS")
            lines.append((yield p.read_line()))
            yield start_tls(p, client_options(certs))
            lines.append((yield p.read_line()))
            p.write_line(b"BYE")

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        self.assertEqual(lines, [b"220 go ahead", b"WELCOME"])
        [event] = self.tls_events("discarded")
        self.assertEqual(event["count"], len(b"EVIL\r\n"))

    @defer.inlineCallbacks
    def test_hostname_mismatch_raises_at_pending_yield(
        self,
    ) -> Generator[Any, Any, None]:
        """
        A server certificate for another name fails the client's pending
        start_tls with TLSHandshakeError naming the host name check, and
        the handler's finally block runs.
        """
        certs = self.certs

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write_line(b"220 go ahead")
            try:
                yield start_tls(p, server_options(certs.wrong_name))
            except TLSHandshakeError:
                pass

        port = yield self.listen(Factory.forProtocol(lambda: Scripted(server)))
        outcome: list[object] = []

        def client(p: Scripted) -> Body:
            try:
                p.write_line(b"STARTTLS")
                yield p.read_line()
                try:
                    yield start_tls(p, client_options(certs, "localhost"))
                except TLSHandshakeError as e:
                    outcome.append(e)
                    raise
                outcome.append("not refused")
            finally:
                outcome.append("finally")

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        self.assertEqual(len(outcome), 2, outcome)
        error, last = outcome
        self.assertIsInstance(error, TLSHandshakeError)
        self.assertEqual(last, "finally")
        assert isinstance(error, TLSHandshakeError)
        self.assertEqual(type(error.reason).__name__, "VerificationError")
        self.assertIn("does not match the expected host name", str(error))
        self.assertIn("127.0.0.1", str(error))

    @defer.inlineCallbacks
    def test_self_signed_raises_at_pending_yield(self) -> Generator[Any, Any, None]:
        """
        A self-signed server certificate fails the client's pending
        start_tls with TLSHandshakeError (certificate verify failed), and
        the handler's finally block runs.
        """
        certs = self.certs

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write_line(b"220 go ahead")
            try:
                yield start_tls(p, server_options(certs.self_signed))
            except TLSHandshakeError:
                pass

        port = yield self.listen(Factory.forProtocol(lambda: Scripted(server)))
        outcome: list[object] = []

        def client(p: Scripted) -> Body:
            try:
                p.write_line(b"STARTTLS")
                yield p.read_line()
                try:
                    yield start_tls(p, client_options(certs))
                except TLSHandshakeError as e:
                    outcome.append(e)
                    raise
                outcome.append("not refused")
            finally:
                outcome.append("finally")

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        self.assertEqual(len(outcome), 2, outcome)
        error, last = outcome
        self.assertEqual(last, "finally")
        assert isinstance(error, TLSHandshakeError)
        self.assertIsInstance(error.reason, SSL.Error)
        self.assertIn("certificate verify failed", str(error))

    @defer.inlineCallbacks
    def test_starttls_connection_lost_mid_conversation(
        self,
    ) -> Generator[Any, Any, None]:
        """
        A StateProtocol whose STARTTLS connection is lost while its
        conversation waits has the conversation cancelled and fires
        when_closed, with no error escaping from connectionLost.
        """
        certs = self.certs
        servers: list[StateProtocol] = []
        settled: Deferred[None] = Deferred()

        class Server(StateProtocol):
            def start(self) -> Body:
                servers.append(self)
                self.when_closed().addCallback(lambda _: settle())
                yield self.read_line()
                self.write_line(b"220 go ahead")
                yield start_tls(self, server_options(certs.server))
                yield self.read_line()

        def settle() -> None:
            if not settled.called:
                settled.callback(None)

        def observe(event: LogEvent) -> None:
            if event.get("log_failure") is not None:
                settle()

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)  # type: ignore[attr-defined]
        port = yield self.listen(Factory.forProtocol(Server))

        def client(p: Scripted) -> Body:
            p.write_line(b"STARTTLS")
            yield p.read_line()
            yield start_tls(p, client_options(certs))
            p.transport.abortConnection()

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        yield settled
        [server] = servers
        self.assertEqual(server.state, ConnectionState.CLOSED)
        self.assertTrue(server.conversation.called)
        self.assertEqual(self.flushLoggedErrors(), [])


@implementer(IStreamClientEndpoint)
class RecordingEndpoint:
    """
    A client endpoint that notes the local address of the connection it
    makes, so that a test can find that address in the server's log.
    """

    def __init__(self, wrapped: IStreamClientEndpoint) -> None:
        self._wrapped = wrapped
        self.local: Any = None

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        """
        Connect through the wrapped endpoint and note the local address.
        """

        def connected(protocol: Any) -> Any:
            self.local = protocol.transport.getHost()
            return protocol

        return self._wrapped.connect(factory).addCallback(connected)


class MutualTLSTests(LoopbackMixin, TestCase):
    """
    A listener made by L{mutual_tls_factory} accepts only clients whose
    certificate the given authority signed, and hands the verified identity
    to the handler.
    """

    timeout = 15

    @defer.inlineCallbacks
    def listen_mutual(
        self, servers: list[Scripted], script: Callable[[Scripted], Body]
    ) -> Generator[Any, Any, int]:
        """
        Listen on 127.0.0.1 with a mutual TLS listener trusting the test
        authority for client certificates; each handler is noted in
        C{servers} when it starts.

        @return: The port number.
        """

        def build() -> Scripted:
            def started(p: Scripted) -> Body:
                servers.append(p)
                return script(p)

            return Scripted(started)

        factory = mutual_tls_factory(
            Factory.forProtocol(build),
            self.certs.server.private_certificate(),
            self.certs.ca.twisted_certificate(),
        )
        port: int = yield self.listen(factory)
        return port

    def client_endpoint(
        self, port: int, client: Issued | None
    ) -> tuple[IStreamClientEndpoint, RecordingEndpoint]:
        """
        A TLS client endpoint to 127.0.0.1:C{port} that verifies the
        server and presents C{client}'s certificate (if given).

        @return: The TLS endpoint and the TCP endpoint under it.
        """
        tcp = RecordingEndpoint(TCP4ClientEndpoint(reactor, "127.0.0.1", port))
        tls = wrapClientTLS(client_options(self.certs, client=client), tcp)
        return tls, tcp

    @defer.inlineCallbacks
    def test_accepts_client_signed_by_ca(self) -> Generator[Any, Any, None]:
        """
        A client presenting a certificate from the trusted authority is
        served, and the handler reads its verified subject and SAN with
        peer_identity from its first step on.
        """
        seen: list[PeerIdentity | None] = []

        def server(p: Scripted) -> Body:
            identity = peer_identity(p)
            seen.append(identity)
            assert identity is not None
            p.write_line(b"hello " + (identity.common_name or "?").encode())
            yield p.read_line()

        servers: list[Scripted] = []
        port = yield self.listen_mutual(servers, server)
        endpoint, _ = self.client_endpoint(port, self.certs.client)
        replies: list[bytes] = []

        def client(p: Scripted) -> Body:
            replies.append((yield p.read_line()))
            p.write_line(b"BYE")

        proto = yield connect(reactor, endpoint, Scripted(client))
        yield proto.when_closed()
        yield servers[0].when_closed()
        self.assertEqual(replies, [b"hello alice"])
        [identity] = seen
        assert identity is not None
        self.assertEqual(identity.subject, "CN=alice,O=txstateproto tests")
        self.assertEqual(identity.common_name, "alice")
        self.assertEqual(identity.dns_names, ("alice.clients.test",))
        self.assertEqual(
            identity.issuer, "CN=txstateproto test CA,O=txstateproto tests"
        )
        self.assertEqual(
            identity.sha256_fingerprint,
            self.certs.client.certificate.fingerprint(hashes.SHA256()).hex(),
        )

    @defer.inlineCallbacks
    def refused(self, client: Issued | None) -> Generator[Any, Any, str]:
        """
        Connect to a mutual TLS listener presenting C{client} (or no
        certificate) and check the refusal: the server's handler never
        starts, the client reads nothing, and the server logs a warning
        naming the client's address and the reason.

        @return: The reason as logged.
        """
        refusal: Deferred[LogEvent] = Deferred()

        def observe(event: LogEvent) -> None:
            if (
                event.get("log_namespace") == "txstateproto.tls"
                and "refused" in event.get("log_format", "")
                and not refusal.called
            ):
                refusal.callback(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)  # type: ignore[attr-defined]
        servers: list[Scripted] = []
        port = yield self.listen_mutual(servers, lambda p: p.read_line())
        endpoint, tcp = self.client_endpoint(port, client)
        received: list[bytes] = []

        def reader(p: Scripted) -> Body:
            received.append((yield p.read_line()))

        # Under TLS 1.3 the client's handshake completes before the server
        # has checked the client's certificate, so connect() may succeed and
        # the refusal then arrives as the loss of the connection; under
        # TLS 1.2 connect() itself fails. Either way the reason is OpenSSL's
        # alert.
        try:
            proto = yield connect(reactor, endpoint, Scripted(reader))
        except TLSHandshakeError as e:
            reason = e.reason
        else:
            yield proto.when_closed()
            assert proto.disconnect_reason is not None
            reason = proto.disconnect_reason.value
        event = yield refusal
        self.assertEqual(servers, [])
        self.assertEqual(received, [])
        self.assertIsInstance(reason, SSL.Error)
        self.assertEqual(event["log_level"], LogLevel.warn)
        self.assertEqual(
            (event["peer"].host, event["peer"].port),
            (tcp.local.host, tcp.local.port),
        )
        self.assertIn(f"port={tcp.local.port}", formatEvent(event))
        error: str = event["error"]
        return error

    @defer.inlineCallbacks
    def test_refuses_client_without_certificate(self) -> Generator[Any, Any, None]:
        """
        A client that presents no certificate is refused during the
        handshake, never reaches the handler, and the refusal is logged with
        its address.
        """
        error = yield self.refused(None)
        self.assertIn("did not return a certificate", error)

    @defer.inlineCallbacks
    def test_refuses_client_from_other_ca(self) -> Generator[Any, Any, None]:
        """
        A client whose certificate another authority signed is refused
        during the handshake, never reaches the handler, and the refusal is
        logged with its address.
        """
        error = yield self.refused(self.certs.other_client)
        self.assertIn("certificate verify failed", error)

    def test_needs_an_authority(self) -> None:
        """
        mutual_tls_factory refuses an empty list of client authorities
        rather than building a listener that verifies nothing.
        """
        with self.assertRaises(ValueError) as caught:
            mutual_tls_factory(
                Factory.forProtocol(StateProtocol),
                self.certs.server.private_certificate(),
                [],
            )
        self.assertIn("client_ca", str(caught.exception))


class TLSEndpointClientTests(LoopbackMixin, TestCase):
    """
    L{connect} over a C{tls:host=...:port=...} endpoint string verifies the
    server's certificate and host name (service_identity) before the
    client's handler starts, and reports a refusal at the caller's pending
    C{yield}.
    """

    timeout = 15

    @defer.inlineCallbacks
    def listen_tls(
        self,
        issued: Issued,
        servers: list[Scripted],
        script: Callable[[Scripted], Body],
    ) -> Generator[Any, Any, int]:
        """
        Listen with TLS on 127.0.0.1 presenting C{issued}; each server
        protocol is noted in C{servers}.

        @return: The port number.
        """

        def build() -> Scripted:
            p = Scripted(script)
            servers.append(p)
            return p

        factory = TLSMemoryBIOFactory(
            server_options(issued), False, Factory.forProtocol(build)
        )
        port: int = yield self.listen(factory)
        return port

    def endpoint(self, port: int) -> str:
        """
        The client endpoint string for a TLS connection to C{localhost} on
        C{port}, trusting only the test authority.
        """
        return f"tls:host=localhost:port={port}:trustRoots={self.certs.ca_dir}"

    @defer.inlineCallbacks
    def test_verified_server(self) -> Generator[Any, Any, None]:
        """
        A server presenting a certificate for localhost from the trusted
        authority is accepted; the client's handler starts on the verified
        connection and sees the server's identity.
        """

        def server(p: Scripted) -> Body:
            line = yield p.read_line()
            p.write_line(b"echo " + line)

        servers: list[Scripted] = []
        port = yield self.listen_tls(self.certs.server, servers, server)
        seen: list[object] = []

        def client(p: Scripted) -> Body:
            identity = peer_identity(p)
            assert identity is not None
            seen.append(identity.dns_names)
            p.write_line(b"PING")
            seen.append((yield p.read_line()))

        proto = yield connect(reactor, self.endpoint(port), Scripted(client))
        yield proto.when_closed()
        yield servers[0].when_closed()
        self.assertEqual(seen, [("localhost",), b"echo PING"])

    @defer.inlineCallbacks
    def refused(self, issued: Issued) -> Generator[Any, Any, TLSHandshakeError]:
        """
        Connect, from inside a coroutine handler, to a TLS server presenting
        C{issued}, and check that the refusal is raised at that handler's
        pending C{yield}, that its C{finally} block runs, and that the
        client protocol's own handler never starts.

        @return: The error raised at the C{yield}.
        """
        servers: list[Scripted] = []
        port = yield self.listen_tls(issued, servers, lambda p: p.read_line())
        started: list[Scripted] = []
        outcome: list[object] = []

        def client(p: Scripted) -> Body:
            started.append(p)
            yield p.read_line()

        @coroutine
        def session() -> Body:
            try:
                try:
                    yield connect(reactor, self.endpoint(port), Scripted(client))
                except TLSHandshakeError as e:
                    outcome.append(e)
                    raise
                outcome.append("not refused")
            finally:
                outcome.append("finally")

        raised = yield session().addErrback(lambda f: f.value)
        for server in servers:
            yield server.when_closed()
        self.assertEqual(len(outcome), 2, outcome)
        error, last = outcome
        self.assertEqual(last, "finally")
        assert isinstance(error, TLSHandshakeError)
        self.assertIs(raised, error)
        self.assertEqual(started, [])
        self.assertIn("127.0.0.1", str(error))
        return error

    @defer.inlineCallbacks
    def test_hostname_mismatch(self) -> Generator[Any, Any, None]:
        """
        A certificate from the trusted authority for another host name is
        refused by service_identity with a TLSHandshakeError saying so.
        """
        error = yield self.refused(self.certs.wrong_name)
        self.assertEqual(type(error.reason).__name__, "VerificationError")
        self.assertIn("does not match the expected host name", str(error))
        self.assertIn("localhost", str(error))

    @defer.inlineCallbacks
    def test_self_signed(self) -> Generator[Any, Any, None]:
        """
        A self-signed certificate for the right host name is refused with a
        TLSHandshakeError saying that verification failed.
        """
        error = yield self.refused(self.certs.self_signed)
        self.assertIsInstance(error.reason, SSL.Error)
        self.assertIn("certificate verify failed", str(error))
