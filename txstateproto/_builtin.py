"""
The handlers C{twistd stateproto --protocol NAME} serves by short name.

This module owns the built-in handlers and the table of their names. It is
imported by L{txstateproto.tap} only; it must not import anything from
C{examples/} (which is not part of the installed package), nor know about
twistd or options.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping
from types import MappingProxyType
from typing import Any

from txstateproto._protocol import StateProtocol

__all__ = ["BUILTINS", "DEFAULT_BUILTIN", "Echo"]


class Echo(StateProtocol):
    """
    A line echo server: it writes back each line it reads, as it was sent.

    Lines end with C{b"\\n"}, so C{nc} and C{telnet} both work: a C{b"\\r"}
    before the C{b"\\n"} stays part of the line and is sent back with it. It
    waits for the peer to read each echoed line before reading the next
    (L{drain}), so a client that sends without reading is pushed back by TCP
    instead of growing the server's memory. It runs until the peer closes
    the connection; a line longer than C{max_line_length} ends it with a
    L{LineTooLongError}, logged as a warning. When cancelled (the connection
    was lost, or the server is shutting down), it just stops.

    @cvar delimiter: C{b"\\n"}.
    """

    delimiter = b"\n"

    def start(self) -> Generator[Any, Any, None]:
        """
        Echo lines until the connection closes.

        @return: The conversation's body.
        """
        while True:
            line = yield self.read_line()
            self.write_line(line)
            yield self.drain()


#: The default C{--protocol}.
DEFAULT_BUILTIN = "echo"

#: The built-in handlers by short name: each value, called with no
#: arguments, makes a protocol for one connection.
BUILTINS: Mapping[str, Callable[[], StateProtocol]] = MappingProxyType({"echo": Echo})
