"""
Tests for L{txstateproto._buffer}: the sans-IO receive buffer, its limits, and
its linear cost under a slow drip.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import pairwise
from typing import SupportsIndex
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from txstateproto import _buffer
from txstateproto._buffer import ReceiveBuffer
from txstateproto._errors import LineTooLongError

# Hypothesis runs many examples per test; the shared CI cores are slow and
# noisy, so wall-clock deadlines would only produce flaky failures.
_settings = settings(deadline=None, max_examples=300)


class _CountingBytearray(bytearray):
    """
    A C{bytearray} that counts how many bytes its C{find} calls examine.

    Installed as a buffer's C{_data}, it measures the search work directly, so
    the linear-cost tests count bytes instead of timing anything.
    """

    scanned = 0
    calls = 0

    def find(  # type: ignore[override]
        self,
        sub: bytes | int,
        start: SupportsIndex | None = None,
        end: SupportsIndex | None = None,
    ) -> int:
        """
        Search as C{bytearray.find} does, adding the window size to C{scanned}.
        """
        lo = 0 if start is None else int(start)
        hi = len(self) if end is None else min(int(end), len(self))
        self.scanned += max(0, hi - lo)
        self.calls += 1
        return super().find(sub, start, end)


def _counting_buffer() -> tuple[ReceiveBuffer, _CountingBytearray]:
    """
    Make an empty buffer whose array counts the bytes searched.

    @return: The buffer and its counting array.
    """
    buf = ReceiveBuffer()
    data = _CountingBytearray()
    buf._data = data
    return buf, data


def _chunks(stream: bytes, cuts: list[int]) -> list[bytes]:
    """
    Split C{stream} at the given offsets (any order, duplicates allowed).

    @param stream: The bytes to split.
    @param cuts: Offsets between 0 and C{len(stream)}.
    @return: The pieces, in order; joined they give C{stream}.
    """
    points = [0, *sorted(cuts), len(stream)]
    return [stream[a:b] for a, b in pairwise(points)]


class BasicsTests(SynchronousTestCase):
    """
    Appending, length, truth value, repr and clear.
    """

    def test_new_buffer_is_empty(self) -> None:
        """
        A new buffer has length 0 and is false.
        """
        buf = ReceiveBuffer()
        self.assertEqual(len(buf), 0)
        self.assertFalse(buf)

    def test_append_adds_to_length(self) -> None:
        """
        Appended bytes count towards the length and make the buffer true.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        buf.append(b"")
        buf.append(b"de")
        self.assertEqual(len(buf), 5)
        self.assertTrue(buf)

    def test_append_returns_the_unread_length(self) -> None:
        """
        C{append} returns what C{len()} would give after it, whether the
        chunk is adopted, joined to an unread remainder, or added to an
        array (compacted or not).
        """
        buf = ReceiveBuffer()
        self.assertEqual(buf.append(b"abc"), 3)
        self.assertEqual(buf.append(b""), 3)
        self.assertEqual(buf.take_exactly(1), b"a")
        self.assertEqual(buf.append(b"de"), 4)
        self.assertEqual(buf.append(b"f"), 5)
        self.assertEqual(buf.take_exactly(5), b"bcdef")
        self.assertEqual(buf.append(b"gh"), 2)
        big = b"x" * (_buffer._COMPACT_MIN * 4)
        self.assertEqual(buf.append(big), 2 + len(big))
        self.assertEqual(buf.take_exactly(len(big)), b"gh" + big[:-2])
        self.assertEqual(buf.append(b"yz"), 4)
        self.assertEqual(len(buf), 4)

    def test_length_excludes_taken_bytes(self) -> None:
        """
        Taken bytes no longer count towards the length or truth value.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        buf.take_exactly(2)
        self.assertEqual(len(buf), 1)
        buf.take_exactly(1)
        self.assertEqual(len(buf), 0)
        self.assertFalse(buf)

    def test_repr_shows_buffered_count(self) -> None:
        """
        The repr names the number of unread bytes.
        """
        buf = ReceiveBuffer()
        self.assertEqual(repr(buf), "<ReceiveBuffer 0 bytes buffered>")
        buf.append(b"hello world!")
        buf.take_exactly(2)
        self.assertEqual(repr(buf), "<ReceiveBuffer 10 bytes buffered>")

    def test_clear_discards_everything(self) -> None:
        """
        Clearing empties the buffer, and it works normally afterwards.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc\ndef")
        self.assertEqual(buf.take_until(b"\n", 100), b"abc")
        self.assertIsNone(buf.take_until(b"\n", 100))
        buf.clear()
        self.assertEqual(len(buf), 0)
        self.assertEqual(buf._data, b"")
        buf.append(b"x\n")
        self.assertEqual(buf.take_until(b"\n", 100), b"x")

    def test_uses_slots(self) -> None:
        """
        The buffer has no instance dictionary, keeping idle connections small.
        """
        buf = ReceiveBuffer()
        self.assertFalse(hasattr(buf, "__dict__"))
        with self.assertRaises(AttributeError):
            buf.unexpected = 1  # type: ignore[attr-defined]


class TakeUntilTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.take_until} returns lines, waits, or raises at the limit.
    """

    def test_returns_line_and_consumes_delimiter(self) -> None:
        """
        The bytes before the delimiter come back and the delimiter is consumed.
        """
        buf = ReceiveBuffer()
        buf.append(b"one\r\ntwo\r\nthr")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"one")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"two")
        self.assertIsNone(buf.take_until(b"\r\n", 100))
        self.assertEqual(buf.take_all(), b"thr")

    def test_result_is_bytes(self) -> None:
        """
        The line is a C{bytes} object, not a bytearray or memoryview.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc\n")
        self.assertIs(type(buf.take_until(b"\n", 10)), bytes)

    def test_empty_line(self) -> None:
        """
        A delimiter at the read offset gives an empty line.
        """
        buf = ReceiveBuffer()
        buf.append(b"\n\nx\n")
        self.assertEqual(buf.take_until(b"\n", 0), b"")
        self.assertEqual(buf.take_until(b"\n", 0), b"")
        self.assertEqual(len(buf), 2)

    def test_returns_none_while_waiting(self) -> None:
        """
        Without a delimiter and under the limit, nothing is returned or taken.
        """
        buf = ReceiveBuffer()
        buf.append(b"partial")
        self.assertIsNone(buf.take_until(b"\n", 100))
        self.assertEqual(len(buf), 7)

    def test_delimiter_split_across_appends(self) -> None:
        """
        A multi-byte delimiter whose bytes arrive in separate appends is found.
        """
        buf = ReceiveBuffer()
        for piece in (b"ab", b"c\r", b"\n", b"d\r", b"\n\r", b"\n"):
            buf.append(piece)
        self.assertEqual(buf.take_until(b"\r\n", 100), b"abc")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"d")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"")

    def test_long_delimiter_split_into_single_bytes(self) -> None:
        """
        A four-byte delimiter dripped one byte at a time is found once complete.
        """
        buf = ReceiveBuffer()
        for byte in b"head\r\n\r":
            buf.append(bytes([byte]))
            self.assertIsNone(buf.take_until(b"\r\n\r\n", 100))
        buf.append(b"\nbody")
        self.assertEqual(buf.take_until(b"\r\n\r\n", 100), b"head")
        self.assertEqual(buf.take_all(), b"body")

    def test_long_line_through_memoryview_copy(self) -> None:
        """
        A line above the one-copy threshold comes back intact, and the buffer
        can grow afterwards (no memoryview is left holding it).
        """
        line = bytes(range(256)).replace(b"\n", b"") * 300
        self.assertGreater(len(line), _buffer._LARGE_COPY)
        buf = ReceiveBuffer()
        buf.append(b"x\n" + line + b"\ntail")
        self.assertEqual(buf.take_until(b"\n", 10**6), b"x")
        result = buf.take_until(b"\n", 10**6)
        self.assertIs(type(result), bytes)
        self.assertEqual(result, line)
        buf.append(b"more" * 10000)
        self.assertEqual(len(buf), 4 + 40000)

    def test_empty_delimiter_is_rejected(self) -> None:
        """
        An empty delimiter raises L{ValueError}.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        with self.assertRaises(ValueError):
            buf.take_until(b"", 10)

    def test_negative_max_length_is_rejected(self) -> None:
        """
        A negative C{max_length} raises L{ValueError}, with or without data.
        """
        buf = ReceiveBuffer()
        with self.assertRaises(ValueError):
            buf.take_until(b"\n", -1)
        buf.append(b"\nabc\n")
        with self.assertRaises(ValueError):
            buf.take_until(b"\n", -1)
        self.assertEqual(len(buf), 5)


class LineLimitTests(SynchronousTestCase):
    """
    L{LineTooLongError} fires exactly when a line is certain to exceed the
    limit, and consumes nothing.
    """

    def test_line_of_max_length_is_accepted(self) -> None:
        """
        A line of exactly C{max_length} bytes is returned, delimiter arriving
        late or with it.
        """
        for delimiter in (b"\n", b"\r\n"):
            buf = ReceiveBuffer()
            buf.append(b"x" * 10)
            self.assertIsNone(buf.take_until(delimiter, 10))
            buf.append(delimiter)
            self.assertEqual(buf.take_until(delimiter, 10), b"x" * 10)

            buf.append(b"y" * 10 + delimiter)
            self.assertEqual(buf.take_until(delimiter, 10), b"y" * 10)

    def test_one_over_max_length_raises_when_delimiter_arrives_late(self) -> None:
        """
        A line of C{max_length + 1} bytes waits while fewer than C{max_length +
        len(delimiter)} bytes are buffered, then raises when the delimiter
        arrives.
        """
        buf = ReceiveBuffer()
        buf.append(b"x" * 11)
        self.assertIsNone(buf.take_until(b"\r\n", 10))
        buf.append(b"\r\n")
        with self.assertRaises(LineTooLongError) as caught:
            buf.take_until(b"\r\n", 10)
        self.assertEqual(caught.exception.limit, 10)
        self.assertEqual(caught.exception.length, 13)
        self.assertEqual(len(buf), 13)

    def test_one_over_max_length_with_delimiter_in_same_chunk_raises(self) -> None:
        """
        A delimiter that is present but starts after C{max_length} raises.
        """
        for delimiter in (b"\n", b"\r\n"):
            buf = ReceiveBuffer()
            buf.append(b"x" * 11 + delimiter + b"ok" + delimiter)
            with self.assertRaises(LineTooLongError):
                buf.take_until(delimiter, 10)
            self.assertEqual(buf.take_until(delimiter, 11), b"x" * 11)
            self.assertEqual(buf.take_until(delimiter, 10), b"ok")

    def test_raises_exactly_when_delimiter_never_arrives(self) -> None:
        """
        Dripping bytes without a delimiter returns C{None} up to
        C{max_length + len(delimiter) - 1} bytes and raises at the next one.
        """
        for delimiter in (b"\n", b"\r\n", b"\r\n\r\n"):
            buf = ReceiveBuffer()
            threshold = 10 + len(delimiter)
            for count in range(1, threshold):
                buf.append(b"x")
                self.assertIsNone(buf.take_until(delimiter, 10), (delimiter, count))
            buf.append(b"x")
            with self.assertRaises(LineTooLongError) as caught:
                buf.take_until(delimiter, 10)
            self.assertEqual(caught.exception.length, threshold)

    def test_partial_delimiter_at_limit_still_waits(self) -> None:
        """
        A delimiter that could still complete right after C{max_length} bytes
        keeps the read waiting rather than raising.
        """
        buf = ReceiveBuffer()
        buf.append(b"x" * 10 + b"\r")
        self.assertIsNone(buf.take_until(b"\r\n", 10))
        buf.append(b"\n")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"x" * 10)

    def test_error_carries_numbers_and_name(self) -> None:
        """
        The error carries the limit, the bytes buffered and the limit's name,
        and its message names the limit.
        """
        buf = ReceiveBuffer()
        buf.append(b"x" * 50)
        with self.assertRaises(LineTooLongError) as caught:
            buf.take_until(b"\n", 16, limit_name="max_length")
        error = caught.exception
        self.assertEqual(error.limit, 16)
        self.assertEqual(error.length, 50)
        self.assertEqual(error.limit_name, "max_length")
        self.assertIn("max_length=16", str(error))

    def test_default_limit_name(self) -> None:
        """
        Without C{limit_name}, the error names C{max_line_length}.
        """
        buf = ReceiveBuffer()
        buf.append(b"x" * 5)
        with self.assertRaises(LineTooLongError) as caught:
            buf.take_until(b"\n", 2)
        self.assertEqual(caught.exception.limit_name, "max_line_length")
        self.assertIn("max_line_length=2", str(caught.exception))

    def test_error_consumes_nothing(self) -> None:
        """
        After the error, every byte is still buffered and can be taken.
        """
        buf = ReceiveBuffer()
        buf.append(b"abcdefgh\nrest")
        with self.assertRaises(LineTooLongError):
            buf.take_until(b"\n", 3)
        self.assertEqual(len(buf), 13)
        self.assertEqual(buf.take_exactly(4), b"abcd")
        self.assertEqual(buf.take_until(b"\n", 4), b"efgh")

    def test_huge_buffer_is_scanned_only_up_to_the_limit(self) -> None:
        """
        A large buffer without a delimiter costs one scan of C{max_length +
        len(delimiter)} bytes, not a scan of the whole buffer.
        """
        buf, data = _counting_buffer()
        buf.append(b"x" * 10_000_000)
        with self.assertRaises(LineTooLongError):
            buf.take_until(b"\r\n", 1000)
        self.assertEqual(data.scanned, 1002)


class FindTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.find} locates a delimiter within a limit without consuming.
    """

    def test_returns_index_relative_to_unread_start(self) -> None:
        """
        The index counts from the first unread byte, and nothing is consumed.
        """
        buf = ReceiveBuffer()
        buf.append(b"ab\r\ncd\r\n")
        self.assertEqual(buf.find(b"\r\n", 100), 2)
        self.assertEqual(len(buf), 8)
        buf.take_exactly(4)
        self.assertEqual(buf.find(b"\r\n", 100), 2)

    def test_not_found_is_minus_one(self) -> None:
        """
        A delimiter that is not buffered gives C{-1}.
        """
        buf = ReceiveBuffer()
        self.assertEqual(buf.find(b"\n", 10), -1)
        buf.append(b"abc")
        self.assertEqual(buf.find(b"\n", 10), -1)

    def test_limit_is_inclusive(self) -> None:
        """
        An occurrence starting at C{limit} is found; one starting after it is
        not.
        """
        buf = ReceiveBuffer()
        buf.append(b"abcde\r\n")
        self.assertEqual(buf.find(b"\r\n", 5), 5)
        self.assertEqual(buf.find(b"\r\n", 4), -1)
        self.assertEqual(buf.find(b"\r\n", 5), 5)

    def test_repeated_find_gives_same_index(self) -> None:
        """
        Finding twice without taking returns the same index.
        """
        buf = ReceiveBuffer()
        buf.append(b"xxxx;yy;")
        self.assertEqual(buf.find(b";", 10), 4)
        self.assertEqual(buf.find(b";", 10), 4)

    def test_changing_delimiter_restarts_search(self) -> None:
        """
        A search for another delimiter is not misled by the previous search's
        progress.
        """
        buf = ReceiveBuffer()
        buf.append(b"ab;cd;ef")
        self.assertEqual(buf.find(b"\r\n", 100), -1)
        self.assertEqual(buf.find(b";", 100), 2)
        self.assertEqual(buf.find(b"\r\n", 100), -1)
        buf.append(b"\r\n")
        self.assertEqual(buf.find(b"\r\n", 100), 8)
        self.assertEqual(buf.find(b"d;", 100), 4)

    def test_other_delimiters_resume_index_is_not_reused(self) -> None:
        """
        A search for a new delimiter that raises does not leave the previous
        delimiter's resume index in place for the next search (which would
        skip a delimiter that starts before it).
        """
        buf = ReceiveBuffer()
        buf.append(b"\x00\r\n")
        self.assertEqual(buf.find(b"\n", 1), -1)
        with self.assertRaises(LineTooLongError):
            buf.take_until(b"\r\n", 0)
        self.assertEqual(buf.take_until(b"\r\n", 2), b"\x00")

    def test_search_index_survives_counted_takes(self) -> None:
        """
        Taking bytes without a delimiter does not make the next search rescan
        what was already searched.
        """
        buf, data = _counting_buffer()
        buf.append(b"x" * 1000)
        self.assertEqual(buf.find(b"\n", 10**6), -1)
        self.assertEqual(data.scanned, 1000)
        buf.take_exactly(10)
        buf.take_some(10)
        buf.append(b"y\n")
        self.assertEqual(buf.find(b"\n", 10**6), 981)
        self.assertEqual(data.scanned, 1002)

    def test_empty_delimiter_is_rejected(self) -> None:
        """
        An empty delimiter raises L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ReceiveBuffer().find(b"", 10)

    def test_negative_limit_is_rejected(self) -> None:
        """
        A negative limit raises L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ReceiveBuffer().find(b"\n", -1)


class TakeExactlyTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.take_exactly} returns a fixed count or nothing.
    """

    def test_returns_requested_bytes(self) -> None:
        """
        The next C{n} bytes come back, as C{bytes}, and are consumed.
        """
        buf = ReceiveBuffer()
        buf.append(b"abcdef")
        result = buf.take_exactly(4)
        self.assertEqual(result, b"abcd")
        self.assertIs(type(result), bytes)
        self.assertEqual(buf.take_exactly(2), b"ef")
        self.assertFalse(buf)

    def test_too_few_bytes_gives_none(self) -> None:
        """
        With fewer than C{n} bytes buffered, nothing is returned or consumed.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        self.assertIsNone(buf.take_exactly(4))
        self.assertEqual(len(buf), 3)

    def test_zero_gives_empty_bytes(self) -> None:
        """
        Taking zero bytes returns C{b""}, even from an empty buffer.
        """
        self.assertEqual(ReceiveBuffer().take_exactly(0), b"")

    def test_negative_is_rejected(self) -> None:
        """
        A negative count raises L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ReceiveBuffer().take_exactly(-1)

    def test_large_count(self) -> None:
        """
        A count above the one-copy threshold returns the right bytes.
        """
        payload = bytes(range(256)) * 1000
        buf = ReceiveBuffer()
        buf.append(b"hd" + payload + b"tl")
        buf.take_exactly(2)
        self.assertEqual(buf.take_exactly(len(payload)), payload)
        self.assertEqual(buf.take_all(), b"tl")


class TakeSomeTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.take_some} returns whatever is there, up to a maximum.
    """

    def test_returns_at_most_max_bytes(self) -> None:
        """
        More buffered than C{max_bytes} gives exactly C{max_bytes}.
        """
        buf = ReceiveBuffer()
        buf.append(b"abcdef")
        self.assertEqual(buf.take_some(4), b"abcd")
        self.assertEqual(len(buf), 2)

    def test_returns_what_is_there(self) -> None:
        """
        Less buffered than C{max_bytes} gives all of it.
        """
        buf = ReceiveBuffer()
        buf.append(b"ab")
        result = buf.take_some(100)
        self.assertEqual(result, b"ab")
        self.assertIs(type(result), bytes)
        self.assertFalse(buf)

    def test_empty_gives_none(self) -> None:
        """
        An empty buffer gives C{None}.
        """
        self.assertIsNone(ReceiveBuffer().take_some(10))

    def test_max_bytes_below_one_is_rejected(self) -> None:
        """
        C{max_bytes} of 0 or less raises L{ValueError}.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        for bad in (0, -1):
            with self.assertRaises(ValueError):
                buf.take_some(bad)
        self.assertEqual(len(buf), 3)

    def test_large_chunk(self) -> None:
        """
        A chunk above the one-copy threshold comes back intact.
        """
        payload = bytes(range(256)) * 1000
        buf = ReceiveBuffer()
        buf.append(b"h" + payload)
        buf.take_exactly(1)
        self.assertEqual(buf.take_some(10**6), payload)


class TakeAllTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.take_all} empties the buffer.
    """

    def test_returns_everything_unread(self) -> None:
        """
        All unread bytes come back and the buffer is left empty.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        buf.append(b"def")
        buf.take_exactly(1)
        result = buf.take_all()
        self.assertEqual(result, b"bcdef")
        self.assertIs(type(result), bytes)
        self.assertFalse(buf)
        self.assertEqual(buf._data, b"")

    def test_from_offset_zero(self) -> None:
        """
        With nothing taken yet, everything comes back.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        self.assertEqual(buf.take_all(), b"abc")

    def test_empty_gives_empty_bytes(self) -> None:
        """
        An empty buffer gives C{b""}.
        """
        self.assertEqual(ReceiveBuffer().take_all(), b"")

    def test_large_remainder(self) -> None:
        """
        A remainder above the one-copy threshold comes back intact.
        """
        payload = bytes(range(256)) * 1000
        buf = ReceiveBuffer()
        buf.append(b"h" + payload)
        buf.take_exactly(1)
        self.assertEqual(buf.take_all(), payload)


class PeekTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.peek} shows upcoming bytes without consuming them.
    """

    def test_does_not_consume(self) -> None:
        """
        Peeked bytes are still there to be taken.
        """
        buf = ReceiveBuffer()
        buf.append(b"*3\r\n")
        result = buf.peek(1)
        self.assertEqual(result, b"*")
        self.assertIs(type(result), bytes)
        self.assertEqual(buf.take_exactly(2), b"*3")
        self.assertEqual(buf.peek(10), b"\r\n")

    def test_short_buffer_gives_fewer_bytes(self) -> None:
        """
        Peeking past the end returns what there is, possibly nothing.
        """
        buf = ReceiveBuffer()
        self.assertEqual(buf.peek(5), b"")
        buf.append(b"ab")
        self.assertEqual(buf.peek(5), b"ab")
        self.assertEqual(buf.peek(0), b"")

    def test_negative_is_rejected(self) -> None:
        """
        A negative count raises L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ReceiveBuffer().peek(-1)

    def test_large_peek(self) -> None:
        """
        Peeking above the one-copy threshold returns the right bytes.
        """
        payload = bytes(range(256)) * 1000
        buf = ReceiveBuffer()
        buf.append(b"h" + payload)
        buf.take_exactly(1)
        self.assertEqual(buf.peek(10**6), payload)
        self.assertEqual(buf.peek(len(payload) - 1), payload[:-1])
        self.assertEqual(len(buf), len(payload))


def _scan_lines(
    data: bytes | bytearray, start: int, stop: int
) -> tuple[bytes, int] | None:
    """
    A scan for L{ReceiveBuffer.take_scanned}: one LF-terminated line, found
    within C{data[start:stop]}.
    """
    end = data.find(b"\n", start, stop)
    if end < 0:
        return None
    return bytes(data[start:end]), end + 1


