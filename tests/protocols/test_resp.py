"""
Tests for L{txstateproto.protocols.resp}: client commands (multibulk and
inline) with Redis 7.0's rules, limits and error texts, and replies in RESP2
and RESP3 with Redis 7.0's encodings.

The expected bytes and messages were checked against a Redis 7.0.15 server
on loopback (see the comments naming what Redis does); the tests themselves
need no server.
"""

from __future__ import annotations

import math
import tracemalloc
from itertools import pairwise
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from tests.helpers import Body, idle
from txstateproto import (
    EndOfStreamError,
    FrameTooLongError,
    FramingError,
    LineTooLongError,
    ProtocolError,
    StateProtocol,
)
from txstateproto.protocols import (
    NULL_ARRAY,
    ErrorReply,
    RESPProtocolError,
    SimpleString,
    encode_reply,
    read_command,
    read_commands,
    take_commands,
    wait_commands,
    write_reply,
)
from txstateproto.testing import ProtocolHarness

_settings = settings(deadline=None, max_examples=150)

#: Redis's PROTO_INLINE_MAX_SIZE.
_INLINE_MAX = 64 * 1024


def _multibulk(*args: bytes) -> bytes:
    """
    Encode a command as a multibulk array by hand, independently of the
    code under test.
    """
    out = [b"*" + str(len(args)).encode() + b"\r\n"]
    for arg in args:
        out.append(b"$" + str(len(arg)).encode() + b"\r\n" + arg + b"\r\n")
    return b"".join(out)


class _Reader(StateProtocol):
    """
    Read commands into C{commands}; on a RESP protocol error, do what Redis
    does: send the error reply and close.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options
        self.commands: list[list[bytes]] = []
        self.error: RESPProtocolError | None = None

    #: If set, fired by the test before the first command is read.
    gate: defer.Deferred[None] | None = None

    def start(self) -> Body:
        """
        Read commands until one is refused.
        """
        if self.gate is not None:
            yield self.gate
        while True:
            try:
                command = yield read_command(self, **self.options)
            except RESPProtocolError as e:
                self.error = e
                self.write(e.reply)
                return
            self.commands.append(command)


def _reader(
    data: bytes = b"",
    chunk_size: int | None = None,
    max_frame_size: int | None = None,
    **options: Any,
) -> tuple[ProtocolHarness, _Reader]:
    """
    Connect a L{_Reader} and feed it C{data}.
    """
    reader = _Reader(**options)
    if max_frame_size is not None:
        reader.max_frame_size = max_frame_size
    h = ProtocolHarness(reader)
    if data:
        h.feed(data, chunk_size)
    return h, reader


class _ErrorCase(SynchronousTestCase):
    """
    Helpers to check that input is refused with Redis's words.
    """

    def assert_refused(
        self, data: bytes, message: str, chunk_size: int | None = None, **kw: Any
    ) -> ProtocolHarness:
        """
        Feed C{data}; check that the reader was refused with C{message}, sent
        Redis's reply and closed, after reading no command.
        """
        h, reader = _reader(data, chunk_size, **kw)
        self.assertIsNotNone(reader.error, "input was not refused")
        assert reader.error is not None
        self.assertEqual(reader.error.message, message)
        self.assertEqual(
            h.take_output(), b"-ERR " + message.encode("latin-1") + b"\r\n"
        )
        self.assertTrue(h.closed)
        self.assertEqual(reader.commands, [])
        return h

    def assert_waiting(self, data: bytes, **kw: Any) -> tuple[ProtocolHarness, _Reader]:
        """
        Feed C{data}; check that nothing was read or refused yet.
        """
        h, reader = _reader(data, **kw)
        self.assertIsNone(reader.error)
        self.assertEqual(reader.commands, [])
        self.assertFalse(h.closed)
        return h, reader


class MultibulkTests(_ErrorCase):
    """
    Reading multibulk commands, the form every client library sends.
    """

    def test_reads_arguments(self) -> None:
        """An array of bulk strings gives the list of its payloads."""
        _, reader = _reader(_multibulk(b"SET", b"key", b"value"))
        self.assertEqual(reader.commands, [[b"SET", b"key", b"value"]])

    def test_payloads_are_binary(self) -> None:
        """Payloads may hold CR, LF, NUL and any byte; an empty one is b''."""
        payload = b"a\r\nb\0c\xff\r"
        _, reader = _reader(_multibulk(b"SET", payload, b""))
        self.assertEqual(reader.commands, [[b"SET", payload, b""]])

    def test_name_is_not_upper_cased(self) -> None:
        """The arguments are returned as sent."""
        _, reader = _reader(_multibulk(b"get", b"K"))
        self.assertEqual(reader.commands, [[b"get", b"K"]])

    def test_buffered_command_has_fired_on_return(self) -> None:
        """A command already buffered is returned as a fired Deferred."""
        h = ProtocolHarness(idle())
        h.feed(_multibulk(b"PING") + _multibulk(b"ECHO", b"hi"))
        self.assertEqual(self.successResultOf(read_command(h.protocol)), [b"PING"])
        self.assertEqual(
            self.successResultOf(read_command(h.protocol)), [b"ECHO", b"hi"]
        )

    def test_waits_for_last_byte(self) -> None:
        """Fed one byte at a time, the command fires with its last byte."""
        h = ProtocolHarness(idle())
        d = read_command(h.protocol)
        data = _multibulk(b"ECHO", b"hello")
        for i in range(len(data) - 1):
            h.feed(data[i : i + 1])
            self.assertNoResult(d)
        h.feed(data[-1:])
        self.assertEqual(self.successResultOf(d), [b"ECHO", b"hello"])

    def test_pipelined_commands(self) -> None:
        """Many commands in one chunk are read in order."""
        commands = [[b"INCR", str(i).encode()] for i in range(100)]
        _, reader = _reader(b"".join(_multibulk(*c) for c in commands))
        self.assertEqual(reader.commands, commands)

    def test_bytes_after_command_stay_buffered(self) -> None:
        """Reading a command consumes exactly that command."""
        h = ProtocolHarness(idle())
        h.feed(_multibulk(b"PING") + b"rest\r\n")
        self.assertEqual(self.successResultOf(read_command(h.protocol)), [b"PING"])
        self.assertEqual(self.successResultOf(h.protocol.read_line()), b"rest")

    def test_two_bytes_after_payload_are_not_checked(self) -> None:
        """The two bytes after a payload are skipped unchecked, as Redis does."""
        _, reader = _reader(b"*1\r\n$4\r\nPINGxy" + _multibulk(b"ECHO"))
        self.assertEqual(reader.commands, [[b"PING"], [b"ECHO"]])

    def test_byte_after_header_cr_is_not_checked(self) -> None:
        """A header ends at its CR; Redis skips the next byte unchecked."""
        _, reader = _reader(b"*2\rX$4\rYPING\r\n$2\r\0hi\r\n")
        self.assertEqual(reader.commands, [[b"PING", b"hi"]])

    def test_byte_after_count_cr_may_be_cr(self) -> None:
        """The skipped byte after the count's CR may itself be a CR."""
        _, reader = _reader(b"*1\r\r$4\r\nPING\r\n")
        self.assertEqual(reader.commands, [[b"PING"]])

    def test_header_waits_for_byte_after_cr(self) -> None:
        """A header is judged only once the byte after its CR has arrived."""
        h, reader = self.assert_waiting(b"*abc\r")
        h.feed(b"\n")
        self.assertEqual(reader.error and reader.error.message, _INVALID_MULTIBULK)
        h, reader = self.assert_waiting(b"*1\r\n$x\r")
        h.feed(b"\n")
        self.assertEqual(reader.error and reader.error.message, _INVALID_BULK)

    def test_zero_and_negative_counts_are_skipped(self) -> None:
        """C{*0}, C{*-1} and any count below zero are skipped silently."""
        h, reader = _reader(b"*0\r\n*-1\r\n*-10\r\n" + _multibulk(b"PING"))
        self.assertEqual(reader.commands, [[b"PING"]])
        self.assertEqual(h.take_output(), b"")

    def test_largest_count_is_accepted_without_allocating(self) -> None:
        """A count of 2**31-1 is accepted, and nothing is allocated for it."""
        tracemalloc.start()
        try:
            self.assert_waiting(b"*2147483647\r\n" + _multibulk(b"x")[4:])
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 256 * 1024)

    def test_argument_longer_than_max_frame_size(self) -> None:
        """Arguments longer than max_frame_size are read in pieces and joined."""
        big = bytes(range(256)) * 40
        _, reader = _reader(_multibulk(b"SET", big, b"v"), 1000, max_frame_size=1024)
        self.assertEqual(reader.commands, [[b"SET", big, b"v"]])

    def test_argument_at_max_bulk_length(self) -> None:
        """An argument exactly max_bulk_length long is accepted."""
        _, reader = _reader(_multibulk(b"x" * 10), max_bulk_length=10)
        self.assertEqual(reader.commands, [[b"x" * 10]])

    def test_argument_over_max_bulk_length(self) -> None:
        """An argument over max_bulk_length is refused before its payload."""
        self.assert_refused(b"*1\r\n$11\r\n", _INVALID_BULK, max_bulk_length=10)

    def test_default_max_bulk_length_is_512_mib(self) -> None:
        """512 MiB is accepted without allocating it; one byte more is refused."""
        tracemalloc.start()
        try:
            self.assert_waiting(b"*1\r\n$536870912\r\n" + b"x" * 100000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 1024 * 1024)
        self.assert_refused(b"*1\r\n$536870913\r\n", _INVALID_BULK)

    def test_huge_bulk_length_allocates_nothing(self) -> None:
        """A 4 GB bulk length is refused at once, allocating nothing for it."""
        tracemalloc.start()
        try:
            h = self.assert_refused(b"*1\r\n$4294967296\r\n", _INVALID_BULK)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 256 * 1024)
        del h

    def test_huge_allowed_bulk_is_not_preallocated(self) -> None:
        """A 4 GB bulk under a raised limit costs only the bytes received."""
        tracemalloc.start()
        try:
            self.assert_waiting(
                b"*1\r\n$4294967296\r\n" + b"x" * 100000, max_bulk_length=2**40
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 1024 * 1024)

    def test_huge_count_allocates_nothing(self) -> None:
        """A count over 2**31-1 (4 G) is refused at once, allocating nothing."""
        tracemalloc.start()
        try:
            self.assert_refused(b"*4294967296\r\n", _INVALID_MULTIBULK)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        self.assertLess(peak, 256 * 1024)


