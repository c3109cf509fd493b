"""
Tests for L{txstateproto.testing}: L{ProtocolHarness} and L{connect_pair},
the helpers users test their handlers with.
"""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, Scripted, idle, released
from txstateproto import ConnectionState, StateProtocol
from txstateproto.testing import ProtocolHarness, connect_pair


class Recording(StateProtocol):
    """
    A protocol that records the size of every C{dataReceived} call and each
    C{connectionLost} reason, and whose handler just waits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []
        self.reasons: list[Failure] = []
        self.read_lost = 0

    def start(self) -> Body:
        """
        Wait for ever.
        """
        yield Deferred()

    def dataReceived(self, data: bytes) -> None:
        """
        Record the chunk, then buffer it as usual.
        """
        self.chunks.append(data)
        super().dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """
        Record the reason, then clean up as usual.
        """
        self.reasons.append(reason)
        super().connectionLost(reason)

    def readConnectionLost(self) -> None:
        """
        Count the call, then react as usual.
        """
        self.read_lost += 1
        super().readConnectionLost()


class ProtocolHarnessTests(SynchronousTestCase):
    """
    L{ProtocolHarness} connects a protocol to a C{StringTransport} and a
    C{Clock} and plays the peer.
    """

    def test_connects_and_runs_to_first_wait(self) -> None:
        """
        When the constructor returns, the conversation has run to its first
        wait and its output is in the transport.
        """

        def script(p: Scripted) -> Body:
            p.write_line(b"HELLO")
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        self.assertIs(h.protocol.state, ConnectionState.CONNECTED)
        self.assertIs(h.protocol.transport, h.transport)
        self.assertEqual(h.take_output(), b"HELLO\r\n")
        self.assertFalse(h.closed)

    def test_clock_is_the_protocols(self) -> None:
        """
        The protocol's clock is a new C{Clock}, or the one given.
        """
        h = ProtocolHarness(idle())
        self.assertIsInstance(h.clock, task.Clock)
        self.assertIs(h.protocol.clock, h.clock)
        clock = task.Clock()
        h = ProtocolHarness(idle(), clock=clock)
        self.assertIs(h.clock, clock)
        self.assertIs(h.protocol.clock, clock)

    def test_peer_defaults_to_loopback_and_can_be_set(self) -> None:
        """
        The transport reports C{127.0.0.1:40000} as the peer unless another
        address is given.
        """
        h = ProtocolHarness(idle())
        self.assertEqual(h.transport.getPeer(), IPv4Address("TCP", "127.0.0.1", 40000))
        peer = IPv6Address("TCP", "::1", 5)
        self.assertEqual(ProtocolHarness(idle(), peer=peer).transport.getPeer(), peer)

    def test_feed_whole_or_in_chunks(self) -> None:
        """
        C{feed} delivers the bytes in one call, or in calls of at most
        C{chunk_size} bytes.
        """
        p = Recording()
        h = ProtocolHarness(p)
        h.feed(b"0123456789")
        h.feed(b"abcdefghij", chunk_size=3)
        self.assertEqual(p.chunks, [b"0123456789", b"abc", b"def", b"ghi", b"j"])

    def test_feed_chunks_delivers_each_chunk(self) -> None:
        """
        C{feed_chunks} makes one C{dataReceived} call per chunk, in order.
        """
        p = Recording()
        h = ProtocolHarness(p)
        h.feed_chunks([b"a", b"bc", b"def"])
        self.assertEqual(p.chunks, [b"a", b"bc", b"def"])

    def test_take_output_returns_and_forgets(self) -> None:
        """
        C{take_output} returns what was written since the last call.
        """
        h = ProtocolHarness(idle())
        h.protocol.write(b"one")
        self.assertEqual(h.take_output(), b"one")
        self.assertEqual(h.take_output(), b"")
        h.protocol.write(b"two")
        self.assertEqual(h.take_output(), b"two")

    def test_protocol_closing_delivers_connection_lost_at_once(self) -> None:
        """
        When the protocol closes, C{connectionLost} arrives at once with a
        clean L{ConnectionDone}, and the transport forgets the protocol.
        """

        def script(p: Scripted) -> Body:
            yield p.read_line()

        h = ProtocolHarness(Scripted(script))
        h.feed(b"bye\r\n")
        self.assertTrue(h.closed)
        self.assertIs(h.protocol.state, ConnectionState.CLOSED)
        assert h.protocol.disconnect_reason is not None
        self.assertTrue(h.protocol.disconnect_reason.check(ConnectionDone))
        self.assertFalse(hasattr(h.transport, "protocol"))

    def test_lose_connection_once_with_given_reason(self) -> None:
        """
        C{lose_connection} delivers its reason (a clean close by default)
        once; later calls do nothing.
        """
        p = Recording()
        h = ProtocolHarness(p)
        reason = Failure(ConnectionLost("reset"))
        h.lose_connection(reason)
        h.lose_connection()
        self.assertEqual(p.reasons, [reason])
        self.assertTrue(h.closed)

        p = Recording()
        h = ProtocolHarness(p)
        h.lose_connection()
        [default] = p.reasons
        self.assertTrue(default.check(ConnectionDone))

    def test_half_close_calls_read_connection_lost(self) -> None:
        """
        C{half_close} tells the protocol the peer shut its write side.
        """
        p = Recording()
        p.half_close = True
        h = ProtocolHarness(p)
        h.half_close()
        self.assertEqual(p.read_lost, 1)
        self.assertIs(p.state, ConnectionState.PEER_CLOSED)

    def test_pause_and_resume_writing_drive_drain(self) -> None:
        """
        C{pause_writing} makes C{drain} wait; C{resume_writing} fires it.
        """
        h = ProtocolHarness(idle())
        h.pause_writing()
        d = h.protocol.drain()
        self.assertNoResult(d)
        h.resume_writing()
        self.successResultOf(d)

    def test_reading_paused_follows_the_protocol(self) -> None:
        """
        C{reading_paused} says whether the protocol stopped reading.
        """
        h = ProtocolHarness(idle())
        self.assertFalse(h.reading_paused)
        h.protocol.pause()
        self.assertTrue(h.reading_paused)
        h.protocol.unpause()
        self.assertFalse(h.reading_paused)

    def test_closed_protocol_is_not_kept_alive_by_the_harness(self) -> None:
        """
        After the connection closes, dropping the harness frees the
        protocol without the garbage collector.
        """

        def scenario() -> StateProtocol:
            p = idle()
            ProtocolHarness(p).lose_connection()
            return p

        self.assertTrue(released(scenario))


class Echo(StateProtocol):
    """
    Echo lines until C{QUIT}.
    """

    def start(self) -> Body:
        """
        Echo each line back.
        """
        while True:
            line = yield self.read_line()
            if line == b"QUIT":
                return
            self.write_line(line)


class ConnectPairTests(SynchronousTestCase):
    """
    L{connect_pair} runs a server and a client against each other through
    iosim.
    """

    def test_pair_exchanges_lines(self) -> None:
        """
        What one side writes reaches the other when the pump is flushed.
        """
        replies: list[bytes] = []

        def client(p: Scripted) -> Body:
            for word in (b"one", b"two"):
                p.write_line(word)
                replies.append((yield p.read_line()))
            p.write_line(b"QUIT")
            yield p.read_line()

        server, c = Echo(), Scripted(client)
        pump = connect_pair(server, c)
        pump.flush()
        self.assertEqual(replies, [b"one", b"two"])
        self.assertIs(server.state, ConnectionState.CLOSED)
        self.assertIs(c.state, ConnectionState.CLOSED)
        self.assertEqual(
            server.transport.getPeer(),  # type: ignore[union-attr]
            IPv4Address("TCP", "127.0.0.1", 40000),
        )

    def test_pair_shares_the_clock(self) -> None:
        """
        Both protocols use the pump's clock, so timeouts are driven by it.
        """
        failures: list[Failure] = []

        def client(p: Scripted) -> Body:
            try:
                yield p.read_line(timeout=5)
            except Exception:
                failures.append(Failure())

        server, c = Echo(), Scripted(client)
        clock = task.Clock()
        pump = connect_pair(server, c, clock)
        self.assertIs(pump.clock, clock)
        self.assertIs(server.clock, clock)
        self.assertIs(c.clock, clock)
        clock.advance(5)
        pump.flush()
        [failure] = failures
        self.assertFalse(failure.check(CancelledError))
        self.assertIs(server.state, ConnectionState.CLOSED)