class TakeScannedTests(SynchronousTestCase):
    """
    L{ReceiveBuffer.take_scanned} lets a parser look at the unread bytes in
    place, within a limit, and consumes what it parsed.
    """

    def test_scan_sees_the_chunk_itself(self) -> None:
        """
        The scan gets the adopted chunk (no copy), the read offset and a stop
        bounded by the limit, and its end becomes the new offset.
        """
        chunk = b"skip\nabc\ndef"
        buf = ReceiveBuffer()
        buf.append(chunk)
        buf.take_until(b"\n", 10)
        seen: list[tuple[object, int, int]] = []

        def scan(
            data: bytes | bytearray, start: int, stop: int
        ) -> tuple[str, int] | None:
            seen.append((data, start, stop))
            return "value", start + 2

        self.assertEqual(buf.take_scanned(scan, 3), "value")
        self.assertIs(seen[0][0], chunk)
        self.assertEqual(seen[0][1:], (5, 8))
        self.assertEqual(buf.take_all(), b"c\ndef")

    def test_incomplete_consumes_nothing(self) -> None:
        """
        A scan returning C{None} leaves every byte for the next take.
        """
        buf = ReceiveBuffer()
        buf.append(b"no newline")
        self.assertIsNone(buf.take_scanned(_scan_lines, 100))
        self.assertEqual(len(buf), 10)
        self.assertEqual(buf.take_all(), b"no newline")

    def test_message_across_a_chunk_boundary(self) -> None:
        """
        A message split across appends is scanned from the joined array once
        it is whole, and the value is what a single chunk would give.
        """
        buf = ReceiveBuffer()
        buf.append(b"line one\nline t")
        self.assertEqual(buf.take_scanned(_scan_lines, 100), b"line one")
        self.assertIsNone(buf.take_scanned(_scan_lines, 100))
        buf.append(b"wo\nrest")
        self.assertIs(type(buf._data), bytearray)
        self.assertEqual(buf.take_scanned(_scan_lines, 100), b"line two")
        self.assertEqual(buf.take_all(), b"rest")

    def test_limit_bounds_what_the_scan_sees(self) -> None:
        """
        However much is buffered, the scan is told to stop C{limit} bytes
        after the offset, so a message longer than that is not found.
        """
        buf = ReceiveBuffer()
        buf.append(b"x" * 1000 + b"\n")
        self.assertIsNone(buf.take_scanned(_scan_lines, 1000))
        self.assertEqual(buf.take_scanned(_scan_lines, 1001), b"x" * 1000)

    def test_end_outside_the_window_is_refused(self) -> None:
        """
        An end before the offset or past the stop raises L{ValueError} and
        consumes nothing.
        """
        buf = ReceiveBuffer()
        buf.append(b"abcdef")
        buf.take_exactly(1)
        for end in (0, 5):
            with self.assertRaises(ValueError):
                buf.take_scanned(lambda data, start, stop, e=end: (1, e), 3)
        self.assertEqual(buf.take_all(), b"bcdef")

    def test_scan_error_consumes_nothing(self) -> None:
        """
        An exception from the scan reaches the caller with nothing consumed.
        """

        def scan(data: bytes | bytearray, start: int, stop: int) -> None:
            raise KeyError("bad")

        buf = ReceiveBuffer()
        buf.append(b"abc")
        with self.assertRaises(KeyError):
            buf.take_scanned(scan, 10)
        self.assertEqual(buf.take_all(), b"abc")

    def test_empty_buffer_does_not_call_the_scan(self) -> None:
        """
        With nothing unread the scan is not called, and a consumed chunk is
        released as other failed takes release it.
        """
        calls: list[int] = []

        def scan(data: bytes | bytearray, start: int, stop: int) -> None:
            calls.append(start)

        buf = ReceiveBuffer()
        buf.append(b"ab\n")
        buf.take_until(b"\n", 10)
        self.assertIsNone(buf.take_scanned(scan, 10))
        self.assertEqual(calls, [])
        self.assertEqual(buf._data, b"")

    def test_negative_limit_is_rejected(self) -> None:
        """
        A negative limit raises L{ValueError}.
        """
        with self.assertRaises(ValueError):
            ReceiveBuffer().take_scanned(_scan_lines, -1)

    def test_compaction_bounds_the_array(self) -> None:
        """
        Scanning messages out of a joined array forever keeps the array
        within the same bound as the other takes.
        """
        buf = ReceiveBuffer()
        chunk = b"0123456789abcd\n" * 64 + b"partial"
        largest = 0
        for _ in range(2000):
            buf.append(chunk)
            while buf.take_scanned(_scan_lines, 100) is not None:
                pass
            largest = max(largest, len(buf._data))
        unread = len(buf)
        self.assertLess(unread, 100)
        bound = 2 * (unread + len(chunk)) + _buffer._COMPACT_MIN + len(chunk)
        self.assertLessEqual(largest, bound)

    @settings(deadline=None, max_examples=100)
    @given(
        lines=st.lists(
            st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=10
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
    )
    def test_same_lines_as_take_until_in_any_chunking(
        self, lines: list[bytes], cuts: list[int]
    ) -> None:
        """
        Lines scanned out of any chunking are those L{take_until} gives.
        """
        stream = b"".join(line + b"\n" for line in lines)
        edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
        scanned, taken = ReceiveBuffer(), ReceiveBuffer()
        got: list[bytes] = []
        want: list[bytes] = []
        for a, b in pairwise(edges):
            scanned.append(stream[a:b])
            taken.append(stream[a:b])
            while (line := scanned.take_scanned(_scan_lines, 100)) is not None:
                self.assertIs(type(line), bytes)
                got.append(line)
            while (line := taken.take_until(b"\n", 100)) is not None:
                want.append(line)
        self.assertEqual(got, want)
        self.assertEqual(got, lines)


class TakePrefixedTests(SynchronousTestCase):
    """
    Tests for L{ReceiveBuffer.take_prefixed}.
    """

    def test_every_prefix_size(self) -> None:
        """
        A big-endian length of 1, 2, 4 or 8 bytes, then the body: the body
        is returned and exactly the message consumed.
        """
        for size in (1, 2, 4, 8):
            buf = ReceiveBuffer()
            buf.append((5).to_bytes(size, "big") + b"hello" + b"rest")
            self.assertEqual(buf.take_prefixed(size, 100), b"hello", size)
            self.assertEqual(buf.take_all(), b"rest", size)

    def test_incomplete_or_over_the_limit_consumes_nothing(self) -> None:
        """
        A prefix or body not all buffered, or a length over C{max_length},
        gives C{None} and leaves the bytes.
        """
        buf = ReceiveBuffer()
        buf.append(b"\x00\x00")
        self.assertIsNone(buf.take_prefixed(4, 100))
        buf.append(b"\x00\x03ab")
        self.assertIsNone(buf.take_prefixed(4, 100))
        buf.append(b"c")
        self.assertIsNone(buf.take_prefixed(4, 2))
        self.assertEqual(len(buf), 7)
        self.assertEqual(buf.take_prefixed(4, 3), b"abc")
        self.assertFalse(buf)

    def test_bad_size_is_refused(self) -> None:
        """
        A size other than 1, 2, 4 or 8 raises, whether or not bytes are
        buffered.
        """
        buf = ReceiveBuffer()
        with self.assertRaises(ValueError):
            buf.take_prefixed(3, 10)
        buf.append(b"\x00\x00\x00\x00")
        with self.assertRaises(ValueError):
            buf.take_prefixed(3, 10)
        self.assertEqual(len(buf), 4)

    def test_from_the_joining_array(self) -> None:
        """
        Bodies taken from the joining array are C{bytes}, short and long
        (the one-copy path), and taking the last byte drops the array.
        """
        big = bytes(range(256)) * 100
        stream = b"\x03abc" + len(big).to_bytes(4, "big")
        buf = ReceiveBuffer()
        buf.append(stream[:2])
        buf.append(stream[2:] + big[:10])
        buf.append(big[10:])
        self.assertIs(type(buf._data), bytearray)
        body = buf.take_prefixed(1, 10)
        self.assertEqual((type(body), body), (bytes, b"abc"))
        body = buf.take_prefixed(4, len(big))
        self.assertEqual((type(body), body), (bytes, big))
        self.assertEqual(buf._data, b"")

    def test_drops_split_lines(self) -> None:
        """
        Lines split ahead do not survive a prefixed take between line takes.
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\n\x01xc\r\nd\r\n")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"a")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"b")
        self.assertEqual(buf.take_prefixed(1, 10), b"x")
        self.assertIsNone(buf._lines)
        self.assertEqual(buf.take_until(b"\r\n", 10), b"c")


class RepresentationTests(SynchronousTestCase):
    """
    A chunk is kept as it arrived while it holds whole messages, joined in an
    array only when a message straddles chunks, and dropped once consumed.
    """

    def test_chunk_is_adopted_without_copy(self) -> None:
        """
        A chunk appended to an empty buffer is kept as it is, and lines are
        sliced out of it.
        """
        chunk = b"one\r\ntwo\r\n"
        buf = ReceiveBuffer()
        buf.append(chunk)
        self.assertIs(buf._data, chunk)
        self.assertEqual(buf.take_until(b"\r\n", 100), b"one")
        self.assertIs(buf._data, chunk)
        self.assertEqual(buf.take_until(b"\r\n", 100), b"two")

    def test_take_some_of_a_whole_chunk_returns_it(self) -> None:
        """
        C{take_some} of a whole adopted chunk returns the chunk itself.
        """
        chunk = b"abcdef"
        buf = ReceiveBuffer()
        buf.append(chunk)
        self.assertIs(buf.take_some(100), chunk)
        self.assertFalse(buf)

    def test_mutable_chunk_is_copied(self) -> None:
        """
        A C{bytearray} chunk is copied, so the caller may reuse it at once.
        """
        chunk = bytearray(b"abc\n")
        buf = ReceiveBuffer()
        buf.append(chunk)  # type: ignore[arg-type]
        chunk[:] = b"xyz\n"
        self.assertIs(type(buf._data), bytes)
        self.assertEqual(buf.take_until(b"\n", 100), b"abc")

    def test_straddling_message_joins_in_an_array(self) -> None:
        """
        A chunk arriving while part of the previous one is unread is joined
        with that remainder in an array, and later chunks extend the array.
        """
        buf = ReceiveBuffer()
        buf.append(b"done\npart")
        self.assertEqual(buf.take_until(b"\n", 100), b"done")
        self.assertIsNone(buf.take_until(b"\n", 100))
        buf.append(b"ial")
        self.assertIs(type(buf._data), bytearray)
        self.assertEqual(buf._data, b"partial")
        array = buf._data
        buf.append(b"\nnext")
        self.assertIs(buf._data, array)
        self.assertEqual(buf.take_until(b"\n", 100), b"partial")
        self.assertEqual(buf.take_all(), b"next")

    def test_waiting_reader_holds_no_chunk(self) -> None:
        """
        A take that finds the buffer fully consumed drops the chunk, so a
        reader waiting for the next line keeps no received bytes alive.
        """
        for take in (
            lambda b: b.take_until(b"\n", 100),
            lambda b: b.take_exactly(1),
            lambda b: b.take_some(1),
        ):
            buf = ReceiveBuffer()
            buf.append(b"line\n" * 100)
            while buf.take_until(b"\n", 100) is not None:
                pass
            self.assertEqual(buf._data, b"")
            self.assertIsNone(take(buf))
            self.assertEqual(buf._data, b"")

    def test_consumed_array_is_dropped(self) -> None:
        """
        Once an array is fully consumed and a take finds nothing, the buffer
        goes back to adopting chunks.
        """
        buf = ReceiveBuffer()
        buf.append(b"ab")
        self.assertEqual(buf.take_exactly(1), b"a")
        buf.append(b"c")
        self.assertIs(type(buf._data), bytearray)
        self.assertEqual(buf.take_exactly(2), b"bc")
        self.assertIsNone(buf.take_exactly(1))
        self.assertIs(type(buf._data), bytes)
        chunk = b"next chunk"
        buf.append(chunk)
        self.assertIs(buf._data, chunk)

    def test_partial_take_leaves_chunk_in_place(self) -> None:
        """
        A take that cannot be satisfied while bytes are unread keeps them.
        """
        buf = ReceiveBuffer()
        buf.append(b"abc")
        self.assertIsNone(buf.take_exactly(4))
        self.assertIsNone(buf.take_until(b"\n", 100))
        self.assertEqual(buf.take_all(), b"abc")


class CostTests(SynchronousTestCase):
    """
    The buffer's work is linear in the bytes received and its memory is
    bounded, whatever the chunking.
    """

    def _drip(self, delimiter: bytes, total: int) -> tuple[int, int]:
        """
        Append C{total} bytes one at a time, trying C{take_until} after each.

        @param delimiter: The delimiter searched for (never sent).
        @param total: How many bytes to drip.
        @return: The bytes examined by all searches, and the number of
            searches.
        """
        buf, data = _counting_buffer()
        take_until = buf.take_until
        previous = 0
        for _ in range(total):
            buf.append(b"x")
            self.assertIsNone(take_until(delimiter, 1 << 20))
            # The resume index only ever moves forward.
            self.assertGreaterEqual(buf._searched, previous)
            previous = buf._searched
        self.assertEqual(len(buf), total)
        return data.scanned, data.calls

    def test_slow_drip_scans_each_byte_once(self) -> None:
        """
        Dripping 200 KB one byte at a time with a one-byte delimiter examines
        each byte once in all (a rescan would examine about 20 billion).
        """
        scanned, calls = self._drip(b"\n", 200_000)
        self.assertEqual(calls, 200_000)
        self.assertLessEqual(scanned, 200_000)

    def test_slow_drip_multibyte_delimiter_is_linear(self) -> None:
        """
        With a two-byte delimiter, each search re-examines only one byte of
        overlap, so the total stays under twice the bytes appended.
        """
        scanned, _ = self._drip(b"\r\n", 200_000)
        self.assertLess(scanned, 2 * 200_000)

    def test_resume_across_compaction(self) -> None:
        """
        When compaction drops the consumed prefix, the resume index moves with
        the data, so a pending partial line is neither rescanned nor lost.
        """
        buf, data = _counting_buffer()
        buf.append(b"a" * 20_000 + b"\n" + b"b" * 100)
        self.assertEqual(buf.take_until(b"\n", 1 << 20), b"a" * 20_000)
        self.assertIsNone(buf.take_until(b"\n", 1 << 20))
        before = data.scanned
        buf.append(b"c\r")
        # Compacted: the 20001 consumed bytes are gone and the index shifted.
        self.assertEqual(buf._start, 0)
        self.assertEqual(len(data), 102)
        self.assertEqual(buf._searched, 100)
        buf.append(b"\n")
        self.assertEqual(buf.take_until(b"\n", 1 << 20), b"b" * 100 + b"c\r")
        self.assertEqual(data.scanned - before, 3)

    def test_compaction_bounds_the_array(self) -> None:
        """
        Appending and taking lines forever does not grow the array beyond a
        small multiple of what is unread plus the compaction threshold.
        """
        buf = ReceiveBuffer()
        chunk = b"0123456789abcd\r\n" * 64 + b"partial"
        largest = 0
        for _ in range(2000):
            buf.append(chunk)
            while buf.take_until(b"\r\n", 100) is not None:
                pass
            largest = max(largest, len(buf._data))
        unread = len(buf)
        self.assertLess(unread, 100)
        bound = 2 * (unread + len(chunk)) + _buffer._COMPACT_MIN + len(chunk)
        self.assertLessEqual(largest, bound)
        # Without compaction the array would hold all 2 MB appended.
        self.assertLess(largest, len(chunk) * 2000 // 20)

    def test_reads_do_not_compact(self) -> None:
        """
        Taking never moves the unread bytes; only the read offset advances.
        """
        buf = ReceiveBuffer()
        buf.append(b"x\n" * 50_000)
        data = buf._data
        for _ in range(40_000):
            buf.take_until(b"\n", 10)
        self.assertIs(buf._data, data)
        self.assertEqual(len(data), 100_000)
        self.assertEqual(buf._start, 80_000)


_DELIMITERS = [b"\n", b"\r\n", b"\r\n\r\n", b"aa", b"aba"]
# Few distinct bytes, so delimiters, partial delimiters and self-overlapping
# matches ("aaa" for b"aa") turn up often.
_PIECES = st.sampled_from([b"a", b"b", b"\r", b"\n", b"\r\n", b"ab", b"xyz", b""])
_LINES = st.lists(st.binary(max_size=20) | _PIECES.map(lambda p: p * 3), max_size=20)


@contextmanager
def _tiny_thresholds() -> Iterator[None]:
    """
    Make compaction and the one-copy path trigger after a few bytes, so both
    run on every example.
    """
    with mock.patch.multiple(_buffer, _COMPACT_MIN=2, _LARGE_COPY=3):
        yield


_SPLIT_STREAM = {
    "payloads": _LINES,
    "tail": st.binary(max_size=10),
    "delimiter": st.sampled_from(_DELIMITERS),
    "cut_fractions": st.lists(st.floats(0, 1), max_size=30),
}
_SPLIT_STREAM_LIMIT = {
    **_SPLIT_STREAM,
    "tail": st.binary(max_size=30),
    "max_length": st.integers(0, 25),
}


class SplitStreamTests(SynchronousTestCase):
    """
    However a stream is chunked, the buffer yields the lines of the unsplit
    stream.
    """

    def _check_lines(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        cut_fractions: list[float],
    ) -> None:
        """
        Feed the stream in the chunks the cuts give, taking every complete
        line after each append, and compare with C{bytes.split}.
        """
        stream = delimiter.join(payloads) + delimiter + tail
        *expected, remainder = stream.split(delimiter)
        cuts = [int(f * len(stream)) for f in cut_fractions]
        buf = ReceiveBuffer()
        lines = []
        for chunk in _chunks(stream, cuts):
            buf.append(chunk)
            while (line := buf.take_until(delimiter, len(stream))) is not None:
                lines.append(line)
        self.assertEqual(lines, expected)
        self.assertEqual(buf.take_all(), remainder)

    def _check_limit(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        max_length: int,
        cut_fractions: list[float],
    ) -> None:
        """
        Feed the stream in chunks with a line limit and compare with what the
        unsplit stream dictates: the lines before the first over-long one
        (or over-long tail), then L{LineTooLongError}.
        """
        stream = delimiter.join(payloads) + delimiter + tail
        *complete, remainder = stream.split(delimiter)
        expected: list[bytes] = []
        must_fail = False
        for complete_line in complete:
            if len(complete_line) > max_length:
                must_fail = True
                break
            expected.append(complete_line)
        else:
            must_fail = len(remainder) >= max_length + len(delimiter)

        buf = ReceiveBuffer()
        lines = []
        failed = False
        for chunk in _chunks(stream, [int(f * len(stream)) for f in cut_fractions]):
            buf.append(chunk)
            try:
                while (line := buf.take_until(delimiter, max_length)) is not None:
                    lines.append(line)
            except LineTooLongError as error:
                self.assertEqual(error.limit, max_length)
                self.assertGreaterEqual(error.length, max_length + len(delimiter))
                self.assertEqual(error.length, len(buf))
                failed = True
                break
        self.assertEqual(lines, expected)
        self.assertEqual(failed, must_fail)

    @_settings
    @given(**_SPLIT_STREAM)
    def test_chunked_stream_gives_unsplit_lines(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        cut_fractions: list[float],
    ) -> None:
        """
        Taking every complete line after each append gives exactly the lines
        that splitting the whole stream gives, and leaves the tail buffered.
        """
        self._check_lines(payloads, tail, delimiter, cut_fractions)

    @_settings
    @given(**_SPLIT_STREAM)
    def test_chunked_stream_gives_unsplit_lines_while_compacting(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        cut_fractions: list[float],
    ) -> None:
        """
        The same holds when compaction and the one-copy path run constantly.
        """
        with _tiny_thresholds():
            self._check_lines(payloads, tail, delimiter, cut_fractions)

    @_settings
    @given(**_SPLIT_STREAM_LIMIT)
    def test_chunked_stream_respects_limit(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        max_length: int,
        cut_fractions: list[float],
    ) -> None:
        """
        However the stream is chunked, the lines up to the first over-long one
        come back and then L{LineTooLongError} is raised, exactly as the
        unsplit stream dictates.
        """
        self._check_limit(payloads, tail, delimiter, max_length, cut_fractions)

    @_settings
    @given(**_SPLIT_STREAM_LIMIT)
    def test_chunked_stream_respects_limit_while_compacting(
        self,
        payloads: list[bytes],
        tail: bytes,
        delimiter: bytes,
        max_length: int,
        cut_fractions: list[float],
    ) -> None:
        """
        The same holds when compaction and the one-copy path run constantly.
        """
        with _tiny_thresholds():
            self._check_limit(payloads, tail, delimiter, max_length, cut_fractions)


_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=12) | _PIECES),
        # A mutable chunk, which the buffer must copy rather than adopt.
        st.tuples(st.just("append"), st.binary(max_size=12).map(bytearray)),
        st.tuples(st.just("exactly"), st.integers(0, 8)),
        st.tuples(st.just("some"), st.integers(1, 8)),
        st.tuples(st.just("until"), st.sampled_from(_DELIMITERS), st.integers(0, 8)),
        st.tuples(st.just("find"), st.sampled_from(_DELIMITERS), st.integers(0, 8)),
        st.tuples(st.just("peek"), st.integers(0, 8)),
        st.tuples(st.just("prefixed"), st.sampled_from([1, 2]), st.integers(0, 8)),
        st.tuples(st.just("all")),
        st.tuples(st.just("clear")),
    ),
    max_size=60,
)


class _ModelCheck(SynchronousTestCase):
    """
    Compares a buffer with a C{bytes} model (no tests of its own).
    """

    def _check_model(self, operations: list[tuple[object, ...]]) -> None:
        """
        Run the operations on a buffer and on a C{bytes} model, comparing
        every result and the lengths after each step.
        """
        buf = ReceiveBuffer()
        model = b""
        for operation in operations:
            name = operation[0]
            if name == "append":
                data = operation[1]
                assert isinstance(data, (bytes, bytearray))
                buf.append(data)  # type: ignore[arg-type]
                model += data
                if isinstance(data, bytearray):
                    # The caller reusing its array must not change the buffer.
                    data[:] = b"!" * len(data)
            elif name == "exactly":
                n = operation[1]
                assert isinstance(n, int)
                expected = model[:n] if len(model) >= n else None
                self.assertEqual(buf.take_exactly(n), expected)
                if expected is not None:
                    model = model[n:]
            elif name == "some":
                n = operation[1]
                assert isinstance(n, int)
                self.assertEqual(buf.take_some(n), model[:n] or None)
                model = model[n:]
            elif name in ("until", "find"):
                delimiter, limit = operation[1], operation[2]
                assert isinstance(delimiter, bytes)
                assert isinstance(limit, int)
                index = model.find(delimiter, 0, limit + len(delimiter))
                if name == "find":
                    self.assertEqual(buf.find(delimiter, limit), index)
                elif index >= 0:
                    self.assertEqual(buf.take_until(delimiter, limit), model[:index])
                    model = model[index + len(delimiter) :]
                elif len(model) >= limit + len(delimiter):
                    with self.assertRaises(LineTooLongError):
                        buf.take_until(delimiter, limit)
                else:
                    self.assertIsNone(buf.take_until(delimiter, limit))
            elif name == "peek":
                n = operation[1]
                assert isinstance(n, int)
                self.assertEqual(buf.peek(n), model[:n])
            elif name == "prefixed":
                size, limit = operation[1], operation[2]
                assert isinstance(size, int)
                assert isinstance(limit, int)
                taken = None
                if len(model) >= size:
                    length = int.from_bytes(model[:size], "big")
                    if length <= limit and len(model) >= size + length:
                        taken = model[size : size + length]
                        model = model[size + length :]
                self.assertEqual(buf.take_prefixed(size, limit), taken)
            elif name == "all":
                self.assertEqual(buf.take_all(), model)
                model = b""
            else:
                buf.clear()
                model = b""
            self.assertEqual(len(buf), len(model))
            self.assertEqual(bool(buf), bool(model))


class MixedOperationsTests(_ModelCheck):
    """
    Any sequence of appends and takes behaves like slicing a plain C{bytes}.
    """

    @_settings
    @given(operations=_OPERATIONS)
    def test_matches_bytes_model(self, operations: list[tuple[object, ...]]) -> None:
        """
        Each operation returns what the same operation on a C{bytes} model
        returns, and the lengths stay equal.
        """
        self._check_model(operations)

    @_settings
    @given(operations=_OPERATIONS)
    def test_matches_bytes_model_while_compacting(
        self, operations: list[tuple[object, ...]]
    ) -> None:
        """
        The model still matches when compaction and the one-copy path run
        constantly.
        """
        with _tiny_thresholds():
            self._check_model(operations)


# Streams of many short lines, appended several lines at a time, so that
# take_until splits lines ahead (ReceiveBuffer._split_ahead) and the other
# operations land in the middle of a split list.
_PIPELINED_OPERATIONS = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.lists(st.binary(max_size=6) | _PIECES, min_size=2, max_size=12).map(
                lambda lines: b"\r\n".join(lines) + b"\r\n"
            ),
        ),
        st.tuples(st.just("append"), st.binary(max_size=5) | _PIECES),
        st.tuples(st.just("until"), st.just(b"\r\n"), st.integers(0, 8)),
        st.tuples(st.just("until"), st.just(b"\r\n"), st.just(8)),
        st.tuples(st.just("until"), st.just(b"\r\n"), st.just(8)),
        st.tuples(st.just("until"), st.sampled_from(_DELIMITERS), st.integers(0, 8)),
        st.tuples(st.just("find"), st.sampled_from(_DELIMITERS), st.integers(0, 8)),
        st.tuples(st.just("exactly"), st.integers(0, 8)),
        st.tuples(st.just("some"), st.integers(1, 8)),
        st.tuples(st.just("peek"), st.integers(0, 8)),
        st.tuples(st.just("prefixed"), st.sampled_from([1, 2]), st.integers(0, 8)),
        st.tuples(st.just("all")),
        st.tuples(st.just("clear")),
    ),
    max_size=80,
)


class SplitAheadTests(_ModelCheck):
    """
    Lines split ahead for a pipelining peer are the lines the search would
    have found, and any other take drops them.
    """

    def test_pipelined_short_lines_are_split_ahead(self) -> None:
        """
        From the second short line in a row, the complete lines that follow
        are split in one call, and taken from that list without a search.
        """
        buf = ReceiveBuffer()
        buf.append(b"".join(b"line %d\r\n" % n for n in range(10)) + b"partial")
        with mock.patch.object(
            ReceiveBuffer,
            "_split_ahead",
            autospec=True,
            side_effect=ReceiveBuffer._split_ahead,
        ) as split:
            self.assertEqual(buf.take_until(b"\r\n", 100), b"line 0")
            self.assertEqual(split.call_count, 0)
            self.assertEqual(buf.take_until(b"\r\n", 100), b"line 1")
            self.assertEqual(split.call_count, 1)
        self.assertEqual(buf._lines, [b"line %d" % n for n in range(9, 1, -1)])
        taken = [buf.take_until(b"\r\n", 100) for _ in range(8)]
        self.assertEqual(taken, [b"line %d" % n for n in range(2, 10)])
        self.assertIsNone(buf.take_until(b"\r\n", 100))
        self.assertEqual(len(buf), len(b"partial"))
        self.assertEqual(buf.take_all(), b"partial")

    def test_counted_take_drops_the_split_lines(self) -> None:
        """
        A counted read between line reads takes the bytes that follow the
        last line taken, and the lines after it are found again.
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\nc\r\nd\r\ne\r\n")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"a")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"b")
        self.assertTrue(buf._lines)
        self.assertEqual(buf.take_exactly(3), b"c\r\n")
        self.assertIsNone(buf._lines)
        self.assertEqual(buf.take_until(b"\r\n", 10), b"d")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"e")
        self.assertFalse(buf)

    def test_smaller_limit_is_checked_against_split_lines(self) -> None:
        """
        A take with a smaller C{max_length} than a split line's length does
        not get it from the list: it raises as the search would.
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\nlonger line\r\nc\r\n")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"a")
        self.assertEqual(buf.take_until(b"\r\n", 100), b"b")
        with self.assertRaises(LineTooLongError):
            buf.take_until(b"\r\n", 3)
        self.assertEqual(buf.take_until(b"\r\n", 100), b"longer line")

    def test_over_long_split_line_raises_when_reached(self) -> None:
        """
        A split line over the limit is not taken from the list: when it is
        reached, the list is dropped and the search raises for it.
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\nc\r\n" + b"x" * 20 + b"\r\nd\r\n")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"a")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"b")
        self.assertTrue(buf._lines)
        self.assertEqual(buf.take_until(b"\r\n", 10), b"c")
        with self.assertRaises(LineTooLongError) as raised:
            buf.take_until(b"\r\n", 10)
        self.assertEqual(raised.exception.limit, 10)
        self.assertIsNone(buf._lines)
        self.assertEqual(buf.take_until(b"\r\n", 100), b"x" * 20)

    def test_find_with_another_delimiter_drops_the_split_lines(self) -> None:
        """
        Lines split at one delimiter are not given to a take for another
        that a C{find} for it made current.
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\nc\r\nd\r\n")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"a")
        self.assertEqual(buf.take_until(b"\r\n", 10), b"b")
        self.assertEqual(buf.find(b"\n", 10), 2)
        self.assertEqual(buf.take_until(b"\n", 10), b"c\r")

    def test_window_bounds_the_split(self) -> None:
        """
        At most C{_SPLIT_WINDOW} bytes are split at a time, whatever is
        buffered: a megabyte of one-byte lines keeps a bounded list.
        """
        buf = ReceiveBuffer()
        buf.append(b"x\n" * 500_000)
        self.assertEqual(buf.take_until(b"\n", 10), b"x")
        self.assertEqual(buf.take_until(b"\n", 10), b"x")
        assert buf._lines is not None
        self.assertLessEqual(len(buf._lines), _buffer._SPLIT_WINDOW // 2)
        count = 2
        while buf.take_until(b"\n", 10) is not None:
            count += 1
            assert buf._lines is None or len(buf._lines) <= _buffer._SPLIT_WINDOW
        self.assertEqual(count, 500_000)

    def test_window_grows_with_the_line(self) -> None:
        """
        After 1 KiB lines the window is 32 of them (not the 2 KiB floor), so
        a split keeps many; and a split keeps at most C{_SPLIT_LINES} lines,
        whatever the window holds.
        """
        line = b"y" * 1022
        buf = ReceiveBuffer()
        buf.append((line + b"\r\n") * 40)
        self.assertEqual(buf.take_until(b"\r\n", 2048), line)
        self.assertEqual(buf.take_until(b"\r\n", 2048), line)
        assert buf._lines is not None
        self.assertEqual(len(buf._lines), 32)
        short = ReceiveBuffer()
        short.append(b"z\n" * 1000)
        self.assertEqual(short.take_until(b"\n", 10), b"z")
        self.assertEqual(short.take_until(b"\n", 10), b"z")
        assert short._lines is not None
        self.assertEqual(len(short._lines), _buffer._SPLIT_LINES)

    def test_emptied_buffer_keeps_no_list(self) -> None:
        """
        Once every line is taken, the buffer holds neither the chunk nor a
        list of lines (what an idle connection costs).
        """
        buf = ReceiveBuffer()
        buf.append(b"a\r\nb\r\nc\r\nd\r\n")
        while buf.take_until(b"\r\n", 10) is not None:
            pass
        self.assertEqual(buf._data, b"")
        self.assertTrue(buf._lines is None or buf._lines is _buffer._LINE_TAKEN)
        buf.append(b"partial")
        self.assertIsNone(buf.take_until(b"\r\n", 10))
        self.assertFalse(buf._lines)

    @_settings
    @given(operations=_PIPELINED_OPERATIONS)
    def test_matches_bytes_model(self, operations: list[tuple[object, ...]]) -> None:
        """
        Any mix of pipelined appends, line takes with varying limits and
        delimiters, and other takes matches the C{bytes} model.
        """
        self._check_model(operations)

    @_settings
    @given(operations=_PIPELINED_OPERATIONS)
    def test_matches_bytes_model_with_small_windows(
        self, operations: list[tuple[object, ...]]
    ) -> None:
        """
        The same holds when the split window is a few bytes (delimiters cut
        at its end, lines longer than it), a split keeps at most three
        lines, and compaction runs constantly.
        """
        with (
            _tiny_thresholds(),
            mock.patch.multiple(
                _buffer,
                _SPLIT_WINDOW=7,
                _SPLIT_WINDOW_MAX=7,
                _SPLIT_LINES=3,
                _SPLIT_LINE_MAX=3,
            ),
        ):
            self._check_model(operations)
