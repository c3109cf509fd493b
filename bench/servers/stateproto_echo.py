"""
Line echo with txstateproto's StateProtocol, written the way a user would.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from _common import serve_twisted

from txstateproto import StateProtocol


class Echo(StateProtocol):
    """
    Echo every line back.
    """

    def start(self) -> Generator[Any, Any, None]:
        while True:
            line = yield self.read_line()
            self.write_line(line)


def main() -> None:
    """
    Serve until SIGTERM.
    """
    serve_twisted(Echo, __doc__ or "")


if __name__ == "__main__":
    main()
