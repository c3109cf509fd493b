"""
A bare Twisted Protocol echoing raw bytes: no framing at all, so the ceiling
for anything that runs on Twisted's reactor and transports.
"""

from __future__ import annotations

from _common import serve_twisted
from twisted.internet.protocol import Protocol


class Echo(Protocol):
    """
    Echo every chunk back as it arrives.
    """

    def dataReceived(self, data: bytes) -> None:
        # Typed as optional; it is always set once data arrives.
        self.transport.write(data)  # type: ignore[union-attr]


def main() -> None:
    """
    Serve until SIGTERM.
    """
    serve_twisted(Echo, __doc__ or "")


if __name__ == "__main__":
    main()
