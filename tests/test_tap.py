"""
Tests for L{txstateproto.tap}: option parsing, C{--protocol} resolution, the
connection limit and graceful shutdown, with fake endpoints, in-memory
transports and a fake clock (the real C{twistd} is in C{test_plugin.py}).
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import sys
import tempfile
import textwrap
from collections.abc import Generator
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    UNIXServerEndpoint,
)
from twisted.internet.interfaces import IAddress, IListeningPort, IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from tests.certs import certificates
from txstateproto import ConnectionState, StateProtocol
from txstateproto._builtin import BUILTINS, Echo
from txstateproto.tap import Options, _describe, _Server, _ServerFactory, makeService
from txstateproto.testing import ProtocolHarness

PEER = IPv4Address("TCP", "127.0.0.1", 40000)


def capture_tap_log(case: SynchronousTestCase) -> list[LogEvent]:
    """
    Collect the events logged by L{txstateproto.tap} during the test.
    """
    events: list[LogEvent] = []

    def observe(event: LogEvent) -> None:
        if event.get("log_namespace") == "txstateproto.tap":
            events.append(event)

    globalLogPublisher.addObserver(observe)
    case.addCleanup(globalLogPublisher.removeObserver, observe)
    return events


def parse(*args: str) -> Options:
    """
    Parse C{args} as C{twistd stateproto}'s options, outside twistd.
    """
    options = Options()
    options.parseOptions(list(args))
    return options


class Goodbye(StateProtocol):
    """
    Echoes lines; on cancel while connected, says BYE and drains it (the
    handler of docs/plugin.md, with a newline delimiter).
    """

    delimiter = b"\n"

    def start(self) -> Generator[Any, Any, None]:
        try:
            while True:
                line = yield self.read_line()
                self.write_line(line)
        except CancelledError:
            if self.state is ConnectionState.CONNECTED:
                self.write_line(b"BYE")  # the server is shutting down
                yield self.drain()
            raise


class Stubborn(StateProtocol):
    """
    Ignores the first cancel and waits on a Deferred that never fires, as a
    handler stuck in slow clean-up would.
    """

    def start(self) -> Generator[Any, Any, None]:
        try:
            yield self.read_line()
        except CancelledError:
            yield Deferred()


@implementer(IListeningPort)
class FakePort:
    """
    A listening port that only reports its address and whether it stopped.
    """

    def __init__(self, host: IAddress) -> None:
        self.host = host
        self.stopped = False

    def startListening(self) -> None:
        """Nothing to do."""

    def stopListening(self) -> None:
        """Record the call."""
        self.stopped = True

    def getHost(self) -> IAddress:
        """The address given to the constructor."""
        return self.host


class FakeEndpoint:
    """
    A server endpoint whose C{listen} succeeds with a L{FakePort} (or fails
    with C{error}) and remembers the factory.
    """

    def __init__(self, host: IAddress, error: Exception | None = None) -> None:
        self.port = FakePort(host)
        self.error = error
        self.factory: IProtocolFactory | None = None

    def listen(self, factory: IProtocolFactory) -> Deferred[FakePort]:
        """Succeed (or fail) at once."""
        self.factory = factory
        if self.error is not None:
            return defer.fail(self.error)
        return defer.succeed(self.port)


class Served:
    """
    A service from L{makeService} on fake endpoints and a fake clock, with
    helpers to connect in-memory clients through its factory.
    """

    def __init__(self, *args: str, endpoints: list[FakeEndpoint] | None = None):
        self.options = parse(*args)
        self.endpoints = endpoints or [
            FakeEndpoint(IPv4Address("TCP", "127.0.0.1", 43210))
            for _ in self.options["listen"]
        ]
        self.options["endpoints"] = self.endpoints
        self.clock = Clock()
        self.service = makeService(self.options, clock=self.clock)
        self.service.startService()
        factory = self.endpoints[0].factory
        assert factory is not None
        self.factory = factory

    def connect(self) -> ProtocolHarness | Protocol | None:
        """
        Build a protocol as the port would and connect it in memory.

        @return: A harness for a served connection, the bare protocol for a
            refused one (already connected), or C{None} if dropped.
        """
        protocol = self.factory.buildProtocol(PEER)
        if isinstance(protocol, StateProtocol):
            return ProtocolHarness(protocol, clock=self.clock)
        if protocol is not None:
            protocol.makeConnection(StringTransport(peerAddress=PEER))
        return protocol

    def harness(self) -> ProtocolHarness:
        """
        Connect a client that must be served.
        """
        connected = self.connect()
        assert isinstance(connected, ProtocolHarness)
        return connected


class OptionsTests(SynchronousTestCase):
    """
    C{twistd stateproto}'s options, parsed outside twistd.
    """

    def test_defaults(self) -> None:
        """Without options: echo on tcp:8000, 10 s shutdown, no limits."""
        options = parse()
        self.assertEqual(options["listen"], ["tcp:8000"])
        self.assertEqual(options["protocol"], "echo")
        self.assertIs(options["protocol_maker"], Echo)
        self.assertEqual(options["shutdown-timeout"], 10.0)
        self.assertIsNone(options["idle-timeout"])
        self.assertIsNone(options["max-connections"])
        [endpoint] = options["endpoints"]
        self.assertIsInstance(endpoint, TCP4ServerEndpoint)

    def test_listen_is_repeatable_and_ordered(self) -> None:
        """Each --listen adds an endpoint, in order, of the type it names."""
        options = parse(
            "--listen",
            "unix:/tmp/txstateproto-test.sock",
            "--listen",
            r"tcp6:port=0:interface=\:\:1",
            "--listen",
            "tcp:0:interface=127.0.0.1",
        )
        self.assertEqual(
            [type(e) for e in options["endpoints"]],
            [UNIXServerEndpoint, TCP6ServerEndpoint, TCP4ServerEndpoint],
        )
        self.assertEqual(len(options["listen"]), 3)

    def test_listen_ssl_and_haproxy(self) -> None:
        """ssl: (with a real key file) and the haproxy: wrapper parse."""
        server = certificates().server
        options = parse(
            "--listen",
            f"ssl:0:interface=127.0.0.1:privateKey={server.combined_path}",
            "--listen",
            "haproxy:tcp:0",
        )
        ssl_endpoint, haproxy_endpoint = options["endpoints"]
        self.assertEqual(type(ssl_endpoint).__name__, "SSL4ServerEndpoint")
        self.assertEqual(type(haproxy_endpoint).__name__, "_WrapperServerEndpoint")

    def test_bad_listen_names_the_string(self) -> None:
        """An unparsable endpoint string is a usage error quoting it."""
        for description in ["bogus:8000", "tcp:notaport", "ssl:0:privateKey=/no"]:
            with self.assertRaises(usage.UsageError) as raised:
                parse("--listen", description)
            self.assertIn(f"--listen {description!r}", str(raised.exception))

    def test_systemd_without_inherited_socket(self) -> None:
        """A systemd: endpoint with nothing inherited says what is missing."""
        with self.assertRaises(usage.UsageError) as raised:
            parse("--listen", "systemd:domain=INET:index=0")
        self.assertIn("no such socket inherited from systemd", str(raised.exception))

    def test_numbers_are_converted(self) -> None:
        """The numeric options become numbers."""
        options = parse(
            "--idle-timeout",
            "2.5",
            "--max-connections",
            "7",
            "--shutdown-timeout",
            "0",
        )
        self.assertEqual(options["idle-timeout"], 2.5)
        self.assertEqual(options["max-connections"], 7)
        self.assertIsInstance(options["max-connections"], int)
        self.assertEqual(options["shutdown-timeout"], 0.0)

    def test_bad_numbers_name_option_and_value(self) -> None:
        """Each out-of-range or malformed number is refused by name."""
        cases = [
            ("idle-timeout", "0"),
            ("idle-timeout", "-1"),
            ("idle-timeout", "nan"),
            ("idle-timeout", "soon"),
            ("max-connections", "0"),
            ("max-connections", "1.5"),
            ("shutdown-timeout", "-0.1"),
            ("shutdown-timeout", "inf"),
        ]
        for option, value in cases:
            with self.assertRaises(usage.UsageError) as raised:
                parse(f"--{option}", value)
            message = str(raised.exception)
            self.assertIn(f"--{option}", message)
            self.assertIn(repr(value), message)

    def test_builtin_by_short_name(self) -> None:
        """Every built-in resolves by its short name."""
        for name, maker in BUILTINS.items():
            self.assertIs(parse("--protocol", name)["protocol_maker"], maker)
            self.assertIs(parse("-p", name)["protocol_maker"], maker)

    def test_under_twistd_error_is_one_line_and_exit_2(self) -> None:
        """As twistd's subcommand, a usage error is one line on stderr and
        exit status 2."""
        for args in [
            ["--protocol", "nope"],
            ["--max-connections", "0"],
            ["--listen", "bogus:1"],
            ["--no-such-option"],
        ]:
            options = Options()
            options.parent = usage.Options()
            stderr = options.stderr = io.StringIO()
            with self.assertRaises(SystemExit) as raised:
                options.parseOptions(args)
            self.assertEqual(raised.exception.code, 2)
            text = stderr.getvalue()
            self.assertEqual(text.count("\n"), 1)
            self.assertTrue(text.startswith("twistd stateproto: error: "), text)
            self.assertIn(args[0].lstrip("-"), text)

    def test_help_lists_every_option(self) -> None:
        """--help text names each option the issue asks for."""
        text = str(Options())
        for option in [
            "--listen",
            "--protocol",
            "--idle-timeout",
            "--max-connections",
            "--shutdown-timeout",
        ]:
            self.assertIn(option, text)


class ResolveProtocolTests(SynchronousTestCase):
    """
    C{--protocol} with dotted paths, resolved from the current directory.
    """

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="txstateproto-tap-"))
        self.addCleanup(shutil.rmtree, directory, True)
        (directory / "h1_handlers.py").write_text(
            textwrap.dedent(
                """
                from txstateproto import StateProtocol

                class Handler(StateProtocol):
                    def start(self):
                        yield self.read_line()

                def make_handler():
                    return Handler()

                class NotAProtocol:
                    pass

                NUMBER = 42
                """
            )
        )
        old_cwd = os.getcwd()
        old_path = list(sys.path)
        os.chdir(directory)

        def restore() -> None:
            os.chdir(old_cwd)
            sys.path[:] = old_path
            sys.modules.pop("h1_handlers", None)

        self.addCleanup(restore)
        self.directory = directory

    def test_class_from_current_directory(self) -> None:
        """A module in the current directory resolves though it is not on
        sys.path."""
        self.assertNotIn(str(self.directory), sys.path)
        maker = parse("--protocol", "h1_handlers.Handler")["protocol_maker"]
        self.assertEqual(maker.__name__, "Handler")
        self.assertIsInstance(maker(), StateProtocol)
        self.assertEqual(sys.path[0], os.getcwd())

    def test_callable_factory(self) -> None:
        """A callable making a StateProtocol is accepted as the maker."""
        maker = parse("--protocol", "h1_handlers.make_handler")["protocol_maker"]
        self.assertEqual(type(maker()).__name__, "Handler")

    def test_bad_names_say_what_was_tried(self) -> None:
        """Each bad name gives a one-line usage error naming it and why."""
        cases = {
            "nope": "not a dotted path",
            "no_such_module_h1.Thing": "no module named 'no_such_module_h1'",
            "h1_handlers.Missing": "module 'h1_handlers' has no attribute 'Missing'",
            "h1_handlers.NotAProtocol": "not a txstateproto.StateProtocol subclass",
            "h1_handlers.NUMBER": "found a int",
            "h1_handlers..x": "--protocol 'h1_handlers..x'",
        }
        for name, expected in cases.items():
            with self.assertRaises(usage.UsageError) as raised:
                parse("--protocol", name)
            message = str(raised.exception)
            self.assertIn(f"--protocol {name!r}", message)
            self.assertIn(expected, message)
            self.assertNotIn("\n", message)
        # The import attempts say where they looked.
        with self.assertRaises(usage.UsageError) as raised:
            parse("--protocol", "h1_handlers.Missing")
        self.assertIn(os.getcwd(), str(raised.exception))
        self.assertIn("not a built-in (echo)", str(raised.exception))


class ServiceTests(SynchronousTestCase):
    """
    The service tree L{makeService} builds, on fake endpoints.
    """

    def test_one_listening_service_per_endpoint(self) -> None:
        """Each --listen gets a child service listening with one factory."""
        served = Served("--listen", "tcp:1", "--listen", "tcp:2")
        self.assertEqual(len(list(IService(served.service))), 2)
        self.assertIs(served.endpoints[1].factory, served.factory)

    def test_logs_bound_address(self) -> None:
        """Listening logs the address actually bound, and the endpoint
        string."""
        events = capture_tap_log(self)
        endpoints = [
            FakeEndpoint(IPv4Address("TCP", "127.0.0.1", 43210)),
            FakeEndpoint(IPv6Address("TCP", "::1", 43211)),
        ]
        Served("--listen", "tcp:0", "--listen", "tcp6:0", endpoints=endpoints)
        listening = [e for e in events if "description" in e]
        self.assertEqual(
            [(e["address"], e["description"], e["protocol"]) for e in listening],
            [("127.0.0.1:43210", "tcp:0", "echo"), ("[::1]:43211", "tcp6:0", "echo")],
        )

    def test_failing_to_listen_raises_from_start(self) -> None:
        """A listen failure stops startService instead of serving nothing."""
        options = parse()
        options["endpoints"] = [FakeEndpoint(PEER, error=OSError("in use"))]
        service = makeService(options, clock=Clock())
        with self.assertRaises(OSError):
            service.startService()

    def test_served_protocol_gets_idle_timeout_and_factory(self) -> None:
        """--idle-timeout is set on each protocol, which closes when idle."""
        served = Served("--idle-timeout", "5")
        h = served.harness()
        self.assertEqual(h.protocol.idle_timeout, 5.0)
        self.assertIs(h.protocol.factory, served.factory)
        served.clock.advance(5)
        self.assertTrue(h.closed)

    def test_maker_failure_drops_connection_and_logs(self) -> None:
        """A maker that raises or makes a non-StateProtocol drops the
        connection, logged."""
        events = capture_tap_log(self)

        def broken() -> StateProtocol:
            raise RuntimeError("boom")

        for maker, level in [(broken, LogLevel.critical), (Protocol, LogLevel.error)]:
            served = Served()
            served.factory._maker = maker  # type: ignore[attr-defined]
            self.assertIsNone(served.factory.buildProtocol(PEER))
            self.assertEqual(events[-1]["log_level"], level)
            self.assertEqual(events[-1]["peer"], "127.0.0.1:40000")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class MaxConnectionsTests(SynchronousTestCase):
    """
    C{--max-connections}: refusals are immediate, clean and counted.
    """

    def test_refuses_beyond_limit_and_counts(self) -> None:
        """The third connection with a limit of two is closed at once."""
        events = capture_tap_log(self)
        served = Served("--max-connections", "2")
        first, second = served.harness(), served.harness()
        refused = served.connect()
        assert isinstance(refused, Protocol)
        self.assertNotIsInstance(refused, StateProtocol)
        transport = refused.transport
        assert transport is not None
        self.assertTrue(transport.disconnecting)  # type: ignore[attr-defined]
        self.assertEqual(transport.value(), b"")  # type: ignore[attr-defined]
        [refusal] = [e for e in events if "refused" in e]
        self.assertEqual(refusal["log_level"], LogLevel.warn)
        self.assertEqual((refusal["limit"], refusal["refused"]), (2, 1))
        self.assertEqual(refusal["peer"], "127.0.0.1:40000")
        self.assertFalse(first.closed or second.closed)

    def test_closed_connection_frees_a_slot(self) -> None:
        """Once a served connection closes, a new one is served again."""
        served = Served("--max-connections", "1")
        first = served.harness()
        self.assertNotIsInstance(served.connect(), StateProtocol)
        first.lose_connection()
        self.assertIsInstance(served.harness().protocol, StateProtocol)
        self.assertEqual(served.factory.refused, 1)  # type: ignore[attr-defined]


class ShutdownTests(SynchronousTestCase):
    """
    Graceful shutdown on C{stopService}.
    """

    def test_stops_listening_cancels_and_says_goodbye(self) -> None:
        """Listening stops, each conversation is cancelled, and a handler's
        goodbye is written before its connection closes."""
        events = capture_tap_log(self)
        served = Served()
        served.factory._maker = Goodbye  # type: ignore[attr-defined]
        clients = [served.harness(), served.harness()]
        clients[0].feed(b"hi\n")
        stopping = served.service.stopService()
        self.assertTrue(served.endpoints[0].port.stopped)
        self.assertEqual(clients[0].take_output(), b"hi\nBYE\n")
        self.assertEqual(clients[1].take_output(), b"BYE\n")
        self.assertTrue(all(c.closed for c in clients))
        self.assertIsNone(self.successResultOf(stopping))
        self.assertEqual(served.clock.getDelayedCalls(), [])
        summary = events[-1]
        self.assertEqual(
            (summary["served"], summary["refused"], summary["aborted"]), (2, 0, 0)
        )

    def test_echo_ends_without_writing(self) -> None:
        """The built-in echo just stops when cancelled."""
        served = Served()
        h = served.harness()
        h.feed(b"a\n")
        h.take_output()
        self.successResultOf(served.service.stopService())
        self.assertEqual(h.take_output(), b"")
        self.assertTrue(h.closed)

    def test_waits_for_slow_cleanup_then_aborts(self) -> None:
        """A conversation still running at --shutdown-timeout is aborted,
        and counted."""
        events = capture_tap_log(self)
        served = Served("--shutdown-timeout", "3")
        served.factory._maker = Stubborn  # type: ignore[attr-defined]
        stubborn = served.harness()
        served.factory._maker = Goodbye  # type: ignore[attr-defined]
        polite = served.harness()
        stopping = served.service.stopService()
        self.assertNoResult(stopping)
        self.assertFalse(stubborn.closed)
        self.assertEqual(polite.take_output(), b"BYE\n")
        self.assertTrue(polite.closed)
        served.clock.advance(2.9)
        self.assertNoResult(stopping)
        served.clock.advance(0.1)
        self.assertIsNone(self.successResultOf(stopping))
        self.assertTrue(stubborn.transport.disconnected)
        self.assertEqual(served.factory.aborted, 1)  # type: ignore[attr-defined]
        self.assertEqual(events[-1]["aborted"], 1)

    def test_abort_now_only_during_shutdown(self) -> None:
        """abort_now does nothing while serving, and ends a shutdown at once
        while one is waiting."""
        events = capture_tap_log(self)
        served = Served("--shutdown-timeout", "60")
        served.factory._maker = Stubborn  # type: ignore[attr-defined]
        h = served.harness()
        served.factory.abort_now("for a test")  # type: ignore[attr-defined]
        self.assertFalse(h.transport.disconnected)
        stopping = served.service.stopService()
        self.assertNoResult(stopping)
        served.factory.abort_now("for a test")  # type: ignore[attr-defined]
        self.successResultOf(stopping)
        self.assertTrue(h.transport.disconnected)
        self.assertEqual(served.clock.getDelayedCalls(), [])
        [warning] = [e for e in events if "why" in e]
        self.assertEqual((warning["count"], warning["why"]), (1, "for a test"))

    def test_second_signal_handler_is_installed_then_restored(self) -> None:
        """During a shutdown under a real reactor, SIGTERM and SIGINT abort
        through the reactor loop; afterwards the previous handlers are
        back."""
        calls: list[tuple[Any, ...]] = []

        class FakeReactor:
            def callFromThread(self, f: Any, *args: Any) -> None:
                calls.append((f, *args))

        def previous(signum: int, frame: object) -> None:
            raise AssertionError("the reactor's handler must not run")

        for signum in (signal.SIGTERM, signal.SIGINT):
            self.addCleanup(signal.signal, signum, signal.getsignal(signum))
            signal.signal(signum, previous)
        options = parse("--shutdown-timeout", "60")
        options["endpoints"] = [FakeEndpoint(PEER)]
        clock = Clock()
        service = _Server(
            _ServerFactory(Stubborn, "stubborn", None, None, clock),
            60.0,
            FakeReactor(),  # type: ignore[arg-type]
        )
        service.startService()
        h = ProtocolHarness(service.factory.buildProtocol(PEER), clock=clock)  # type: ignore[arg-type]
        stopping = service.stopService()
        handler = signal.getsignal(signal.SIGTERM)
        self.assertIsNot(handler, previous)
        self.assertIs(signal.getsignal(signal.SIGINT), handler)
        assert callable(handler)
        handler(signal.SIGINT, None)
        [(function, why)] = calls
        self.assertEqual(why, "on a second signal (SIGINT)")
        function(why)
        self.successResultOf(stopping)
        self.assertTrue(h.transport.disconnected)
        self.assertIs(signal.getsignal(signal.SIGTERM), previous)
        self.assertIs(signal.getsignal(signal.SIGINT), previous)

    def test_refuses_connections_while_shutting_down(self) -> None:
        """A connection accepted during shutdown is dropped."""
        served = Served("--shutdown-timeout", "3")
        served.factory._maker = Stubborn  # type: ignore[attr-defined]
        served.harness()
        stopping = served.service.stopService()
        self.assertIsNone(served.connect())
        served.clock.advance(3)
        self.successResultOf(stopping)

    def test_no_connections_stops_at_once(self) -> None:
        """With nothing connected, stopService fires at once and leaves no
        timer."""
        served = Served()
        self.successResultOf(served.service.stopService())
        self.assertEqual(served.clock.getDelayedCalls(), [])

    def test_closes_connection_without_conversation(self) -> None:
        """A protocol not yet connected to its conversation (a wrapper still
        reading a header) is closed rather than cancelled."""
        served = Served()
        protocol = served.factory.buildProtocol(PEER)
        assert isinstance(protocol, StateProtocol)
        stopping = served.service.stopService()
        self.assertEqual(protocol.state, ConnectionState.NOT_CONNECTED)
        protocol.connectionLost()
        self.successResultOf(stopping)


class BuiltinEchoTests(SynchronousTestCase):
    """
    The built-in C{echo} handler (L{txstateproto._builtin.Echo}).
    """

    def test_echoes_newline_lines_as_sent(self) -> None:
        """Each line comes back as sent; a CR before the LF (telnet) stays."""
        h = ProtocolHarness(Echo())
        h.feed(b"one\ntwo\r\nthr", chunk_size=3)
        self.assertEqual(h.take_output(), b"one\ntwo\r\n")
        h.feed(b"ee\n")
        self.assertEqual(h.take_output(), b"three\n")

    def test_waits_for_the_peer_to_read(self) -> None:
        """While the transport's buffer is full, the next line is not echoed."""
        h = ProtocolHarness(Echo())
        h.pause_writing()
        h.feed(b"a\nb\n")
        self.assertEqual(h.take_output(), b"a\n")
        h.resume_writing()
        self.assertEqual(h.take_output(), b"b\n")

    def test_cancel_ends_it_quietly(self) -> None:
        """Cancelled (shutdown), it writes nothing more and closes."""
        h = ProtocolHarness(Echo())
        conversation = h.protocol.conversation
        assert conversation is not None
        conversation.cancel()
        self.assertEqual(h.take_output(), b"")
        self.assertTrue(h.closed)


class DescribeTests(SynchronousTestCase):
    """
    Addresses as the log shows them.
    """

    def test_address_forms(self) -> None:
        """IPv4, IPv6 and UNIX addresses read as a person writes them."""
        self.assertEqual(_describe(IPv4Address("TCP", "10.0.0.1", 80)), "10.0.0.1:80")
        self.assertEqual(_describe(IPv6Address("TCP", "::1", 80)), "[::1]:80")
        self.assertEqual(_describe(UNIXAddress(b"/run/x.sock")), "/run/x.sock")