_INVALID_MULTIBULK = "Protocol error: invalid multibulk length"
_INVALID_BULK = "Protocol error: invalid bulk length"


class BadInputTests(_ErrorCase):
    """
    Every input Redis 7.0 refuses, refused with Redis's exact words; the
    reader sends C{-ERR <message>} and closes, as Redis does.
    """

    def test_count_not_a_number(self) -> None:
        """C{*abc} is an invalid multibulk length."""
        self.assert_refused(b"*abc\r\n", _INVALID_MULTIBULK)

    def test_count_over_int_max(self) -> None:
        """A count of 2**31 is an invalid multibulk length; 2**31-1 is not."""
        self.assert_refused(b"*2147483648\r\n", _INVALID_MULTIBULK)
        self.assert_waiting(b"*2147483647\r\n")

    def test_count_parsed_as_string2ll(self) -> None:
        """Counts string2ll refuses (sign, zeros, blanks, range) are invalid."""
        for count in (
            b"+1",
            b"01",
            b"-0",
            b" 1",
            b"1 ",
            b"",
            b"-",
            b"9223372036854775808",
            b"9" * 20,
            b"1" * 5000,
        ):
            self.assert_refused(b"*" + count + b"\r\n", _INVALID_MULTIBULK)

    def test_count_line_ending_in_bare_lf(self) -> None:
        """A count line ends at CR: with a bare LF the count runs on."""
        self.assert_refused(b"*1\n$4\r\nPING\r\n", _INVALID_MULTIBULK)

    def test_element_not_a_bulk_string(self) -> None:
        """C{*1 foo} is refused: expected '$', got 'f'."""
        self.assert_refused(b"*1\r\nfoo\r\n", "Protocol error: expected '$', got 'f'")

    def test_element_header_after_skipped_byte(self) -> None:
        """After C{*1\\r} the next byte is skipped, so C{$4} shows as '4'."""
        self.assert_refused(
            b"*1\r$4\r\nPING\r\n", "Protocol error: expected '$', got '4'"
        )

    def test_element_starting_with_cr_or_lf(self) -> None:
        """A CR or LF where '$' should be is shown as a space."""
        self.assert_refused(b"*1\r\n\r\n", "Protocol error: expected '$', got ' '")
        self.assert_refused(b"*1\r\n\n$4\r\n", "Protocol error: expected '$', got ' '")

    def test_element_starting_with_high_byte(self) -> None:
        """A byte above 0x7F is shown as that byte in the reply."""
        h = self.assert_refused(
            b"*1\r\n\xff\r\n", "Protocol error: expected '$', got '\xff'"
        )
        del h
        _, reader = _reader(b"*1\r\n\xff\r\n")
        assert reader.error is not None
        self.assertEqual(
            reader.error.reply, b"-ERR Protocol error: expected '$', got '\xff'\r\n"
        )

    def test_bulk_length_not_a_number(self) -> None:
        """C{$abc} is an invalid bulk length."""
        self.assert_refused(b"*1\r\n$abc\r\n", _INVALID_BULK)

    def test_null_bulk_in_request(self) -> None:
        """C{$-1} is a null in replies, but an invalid bulk length in requests."""
        self.assert_refused(b"*1\r\n$-1\r\n", _INVALID_BULK)

    def test_bulk_length_parsed_as_string2ll(self) -> None:
        """Lengths string2ll refuses are invalid bulk lengths."""
        for length in (b"04", b"+4", b"-0", b"", b" 4", b"9223372036854775808"):
            self.assert_refused(b"*1\r\n$" + length + b"\r\n", _INVALID_BULK)

    def test_second_element_refused(self) -> None:
        """An error in a later element refuses the whole command."""
        self.assert_refused(
            b"*3\r\n$3\r\nSET\r\n$1\r\nx\r\nfooz\r\n",
            "Protocol error: expected '$', got 'f'",
        )

    def test_inline_line_too_long(self) -> None:
        """64 KiB without LF wait; one byte more is a too big inline request."""
        h, reader = self.assert_waiting(b"A" * _INLINE_MAX)
        h.feed(b"A")
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big inline request",
        )
        self.assertTrue(h.closed)

    def test_inline_line_of_64_kib_is_accepted(self) -> None:
        """A line of exactly 64 KiB before its LF is a command."""
        _, reader = _reader(b"A" * _INLINE_MAX + b"\n", chunk_size=4096)
        self.assertEqual(reader.commands, [[b"A" * _INLINE_MAX]])

    def test_long_line_refused_whatever_the_chunking(self) -> None:
        """Over 64 KiB is refused even when the line end is in the same read."""
        self.assert_refused(
            b"A" * (_INLINE_MAX + 1) + b"\n", "Protocol error: too big inline request"
        )
        self.assert_refused(
            b"*" + b"1" * _INLINE_MAX + b"\r\n",
            "Protocol error: too big mbulk count string",
        )
        self.assert_refused(
            b"*1\r\n$" + b"1" * _INLINE_MAX + b"\r\n",
            "Protocol error: too big bulk count string",
        )

    def test_header_of_64_kib_is_judged_on_its_value(self) -> None:
        """A count header of exactly 64 KiB before its CR is parsed, and
        refused as a number."""
        self.assert_refused(
            b"*" + b"1" * (_INLINE_MAX - 1) + b"\r\n", _INVALID_MULTIBULK
        )

    def test_count_line_too_long(self) -> None:
        """64 KiB of count without CR wait; one more is a too big mbulk count."""
        h, reader = self.assert_waiting(b"*" + b"1" * (_INLINE_MAX - 1))
        h.feed(b"1")
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big mbulk count string",
        )

    def test_bulk_header_too_long(self) -> None:
        """64 KiB of bulk header without CR wait; one more is too big."""
        h, reader = self.assert_waiting(b"*1\r\n$" + b"1" * (_INLINE_MAX - 1))
        h.feed(b"1")
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big bulk count string",
        )

    def test_bulk_header_size_checked_before_its_prefix(self) -> None:
        """Over 64 KiB without CR is too big even if the '$' is missing."""
        self.assert_refused(
            b"*1\r\n" + b"X" * 70000, "Protocol error: too big bulk count string"
        )

    def test_unbalanced_double_quotes(self) -> None:
        """C{SET a "b} is refused: unbalanced quotes."""
        self.assert_refused(
            b'SET a "b\r\n', "Protocol error: unbalanced quotes in request"
        )

    def test_unbalanced_single_quotes(self) -> None:
        """C{SET a 'b} is refused: unbalanced quotes."""
        self.assert_refused(
            b"SET a 'b\n", "Protocol error: unbalanced quotes in request"
        )

    def test_closing_quote_followed_by_text(self) -> None:
        """A closing quote must be followed by a blank or the end of line."""
        for line in (b'ECHO "a"b\r\n', b"ECHO 'a'b\r\n", b"ECHO \"a\"'b'\r\n"):
            self.assert_refused(line, "Protocol error: unbalanced quotes in request")

    def test_nul_hides_inline_line_end(self) -> None:
        """A NUL before the LF hides it: Redis never runs the line, and says
        too big inline request once 64 KiB have arrived."""
        h, reader = self.assert_waiting(b"PI\0NG\r\n" + _multibulk(b"PING"))
        h.feed(b"x" * _INLINE_MAX)
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big inline request",
        )
        self.assertEqual(reader.commands, [])

    def test_nul_hides_count_end(self) -> None:
        """A NUL before the count's CR hides it until 64 KiB have arrived."""
        h, reader = self.assert_waiting(b"*1\0\r\n" + _multibulk(b"PING"))
        h.feed(b"x" * _INLINE_MAX)
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big mbulk count string",
        )

    def test_nul_hides_bulk_header_end(self) -> None:
        """A NUL before a bulk header's CR hides it until 64 KiB arrive."""
        h, reader = self.assert_waiting(b"*1\r\n$4\0\r\nPING\r\n")
        h.feed(b"x" * _INLINE_MAX)
        self.assertEqual(
            reader.error and reader.error.message,
            "Protocol error: too big bulk count string",
        )

    def test_error_reply_is_what_redis_sends(self) -> None:
        """C{reply} is C{-ERR <message>\\r\\n}."""
        error = RESPProtocolError("Protocol error: invalid bulk length")
        self.assertEqual(error.reply, b"-ERR Protocol error: invalid bulk length\r\n")
        self.assertEqual(str(error), "Protocol error: invalid bulk length")

    def test_errors_share_the_framing_base(self) -> None:
        """RESP errors are framing errors, under the base of the line error."""
        self.assertTrue(issubclass(RESPProtocolError, FramingError))
        for error in (FramingError, LineTooLongError, FrameTooLongError):
            self.assertTrue(issubclass(error, ProtocolError))


