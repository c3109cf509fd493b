"""
Tests for L{txstateproto.protocols.prefixed}: 8/16/32-bit length-prefixed
frames, read and written, against Twisted's C{IntNStringReceiver} too.
"""

from __future__ import annotations

import gc
import tracemalloc
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.protocols import basic
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, Scripted, idle, yields
from txstateproto import EndOfStreamError, FrameTooLongError, StateProtocol
from txstateproto.protocols import read_frame, write_frame
from txstateproto.testing import ProtocolHarness

_settings = settings(deadline=None, max_examples=150)

_WIDTHS = {8: 1, 16: 2, 32: 4}


def _frame(data: bytes, bits: int = 32) -> bytes:
    """
    Encode a frame by hand, independently of L{write_frame}.
    """
    return len(data).to_bytes(bits // 8, "big") + data


def _collector(count: int, bits: int, frames: list[bytes]) -> Scripted:
    """
    A protocol that reads C{count} frames into C{frames}, then ends.
    """

    def script(p: Scripted) -> Body:
        for _ in range(count):
            frames.append((yield read_frame(p, prefix_bits=bits)))

    return Scripted(script)


class ReadFrameTests(SynchronousTestCase):
    """
    Tests for L{read_frame}.
    """

    def test_reads_each_prefix_width(self) -> None:
        """A frame with an 8-, 16- or 32-bit prefix gives its body."""
        for bits in (8, 16, 32):
            h = ProtocolHarness(idle())
            d = read_frame(h.protocol, prefix_bits=bits)
            h.feed(_frame(b"hello", bits))
            self.assertEqual(self.successResultOf(d), b"hello")

    def test_prefix_is_big_endian(self) -> None:
        """The prefix's first byte is the most significant one."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, prefix_bits=16)
        h.feed(b"\x01\x00" + b"x" * 256)
        self.assertEqual(len(self.successResultOf(d)), 256)

    def test_empty_frame(self) -> None:
        """A zero prefix gives an empty body."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol)
        h.feed(b"\0\0\0\0")
        self.assertEqual(self.successResultOf(d), b"")

    def test_buffered_frame_has_fired_on_return(self) -> None:
        """A frame already buffered is returned as a fired Deferred."""
        h = ProtocolHarness(idle())
        h.feed(_frame(b"one") + _frame(b"two"))
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"one")
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"two")

    def test_waits_for_prefix_then_body(self) -> None:
        """The frame fires only when the last byte of its body arrives."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol)
        data = _frame(b"abc")
        for i in range(len(data) - 1):
            h.feed(data[i : i + 1])
            self.assertNoResult(d)
        h.feed(data[-1:])
        self.assertEqual(self.successResultOf(d), b"abc")

    def test_bytes_after_frame_stay_buffered(self) -> None:
        """Reading a frame consumes exactly the prefix and the body."""
        h = ProtocolHarness(idle())
        h.feed(_frame(b"abc") + b"rest\r\n")
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"abc")
        self.assertEqual(self.successResultOf(h.protocol.read_line()), b"rest")

    def test_prefix_over_max_length(self) -> None:
        """An announced length over max_length fails, naming the limit."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, max_length=10)
        h.feed(_frame(b"x" * 11))
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(
            (error.limit, error.length, error.limit_name), (10, 11, "max_length")
        )
        self.assertIn("max_length=10", str(error))

    def test_frame_at_max_length(self) -> None:
        """A body exactly max_length long is accepted."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, max_length=10)
        h.feed(_frame(b"x" * 10))
        self.assertEqual(self.successResultOf(d), b"x" * 10)

    def test_default_limit_is_max_frame_size(self) -> None:
        """Without max_length, the protocol's max_frame_size is the limit."""
        p = idle()
        p.max_frame_size = 100
        h = ProtocolHarness(p)
        d = read_frame(p)
        h.feed(b"\0\0\0\x65")
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(
            (error.limit, error.length, error.limit_name),
            (100, 101, "max_frame_size"),
        )

    def test_max_frame_size_caps_max_length(self) -> None:
        """A max_length above max_frame_size does not lift the protocol's cap."""
        p = idle()
        p.max_frame_size = 100
        h = ProtocolHarness(p)
        d = read_frame(p, max_length=1000)
        h.feed(b"\0\0\x01\x00")
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.limit, error.limit_name), (100, "max_frame_size"))

    def test_huge_prefix_allocates_nothing(self) -> None:
        """A 4 GB prefix fails at once, reading and allocating nothing for it."""
        p = idle()
        # Only read_frame's own check stands between the prefix and the body.
        p.max_frame_size = 2**40
        h = ProtocolHarness(p)
        tracemalloc.start()
        try:
            d = read_frame(p, max_length=2**20)
            h.feed(b"\xff\xff\xff\xff" + b"next")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.length, error.limit_name), (2**32 - 1, "max_length"))
        self.assertLess(peak, 256 * 1024)
        # The body was not read: what followed the prefix is still there.
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(4)), b"next")

    def test_huge_prefix_with_default_limit_allocates_nothing(self) -> None:
        """With the default limits, a 4 GB prefix fails at once, allocating
        nothing for the body."""
        h = ProtocolHarness(idle())
        tracemalloc.start()
        try:
            d = read_frame(h.protocol)
            h.feed(b"\xff\xff\xff\xff" + b"x" * 100000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(
            (error.length, error.limit, error.limit_name),
            (2**32 - 1, 16 * 1024 * 1024, "max_frame_size"),
        )
        # What arrived is buffered once (100 kB), nothing more.
        self.assertLess(peak, 512 * 1024)

    def test_bad_prefix_bits(self) -> None:
        """A prefix width other than 8, 16 or 32 is refused at once."""
        h = ProtocolHarness(idle())
        with self.assertRaises(ValueError) as caught:
            read_frame(h.protocol, prefix_bits=24)
        self.assertIn("24", str(caught.exception))

    def test_cancel_waiting_for_prefix(self) -> None:
        """Cancelling before the prefix arrives consumes nothing."""
        h = ProtocolHarness(idle())
        h.feed(b"\0\0")
        d = read_frame(h.protocol)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b"\0\x02hi")
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"hi")

    def test_cancel_waiting_for_body(self) -> None:
        """Cancelling while the body is due cancels the body's read."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol)
        h.feed(b"\0\0\0\x05ab")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        # The body read left the queue: the next read gets the bytes.
        h.feed(b"cde")
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(5)), b"abcde")

    def test_timeout(self) -> None:
        """An incomplete frame fails with TimeoutError after the timeout."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, timeout=5)
        h.feed(b"\0\0\0\x05ab")
        h.clock.advance(4.9)
        self.assertNoResult(d)
        h.clock.advance(0.1)
        error = self.failureResultOf(d, defer.TimeoutError).value
        self.assertIn("5 seconds", str(error))

    def test_timeout_leaves_no_timer(self) -> None:
        """A frame completed in time leaves no delayed call behind."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, timeout=5)
        h.feed(_frame(b"ok"))
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_end_of_stream_mid_frame(self) -> None:
        """A half-close in the middle of a body fails the read."""
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = read_frame(p)
        h.feed(b"\0\0\0\x05ab")
        h.half_close()
        error = self.failureResultOf(d, EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"ab", 5))

    @_settings
    @given(
        bits=st.sampled_from([8, 16, 32]),
        payloads=st.lists(st.binary(max_size=300), max_size=8),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
    )
    def test_random_frames_in_random_chunks(
        self, bits: int, payloads: list[bytes], cuts: list[int]
    ) -> None:
        """Any frames, split anywhere, are read back in order."""
        payloads = [p[: (1 << bits) - 1] for p in payloads]
        stream = b"".join(_frame(p, bits) for p in payloads)
        frames: list[bytes] = []
        h = ProtocolHarness(_collector(len(payloads), bits, frames))
        edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
        h.feed_chunks(stream[a:b] for a, b in pairwise(edges))
        self.assertEqual(frames, payloads)
        self.assertTrue(h.closed)


class _NoFastPath(Scripted):
    """
    A L{Scripted} whose L{StateProtocol.take_prefixed} never takes anything,
    so that L{read_frame} always goes through its counted reads: the
    reference the fast path must agree with.
    """

    def take_prefixed(self, size: int, max_length: int) -> None:  # type: ignore[override]
        """
        Take nothing.
        """
        return None


class _CountingReads(Scripted):
    """
    A L{Scripted} that counts its L{StateProtocol.read_exactly} calls.
    """

    exact_reads = 0

    def read_exactly(
        self, n: int, timeout: float | None = None
    ) -> defer.Deferred[bytes]:
        """
        Count the call, then read as usual.
        """
        self.exact_reads += 1
        return super().read_exactly(n, timeout)


#: A step of L{_run_steps}: ("frame", max_length), ("line", None) or
#: ("exact", count).
_Step = tuple[str, int | None]


def _run_steps(
    cls: type[Scripted],
    bits: int,
    steps: list[_Step],
    chunks: list[bytes],
    max_frame_size: int,
) -> list[object]:
    """
    Run C{steps} as a handler fed C{chunks} and return what each read gave:
    its bytes (with their type), or the error's class and text, followed by
    the bytes still buffered at that point.
    """
    outcomes: list[object] = []

    def script(p: Scripted) -> Body:
        for kind, arg in steps:
            try:
                if kind == "frame":
                    got = yield read_frame(p, prefix_bits=bits, max_length=arg)
                elif kind == "line":
                    got = yield p.read_line()
                else:
                    assert arg is not None
                    got = yield p.read_exactly(arg)
            except FrameTooLongError as e:
                outcomes.append((type(e), str(e), p.peek(1 << 20)))
                return
            outcomes.append((type(got), got))

    p = cls(script)
    p.max_frame_size = max_frame_size
    h = ProtocolHarness(p)
    h.feed_chunks(chunks)
    return outcomes


def _cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{stream} at the given offsets (taken modulo its length + 1).
    """
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in pairwise(edges)]


