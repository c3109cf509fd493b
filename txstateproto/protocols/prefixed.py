"""
Length-prefixed frames: an 8-, 16- or 32-bit unsigned big-endian length, then
that many bytes.

This is what Twisted's
L{Int8StringReceiver<twisted.protocols.basic.Int8StringReceiver>},
L{Int16StringReceiver<twisted.protocols.basic.Int16StringReceiver>} and
L{Int32StringReceiver<twisted.protocols.basic.Int32StringReceiver>} speak,
so a peer built on those classes interoperates in both directions.

This module owns L{read_frame} and L{write_frame}; it must not know other
framings. It imports L{StateProtocol}'s public read and write methods, the
error classes, and two private names, for speed:

  - C{_fired} from C{txstateproto._protocol}: a fired Deferred made without
    C{Deferred.__init__}, as the protocol's own reads return. Against
    L{twisted.internet.defer.succeed} it saves about 2% of the callgrind
    instructions of a pipelined 64-byte frame's echo (300 of 16,000).
  - C{DirectDeferred} from C{txstateproto._coroutine}, which L{_FrameRead}
    (a frame that must wait for its prefix) derives from, following the
    subclass contract in its docstring, so that it waits on the protocol's
    reads and is waited on by the handler without callbacks.

Why plain functions and not coroutines
======================================

Under load (a pipelining peer, many frames per received chunk) the whole
frame is usually buffered when L{read_frame} is called. It then takes it in
one L{StateProtocol.take_prefixed} call, which reads the prefix in place
(C{struct.unpack_from}) and slices the body, and returns one fired Deferred:
no callback, no L{Coroutine}, no counted read. A frame that is too long, or
not all there, is left untouched for the counted reads below, which keep
the one wording of every error.

Otherwise a frame is two counted reads: the prefix, then the body. If the
prefix is buffered, the prefix read returns a Deferred that has fired;
L{read_frame} then issues the body read at once and returns that Deferred
itself. Only when the prefix has not arrived does it return a L{_FrameRead},
which waits on the prefix read, then on the body read, as their direct
waiter (no callback chain), and forwards C{cancel()} to the read it waits
on, so the reader stays cancel-safe without an engine of its own.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, cast

from twisted.internet import defer
from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from txstateproto._coroutine import DirectDeferred
from txstateproto._errors import FrameTooLongError
from txstateproto._protocol import _fired

if TYPE_CHECKING:
    from txstateproto._protocol import StateProtocol

__all__ = ["read_frame", "write_frame"]

# Packs a 32-bit prefix (faster than int.to_bytes for the common width).
_PACK32 = struct.Struct(">I").pack

#: Prefix width in bits -> prefix size in bytes.
_PREFIX_SIZES = {8: 1, 16: 2, 32: 4}

# Bodies at least this long are written as a separate write() instead of
# being joined to the prefix: the join would copy the whole body once more.
_JOIN_LIMIT = 65536


def _prefix_size(prefix_bits: int) -> int:
    """
    Map a prefix width in bits to its size in bytes.

    @param prefix_bits: 8, 16 or 32.
    @return: 1, 2 or 4.
    @raise ValueError: For any other width.
    """
    size = _PREFIX_SIZES.get(prefix_bits)
    if size is None:
        raise _bad_prefix_bits(prefix_bits)
    return size


def _bad_prefix_bits(prefix_bits: object) -> ValueError:
    """
    The error for a prefix width other than 8, 16 or 32.

    @param prefix_bits: The width given.
    @return: The error, to raise.
    """
    return ValueError(f"prefix_bits must be 8, 16 or 32, not {prefix_bits!r}")


def read_frame(
    proto: StateProtocol,
    prefix_bits: int = 32,
    max_length: int | None = None,
    timeout: float | None = None,
) -> Deferred[bytes]:
    """
    Read one length-prefixed frame and return its body.

    The prefix is an unsigned big-endian integer of C{prefix_bits} bits
    giving the body's length in bytes, as Twisted's C{IntNStringReceiver}
    classes send it::

        body = yield read_frame(self, prefix_bits=16, max_length=4096)

    The announced length is checked against the limit before a byte of the
    body is read or buffered for it: a peer announcing 4 GB costs nothing.

    @param proto: The protocol to read from.
    @param prefix_bits: The width of the length prefix: 8, 16 or 32.
    @param max_length: The longest body accepted, in bytes. By default
        C{proto.max_frame_size}, which also caps any larger value given here
        (raise it on the protocol for bigger frames).
    @param timeout: Seconds to wait for the whole frame, or C{None} for no
        limit.
    @return: A Deferred firing with the body. Cancelling it cancels the read
        it is waiting on. If the prefix has been consumed by then, the
        stream is left in the middle of a frame: close the connection rather
        than read on.
    @raise ValueError: At once, if C{prefix_bits} is not 8, 16 or 32.
    @raise FrameTooLongError: (as the Deferred's failure) If the announced
        length exceeds the limit; C{limit_name} is C{"max_length"} or
        C{"max_frame_size"} (whichever was exceeded), C{length} the
        announced length. Nothing is buffered for the body.
    @raise twisted.internet.defer.TimeoutError: (as the failure) If the frame
        is not complete within C{timeout}.
    @raise EndOfStreamError: (as the failure) If the peer half-closed before
        the frame was complete (only with C{proto.half_close}).
    """
    if prefix_bits == 32:
        size = 4
    else:
        found = _PREFIX_SIZES.get(prefix_bits)
        if found is None:
            raise _bad_prefix_bits(prefix_bits)
        size = found
    cap = proto.max_frame_size
    if max_length is not None and max_length < cap:
        cap = max_length
    # The fast path: the whole frame is buffered (a pipelining peer) and
    # within every limit, taken in one call. A frame that is not all there,
    # or too long, is left to the counted reads below, which wait or fail
    # with their usual errors. (A negative max_length is left to them too.)
    if cap >= 0:
        body = proto.take_prefixed(size, cap)
        if body is not None:
            return _fired(body)
    if max_length is None:
        limit, limit_name = proto.max_frame_size, "max_frame_size"
    else:
        limit, limit_name = max_length, "max_length"
    header = proto.read_exactly(size)
    prefix = header.result if header.called else None
    if isinstance(prefix, bytes):
        # The prefix was buffered: issue the body read now and hand back its
        # own Deferred (no callback, no chain; _read_body inlined).
        length = int.from_bytes(prefix, "big")
        if length <= limit:
            frame = proto.read_exactly(length)
        else:
            frame = fail(FrameTooLongError(limit, length, limit_name))
    else:
        frame = _FrameRead(proto, header, limit, limit_name)
    if timeout is not None:
        frame.addTimeout(timeout, proto.clock, _frame_timed_out)
    return frame


class _FrameRead(DirectDeferred[bytes]):
    """
    A frame whose prefix had not arrived when it was asked for: the prefix
    read, then the body read, each waited on as its direct waiter.

    Being a L{DirectDeferred}, it is itself waited on directly by the
    handler's L{Coroutine}, and it waits on the protocol's queued reads (also
    L{DirectDeferred}s) the same way: when the bytes arrive, the prefix read
    calls L{_on_fired}, which issues the body read and, when that is
    buffered (the usual case), fires this with the body, which resumes the
    handler; no callback is added or run on the way. The C{addCallback}
    chain this replaces cost about a fifth more per frame echoed with one
    frame in flight (callgrind: 67,900 against 53,700 instructions, the
    whole echo), which is also what each chunk of a pipelined peer pays
    once, when the handler has drained the buffer and waits again.

    Cancelling it cancels the read it waits on (nothing is consumed for a
    prefix read; a consumed prefix stays consumed), then fails it with
    L{CancelledError<twisted.internet.defer.CancelledError>}.
    """

    __slots__ = ("_in_body", "_inner", "_limit", "_limit_name", "_proto")

    def __init__(
        self,
        proto: StateProtocol,
        header: Deferred[bytes],
        limit: int,
        limit_name: str,
    ) -> None:
        """
        Wait on C{header}, the prefix read just queued.

        @param proto: The protocol to read the body from.
        @param header: The prefix read, not fired.
        @param limit: The longest body accepted.
        @param limit_name: The limit's name for the error.
        """
        # What DirectDeferred.__init__ sets, without its frame (as its
        # docstring allows): one of these is made per frame that waits.
        if self.debug:
            DirectDeferred.__init__(self, _cancel_frame)
        else:
            self._chain = None
            self._waiter = None
            self._canceller = _cancel_frame
        self._proto = proto
        self._limit = limit
        self._limit_name = limit_name
        self._in_body = False
        self._inner: Deferred[bytes] | None = header
        # _wait_on, inlined: this runs once per frame that waits.
        wait_directly = getattr(header, "_wait_directly", None)
        if wait_directly is None or not wait_directly(self):
            header.addBoth(self._on_fired, header)

    def _wait_on(self, read: Deferred[bytes]) -> None:
        """
        Be C{read}'s direct waiter, or (if it will not have one) its first
        callback, which is called the same way.

        @param read: A read that has not fired.
        """
        # getattr, not isinstance: Deferred's ABCMeta makes isinstance cost
        # several times a plain attribute lookup.
        wait_directly = getattr(read, "_wait_directly", None)
        if wait_directly is None or not wait_directly(self):
            read.addBoth(self._on_fired, read)

    def _on_fired(self, result: object, d: Deferred[Any]) -> object:
        """
        Take the result of the read waited on: a prefix (issue the body
        read), a body (fire with it), or a failure (fail with it).

        @param result: The read's result.
        @param d: The read.
        @return: What the read passes on to callbacks added after the wait
            began: the bytes, or C{None} for a failure, which is handled
            here.
        """
        if d is not self._inner:
            # A read cancelled by our canceller: the cancel fails this.
            return None if isinstance(result, Failure) else result
        if type(result) is not bytes:
            self._inner = None
            self.errback(cast(Failure, result))
            return None
        if self._in_body:
            self._inner = None
            self.callback(result)
            return result
        length = int.from_bytes(result, "big")
        if length > self._limit:
            self._inner = None
            self.errback(FrameTooLongError(self._limit, length, self._limit_name))
            return result
        body = self._proto.read_exactly(length)
        if body.called:
            self._inner = None
            found = body.result
            if type(found) is bytes:
                self.callback(found)
            else:
                # Failed at once (over max_frame_size, connection gone): the
                # errback handles the failure, leaving None behind.
                body.addErrback(self.errback)
            return result
        self._in_body = True
        self._inner = body
        self._wait_on(body)
        return result


def _cancel_frame(frame: Deferred[bytes]) -> None:
    """
    The canceller of a L{_FrameRead}: cancel the read it waits on, which
    then fires it no more (L{Deferred.cancel} fails it afterwards).

    @param frame: The frame read being cancelled.
    """
    assert isinstance(frame, _FrameRead)
    inner = frame._inner
    if inner is not None:
        frame._inner = None
        inner.cancel()


def _frame_timed_out(result: bytes | Failure, timeout: float) -> bytes:
    """
    Turn the cancel caused by L{read_frame}'s timeout into a TimeoutError.

    @param result: What the frame read ended with once cancelled.
    @param timeout: The timeout, in seconds.
    @return: Never; always raises.
    @raise twisted.internet.defer.TimeoutError: Always.
    """
    if isinstance(result, Failure):
        result.trap(defer.CancelledError)
    raise defer.TimeoutError(f"frame not complete after {timeout} seconds")


def write_frame(proto: StateProtocol, data: bytes, prefix_bits: int = 32) -> None:
    """
    Write C{data} as one length-prefixed frame.

    @param proto: The protocol to write to.
    @param data: The body.
    @param prefix_bits: The width of the length prefix: 8, 16 or 32.
    @raise ValueError: If C{prefix_bits} is not 8, 16 or 32, or C{data} is
        too long for the prefix (at least C{2 ** prefix_bits} bytes);
        nothing is written then.
    """
    length = len(data)
    if prefix_bits == 32 and length < _JOIN_LIMIT:
        # The common case, once per frame: one pack, one join, one write.
        proto.write(_PACK32(length) + data)
        return
    size = _prefix_size(prefix_bits)
    if length >> prefix_bits:
        raise ValueError(
            f"a frame of {length} bytes does not fit a {prefix_bits}-bit "
            f"length prefix (at most {(1 << prefix_bits) - 1} bytes)"
        )
    prefix = length.to_bytes(size, "big")
    if length < _JOIN_LIMIT:
        proto.write(prefix + data)
    else:
        proto.write(prefix)
        proto.write(data)
