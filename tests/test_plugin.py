"""
Tests for C{twistd stateproto} as users run it: the real C{twistd} in a
subprocess, real loopback sockets, real signals.

Each server listens on C{tcp:0} on 127.0.0.1 and the test reads the port
from the log line the plugin writes when listening. The subprocess gets
the checkout root as C{PYTHONPATH} (absolute), so it imports the code under
test and finds the dropin in the checkout's C{twisted/plugins/}; its
working directory is chosen per test (C{--protocol} resolves from there).

Waits on the subprocess and on sockets have generous deadlines; they are
safety nets against a hung test, not timing assertions.
"""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import tempfile
import textwrap
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.certs import certificates
from tests.twistd import DEADLINE, ROOT, Server, twistd


def read_until_eof(client: socket.socket) -> bytes:
    """
    Everything the server sends until it closes the connection.
    """
    data = b""
    while True:
        chunk = client.recv(65536)
        if not chunk:
            return data
        data += chunk


def read_line(client: socket.socket) -> bytes:
    """
    One line, with its newline, read byte by byte (so nothing after it is
    consumed).
    """
    line = b""
    while not line.endswith(b"\n"):
        byte = client.recv(1)
        if not byte:
            raise AssertionError(f"connection closed after {line!r}")
        line += byte
    return line


def handler_directory(case: SynchronousTestCase, source: str) -> Path:
    """
    A fresh directory holding C{h1_plugin_handlers.py} with C{source}: not
    on the subprocess's C{sys.path}, so it resolves only as the current
    directory.
    """
    directory = Path(tempfile.mkdtemp(prefix="txstateproto-plugin-"))
    case.addCleanup(shutil.rmtree, directory, True)
    (directory / "h1_plugin_handlers.py").write_text(textwrap.dedent(source))
    return directory