@st.composite
def _steps_and_stream(draw: st.DrawFn) -> tuple[int, list[_Step], bytes, int]:
    """
    A prefix width, a list of reads, the stream they read (frames
    sometimes longer than their limit) and a max_frame_size.
    """
    bits = draw(st.sampled_from([8, 16, 32]))
    max_frame_size = draw(st.sampled_from([40, 200, 16 * 1024 * 1024]))
    steps: list[_Step] = []
    stream = b""
    for _ in range(draw(st.integers(min_value=0, max_value=8))):
        kind = draw(st.sampled_from(["frame", "frame", "frame", "line", "exact"]))
        if kind == "frame":
            body = draw(st.binary(max_size=min(255, (1 << bits) - 1)))
            max_length = draw(st.none() | st.integers(min_value=-2, max_value=300))
            steps.append(("frame", max_length))
            stream += _frame(body, bits)
        elif kind == "line":
            steps.append(("line", None))
            stream += draw(st.binary(max_size=20)).replace(b"\n", b"") + b"\r\n"
        else:
            n = draw(st.integers(min_value=0, max_value=10))
            steps.append(("exact", n))
            stream += draw(st.binary(min_size=n, max_size=n))
    return bits, steps, stream, max_frame_size


class FastPathTests(SynchronousTestCase):
    """
    Tests for L{read_frame}'s fast path: a frame already buffered whole is
    taken in one L{StateProtocol.take_prefixed} call; everything else goes to
    the counted reads, with the same results and errors as before.
    """

    def test_buffered_frames_take_no_counted_read(self) -> None:
        """Frames buffered whole are read without read_exactly, for every
        prefix width; a frame still arriving uses it."""
        payloads = [b"", b"a", b"hello", bytes(range(200))]
        for bits in (8, 16, 32):
            p = _CountingReads(lambda p: yields(Deferred()))
            h = ProtocolHarness(p)
            h.feed(
                b"".join(_frame(x, bits) for x in payloads) + _frame(b"xy", bits)[:-1]
            )
            for payload in payloads:
                d = read_frame(p, prefix_bits=bits)
                self.assertEqual(self.successResultOf(d), payload)
            self.assertEqual(p.exact_reads, 0, bits)
            d = read_frame(p, prefix_bits=bits)
            self.assertGreater(p.exact_reads, 0, bits)
            h.feed(b"y")
            self.assertEqual(self.successResultOf(d), b"xy")

    def test_split_at_every_byte(self) -> None:
        """Frames split into two chunks at any byte, or fed a byte at a
        time, are read back whole, as bytes, in order."""
        for bits in (8, 16, 32):
            payloads = [b"", b"a", b"hello", bytes(range(200)), b"z"]
            stream = b"".join(_frame(x, bits) for x in payloads)
            splits = [[stream[:i], stream[i:]] for i in range(len(stream) + 1)]
            splits.append([stream[i : i + 1] for i in range(len(stream))])
            for chunks in splits:
                frames: list[bytes] = []
                h = ProtocolHarness(_collector(len(payloads), bits, frames))
                h.feed_chunks(chunks)
                self.assertEqual(frames, payloads, (bits, len(chunks[0])))
                self.assertEqual({type(f) for f in frames}, {bytes})
                self.assertTrue(h.closed)

    def test_frames_from_the_joining_array(self) -> None:
        """Frames buffered after a chunk that ended mid-frame (held in the
        buffer's array, not the chunk) come out as bytes."""
        payloads = [b"abc", b"defg", b"", b"hi"]
        stream = b"".join(_frame(x) for x in payloads)
        frames: list[bytes] = []
        h = ProtocolHarness(_collector(len(payloads), 32, frames))
        h.feed_chunks([stream[:5], stream[5:]])
        self.assertEqual(frames, payloads)
        self.assertEqual([type(f) for f in frames], [bytes] * len(payloads))

    def test_many_frames_per_chunk(self) -> None:
        """A thousand frames in one chunk are read in order."""
        payloads = [str(i).encode() * (i % 7) for i in range(1000)]
        frames: list[bytes] = []
        h = ProtocolHarness(_collector(len(payloads), 32, frames))
        h.feed(b"".join(_frame(x) for x in payloads))
        self.assertEqual(frames, payloads)

    def test_large_frame_is_taken_whole(self) -> None:
        """A buffered 76 KB frame, joined from two chunks (so copied out of
        the joining array in one copy), is taken by the fast path like a
        small one, and so are the frames around it."""
        big = bytes(range(256)) * 300
        p = _CountingReads(lambda p: yields(Deferred()))
        h = ProtocolHarness(p)
        stream = _frame(b"a") + _frame(big) + _frame(b"b")
        h.feed(stream[:1000])
        h.feed(stream[1000:])
        for expected in (b"a", big, b"b"):
            body = self.successResultOf(read_frame(p))
            self.assertIs(type(body), bytes)
            self.assertEqual(body, expected)
        self.assertEqual(p.exact_reads, 0)

    def test_queued_read_keeps_its_bytes(self) -> None:
        """A frame buffered while another read waits is not taken ahead of
        it: the waiting read gets the bytes first."""
        h = ProtocolHarness(idle())
        first = h.protocol.read_exactly(6)
        frame = read_frame(h.protocol)
        h.feed(b"abc")
        h.feed(b"def" + _frame(b"hello"))
        self.assertEqual(self.successResultOf(first), b"abcdef")
        self.assertEqual(self.successResultOf(frame), b"hello")

    def test_mixed_with_other_reads(self) -> None:
        """Lines, counted reads and frames of each width, buffered in one
        chunk, are read in the order issued."""
        h = ProtocolHarness(idle())
        p = h.protocol
        h.feed(
            b"line\r\n"
            + _frame(b"one", 8)
            + b"xy"
            + _frame(b"two", 16)
            + _frame(b"three")
            + b"end\r\n"
        )
        self.assertEqual(self.successResultOf(p.read_line()), b"line")
        self.assertEqual(self.successResultOf(read_frame(p, prefix_bits=8)), b"one")
        self.assertEqual(self.successResultOf(p.read_exactly(2)), b"xy")
        self.assertEqual(self.successResultOf(read_frame(p, prefix_bits=16)), b"two")
        self.assertEqual(self.successResultOf(read_frame(p)), b"three")
        self.assertEqual(self.successResultOf(p.read_line()), b"end")

    def test_buffered_frame_over_limit(self) -> None:
        """A frame over max_length, buffered whole, fails as one still
        arriving does: the same error and text, the prefix consumed and the
        body left buffered."""
        for bits in (8, 16, 32):
            h = ProtocolHarness(idle())
            h.feed(_frame(b"x" * 11, bits) + b"after")
            d = read_frame(h.protocol, prefix_bits=bits, max_length=10)
            error = self.failureResultOf(d, FrameTooLongError).value
            self.assertEqual(
                (error.limit, error.length, error.limit_name), (10, 11, "max_length")
            )
            self.assertEqual(str(error), "frame of 11 bytes exceeds max_length=10")
            self.assertEqual(h.protocol.peek(100), b"x" * 11 + b"after")

    def test_buffered_frame_over_max_frame_size(self) -> None:
        """A buffered frame within max_length but over max_frame_size fails
        naming max_frame_size."""
        p = idle()
        p.max_frame_size = 5
        h = ProtocolHarness(p)
        h.feed(_frame(b"x" * 6))
        d = read_frame(p, max_length=100)
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(
            (error.limit, error.length, error.limit_name), (5, 6, "max_frame_size")
        )

    def test_negative_max_length(self) -> None:
        """A negative max_length refuses even an empty frame."""
        h = ProtocolHarness(idle())
        h.feed(_frame(b""))
        d = read_frame(h.protocol, max_length=-1)
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.limit, error.length), (-1, 0))

    def test_buffered_frame_with_timeout(self) -> None:
        """A buffered frame read with a timeout fires at once and leaves no
        timer."""
        h = ProtocolHarness(idle())
        h.feed(_frame(b"ok"))
        d = read_frame(h.protocol, timeout=5)
        self.assertEqual(self.successResultOf(d), b"ok")
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_cancel_buffered_frame(self) -> None:
        """Cancelling a frame read that has fired changes nothing: the frame
        was taken, the next one is next."""
        h = ProtocolHarness(idle())
        h.feed(_frame(b"one") + _frame(b"two"))
        d = read_frame(h.protocol)
        d.cancel()
        self.assertEqual(self.successResultOf(d), b"one")
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"two")

    @_settings
    @given(
        case=_steps_and_stream(),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=10),
    )
    def test_same_as_counted_reads(
        self, case: tuple[int, list[_Step], bytes, int], cuts: list[int]
    ) -> None:
        """Any reads of frames (some over their limits), lines and counts,
        over any chunking, give what they give without the fast path:
        the same bytes, the same errors, the same bytes left buffered."""
        bits, steps, stream, max_frame_size = case
        chunks = _cut(stream, cuts)
        self.assertEqual(
            _run_steps(Scripted, bits, steps, chunks, max_frame_size),
            _run_steps(_NoFastPath, bits, steps, chunks, max_frame_size),
        )


