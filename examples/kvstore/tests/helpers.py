"""
Shared helpers of the kvstore tests: RESP encoding of commands, and a
connection driven through L{ProtocolHarness}.
"""

from __future__ import annotations

from twisted.internet import task

from examples.kvstore import KVStoreProtocol, Store
from txstateproto.testing import ProtocolHarness

__all__ = ["Connection", "command"]


def command(*args: bytes | str | int) -> bytes:
    """
    Encode a command as a client library sends it: a multibulk array of
    bulk strings.

    @param args: The command name and arguments (C{str} as UTF-8, C{int} as
        decimal).
    @return: The bytes on the wire.
    """
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, int):
            data = b"%d" % arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Connection:
    """
    One client connection to a L{KVStoreProtocol}, in memory, with a fake
    clock.

    @ivar protocol: The server side.
    @ivar harness: Its harness (transport and clock).
    @ivar writes: How many times the protocol called the transport's
        C{write}.
    """

    def __init__(
        self,
        store: Store | None = None,
        clock: task.Clock | None = None,
        **settings: int,
    ):
        """
        Connect a new protocol.

        @param store: The key space; a new one by default.
        @param clock: The clock; a new one by default.
        @param settings: Attributes to set on the protocol before it is
            connected (C{max_pending_replies=10}).
        """
        self.protocol = KVStoreProtocol()
        self.protocol.store = store if store is not None else Store()
        for name, value in settings.items():
            setattr(self.protocol, name, value)
        self.writes = 0
        self.harness = ProtocolHarness(self.protocol, clock)
        transport = self.harness.transport
        write = transport.write

        def counting_write(data: bytes) -> None:
            self.writes += 1
            write(data)  # type: ignore[no-untyped-call]

        transport.write = counting_write  # type: ignore[method-assign]

    @property
    def clock(self) -> task.Clock:
        """
        The connection's fake clock.
        """
        return self.harness.clock

    @property
    def store(self) -> Store:
        """
        The connection's key space.
        """
        return self.protocol.store

    def call(self, *args: bytes | str | int) -> bytes:
        """
        Send one command and return what the server answered.

        @param args: The command name and arguments.
        @return: The reply bytes.
        """
        self.harness.feed(command(*args))
        return self.harness.take_output()

    def send(self, data: bytes) -> bytes:
        """
        Send raw bytes and return what the server answered.

        @param data: The bytes.
        @return: The reply bytes.
        """
        self.harness.feed(data)
        return self.harness.take_output()

    @property
    def closed(self) -> bool:
        """
        Whether the connection is closed.
        """
        return self.harness.closed