class CommandLineTests(SynchronousTestCase):
    """
    C{twistd} finds the plugin, shows its help and reports bad options.
    """

    def test_twistd_help_lists_stateproto(self) -> None:
        """twistd --help lists the stateproto subcommand."""
        result = twistd("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, rb"\n\s+stateproto\s+Serve a txstateproto")

    def test_stateproto_help_shows_options(self) -> None:
        """twistd stateproto --help shows every option."""
        result = twistd("stateproto", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for option in [
            b"--listen=",
            b"--protocol=",
            b"--idle-timeout=",
            b"--max-connections=",
            b"--shutdown-timeout=",
        ]:
            self.assertIn(option, result.stdout)

    def test_bad_protocol_is_one_line_and_status_2(self) -> None:
        """A bad --protocol gives one line on stderr naming what was tried,
        exit status 2, and no traceback."""
        result = twistd("--pidfile=", "-n", "stateproto", "--protocol", "nope.Nope")
        self.assertEqual(result.returncode, 2)
        self.assertEqual(result.stdout, b"")
        self.assertEqual(
            result.stderr,
            b"twistd stateproto: error: --protocol 'nope.Nope': not a built-in "
            b"(echo), and no module named 'nope' (with "
            + str(ROOT).encode()
            + b" on sys.path)\n",
        )

    def test_listen_failure_exits_nonzero(self) -> None:
        """A port that cannot be bound stops twistd instead of serving
        nothing."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            result = twistd(
                "--pidfile=",
                "-n",
                "stateproto",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
            )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"Address already in use", result.stdout + result.stderr)


class ServingTests(SynchronousTestCase):
    """
    A real server, real clients, SIGTERM.
    """

    def test_sigterm_sends_goodbye_then_exits_as_twistd_does(self) -> None:
        """On SIGTERM, clients mid-conversation receive the example's BYE
        before EOF, and twistd exits by re-raising SIGTERM with no
        traceback logged."""
        server = Server(
            self,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--protocol",
            "examples.echo_server.EchoServer",
        )
        clients = [server.connect() for _ in range(3)]
        for i, client in enumerate(clients):
            self.assertEqual(read_line(client), b"HELLO: I echo lines; QUIT to leave\n")
            client.sendall(b"line %d\r\n" % i)
            self.assertEqual(read_line(client), b"line %d\n" % i)
        status, log = server.stop(signal.SIGTERM)
        for client in clients:
            self.assertEqual(read_until_eof(client), b"BYE: server shutting down\n")
        self.assertEqual(status, -signal.SIGTERM)
        self.assertNotIn("Traceback", log)
        self.assertIn("cancelling 3 live conversations", log)
        self.assertIn(
            "stopped: 3 connections served, 0 refused by max_connections, 0 aborted",
            log,
        )

    def test_sigint_also_shuts_down_gracefully(self) -> None:
        """SIGINT (Ctrl-C) takes the same path as SIGTERM."""
        server = Server(
            self,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--protocol",
            "examples.echo_server.EchoServer",
        )
        client = server.connect()
        read_line(client)
        status, log = server.stop(signal.SIGINT)
        self.assertEqual(read_until_eof(client), b"BYE: server shutting down\n")
        self.assertEqual(status, -signal.SIGINT)
        self.assertNotIn("Traceback", log)

    def test_protocol_from_cwd_and_abort_at_shutdown_timeout(self) -> None:
        """A handler module in the current directory is served, and one that
        will not end is aborted at --shutdown-timeout, counted in the log."""
        directory = handler_directory(
            self,
            """
            from twisted.internet.defer import CancelledError, Deferred
            from txstateproto import StateProtocol

            class Stuck(StateProtocol):
                delimiter = b"\\n"

                def start(self):
                    line = yield self.read_line()
                    self.write_line(b"got " + line)
                    try:
                        yield Deferred()
                    except CancelledError:
                        yield Deferred()  # never ends on its own
            """,
        )
        server = Server(
            self,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--protocol",
            "h1_plugin_handlers.Stuck",
            "--shutdown-timeout",
            "0.2",
            cwd=directory,
        )
        client = server.connect()
        client.sendall(b"x\n")
        self.assertEqual(read_line(client), b"got x\n")
        status, log = server.stop(signal.SIGTERM)
        try:
            rest = read_until_eof(client)
        except ConnectionResetError:
            rest = b""
        self.assertEqual(rest, b"")
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn(
            "aborting 1 connections still open after shutdown_timeout=0.2 s", log
        )
        self.assertIn("1 aborted", log)
        self.assertNotIn("Traceback", log)

    def test_max_connections_refuses_and_counts(self) -> None:
        """Beyond --max-connections a client gets EOF at once; the refusal is
        logged with its count."""
        server = Server(
            self, "--listen", "tcp:0:interface=127.0.0.1", "--max-connections", "1"
        )
        served = server.connect()
        served.sendall(b"first\n")
        self.assertEqual(read_line(served), b"first\n")
        refused = server.connect()
        self.assertEqual(read_until_eof(refused), b"")
        server.wait_for(re.compile(rb"max_connections=1 reached \(1 refused so far\)"))
        served.sendall(b"still here\n")
        self.assertEqual(read_line(served), b"still here\n")
        status, log = server.stop()
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn("1 connections served, 1 refused by max_connections", log)

    def test_every_listen_is_served_tcp_unix_ssl_haproxy(self) -> None:
        """Repeated --listen serves TCP, UNIX, ssl: and haproxy: endpoints at
        once, each logged with its bound address."""
        server_cert = certificates().server
        socket_dir = Path(tempfile.mkdtemp(prefix="txstateproto-sock-"))
        self.addCleanup(shutil.rmtree, socket_dir, True)
        path = socket_dir / "echo.sock"
        server = Server(
            self,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            f"unix:{path}",
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={server_cert.combined_path}",
            "--listen",
            "haproxy:tcp:0:interface=127.0.0.1",
        )
        ssl_port = int(
            server.wait_for(
                re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(ssl:")
            ).group(1)
        )
        server.wait_for(re.compile(re.escape(f"listening on {path} (unix:".encode())))
        haproxy_port = int(
            server.wait_for(
                re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(haproxy:")
            ).group(1)
        )

        tcp = server.connect()
        tcp.sendall(b"over tcp\n")
        self.assertEqual(read_line(tcp), b"over tcp\n")

        unix = socket.socket(socket.AF_UNIX)
        self.addCleanup(unix.close)
        unix.settimeout(DEADLINE)
        unix.connect(str(path))
        unix.sendall(b"over unix\n")
        self.assertEqual(read_line(unix), b"over unix\n")

        context = ssl.create_default_context(cafile=str(certificates().ca.cert_path))
        raw = socket.create_connection(("127.0.0.1", ssl_port), timeout=DEADLINE)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(tls.close)
        tls.sendall(b"over tls\n")
        self.assertEqual(read_line(tls), b"over tls\n")

        proxied = socket.create_connection(
            ("127.0.0.1", haproxy_port), timeout=DEADLINE
        )
        self.addCleanup(proxied.close)
        proxied.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 1111 2222\r\nproxied\n")
        self.assertEqual(read_line(proxied), b"proxied\n")

        server.process.send_signal(signal.SIGTERM)
        for client in [tcp, unix, tls, proxied]:
            self.assertEqual(read_until_eof(client), b"")
            # A TLS close waits for the client's close_notify or its close:
            # close each client as a well-behaved one does on EOF.
            client.close()
        status, log = server.wait()
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn(
            "4 connections served, 0 refused by max_connections, 0 aborted", log
        )
        self.assertNotIn("Traceback", log)

    def test_systemd_socket_activation(self) -> None:
        """A systemd: endpoint serves on a socket inherited as systemd passes
        it."""
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen()
            port = listening.getsockname()[1]
            server = Server(
                self, "--listen", "systemd:domain=INET:name=echo", activate=listening
            )
        self.assertEqual(server.port, port)
        client = server.connect()
        client.sendall(b"activated\n")
        self.assertEqual(read_line(client), b"activated\n")
        status, log = server.stop()
        self.assertEqual(status, -signal.SIGTERM)
        self.assertNotIn("Traceback", log)

    def test_second_signal_aborts_at_once(self) -> None:
        """A second SIGTERM during a graceful shutdown aborts what is left at
        once, without the reactor's ReactorNotRunning traceback."""
        directory = handler_directory(
            self,
            """
            from twisted.internet.defer import CancelledError, Deferred
            from txstateproto import StateProtocol

            class Stuck(StateProtocol):
                delimiter = b"\\n"

                def start(self):
                    self.write_line(b"ready")
                    try:
                        yield Deferred()
                    except CancelledError:
                        yield Deferred()  # never ends on its own
            """,
        )
        server = Server(
            self,
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--protocol",
            "h1_plugin_handlers.Stuck",
            "--shutdown-timeout",
            "3600",
            cwd=directory,
        )
        client = server.connect()
        self.assertEqual(read_line(client), b"ready\n")
        server.process.send_signal(signal.SIGTERM)
        server.wait_for(re.compile(rb"cancelling 1 live conversations"))
        status, log = server.stop(signal.SIGTERM)
        try:
            self.assertEqual(read_until_eof(client), b"")
        except ConnectionResetError:
            pass
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn(
            "aborting 1 connections still open on a second signal (SIGTERM)", log
        )
        self.assertIn("1 aborted", log)
        self.assertNotIn("Traceback", log)

    def test_tls_client_that_never_closes_is_aborted(self) -> None:
        """A TLS client that neither answers close_notify nor closes is
        aborted at --shutdown-timeout."""
        server_cert = certificates().server
        server = Server(
            self,
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={server_cert.combined_path}",
            "--shutdown-timeout",
            "0.2",
        )
        context = ssl.create_default_context(cafile=str(certificates().ca.cert_path))
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=DEADLINE)
        tls = context.wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(tls.close)
        tls.sendall(b"hi\n")
        self.assertEqual(read_line(tls), b"hi\n")
        # The client reads nothing more and keeps its socket open.
        status, log = server.stop()
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn("0 refused by max_connections, 1 aborted", log)
        self.assertNotIn("Traceback", log)


def _docs_block(containing: str) -> str:
    """
    The python code block of C{docs/plugin.md} containing C{containing}.
    """
    text = (ROOT / "docs" / "plugin.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.DOTALL)
    [block] = [b for b in blocks if containing in b]
    return block


class DocsTests(SynchronousTestCase):
    """
    The code in C{docs/plugin.md} runs as shown.
    """

    def test_tac_file_from_docs(self) -> None:
        """The docs' .tac example serves under twistd -ny and shuts down
        gracefully."""
        source = _docs_block("Application(")
        self.assertIn('"tcp:8000"', source)
        directory = Path(tempfile.mkdtemp(prefix="txstateproto-tac-"))
        self.addCleanup(shutil.rmtree, directory, True)
        tac = directory / "echo.tac"
        tac.write_text(source.replace('"tcp:8000"', '"tcp:0:interface=127.0.0.1"'))
        server = Server(self, tac=tac, cwd=directory)
        client = server.connect()
        client.sendall(b"from a tac\n")
        self.assertEqual(read_line(client), b"from a tac\n")
        status, log = server.stop()
        self.assertEqual(read_until_eof(client), b"")
        self.assertEqual(status, -signal.SIGTERM)
        self.assertIn("stopped: 1 connections served", log)
        self.assertNotIn("Traceback", log)
