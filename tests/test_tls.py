"""
Tests for L{txstateproto._tls}: STARTTLS inside a handler, the plaintext
injection rule, peer identity, mutual TLS listeners, client verification and
the L{connect} helper.

The connection tests run over real loopback sockets on 127.0.0.1 (TLS is the
subject), with certificates issued per process by L{tests.certs}; the rest use
in-memory transports.
"""

from __future__ import annotations

import ipaddress
import warnings
from collections.abc import Callable, Generator
from typing import Any

from cryptography.hazmat.primitives import hashes
from OpenSSL import SSL
from twisted.internet import defer, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    clientFromString,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
    ITLSTransport,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions, optionsForClientTLS
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
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
from txstateproto.testing import ProtocolHarness

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
        reaches a read after the upgrade; the discard is logged as a warning
        with the byte count and the peer.
        """
        certs = self.certs
        after_upgrade: list[bytes] = []
        identities: list[object] = []

        def server(p: Scripted) -> Body:
            p.write_line(b"220 hello")
            yield p.read_line()
            p.write_line(b"220 go ahead")
            identities.append((yield start_tls(p, server_options(certs.server))))
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
        # The client presented no certificate.
        self.assertEqual(identities, [None])
        [event] = self.tls_events("discarded")
        self.assertEqual(event["log_level"], LogLevel.warn)
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
        self,
        servers: list[Scripted],
        script: Callable[[Scripted], Body],
        client_ca: Any = None,
    ) -> Generator[Any, Any, int]:
        """
        Listen on 127.0.0.1 with a mutual TLS listener trusting C{client_ca}
        (by default the test authority) for client certificates; each
        handler is noted in C{servers} when it starts.

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
            client_ca or self.certs.ca.twisted_certificate(),
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
        served over TLS 1.2 or later (Twisted's default minimum), and the
        handler reads its verified subject and SAN with peer_identity from
        its first step on.
        """
        seen: list[PeerIdentity | None] = []
        versions: list[str] = []

        def server(p: Scripted) -> Body:
            identity = peer_identity(p)
            seen.append(identity)
            versions.append(p.transport.getHandle().get_protocol_version_name())
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
        [version] = versions
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
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

    @defer.inlineCallbacks
    def test_any_of_several_authorities(self) -> Generator[Any, Any, None]:
        """
        A mutual TLS listener given a list of authorities accepts a client
        certificate signed by any of them.
        """
        seen: list[str | None] = []

        def server(p: Scripted) -> Body:
            identity = peer_identity(p)
            seen.append(identity.common_name if identity else None)
            yield p.read_line()

        def client(p: Scripted) -> Body:
            p.write_line(b"BYE")
            yield p.read_line()

        servers: list[Scripted] = []
        authorities = [
            self.certs.ca.twisted_certificate(),
            self.certs.other_ca.twisted_certificate(),
        ]
        port = yield self.listen_mutual(servers, server, authorities)
        for issued in (self.certs.client, self.certs.other_client):
            endpoint, _ = self.client_endpoint(port, issued)
            proto = yield connect(reactor, endpoint, Scripted(client))
            yield proto.when_closed()
        for protocol in servers:
            yield protocol.when_closed()
        self.assertEqual(seen, ["alice", "mallory"])

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
            seen.append(peer_identity(p))
            p.write_line(b"PING")
            seen.append((yield p.read_line()))

        proto = yield connect(reactor, self.endpoint(port), Scripted(client))
        yield proto.when_closed()
        yield servers[0].when_closed()
        identity, echo = seen
        self.assertEqual(echo, b"echo PING")
        assert isinstance(identity, PeerIdentity)
        certificate = self.certs.server.certificate
        self.assertEqual(identity.subject, "CN=localhost,O=txstateproto tests")
        self.assertEqual(identity.dns_names, ("localhost",))
        self.assertEqual(
            identity.ip_addresses,
            (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")),
        )
        self.assertEqual((identity.uris, identity.email_addresses), ((), ()))
        self.assertEqual(identity.serial_number, certificate.serial_number)

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

    @defer.inlineCallbacks
    def test_without_connect_handler_runs_before_verification(
        self,
    ) -> Generator[Any, Any, None]:
        """
        With Twisted's plain connectProtocol instead of connect(), start()
        runs before the handshake; a refused server then cancels the pending
        read (the handler's finally runs) and disconnect_reason holds the
        verification error, which is why connect() exists.
        """
        servers: list[Scripted] = []
        port = yield self.listen_tls(
            self.certs.wrong_name, servers, lambda p: p.read_line()
        )
        outcome: list[object] = []

        def client(p: Scripted) -> Body:
            outcome.append(peer_identity(p))
            try:
                yield p.read_line()
            except defer.CancelledError:
                outcome.append("cancelled")
            finally:
                outcome.append("finally")

        endpoint = clientFromString(reactor, self.endpoint(port))
        proto = yield connectProtocol(endpoint, Scripted(client))
        yield proto.when_closed()
        for server in servers:
            yield server.when_closed()
        self.assertEqual(outcome, [None, "cancelled", "finally"])
        assert proto.disconnect_reason is not None
        reason = proto.disconnect_reason.value
        self.assertEqual(type(reason).__name__, "VerificationError")


class StartTLSOutcomeTests(LoopbackMixin, TestCase):
    """
    How a pending L{start_tls} ends when the handshake does not complete:
    timeout, cancel, an uncaught failure, a closed connection.
    """

    timeout = 15

    @defer.inlineCallbacks
    def stalled_handshake(
        self, server: Callable[[Scripted], Body], act: Callable[[Scripted], None]
    ) -> Generator[Any, Any, None]:
        """
        Run C{server} against a client that asks for STARTTLS and then never
        starts the handshake; once the client has read the go-ahead (so the
        server is waiting in start_tls), call C{act} with the server
        protocol, whose clock is a L{task.Clock}. Return when both sides
        have closed.
        """
        servers: list[Scripted] = []

        def build() -> Scripted:
            p = Scripted(server)
            p.clock = task.Clock()
            servers.append(p)
            return p

        port = yield self.listen(Factory.forProtocol(build))

        def client(p: Scripted) -> Body:
            p.write_line(b"STARTTLS")
            yield p.read_line()
            act(servers[0])
            yield p.read_line()

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        yield servers[0].when_closed()

    @defer.inlineCallbacks
    def test_timeout_fails_the_wait_and_aborts(self) -> Generator[Any, Any, None]:
        """
        A handshake that has not completed within C{timeout} seconds of the
        protocol's clock fails the pending start_tls with TimeoutError and
        aborts the connection.
        """
        certs = self.certs
        outcome: list[object] = []

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write_line(b"220 go ahead")
            try:
                yield start_tls(p, server_options(certs.server), timeout=30)
            except defer.TimeoutError as e:
                outcome.append(e)

        def act(p: Scripted) -> None:
            clock = p.clock
            assert isinstance(clock, task.Clock)
            clock.advance(29)
            outcome.append("waiting" if not p.conversation.called else "ended")
            clock.advance(1)

        servers: list[Scripted] = []

        def act_and_note(p: Scripted) -> None:
            servers.append(p)
            act(p)

        yield self.stalled_handshake(server, act_and_note)
        self.assertEqual(len(outcome), 2, outcome)
        self.assertEqual(outcome[0], "waiting")
        self.assertIsInstance(outcome[1], defer.TimeoutError)
        self.assertIn("30 seconds", str(outcome[1]))
        [server_protocol] = servers
        assert server_protocol.disconnect_reason is not None
        self.assertTrue(server_protocol.disconnect_reason.check(ConnectionLost))

    @defer.inlineCallbacks
    def test_cancel_aborts_the_connection(self) -> Generator[Any, Any, None]:
        """
        Cancelling the conversation while it waits in start_tls raises
        CancelledError at the yield and aborts the connection, which cannot
        go back to plaintext.
        """
        certs = self.certs
        outcome: list[object] = []

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write_line(b"220 go ahead")
            try:
                yield start_tls(p, server_options(certs.server))
            except defer.CancelledError as e:
                outcome.append(e)

        servers: list[Scripted] = []

        def act(p: Scripted) -> None:
            servers.append(p)
            assert p.conversation is not None
            p.conversation.cancel()

        yield self.stalled_handshake(server, act)
        [error] = outcome
        self.assertIsInstance(error, defer.CancelledError)
        [server_protocol] = servers
        assert server_protocol.disconnect_reason is not None
        self.assertTrue(server_protocol.disconnect_reason.check(ConnectionLost))

    @defer.inlineCallbacks
    def test_uncaught_failure_is_logged_as_warning(
        self,
    ) -> Generator[Any, Any, None]:
        """
        A TLSHandshakeError the handler does not catch ends the conversation
        and is logged as a warning naming the peer and the reason, without a
        traceback.
        """
        certs = self.certs

        def server(p: Scripted) -> Body:
            yield p.read_line()
            p.write_line(b"220 go ahead")
            yield start_tls(p, server_options(certs.server))

        servers: list[Scripted] = []

        def build() -> Scripted:
            p = Scripted(server)
            servers.append(p)
            return p

        port = yield self.listen(Factory.forProtocol(build))

        def client(p: Scripted) -> Body:
            p.write_line(b"STARTTLS")
            yield p.read_line()
            # Trust another authority: the client refuses the server.
            options = optionsForClientTLS(
                "localhost", trustRoot=certs.other_ca.twisted_certificate()
            )
            try:
                yield start_tls(p, options)
            except TLSHandshakeError:
                pass

        proto = yield connect(reactor, f"tcp:127.0.0.1:{port}", Scripted(client))
        yield proto.when_closed()
        yield servers[0].when_closed()
        warnings = [
            e
            for e in self.events
            if e.get("log_namespace") == "txstateproto"
            and e.get("log_level") == LogLevel.warn
            and e.get("protocol") == "Scripted"
            and e.get("peer") == servers[0].transport.getPeer()
        ]
        self.assertEqual(len(warnings), 1, warnings)
        [event] = warnings
        self.assertEqual(event["error_type"], TLSHandshakeError)
        self.assertIn("TLS handshake with", event["error"])
        self.assertIsNone(event.get("log_failure"))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_not_connected(self) -> Deferred[None]:
        """
        start_tls on a connection that is not open fails at once with
        ConnectionDone naming the state.
        """
        d = start_tls(Scripted(lambda p: iter(())), server_options(self.certs.server))
        failure = self.failureResultOf(d, ConnectionDone)
        self.assertIn("not connected", str(failure.value))
        return defer.succeed(None)


class ConnectCancelTests(LoopbackMixin, TestCase):
    """
    Cancelling L{connect}'s Deferred before the handshake has completed
    gives up the connection.
    """

    timeout = 15

    @defer.inlineCallbacks
    def cancel_when(self, moment: str) -> Generator[Any, Any, None]:
        """
        Connect over TLS to a server that never answers the handshake, and
        cancel when the server has accepted the connection (C{"accepted"})
        or has received the client's first handshake bytes (C{"hello"}).
        Check that connect() fails with CancelledError, the connection is
        closed and the client's handler never starts.
        """
        accepted: Deferred[Scripted] = Deferred()
        hello: Deferred[Scripted] = Deferred()

        def silent(p: Scripted) -> Body:
            accepted.callback(p)
            yield p.read_some(65536)
            hello.callback(p)
            while True:
                yield p.read_some(65536)

        port = yield self.listen(Factory.forProtocol(lambda: Scripted(silent)))
        started: list[Scripted] = []

        def client(p: Scripted) -> Body:
            started.append(p)
            yield p.read_line()

        endpoint = f"tls:host=localhost:port={port}:trustRoots={self.certs.ca_dir}"
        d = connect(reactor, endpoint, Scripted(client))
        server = yield {"accepted": accepted, "hello": hello}[moment]
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)
        yield server.when_closed()
        self.assertEqual(started, [])

    def test_cancel_while_connecting(self) -> Deferred[None]:
        """
        Cancelled as soon as the server has accepted (the client's side of
        the connection may not be complete yet), connect() fails with
        CancelledError and leaves no connection behind.
        """
        return self.cancel_when("accepted")

    def test_cancel_during_handshake(self) -> Deferred[None]:
        """
        Cancelled once the client's handshake has begun, connect() fails
        with CancelledError, the connection is aborted, and the handler
        never starts.
        """
        return self.cancel_when("hello")


class PeerIdentityTests(SynchronousTestCase):
    """
    L{peer_identity} on a connection without TLS.
    """

    def test_plaintext_connection_has_none(self) -> None:
        """
        peer_identity returns None for a connection that is not encrypted.
        """
        harness = ProtocolHarness(Scripted(lambda p: p.read_line()))
        self.assertIsNone(peer_identity(harness.protocol))


class PyOpenSSLTypesTests(SynchronousTestCase):
    """
    Pin the premise of docs/tls.md's advice to pass C{cryptography} objects:
    Twisted's own ways of loading PEM files hand pyOpenSSL's deprecated
    types to OpenSSL. If this test fails, Twisted has stopped doing so and
    that section (and the conversion in mutual_tls_factory) can go.
    """

    def test_private_certificate_options_warn(self) -> None:
        """
        TLS options from PrivateCertificate.options(), from an ssl: server
        endpoint string, and for a tls: client endpoint string's
        certificate= and privateKey= (optionsForClientTLS with a
        PrivateCertificate) emit a DeprecationWarning when first used.
        """
        server = certificates().server
        from_certificate = server.private_certificate().options()
        endpoint = serverFromString(
            reactor,
            f"ssl:0:interface=127.0.0.1:privateKey={server.key_path}"
            f":certKey={server.cert_path}",
        )
        # The endpoint builds its options at parse time and keeps them here.
        from_string = endpoint._sslContextFactory  # type: ignore[attr-defined]
        client = optionsForClientTLS(
            "localhost",
            trustRoot=certificates().ca.twisted_certificate(),
            clientCertificate=certificates().client.private_certificate(),
        )
        uses = [
            from_certificate.getContext,
            from_string.getContext,
            lambda: client.clientConnectionForTLS(
                TLSMemoryBIOFactory(
                    client, True, Factory.forProtocol(Protocol)
                ).buildProtocol(IPv4Address("TCP", "127.0.0.1", 0))
            ),
        ]
        for use in uses:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                use()
            self.assertIn(DeprecationWarning, [w.category for w in caught], use)


@implementer(ITLSTransport)
class FakeTLSTransport(StringTransport):
    """
    An in-memory transport that accepts startTLS and notes the options
    (no handshake ever happens).
    """

    tls_options: object = None

    def startTLS(self, options: object) -> None:
        self.tls_options = options


class StartTLSInMemoryTests(SynchronousTestCase):
    """
    What start_tls does to the protocol's receive side, on an in-memory
    transport.
    """

    def test_discard_resumes_paused_reading(self) -> None:
        """
        If reading from the transport was paused because too much plaintext
        was buffered, discarding it in start_tls resumes reading, so the
        handshake's bytes can arrive.
        """
        clock = task.Clock()
        options = object()
        waits: list[Deferred[Any]] = []

        def script(p: Scripted) -> Body:
            yield p.read_line()
            yield p.sleep(1)
            waits.append(start_tls(p, options))
            yield waits[0]

        protocol = Scripted(script)
        protocol.clock = clock
        transport = FakeTLSTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"STARTTLS\r\n" + b"x" * (protocol.receive_high_water + 1)
        )
        self.assertEqual(transport.producerState, "paused")
        clock.advance(1)
        self.assertIs(transport.tls_options, options)
        self.assertEqual(transport.producerState, "producing")
        self.assertNoResult(waits[0])
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(protocol.when_closed())
