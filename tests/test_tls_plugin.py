"""
End-to-end test of C{twistd stateproto --listen ssl:...}: the real twistd in
a subprocess serves the built-in echo over TLS on 127.0.0.1, and clients
made with L{txstateproto._tls.connect} over C{tls:} endpoint strings verify
it (service_identity for the host name).

The server listens on C{ssl:0} and the test reads the port from the log line
the plugin writes when listening. The subprocess gets the checkout root as
C{PYTHONPATH}, so it imports the code under test and finds the dropin in the
checkout's C{twisted/plugins/}. Everything is driven by the reactor (no
blocking waits); trial's C{timeout} is the safety net.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from OpenSSL import SSL
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.certs import certificates
from txstateproto import StateProtocol
from txstateproto._tls import TLSHandshakeError, connect, peer_identity

ROOT = Path(__file__).resolve().parent.parent
TWISTD = Path(sys.executable).parent / "twistd"
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(ssl:")

Body = Generator[Any, Any, Any]


class Twistd(ProcessProtocol):
    """
    A twistd subprocess: its merged output, a Deferred firing with the
    port once it logs that it listens, and one firing with its end.
    """

    def __init__(self) -> None:
        self.output = bytearray()
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[BaseException] = Deferred()

    def childDataReceived(self, child_fd: int, data: bytes) -> None:
        self.output += data
        if not self.listening.called:
            found = LISTENING.search(self.output)
            if found is not None:
                self.listening.callback(int(found.group(1)))

    def processEnded(self, reason: Failure) -> None:
        if not self.listening.called:
            self.listening.errback(
                AssertionError(f"twistd ended before listening:\n{self.log()}")
            )
        self.ended.callback(reason.value)

    def log(self) -> str:
        """
        The output so far, as text.
        """
        return self.output.decode("utf-8", "replace")


class EchoClient(StateProtocol):
    """
    Send each line, read its echo, and note the server's identity.
    """

    delimiter = b"\n"

    def __init__(self, lines: list[bytes]) -> None:
        super().__init__()
        self.lines = lines
        self.echoed: list[bytes] = []
        self.server_identity: Any = None

    def start(self) -> Body:
        self.server_identity = peer_identity(self)
        for line in self.lines:
            self.write_line(line)
            self.echoed.append((yield self.read_line()))


class SSLListenerTests(TestCase):
    """
    C{--listen ssl:PORT:privateKey=KEY:certKey=CERT} serves the handler over
    TLS to clients that verify the certificate and host name.
    """

    timeout = 60

    def setUp(self) -> None:
        self.certs = certificates()

    @defer.inlineCallbacks
    def start_twistd(self) -> Generator[Any, Any, tuple[Twistd, int]]:
        """
        Start C{twistd stateproto} listening with TLS on a free port of
        127.0.0.1, the key and the certificate in separate files.

        @return: The process and its port.
        """
        server = self.certs.server
        listen = (
            f"ssl:0:interface=127.0.0.1:privateKey={server.key_path}"
            f":certKey={server.cert_path}"
        )
        args = [str(TWISTD), "--pidfile=", "-n", "stateproto", "--listen", listen]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("PYTHONSTARTUP", None)
        process = Twistd()
        transport: IProcessTransport = reactor.spawnProcess(  # type: ignore[attr-defined]
            process, str(TWISTD), args, env=env, path=str(ROOT)
        )

        @defer.inlineCallbacks
        def reap() -> Generator[Any, Any, None]:
            if not process.ended.called:
                transport.signalProcess("KILL")
            yield process.ended

        self.addCleanup(reap)  # type: ignore[attr-defined]
        port: int = yield process.listening
        return process, port

    @defer.inlineCallbacks
    def stop_twistd(self, process: Twistd) -> Generator[Any, Any, str]:
        """
        Stop the server with SIGTERM, as an operator would, and check that it
        exits as twistd does after a signal, with nothing unexpected logged.

        @return: Its whole log.
        """
        assert process.transport is not None
        process.transport.signalProcess("TERM")
        ended = yield process.ended
        log = process.log()
        self.assertIsInstance(ended, ProcessTerminated, log)
        self.assertEqual(ended.signal, signal.SIGTERM, log)
        self.assertNotIn("Traceback", log)
        return log

    @defer.inlineCallbacks
    def test_served_over_tls_to_verifying_client(self) -> Generator[Any, Any, None]:
        """
        A client over C{tls:host=localhost:port=PORT} trusting the test
        authority verifies the server's certificate and host name and has
        its lines echoed over TLS.
        """
        process, port = yield self.start_twistd()
        client = EchoClient([b"over tls", b"again"])
        endpoint = f"tls:host=localhost:port={port}:trustRoots={self.certs.ca_dir}"
        yield connect(reactor, endpoint, client)
        yield client.when_closed()
        self.assertEqual(client.echoed, [b"over tls", b"again"])
        self.assertEqual(client.server_identity.dns_names, ("localhost",))
        issuer = self.certs.ca.certificate.subject.rfc4514_string()
        self.assertEqual(client.server_identity.issuer, issuer)
        yield self.stop_twistd(process)

    @defer.inlineCallbacks
    def test_refused_by_clients_that_verify(self) -> Generator[Any, Any, None]:
        """
        A client expecting another host name, and one trusting another
        authority, refuse the server's certificate: connect() fails with
        TLSHandshakeError and their handlers never start.
        """
        process, port = yield self.start_twistd()
        tcp = rf"endpoint=tcp\:127.0.0.1\:{port}"
        wrong_name = EchoClient([b"never"])
        with self.assertRaises(TLSHandshakeError) as caught:
            yield connect(
                reactor,
                f"tls:host=wrong.example:port={port}:"
                f"trustRoots={self.certs.ca_dir}:{tcp}",
                wrong_name,
            )
        self.assertEqual(type(caught.exception.reason).__name__, "VerificationError")
        other_ca = EchoClient([b"never"])
        with self.assertRaises(TLSHandshakeError) as caught:
            yield connect(
                reactor,
                f"tls:host=localhost:port={port}:trustRoots={self.certs.other_ca_dir}",
                other_ca,
            )
        self.assertIsInstance(caught.exception.reason, SSL.Error)
        self.assertIn("certificate verify failed", str(caught.exception))
        self.assertIsNone(wrong_name.conversation)
        self.assertIsNone(other_ca.conversation)
        yield self.stop_twistd(process)