class WaitingFrameTests(SynchronousTestCase):
    """
    Tests for a frame read issued before its prefix arrived (L{_FrameRead}:
    it waits on the prefix read, then the body read, directly).
    """

    def test_callback_added_before_bytes(self) -> None:
        """A callback added while the frame waits gets the body."""
        h = ProtocolHarness(idle())
        got: list[bytes] = []
        read_frame(h.protocol).addCallback(got.append)
        h.feed(b"\0\0")
        h.feed(b"\0\x03ab")
        self.assertEqual(got, [])
        h.feed(b"c" + _frame(b"next"))
        self.assertEqual(got, [b"abc"])
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"next")

    def test_handler_resumed_per_frame(self) -> None:
        """A handler waiting for frames one chunk at a time gets each whole
        frame as its last byte arrives, and nothing before."""
        for bits in (8, 16, 32):
            frames: list[bytes] = []
            h = ProtocolHarness(_collector(3, bits, frames))
            for n, body in enumerate([b"", b"one", b"two"]):
                data = _frame(body, bits)
                h.feed(data[:-1])
                self.assertEqual(len(frames), n)
                h.feed(data[-1:])
                self.assertEqual(frames[-1], body)
            self.assertEqual(frames, [b"", b"one", b"two"])
            self.assertTrue(h.closed)

    def test_body_over_max_frame_size(self) -> None:
        """A prefix within max_length but over max_frame_size, arriving while
        the frame waits, fails it naming max_frame_size."""
        p = idle()
        p.max_frame_size = 5
        h = ProtocolHarness(p)
        d = read_frame(p, max_length=100)
        h.feed(_frame(b"x" * 6))
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual((error.length, error.limit_name), (6, "max_frame_size"))

    def test_connection_lost_while_waiting(self) -> None:
        """Losing the connection while the frame waits for its prefix or its
        body fails it (and nothing is logged as unhandled)."""
        for data in (b"", b"\0\0", b"\0\0\0\x05ab"):
            h = ProtocolHarness(idle())
            d = read_frame(h.protocol)
            h.feed(data)
            h.lose_connection()
            self.failureResultOf(d)
            del d
            gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_half_close_while_waiting_for_prefix(self) -> None:
        """A half-close before the whole prefix fails the frame with the
        prefix read's EndOfStreamError."""
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = read_frame(p)
        h.feed(b"\0\0")
        h.half_close()
        error = self.failureResultOf(d, EndOfStreamError).value
        self.assertEqual((error.partial, error.expected), (b"\0\0", 4))

    def test_cancel_then_bytes(self) -> None:
        """After a waiting frame is cancelled, the bytes go to the next
        read, and the cancelled frame stays cancelled."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(_frame(b"hi"))
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"hi")

    def test_timeout_waiting_for_prefix(self) -> None:
        """A frame whose prefix does not come fails with TimeoutError and
        leaves the stream as it was."""
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol, timeout=2)
        h.feed(b"\0")
        h.clock.advance(2)
        self.failureResultOf(d, defer.TimeoutError)
        self.assertEqual(h.clock.getDelayedCalls(), [])
        h.feed(b"\0\0\x01z")
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"z")

    def test_paused_handler(self) -> None:
        """A frame completed while the protocol is paused reaches the handler
        when it is unpaused."""
        frames: list[bytes] = []
        h = ProtocolHarness(_collector(2, 32, frames))
        h.protocol.pause()
        h.feed(_frame(b"one"))
        self.assertEqual(frames, [])
        h.protocol.unpause()
        self.assertEqual(frames, [b"one"])
        h.feed(_frame(b"two"))
        self.assertEqual(frames, [b"one", b"two"])

    def test_deferred_debugging(self) -> None:
        """With Deferred debugging on, a waiting frame records its creator
        and still works."""
        self.addCleanup(defer.setDebugging, defer.getDebugging())
        defer.setDebugging(True)
        h = ProtocolHarness(idle())
        d = read_frame(h.protocol)
        h.feed(_frame(b"dbg"))
        self.assertEqual(self.successResultOf(d), b"dbg")
        self.assertTrue(hasattr(d, "_debugInfo"))


class WriteFrameTests(SynchronousTestCase):
    """
    Tests for L{write_frame}.
    """

    def test_writes_each_prefix_width(self) -> None:
        """The body goes out after a big-endian prefix of the chosen width."""
        for bits, size in _WIDTHS.items():
            h = ProtocolHarness(idle())
            write_frame(h.protocol, b"hello", prefix_bits=bits)
            self.assertEqual(h.take_output(), (5).to_bytes(size, "big") + b"hello")

    def test_largest_body_for_prefix(self) -> None:
        """A body of 2**bits - 1 bytes fits the prefix."""
        h = ProtocolHarness(idle())
        write_frame(h.protocol, b"x" * 255, prefix_bits=8)
        self.assertEqual(h.take_output(), b"\xff" + b"x" * 255)

    def test_body_too_long_for_prefix(self) -> None:
        """A body that does not fit the prefix is refused; nothing is written."""
        h = ProtocolHarness(idle())
        with self.assertRaises(ValueError) as caught:
            write_frame(h.protocol, b"x" * 256, prefix_bits=8)
        self.assertIn("8-bit", str(caught.exception))
        self.assertEqual(h.take_output(), b"")

    def test_large_body(self) -> None:
        """A large body is written whole after its prefix."""
        h = ProtocolHarness(idle())
        body = bytes(range(256)) * 1024
        write_frame(h.protocol, body)
        self.assertEqual(h.take_output(), _frame(body))

    def test_bad_prefix_bits(self) -> None:
        """A prefix width other than 8, 16 or 32 is refused; nothing is written."""
        h = ProtocolHarness(idle())
        self.assertRaises(ValueError, write_frame, h.protocol, b"x", prefix_bits=64)
        self.assertEqual(h.take_output(), b"")

    @_settings
    @given(bits=st.sampled_from([8, 16, 32]), payload=st.binary(max_size=300))
    def test_round_trip(self, bits: int, payload: bytes) -> None:
        """What write_frame writes, read_frame reads back."""
        payload = payload[: (1 << bits) - 1]
        writer = ProtocolHarness(idle())
        write_frame(writer.protocol, payload, prefix_bits=bits)
        reader = ProtocolHarness(idle())
        d = read_frame(reader.protocol, prefix_bits=bits)
        reader.feed(writer.take_output(), chunk_size=7)
        self.assertEqual(self.successResultOf(d), payload)


class _FrameEcho(StateProtocol):
    """
    Echo each frame back, with the prefix width of the Twisted peer.
    """

    bits = 32

    def start(self) -> Body:
        """
        Read a frame, write it back, for ever.
        """
        while True:
            frame = yield read_frame(self, prefix_bits=self.bits)
            write_frame(self, frame, prefix_bits=self.bits)


class _FrameClient(StateProtocol):
    """
    Send frames, then read as many replies.
    """

    bits = 32

    def __init__(self, payloads: list[bytes]) -> None:
        super().__init__()
        self.payloads = payloads
        self.replies: list[bytes] = []

    def start(self) -> Body:
        """
        Send every payload, then collect the replies.
        """
        for payload in self.payloads:
            write_frame(self, payload, prefix_bits=self.bits)
        for _ in self.payloads:
            self.replies.append((yield read_frame(self, prefix_bits=self.bits)))


_RECEIVERS: dict[int, type[basic.IntNStringReceiver]] = {
    8: basic.Int8StringReceiver,
    16: basic.Int16StringReceiver,
    32: basic.Int32StringReceiver,
}


def _twisted_sender(bits: int, payloads: list[bytes]) -> basic.IntNStringReceiver:
    """
    A Twisted C{IntNStringReceiver} that sends C{payloads} when connected
    and records what it receives in C{received}.
    """
    base = _RECEIVERS[bits]

    class Sender(base):  # type: ignore[valid-type,misc]
        MAX_LENGTH = 2**32
        received: list[bytes]

        def connectionMade(self) -> None:
            self.received = []
            for payload in payloads:
                self.sendString(payload)

        def stringReceived(self, string: bytes) -> None:
            self.received.append(string)

    sender: basic.IntNStringReceiver = Sender()
    return sender


def _twisted_echo(bits: int) -> basic.IntNStringReceiver:
    """
    A Twisted C{IntNStringReceiver} that sends back each string it receives.
    """
    base = _RECEIVERS[bits]

    class Echo(base):  # type: ignore[valid-type,misc]
        MAX_LENGTH = 2**32

        def stringReceived(self, string: bytes) -> None:
            self.sendString(string)

    echo: basic.IntNStringReceiver = Echo()
    return echo


#: What the interoperability tests send: empty, short, binary, and (for 16 and
#: 32 bits) longer than an 8-bit prefix allows.
_INTEROP_PAYLOADS = (b"", b"a", b"hello world", bytes(range(256)) * 3, b"\0" * 200)


class TwistedInteropTests(SynchronousTestCase):
    """
    L{read_frame} and L{write_frame} against Twisted's Int8, Int16 and
    Int32 string receivers, over an in-memory connection.
    """

    def _payloads(self, bits: int) -> list[bytes]:
        return [p for p in _INTEROP_PAYLOADS if len(p) < 1 << bits]

    def test_twisted_client_our_server(self) -> None:
        """Twisted's receivers get back exactly the strings they sent."""
        for bits in (8, 16, 32):
            payloads = self._payloads(bits)
            server = _FrameEcho()
            server.bits = bits
            client = _twisted_sender(bits, payloads)
            pump = iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
            )
            pump.flush()
            self.assertEqual(client.received, payloads, bits)

    def test_our_client_twisted_server(self) -> None:
        """Frames we write are what Twisted's receivers read, and back."""
        for bits in (8, 16, 32):
            payloads = self._payloads(bits)
            client = _FrameClient(payloads)
            client.bits = bits
            server = _twisted_echo(bits)
            pump = iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
            )
            pump.flush()
            self.assertEqual(client.replies, payloads, bits)
            conversation = client.conversation
            assert conversation is not None
            self.assertIsNone(self.successResultOf(conversation))

    def test_twisted_sender_chunked(self) -> None:
        """Twisted's bytes, delivered one at a time, still make whole frames."""
        payloads = self._payloads(16)
        sender = _twisted_sender(16, payloads)
        transport = iosim.makeFakeClient(sender)
        sender.makeConnection(transport)
        wire = transport.getOutBuffer()
        frames: list[bytes] = []
        h = ProtocolHarness(_collector(len(payloads), 16, frames))
        h.feed(wire, chunk_size=1)
        self.assertEqual(frames, payloads)
