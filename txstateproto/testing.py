"""
Test helpers for L{StateProtocol} handlers: a protocol connected to an
in-memory transport and a fake clock, fed with bytes in chosen chunks.

Built on L{twisted.internet.testing}, L{twisted.test.iosim} and
L{twisted.internet.task.Clock}; it adds only the wiring. Imported by tests
(ours and users'), never by the library.

  - L{ProtocolHarness}: one protocol, an in-memory transport and a fake
    clock; the test plays the peer byte by byte.
  - L{connect_pair}: a server and a client protocol talking to each other
    through L{twisted.test.iosim}, pumped by the test.

Example::

    from txstateproto.testing import ProtocolHarness

    def test_greets(self):
        h = ProtocolHarness(Greeter())
        self.assertEqual(h.take_output(), b"HELLO\\r\\n")
        h.feed(b"bob\\r\\n", chunk_size=1)
        h.clock.advance(30)
        ...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.test import iosim

from txstateproto._protocol import StateProtocol

__all__ = ["ProtocolHarness", "connect_pair"]


class _HarnessTransport(StringTransportWithDisconnection):
    """
    A L{StringTransportWithDisconnection} that, like Twisted's TCP
    transport, forgets its protocol once C{connectionLost} is delivered, so
    that the transport and the protocol do not keep each other alive.
    """

    def __init__(self, peer: IAddress) -> None:
        """
        @param peer: The address C{getPeer()} returns.
        """
        super().__init__(peerAddress=peer)  # type: ignore[no-untyped-call]

    def loseConnection(self) -> None:
        """
        Deliver C{connectionLost} with a clean L{ConnectionDone}, once.
        """
        self.lose(Failure(ConnectionDone("Bye.")))

    def lose(self, reason: Failure) -> None:
        """
        Drop the registered producer and deliver C{connectionLost(reason)},
        once, then drop the protocol, as Twisted's TCP transport does.
        """
        if not self.connected:
            return
        self.connected = False
        self.producer = None
        self.streaming = None
        protocol = self.protocol
        del self.protocol
        protocol.connectionLost(reason)


@final
class ProtocolHarness:
    """
    A L{StateProtocol} connected to a L{StringTransportWithDisconnection} and
    a L{task.Clock}.

    The connection is made in the constructor, so the conversation has
    started (and run to its first wait) when it returns. When the protocol
    closes the connection, C{connectionLost} is delivered at once, as a real
    transport would after flushing; like a real transport, the transport
    then forgets the protocol (C{transport.protocol} is gone), so nothing
    but the test keeps the protocol alive.

    The transport is the one the protocol writes to and pauses: C{value()}
    is what was written, C{producerState} is C{"paused"} while the protocol
    has stopped reading, and C{producer} is the protocol while it is
    registered.

    @ivar protocol: The protocol under test.
    @ivar transport: The in-memory transport; C{value()} is what was written.
    @ivar clock: The fake clock set as the protocol's C{clock}.
    """

    def __init__(
        self,
        protocol: StateProtocol,
        clock: task.Clock | None = None,
        peer: IAddress | None = None,
    ) -> None:
        """
        Connect C{protocol}.

        @param protocol: The protocol to run.
        @param clock: The clock to use; a new L{task.Clock} by default.
        @param peer: The peer address the transport reports; by default
            C{127.0.0.1:40000}.
        """
        self.protocol = protocol
        self.clock = clock if clock is not None else task.Clock()
        protocol.clock = self.clock
        self._transport = _HarnessTransport(
            peer or IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self._transport.protocol = protocol
        self.transport: StringTransportWithDisconnection = self._transport
        protocol.makeConnection(self.transport)  # type: ignore[no-untyped-call]

    def feed(self, data: bytes, chunk_size: int | None = None) -> None:
        """
        Deliver C{data} to the protocol, whole or in chunks of C{chunk_size}.

        @param data: The bytes the peer sends.
        @param chunk_size: Deliver at most this many bytes per
            C{dataReceived} call, or all at once if C{None}.
        """
        if chunk_size is None:
            self.protocol.dataReceived(data)
            return
        for i in range(0, len(data), chunk_size):
            self.protocol.dataReceived(data[i : i + chunk_size])

    def feed_chunks(self, chunks: Iterable[bytes]) -> None:
        """
        Deliver each chunk in its own C{dataReceived} call.

        @param chunks: The chunks, in order.
        """
        for chunk in chunks:
            self.protocol.dataReceived(chunk)

    def take_output(self) -> bytes:
        """
        Return what the protocol wrote since the last call, and forget it.

        @return: The bytes written.
        """
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def lose_connection(self, reason: Failure | None = None) -> None:
        """
        Simulate the peer going away; nothing happens if the connection is
        already closed.

        @param reason: The failure given to C{connectionLost}; a clean
            L{ConnectionDone} by default.
        """
        self._transport.lose(
            reason if reason is not None else Failure(ConnectionDone())
        )

    def half_close(self) -> None:
        """
        Simulate the peer shutting its write side (C{readConnectionLost}).
        """
        self.protocol.readConnectionLost()

    def pause_writing(self) -> None:
        """
        Simulate the transport's send buffer filling up: the protocol is
        told to stop producing, so L{StateProtocol.drain} waits.
        """
        self.protocol.pauseProducing()

    def resume_writing(self) -> None:
        """
        Simulate the transport's send buffer draining: waiting
        L{StateProtocol.drain} calls fire.
        """
        self.protocol.resumeProducing()

    @property
    def reading_paused(self) -> bool:
        """
        Whether the protocol has asked the transport to stop reading.
        """
        return bool(self.transport.producerState == "paused")

    @property
    def closed(self) -> bool:
        """
        Whether the connection has been closed (by either side).
        """
        return not self.transport.connected


def connect_pair(
    server: StateProtocol,
    client: StateProtocol,
    clock: task.Clock | None = None,
) -> iosim.IOPump:
    """
    Connect two protocols to each other in memory and run both
    conversations to their first wait.

    Bytes move only when the test pumps: C{pump.flush()} delivers everything
    written, both ways, until both sides are waiting; a side closing is
    delivered to the other by the same pumping. Both protocols use C{clock}.

    Example::

        pump = connect_pair(EchoServer(), EchoClient())
        pump.flush()

    @param server: The accepting side; its peer is C{127.0.0.1:40000}.
    @param client: The connecting side; its peer is C{127.0.0.1:8000}.
    @param clock: The clock both protocols use; a new L{task.Clock} by
        default. C{pump.clock} is this clock.
    @return: The L{iosim.IOPump} that moves bytes between them.
    """
    if clock is None:
        clock = task.Clock()
    server.clock = clock
    client.clock = clock
    server_address = IPv4Address("TCP", "127.0.0.1", 8000)
    client_address = IPv4Address("TCP", "127.0.0.1", 40000)
    server_transport = iosim.FakeTransport(  # type: ignore[no-untyped-call]
        server, True, hostAddress=server_address, peerAddress=client_address
    )
    client_transport = iosim.FakeTransport(  # type: ignore[no-untyped-call]
        client, False, hostAddress=client_address, peerAddress=server_address
    )
    pump: iosim.IOPump = iosim.connect(  # type: ignore[no-untyped-call]
        server, server_transport, client, client_transport, clock=clock
    )
    return pump
