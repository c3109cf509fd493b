"""
RESP, the Redis serialization protocol: client commands in, replies out.

This module owns reading a client's commands (L{read_command}, and
L{take_commands}, L{wait_commands} and L{read_commands} for batches), the
protocol error a Redis server answers bad input with (L{RESPProtocolError}),
and encoding replies in RESP2 and RESP3 (L{encode_reply}, L{write_reply},
L{SimpleString}, L{ErrorReply}, L{NULL_ARRAY}). It must not know about a
key-value store or any command: what a command means is the server's
business. It imports only L{StateProtocol}'s public read, scan and write
methods, the coroutine engine and the error classes.

Commands: what Redis 7.0 accepts, and how it says no
===================================================

A command is either a I{multibulk} array of bulk strings (what every client
library sends: C{*2\\r\\n$4\\r\\nECHO\\r\\n$2\\r\\nhi\\r\\n}) or an I{inline}
line (what C{redis-cli} sends for some commands and a person types into
telnet: C{SET k "a b"\\r\\n}). The first byte decides, as in Redis's
C{processInputBuffer}: C{*} starts a multibulk, anything else a line. The
rules below mirror Redis 7.0's C{networking.c}, with its exact error texts
(the part after C{-ERR }), so that a server built on this accepts what Redis
accepts and rejects the rest with the same words:

  - Inline lines end at C{\\n}; one C{\\r} before it is dropped. They are
    split like C{sdssplitargs}: blanks separate arguments; C{"..."} takes
    the escapes C{\\n \\r \\t \\b \\a \\xHH} and C{\\<any>}; C{'...'} takes
    only C{\\'}; a closing quote must be followed by a blank or the end,
    else C{Protocol error: unbalanced quotes in request}. A line that
    splits into nothing (empty, or blanks only) is skipped.
  - A multibulk header (C{*<count>}) or bulk header (C{$<length>}) ends
    at its C{\\r}, and Redis skips the byte after it without looking (it
    assumes C{\\n}): C{*1\\rX$4\\rYPING\\r\\n} is C{PING}. A header is
    judged once that byte has arrived.
  - A line, multibulk header or bulk header without its end once more than
    64 KiB have arrived from its first byte: C{Protocol error: too big
    inline request}, C{too big mbulk count string} or C{too big bulk count
    string}. (Redis also accepts a longer one whose end came in the same
    read; we refuse it whatever the chunking, so the limit is exact.)
  - The multibulk count and bulk lengths are parsed as C{string2ll} does
    (optional C{-}, no C{+}, no blanks, no leading zeros, within a signed
    64-bit integer). A bad count, or one over 2**31-1: C{Protocol error:
    invalid multibulk length}; a count of zero or less (C{*0}, C{*-1}) is
    skipped.
  - Each element must start with C{$}, else C{Protocol error: expected '$',
    got 'C'} (C{C} being that byte; CR and LF are shown as a space, as
    Redis sanitises error replies). A bad length, a negative one (C{$-1} is
    a null in replies, not in requests), or one over C{max_bulk_length}
    (512 MiB by default, Redis's C{proto-max-bulk-len}): C{Protocol error:
    invalid bulk length}.
  - The two bytes after a bulk string's payload are skipped without being
    checked, exactly as Redis skips them.
  - A NUL byte in a line or header, before its end, hides that end from
    Redis (it searches with C{strchr}): it never runs that command, and
    fails with the "too big" error for that position once 64 KiB have
    arrived. We do the same, so no input runs a command Redis would not.

Nothing is allocated in proportion to a count or length before the bytes
it describes have arrived: the argument list grows one received argument
at a time, and each bulk length is checked before its payload is read.

Speed
=====

A pipelining client sends many commands per TCP segment, so the usual case
is a command that is wholly buffered. For a multibulk command of plain
lengths (decimal, no sign, no leading zero; each argument under 64 KiB and
within the limits; the whole command within 64 KiB), or an inline line
that splits as C{bytes.split()} splits it (no quotes, VT, FF or NUL),
L{read_command} first tries a scan through L{StateProtocol.take_scanned}:
one C{find} per header (or per line) in the buffered bytes themselves, one
slice per argument, one consume, and an already-fired Deferred. The scan
accepts only what the exact parser below would accept, with the same
result, and returns nothing for everything else (an incomplete command,
an empty line, quotes, any odd or bad header), which the exact parser then
reads from the start: every rule and error text lives there alone. A test
compares the two on random streams and chunkings.

For a server answering a pipelining client a segment at a time,
L{take_commands} takes every wholly buffered command of plain form in one
call (the window split at CR LF once, headers looked up in a table, each
payload's length checked against its header); L{wait_commands} does the
same to each chunk as it arrives, in a bare read the coroutine engine
resumes directly; and L{read_commands} waits for the next command with a
single one-byte read, then takes it and the rest of its chunk the same
way. All three stop before anything else and leave it to the exact
parser, and tests compare them with it.

The exact parser also runs synchronously when its bytes are buffered: each
read (the first byte, one per header, one per payload) comes back already
fired, and its result is taken without a callback, a chain or a
L{Coroutine}. Only when a read has to wait does the rest of the parse move
into a Coroutine, which makes the whole read cancel-safe. The byte Redis
skips after each header's CR is read together with the next header or
payload, so it costs nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Generator, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any, Final, final

import attrs
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from txstateproto._coroutine import Coroutine
from txstateproto._errors import FramingError, LineTooLongError

if TYPE_CHECKING:
    from txstateproto._protocol import StateProtocol

__all__ = [
    "NULL_ARRAY",
    "ErrorReply",
    "RESPProtocolError",
    "SimpleString",
    "encode_reply",
    "read_command",
    "read_commands",
    "take_commands",
    "wait_commands",
    "write_reply",
]

# Redis's PROTO_INLINE_MAX_SIZE: the longest inline line or header line.
_INLINE_MAX = 64 * 1024

# Redis's INT_MAX check on the multibulk count.
_MAX_MULTIBULK = 2**31 - 1

# Redis's default proto-max-bulk-len.
_DEFAULT_MAX_BULK = 512 * 1024 * 1024

# string2ll's range: a signed 64-bit integer.
_LLONG_MIN = -(2**63)
_LLONG_MAX = 2**63 - 1

# Payloads shorter than this are read together with their trailing two bytes
# and sliced (one small copy, one read fewer); longer ones are read apart
# from them so the payload is not copied a second time.
_SPLIT = 65536


@final
class RESPProtocolError(FramingError):
    """
    A client sent bytes that a Redis server rejects with a protocol error.

    Raised by L{read_command}. The usual reaction is what Redis does: send
    L{reply} and close the connection, since the stream can no longer be
    parsed::

        try:
            command = yield read_command(self)
        except RESPProtocolError as e:
            self.write(e.reply)
            return

    @ivar message: Exactly what Redis 7.0 sends after C{-ERR } for this
        input, for example C{"Protocol error: invalid multibulk length"}
        (bytes above 0x7F, which can appear in C{expected '$', got 'C'},
        are decoded as Latin-1).
    """

    def __init__(self, message: str) -> None:
        """
        @param message: The text after C{-ERR }.
        """
        self.message = message
        super().__init__(message)

    @property
    def reply(self) -> bytes:
        """
        The error reply Redis sends for this input, C{-ERR <message>\\r\\n}.
        """
        return b"-ERR " + self.message.encode("latin-1") + b"\r\n"


def _protocol_error(what: str) -> RESPProtocolError:
    """
    Build a L{RESPProtocolError} with Redis's C{Protocol error: } prefix.

    @param what: The rest of Redis's message.
    @return: The error.
    """
    return RESPProtocolError(f"Protocol error: {what}")


def _string2ll(digits: bytes) -> int | None:
    """
    Parse a decimal integer the way Redis's C{string2ll} does.

    @param digits: The text: C{0}, or an optional C{-} and a digit 1-9 then
        digits; no C{+}, blanks or leading zeros; within a signed 64-bit
        integer.
    @return: The value, or C{None} if C{string2ll} would refuse it.
    """
    body = digits[1:] if digits[:1] == b"-" else digits
    # 20 digits or more never fit (and int() refuses over 4300 of them).
    if not body.isdigit() or len(body) > 19 or (body[0] == 0x30 and digits != b"0"):
        return None
    value = int(digits)
    if value < _LLONG_MIN or value > _LLONG_MAX:
        return None
    return value


def read_command(
    proto: StateProtocol,
    max_bulk_length: int = _DEFAULT_MAX_BULK,
    timeout: float | None = None,
) -> Deferred[list[bytes]]:
    """
    Read the next client command and return its arguments.

    Multibulk and inline commands are both accepted, with Redis 7.0's rules
    and limits (see the module docstring); empty inline lines and multibulk
    counts of zero or less are skipped, so the result is never empty::

        while True:
            try:
                command = yield read_command(self)
            except RESPProtocolError as e:
                self.write(e.reply)
                return
            name = command[0].upper()
            ...

    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted, in bytes (Redis's
        C{proto-max-bulk-len}, 512 MiB by default). Arguments longer than
        C{proto.max_frame_size} are read in pieces of that size and joined.
    @param timeout: Seconds to wait for the whole command, or C{None} for no
        limit.
    @return: A Deferred firing with the arguments, a non-empty list of
        C{bytes} (the command name first, as sent: not upper-cased). If
        every byte of the command is already buffered it has fired when
        returned. Cancelling it cancels the read it waits on; if part of a
        command was consumed by then, the stream is left in the middle of
        it: close the connection rather than read on.
    @raise RESPProtocolError: (as the Deferred's failure) If the client sent
        something Redis rejects; C{message} is Redis's exact wording.
    @raise twisted.internet.defer.TimeoutError: (as the failure) If the
        command is not complete within C{timeout}.
    @raise EndOfStreamError: (as the failure) If the client half-closed in
        the middle of a command (only with C{proto.half_close}).
    """
    # The fast path: a whole multibulk command of plain lengths, or a plain
    # inline line, parsed in place and consumed at once. Anything else
    # (incomplete, quoted, odd or bad input) is left to the exact parser
    # below, which owns every rule and error text.
    arg_max = min(max_bulk_length, proto.max_frame_size - 3, _SPLIT - 1)
    scan, rest = _SCANNERS.get(arg_max) or _scanner(arg_max)
    args = proto.take_scanned(scan, _SCAN_LIMIT)
    if args is not None:
        command = succeed(args)
        if timeout is not None:
            command.addTimeout(timeout, proto.clock, _command_timed_out)
        return command
    parser = _parse_command(proto, max_bulk_length, rest)
    try:
        wait = _advance(parser, next(parser))
    except StopIteration as stop:
        command = succeed(stop.value)
    except Exception:
        command = fail()
    else:
        command = Coroutine(_finish(parser, wait))
    if timeout is not None:
        command.addTimeout(timeout, proto.clock, _command_timed_out)
    return command


def take_commands(
    proto: StateProtocol,
    max_bulk_length: int = _DEFAULT_MAX_BULK,
    limit: int = 1024,
) -> list[list[bytes]]:
    """
    Take every command that is wholly buffered right now, in one call: no
    Deferred, no wait.

    This is the batch form of L{read_command}'s fast path, for a server that
    answers a pipelining client (many commands per TCP segment) a segment
    at a time: one call parses the buffered commands in place, and the
    handler runs them all and writes their replies in one write before it
    waits again. It takes the commands from the start of the buffer, in
    order, and stops before the first one it leaves to L{read_command}: an
    incomplete command, an empty line, a zero or negative count, quotes,
    any odd or bad header, an argument over C{max_bulk_length} or 1023
    bytes, a command of more than 255 arguments, or anything past the first
    64 KiB. So it never fails: whatever it does not take, L{read_command}
    then reads with its exact rules and errors::

        while True:
            commands = take_commands(self)
            if not commands:
                try:
                    commands = [(yield read_command(self))]
                except RESPProtocolError as e:
                    self.write(e.reply)
                    return
            for command in commands:
                ...

    Each command it takes is exactly what L{read_command} would have
    returned for it.

    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted, in bytes, as for
        L{read_command}.
    @param limit: The most commands to take, at least 1: a bound on the
        work of one call and on what the handler holds at once.
    @return: The commands, each a non-empty list of C{bytes}, in order; an
        empty list if the first buffered command is not one it takes, if
        nothing is buffered, or if reads are queued.
    @raise ValueError: If C{limit} is less than 1.
    """
    if limit < 1:
        raise ValueError(f"take_commands() needs a limit >= 1, not {limit}")
    return _take_batch(proto, max_bulk_length, limit, b"") or []


def wait_commands(
    proto: StateProtocol,
    max_bulk_length: int = _DEFAULT_MAX_BULK,
    limit: int = 1024,
) -> Deferred[list[list[bytes]]]:
    """
    Wait until input is buffered, then take every command wholly buffered:
    L{take_commands} for a server that waits for its client's next request.

    The Deferred is a bare read (L{StateProtocol.read_scanned}): a handler
    that yields it is resumed directly by the coroutine engine, with no
    callback chain, and each chunk is parsed once, in place, as it
    arrives, so a client that sends one command at a time costs one scan
    and one resume per command. An empty list means the first buffered
    command is not one L{take_commands} takes (incomplete, an empty line,
    odd or bad); nothing was consumed, and L{read_commands} reads it with
    the exact parser's rules and errors::

        while True:
            commands = yield wait_commands(self)
            if not commands:
                try:
                    commands = yield read_commands(self)
                except RESPProtocolError as e:
                    self.write(e.reply)
                    return
            for command in commands:
                ...

    Write the replies to one batch before waiting for the next: if input
    is already buffered the Deferred has fired when returned.

    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted, in bytes, as for
        L{read_command}.
    @param limit: The most commands to take, at least 1.
    @return: A Deferred firing with the commands, each what L{read_command}
        would have returned for it, in order, or with an empty list as
        above. Cancelling it removes the read; nothing is consumed.
    @raise ValueError: If C{limit} is less than 1.
    @raise EndOfStreamError: (as the Deferred's failure) If the peer
        half-closed and nothing is buffered (only with C{half_close}).
    """
    # A server calls this once per request with the same settings: its scan
    # is made once.
    key = (max_bulk_length, proto.max_frame_size, limit)
    scan = _WAIT_SCANS.get(key)
    if scan is None:
        if limit < 1:
            raise ValueError(f"wait_commands() needs a limit >= 1, not {limit}")
        scan = _wait_scan(_lengths(proto, max_bulk_length), limit)
        if len(_WAIT_SCANS) >= _WAIT_SCANS_MAX:
            _WAIT_SCANS.clear()
        _WAIT_SCANS[key] = scan
    # (No cast(): a call per request. The scan never returns None.)
    return proto.read_scanned(scan, _SCAN_LIMIT)  # type: ignore[return-value]


_BatchScan = Callable[[bytes | bytearray, int, int], tuple[list[list[bytes]], int]]

# wait_commands' scans by (max_bulk_length, max_frame_size, limit): servers
# use one or two; the bound only keeps odd callers from growing it.
_WAIT_SCANS: dict[tuple[int, int, int], _BatchScan] = {}
_WAIT_SCANS_MAX = 64


def _wait_scan(lengths: dict[bytes, int], limit: int) -> _BatchScan:
    """
    Make L{wait_commands}' scan for one set of limits.

    @param lengths: The bulk headers accepted (L{_lengths}).
    @param limit: The most commands to take, at least 1.
    @return: A scan for L{StateProtocol.read_scanned} that takes what
        L{_scan_batch} takes, or an empty list and nothing.
    """

    def scan(
        data: bytes | bytearray, start: int, stop: int
    ) -> tuple[list[list[bytes]], int]:
        # An empty list, nothing consumed, rather than None: the read fires
        # with what take_commands would return.
        return _scan_batch(data, start, stop, lengths, limit) or ([], start)

    return scan


def _lengths(proto: StateProtocol, max_bulk_length: int) -> dict[bytes, int]:
    """
    The plain bulk headers the batch scan accepts on C{proto}.

    @param proto: The protocol read from.
    @param max_bulk_length: The longest argument accepted.
    @return: C{b"$<n>"} -> C{n} for every length it takes.
    """
    arg_max = min(max_bulk_length, proto.max_frame_size - 3, _SPLIT - 1)
    lengths = _LENGTHS.get(arg_max)
    if lengths is None:
        lengths = _LENGTHS[arg_max] = {
            b"$%d" % n: n for n in range(min(arg_max, _BATCH_ARG_MAX) + 1)
        }
    return lengths


def _take_batch(
    proto: StateProtocol, max_bulk_length: int, limit: int, first: bytes
) -> list[list[bytes]] | None:
    """
    Take up to C{limit} wholly buffered commands with L{_scan_batch}.

    @param proto: The protocol to take them from.
    @param max_bulk_length: The longest argument accepted.
    @param limit: The most commands to take, at least 1.
    @param first: The first command's first byte if it was already
        consumed, else C{b""}.
    @return: The commands, or C{None} if none was taken.
    """
    lengths = _lengths(proto, max_bulk_length)

    def scan(
        data: bytes | bytearray, start: int, stop: int
    ) -> tuple[list[list[bytes]], int] | None:
        return _scan_batch(data, start, stop, lengths, limit, first)

    return proto.take_scanned(scan, _SCAN_LIMIT)


def read_commands(
    proto: StateProtocol,
    max_bulk_length: int = _DEFAULT_MAX_BULK,
    limit: int = 1024,
) -> Deferred[list[list[bytes]]]:
    """
    Read the next command, and take with it every command wholly buffered
    after it: L{read_command} then L{take_commands}, in one Deferred.

    This is how a batching server waits: when nothing is buffered it waits
    for the first byte of the next command with a single read and, once it
    comes, scans the rest of that chunk in place, so a client that sends
    one command at a time costs one read and one scan per command rather
    than a parse under the coroutine engine. What the scans leave (an
    incomplete, odd or bad command) is read by L{read_command}'s exact
    parser, with its rules and errors. It is a whole serving loop's read on
    its own (L{wait_commands} is the faster wait, with this behind it)::

        while True:
            try:
                commands = yield read_commands(self)
            except RESPProtocolError as e:
                self.write(e.reply)
                return
            for command in commands:
                ...

    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted, in bytes, as for
        L{read_command}.
    @param limit: The most commands in one result, at least 1.
    @return: A Deferred firing with the commands, a non-empty list of what
        L{read_command} would have returned for each, in order. If the
        first is already buffered it has fired when returned. Cancelling
        it cancels the read it waits on, as for L{read_command}.
    @raise ValueError: If C{limit} is less than 1.
    @raise RESPProtocolError: (as the Deferred's failure) If the next
        command is something Redis rejects (commands before bad input are
        returned first; the error comes with the next call).
    @raise EndOfStreamError: (as the failure) As for L{read_command}.
    """
    if limit < 1:
        raise ValueError(f"read_commands() needs a limit >= 1, not {limit}")
    if not proto.peek(1):
        # Nothing buffered: wait for one byte only, and scan its chunk.
        return proto.read_exactly(1).addCallback(
            _after_first_byte, proto, max_bulk_length, limit
        )
    # Something is buffered that take_commands would not take (or the
    # caller did not try it): the exact parser first.
    return _then_buffered(
        read_command(proto, max_bulk_length), proto, max_bulk_length, limit
    )


def _then_buffered(
    command: Deferred[list[bytes]],
    proto: StateProtocol,
    max_bulk_length: int,
    limit: int,
) -> Deferred[list[list[bytes]]]:
    """
    Follow a command being read with the commands wholly buffered after it.

    @param command: The command's read.
    @param proto: The protocol to take the others from.
    @param max_bulk_length: The longest argument accepted.
    @param limit: The most commands in all, at least 1.
    @return: A Deferred firing with the commands.
    """
    if limit == 1:
        return command.addCallback(_alone)
    return command.addCallback(_with_buffered, proto, max_bulk_length, limit)


def _after_first_byte(
    first: bytes, proto: StateProtocol, max_bulk_length: int, limit: int
) -> list[list[bytes]] | Deferred[list[list[bytes]]]:
    """
    Read the rest of a command whose first byte has just arrived, and the
    commands buffered after it: scanned in place if its chunk holds all of
    it in plain form, else by the exact parser.

    @param first: The command's first byte.
    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted.
    @param limit: The most commands in all, at least 1.
    @return: The commands, or a Deferred firing with them.
    """
    args = None
    if first != b"\n":
        # This command and the ones after it in one scan, if all are plain
        # and short; else this one alone, if plain.
        batch = _take_batch(proto, max_bulk_length, limit, first)
        if batch is not None:
            return batch
    # Only now the single-command scanner: the batch scan is the usual case.
    arg_max = min(max_bulk_length, proto.max_frame_size - 3, _SPLIT - 1)
    rest = (_SCANNERS.get(arg_max) or _scanner(arg_max))[1]
    if first != b"\n":
        if first == b"*":
            args = proto.take_scanned(rest, _SCAN_LIMIT)
        else:
            args = proto.take_scanned(_inline_after(first), _INLINE_SCAN_LIMIT)
    if args is None:
        parser = _parse_command(proto, max_bulk_length, rest, first)
        try:
            wait = _advance(parser, next(parser))
        except StopIteration as stop:
            args = stop.value
        else:
            return _then_buffered(
                Coroutine(_finish(parser, wait)), proto, max_bulk_length, limit
            )
    if limit == 1:
        return [args]
    return _with_buffered(args, proto, max_bulk_length, limit)


# The most bytes scanned for the rest of an inline line after its first
# byte: well within what the exact parser accepts before "too big inline
# request", so that a line the scan takes is never one it refuses.
_INLINE_SCAN_LIMIT = _INLINE_MAX - 2


def _inline_after(first: bytes) -> _Scan:
    """
    Make a scan of the rest of an inline line whose first byte was read.

    @param first: The line's first byte (not C{*} or LF).
    @return: A scan for L{StateProtocol.take_scanned} that takes the rest of
        the line up to its LF and returns the line's arguments, exactly as
        L{_inline} would, or C{None} where L{_scan_inline} would.
    """

    def scan(
        data: bytes | bytearray, start: int, stop: int
    ) -> tuple[list[bytes], int] | None:
        end = data.find(b"\n", start, stop)
        if end < 0:
            return None
        line = first + data[start:end]
        found = _scan_inline(line + b"\n", 0, len(line) + 1)
        if found is None:
            return None
        return found[0], end + 1

    return scan


def _alone(command: list[bytes]) -> list[list[bytes]]:
    """
    A command as a batch of one.

    @param command: The arguments.
    @return: C{[command]}.
    """
    return [command]


def _with_buffered(
    command: list[bytes], proto: StateProtocol, max_bulk_length: int, limit: int
) -> list[list[bytes]]:
    """
    A command, followed by every command wholly buffered after it.

    @param command: The arguments of the command read.
    @param proto: The protocol to take the others from.
    @param max_bulk_length: The longest argument accepted.
    @param limit: The most commands in all, at least 2.
    @return: The commands.
    """
    more = take_commands(proto, max_bulk_length, limit - 1)
    more.insert(0, command)
    return more


# take_commands takes arguments up to this long, and counts up to
# _BATCH_COUNT_MAX: their headers are looked up in a table rather than
# parsed (longer arguments cost more to copy than their headers to parse,
# and read_command scans them).
_BATCH_ARG_MAX = 1023
_BATCH_COUNT_MAX = 255

# The plain count headers take_commands knows, and their values.
_COUNTS: Final = {b"*%d" % n: n for n in range(1, _BATCH_COUNT_MAX + 1)}

# The same without the "*", for a command whose first byte was read apart.
_BARE_COUNTS: Final = {b"%d" % n: n for n in range(1, _BATCH_COUNT_MAX + 1)}

# The plain bulk headers it knows, by argument limit: "$<n>" -> n.
_LENGTHS: dict[int, dict[bytes, int]] = {}


def _scan_batch(
    data: bytes | bytearray,
    start: int,
    stop: int,
    lengths: dict[bytes, int],
    limit: int,
    first: bytes = b"",
) -> tuple[list[list[bytes]], int] | None:
    """
    Parse up to C{limit} whole commands from the start of
    C{data[start:stop]}, for L{take_commands} (and for L{read_commands},
    once the first byte of a command has been read: C{first}).

    The window is split at every CR LF in one call. A command of plain form
    is then a run of pieces each followed by CR LF: C{*<count>}, then per
    argument C{$<length>} and a payload of exactly that length (a payload
    holding CR LF splits into a shorter piece, and so is not taken); an
    inline line is one piece without LF, NUL, quotes, VT or FF. Such bytes
    are read by the exact parser as the same arguments, so taking them here
    gives what L{read_command} gives. The last piece is never followed by
    CR LF within the window, so it is never taken.

    @param data: The buffered bytes.
    @param start: The first unread byte.
    @param stop: How far to look.
    @param lengths: The bulk headers accepted, with their lengths.
    @param limit: The most commands to take.
    @param first: The first command's first byte, already consumed (so
        that the window starts with its second byte), or C{b""}.
    @return: The commands and the index after the last one, or C{None} if
        the first is not taken.
    """
    if type(data) is bytes:
        # The whole buffer, or a slice: one copy of the window at most.
        window = data if start == 0 and stop == len(data) else data[start:stop]
    else:
        # One copy of a bytearray's window, as bytes, so that the pieces
        # are bytes and no view of the buffer's storage outlives the call.
        with memoryview(data) as view:
            window = view[start:stop].tobytes()
    # A command of n arguments is 2n + 1 pieces: enough for `limit` commands
    # of up to 3 arguments without splitting far past what is taken.
    pieces = window.split(b"\r\n", 8 * limit)
    last = len(pieces) - 1
    commands: list[list[bytes]] = []
    append = commands.append
    counts = _COUNTS
    i = 0
    if first == b"*":
        # The first count without its "*"; the other commands as usual.
        count = _BARE_COUNTS.get(pieces[0])
        if count is None:
            return None
        pieces[0] = b"*" + pieces[0]
    elif first:
        # An inline line's first byte: judged with the rest of its line.
        pieces[0] = first + pieces[0]
    while i < last:
        piece = pieces[i]
        count = counts.get(piece)
        if count is not None:
            end = i + 1 + 2 * count
            if end > last:
                break
            # Each header must be a known plain length, and each payload
            # exactly that long (a missing header gives None, never equal).
            if count == 2:
                # GET key and the like, checked without slices or lists.
                name = pieces[i + 2]
                key = pieces[i + 4]
                if lengths.get(pieces[i + 1]) != len(name) or lengths.get(
                    pieces[i + 3]
                ) != len(key):
                    break
                append([name, key])
            elif count == 3:
                # SET key value and the like.
                name = pieces[i + 2]
                key = pieces[i + 4]
                value = pieces[i + 6]
                if (
                    lengths.get(pieces[i + 1]) != len(name)
                    or lengths.get(pieces[i + 3]) != len(key)
                    or lengths.get(pieces[i + 5]) != len(value)
                ):
                    break
                append([name, key, value])
            else:
                args = pieces[i + 2 : end : 2]
                if [*map(lengths.get, pieces[i + 1 : end : 2])] != [*map(len, args)]:
                    break
                append(args)
            i = end
        elif piece.isalnum():
            # A one-word inline line (PING, MULTI, EXEC): ASCII letters and
            # digits only, so nothing to split and nothing odd, without the
            # search below (a tenth of its cost).
            append([piece])
            i += 1
        elif piece[:1] != b"*" and _NOT_PLAIN_LINE.search(piece) is None:
            # An inline line ends at its LF; the CR before it is dropped,
            # and split() splits the rest as sdssplitargs would.
            args = piece.split()
            if not args:
                break
            append(args)
            i += 1
        else:
            break
        if len(commands) >= limit:
            break
    if not commands:
        return None
    if i == last:
        # Every piece but the last taken (the usual case: a chunk that ends
        # where a command ends): the rest is that piece, untouched.
        return commands, stop - len(pieces[last])
    return commands, start + sum(map(len, pieces[:i])) + 2 * i - len(first)


# The most bytes the fast path looks at per command: longer commands take
# the exact parser (their reads dominate their cost anyway).
_SCAN_LIMIT = 65536

# Length headers longer than this ("$" and 19 digits) are never plain.
_HEADER_MAX = 20

_Scan = Callable[[bytes | bytearray, int, int], tuple[list[bytes], int] | None]

# One scanner per argument limit in use (usually one per server).
_SCANNERS: dict[int, tuple[_Scan, _Scan]] = {}


def _scanner(arg_max: int) -> tuple[_Scan, _Scan]:
    """
    Make (and remember) the fast-path scanners for one argument limit.

    @param arg_max: The longest argument it accepts: C{max_bulk_length},
        capped where the exact parser would read an argument another way.
    @return: Two scans for L{StateProtocol.take_scanned}: of a whole
        command, and of the rest of a multibulk command after its C{*}.
    """

    def scan(
        data: bytes | bytearray, start: int, stop: int
    ) -> tuple[list[bytes], int] | None:
        """
        Parse a whole command within C{data[start:stop]}: a multibulk one
        (see C{rest}) or an inline line (see L{_scan_inline}).
        """
        if data[start] != 0x2A:
            return _scan_inline(data, start, stop)
        return rest(data, start + 1, stop)

    def rest(
        data: bytes | bytearray, start: int, stop: int
    ) -> tuple[list[bytes], int] | None:
        """
        Parse C{<count>\\r?$<len>\\r?<arg>??...} (a multibulk command
        after its C{*}) wholly within C{data[start:stop]}, with plain
        decimal count and lengths, exactly as the exact parser would; else
        C{None}.
        """
        # The count up to its CR, and the byte Redis skips after it (here
        # not a CR, which the exact parser treats apart).
        cr = data.find(b"\r", start, min(start + _HEADER_MAX, stop))
        if cr < 0 or cr + 1 >= stop or data[cr + 1] == 0x0D:
            return None
        digits = data[start:cr]
        if not digits.isdigit() or digits[0] == 0x30:
            return None
        count = int(digits)
        if count > _MAX_MULTIBULK:
            return None
        pos = cr + 2
        args: list[bytes] = []
        append = args.append
        while count:
            # "$<len>" up to its CR, the skipped byte, the payload and the
            # two unchecked bytes after it.
            if pos >= stop or data[pos] != 0x24:
                return None
            cr = data.find(b"\r", pos + 1, min(pos + _HEADER_MAX, stop))
            if cr < 0:
                return None
            digits = data[pos + 1 : cr]
            if not digits.isdigit() or (digits[0] == 0x30 and len(digits) > 1):
                return None
            length = int(digits)
            if length > arg_max:
                return None
            pos = cr + 2 + length
            if pos + 2 > stop:
                return None
            if isinstance(data, bytes):
                append(data[cr + 2 : pos])
            else:
                append(bytes(data[cr + 2 : pos]))
            pos += 2
            count -= 1
        return args, pos

    _SCANNERS[arg_max] = scan, rest
    return scan, rest


def _scan_inline(
    data: bytes | bytearray, start: int, stop: int
) -> tuple[list[bytes], int] | None:
    """
    Parse a whole inline line within C{data[start:stop]} that splits as
    C{bytes.split()} splits it (no quotes, VT, FF or NUL) into at least one
    argument, exactly as L{_inline} would; else C{None}.

    @param data: The buffered bytes.
    @param start: Where the line starts (its first byte is not C{*}).
    @param stop: How far the scan may look.
    @return: The arguments and the index after the line's LF, or C{None}.
    """
    end = data.find(b"\n", start, stop)
    if end <= start:
        # Not there yet, or an empty line, which the exact parser skips.
        return None
    line = data[start:end]
    if line[-1] == 0x0D:
        line = line[:-1]
    if b"\0" in line or _NEEDS_SPLITARGS.search(line) is not None:
        return None
    if isinstance(line, bytes):
        args = line.split()
    else:
        args = [bytes(arg) for arg in line.split()]
    if not args:
        return None
    return args, end + 1


def _advance(
    parser: Generator[Deferred[Any], Any, list[bytes]], wait: Deferred[Any]
) -> Deferred[Any]:
    """
    Feed the parser the results of its reads for as long as they have
    already fired: no callback, no Coroutine step.

    @param parser: The parser, suspended on C{wait}.
    @param wait: The read it waits on.
    @return: The first read it waits on that has not fired yet.
    @raise StopIteration: When the parser returns; C{value} is the command.
    @raise Exception: Whatever the parser raises.
    """
    while wait.called:
        result = wait.result
        if isinstance(result, Failure):
            # Taken: the Deferred must not also log it as unhandled.
            wait.addErrback(_consumed)
            wait = result.throwExceptionIntoGenerator(parser)
        else:
            wait = parser.send(result)
    return wait


def _consumed(failure: Failure) -> None:
    """
    Swallow a failure that has been taken and re-raised in the parser.

    @param failure: The failure.
    """


def _finish(
    parser: Generator[Deferred[Any], Any, list[bytes]], wait: Deferred[Any]
) -> Generator[Deferred[Any], Any, list[bytes]]:
    """
    Run the rest of a parse under the coroutine engine, which makes it
    cancel-safe: the engine cancels the read being waited on.

    The parser is suspended on C{wait}, which has not fired. Each read that
    has to wait is yielded to the engine; its result (or failure,
    cancellation included) goes into the parser, and reads that are
    already satisfied are fed in here directly.

    @param parser: The suspended parser.
    @param wait: What it waits on.
    @return: The parser's result.
    """
    try:
        while True:
            try:
                result = yield wait
            except Exception as e:
                wait = parser.throw(e)
            else:
                wait = parser.send(result)
            wait = _advance(parser, wait)
    except StopIteration as stop:
        command: list[bytes] = stop.value
        return command
    finally:
        parser.close()


def _command_timed_out(result: list[bytes] | Failure, timeout: float) -> list[bytes]:
    """
    Turn the cancel caused by L{read_command}'s timeout into a TimeoutError.

    @param result: What the read ended with once cancelled.
    @param timeout: The timeout, in seconds.
    @return: Never; always raises.
    @raise twisted.internet.defer.TimeoutError: Always.
    """
    if isinstance(result, Failure):
        result.trap(defer.CancelledError)
    raise defer.TimeoutError(f"command not complete after {timeout} seconds")


def _parse_command(
    proto: StateProtocol,
    max_bulk_length: int,
    rest: _Scan,
    given: bytes | None = None,
) -> Generator[Deferred[Any], Any, list[bytes]]:
    """
    Read one non-empty command: yield each read's Deferred, get its result.

    @param proto: The protocol to read from.
    @param max_bulk_length: The longest argument accepted.
    @param rest: The fast-path scan of a multibulk command after its C{*}.
    @param given: The command's first byte, if the caller has read it (and
        already tried the scans).
    @return: The arguments.
    @raise RESPProtocolError: On input Redis rejects.
    """
    while True:
        # The first byte decides the form, and with it where the line ends:
        # a multibulk header at CR, an inline line at LF.
        if given is not None:
            first = given
            given = None
            waited = False
        else:
            read = proto.read_exactly(1)
            waited = not read.called
            first = yield read
        if first != b"*":
            args = yield from _inline(proto, first)
            if args:
                return args
            continue
        if waited:
            # The command's first byte came with a new chunk, which may
            # hold the rest of it: scan that (the scan in read_command saw
            # an empty buffer).
            scanned = proto.take_scanned(rest, _SCAN_LIMIT)
            if scanned is not None:
                return scanned
        try:
            # 64 KiB from the '*' on, as Redis counts.
            header = yield proto.read_until(b"\r", _INLINE_MAX - 1)
        except LineTooLongError:
            raise _protocol_error("too big mbulk count string") from None
        if b"\0" in header:
            # Redis finds the CR with strchr(), which stops at the NUL.
            yield from _wait_out(proto, len(header) + 2, "too big mbulk count string")
        count = _string2ll(header)
        if count is not None and 0 < count <= _MAX_MULTIBULK:
            return (yield from _multibulk(proto, count, max_bulk_length))
        # Redis judges a header once the byte after its CR is in, and skips
        # that byte unchecked.
        yield proto.read_exactly(1)
        if count is None or count > _MAX_MULTIBULK:
            raise _protocol_error("invalid multibulk length")


def _multibulk(
    proto: StateProtocol, count: int, max_bulk_length: int
) -> Generator[Deferred[Any], Any, list[bytes]]:
    """
    Read the C{count} bulk strings of a multibulk command whose header has
    been read up to its CR.

    Each header ends at its CR, and Redis skips the byte after the CR without
    looking at it. That byte is read together with the next header (after
    the count) or with the payload (after a bulk length), so that skipping
    it costs no read of its own.

    @param proto: The protocol to read from.
    @param count: How many, at least 1 (validated, not preallocated).
    @param max_bulk_length: The longest argument accepted.
    @return: The arguments.
    @raise RESPProtocolError: On input Redis rejects.
    """
    args: list[bytes] = []
    append = args.append
    frame_max = proto.max_frame_size
    try:
        # The byte after the count's CR, then the first bulk header.
        header = yield proto.read_until(b"\r", _INLINE_MAX + 1)
        if header:
            header = header[1:]
        else:
            # The skipped byte was itself a CR.
            header = yield proto.read_until(b"\r", _INLINE_MAX)
    except LineTooLongError:
        raise _protocol_error("too big bulk count string") from None
    while True:
        digits = header[1:]
        # The hot path: "$<digits>". A length of digits only is never
        # negative; one with a leading zero is refused as string2ll does, and
        # one of 20 digits or more is out of its range.
        if (
            header[:1] == b"$"
            and digits.isdigit()
            and (digits[0] != 0x30 or len(digits) == 1)
            and len(digits) < 20
        ):
            length = int(digits)
            if length <= max_bulk_length:
                if length + 3 <= frame_max and length < _SPLIT:
                    # The skipped byte, the payload and the two bytes after.
                    data = yield proto.read_exactly(length + 3)
                    append(data[1 : length + 1])
                else:
                    yield proto.read_exactly(1)
                    append((yield from _read_large(proto, length, frame_max)))
                count -= 1
                if not count:
                    return args
                try:
                    header = yield proto.read_until(b"\r", _INLINE_MAX)
                except LineTooLongError:
                    raise _protocol_error("too big bulk count string") from None
                continue
        if b"\0" in header:
            # Redis finds the CR with strchr(), which stops at the NUL.
            yield from _wait_out(proto, len(header) + 1, "too big bulk count string")
        yield proto.read_exactly(1)
        if header[:1] != b"$":
            got = chr(header[0]) if header else " "
            if got == "\n":
                got = " "
            raise _protocol_error(f"expected '$', got '{got}'")
        raise _protocol_error("invalid bulk length")


def _read_large(
    proto: StateProtocol, length: int, frame_max: int
) -> Generator[Deferred[Any], Any, bytes]:
    """
    Read a long bulk payload, then skip the two bytes after it.

    @param proto: The protocol to read from.
    @param length: The payload's length.
    @param frame_max: The protocol's C{max_frame_size}: longer payloads are
        read in pieces of this size and joined.
    @return: The payload.
    """
    if length <= frame_max:
        data: bytes = yield proto.read_exactly(length)
    else:
        pieces = []
        remaining = length
        while remaining:
            piece = yield proto.read_exactly(min(remaining, frame_max))
            pieces.append(piece)
            remaining -= len(piece)
        data = b"".join(pieces)
        del pieces
    yield proto.read_exactly(2)
    return data


def _wait_out(
    proto: StateProtocol, seen: int, what: str
) -> Generator[Deferred[Any], Any, None]:
    """
    Consume input until more than 64 KiB arrived since a line's start, then
    fail as Redis does when it cannot find that line's end.

    @param proto: The protocol to read from.
    @param seen: How many bytes since the line's start were consumed.
    @param what: The "too big" message.
    @raise RESPProtocolError: Always, eventually.
    """
    while seen <= _INLINE_MAX:
        chunk = yield proto.read_some(_INLINE_MAX + 1 - seen)
        seen += len(chunk)
    raise _protocol_error(what)


def _inline(
    proto: StateProtocol, first: bytes
) -> Generator[Deferred[Any], Any, list[bytes]]:
    """
    Read the rest of an inline command line and split it as Redis does.

    @param proto: The protocol to read from.
    @param first: The line's first byte, already read (not C{*}).
    @return: The arguments, possibly none (an empty line is skipped).
    @raise RESPProtocolError: For a line over 64 KiB, unbalanced quotes, or
        (eventually) a NUL.
    """
    if first == b"\n":
        return []
    try:
        # 64 KiB from the line's first byte on, as Redis counts.
        rest: bytes = yield proto.read_until(b"\n", _INLINE_MAX - 1)
    except LineTooLongError:
        raise _protocol_error("too big inline request") from None
    line = first + rest
    if b"\0" in line:
        # Redis finds the LF with strchr(), which stops at the NUL.
        yield from _wait_out(proto, len(line) + 1, "too big inline request")
    if line[-1:] == b"\r":
        line = line[:-1]
    if _NEEDS_SPLITARGS.search(line) is None:
        # No quotes and no blank that splits differently from bytes.split().
        return line.split()
    args = _split_args(line)
    if args is None:
        raise _protocol_error("unbalanced quotes in request")
    return args


# Bytes on which bytes.split() and sdssplitargs() disagree: quotes, and VT
# and FF (blanks between arguments for both, but part of an unquoted
# argument for sdssplitargs).
_NEEDS_SPLITARGS = re.compile(rb"[\"'\x0b\x0c]")

# What a piece between CR LFs must not hold to be taken as a whole inline
# line by take_commands: an LF (the line would end there), a NUL (Redis
# would not see the end), or what bytes.split() splits unlike sdssplitargs.
_NOT_PLAIN_LINE = re.compile(rb"[\n\0\"'\x0b\x0c]")

# C isspace() in the C locale; also exactly what bytes.isspace() accepts.
_BLANKS = frozenset(b" \t\n\v\f\r")

# What ends an unquoted argument in sdssplitargs (NUL never reaches it).
_ARG_ENDS = frozenset(b" \n\r\t")

_HEX_DIGITS = frozenset(b"0123456789abcdefABCDEF")

_ESCAPES = {
    ord("n"): ord("\n"),
    ord("r"): ord("\r"),
    ord("t"): ord("\t"),
    ord("b"): ord("\b"),
    ord("a"): ord("\a"),
}

_BACKSLASH = ord("\\")
_DQUOTE = ord('"')
_SQUOTE = ord("'")


def _split_args(line: bytes) -> list[bytes] | None:
    """
    Split a line with quotes the way Redis's C{sdssplitargs} does.

    @param line: The line, without CR LF and without NUL bytes.
    @return: The arguments, or C{None} for unbalanced quotes (including a
        closing quote followed by something other than a blank).
    """
    args: list[bytes] = []
    end = len(line)
    i = 0
    while True:
        while i < end and line[i] in _BLANKS:
            i += 1
        if i == end:
            return args
        current = bytearray()
        in_double = in_single = False
        while True:
            c = line[i] if i < end else -1
            if in_double:
                if (
                    c == _BACKSLASH
                    and line[i + 1 : i + 2] == b"x"
                    and i + 3 < end
                    and line[i + 2] in _HEX_DIGITS
                    and line[i + 3] in _HEX_DIGITS
                ):
                    current.append(int(line[i + 2 : i + 4], 16))
                    i += 4
                elif c == _BACKSLASH and i + 1 < end:
                    escaped = line[i + 1]
                    current.append(_ESCAPES.get(escaped, escaped))
                    i += 2
                elif c == _DQUOTE:
                    # A closing quote must be followed by a blank or the end.
                    if i + 1 < end and line[i + 1] not in _BLANKS:
                        return None
                    i += 1
                    break
                elif c < 0:
                    return None
                else:
                    current.append(c)
                    i += 1
            elif in_single:
                if c == _BACKSLASH and line[i + 1 : i + 2] == b"'":
                    current.append(_SQUOTE)
                    i += 2
                elif c == _SQUOTE:
                    if i + 1 < end and line[i + 1] not in _BLANKS:
                        return None
                    i += 1
                    break
                elif c < 0:
                    return None
                else:
                    current.append(c)
                    i += 1
            elif c < 0 or c in _ARG_ENDS:
                break
            elif c == _DQUOTE:
                in_double = True
                i += 1
            elif c == _SQUOTE:
                in_single = True
                i += 1
            else:
                current.append(c)
                i += 1
        args.append(bytes(current))


# -- replies --------------------------------------------------------------


@final
@attrs.frozen
class SimpleString:
    """
    A RESP simple string reply, C{+<value>\\r\\n}, such as C{+OK}.

    L{encode_reply} sends C{bytes} and C{str} as bulk strings; wrap a value in
    this to send it as a status line instead.

    @ivar value: The text, without CR or LF (a C{str} is encoded as UTF-8).
    """

    value: bytes | str


@final
@attrs.frozen
class ErrorReply:
    """
    A RESP error reply, C{-<message>\\r\\n}.

    The message starts with the error code, as Redis's do:
    C{ErrorReply("ERR unknown command 'FOO'")}, C{ErrorReply("WRONGTYPE
    Operation against a key holding the wrong kind of value")}. CR and LF in
    it are treated as Redis's C{addReplyErrorFormat} treats them: trimmed
    from both ends, and sent as spaces inside.

    @ivar message: The code and text (a C{str} is encoded as UTF-8).
    """

    message: bytes | str


class _NullArray(Enum):
    """
    The type of L{NULL_ARRAY}.
    """

    #: The null array.
    NULL_ARRAY = "null array"

    def __repr__(self) -> str:
        return "NULL_ARRAY"


#: The null array reply: C{*-1\r\n} in RESP2 (what Redis sends, for example,
#: for a timed-out C{BLPOP} or an aborted C{EXEC}); C{_\r\n} in RESP3.
NULL_ARRAY: Final = _NullArray.NULL_ARRAY


def encode_reply(value: object, protocol: int = 2) -> bytes:
    """
    Encode a reply in RESP2 or RESP3.

    Python types map to RESP types as follows (RESP2 where it differs, in
    parentheses, is what Redis sends a RESP2 client for the same reply):

      - C{bytes}, C{bytearray}, C{memoryview}: bulk string C{$}; C{str}:
        bulk string of its UTF-8 encoding.
      - C{int}: integer C{:}; outside the signed 64-bit range, big number
        C{(} (RESP2: a bulk string of its digits).
      - C{bool}: boolean C{#t}/C{#f} (RESP2: integer C{:1}/C{:0}).
      - C{float}: double C{,} formatted as Redis 7.0 formats it, with
        C{printf("%.17g")} (C{0.1} is C{0.10000000000000001}, C{3.0} is
        C{3}), or C{inf}, C{-inf}, C{nan} (RESP2: a bulk string of that
        text).
      - C{None}: null C{_} (RESP2: null bulk string C{$-1}).
      - L{NULL_ARRAY}: null C{_} (RESP2: null array C{*-1}).
      - C{list}, C{tuple}: array C{*}, elements encoded by these rules.
      - C{dict} (any L{Mapping}): map C{%} (RESP2: a flat array of keys and
        values).
      - C{set}, C{frozenset}: set C{~} (RESP2: an array).
      - L{SimpleString}: simple string C{+}; L{ErrorReply}: error C{-}.

    Pass the version the client negotiated (C{HELLO 3} switches redis-py and
    redis-cli to RESP3; every connection starts in RESP2).

    @param value: The reply.
    @param protocol: 2 or 3.
    @return: The encoded reply.
    @raise ValueError: If C{protocol} is not 2 or 3, or a L{SimpleString}
        holds CR or LF.
    @raise TypeError: If C{value} (or something in it) has a type not listed.
    """
    if type(value) is bytes and (protocol == 2 or protocol == 3):
        # The commonest reply, the same in both versions.
        return b"$%d\r\n%s\r\n" % (len(value), value)
    if protocol == 2:
        resp3 = False
    elif protocol == 3:
        resp3 = True
    else:
        raise ValueError(f"protocol must be 2 or 3, not {protocol!r}")
    parts: list[bytes] = []
    _encode_into(value, parts, resp3)
    return b"".join(parts)


def _encode_into(value: object, parts: list[bytes], resp3: bool) -> None:
    """
    Append the encoding of C{value} to C{parts}.

    @param value: The reply (see L{encode_reply}).
    @param parts: Where to append.
    @param resp3: Whether to use RESP3 types.
    """
    append = parts.append
    if isinstance(value, bytes | bytearray):
        append(b"$%d\r\n%s\r\n" % (len(value), value))
    elif isinstance(value, bool):
        if resp3:
            append(b"#t\r\n" if value else b"#f\r\n")
        else:
            append(b":1\r\n" if value else b":0\r\n")
    elif isinstance(value, int):
        if _LLONG_MIN <= value <= _LLONG_MAX:
            append(b":%d\r\n" % value)
        elif resp3:
            append(b"(%d\r\n" % value)
        else:
            digits = b"%d" % value
            append(b"$%d\r\n%s\r\n" % (len(digits), digits))
    elif value is None:
        append(b"_\r\n" if resp3 else b"$-1\r\n")
    elif isinstance(value, str):
        data = value.encode("utf-8")
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    elif isinstance(value, list | tuple):
        append(b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, parts, resp3)
    elif isinstance(value, SimpleString):
        text = _utf8(value.value)
        if b"\r" in text or b"\n" in text:
            raise ValueError(f"a simple string cannot hold CR or LF: {text!r}")
        append(b"+%s\r\n" % text)
    elif isinstance(value, ErrorReply):
        # As Redis's addReplyErrorFormat: CR and LF trimmed from both ends,
        # then spaces for those left inside.
        text = _utf8(value.message).strip(b"\r\n")
        append(b"-%s\r\n" % text.replace(b"\r", b" ").replace(b"\n", b" "))
    elif isinstance(value, float):
        append(_double(value, resp3))
    elif isinstance(value, Mapping):
        append(b"%%%d\r\n" % len(value) if resp3 else b"*%d\r\n" % (2 * len(value)))
        for key, item in value.items():
            _encode_into(key, parts, resp3)
            _encode_into(item, parts, resp3)
    elif isinstance(value, set | frozenset):
        append(b"~%d\r\n" % len(value) if resp3 else b"*%d\r\n" % len(value))
        for item in value:
            _encode_into(item, parts, resp3)
    elif value is NULL_ARRAY:
        append(b"_\r\n" if resp3 else b"*-1\r\n")
    elif isinstance(value, memoryview):
        data = value.tobytes()
        append(b"$%d\r\n%s\r\n" % (len(data), data))
    else:
        raise TypeError(
            f"cannot encode {type(value).__name__!r} as a RESP reply ({value!r:.60})"
        )


def _utf8(text: bytes | str) -> bytes:
    """
    Return C{text} as bytes, encoding a C{str} as UTF-8.

    @param text: The text.
    @return: Its bytes.
    """
    return text.encode("utf-8") if isinstance(text, str) else text


def _double(value: float, resp3: bool) -> bytes:
    """
    Encode a float as a RESP3 double, or as the RESP2 bulk string Redis
    sends instead.

    Redis 7.0 formats doubles with C{printf("%.17g")} (C{0.1} is
    C{0.10000000000000001}, C{3.0} is C{3}), and infinities as C{inf} and
    C{-inf}; Python's C{%} formatting gives the same text for every finite
    double. A NaN is C{nan}, or C{-nan} if its sign bit is set, as glibc
    prints it.

    @param value: The number.
    @param resp3: Whether to use the RESP3 double type.
    @return: The encoded reply.
    """
    if math.isinf(value):
        text = b"inf" if value > 0 else b"-inf"
    elif math.isnan(value):
        text = b"-nan" if math.copysign(1.0, value) < 0 else b"nan"
    else:
        text = b"%.17g" % value
    if resp3:
        return b",%s\r\n" % text
    return b"$%d\r\n%s\r\n" % (len(text), text)


def write_reply(proto: StateProtocol, value: object, protocol: int = 2) -> None:
    """
    Encode C{value} with L{encode_reply} and write it.

    @param proto: The protocol to write to.
    @param value: The reply.
    @param protocol: 2 or 3, as the client negotiated.
    @raise ValueError: As L{encode_reply}; nothing is written then.
    @raise TypeError: As L{encode_reply}; nothing is written then.
    """
    proto.write(encode_reply(value, protocol))
