"""
A kvstore server on a 127.0.0.1 loopback port for one test, with its own
store and a fake clock for expiry, served with C{Factory.forProtocol} and a
L{TCP4ServerEndpoint}.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory

from examples.kvstore import KVStoreProtocol, Store

__all__ = ["LoopbackServer"]


class LoopbackServer:
    """
    A listening kvstore server; each connection uses L{store} and L{clock}.

    @ivar store: The key space every connection shares.
    @ivar clock: The fake clock every connection expires keys on.
    @ivar connections: The server side of every connection accepted.
    @ivar port: The TCP port, once L{start} has fired.
    """

    def __init__(self, fake_clock: bool = True) -> None:
        """
        @param fake_clock: Use a L{task.Clock} for expiry (else the reactor).
        """
        self.store = Store()
        self.clock = task.Clock()
        self.connections: list[KVStoreProtocol] = []
        self.port = 0
        self._listening: IListeningPort | None = None
        server = self

        class Isolated(KVStoreProtocol):
            """
            The example's protocol on this server's store and clock.
            """

            store = server.store

            def __init__(self) -> None:
                super().__init__()
                if fake_clock:
                    self.clock = server.clock
                server.connections.append(self)

        self._factory = Factory.forProtocol(Isolated)

    @defer.inlineCallbacks
    def start(self) -> Generator[Deferred[Any], Any, None]:
        """
        Listen on 127.0.0.1, on a port the kernel picks.
        """
        endpoint = TCP4ServerEndpoint(  # type: ignore[no-untyped-call]
            reactor, 0, interface="127.0.0.1"
        )
        listening = yield endpoint.listen(  # type: ignore[no-untyped-call]
            self._factory
        )
        assert IListeningPort.providedBy(listening)
        self._listening = listening
        self.port = listening.getHost().port  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def stop(self) -> Generator[Deferred[Any], Any, None]:
        """
        Stop listening and wait until every connection has closed (the
        clients must have closed theirs).
        """
        if self._listening is not None:
            yield defer.maybeDeferred(self._listening.stopListening)
        for connection in self.connections:
            yield connection.when_closed()