class InlineTests(_ErrorCase):
    """
    Reading inline commands, as telnet users and some redis-cli commands
    send them.
    """

    def _command(self, line: bytes) -> list[bytes]:
        _, reader = _reader(line)
        self.assertIsNone(reader.error)
        self.assertEqual(len(reader.commands), 1, reader.commands)
        return reader.commands[0]

    def test_crlf_line(self) -> None:
        """A line ending in CR LF is split on blanks."""
        self.assertEqual(self._command(b"SET k v\r\n"), [b"SET", b"k", b"v"])

    def test_bare_lf_line(self) -> None:
        """A line may end with a bare LF, as telnet users type it."""
        self.assertEqual(self._command(b"PING\n"), [b"PING"])

    def test_only_one_cr_dropped(self) -> None:
        """Only the CR right before the LF is dropped; others separate."""
        self.assertEqual(self._command(b"A\rB\r\r\n"), [b"A", b"B"])

    def test_blanks_separate(self) -> None:
        """Runs of spaces, tabs, VT and FF separate arguments."""
        self.assertEqual(self._command(b"  ECHO \t\x0b\x0c x  \r\n"), [b"ECHO", b"x"])

    def test_vt_and_ff_inside_an_argument(self) -> None:
        """VT and FF do not end an unquoted argument (sdssplitargs)."""
        self.assertEqual(
            self._command(b"ECHO a\x0bb\x0cc\n"), [b"ECHO", b"a\x0bb\x0cc"]
        )

    def test_double_quotes(self) -> None:
        """Double quotes keep blanks in an argument."""
        self.assertEqual(self._command(b'SET k "a b"\r\n'), [b"SET", b"k", b"a b"])

    def test_double_quote_escapes(self) -> None:
        """Double quotes take C-like escapes and \\xHH."""
        self.assertEqual(
            self._command(b'ECHO "\\n\\r\\t\\b\\a\\"\\\\\\x41\\xfF\\q"\n'),
            [b"ECHO", b'\n\r\t\b\a"\\A\xffq'],
        )

    def test_bad_hex_escape(self) -> None:
        """A \\x without two hex digits is just an escaped x."""
        self.assertEqual(self._command(b'ECHO "\\xZ1"\n'), [b"ECHO", b"xZ1"])

    def test_single_quotes(self) -> None:
        """Single quotes take only \\' as an escape."""
        self.assertEqual(
            self._command(b"ECHO 'a\\'b\\n\"c'\n"), [b"ECHO", b"a'b\\n\"c"]
        )

    def test_quotes_inside_an_argument(self) -> None:
        """A quote may start inside an argument: C{a"b c"} is C{ab c}."""
        self.assertEqual(self._command(b'ECHO a"b c"\n'), [b"ECHO", b"ab c"])

    def test_empty_quoted_argument(self) -> None:
        """C{""} is an empty argument."""
        self.assertEqual(self._command(b"SET k \"\" ''\n"), [b"SET", b"k", b"", b""])

    def test_high_bytes(self) -> None:
        """Bytes above 0x7F are argument bytes."""
        self.assertEqual(self._command(b"ECHO \xe9t\xe9\n"), [b"ECHO", b"\xe9t\xe9"])

    def test_empty_lines_are_skipped(self) -> None:
        """Empty and blank lines are skipped silently."""
        h, reader = _reader(b"\r\n\n   \t\r\nPING\r\n")
        self.assertEqual(reader.commands, [[b"PING"]])
        self.assertEqual(h.take_output(), b"")

    def test_dollar_line_is_inline(self) -> None:
        """A line starting with '$' is an inline command, not a bulk string."""
        self.assertEqual(self._command(b"$abc\r\n"), [b"$abc"])

    def test_mixed_with_multibulk(self) -> None:
        """Inline and multibulk commands may follow each other."""
        _, reader = _reader(b"PING\n" + _multibulk(b"ECHO", b"x") + b"QUIT\r\n")
        self.assertEqual(reader.commands, [[b"PING"], [b"ECHO", b"x"], [b"QUIT"]])

    @_settings
    @given(
        line=st.lists(
            st.sampled_from(
                [
                    b" ",
                    b"\t",
                    b"\x0b",
                    b"\x0c",
                    b"\r",
                    b'"',
                    b"'",
                    b"\\",
                    b"x",
                    b"a",
                    b"F",
                    b"0",
                    b"n",
                    b"\xe9",
                ]
            ),
            max_size=30,
        ).map(b"".join),
        ending=st.sampled_from([b"\r\n", b"\n"]),
    )
    def test_split_like_sdssplitargs(self, line: bytes, ending: bytes) -> None:
        """Any line splits as Redis's sdssplitargs splits it (a model here)."""
        assume(not line.startswith(b"*"))
        expected_line = line + ending
        expected_line = expected_line[: -2 if expected_line.endswith(b"\r\n") else -1]
        expected = _sdssplitargs(expected_line)
        _, reader = _reader(line + ending + b"PING\r\n")
        if expected is None:
            self.assertEqual(
                reader.error and reader.error.message,
                "Protocol error: unbalanced quotes in request",
            )
        elif expected:
            self.assertEqual(reader.commands, [expected, [b"PING"]])
        else:
            self.assertEqual(reader.commands, [[b"PING"]])


def _sdssplitargs(line: bytes) -> list[bytes] | None:
    """
    A model of Redis's C{sdssplitargs}: a direct walk over a NUL-terminated
    string, written from its documented behaviour, to check the parser
    against.
    """
    s = line + b"\0"
    spaces = b" \t\n\x0b\x0c\r"
    hexdigits = b"0123456789abcdefABCDEF"
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
    args: list[bytes] = []
    p = 0
    while True:
        while s[p] and s[p] in spaces:
            p += 1
        if not s[p]:
            return args
        current = bytearray()
        in_double = in_single = done = False
        while not done:
            c = s[p]
            if in_double:
                if (
                    c == ord("\\")
                    and s[p + 1] == ord("x")
                    and s[p + 2] in hexdigits
                    and s[p + 2]
                    and s[p + 3] in hexdigits
                    and s[p + 3]
                ):
                    current.append(int(s[p + 2 : p + 4], 16))
                    p += 3
                elif c == ord("\\") and s[p + 1]:
                    p += 1
                    current.append(escapes.get(s[p], s[p]))
                elif c == ord('"'):
                    if s[p + 1] and s[p + 1] not in spaces:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif in_single:
                if c == ord("\\") and s[p + 1] == ord("'"):
                    p += 1
                    current.append(ord("'"))
                elif c == ord("'"):
                    if s[p + 1] and s[p + 1] not in spaces:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif c in b" \n\r\t\0":
                done = True
            elif c == ord('"'):
                in_double = True
            elif c == ord("'"):
                in_single = True
            else:
                current.append(c)
            if s[p]:
                p += 1
        args.append(bytes(current))


_filler = st.sampled_from([b"*0\r\n", b"*-1\r\n", b"\r\n", b"\n", b"  \t\n"])
_binary_command = st.lists(st.binary(max_size=40), min_size=1, max_size=5).map(
    lambda args: ("bulk", args)
)
_inline_command = st.lists(
    st.binary(min_size=1, max_size=10).map(lambda b: bytes(0x61 + x % 26 for x in b)),
    min_size=1,
    max_size=5,
).map(lambda args: ("inline", args))


