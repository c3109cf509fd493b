"""
Tests for the STARTTLS example: the plaintext state in memory, then the
upgrade over 127.0.0.1 with the example's own client and with the real
C{openssl s_client -starttls smtp}.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort, ISSLTransport
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.internet.ssl import optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from examples.starttls import StartTLSServer
from examples.starttls.client import StartTLSClient
from tests.certs import Issued, certificates
from txstateproto import StateProtocol
from txstateproto._tls import connect, start_tls
from txstateproto.testing import ProtocolHarness

Body = Generator[Any, Any, Any]

ROOT = Path(__file__).resolve().parent.parent.parent


def server_class(issued: Issued, servers: list[StartTLSServer]) -> type[StartTLSServer]:
    """
    The example server, presenting C{issued} and noting each connection's
    protocol in C{servers}.
    """

    class Server(StartTLSServer):
        cert_file = str(issued.cert_path)
        key_file = str(issued.key_path)

        def start(self) -> Body:
            servers.append(self)
            return super().start()

    return Server


class PlaintextTests(SynchronousTestCase):
    """
    Before STARTTLS the server speaks SMTP's opening and refuses the rest.
    """

    def test_greets_and_advertises_starttls(self) -> None:
        """
        The server greets with 220 and lists STARTTLS in its EHLO reply.
        """
        h = ProtocolHarness(StartTLSServer())
        h.feed(b"EHLO me\r\n")
        self.assertEqual(
            h.take_output(),
            b"220 localhost ESMTP txstateproto STARTTLS example ready\r\n"
            b"250-localhost greets me\r\n"
            b"250 STARTTLS\r\n",
        )

    def test_refuses_commands_before_tls(self) -> None:
        """
        ECHO before STARTTLS is refused with 530, NOOP is answered, and QUIT
        says goodbye and closes the connection.
        """
        h = ProtocolHarness(StartTLSServer())
        h.take_output()
        h.feed(b"ECHO secret\r\nNOOP\r\nQUIT\r\n")
        self.assertEqual(
            h.take_output(),
            b"530 5.7.0 Must issue a STARTTLS command first\r\n"
            b"250 2.0.0 OK\r\n"
            b"221 2.0.0 Bye\r\n",
        )
        self.assertTrue(h.closed)


class LoopbackMixin:
    """
    Run the example server on a free port of 127.0.0.1.
    """

    timeout = 30

    def setUp(self) -> None:
        self.certs = certificates()
        self.servers: list[StartTLSServer] = []

    @defer.inlineCallbacks
    def serve(self, issued: Issued | None = None) -> Generator[Any, Any, int]:
        """
        Listen with the example server presenting C{issued} (the test
        authority's localhost certificate by default).

        @return: The port number.
        """
        factory = Factory.forProtocol(
            server_class(issued or self.certs.server, self.servers)
        )
        port: IListeningPort = yield serverFromString(
            reactor, "tcp:0:interface=127.0.0.1"
        ).listen(factory)
        self.addCleanup(port.stopListening)  # type: ignore[attr-defined]
        return port.getHost().port  # type: ignore[attr-defined,no-any-return]

    @defer.inlineCallbacks
    def servers_closed(self) -> Generator[Any, Any, None]:
        """
        Wait until every server connection has closed.
        """
        for server in self.servers:
            yield server.when_closed()


class ClientHelperTests(LoopbackMixin, TestCase):
    """
    The example's client, built on the project's connect helper, upgrades
    and echoes.
    """

    @defer.inlineCallbacks
    def test_client_echoes_over_tls(self) -> Generator[Any, Any, None]:
        """
        StartTLSClient upgrades after EHLO, verifies the server's
        certificate for localhost, and gets its ECHO lines back over TLS.
        """
        port = yield self.serve()
        client = StartTLSClient(
            "localhost", [b"hello", b"over TLS"], self.certs.ca.twisted_certificate()
        )
        yield connect(reactor, f"tcp:127.0.0.1:{port}", client)
        echoed = yield client.conversation
        yield self.servers_closed()
        self.assertEqual(echoed, [b"hello", b"over TLS"])
        assert client.server_identity is not None
        self.assertEqual(client.server_identity.dns_names, ("localhost",))

    @defer.inlineCallbacks
    def test_pipelined_plaintext_is_not_served(self) -> Generator[Any, Any, None]:
        """
        An ECHO sent in plaintext in the same packet as STARTTLS is never
        answered: the first reply over TLS is for the first command sent
        over TLS.
        """
        port = yield self.serve()
        replies: list[bytes] = []
        certs = self.certs

        class Injector(StateProtocol):
            def start(self) -> Body:
                yield self.read_line()
                self.write(b"STARTTLS\r\nECHO injected\r\n")
                replies.append((yield self.read_line()))
                options = optionsForClientTLS(
                    "localhost", trustRoot=certs.ca.twisted_certificate()
                )
                yield start_tls(self, options)
                self.write_line(b"ECHO genuine")
                replies.append((yield self.read_line()))
                self.write_line(b"QUIT")
                replies.append((yield self.read_line()))

        client = yield connect(reactor, f"tcp:127.0.0.1:{port}", Injector())
        yield client.when_closed()
        yield self.servers_closed()
        self.assertEqual(
            replies,
            [b"220 2.0.0 Ready to start TLS", b"250 genuine", b"221 2.0.0 Bye"],
        )
        [server] = self.servers
        self.assertTrue(ISSLTransport.providedBy(server.transport))


class _Collect(ProcessProtocol):
    """
    Feed a process its standard input, collect its output, and fire
    C{ended} with C{(exit code, stdout, stderr)}.
    """

    def __init__(self, stdin: bytes) -> None:
        self._stdin = stdin
        self.out = b""
        self.err = b""
        self.ended: Deferred[tuple[int | None, bytes, bytes]] = Deferred()

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.write(self._stdin)
        self.transport.closeStdin()  # type: ignore[attr-defined]

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Failure) -> None:
        code = getattr(reason.value, "exitCode", None)
        self.ended.callback((code, self.out, self.err))


class OpenSSLClientTests(LoopbackMixin, TestCase):
    """
    The real C{openssl s_client -starttls smtp} reaches the handshake and
    talks to the server over TLS.
    """

    def setUp(self) -> None:
        super().setUp()
        openssl = shutil.which("openssl")
        if openssl is None:
            raise SkipTest(
                "the openssl command is not installed; install it (for "
                "example `apt-get install openssl`) to run this test"
            )
        self.openssl = openssl

    def s_client(self, port: int, ca: Issued, stdin: bytes) -> Deferred[Any]:
        """
        Run C{openssl s_client -starttls smtp} against 127.0.0.1:C{port},
        trusting C{ca} and requiring the name localhost, with C{stdin} as
        its input (lines end in LF; C{-crlf} sends CRLF).

        @return: A Deferred firing with C{(exit code, stdout, stderr)}.
        """
        args = [
            self.openssl,
            "s_client",
            "-connect",
            f"127.0.0.1:{port}",
            "-starttls",
            "smtp",
            "-CAfile",
            str(ca.cert_path),
            "-verify_hostname",
            "localhost",
            "-verify_return_error",
            "-crlf",
            "-quiet",
        ]
        process = _Collect(stdin)
        reactor.spawnProcess(  # type: ignore[attr-defined]
            process, self.openssl, args, env={"PATH": os.environ.get("PATH", "")}
        )
        return process.ended

    @defer.inlineCallbacks
    def test_openssl_s_client_starttls_smtp(self) -> Generator[Any, Any, None]:
        """
        s_client's SMTP STARTTLS dialogue upgrades the connection; it then
        verifies the certificate for localhost and the ECHO over TLS comes
        back.
        """
        port = yield self.serve()
        code, out, err = yield self.s_client(
            port, self.certs.ca, b"EHLO openssl\nECHO hello from openssl\nQUIT\n"
        )
        yield self.servers_closed()
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.splitlines(),
            [
                b"250 localhost greets openssl over TLS",
                b"250 hello from openssl",
                b"221 2.0.0 Bye",
            ],
        )
        [server] = self.servers
        self.assertTrue(ISSLTransport.providedBy(server.transport))

    @defer.inlineCallbacks
    def test_openssl_s_client_refuses_unknown_ca(self) -> Generator[Any, Any, None]:
        """
        s_client trusting another authority refuses the server's
        certificate after STARTTLS and exits with an error; nothing is
        echoed.
        """
        port = yield self.serve()
        code, out, err = yield self.s_client(
            port, self.certs.other_ca, b"ECHO never\nQUIT\n"
        )
        yield self.servers_closed()
        self.assertNotEqual(code, 0)
        self.assertIn(b"verify", err)
        self.assertNotIn(b"never", out)


class ClientCommandLineTests(LoopbackMixin, TestCase):
    """
    C{python -m examples.starttls.client}, as the README runs it.
    """

    def run_client(self, port: int, *extra: str) -> Deferred[Any]:
        """
        Run the client module in a subprocess against 127.0.0.1:C{port},
        trusting the test authority.

        @return: A Deferred firing with C{(exit code, stdout, stderr)}.
        """
        args = [
            sys.executable,
            "-m",
            "examples.starttls.client",
            "--connect",
            f"tcp:127.0.0.1:{port}",
            "--ca",
            str(self.certs.ca.cert_path),
            *extra,
        ]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        process = _Collect(b"")
        reactor.spawnProcess(  # type: ignore[attr-defined]
            process, sys.executable, args, env=env, path=str(ROOT)
        )
        return process.ended

    @defer.inlineCallbacks
    def test_prints_server_identity_and_echoes(self) -> Generator[Any, Any, None]:
        """
        The client prints the verified server's subject and names, then each
        echoed text, and exits with status 0.
        """
        port = yield self.serve()
        code, out, err = yield self.run_client(port, "hello", "over TLS")
        yield self.servers_closed()
        self.assertEqual(code, 0, err)
        self.assertEqual(
            out.splitlines(),
            [
                b"server certificate: CN=localhost,O=txstateproto tests "
                b"(DNS names: localhost)",
                b"hello",
                b"over TLS",
            ],
        )

    @defer.inlineCallbacks
    def test_wrong_hostname_fails(self) -> Generator[Any, Any, None]:
        """
        With --hostname naming another host, the handshake fails, the error
        saying so is logged to standard error, nothing is echoed, and the
        exit status is 1.
        """
        port = yield self.serve()
        code, out, err = yield self.run_client(
            port, "--hostname", "wrong.example", "never"
        )
        yield self.servers_closed()
        self.assertEqual(code, 1, err)
        self.assertEqual(out, b"")
        self.assertIn(b"the certificate does not match the expected host name", err)
