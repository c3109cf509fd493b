"""
Test helpers for L{StateProtocol} handlers: a protocol connected to an
in-memory transport and a fake clock, fed with bytes in chosen chunks.

Built on L{twisted.internet.testing} and L{twisted.internet.task.Clock}; it
adds only the wiring. Imported by tests (ours and users'), never by the
library.

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

from txstateproto._protocol import StateProtocol

__all__ = ["ProtocolHarness"]


@final
class ProtocolHarness:
    """
    A L{StateProtocol} connected to a L{StringTransportWithDisconnection} and
    a L{task.Clock}.

    The connection is made in the constructor, so the conversation has
    started (and run to its first wait) when it returns. When the protocol
    closes the connection, C{connectionLost} is delivered at once, as a real
    transport would after flushing.

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
        self.transport = StringTransportWithDisconnection(
            peerAddress=peer or IPv4Address("TCP", "127.0.0.1", 40000)
        )
        self.transport.protocol = protocol
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
        Simulate the peer going away.

        @param reason: The failure given to C{connectionLost}; a clean
            L{ConnectionDone} by default.
        """
        if not self.transport.connected:
            return
        self.transport.connected = False
        self.protocol.connectionLost(
            reason if reason is not None else Failure(ConnectionDone())
        )

    def half_close(self) -> None:
        """
        Simulate the peer shutting its write side (C{readConnectionLost}).
        """
        self.protocol.readConnectionLost()

    @property
    def closed(self) -> bool:
        """
        Whether the connection has been closed (by either side).
        """
        return not self.transport.connected
