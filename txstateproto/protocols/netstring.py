"""
Netstrings: C{<length>:<bytes>,}, for example C{5:hello,}.

The format is D. J. Bernstein's (U{https://cr.yp.to/proto/netstrings.txt}):
the length in ASCII decimal digits without leading zeros, a colon, that many
bytes, a comma. It is what Twisted's
L{NetstringReceiver<twisted.protocols.basic.NetstringReceiver>} speaks, so a
Twisted peer interoperates in both directions.

This module owns L{read_netstring} and L{write_netstring}; it must not know
other framings. It imports only L{StateProtocol}'s public read and write
methods and the error classes.

Reading is three steps: the digits up to the colon (a bounded delimited read,
so a peer sending endless digits costs at most L{_MAX_DIGITS} bytes), the
length check against the limit (before anything is read or buffered for the
body), then the body and its comma. When they are already buffered each step
takes its result from an already-fired Deferred, with no callback; otherwise
the steps are chained with C{addCallback}, through which Twisted forwards
C{cancel()} to the read being waited on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from txstateproto._errors import FrameTooLongError, FramingError, LineTooLongError

if TYPE_CHECKING:
    from txstateproto._protocol import StateProtocol

__all__ = ["read_netstring", "write_netstring"]

# The most length digits read before giving up on finding the colon: enough
# for any 64-bit length, so every length a peer can mean is parsed and
# reported with its value, and a peer cannot make us buffer more than this.
_MAX_DIGITS = 20

# Bodies shorter than this are read together with their comma and sliced
# (one small copy, one read fewer); longer ones are read separately from the
# comma so the body is not copied a second time.
_SPLIT = 65536

# Bodies at least this long are written as separate write()s instead of being
# joined with the header and comma (which would copy them once more).
_JOIN_LIMIT = 65536


def read_netstring(
    proto: StateProtocol,
    max_length: int | None = None,
    timeout: float | None = None,
) -> Deferred[bytes]:
    """
    Read one netstring and return its payload.

    ::

        payload = yield read_netstring(self, max_length=1024)

    @param proto: The protocol to read from.
    @param max_length: The longest payload accepted, in bytes. By default
        C{proto.max_frame_size}, which also caps any larger value given here.
    @param timeout: Seconds to wait for the whole netstring, or C{None} for
        no limit.
    @return: A Deferred firing with the payload (without length, colon or
        comma). Cancelling it cancels the read it is waiting on; if the
        length has been consumed by then, the stream is left in the middle
        of a netstring: close the connection rather than read on.
    @raise FramingError: (as the Deferred's failure) If the length is empty,
        not decimal digits, has a leading zero or more than 20 digits, or
        the payload is not followed by C{","}. The message says which and
        shows the offending bytes.
    @raise FrameTooLongError: (as the failure) If the announced length
        exceeds the limit, before anything is read for the payload;
        C{limit_name} is C{"max_length"} or C{"max_frame_size"}.
    @raise twisted.internet.defer.TimeoutError: (as the failure) If the
        netstring is not complete within C{timeout}.
    @raise EndOfStreamError: (as the failure) If the peer half-closed before
        the netstring was complete (only with C{proto.half_close}).
    """
    if max_length is None:
        limit, limit_name = proto.max_frame_size, "max_frame_size"
    else:
        limit, limit_name = max_length, "max_length"
    length = proto.read_until(b":", _MAX_DIGITS)
    digits = length.result if length.called else None
    if isinstance(digits, bytes):
        # The length was buffered: go on without a callback.
        netstring = _read_payload(digits, proto, limit, limit_name)
    else:
        netstring = length.addCallbacks(
            _read_payload,
            _length_too_long,
            callbackArgs=(proto, limit, limit_name),
        )
    if timeout is not None:
        netstring.addTimeout(timeout, proto.clock, _netstring_timed_out)
    return netstring


def _length_too_long(failure: Failure) -> Failure:
    """
    Say what a length read that found no colon means for a netstring.

    @param failure: The failure of the length read.
    @return: C{failure} unchanged if it is not about the missing colon.
    @raise FramingError: If no colon came within L{_MAX_DIGITS} bytes.
    """
    if failure.check(LineTooLongError):
        raise FramingError(
            f"netstring length has more than {_MAX_DIGITS} digits or is not "
            f"a number: no ':' within the first {_MAX_DIGITS + 1} bytes"
        )
    return failure


def _read_payload(
    digits: bytes, proto: StateProtocol, limit: int, limit_name: str
) -> Deferred[bytes]:
    """
    Validate the length digits and the limit, then read payload and comma.

    @param digits: What came before the colon.
    @param proto: The protocol to read from.
    @param limit: The longest payload accepted.
    @param limit_name: The limit's name for the error.
    @return: A Deferred firing with the payload, or a failed one.
    """
    if not digits.isdigit():  # ASCII digits only: bytes.isdigit() is ASCII
        what = "is empty" if not digits else "is not a decimal number"
        return fail(FramingError(f"netstring length {digits!r} {what}"))
    if digits[0] == 0x30 and len(digits) > 1:
        return fail(FramingError(f"netstring length {digits!r} has a leading zero"))
    length = int(digits)
    if length > limit:
        return fail(FrameTooLongError(limit, length, limit_name))
    if length < _SPLIT and length < proto.max_frame_size:
        return proto.read_exactly(length + 1).addCallback(_split_comma, length)
    return proto.read_exactly(length).addCallback(_read_comma, proto, length)


def _split_comma(data: bytes, length: int) -> bytes:
    """
    Check and strip the comma read together with a short payload.

    @param data: The payload and the byte after it.
    @param length: The payload's length.
    @return: The payload.
    @raise FramingError: If the last byte is not a comma.
    """
    if data[length:] != b",":
        raise _no_comma(length, data[length:])
    return data[:length]


def _read_comma(payload: bytes, proto: StateProtocol, length: int) -> Deferred[bytes]:
    """
    Read and check the comma after a long payload.

    @param payload: The payload.
    @param proto: The protocol to read from.
    @param length: The payload's length.
    @return: A Deferred firing with the payload once the comma is checked.
    """

    def check(comma: bytes) -> bytes:
        if comma != b",":
            raise _no_comma(length, comma)
        return payload

    return proto.read_exactly(1).addCallback(check)


def _no_comma(length: int, got: bytes) -> FramingError:
    """
    Build the error for a payload not followed by its comma.

    @param length: The payload's length.
    @param got: The byte found instead.
    @return: The error.
    """
    return FramingError(
        f"netstring payload of {length} bytes is followed by {got!r}, not b','"
    )


def _netstring_timed_out(result: bytes | Failure, timeout: float) -> bytes:
    """
    Turn the cancel caused by L{read_netstring}'s timeout into a TimeoutError.

    @param result: What the read ended with once cancelled.
    @param timeout: The timeout, in seconds.
    @return: Never; always raises.
    @raise twisted.internet.defer.TimeoutError: Always.
    """
    if isinstance(result, Failure):
        result.trap(defer.CancelledError)
    raise defer.TimeoutError(f"netstring not complete after {timeout} seconds")


def write_netstring(proto: StateProtocol, data: bytes) -> None:
    """
    Write C{data} as one netstring.

    @param proto: The protocol to write to.
    @param data: The payload (any length; the reader's limit is its own).
    """
    length = len(data)
    if length < _JOIN_LIMIT:
        proto.write(b"%d:%s," % (length, data))
    else:
        proto.write(b"%d:" % length)
        proto.write(data)
        proto.write(b",")
