"""
The exceptions txstateproto raises, and nothing else.

This module owns the error hierarchy and must not import anything else from the
package, so that every other module can import it.

Two families:

  - L{ProtocolError}: the peer sent something we cannot accept (a line longer
    than the limit, a malformed frame, the stream ended mid-message). A handler
    may catch these to answer the peer before closing. Each carries the numbers
    involved, and its message names the limit or state.
  - L{CoroutineMisuseError}: the program using the library did something the
    engine cannot honour (a tail call swallowed by a bare C{except:}, a
    C{noreturn} outside a coroutine body). These are bugs to fix, not
    conditions to handle.

Cancellation is Twisted's own L{twisted.internet.defer.CancelledError} and
timeouts are L{twisted.internet.defer.TimeoutError}: we define nothing for
conditions Twisted already names.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CoroutineMisuseError",
    "EndOfStreamError",
    "FrameTooLongError",
    "FramingError",
    "LineTooLongError",
    "NoreturnOutsideCoroutineError",
    "ProtocolError",
    "TailCallSwallowedError",
]


class ProtocolError(Exception):
    """
    Base class of the errors caused by what the peer sent.

    Catch this to handle every framing or limit violation in one place; the
    library only ever raises subclasses, which say what went wrong and carry
    the numbers involved. Instantiating C{ProtocolError} itself raises
    L{TypeError}: raise (or subclass) one of the specific errors instead.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> ProtocolError:
        if cls is ProtocolError:
            raise TypeError(
                "ProtocolError is an abstract base; raise one of its subclasses "
                "(LineTooLongError, FrameTooLongError, EndOfStreamError, "
                "FramingError) or define your own"
            )
        return super().__new__(cls, *args, **kwargs)


class LineTooLongError(ProtocolError):
    """
    The peer sent more bytes than a line or delimited read allows without the
    delimiter.

    Raised by L{StateProtocol.read_line} (limit C{max_line_length}) and
    L{StateProtocol.read_until} (limit C{max_length}). By the time it is
    raised, the buffer holds at most the limit plus one received chunk; the
    over-long data is still buffered, so the usual reaction is to answer the
    peer and close the connection.

    @ivar limit: The limit in force, in bytes.
    @ivar length: How many bytes had arrived without the delimiter when the
        limit was found to be exceeded (at least C{limit + 1}).
    @ivar limit_name: The name of the limit, as the user configures it
        (C{"max_line_length"} or C{"max_length"}).
    """

    def __init__(self, limit: int, length: int, limit_name: str = "max_line_length"):
        self.limit = limit
        self.length = length
        self.limit_name = limit_name
        super().__init__(
            f"line exceeds {limit_name}={limit} "
            f"({length} bytes received without the delimiter)"
        )


class FrameTooLongError(ProtocolError):
    """
    A fixed-size read or a length-prefixed frame is larger than the configured
    maximum.

    Raised before any byte of the body is read or allocated, so a peer that
    announces a 4 GB frame costs nothing.

    @ivar limit: The maximum frame size in force, in bytes.
    @ivar length: The size that was asked for or announced.
    @ivar limit_name: The name of the limit as the user configures it.
    """

    def __init__(self, limit: int, length: int, limit_name: str = "max_frame_size"):
        self.limit = limit
        self.length = length
        self.limit_name = limit_name
        super().__init__(f"frame of {length} bytes exceeds {limit_name}={limit}")


class EndOfStreamError(ProtocolError):
    """
    The stream ended (the peer half-closed its side) before a read could be
    satisfied.

    @ivar partial: The bytes that had arrived for this read (possibly empty);
        they are removed from the buffer.
    @ivar expected: How many bytes the read needed in all, or C{None} when it
        was waiting for a delimiter rather than a count.
    """

    def __init__(self, partial: bytes, expected: int | None):
        self.partial = partial
        self.expected = expected
        wanted = "a delimiter" if expected is None else f"{expected} bytes"
        super().__init__(
            f"stream ended after {len(partial)} bytes while waiting for {wanted}"
        )


class FramingError(ProtocolError):
    """
    The peer's bytes do not follow the framing being read (bad length digits,
    a missing terminator, a malformed header).

    The message says what was expected and what arrived; protocol modules may
    subclass it to carry more.
    """


class CoroutineMisuseError(RuntimeError):
    """
    Base class of the errors raised when a program uses the coroutine engine
    in a way it cannot honour.

    These point at a bug in the calling code; the message says what to change.
    """


class TailCallSwallowedError(CoroutineMisuseError):
    """
    A L{noreturn} tail call was caught by the coroutine body (typically by a
    bare C{except:} or C{except BaseException:}) and the body went on.

    The engine notices at the body's next C{yield} or C{return} and fails the
    L{Coroutine} with this error instead of silently continuing in the old
    state. Re-raise the signal (C{except TailCall: raise}) or narrow the
    C{except} clause.
    """


class NoreturnOutsideCoroutineError(CoroutineMisuseError):
    """
    L{noreturn} was called where no coroutine body can be ended by it: outside
    any L{coroutine}, or inside a generator or C{async def} that is being
    iterated or awaited by something other than the engine.
    """
