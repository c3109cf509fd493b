"""
TLS for L{StateProtocol} connections: STARTTLS as a step of the state
machine, the verified peer's identity, a listener that requires client
certificates, and a client connector that starts the handler only on a
verified connection.

This module owns L{start_tls}, L{peer_identity}, L{PeerIdentity},
L{TLSHandshakeError}, L{mutual_tls_factory} and L{connect}. It uses Twisted's
own TLS machinery (L{ITLSTransport.startTLS}, L{TLSMemoryBIOFactory},
L{CertificateOptions}, C{optionsForClientTLS} and service_identity for host
names) and adds no cryptography of its own. It may import only
L{txstateproto._protocol} and L{txstateproto._errors} from the package, and
must not know the twistd plugin or any framing.

How the end of a handshake is observed
======================================

Twisted announces a completed handshake in one public way: the TLS layer
(L{TLSMemoryBIOProtocol}) calls C{handshakeCompleted()} on the protocol it
wraps if that protocol provides L{IHandshakeListener}. The private flag
C{_handshakeDone} and C{getPeerCertificate()} polling are not used.

  - L{start_tls} declares L{IHandshakeListener} on the protocol instance and
    gives it a C{handshakeCompleted} for the duration of the handshake
    (chaining to the class's own, if it has one). When a wrapper sits between
    the transport and the protocol (Twisted's client endpoints add one), the
    wrapper must pass the call on: Twisted's endpoint wrapper has the method
    but declares the interface only if the protocol provided it when the
    connection was made, so L{start_tls} declares it on that wrapper too.
    StateProtocol does not provide the interface itself; see the report for
    issue 8 on adding it there.
  - L{mutual_tls_factory} and L{connect} put a small gate
    (L{_HandshakeGate}) between the TLS layer and the protocol: the protocol
    is connected, and so its conversation started, only once the handshake
    has completed. A refused peer never reaches the handler.

Twisted releases before 25 call C{handshakeCompleted()} even when host name
verification failed (the info callback aborts the connection and the
handshake still returns); the abort has already set the TLS layer's
C{disconnecting}, so a completion on a disconnecting layer is ignored and the
connection loss that follows reports the verification error.

The STARTTLS injection rule
===========================

Bytes the peer sent in plaintext after the STARTTLS command and before the
handshake are in the protocol's receive buffer when the handler calls
L{start_tls} (a peer, or a man in the middle, can pipeline them in the same
packet as the command). They are discarded and the discard is logged, so
that nothing injected in plaintext is ever returned by a read after the
upgrade. Once C{startTLS} has been called, every byte goes through the TLS
layer. This needs the protocol's private receive buffer (C{_buffer}), and
its C{_check_buffer_pressure()} to resume reading if the discarded bytes
had paused it: see the report for issue 8 on giving StateProtocol a public
method for both.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast, final

import attrs
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    IHandshakeListener,
    ILoggingContext,
    IProtocol,
    IProtocolFactory,
    ISSLTransport,
    IStreamClientEndpoint,
    ITLSTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    trustRootFromCertificates,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer, noLongerProvides

from txstateproto._errors import ProtocolError
from txstateproto._protocol import ConnectionState, StateProtocol

if TYPE_CHECKING:
    from OpenSSL.crypto import X509
    from twisted.internet.interfaces import IDelayedCall

__all__ = [
    "PeerIdentity",
    "TLSHandshakeError",
    "connect",
    "mutual_tls_factory",
    "peer_identity",
    "start_tls",
]

_log = Logger(namespace="txstateproto.tls")

_P = TypeVar("_P", bound=StateProtocol)

_IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# -- errors -------------------------------------------------------------------


class TLSHandshakeError(ProtocolError):
    """
    The TLS handshake did not complete: the peer's certificate was refused
    (not signed by a trusted authority, self-signed, issued for another host
    name, missing when required), the peer refused ours, or the connection
    closed during the handshake.

    Raised at the C{yield} of a pending L{start_tls} and as the failure of
    L{connect}. The connection is closed by then; there is nothing to retry
    on it. A handler that lets it propagate has it logged as a warning with
    the peer's address, as for any L{ProtocolError}.

    @ivar peer: The peer's address, as text.
    @ivar reason: The underlying exception: an L{OpenSSL.SSL.Error}, a
        C{service_identity.VerificationError} (host name mismatch), or the
        connection's loss (L{twisted.internet.error.ConnectionDone} and
        relatives).
    """

    def __init__(self, peer: str, reason: BaseException) -> None:
        self.peer = peer
        self.reason = reason
        super().__init__(f"TLS handshake with {peer} failed: {_describe(reason)}")


def _describe(reason: BaseException) -> str:
    """
    Say in a few words what went wrong in a handshake.
    """
    if isinstance(reason, SSL.Error):
        # OpenSSL's error queue: a list of (library, function, reason).
        entries = reason.args[0] if reason.args else None
        if isinstance(entries, list) and entries:
            texts = [str(e[-1]) for e in entries if isinstance(e, tuple) and e]
            if texts:
                return "; ".join(texts)
        return str(reason) or type(reason).__name__
    if type(reason).__name__ == "VerificationError":
        # service_identity: the certificate is valid but for another name.
        return f"the certificate does not match the expected host name ({reason})"
    if isinstance(reason, ConnectionDone):
        return "the connection closed before the handshake completed"
    return f"{type(reason).__name__}: {reason}"


# -- the peer's identity --------------------------------------------------------


@final
@attrs.frozen
class PeerIdentity:
    """
    Who the peer's certificate says it is.

    Obtained from L{peer_identity} or L{start_tls}, and only as trustworthy
    as the TLS options that accepted the certificate: a client using
    C{optionsForClientTLS} has verified the chain and the host name; a
    listener made by L{mutual_tls_factory} has verified that an accepted
    authority signed it. Compare it with your access rules; never act on
    an identity from options that verify nothing.

    @ivar subject: The subject distinguished name, RFC 4514 text
        (C{"CN=alice,O=Example"}).
    @ivar common_name: The subject's (most specific) common name, or
        C{None} if it has none.
    @ivar dns_names: The DNS names of the subject alternative names.
    @ivar ip_addresses: The IP addresses of the subject alternative names.
    @ivar uris: The URIs of the subject alternative names (SPIFFE IDs and
        the like).
    @ivar email_addresses: The e-mail addresses of the subject alternative
        names.
    @ivar issuer: The issuer's distinguished name, RFC 4514 text.
    @ivar serial_number: The certificate's serial number.
    @ivar sha256_fingerprint: The SHA-256 digest of the certificate's DER
        form, in lower-case hex (for pinning).
    """

    subject: str
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[_IPAddress, ...]
    uris: tuple[str, ...]
    email_addresses: tuple[str, ...]
    issuer: str
    serial_number: int
    sha256_fingerprint: str

    @classmethod
    def from_certificate(cls, certificate: x509.Certificate) -> PeerIdentity:
        """
        Read the identity out of a certificate.

        @param certificate: A C{cryptography} certificate.
        @return: Its identity.
        """
        names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = _text(names[-1].value) if names else None
        try:
            san = certificate.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            san = x509.SubjectAlternativeName([])
        return cls(
            subject=certificate.subject.rfc4514_string(),
            common_name=common_name,
            dns_names=tuple(san.get_values_for_type(x509.DNSName)),
            ip_addresses=tuple(
                a
                for a in san.get_values_for_type(x509.IPAddress)
                if isinstance(a, (ipaddress.IPv4Address, ipaddress.IPv6Address))
            ),
            uris=tuple(san.get_values_for_type(x509.UniformResourceIdentifier)),
            email_addresses=tuple(san.get_values_for_type(x509.RFC822Name)),
            issuer=certificate.issuer.rfc4514_string(),
            serial_number=certificate.serial_number,
            sha256_fingerprint=certificate.fingerprint(hashes.SHA256()).hex(),
        )


def _reason_of(reason: Failure | None) -> BaseException:
    """
    The exception inside a connection-loss reason.
    """
    if reason is None or reason.value is None:
        return ConnectionDone()
    return reason.value


def _text(value: str | bytes) -> str:
    """
    A name attribute's value as text (a few encodings give bytes).
    """
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def peer_identity(protocol: IProtocol) -> PeerIdentity | None:
    """
    Return the identity in the certificate the peer presented on this
    connection.

    Call it once the handshake has completed: after L{start_tls}'s Deferred
    fired, or anywhere in the handler of a connection made by L{connect} or
    accepted by a L{mutual_tls_factory} listener (they start the handler only
    then). The certificate has been verified only if the connection's TLS
    options verify certificates (see L{PeerIdentity}).

    @param protocol: A connected protocol (usually a L{StateProtocol}).
    @return: The identity, or C{None} if the connection is not encrypted or
        the peer presented no certificate (a client of a listener that does
        not ask for one).
    """
    transport = getattr(protocol, "transport", None)
    if transport is None or not (
        ISSLTransport.providedBy(transport)
        or isinstance(transport, TLSMemoryBIOProtocol)
    ):
        return None
    # ISSLTransport declares it as returning object; Twisted returns
    # pyOpenSSL's X509.
    certificate = cast("X509 | None", transport.getPeerCertificate())
    if certificate is None:
        return None
    return PeerIdentity.from_certificate(certificate.to_cryptography())


def _peer(protocol: IProtocol) -> object:
    """
    The peer's address, for logs (or a placeholder if it cannot be had).
    """
    transport = getattr(protocol, "transport", None)
    try:
        return transport.getPeer() if transport is not None else "<unknown>"
    except Exception:
        return "<unknown>"


# -- STARTTLS -------------------------------------------------------------------


@final
class _HandshakeWatch:
    """
    One STARTTLS handshake in progress on a L{StateProtocol}: the Deferred
    L{start_tls} returned, the optional timer, and the hook that makes
    Twisted's C{handshakeCompleted()} reach it.
    """

    __slots__ = (
        "_added_interface",
        "_chained",
        "_layer",
        "_protocol",
        "_timer",
        "deferred",
    )

    def __init__(self, protocol: StateProtocol) -> None:
        self._protocol: StateProtocol | None = protocol
        self._layer: object = None
        self._timer: IDelayedCall | None = None
        self.deferred: Deferred[PeerIdentity | None] = Deferred(self._cancel)
        # Hook into the protocol for the duration of the handshake.
        self._chained: Callable[[], object] | None = getattr(
            protocol, "handshakeCompleted", None
        )
        self._added_interface = not IHandshakeListener.providedBy(protocol)
        if self._added_interface:
            alsoProvides(protocol, IHandshakeListener)
        protocol.handshakeCompleted = self._completed  # type: ignore[attr-defined]
        protocol.when_closed().addCallback(self._closed)

    def started(self, layer: object, timeout: float | None) -> None:
        """
        Note the TLS layer that was put in place, and arm the timeout.
        """
        self._layer = layer
        protocol = self._protocol
        if timeout is not None and protocol is not None and not self.deferred.called:
            self._timer = protocol.clock.callLater(timeout, self._timed_out, timeout)

    def _completed(self) -> None:
        """
        Twisted's C{handshakeCompleted()}: fire with the peer's identity.
        """
        chained = self._chained
        protocol = self._protocol
        if protocol is None or getattr(self._layer, "disconnecting", False):
            # Already settled, or a verification failure aborted the
            # connection (older Twisted): connectionLost reports it.
            if chained is not None:
                chained()
            return
        self._unhook()
        identity = peer_identity(protocol)
        _log.info(
            "{protocol} TLS started with {peer} ({identity})",
            protocol=type(protocol).__qualname__,
            peer=_peer(protocol),
            identity=identity,
        )
        self.deferred.callback(identity)
        if chained is not None:
            chained()

    def _lost_error(self) -> BaseException:
        """
        The error for a handshake whose connection is gone.
        """
        protocol = self._protocol
        assert protocol is not None
        reason = protocol.disconnect_reason
        return TLSHandshakeError(str(_peer(protocol)), _reason_of(reason))

    def _cancel(self, d: Deferred[PeerIdentity | None]) -> None:
        """
        The canceller. Losing the connection cancels the conversation, and
        through it this Deferred: report why the handshake failed instead
        of a bare cancel. A cancel by the handler aborts the connection,
        since it cannot go back to plaintext.
        """
        protocol = self._protocol
        if protocol is None:
            return
        if protocol.state is ConnectionState.CLOSED:
            error = self._lost_error()
            self._unhook()
            d.errback(error)
            return
        self._unhook()
        _abort(protocol)

    def _closed(self, _: object) -> None:
        """
        The connection closed; fail the handshake if nothing else did.
        """
        if self._protocol is not None:
            error = self._lost_error()
            self._unhook()
            self.deferred.errback(error)

    def _timed_out(self, timeout: float) -> None:
        """
        The handshake took too long: fail, then abort the connection.
        """
        self._timer = None
        protocol = self._protocol
        if protocol is None:
            return
        self._unhook()
        self.deferred.errback(
            defer.TimeoutError(f"TLS handshake timed out after {timeout} seconds")
        )
        _abort(protocol)

    def _unhook(self) -> None:
        """
        Settle: remove the hook and the timer, and drop the references.
        """
        protocol, self._protocol = self._protocol, None
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if protocol is None:
            return
        vars(protocol).pop("handshakeCompleted", None)
        if self._added_interface:
            noLongerProvides(protocol, IHandshakeListener)
        self._chained = None
        self._layer = None


def _abort(protocol: StateProtocol) -> None:
    """
    Drop a connection whose handshake is being abandoned.
    """
    if protocol.transport is not None:
        _abort_transport(protocol.transport)


def _abort_transport(transport: ITransport) -> None:
    """
    Close a transport at once, without flushing: abort it if it can be.
    """
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def start_tls(
    protocol: StateProtocol,
    options: Any,
    timeout: float | None = None,
) -> Deferred[PeerIdentity | None]:
    """
    Upgrade a plaintext connection to TLS (STARTTLS) as a step of the
    handler.

    Write the "go ahead" reply first (or, on a client, read it), then::

        self.write_line(b"220 ready to start TLS")
        identity = yield start_tls(self, server_options)
        # from here on every read and write is encrypted

    Any plaintext bytes received after the STARTTLS command and not read
    yet are discarded and the discard is logged (a warning with the byte
    count and the peer): a peer cannot smuggle plaintext past the upgrade
    by sending it in the same packet as the command. Bytes written before
    this call go out in plaintext, before the handshake.

    The side that accepted the connection acts as the TLS server, the side
    that made it as the TLS client. A client should pass
    C{optionsForClientTLS(hostname)}, which verifies the server's
    certificate and host name (with service_identity); a server passes
    L{CertificateOptions}, or C{PrivateCertificate.options(ca)} to require
    a client certificate signed by C{ca}.

    @param protocol: The connected protocol, from inside its own handler.
    @param options: The TLS options: an
        L{IOpenSSLClientConnectionCreator} or
        L{IOpenSSLServerConnectionCreator} provider (the results of
        C{optionsForClientTLS} and L{CertificateOptions}), as
        L{ITLSTransport.startTLS} accepts.
    @param timeout: Seconds to wait for the handshake on C{protocol.clock},
        or C{None} for no limit.
    @return: A Deferred firing with the peer's L{PeerIdentity} (or C{None}
        if it presented no certificate) when the handshake has completed.
        Cancelling it aborts the connection, since it cannot go back to
        plaintext; if the connection was lost meanwhile, it fails with
        L{TLSHandshakeError} rather than L{CancelledError}.
    @raise TLSHandshakeError: (as the failure) If the handshake failed or
        the connection closed first; the connection is closed.
    @raise twisted.internet.defer.TimeoutError: (as the failure) If the
        handshake did not complete within C{timeout}; the connection is
        aborted.
    @raise twisted.internet.error.ConnectionDone: (as the failure) If the
        connection is not open.
    @raise TypeError: At once, if the transport cannot start TLS, or a
        wrapper between it and the protocol would hide the end of the
        handshake.
    @raise RuntimeError: At once, if the connection is already encrypted
        or a handshake is already in progress.
    """
    transport = protocol.transport
    if protocol.state is not ConnectionState.CONNECTED or transport is None:
        return fail(
            ConnectionDone(
                f"start_tls() needs an open connection; it is {protocol.state.value}"
            )
        )
    if ISSLTransport.providedBy(transport) or isinstance(
        transport, TLSMemoryBIOProtocol
    ):
        raise RuntimeError(
            f"start_tls() was called on a connection that is already "
            f"encrypted ({transport!r})"
        )
    if vars(protocol).get("handshakeCompleted") is not None:
        raise RuntimeError("start_tls() was called while a handshake is in progress")
    if not ITLSTransport.providedBy(transport):
        raise TypeError(
            f"start_tls() needs a transport that provides ITLSTransport (TCP "
            f"connections do); {transport!r} does not"
        )
    _expose_handshake(protocol, getattr(transport, "protocol", protocol))
    buffered = protocol._buffer
    if len(buffered):
        discarded = buffered.take_all()
        # Reading may have been paused because this much was buffered;
        # the handshake's bytes must be able to arrive.
        protocol._check_buffer_pressure()
        _log.warn(
            "{protocol} discarded {count} plaintext bytes from {peer} received "
            "after the STARTTLS command and before the TLS handshake",
            protocol=type(protocol).__qualname__,
            peer=_peer(protocol),
            count=len(discarded),
            preview=discarded[:64],
        )
    watch = _HandshakeWatch(protocol)
    try:
        transport.startTLS(options)
    except BaseException:
        watch._unhook()
        raise
    watch.started(getattr(transport, "protocol", None), timeout)
    return watch.deferred


def _expose_handshake(protocol: StateProtocol, layer: object) -> None:
    """
    Make sure Twisted's C{handshakeCompleted()} call reaches C{protocol}
    through C{layer}, the protocol object the transport delivers to.
    """
    if layer is protocol or IHandshakeListener.providedBy(layer):
        return
    if callable(getattr(layer, "handshakeCompleted", None)):
        # Twisted's endpoint wrapper (_WrappingProtocol) passes the call on,
        # but declares the interface only if the protocol provided it when
        # the connection was made.
        alsoProvides(layer, IHandshakeListener)
        return
    raise TypeError(
        f"start_tls() cannot observe the TLS handshake: {layer!r} sits between "
        f"the transport and {protocol!r} and does not pass "
        f"IHandshakeListener.handshakeCompleted() on; connect with "
        f"txstateproto.connect() instead"
    )


# -- the gate: start the protocol once the handshake has completed ---------------


@final
@implementer(IHandshakeListener, ILoggingContext)
class _HandshakeGate(Protocol):
    """
    Sits between a TLS layer and a protocol, and connects the protocol only
    once the handshake has completed; on a plaintext transport, at once.

    The protocol's transport is the gate's own transport (the TLS layer), so
    writes and producer registration do not pass through the gate; only
    received bytes and connection events do.
    """

    def __init__(
        self,
        protocol: IProtocol,
        peer: IAddress | None,
        on_open: Callable[[], None] | None = None,
        on_refused: Callable[[Failure], None] | None = None,
    ) -> None:
        self._protocol = protocol
        self._peer = peer
        self._on_open = on_open
        self._on_refused = on_refused
        self._open = False
        if IHalfCloseableProtocol.providedBy(protocol):
            alsoProvides(self, IHalfCloseableProtocol)

    def logPrefix(self) -> str:
        """
        Use the wrapped protocol's log prefix.
        """
        if ILoggingContext.providedBy(self._protocol):
            prefix: str = self._protocol.logPrefix()
            return prefix
        return type(self._protocol).__name__

    def connectionMade(self) -> None:
        """
        Open at once on a plaintext transport; on TLS, wait for the
        handshake.
        """
        if self._peer is None and self.transport is not None:
            self._peer = self.transport.getPeer()
        if not isinstance(self.transport, TLSMemoryBIOProtocol):
            self._start()

    def handshakeCompleted(self) -> None:
        """
        The handshake completed: connect the protocol, or pass the news on
        (after a STARTTLS on a plaintext connection).
        """
        if self._open:
            if IHandshakeListener.providedBy(self._protocol):
                self._protocol.handshakeCompleted()
            return
        if getattr(self.transport, "disconnecting", False):
            # A verification failure aborted the connection (older Twisted).
            return
        self._start()

    def _start(self) -> None:
        """
        Connect the wrapped protocol to our transport.
        """
        self._open = True
        on_open, self._on_open = self._on_open, None
        self._on_refused = None
        assert self.transport is not None
        self._protocol.makeConnection(self.transport)
        if on_open is not None:
            on_open()

    def dataReceived(self, data: bytes) -> None:
        """
        Pass received bytes on (TLS delivers none before the handshake).
        """
        if self._open:
            self._protocol.dataReceived(data)

    def readConnectionLost(self) -> None:
        """
        Pass the peer's half-close on.
        """
        if self._open:
            self._protocol.readConnectionLost()  # type: ignore[attr-defined]
        elif self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Pass our half-close on.
        """
        if self._open:
            self._protocol.writeConnectionLost()  # type: ignore[attr-defined]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Pass the loss on, or report a handshake that never completed.
        """
        if self._open:
            self._protocol.connectionLost(reason)
            return
        on_refused, self._on_refused = self._on_refused, None
        self._on_open = None
        if on_refused is not None:
            on_refused(reason)
        elif reason.check(SSL.Error):
            _log.warn(
                "refused TLS connection from {peer}: {error}",
                peer=self._peer,
                error=_describe(_reason_of(reason)),
            )
        else:
            _log.info(
                "{peer} closed the connection before the TLS handshake "
                "completed: {error}",
                peer=self._peer,
                error=_describe(_reason_of(reason)),
            )


@final
class _GateFactory(Factory):
    """
    Wraps a protocol factory so that each protocol sits behind a
    L{_HandshakeGate}.
    """

    def __init__(self, wrapped: IProtocolFactory) -> None:
        self._wrapped = wrapped

    def logPrefix(self) -> str:
        """
        Use the wrapped factory's log prefix.
        """
        if ILoggingContext.providedBy(self._wrapped):
            prefix: str = self._wrapped.logPrefix()
            return prefix
        return type(self._wrapped).__name__

    def doStart(self) -> None:
        """
        Start the wrapped factory.
        """
        self._wrapped.doStart()

    def doStop(self) -> None:
        """
        Stop the wrapped factory.
        """
        self._wrapped.doStop()

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """
        Build the wrapped factory's protocol and put it behind a gate.
        """
        assert addr is not None
        protocol = self._wrapped.buildProtocol(addr)
        if protocol is None:
            return None
        return _HandshakeGate(protocol, addr)


def mutual_tls_factory(
    factory: IProtocolFactory,
    certificate: PrivateCertificate,
    client_ca: Certificate | Sequence[Certificate],
) -> TLSMemoryBIOFactory:
    """
    Wrap a protocol factory in TLS that requires a client certificate signed
    by one of the given authorities (mutual TLS).

    Listen on any plaintext stream endpoint with the result::

        server = PrivateCertificate.loadPEM(key_and_cert_pem)
        ca = Certificate.loadPEM(client_ca_pem)
        endpoint = serverFromString(reactor, "tcp:8443:interface=127.0.0.1")
        endpoint.listen(mutual_tls_factory(Factory.forProtocol(Api), server, ca))

    A client without a certificate, or with one that the authorities did
    not sign, is refused during the handshake: its protocol is never
    connected (C{start()} does not run) and the refusal is logged as a
    warning with the peer's address. An accepted protocol is connected once
    the handshake has completed, so its handler can call L{peer_identity}
    at once. Twisted's L{CertificateOptions} defaults apply (no SSLv3 or
    TLS 1.0, modern ciphers).

    @param factory: Builds the protocols (any protocol, not only
        L{StateProtocol}).
    @param certificate: The server's certificate and private key.
    @param client_ca: The authority, or authorities, whose signature a
        client certificate must carry.
    @return: A factory to listen with.
    @raise ValueError: If C{client_ca} is empty: refusing every client is
        surely a mistake, and verifying nothing is not this helper's job.
    """
    authorities = [client_ca] if isinstance(client_ca, Certificate) else list(client_ca)
    if not authorities:
        raise ValueError(
            "mutual_tls_factory() needs at least one client certificate "
            "authority (client_ca)"
        )
    # Hand OpenSSL cryptography objects: pyOpenSSL deprecates its own X509
    # and PKey types (PrivateCertificate.options() still passes those).
    options = CertificateOptions(
        privateKey=certificate.privateKey.original.to_cryptography_key(),
        certificate=certificate.original.to_cryptography(),
        trustRoot=trustRootFromCertificates(authorities),  # type: ignore[no-untyped-call]
    )
    return TLSMemoryBIOFactory(options, False, _GateFactory(factory))


@final
class _SingleUse(Factory):
    """
    A factory for one connection: it hands out the protocol it was given.
    """

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: IAddress | None) -> Protocol | None:
        """
        Return the protocol.
        """
        return self._protocol


# -- the client connector -----------------------------------------------------------


def connect(
    reactor: Any,
    endpoint: str | IStreamClientEndpoint,
    protocol: _P,
) -> Deferred[_P]:
    """
    Connect a L{StateProtocol} to an endpoint and wait until its
    conversation has started on a usable connection.

    On a TLS endpoint (C{tls:}, or one wrapped with C{wrapClientTLS}), the
    protocol is connected, and C{start()} runs, only once the handshake has
    completed and the server's certificate and host name have been
    verified; a refused server fails the returned Deferred with
    L{TLSHandshakeError} and C{start()} never runs. On a plaintext
    endpoint, C{start()} runs as soon as the connection is made (and may
    upgrade later with L{start_tls})::

        client = yield connect(reactor, "tls:mail.example:465", Submit())
        result = yield client.conversation

    @param reactor: The reactor, used to parse C{endpoint} if it is a
        string.
    @param endpoint: A client endpoint description (C{"tcp:host:port"},
        C{"tls:host:port"}, see L{clientFromString}) or an endpoint.
    @param protocol: The protocol to connect (not yet connected).
    @return: A Deferred firing with C{protocol} once its conversation has
        started: its L{Coroutine} is C{protocol.conversation} (a Deferred
        cannot fire with another Deferred, hence the protocol). Cancelling
        it cancels the connection attempt or aborts the handshake. Add a
        time limit with L{Deferred.addTimeout}.
    @raise TLSHandshakeError: (as the failure) If the TLS handshake failed.
    @raise twisted.internet.error.ConnectError: (or a subclass, as the
        failure) If the connection could not be made.
    """
    if isinstance(endpoint, str):
        target: IStreamClientEndpoint = clientFromString(  # type: ignore[no-untyped-call]
            reactor, endpoint
        )
    else:
        target = endpoint
    return _Connecting(protocol).start(target)


@final
class _Connecting(Generic[_P]):
    """
    One L{connect} call: the connection attempt, the gate and the Deferred
    handed to the caller.
    """

    __slots__ = ("_attempt", "_cancelled", "_gate", "_protocol", "result")

    def __init__(self, protocol: _P) -> None:
        self._protocol = protocol
        self._gate = _HandshakeGate(protocol, None, self._opened, self._refused)
        self._attempt: Deferred[IProtocol] | None = None
        self._cancelled = False
        self.result: Deferred[_P] = Deferred(self._cancel)

    def start(self, endpoint: IStreamClientEndpoint) -> Deferred[_P]:
        """
        Start connecting.
        """
        attempt = endpoint.connect(_SingleUse(self._gate))
        self._attempt = attempt
        attempt.addErrback(self._not_connected)
        return self.result

    def _opened(self) -> None:
        if not self.result.called:
            self.result.callback(self._protocol)

    def _refused(self, reason: Failure) -> None:
        if not self.result.called and not self._cancelled:
            peer = self._gate._peer
            self.result.errback(TLSHandshakeError(str(peer), _reason_of(reason)))

    def _not_connected(self, failure: Failure) -> None:
        if not self.result.called and not self._cancelled:
            self.result.errback(failure)

    def _cancel(self, _: Deferred[_P]) -> None:
        """
        The canceller: abort the connection if it was made (the handshake is
        in progress), else cancel the attempt. The caller sees
        L{CancelledError}, not the attempt's own cancel error or the abort.
        """
        self._cancelled = True
        transport = self._gate.transport
        if transport is not None:
            _abort_transport(transport)
            return
        # Not connected yet. The attempt's Deferred may already count as
        # called while it waits on another (HostnameEndpoint's race between
        # addresses), so cancel it either way: Deferred.cancel passes the
        # cancel on to the Deferred it waits on.
        attempt = self._attempt
        if attempt is not None:
            attempt.cancel()
