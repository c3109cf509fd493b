"""
An experiment, not a peer users would write: the bare Protocol echo of
C{protocol_echo.py}, sending eagerly when nothing is queued.

Twisted's C{transport.write()} only buffers and registers the socket for
writing; the bytes leave on the next reactor turn. Here, when the transport is
exactly a plain TCP server connection with TLS off, nothing buffered and no
close under way, the reply goes straight to C{socket.send()}; whatever the
kernel does not take (a partial send, C{EAGAIN}, an error) goes to
C{transport.write()} as usual, so ordering is kept and errors are reported by
the transport. It measures what the eager send of issue 9 is worth on the
cheapest Twisted server, apart from the rest of StateProtocol's cost, for
C{docs/benchmarks.md}. StateProtocol itself sends eagerly on plain TCP in its
own way (its transport's C{doWrite()} at the end of C{dataReceived}: "Writes"
in the module docstring of C{txstateproto/_protocol.py}).
"""

from __future__ import annotations

from _common import serve_twisted
from twisted.internet import tcp
from twisted.internet.protocol import Protocol


def send_eagerly(transport: object, data: bytes) -> bytes:
    """
    Send what the kernel takes at once if it is safe, and return the rest.

    @param transport: The protocol's transport.
    @param data: The bytes to send.
    @return: The bytes still to be written through C{transport.write()}.
    """
    if (
        type(transport) is not tcp.Server
        or transport.TLS
        or transport.dataBuffer
        or transport._tempDataLen
        or transport.disconnecting
        or transport._writeDisconnecting
        or not transport.connected
    ):
        return data
    try:
        sent = transport.socket.send(data)
    except OSError:
        # EAGAIN or a real error: the transport's own write path retries
        # or reports it.
        return data
    return data[sent:]


class Echo(Protocol):
    """
    Echo every chunk back, sending eagerly when that is safe.
    """

    def dataReceived(self, data: bytes) -> None:
        rest = send_eagerly(self.transport, data)
        if rest:
            # Typed as optional; it is always set once data arrives.
            self.transport.write(rest)  # type: ignore[union-attr]


def main() -> None:
    """
    Serve until SIGTERM.
    """
    serve_twisted(Echo, __doc__ or "")


if __name__ == "__main__":
    main()
