"""
Line echo with Twisted's LineReceiver: the callback style, the named peer.
"""

from __future__ import annotations

from _common import serve_twisted
from twisted.protocols.basic import LineReceiver


class Echo(LineReceiver):
    """
    Echo every line back.
    """

    def lineReceived(self, line: bytes) -> None:
        # LineReceiver.sendLine has no annotations in Twisted.
        self.sendLine(line)  # type: ignore[no-untyped-call]


def main() -> None:
    """
    Serve until SIGTERM.
    """
    serve_twisted(Echo, __doc__ or "")


if __name__ == "__main__":
    main()