class RandomStreamTests(SynchronousTestCase):
    """
    Random commands, fillers that Redis skips, and random chunk splits.
    """

    @_settings
    @given(
        items=st.lists(
            st.one_of(_binary_command, _inline_command, _filler), max_size=8
        ),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
        max_frame_size=st.sampled_from([16 * 1024 * 1024, 5, 64]),
    )
    def test_random_commands_in_random_chunks(
        self,
        items: list[tuple[str, list[bytes]] | bytes],
        cuts: list[int],
        max_frame_size: int,
    ) -> None:
        """Any commands, split anywhere, are read back in order."""
        stream = b""
        expected: list[list[bytes]] = []
        for item in items:
            if isinstance(item, bytes):
                stream += item
                continue
            kind, args = item
            if kind == "bulk":
                stream += _multibulk(*args)
            else:
                stream += b" ".join(args) + b"\r\n"
            expected.append(args)
        edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
        h, reader = _reader(max_frame_size=max_frame_size)
        h.feed_chunks(stream[a:b] for a, b in pairwise(edges))
        self.assertIsNone(reader.error)
        self.assertEqual(reader.commands, expected)


class CancelAndTimeoutTests(SynchronousTestCase):
    """
    L{read_command} is cancel-safe and takes a timeout.
    """

    def test_cancel_while_waiting(self) -> None:
        """Cancelling a command that waits for bytes fails it and its read."""
        h = ProtocolHarness(idle())
        h.feed(b"*1\r\n$5\r\nhel")
        d = read_command(h.protocol)
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        # The payload's read left the queue: the next read gets its bytes.
        h.feed(b"lo\r\n")
        rest = self.successResultOf(h.protocol.read_some())
        self.assertTrue(rest.endswith(b"hello\r\n"), rest)

    def test_cancel_before_anything_arrives(self) -> None:
        """Cancelling before any byte arrives consumes nothing."""
        h = ProtocolHarness(idle())
        d = read_command(h.protocol)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(_multibulk(b"PING"))
        self.assertEqual(self.successResultOf(read_command(h.protocol)), [b"PING"])

    def test_timeout(self) -> None:
        """An incomplete command fails with TimeoutError after the timeout."""
        h = ProtocolHarness(idle())
        d = read_command(h.protocol, timeout=5)
        h.feed(b"*2\r\n$4\r\nECHO\r\n")
        h.clock.advance(4.9)
        self.assertNoResult(d)
        h.clock.advance(0.1)
        error = self.failureResultOf(d, defer.TimeoutError).value
        self.assertIn("5 seconds", str(error))

    def test_timeout_leaves_no_timer(self) -> None:
        """A command completed in time leaves no delayed call behind."""
        h = ProtocolHarness(idle())
        d = read_command(h.protocol, timeout=5)
        h.feed(b"*1\r\n$4\r\n")
        h.feed(b"PING\r\n")
        self.assertEqual(self.successResultOf(d), [b"PING"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    def test_end_of_stream_mid_command(self) -> None:
        """A half-close in the middle of a command fails the read."""
        p = idle()
        p.half_close = True
        h = ProtocolHarness(p)
        d = read_command(p)
        h.feed(b"*1\r\n$4\r\nPI")
        h.half_close()
        self.failureResultOf(d, EndOfStreamError)


class EncodeRESP2Tests(SynchronousTestCase):
    """
    L{encode_reply} in RESP2, byte for byte as Redis 7.0 sends each type to
    a RESP2 client.
    """

    def test_bulk_strings(self) -> None:
        """bytes, bytearray, memoryview and str are bulk strings."""
        self.assertEqual(encode_reply(b"hi"), b"$2\r\nhi\r\n")
        self.assertEqual(encode_reply(b""), b"$0\r\n\r\n")
        self.assertEqual(encode_reply(bytearray(b"a\r\n")), b"$3\r\na\r\n\r\n")
        self.assertEqual(encode_reply(memoryview(b"xyz")), b"$3\r\nxyz\r\n")
        self.assertEqual(encode_reply("\xe9"), b"$2\r\n\xc3\xa9\r\n")

    def test_integers(self) -> None:
        """Integers in the signed 64-bit range are C{:} replies."""
        self.assertEqual(encode_reply(12345), b":12345\r\n")
        self.assertEqual(encode_reply(-1), b":-1\r\n")
        self.assertEqual(encode_reply(2**63 - 1), b":9223372036854775807\r\n")
        self.assertEqual(encode_reply(-(2**63)), b":-9223372036854775808\r\n")

    def test_big_number(self) -> None:
        """Beyond 64 bits, a bulk string of the digits (DEBUG PROTOCOL bignum)."""
        self.assertEqual(
            encode_reply(1234567999999999999999999999999999999),
            b"$37\r\n1234567999999999999999999999999999999\r\n",
        )

    def test_booleans(self) -> None:
        """True and False are C{:1} and C{:0}."""
        self.assertEqual(encode_reply(True), b":1\r\n")
        self.assertEqual(encode_reply(False), b":0\r\n")

    def test_nulls(self) -> None:
        """None is the null bulk C{$-1}; NULL_ARRAY is C{*-1}."""
        self.assertEqual(encode_reply(None), b"$-1\r\n")
        self.assertEqual(encode_reply(NULL_ARRAY), b"*-1\r\n")
        self.assertEqual(repr(NULL_ARRAY), "NULL_ARRAY")

    def test_doubles(self) -> None:
        """Doubles are bulk strings of C{%.17g}, as Redis 7.0's ZSCORE sends."""
        cases = {
            3.141: b"$5\r\n3.141\r\n",
            0.1: b"$19\r\n0.10000000000000001\r\n",
            3.0: b"$1\r\n3\r\n",
            1e20: b"$5\r\n1e+20\r\n",
            1.5e-7: b"$22\r\n1.4999999999999999e-07\r\n",
            123456789.123: b"$13\r\n123456789.123\r\n",
            -0.0: b"$2\r\n-0\r\n",
            math.inf: b"$3\r\ninf\r\n",
            -math.inf: b"$4\r\n-inf\r\n",
        }
        for value, expected in cases.items():
            self.assertEqual(encode_reply(value), expected, value)

    def test_arrays_maps_and_sets(self) -> None:
        """Lists are arrays; maps are flat arrays of keys and values; sets arrays."""
        self.assertEqual(encode_reply([]), b"*0\r\n")
        self.assertEqual(encode_reply([0, 1, 2]), b"*3\r\n:0\r\n:1\r\n:2\r\n")
        self.assertEqual(
            encode_reply({0: False, 1: True}), b"*4\r\n:0\r\n:0\r\n:1\r\n:1\r\n"
        )
        self.assertEqual(encode_reply(frozenset({7})), b"*1\r\n:7\r\n")

    def test_nested(self) -> None:
        """Containers nest, with every element encoded by the same rules."""
        self.assertEqual(
            encode_reply([b"a", [None, [NULL_ARRAY]], {b"k": [1.5]}, ()]),
            b"*4\r\n$1\r\na\r\n*2\r\n$-1\r\n*1\r\n*-1\r\n"
            b"*2\r\n$1\r\nk\r\n*1\r\n$3\r\n1.5\r\n*0\r\n",
        )

    def test_simple_string(self) -> None:
        """SimpleString is a status line; CR or LF in it is refused."""
        self.assertEqual(encode_reply(SimpleString("OK")), b"+OK\r\n")
        self.assertEqual(encode_reply(SimpleString(b"PONG")), b"+PONG\r\n")
        self.assertRaises(ValueError, encode_reply, SimpleString("a\r\nb"))

    def test_error(self) -> None:
        """ErrorReply is C{-<message>}, with CR and LF as addReplyErrorFormat
        leaves them: trimmed at the ends, spaces inside."""
        self.assertEqual(
            encode_reply(ErrorReply("ERR unknown command 'FOO'")),
            b"-ERR unknown command 'FOO'\r\n",
        )
        self.assertEqual(
            encode_reply(ErrorReply(b"\r\nERR a\r\nb\n\r")), b"-ERR a  b\r\n"
        )

    def test_bad_protocol_version(self) -> None:
        """Only 2 and 3 are versions."""
        for value in (b"x", 1):
            with self.assertRaises(ValueError) as caught:
                encode_reply(value, protocol=4)
            self.assertIn("4", str(caught.exception))

    def test_unknown_type(self) -> None:
        """A value of no RESP type is refused, naming its type."""
        with self.assertRaises(TypeError) as caught:
            encode_reply([1, object()])
        self.assertIn("object", str(caught.exception))


class EncodeRESP3Tests(SynchronousTestCase):
    """
    L{encode_reply} in RESP3, byte for byte as Redis 7.0 sends each type
    after C{HELLO 3}.
    """

    def test_same_as_resp2(self) -> None:
        """Strings, integers, simple strings, errors and arrays do not change."""
        for value in (b"hi", "s", 5, SimpleString("OK"), ErrorReply("ERR x"), [1]):
            self.assertEqual(encode_reply(value, 3), encode_reply(value, 2))

    def test_null(self) -> None:
        """None and NULL_ARRAY are both the RESP3 null C{_}."""
        self.assertEqual(encode_reply(None, 3), b"_\r\n")
        self.assertEqual(encode_reply(NULL_ARRAY, 3), b"_\r\n")

    def test_booleans(self) -> None:
        """True and False are C{#t} and C{#f}."""
        self.assertEqual(encode_reply(True, 3), b"#t\r\n")
        self.assertEqual(encode_reply(False, 3), b"#f\r\n")

    def test_doubles(self) -> None:
        """Doubles are C{,} with C{%.17g}, C{inf}, C{-inf}, C{nan}."""
        cases = {
            3.141: b",3.141\r\n",
            0.1: b",0.10000000000000001\r\n",
            3.0: b",3\r\n",
            1e20: b",1e+20\r\n",
            math.inf: b",inf\r\n",
            -math.inf: b",-inf\r\n",
        }
        for value, expected in cases.items():
            self.assertEqual(encode_reply(value, 3), expected, value)
        nan = float("nan")
        self.assertEqual(encode_reply(nan, 3), b",nan\r\n")
        # glibc's printf shows the sign of a NaN.
        self.assertEqual(encode_reply(-nan, 3), b",-nan\r\n")

    def test_big_number(self) -> None:
        """Beyond 64 bits, integers are big numbers C{(}."""
        self.assertEqual(
            encode_reply(1234567999999999999999999999999999999, 3),
            b"(1234567999999999999999999999999999999\r\n",
        )
        self.assertEqual(encode_reply(-(2**63) - 1, 3), b"(-9223372036854775809\r\n")

    def test_map(self) -> None:
        """Mappings are maps C{%} (DEBUG PROTOCOL map's bytes)."""
        self.assertEqual(
            encode_reply({0: False, 1: True, 2: False}, 3),
            b"%3\r\n:0\r\n#f\r\n:1\r\n#t\r\n:2\r\n#f\r\n",
        )

    def test_set(self) -> None:
        """Sets are C{~}."""
        self.assertEqual(encode_reply({1}, 3), b"~1\r\n:1\r\n")
        self.assertEqual(encode_reply(frozenset(), 3), b"~0\r\n")

    def test_nested(self) -> None:
        """Maps, sets, arrays and nulls nest."""
        self.assertEqual(
            encode_reply({b"m": {b"s": frozenset({None})}, b"a": [True, 0.5]}, 3),
            b"%2\r\n$1\r\nm\r\n%1\r\n$1\r\ns\r\n~1\r\n_\r\n"
            b"$1\r\na\r\n*2\r\n#t\r\n,0.5\r\n",
        )

    @_settings
    @given(value=st.deferred(lambda: _values))
    def test_decodes_back(self, value: object) -> None:
        """Any reply decodes back to what was encoded, in both versions."""
        for version in (2, 3):
            data = encode_reply(value, version)
            decoded, end = _decode(data, 0)
            self.assertEqual(end, len(data))
            self.assertEqual(decoded, _expected(value, version))


_scalars = st.one_of(
    st.binary(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.just(NULL_ARRAY),
    st.floats(allow_nan=False),
    st.text(max_size=5)
    .map(SimpleString)
    .filter(lambda s: "\r" not in str(s.value) and "\n" not in str(s.value)),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.binary(max_size=5), inner, max_size=3),
        st.frozensets(st.binary(max_size=5), max_size=3),
    ),
    max_leaves=12,
)


def _expected(value: object, version: int) -> object:
    """
    What a RESP client decodes C{value} to, with L{_decode}'s conventions.
    """
    if isinstance(value, bool):
        return value if version == 3 else int(value)
    if isinstance(value, int):
        if -(2**63) <= value < 2**63 or version == 3:
            return value
        return str(value).encode()
    if isinstance(value, float):
        if version == 3:
            return value
        if math.isinf(value):
            return b"inf" if value > 0 else b"-inf"
        return b"%.17g" % value
    if value is NULL_ARRAY:
        return None if version == 3 else "null array"
    if isinstance(value, SimpleString):
        return (
            "simple",
            value.value.encode() if isinstance(value.value, str) else value.value,
        )
    if isinstance(value, list):
        return [_expected(v, version) for v in value]
    if isinstance(value, dict):
        if version == 3:
            return {k: _expected(v, version) for k, v in value.items()}
        flat: list[object] = []
        for k, v in value.items():
            flat += [k, _expected(v, version)]
        return flat
    if isinstance(value, frozenset):
        if version == 3:
            return ("set", sorted(value))
        # An array in the set's own iteration order.
        return list(value)
    return value


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    """
    The text from C{pos} up to CR LF, and the position after it.
    """
    end = data.index(b"\r\n", pos)
    return data[pos:end], end + 2


def _decode(data: bytes, pos: int) -> tuple[object, int]:
    """
    A minimal RESP2/RESP3 decoder for the tests: sets come back as
    C{("set", sorted items)}, simple strings as C{("simple", bytes)}, the
    null array as C{"null array"}.
    """
    kind = data[pos : pos + 1]
    text, pos = _line(data, pos + 1)
    if kind == b"$":
        if text == b"-1":
            return None, pos
        n = int(text)
        return data[pos : pos + n], pos + n + 2
    if kind in (b":", b"("):
        return int(text), pos
    if kind == b"#":
        return text == b"t", pos
    if kind == b",":
        return float(text), pos
    if kind == b"_":
        return None, pos
    if kind == b"+":
        return ("simple", text), pos
    if kind in (b"*", b"~"):
        if text == b"-1":
            return "null array", pos
        items = []
        for _ in range(int(text)):
            item, pos = _decode(data, pos)
            items.append(item)
        return (("set", sorted(items)) if kind == b"~" else items), pos  # type: ignore[type-var]
    if kind == b"%":
        mapping = {}
        for _ in range(int(text)):
            key, pos = _decode(data, pos)
            mapping[key] = None
            mapping[key], pos = _decode(data, pos)
        return mapping, pos
    raise AssertionError(f"unknown type {kind!r}")


class WriteReplyTests(SynchronousTestCase):
    """
    L{write_reply}, and the protocol version chosen per connection.
    """

    def test_writes_encoded_reply(self) -> None:
        """write_reply writes what encode_reply returns."""
        h = ProtocolHarness(idle())
        write_reply(h.protocol, {b"a": None}, 3)
        write_reply(h.protocol, {b"a": None})
        self.assertEqual(
            h.take_output(), encode_reply({b"a": None}, 3) + encode_reply({b"a": None})
        )

    def test_refused_reply_writes_nothing(self) -> None:
        """A reply that cannot be encoded writes nothing."""
        h = ProtocolHarness(idle())
        self.assertRaises(TypeError, write_reply, h.protocol, [b"ok", object()])
        self.assertRaises(ValueError, write_reply, h.protocol, b"ok", 1)
        self.assertEqual(h.take_output(), b"")

    def test_version_chosen_per_connection(self) -> None:
        """Two connections of one server reply in the version each chose."""
        resp3 = ProtocolHarness(_HelloServer())
        resp2 = ProtocolHarness(_HelloServer())
        resp3.feed(_multibulk(b"HELLO", b"3") + b"GET\r\n")
        resp2.feed(b"GET\r\n")
        self.assertEqual(
            resp3.take_output(),
            b"%1\r\n$5\r\nproto\r\n:3\r\n"
            b"%3\r\n$1\r\nn\r\n_\r\n$1\r\nt\r\n#t\r\n$1\r\nd\r\n,1.5\r\n",
        )
        self.assertEqual(
            resp2.take_output(),
            b"*6\r\n$1\r\nn\r\n$-1\r\n$1\r\nt\r\n:1\r\n$1\r\nd\r\n$3\r\n1.5\r\n",
        )


class _HelloServer(StateProtocol):
    """
    A server that starts each connection in RESP2 and switches on C{HELLO 3},
    as Redis does.
    """

    def start(self) -> Body:
        """
        Answer HELLO with the version, anything else with a fixed map.
        """
        version = 2
        while True:
            command = yield read_command(self)
            if command[0].upper() == b"HELLO":
                version = int(command[1])
                write_reply(self, {b"proto": version}, version)
            else:
                write_reply(self, {b"n": None, b"t": True, b"d": 1.5}, version)


class _ExactReader(_Reader):
    """
    A L{_Reader} whose protocol never lets a scan take anything, so that
    L{read_command} always runs its exact parser: the model the fast path
    is compared with.
    """

    def take_scanned(self, scan: Any, limit: int) -> None:
        """
        Take nothing, as when the command is not wholly buffered.
        """
        return None


class _SpyReader(_Reader):
    """
    A L{_Reader} that records what each scan took (C{None}: nothing).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.scanned: list[object] = []

    def take_scanned(self, scan: Any, limit: int) -> Any:
        """
        Scan as usual, and record the result.
        """
        value = super().take_scanned(scan, limit)
        self.scanned.append(value)
        return value


def _run(
    cls: type[_Reader],
    chunks: list[bytes],
    max_frame_size: int | None = None,
    late: bool = False,
    **options: Any,
) -> tuple[ProtocolHarness, _Reader]:
    """
    Connect a C{cls} reader and feed it C{chunks}; if C{late}, it reads
    nothing until all are buffered.
    """
    reader = cls(**options)
    if max_frame_size is not None:
        reader.max_frame_size = max_frame_size
    if late:
        reader.gate = defer.Deferred()
    h = ProtocolHarness(reader)
    h.feed_chunks(chunks)
    if reader.gate is not None:
        reader.gate.callback(None)
    return h, reader


# Bytes that make headers odd or wrong when sprinkled into a stream.
_noise = st.binary(min_size=1, max_size=3) | st.sampled_from(
    [b"*", b"$", b"\r", b"\n", b"\r\n", b"0", b"-1", b"\0", b"+1", b"a", b" "]
)


# How a header's number can be sent wrong (or oddly but acceptably).
_BAD_NUMBERS = [
    b"0{n}",
    b"+{n}",
    b"-{n}",
    b"{n} ",
    b" {n}",
    b"",
    b"x",
    b"0",
    b"-0",
    b"-1",
    b"99999999999999999999",
    b"9223372036854775808",
    b"2147483648",
    b"2147483647",
    b"{n}\0",
    b"1{n}",
]


@st.composite
def _odd_multibulk(draw: st.DrawFn) -> bytes:
    """
    A multibulk command with exactly one thing odd or wrong in the ways Redis
    cares about: a count or length sent differently, a skipped byte that is
    not LF, a bad element marker, odd bytes after a payload.
    """
    args = draw(st.lists(st.binary(max_size=12), min_size=1, max_size=4))
    fields: list[list[bytes]] = [[b"*", str(len(args)).encode(), b"\r", b"\n"]]
    for arg in args:
        fields.append([b"$", str(len(arg)).encode(), b"\r", b"\n", arg, b"\r\n"])
    field = draw(st.integers(0, len(fields) - 1))
    part = draw(st.sampled_from([0, 1, 3] if field == 0 else [0, 1, 3, 5]))
    chosen = fields[field]
    if part == 1:
        template = draw(st.sampled_from(_BAD_NUMBERS))
        chosen[1] = template.replace(b"{n}", chosen[1])
    elif part == 0:
        chosen[0] = draw(st.sampled_from([b"%", b"\r", b"\n", b"*", b"$", b"a"]))
    elif part == 3:
        chosen[3] = draw(st.sampled_from([b"\r", b"x", b"$", b"*", b"\0"]))
    else:
        chosen[5] = draw(st.sampled_from([b"xy", b"\r\r", b"\n\n", b"*1"]))
    return b"".join(b"".join(f) for f in fields)


# Inline lines that the fast path must leave to the exact parser, or split
# as it does.
_odd_inline = st.sampled_from(
    [
        b'SET k "a b"\r\n',
        b"SET 'k' v\n",
        b'"unbalanced\r\n',
        b"a\0b\r\n",
        b"\x0bx y\r\n",
        b"x\x0cy\n",
        b"  \t \r\n",
        b"\r\r\n",
        b"a\rb c\r\n",
        b"\xff\xfe x\n",
        b"$3\r\n",
        b"a  b\t\tc\x0b\n",
    ]
)


class FastPathTests(SynchronousTestCase):
    """
    A wholly buffered multibulk command of plain lengths is parsed in place
    in one step; everything else takes the exact parser, with the same
    results and errors.
    """

    def test_whole_command_is_scanned(self) -> None:
        """
        A command that is wholly buffered when read is taken by the scan, as
        C{bytes}.
        """
        _h, reader = _run(_SpyReader, [_multibulk(b"SET", b"k", b"v") * 3])
        self.assertEqual(reader.commands, [[b"SET", b"k", b"v"]] * 3)
        assert isinstance(reader, _SpyReader)
        # The first read waited (nothing was buffered at connection); once
        # its first byte arrived the rest was scanned, and so were the next
        # two; the last scan found nothing buffered.
        command = [b"SET", b"k", b"v"]
        self.assertEqual(reader.scanned, [None, command, command, command, None])
        self.assertEqual({type(a) for c in reader.commands for a in c}, {bytes})

    def test_command_straddling_chunks_is_exact(self) -> None:
        """
        A command cut by a chunk boundary is not scanned whole; the exact
        parser reads it, and the next whole one is scanned from the joined
        bytes.
        """
        stream = _multibulk(b"GET", b"key") * 2
        _h, reader = _run(_SpyReader, [stream[:10], stream[10:]])
        self.assertEqual(reader.commands, [[b"GET", b"key"]] * 2)
        assert isinstance(reader, _SpyReader)
        self.assertEqual(
            [value for value in reader.scanned if value is not None],
            [[b"GET", b"key"]],
        )

    def test_long_command_is_left_to_the_exact_parser(self) -> None:
        """
        A command longer than the scan's window is read by the exact parser
        even when wholly buffered.
        """
        big = b"v" * (70 * 1024)
        _h, reader = _run(_SpyReader, [_multibulk(b"SET", b"k", big)])
        self.assertEqual(reader.commands, [[b"SET", b"k", big]])
        assert isinstance(reader, _SpyReader)
        self.assertEqual(reader.scanned, [None, None, None])

    def test_timeout_on_a_scanned_command_leaves_no_timer(self) -> None:
        """
        A scanned command with a timeout fires at once and leaves no timer.
        """
        h = ProtocolHarness(idle())
        h.feed(_multibulk(b"PING"))
        d = read_command(h.protocol, timeout=5)
        self.assertEqual(self.successResultOf(d), [b"PING"])
        self.assertEqual(h.clock.getDelayedCalls(), [])

    @_settings
    @given(
        items=st.lists(
            st.one_of(_binary_command, _inline_command, _filler), max_size=6
        ),
        odd=st.one_of(_odd_multibulk(), _noise, _odd_inline),
        where=st.integers(0, 6),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=5),
        max_frame_size=st.sampled_from([16 * 1024 * 1024, 5, 64]),
        max_bulk_length=st.sampled_from([512 * 1024 * 1024, 0, 3, 40]),
        late=st.booleans(),
    )
    def test_same_as_exact_parser(
        self,
        items: list[tuple[str, list[bytes]] | bytes],
        odd: bytes,
        where: int,
        cuts: list[int],
        max_frame_size: int,
        max_bulk_length: int,
        late: bool,
    ) -> None:
        """
        For any stream (valid commands and fillers, and one odd command or
        noise among them) in any chunking, read as it arrives or once all is
        buffered, the fast path gives the commands, error, reply, closing
        and leftover the exact parser gives.
        """
        self.assertEqual(
            *_outcomes(
                (_Reader, _ExactReader),
                [*items[:where], odd, *items[where:]],
                cuts,
                max_frame_size,
                max_bulk_length,
                late,
            )
        )


def _outcomes(
    readers: tuple[type[_Reader], type[_Reader]],
    items: list[tuple[str, list[bytes]] | bytes],
    cuts: list[int],
    max_frame_size: int,
    max_bulk_length: int,
    late: bool,
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """
    Read the stream C{items} make, cut at C{cuts}, with each of two readers,
    and give what each ended with: the commands, the error message, the
    reply written, whether it closed, and what was left buffered.
    """
    stream = b""
    for item in items:
        if isinstance(item, bytes):
            stream += item
        elif item[0] == "bulk":
            stream += _multibulk(*item[1])
        else:
            stream += b" ".join(item[1]) + b"\r\n"
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in pairwise(edges)]
    outcomes = []
    for cls in readers:
        h, reader = _run(
            cls, chunks, max_frame_size, late, max_bulk_length=max_bulk_length
        )
        outcomes.append(
            (
                reader.commands,
                None if reader.error is None else reader.error.message,
                h.take_output(),
                h.closed,
                len(reader._buffer),
            )
        )
    return outcomes[0], outcomes[1]


class _BatchReader(_Reader):
    """
    A L{_Reader} that takes every wholly buffered command with
    L{take_commands} and reads with L{read_command} only when that takes
    nothing, as a batching server does; C{batches} records what each
    L{take_commands} call took.
    """

    #: The C{limit} given to L{take_commands}.
    limit = 1024

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.batches: list[list[list[bytes]]] = []

    def start(self) -> Body:
        """
        Take commands in batches until one is refused.
        """
        if self.gate is not None:
            yield self.gate
        while True:
            batch = take_commands(self, limit=self.limit, **self.options)
            self.batches.append(batch)
            if not batch:
                try:
                    batch = [(yield read_command(self, **self.options))]
                except RESPProtocolError as e:
                    self.error = e
                    self.write(e.reply)
                    return
            self.commands.extend(batch)


class _CommandsReader(_BatchReader):
    """
    A L{_BatchReader} that reads with L{read_commands} (after trying
    L{take_commands}, if C{take_first}), as the kvstore example does.
    """

    #: Whether to try L{take_commands} before each L{read_commands}.
    take_first = True

    def start(self) -> Body:
        """
        Read commands in batches until one is refused.
        """
        if self.gate is not None:
            yield self.gate
        while True:
            batch = []
            if self.take_first:
                batch = take_commands(self, limit=self.limit, **self.options)
            if not batch:
                try:
                    batch = yield read_commands(self, limit=self.limit, **self.options)
                except RESPProtocolError as e:
                    self.error = e
                    self.write(e.reply)
                    return
            self.batches.append(batch)
            self.commands.extend(batch)


class _WaitReader(_BatchReader):
    """
    A L{_BatchReader} that reads as the kvstore example does: each batch
    with L{wait_commands}, and with L{read_commands} when that takes
    nothing.
    """

    def start(self) -> Body:
        """
        Read commands in batches until one is refused.
        """
        if self.gate is not None:
            yield self.gate
        while True:
            batch = yield wait_commands(self, limit=self.limit, **self.options)
            if not batch:
                try:
                    batch = yield read_commands(self, limit=self.limit, **self.options)
                except RESPProtocolError as e:
                    self.error = e
                    self.write(e.reply)
                    return
            self.batches.append(batch)
            self.commands.extend(batch)


def _batch_reader(limit: int, kind: str = "take") -> type[_BatchReader]:
    """
    A reader class taking at most C{limit} commands per call: with
    L{take_commands} and L{read_command} (C{"take"}), L{take_commands} and
    L{read_commands} (C{"take+read"}), L{read_commands} alone (C{"read"}),
    or L{wait_commands} and L{read_commands} (C{"wait"}).
    """
    if kind == "take":
        return type("_LimitedBatchReader", (_BatchReader,), {"limit": limit})
    if kind == "wait":
        return type("_LimitedWaitReader", (_WaitReader,), {"limit": limit})
    return type(
        "_LimitedCommandsReader",
        (_CommandsReader,),
        {"limit": limit, "take_first": kind == "take+read"},
    )


class TakeCommandsTests(SynchronousTestCase):
    """
    L{take_commands} takes every wholly buffered command of plain form in
    one call, exactly as L{read_command} would read them, and leaves the
    rest to L{read_command}.
    """

    def test_takes_every_buffered_command(self) -> None:
        """
        All the commands of a chunk are taken in one call, multibulk and
        inline alike, as C{bytes}; the next call finds nothing.
        """
        stream = (_multibulk(b"SET", b"k", b"v") + b"PING\r\n") * 3 + _multibulk(
            b"GET", b"k"
        )
        _h, reader = _run(_BatchReader, [stream], late=True)
        assert isinstance(reader, _BatchReader)
        expected = [[b"SET", b"k", b"v"], [b"PING"]] * 3 + [[b"GET", b"k"]]
        self.assertEqual(reader.batches, [expected, []])
        self.assertEqual(reader.commands, expected)
        self.assertEqual({type(a) for c in reader.commands for a in c}, {bytes})

    def test_nothing_buffered(self) -> None:
        """
        With nothing buffered, nothing is taken and nothing is consumed.
        """
        h = ProtocolHarness(idle())
        self.assertEqual(take_commands(h.protocol), [])
        h.feed(b"PING\r\n")
        self.assertEqual(take_commands(h.protocol), [[b"PING"]])
        self.assertEqual(take_commands(h.protocol), [])

    def test_stops_before_an_incomplete_command(self) -> None:
        """
        The commands before an incomplete one are taken; the incomplete one
        stays buffered for L{read_command}.
        """
        h = ProtocolHarness(idle())
        whole = _multibulk(b"GET", b"a")
        h.feed(whole * 2 + whole[:-1])
        self.assertEqual(take_commands(h.protocol), [[b"GET", b"a"]] * 2)
        self.assertEqual(take_commands(h.protocol), [])
        d = read_command(h.protocol)
        self.assertNoResult(d)
        h.feed(whole[-1:])
        self.assertEqual(self.successResultOf(d), [b"GET", b"a"])

    def test_limit(self) -> None:
        """
        At most C{limit} commands are taken per call, and the rest stay
        buffered in order.
        """
        h = ProtocolHarness(idle())
        h.feed(b"".join(_multibulk(b"ECHO", b"%d" % i) for i in range(5)))
        self.assertEqual(
            take_commands(h.protocol, limit=2), [[b"ECHO", b"0"], [b"ECHO", b"1"]]
        )
        self.assertEqual(take_commands(h.protocol, limit=1), [[b"ECHO", b"2"]])
        self.assertEqual(
            take_commands(h.protocol, limit=10), [[b"ECHO", b"3"], [b"ECHO", b"4"]]
        )

    def test_limit_must_be_positive(self) -> None:
        """
        A limit under 1 is refused, at once, by this, L{wait_commands} and
        L{read_commands}, each naming itself and the limit.
        """
        h = ProtocolHarness(idle())
        for function in (take_commands, wait_commands, read_commands):
            name = function.__name__
            with self.assertRaisesRegex(ValueError, f"{name}.*limit >= 1, not 0"):
                function(h.protocol, limit=0)

    def test_queued_read_owns_the_buffer(self) -> None:
        """
        While a read is queued, the buffered bytes are its: nothing is taken.
        """
        h = ProtocolHarness(idle())
        d = read_command(h.protocol)
        h.feed(b"*1\r\n$4\r\nPI")
        self.assertEqual(take_commands(h.protocol), [])
        h.feed(b"NG\r\nPING\r\n")
        self.assertEqual(self.successResultOf(d), [b"PING"])
        self.assertEqual(take_commands(h.protocol), [[b"PING"]])

    def test_left_to_read_command(self) -> None:
        """
        Payloads holding CR LF, long arguments, quoted lines, empty lines
        and zero counts are not taken; L{read_command} reads them, and the
        commands after them are taken again.
        """
        long_arg = b"x" * 1024
        odd = [
            _multibulk(b"SET", b"k", b"a\r\nb"),
            _multibulk(b"SET", b"k", long_arg),
            b'SET k "a b"\r\n',
            b"\r\n",
            b"*0\r\n",
        ]
        stream = b"".join(o + b"PING\r\n" for o in odd)
        _h, reader = _run(_BatchReader, [stream], late=True)
        assert isinstance(reader, _BatchReader)
        self.assertEqual(
            reader.commands,
            [
                [b"SET", b"k", b"a\r\nb"],
                [b"PING"],
                [b"SET", b"k", long_arg],
                [b"PING"],
                [b"SET", b"k", b"a b"],
                [b"PING"],
                [b"PING"],
                [b"PING"],
            ],
        )
        self.assertEqual(
            reader.batches,
            # The skipped empty line and zero count: read_command reads the
            # PING after each.
            [[], [[b"PING"]], [], [[b"PING"]], [], [[b"PING"]], [], [], []],
        )

    def test_payload_holding_crlf_beside_same_length_arguments(self) -> None:
        """
        A payload that holds CR LF is never taken cut at it, even when the
        arguments beside it are as long as its header says it is: each
        payload is checked against its own header, for the two- and
        three-argument shapes the scan checks apart and for longer ones.
        """
        # The payload in each position, the other arguments as long as it
        # (a check against the wrong payload would pass), or as long as
        # its piece before CR LF (a check of the wrong header would pass).
        # The second payload's tail looks like a header whose length
        # matches the next piece, so a wrong check can pass further on.
        commands = [
            [other] * where + [payload] + [other] * (count - where - 1)
            for payload in (b"k\r\nyz", b"k\r\n$2")
            for other in (b"x" * len(payload), b"x")
            for count in (1, 2, 3, 5)
            for where in range(count)
        ]
        stream = b"".join(_multibulk(*c) + b"PING\r\n" for c in commands)
        for reader in (_BatchReader, _WaitReader):
            _h, batches = _run(reader, [stream], late=True)
            assert isinstance(batches, _BatchReader)
            self.assertEqual(
                batches.commands,
                [command for c in commands for command in (c, [b"PING"])],
            )

    def test_errors_come_from_read_command(self) -> None:
        """
        The commands before bad input are taken; the bad input is refused by
        L{read_command} with Redis's words.
        """
        _h, reader = _run(
            _BatchReader, [_multibulk(b"PING") * 2 + b"*1\r\n%4\r\n"], late=True
        )
        self.assertEqual(reader.commands, [[b"PING"]] * 2)
        assert reader.error is not None
        self.assertEqual(reader.error.message, "Protocol error: expected '$', got '%'")

    @_settings
    @given(
        items=st.lists(
            st.one_of(_binary_command, _inline_command, _filler), max_size=8
        ),
        odd=st.one_of(_odd_multibulk(), _noise, _odd_inline),
        where=st.integers(0, 8),
        cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=5),
        max_frame_size=st.sampled_from([16 * 1024 * 1024, 5, 64]),
        max_bulk_length=st.sampled_from([512 * 1024 * 1024, 0, 3, 40]),
        limit=st.sampled_from([1, 2, 1024]),
        late=st.booleans(),
        kind=st.sampled_from(["take", "take+read", "read", "wait"]),
    )
    def test_same_as_exact_parser(
        self,
        items: list[tuple[str, list[bytes]] | bytes],
        odd: bytes,
        where: int,
        cuts: list[int],
        max_frame_size: int,
        max_bulk_length: int,
        limit: int,
        late: bool,
        kind: str,
    ) -> None:
        """
        For any stream (valid commands and fillers, and one odd command or
        noise among them) in any chunking, read as it arrives or once all is
        buffered, taking commands in batches (with L{read_command} or
        L{read_commands} for what is not taken, or L{read_commands} alone)
        gives the commands, error, reply, closing and leftover that reading
        each with the exact parser gives.
        """
        self.assertEqual(
            *_outcomes(
                (_batch_reader(limit, kind), _ExactReader),
                [*items[:where], odd, *items[where:]],
                cuts,
                max_frame_size,
                max_bulk_length,
                late,
            )
        )


class WaitCommandsTests(SynchronousTestCase):
    """
    L{wait_commands} waits for input, then takes every command wholly
    buffered in plain form, or fires with an empty list, nothing consumed,
    for L{read_commands} to read. (The comparison with the exact parser on
    random streams, C{test_same_as_exact_parser}, runs it too, through
    L{_WaitReader}.)
    """

    def test_waits_then_takes_the_chunk(self) -> None:
        """
        With nothing buffered it waits; the next chunk's commands, multibulk
        and inline, fire it, up to C{limit}.
        """
        h = ProtocolHarness(idle())
        d = wait_commands(h.protocol, limit=3)
        self.assertNoResult(d)
        h.feed(
            _multibulk(b"SET", b"k", b"v")
            + b"PING\r\nPING a\r\n"
            + _multibulk(b"GET", b"k")
        )
        self.assertEqual(
            self.successResultOf(d), [[b"SET", b"k", b"v"], [b"PING"], [b"PING", b"a"]]
        )
        self.assertEqual(take_commands(h.protocol), [[b"GET", b"k"]])

    def test_buffered_fires_at_once(self) -> None:
        """
        With commands buffered, the Deferred has fired when returned.
        """
        h = ProtocolHarness(idle())
        h.feed(_multibulk(b"GET", b"k") * 2)
        self.assertEqual(
            self.successResultOf(wait_commands(h.protocol)), [[b"GET", b"k"]] * 2
        )
        self.assertEqual(h.protocol.peek(1), b"")

    def test_leaves_what_it_does_not_take(self) -> None:
        """
        An incomplete command, a quoted line, bad input or an empty line:
        an empty list, nothing consumed, and L{read_commands} then reads it
        with its rules.
        """
        cases = [
            (b"*2\r\n$3\r\nGET\r\n", None),
            (b'SET k "a b"\r\n', [[b"SET", b"k", b"a b"]]),
            (b"*1\r\n%4\r\n", "Protocol error: expected '$', got '%'"),
            (b"\nPING\r\n", [[b"PING"]]),
        ]
        for data, then in cases:
            h = ProtocolHarness(idle())
            d = wait_commands(h.protocol)
            h.feed(data)
            self.assertEqual(self.successResultOf(d), [])
            self.assertEqual(h.protocol.peek(len(data)), data)
            d = read_commands(h.protocol)
            if then is None:
                self.assertNoResult(d)
            elif isinstance(then, str):
                failure = self.failureResultOf(d, RESPProtocolError)
                self.assertEqual(failure.value.message, then)
            else:
                self.assertEqual(self.successResultOf(d), then)

    def test_cancel_consumes_nothing(self) -> None:
        """
        Cancelling the wait removes it: the next read gets the command.
        """
        h = ProtocolHarness(idle())
        d = wait_commands(h.protocol)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b"PING\r\n")
        self.assertEqual(self.successResultOf(read_command(h.protocol)), [b"PING"])

    def test_each_call_has_its_own_limits(self) -> None:
        """
        Calls with other limits, on one protocol or another, each take what
        their own limits allow.
        """
        h = ProtocolHarness(idle())
        h.feed(_multibulk(b"ECHO", b"abc") * 4)
        for limit, max_bulk_length, expected in [
            (1, 512, [[b"ECHO", b"abc"]]),
            (2, 512, [[b"ECHO", b"abc"]] * 2),
            (2, 2, []),
            (1024, 512, [[b"ECHO", b"abc"]]),
        ]:
            d = wait_commands(h.protocol, max_bulk_length, limit)
            self.assertEqual(self.successResultOf(d), expected)
        other = ProtocolHarness(idle())
        other.protocol.max_frame_size = 5
        other.feed(_multibulk(b"ECHO", b"abc"))
        self.assertEqual(self.successResultOf(wait_commands(other.protocol)), [])


class ReadCommandsTests(SynchronousTestCase):
    """
    L{read_commands} waits for the next command with one read and returns
    it with every command wholly buffered after it.
    """

    def test_waits_then_takes_the_chunk(self) -> None:
        """
        With nothing buffered it waits; a chunk of commands then fires it
        with all of them, multibulk and inline.
        """
        h = ProtocolHarness(idle())
        d = read_commands(h.protocol)
        self.assertNoResult(d)
        h.feed(_multibulk(b"SET", b"k", b"v") + b"PING\r\n" + _multibulk(b"GET", b"k"))
        self.assertEqual(
            self.successResultOf(d),
            [[b"SET", b"k", b"v"], [b"PING"], [b"GET", b"k"]],
        )
        self.assertEqual(h.protocol.peek(1), b"")

    def test_inline_first(self) -> None:
        """
        An inline line whose first byte was waited for is split as
        L{read_command} splits it, quotes included.
        """
        h = ProtocolHarness(idle())
        d = read_commands(h.protocol)
        h.feed(b'SET k "a b"\r\nPING\r\n')
        self.assertEqual(self.successResultOf(d), [[b"SET", b"k", b"a b"], [b"PING"]])

    def test_buffered_fires_at_once(self) -> None:
        """
        When commands are buffered it has fired when returned, with at most
        C{limit} of them.
        """
        h = ProtocolHarness(idle())
        h.feed(b"PING\r\n" * 3)
        self.assertEqual(
            self.successResultOf(read_commands(h.protocol, limit=2)), [[b"PING"]] * 2
        )
        self.assertEqual(
            self.successResultOf(read_commands(h.protocol, limit=1)), [[b"PING"]]
        )

    def test_incomplete_command_is_waited_for(self) -> None:
        """
        A command cut by a chunk boundary is read by the exact parser, and
        the commands buffered after it come with it.
        """
        h = ProtocolHarness(idle())
        stream = _multibulk(b"GET", b"key") * 3
        d = read_commands(h.protocol)
        h.feed(stream[:7])
        self.assertNoResult(d)
        h.feed(stream[7:])
        self.assertEqual(self.successResultOf(d), [[b"GET", b"key"]] * 3)

    def test_bad_input(self) -> None:
        """
        Input Redis rejects fails it with Redis's words.
        """
        h = ProtocolHarness(idle())
        d = read_commands(h.protocol)
        h.feed(b"*1\r\n%4\r\n")
        failure = self.failureResultOf(d, RESPProtocolError)
        self.assertEqual(failure.value.message, "Protocol error: expected '$', got '%'")

    def test_cancel_before_anything_arrives(self) -> None:
        """
        Cancelled while waiting for the first byte: nothing is consumed, and
        the next read gets the next command.
        """
        h = ProtocolHarness(idle())
        d = read_commands(h.protocol)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        h.feed(b"PING\r\n")
        self.assertEqual(self.successResultOf(read_commands(h.protocol)), [[b"PING"]])

    def test_cancel_in_the_middle_of_a_command(self) -> None:
        """
        Cancelled while the exact parser waits for the rest of a command:
        the read it waits on is cancelled, and no read stays queued.
        """
        h = ProtocolHarness(idle())
        d = read_commands(h.protocol)
        h.feed(b"*2\r\n$3\r\nGET\r\n")
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(h.protocol.peek(0), b"")
        h.feed(b"PING\r\n")
        self.assertEqual(self.successResultOf(read_commands(h.protocol)), [[b"PING"]])
