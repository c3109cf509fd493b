"""
Tests for L{txstateproto.protocols.structs}: fixed-layout records read and
written with a L{struct} format.
"""

from __future__ import annotations

import struct
import tracemalloc
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, Scripted, idle
from txstateproto import EndOfStreamError, FrameTooLongError
from txstateproto.protocols import read_frame, read_struct, write_struct
from txstateproto.testing import ProtocolHarness

_settings = settings(deadline=None, max_examples=150)


class ReadStructTests(SynchronousTestCase):
    """
    Tests for L{read_struct}.
    """

    def test_unpacks_record(self) -> None:
        """A record gives the tuple of its unpacked fields."""
        h = ProtocolHarness(idle())
        d = read_struct(h.protocol, "!BHI")
        h.feed(b"\x01\x00\x02\x00\x00\x00\x03")
        self.assertEqual(self.successResultOf(d), (1, 2, 3))

    def test_one_field_is_a_tuple(self) -> None:
        """A one-field format still gives a one-element tuple."""
        h = ProtocolHarness(idle())
        h.feed(b"\xff\xfe")
        self.assertEqual(self.successResultOf(read_struct(h.protocol, "<H")), (65279,))

    def test_compiled_struct_and_bytes_format(self) -> None:
        """A compiled Struct and a bytes format work like a str format."""
        h = ProtocolHarness(idle())
        h.feed(b"\0\x05\0\x06")
        self.assertEqual(
            self.successResultOf(read_struct(h.protocol, struct.Struct(">H"))), (5,)
        )
        self.assertEqual(self.successResultOf(read_struct(h.protocol, b">H")), (6,))

    def test_waits_for_whole_record(self) -> None:
        """The read fires only when the record's last byte arrives."""
        h = ProtocolHarness(idle())
        d = read_struct(h.protocol, "!Q")
        h.feed(b"\0" * 7)
        self.assertNoResult(d)
        h.feed(b"\x09")
        self.assertEqual(self.successResultOf(d), (9,))

    def test_mixes_with_other_framings(self) -> None:
        """A record header and a frame body are read from one stream."""
        h = ProtocolHarness(idle())
        h.feed(b"\x02\x07" + b"\0\0\0\x03abc")
        self.assertEqual(self.successResultOf(read_struct(h.protocol, "!BB")), (2, 7))
        self.assertEqual(self.successResultOf(read_frame(h.protocol)), b"abc")

    def test_bad_format(self) -> None:
        """An invalid format is refused at once; nothing is read."""
        h = ProtocolHarness(idle())
        h.feed(b"abcd")
        self.assertRaises(struct.error, read_struct, h.protocol, "!Z")
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(4)), b"abcd")

    def test_record_over_max_frame_size(self) -> None:
        """A record larger than max_frame_size fails like any counted read."""
        p = idle()
        p.max_frame_size = 4
        ProtocolHarness(p)
        self.failureResultOf(read_struct(p, "!Q"), FrameTooLongError)

    def test_huge_record_allocates_nothing(self) -> None:
        """A 4 GB record fails at once, allocating nothing for it."""
        h = ProtocolHarness(idle())
        tracemalloc.start()
        try:
            d = read_struct(h.protocol, "!4294967296s")
            h.feed(b"x" * 100000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        error = self.failureResultOf(d, FrameTooLongError).value
        self.assertEqual(error.length, 2**32)
        self.assertLess(peak, 512 * 1024)

    def test_length_field_then_body(self) -> None:
        """A struct length field checked by the handler guards a 4 GB body."""
        h = ProtocolHarness(idle())
        h.feed(b"\xff\xff\xff\xff" + b"x" * 10)
        (length,) = self.successResultOf(read_struct(h.protocol, "!I"))
        self.failureResultOf(h.protocol.read_exactly(length), FrameTooLongError)
        self.assertEqual(self.successResultOf(h.protocol.read_exactly(10)), b"x" * 10)

    def test_cancel(self) -> None:
        """Cancelling consumes nothing."""
        h = ProtocolHarness(idle())
        d = read_struct(h.protocol, "!I")
        h.feed(b"\0\0")
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b"\0\x01")
        self.assertEqual(self.successResultOf(read_struct(h.protocol, "!I")), (1,))

    def test_timeout(self) -> None:
        """An incomplete record fails with TimeoutError after the timeout."""
        h = ProtocolHarness(idle())
        d = read_struct(h.protocol, "!I", timeout=2)
        h.clock.advance(2)
        self.failureResultOf(d, defer.TimeoutError)

    def test_end_of_stream(self) -> None:
        """A half-close in the middle of a record fails the read."""
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = read_struct(p, "!I")
        h.feed(b"\0")
        h.half_close()
        self.failureResultOf(d, EndOfStreamError)

    @_settings
    @given(
        records=st.lists(
            st.tuples(
                st.integers(0, 255),
                st.integers(-(2**31), 2**31 - 1),
                st.floats(allow_nan=False, width=64),
            ),
            max_size=8,
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=10),
    )
    def test_random_records_in_random_chunks(
        self, records: list[tuple[int, int, float]], cuts: list[int]
    ) -> None:
        """Any records, split anywhere, are read back in order."""
        fmt = "!Bid"
        stream = b"".join(struct.pack(fmt, *r) for r in records)
        got: list[tuple[object, ...]] = []

        def script(p: Scripted) -> Body:
            for _ in records:
                got.append((yield read_struct(p, fmt)))

        h = ProtocolHarness(Scripted(script))
        edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
        h.feed_chunks(stream[a:b] for a, b in pairwise(edges))
        self.assertEqual(got, records)


class WriteStructTests(SynchronousTestCase):
    """
    Tests for L{write_struct}.
    """

    def test_packs_and_writes(self) -> None:
        """The values go out packed as the format says."""
        h = ProtocolHarness(idle())
        write_struct(h.protocol, "!BH", 1, 2)
        self.assertEqual(h.take_output(), b"\x01\x00\x02")

    def test_values_that_do_not_fit(self) -> None:
        """Values that do not fit the format are refused; nothing is written."""
        h = ProtocolHarness(idle())
        self.assertRaises(struct.error, write_struct, h.protocol, "!B", 256)
        self.assertEqual(h.take_output(), b"")

    @_settings
    @given(a=st.integers(0, 2**16 - 1), b=st.integers(-(2**63), 2**63 - 1))
    def test_round_trip(self, a: int, b: int) -> None:
        """What write_struct writes, read_struct reads back."""
        writer = ProtocolHarness(idle())
        write_struct(writer.protocol, "<Hq", a, b)
        reader = ProtocolHarness(idle())
        d = read_struct(reader.protocol, "<Hq")
        reader.feed(writer.take_output(), chunk_size=3)
        self.assertEqual(self.successResultOf(d), (a, b))
