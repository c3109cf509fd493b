"""
A tiny SMTP-shaped line server that upgrades to TLS with STARTTLS.

It speaks just enough of SMTP's opening (RFC 5321 greeting and EHLO, RFC 3207
STARTTLS) for C{openssl s_client -starttls smtp} to reach the TLS handshake,
then serves one made-up command, C{ECHO}, over TLS only. Each state of the
conversation is a method; the upgrade is one C{yield} in the middle::

    start (plaintext) ──STARTTLS──► start_tls ──► encrypted ──QUIT──► end

Serve it (from the checkout's root, with C{cert.pem} and C{key.pem} in the
current directory, see README.md)::

    twistd -n --pidfile= stateproto --protocol examples.starttls.StartTLSServer \\
        --listen tcp:8025:interface=127.0.0.1
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from twisted.internet.ssl import CertificateOptions

from txstateproto import StateProtocol, noreturn

# TODO(issue 8): import these from txstateproto once it exports them.
from txstateproto._tls import start_tls

#### The replies ##############################################################

GREETING = b"220 %s ESMTP txstateproto STARTTLS example ready"
READY_FOR_TLS = b"220 2.0.0 Ready to start TLS"
OK = b"250 2.0.0 OK"
BYE = b"221 2.0.0 Bye"
TLS_FIRST = b"530 5.7.0 Must issue a STARTTLS command first"
TLS_ACTIVE = b"503 5.5.1 TLS already active"
UNKNOWN = b"502 5.5.2 Command not recognized"


#### The TLS options ##########################################################


@functools.cache
def server_tls_options(cert_file: str, key_file: str) -> CertificateOptions:
    """
    Load the server's certificate (with its chain, if the file has one) and
    private key from PEM files, once per pair of paths.

    Twisted's L{CertificateOptions} defaults apply: TLS 1.2 or later, modern
    ciphers, no client certificate asked for.

    @param cert_file: The certificate, then any intermediate certificates.
    @param key_file: The private key (unencrypted).
    @return: Server TLS options for L{start_tls}.
    """
    with open(cert_file, "rb") as f:
        chain = x509.load_pem_x509_certificates(f.read())
    with open(key_file, "rb") as f:
        key = load_pem_private_key(f.read(), password=None)
    # Twisted's annotations still name pyOpenSSL's PKey and X509, which
    # pyOpenSSL deprecates; at run time it takes cryptography's objects.
    loaded: dict[str, Any] = {
        "privateKey": key,
        "certificate": chain[0],
        "extraCertChain": chain[1:],
    }
    return CertificateOptions(**loaded)


#### The handler ###############################################################


class StartTLSServer(StateProtocol):
    """
    An SMTP-shaped server: greeting, C{EHLO}/C{HELO}, C{NOOP}, C{QUIT} and
    C{STARTTLS} in plaintext; after the upgrade, C{EHLO} again (without
    C{STARTTLS}) and C{ECHO text}, which replies C{250 text}.

    Before TLS, commands other than those are refused with C{530}. Bytes a
    client pipelines after C{STARTTLS} are discarded by L{start_tls}, never
    read as if they had come over TLS. A handshake that fails or takes
    longer than C{handshake_timeout} ends the conversation (logged as a
    warning).

    @cvar hostname: The name the greeting and C{EHLO} reply give.
    @cvar cert_file: The certificate PEM file: C{$STARTTLS_CERT}, or
        C{cert.pem} in the current directory.
    @cvar key_file: The private key PEM file: C{$STARTTLS_KEY}, or
        C{key.pem} in the current directory.
    @cvar handshake_timeout: Seconds allowed for the TLS handshake.
    @cvar command_timeout: Seconds to wait for each command.
    @cvar max_line_length: SMTP's command line limit (RFC 5321, 4.5.3.1.4).
    """

    hostname = b"localhost"
    cert_file = os.environ.get("STARTTLS_CERT", "cert.pem")
    key_file = os.environ.get("STARTTLS_KEY", "key.pem")
    handshake_timeout = 30.0
    command_timeout = 300.0
    max_line_length = 510

    def start(self) -> Generator[Any, Any, None]:
        """
        Greet the client, then answer plaintext commands until C{STARTTLS}
        (or C{QUIT}); upgrade, and go on in the encrypted state.
        """
        self.write_line(GREETING % self.hostname)
        while True:
            verb, argument = yield from self.command()
            if verb == b"QUIT":
                self.write_line(BYE)
                return
            if verb == b"EHLO":
                self.write_line(b"250-%s greets %s" % (self.hostname, argument))
                self.write_line(b"250 STARTTLS")
            elif verb == b"STARTTLS":
                self.write_line(READY_FOR_TLS)
                options = server_tls_options(self.cert_file, self.key_file)
                yield start_tls(self, options, timeout=self.handshake_timeout)
                noreturn(self.encrypted())
            elif not self.common(verb):
                self.write_line(TLS_FIRST)

    def encrypted(self) -> Generator[Any, Any, None]:
        """
        After TLS: serve C{ECHO} (and C{EHLO} again) until C{QUIT}; the
        connection closes once the reply is sent.
        """
        while True:
            verb, argument = yield from self.command()
            if verb == b"QUIT":
                self.write_line(BYE)
                return
            if verb == b"EHLO":
                self.write_line(
                    b"250 %s greets %s over TLS" % (self.hostname, argument)
                )
            elif verb == b"ECHO":
                self.write_line(b"250 " + argument)
            elif verb == b"STARTTLS":
                self.write_line(TLS_ACTIVE)
            elif not self.common(verb):
                self.write_line(UNKNOWN)

    def command(self) -> Generator[Any, Any, tuple[bytes, bytes]]:
        """
        Read one command line.

        @return: The verb in upper case, and the rest of the line.
        """
        line = yield self.read_line(timeout=self.command_timeout)
        verb, _, argument = line.partition(b" ")
        return verb.upper(), argument

    def common(self, verb: bytes) -> bool:
        """
        Answer the commands both states treat alike (C{HELO}, C{NOOP}).

        @return: Whether C{verb} was one of them.
        """
        if verb == b"HELO":
            self.write_line(b"250 " + self.hostname)
        elif verb == b"NOOP":
            self.write_line(OK)
        else:
            return False
        return True
