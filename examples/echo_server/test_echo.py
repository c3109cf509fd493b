"""
Tests for the echo server example, driven through
L{txstateproto.testing.ProtocolHarness}: an in-memory transport and a fake
clock, so no sockets and no real time.
"""

from __future__ import annotations

from twisted.internet.error import ConnectionLost
from twisted.logger import LogEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from examples.echo_server import EchoServer
from txstateproto import tap
from txstateproto.testing import ProtocolHarness

GREETING = b"HELLO: I echo lines; QUIT to leave\n"


class EchoServerTests(SynchronousTestCase):
    """
    The example's states: greeting, echo, timeout, QUIT, shutdown, loss.
    """

    def setUp(self) -> None:
        self.events: list[LogEvent] = []

        def observe(event: LogEvent) -> None:
            if event.get("log_namespace") == "examples.echo_server.echo":
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.h = ProtocolHarness(EchoServer())

    def ended_after(self) -> list[int]:
        """
        The line counts logged by the C{finally} block so far.
        """
        return [e["lines"] for e in self.events if "lines" in e]

    def test_greets_on_connect(self) -> None:
        """The greeting state says hello before anything is read."""
        self.assertEqual(self.h.take_output(), GREETING)

    def test_echoes_each_line_in_any_chunking(self) -> None:
        """Lines come back as sent, however the bytes are split."""
        self.h.take_output()
        self.h.feed(b"one\ntwo\nthree\n", chunk_size=1)
        self.assertEqual(self.h.take_output(), b"one\ntwo\nthree\n")
        self.assertFalse(self.h.closed)

    def test_telnet_line_endings(self) -> None:
        """A CRLF line (telnet) is echoed without its CR doubling up."""
        self.h.take_output()
        self.h.feed(b"hi\r\n")
        self.assertEqual(self.h.take_output(), b"hi\n")

    def test_quit_says_bye_and_closes(self) -> None:
        """QUIT ends the handler: BYE, the connection closes, finally logs."""
        self.h.take_output()
        self.h.feed(b"a\nQUIT\r\nignored\n")
        self.assertEqual(self.h.take_output(), b"a\nBYE\n")
        self.assertTrue(self.h.closed)
        self.assertEqual(self.ended_after(), [1])

    def test_line_timeout_closes_and_leaves_no_timer(self) -> None:
        """A line that does not arrive within line_timeout ends the session."""
        self.h.take_output()
        self.h.feed(b"partial")
        self.h.clock.advance(EchoServer.line_timeout - 1)
        self.assertFalse(self.h.closed)
        self.h.clock.advance(1)
        self.assertEqual(self.h.take_output(), b"TIMEOUT: no line for a while, bye\n")
        self.assertTrue(self.h.closed)
        self.assertEqual(self.h.clock.getDelayedCalls(), [])
        self.assertEqual(self.ended_after(), [0])

    def test_timeout_is_per_line(self) -> None:
        """Each line gets the full timeout afresh."""
        self.h.take_output()
        for _ in range(3):
            self.h.clock.advance(EchoServer.line_timeout - 1)
            self.h.feed(b"x\n")
        self.assertEqual(self.h.take_output(), b"x\n" * 3)
        self.assertFalse(self.h.closed)

    def test_shutdown_cancel_says_goodbye(self) -> None:
        """A cancel while connected (server shutdown) sends a goodbye, then
        closes."""
        self.h.take_output()
        self.h.feed(b"a\nb\n")
        conversation = self.h.protocol.conversation
        assert conversation is not None
        conversation.cancel()
        self.assertEqual(self.h.take_output(), b"a\nb\nBYE: server shutting down\n")
        self.assertTrue(self.h.closed)
        self.assertEqual(self.ended_after(), [2])

    def test_lost_connection_runs_finally_quietly(self) -> None:
        """Losing the connection runs the clean-up and writes nothing."""
        self.h.take_output()
        self.h.feed(b"a\n")
        self.h.take_output()
        self.h.lose_connection(Failure(ConnectionLost()))
        self.assertEqual(self.h.take_output(), b"")
        self.assertEqual(self.ended_after(), [1])
        self.assertEqual(self.h.clock.getDelayedCalls(), [])


class PluginNameTests(SynchronousTestCase):
    """
    The README's command line names this example correctly.
    """

    def test_protocol_option_resolves_example(self) -> None:
        """--protocol examples.echo_server.EchoServer finds the class."""
        options = tap.Options()
        options.parseOptions(["--protocol", "examples.echo_server.EchoServer"])
        self.assertIs(options["protocol_maker"], EchoServer)
