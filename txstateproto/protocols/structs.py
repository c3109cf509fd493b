"""
Fixed-layout binary records described by a L{struct} format.

This module owns L{read_struct} and L{write_struct}; it must not know other
framings. (It is C{structs}, not C{struct}, so that it never shadows the
standard library module.)

A record is one counted read of C{struct.calcsize(format)} bytes, unpacked
with a compiled L{struct.Struct} (compiled formats are cached, so passing
the same format string on every call costs a dictionary lookup).
"""

from __future__ import annotations

import functools
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from txstateproto._protocol import StateProtocol

__all__ = ["read_struct", "write_struct"]


@functools.lru_cache(maxsize=256)
def _compile(fmt: str | bytes) -> struct.Struct:
    """
    Compile a format once.

    @param fmt: A L{struct} format.
    @return: The compiled format.
    @raise struct.error: If C{fmt} is not a valid format.
    """
    return struct.Struct(fmt)


def read_struct(
    proto: StateProtocol,
    fmt: str | bytes | struct.Struct,
    timeout: float | None = None,
) -> Deferred[tuple[Any, ...]]:
    """
    Read one record laid out as C{fmt} and return the unpacked values.

    ::

        version, flags, length = yield read_struct(self, "!BBH")

    Give the format a byte-order prefix (C{"!"}, C{">"}, C{"<"}): without
    one, L{struct} uses the machine's native order and alignment, which is
    rarely what a wire format means.

    @param proto: The protocol to read from.
    @param fmt: A L{struct} format string, or a compiled L{struct.Struct}.
    @param timeout: Seconds to wait, or C{None} for no limit.
    @return: A Deferred firing with the tuple of values (a one-field format
        still gives a one-element tuple). Cancelling it cancels the read;
        nothing is consumed.
    @raise struct.error: At once, if C{fmt} is not a valid format.
    @raise FrameTooLongError: (as the Deferred's failure) If the record is
        larger than C{proto.max_frame_size}.
    @raise twisted.internet.defer.TimeoutError: (as the failure) If the
        record is not complete within C{timeout}.
    @raise EndOfStreamError: (as the failure) If the peer half-closed before
        the record was complete (only with C{proto.half_close}).
    """
    layout = fmt if isinstance(fmt, struct.Struct) else _compile(fmt)
    return proto.read_exactly(layout.size, timeout).addCallback(layout.unpack)


def write_struct(
    proto: StateProtocol, fmt: str | bytes | struct.Struct, *values: Any
) -> None:
    """
    Pack C{values} as C{fmt} and write the record.

    @param proto: The protocol to write to.
    @param fmt: A L{struct} format string, or a compiled L{struct.Struct}.
    @param values: The values, one per field.
    @raise struct.error: If C{fmt} is invalid or the values do not fit it;
        nothing is written then.
    """
    layout = fmt if isinstance(fmt, struct.Struct) else _compile(fmt)
    proto.write(layout.pack(*values))
