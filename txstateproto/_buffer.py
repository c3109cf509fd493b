"""
The receive buffer: bytes that arrived from the peer and have not been read yet.

This module owns L{ReceiveBuffer} and nothing else. It is sans-IO: it must not
import Twisted, Deferreds, the coroutine engine or the protocol; from the
package it imports only C{._errors}. Every read of every connection goes
through it, so it is written for speed (local-variable binding, no per-byte
Python work, C{__slots__}) and every shortcut carries a one-line reason.

Operations
==========

  - C{append(data)}: add received bytes at the end.
  - C{find(delimiter, limit)}: where the first C{delimiter} starts, looking
    at no more than C{limit + len(delimiter)} bytes, resuming where the last
    unsuccessful search stopped.
  - C{take_until(delimiter, max_length)}: a line, built on the same search,
    or C{None} (not there yet), or L{LineTooLongError} (certain to be too
    long).
  - C{take_exactly(n)}, C{take_some(max_bytes)}, C{take_all()}: counted reads.
  - C{peek(n)}: look at the next bytes without consuming them (protocol
    sniffing, RESP's type byte).
  - C{take_scanned(scan, limit)}: let a parser look at the unread bytes in
    place (no copy), at most C{limit} of them, and consume what it parsed.
  - C{take_prefixed(size, max_length)}: a whole message behind a big-endian
    length prefix, if it is all here.
  - C{clear()}, C{len()}, C{bool()}, C{repr()}.

Representation
==============

C{_data} plus a read offset C{_start}: bytes before the offset are consumed.
C{_data} is one of two things:

  - the C{bytes} chunk the transport delivered, kept as it is. When a chunk
    arrives, nothing is left unread and no array is in use, the buffer
    adopts the chunk without copying,
    and every take is one slice of it (a new C{bytes}, one copy). This is the
    common case: a chunk holding whole messages.
  - a C{bytearray}, once bytes must be joined: a chunk arrives while part of
    the previous one is unread (a message split across reads). The unread
    remainder is copied into the array once and later chunks are appended to
    it (even once it is consumed, until a take drops it as below), so a slow
    drip costs amortised O(1) per byte. The consumed prefix is
    deleted (compaction) in L{ReceiveBuffer.append}, and only when it is more
    than half of the array and more than C{_COMPACT_MIN} bytes, so the copy
    of the remainder is paid for by at least as many consumed bytes.

A take never moves the bytes after it, only the offset. When a take cannot
be satisfied and finds the buffer fully consumed (the reader is about to
wait), C{_data} is dropped (replaced by C{b""}), so an idle connection holds
no chunk and no array.

C{_searched} is an absolute index into C{_data} with the invariant "no
occurrence of C{_delimiter} starts in C{[_start, _searched)}". A search for
the same delimiter begins at C{max(_start, _searched)}; an unsuccessful
search over C{[pos, end)} sets C{_searched} to C{end - len(delimiter) + 1},
so an occurrence split across two appends is still found. Taking bytes
cannot break the invariant (the bytes after the offset do not change, and
the clamp to C{_start} handles an index left behind), so takes leave it
alone; a different delimiter resets it, and compaction and the switch to an
array shift it.

Goals
=====

  - Results are C{bytes}, copied once from a chunk (twice for short results
    from the array: see C{_LARGE_COPY}).
  - Limits are checked before anything is copied: an over-long line raises
    without consuming or copying a byte.
  - Linear total cost and bounded memory whatever the peer does (below).

The denial-of-service argument
==============================

Time. Each byte is copied into the array at most once (when its chunk is joined
with a later one; C{bytearray} grows geometrically, so amortised O(1)), copied
out once by the take that consumes it, and moved at most once by compaction,
which moves fewer bytes than it discards. A search never rescans: a peer
dripping one byte at a time with no delimiter makes each search examine only
the new byte plus C{len(delimiter) - 1} bytes of overlap, so n bytes cost O(n *
len(delimiter)) in all, not O(n**2). The search window is capped at C{limit +
len(delimiter)} bytes from the read offset, so even a 100 MB buffer without a
delimiter costs one bounded scan.

Memory. L{ReceiveBuffer.take_until} raises L{LineTooLongError} as soon as
C{max_length + len(delimiter)} bytes are buffered without a delimiter
starting within C{max_length}; a caller that searches after each append
(as the protocol does) therefore holds at most that much undelimited data
plus one received chunk. Compaction keeps the array below twice the unread
bytes plus C{_COMPACT_MIN} (plus the newest chunk), so consumed data does not
pile up either.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, TypeVar, final

from ._errors import LineTooLongError

__all__ = ["ReceiveBuffer"]

_T = TypeVar("_T")

# Compact only once the consumed prefix exceeds this many bytes (and half the
# array): below it, the memmove would cost more than the memory it frees.
_COMPACT_MIN = 16384

# Results shorter than this use bytes(ba[a:b]): two copies, but the fastest
# for short lines (CPython 3.11: 16 B 177 ns vs 228-303 ns via memoryview;
# 1 KiB 260 vs 325-380 ns); longer ones use _copy_large's single copy
# (64 KiB 2.2 us vs 4.4 us). The two break even near 16 KiB.
_LARGE_COPY = 16384

# Splitting lines ahead (ReceiveBuffer._split_ahead) looks at a window of 32
# times the line just taken, at least _SPLIT_WINDOW and at most
# _SPLIT_WINDOW_MAX bytes, and keeps at most _SPLIT_LINES lines: the list
# costs at most the window's bytes again plus, per line, a 33-byte bytes
# header and an 8-byte pointer. It starts only after lines up to
# _SPLIT_LINE_MAX bytes: for longer ones a search and a slice per line cost
# little next to copying the line.
_SPLIT_WINDOW = 2048
_SPLIT_WINDOW_MAX = 65536
_SPLIT_LINES = 128
_SPLIT_LINE_MAX = 2048

# ReceiveBuffer._lines after a line take with nothing split ahead: empty, so
# never popped from (takes use the list only when it is not empty) and
# shared by every buffer.
_LINE_TAKEN: Final[list[bytes]] = []

# take_prefixed's length readers, by prefix size: in place, no slice.
_UNPACK32 = struct.Struct(">I").unpack_from
_PREFIX_READERS: Final[dict[int, Callable[[bytes | bytearray, int], tuple[int]]]] = {
    1: struct.Struct(">B").unpack_from,
    2: struct.Struct(">H").unpack_from,
    4: _UNPACK32,
    8: struct.Struct(">Q").unpack_from,
}


@final
class ReceiveBuffer:
    """
    A sans-IO buffer of received bytes with delimiter search and counted reads.

    Append what the transport delivers with L{append}; take complete units
    with L{take_until}, L{take_exactly}, L{take_some} or L{take_all}. Every
    take returns C{bytes} and consumes exactly what it returns (plus the
    delimiter for L{take_until}); a take that returns C{None} or raises
    consumes nothing. The buffer never blocks, never calls back and knows
    nothing of cancellation: a read that is cancelled simply does not take.
    """

    __slots__ = ("_data", "_delimiter", "_lines", "_searched", "_start")

    _data: bytes | bytearray
    _start: int
    _searched: int
    _delimiter: bytes
    _lines: list[bytes] | None

    def __init__(self) -> None:
        """
        Create an empty buffer.
        """
        # A received chunk kept as it is, or an array once chunks are joined.
        self._data = b""
        # Read offset: bytes before it are consumed.
        self._start = 0
        # No occurrence of self._delimiter starts in [self._start, self._searched).
        self._searched = 0
        # Never empty, so that an empty delimiter always takes the checking
        # branch of a search; any starting value is correct, since the
        # search index starts at the offset.
        self._delimiter = b"\r\n"
        # The next lines, split ahead in one C call (last line first), while
        # a peer pipelines short lines: see _split_ahead. Each is still in
        # _data after _start; a take of any other kind drops the list (sets
        # None). Empty (_LINE_TAKEN, or a list taken to the end): the last
        # take was a line, so the next line take may split ahead; only a
        # second line in a row does, so that a framing which alternates a
        # header line with a counted body never pays for it.
        self._lines = None

    def __len__(self) -> int:
        """
        Count the bytes buffered and not yet taken.

        @return: The number of unread bytes.
        """
        return len(self._data) - self._start

    def __bool__(self) -> bool:
        """
        Tell whether any unread byte is buffered.

        @return: C{True} if at least one byte can be taken.
        """
        return len(self._data) > self._start

    def __repr__(self) -> str:
        """
        Describe the buffer by its unread byte count.

        @return: For example C{<ReceiveBuffer 12 bytes buffered>}.
        """
        return f"<ReceiveBuffer {len(self._data) - self._start} bytes buffered>"

    def append(self, data: bytes) -> int:
        """
        Add received bytes after those already buffered.

        If the buffer holds no array and nothing is unread, the chunk itself
        becomes the buffer (no copy). Otherwise it is joined to the unread
        bytes in an array; before the array grows, the consumed prefix is
        dropped if it is more than half of the array and more than
        C{_COMPACT_MIN} bytes (see the module docstring for why this keeps
        memory bounded and time linear).

        @param data: The bytes the transport delivered (may be empty).
        @return: The number of unread bytes now buffered (C{len(self)},
            without a second call on the receive path).
        """
        buf = self._data
        start = self._start
        if isinstance(buf, bytes):
            if start >= len(buf):
                # Nothing unread: adopt the chunk. Any other type (a
                # bytearray or memoryview a caller may reuse) is copied.
                self._data = data if type(data) is bytes else bytes(data)
                self._start = 0
                self._searched = 0
                return len(self._data)
            elif data:
                # A message straddles chunks: join from here on, copying the
                # unread remainder once.
                array = bytearray(buf[start:] if start else buf)
                array += data
                self._data = array
                self._start = 0
                searched = self._searched - start
                self._searched = searched if searched > 0 else 0
                return len(array)
            return len(buf) - start
        # An array (until a take finds it fully consumed and drops it).
        if start > _COMPACT_MIN and start > len(buf) >> 1:
            # O(1) in CPython (it moves bytearray's logical start); the move of
            # the remainder happens at the next growth and is bounded by start.
            del buf[:start]
            self._start = 0
            searched = self._searched - start
            self._searched = searched if searched > 0 else 0
        buf += data
        return len(buf) - self._start

    def _release_if_empty(self) -> None:
        """
        Drop a fully consumed chunk or array, so an idle reader holds none.
        """
        if self._start >= len(self._data):
            self._data = b""
            self._start = 0
            self._searched = 0
            # An emptied list of lines ahead, if any: nothing is unread.
            self._lines = None

    def find(self, delimiter: bytes, limit: int) -> int:
        """
        Locate the first occurrence of C{delimiter} that starts at or before
        C{limit}, without consuming anything.

        Examines at most C{limit + len(delimiter)} bytes from the read offset
        and resumes where the previous unsuccessful search for the same
        delimiter stopped, so calling it after every L{append} costs time
        linear in the bytes received.

        @param delimiter: The bytes to look for; must not be empty.
        @param limit: The largest index, relative to the first unread byte,
            at which the occurrence may start; must be at least 0.
        @return: The index relative to the first unread byte, or C{-1} if no
            occurrence starting at or before C{limit} is buffered yet (or
            there is one only after C{limit}).
        @raise ValueError: If C{delimiter} is empty or C{limit} is negative.
        """
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        data = self._data
        start = self._start
        if delimiter == self._delimiter:
            pos = self._searched
            if pos < start:
                pos = start
        else:
            # The resume index belongs to the old delimiter: a search that
            # raises or finds nothing must not leave it standing for this one.
            self._delimiter = delimiter
            self._searched = pos = start
            # Lines split ahead were split at the old delimiter.
            self._lines = None
        size = len(delimiter)
        end = start + limit + size
        found = data.find(delimiter, pos, end)
        if found >= 0:
            # Lets a repeated find() without a take resume at the match.
            self._searched = found
            return found - start
        # A match may straddle the end of what is here: back off size - 1.
        stop = len(data)
        if end < stop:
            stop = end
        stop -= size - 1
        self._searched = stop if stop > pos else pos
        return -1

    def take_until(
        self,
        delimiter: bytes,
        max_length: int,
        limit_name: str = "max_line_length",
    ) -> bytes | None:
        """
        Take the bytes before the first C{delimiter}, consuming the delimiter
        too.

        The line is returned if the delimiter starts at most C{max_length}
        bytes after the read offset (so the line is at most C{max_length}
        bytes). The search is the one L{find} performs, so it examines at
        most C{max_length + len(delimiter)} bytes and never rescans.

        @param delimiter: The line terminator; must not be empty.
        @param max_length: The longest line accepted, in bytes, delimiter
            excluded; must be at least 0.
        @param limit_name: The name of the limit as the user configures it,
            used in the error (for example C{"max_length"}).
        @return: The line without its delimiter, or C{None} if no delimiter
            is buffered yet and fewer than C{max_length + len(delimiter)}
            bytes are buffered (a valid line may still arrive).
        @raise LineTooLongError: If it is certain that the line exceeds
            C{max_length}: at least C{max_length + len(delimiter)} bytes are
            buffered and no delimiter starts at or before C{max_length}.
            Nothing is consumed; the error carries C{limit=max_length},
            C{length} (the bytes buffered) and C{limit_name}.
        @raise ValueError: If C{delimiter} is empty or C{max_length} is
            negative.
        """
        lines = self._lines
        if lines:
            if delimiter == self._delimiter:
                # Split ahead: the line and its delimiter are the next bytes.
                line = lines.pop()
                length = len(line)
                if length <= max_length:
                    self._start += length + len(delimiter)
                    return line
            # Another delimiter, or a line over this take's limit (the
            # search below raises for it): the list is of no use.
            self._lines = None
        # The search of find(), inlined: this is every line read's path.
        data = self._data
        start = self._start
        if delimiter == self._delimiter:
            pos = self._searched
            if pos < start:
                pos = start
        elif not delimiter:
            raise ValueError("delimiter must not be empty")
        else:
            # The resume index belongs to the old delimiter: a search that
            # raises or finds nothing must not leave it standing for this one.
            self._delimiter = delimiter
            self._searched = pos = start
        size = len(delimiter)
        end = start + max_length + size
        found = data.find(delimiter, pos, end)
        if found >= 0:
            after = found + size
            length = found - start
            if type(data) is bytes:
                # One slice of the adopted chunk: one copy.
                line = data[start:found]
            elif length < _LARGE_COPY:
                line = bytes(data[start:found])
            else:
                line = self._copy_large(start, found)
            left = len(data) - after
            if not left:
                # All taken: let the chunk or array go now, so that the next
                # read sees an empty buffer without a search, and an idle
                # reader holds nothing.
                self._data = b""
                self._start = 0
                self._searched = 0
                self._lines = _LINE_TAKEN
                return line
            self._start = after
            if (
                self._lines is not None
                and length <= _SPLIT_LINE_MAX
                and left >= (length + size) << 1
            ):
                # A second short line in a row and at least two more of
                # its size buffered: a pipelining peer.
                self._split_ahead(data, after, delimiter, (length + size) << 5)
            else:
                self._lines = _LINE_TAKEN
            return line
        # A negative max_length can never match, so it is checked only here.
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, not {max_length}")
        length = len(data)
        buffered = length - start
        if buffered >= max_length + size:
            raise LineTooLongError(
                limit=max_length, length=buffered, limit_name=limit_name
            )
        if not buffered:
            # Fully consumed: let the chunk go (the reader is about to wait).
            self._data = b""
            self._start = 0
            self._searched = 0
            self._lines = None
            return None
        # A match may straddle the end of what is here: back off size - 1.
        stop = length if end > length else end
        stop -= size - 1
        self._searched = stop if stop > pos else pos
        # Drops a list taken to the end (the reader is about to wait) and
        # still counts as a line take for splitting ahead.
        self._lines = _LINE_TAKEN
        return None

    def _split_ahead(
        self, data: bytes | bytearray, start: int, delimiter: bytes, window: int
    ) -> None:
        """
        Split the complete lines among the next C{window} bytes from
        C{start} (clamped to C{_SPLIT_WINDOW} and C{_SPLIT_WINDOW_MAX}), at
        most C{_SPLIT_LINES} of them, into C{_lines}, so that the takes that
        follow are a list pop each instead of a search and a slice each.

        C{bytes.split} makes the same cut as repeated searches (the first
        occurrence from each start, without overlap); the last piece, a
        partial line or one whose delimiter the window cuts, is left in
        C{_data} for the ordinary search. Nothing is kept if fewer than two
        lines are complete. Each take from the list checks its own limit: a
        line over it drops the list, and the ordinary search raises for it.
        The list costs at most the window's bytes again plus a pointer and a
        bytes header per line, and is dropped by any take of another kind.
        """
        if window < _SPLIT_WINDOW:
            window = _SPLIT_WINDOW
        elif window > _SPLIT_WINDOW_MAX:
            window = _SPLIT_WINDOW_MAX
        piece = data[start : start + window]
        if type(piece) is not bytes:
            piece = bytes(piece)
        lines = piece.split(delimiter, _SPLIT_LINES)
        del lines[-1]
        if len(lines) < 2:
            self._lines = _LINE_TAKEN
            return
        lines.reverse()
        self._lines = lines

    def take_exactly(self, n: int) -> bytes | None:
        """
        Take the next C{n} bytes.

        @param n: How many bytes to take; must be at least 0.
        @return: Exactly C{n} bytes (C{b""} for C{n == 0}), or C{None} if
            fewer than C{n} are buffered, in which case nothing is consumed.
        @raise ValueError: If C{n} is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        data = self._data
        start = self._start
        end = start + n
        if end > len(data):
            self._release_if_empty()
            return None
        self._start = end
        self._lines = None
        if type(data) is bytes:
            return data[start:end]
        if n < _LARGE_COPY:
            return bytes(data[start:end])
        return self._copy_large(start, end)

    def take_some(self, max_bytes: int) -> bytes | None:
        """
        Take whatever is buffered, up to C{max_bytes}.

        @param max_bytes: The most bytes to return; must be at least 1.
        @return: Between 1 and C{max_bytes} bytes, or C{None} if the buffer
            is empty.
        @raise ValueError: If C{max_bytes} is less than 1.
        """
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, not {max_bytes}")
        data = self._data
        start = self._start
        end = len(data)
        if end <= start:
            self._release_if_empty()
            return None
        if end - start > max_bytes:
            end = start + max_bytes
        self._start = end
        self._lines = None
        if type(data) is bytes:
            if start == 0 and end == len(data):
                # The whole chunk, as it was delivered: no copy at all.
                return data
            return data[start:end]
        if end - start < _LARGE_COPY:
            return bytes(data[start:end])
        return self._copy_large(start, end)

    def take_prefixed(self, size: int, max_length: int) -> bytes | None:
        """
        Take a whole length-prefixed message: an unsigned big-endian length
        of C{size} bytes, then that many bytes, which are returned.

        It takes only a message that is wholly buffered and announces at
        most C{max_length} bytes; anything else (the prefix or the body not
        all here, or a length over the limit) consumes nothing and returns
        C{None}, and the caller reads the message with counted reads, which
        wait or report the error.

        @param size: The prefix's size in bytes: 1, 2, 4 or 8.
        @param max_length: The longest body taken, in bytes.
        @return: The body (C{bytes}, possibly empty), or C{None}.
        @raise ValueError: If C{size} is not 1, 2, 4 or 8.
        """
        data = self._data
        start = self._start
        body = start + size
        stop = len(data)
        if body > stop:
            if size not in _PREFIX_READERS:
                raise ValueError(f"size must be 1, 2, 4 or 8, not {size!r}")
            if start >= stop:
                self._release_if_empty()
            return None
        if size == 4:
            # The common width (Twisted's Int32StringReceiver), read in place.
            length: int = _UNPACK32(data, start)[0]
        elif size == 1:
            length = data[start]
        else:
            reader = _PREFIX_READERS.get(size)
            if reader is None:
                raise ValueError(f"size must be 1, 2, 4 or 8, not {size!r}")
            length = reader(data, start)[0]
        end = body + length
        if end > stop or length > max_length:
            return None
        if type(data) is bytes:
            taken = data[body:end]
        elif length < _LARGE_COPY:
            taken = bytes(data[body:end])
        else:
            taken = self._copy_large(body, end)
        self._lines = None
        if end == stop:
            # All taken: let the chunk or array go now (see take_until).
            self._data = b""
            self._start = 0
            self._searched = 0
        else:
            self._start = end
        return taken

    def take_all(self) -> bytes:
        """
        Take everything buffered and release the buffer's memory.

        @return: All unread bytes, possibly C{b""}.
        """
        data = self._data
        start = self._start
        if type(data) is bytes:
            out = data[start:] if start else data
        elif start == 0:
            # One copy, no slice.
            out = bytes(data)
        elif len(data) - start < _LARGE_COPY:
            out = bytes(data[start:])
        else:
            out = self._copy_large(start, len(data))
        self.clear()
        return out

    def peek(self, n: int) -> bytes:
        """
        Return up to the next C{n} bytes without consuming them.

        @param n: The most bytes to return; must be at least 0.
        @return: The first C{min(n, len(self))} unread bytes.
        @raise ValueError: If C{n} is negative.
        """
        if n < 0:
            raise ValueError(f"n must be >= 0, not {n}")
        data = self._data
        start = self._start
        end = start + n
        if type(data) is bytes or n < _LARGE_COPY:
            return bytes(data[start:end])
        end = min(end, len(data))
        return self._copy_large(start, end)

    def take_scanned(
        self,
        scan: Callable[[bytes | bytearray, int, int], tuple[_T, int] | None],
        limit: int,
    ) -> _T | None:
        """
        Let C{scan} parse the unread bytes in place, and consume what it
        parsed.

        C{scan(data, start, stop)} is called with the buffer's own storage
        (the received chunk or the joining array: not a copy), the index of
        the first unread byte and C{stop = min(len(data), start + limit)};
        it must look only at C{data[start:stop]}, must not modify C{data}
        and must not keep it or a view of it. It returns C{(value, end)}
        with C{start <= end <= stop} to consume C{data[start:end]}, or
        C{None} to consume nothing (the message is not complete, or not of
        a form it handles).

        So that the cost stays bounded, C{scan} is not called when nothing
        is buffered, and never sees more than C{limit} bytes.

        @param scan: The parser.
        @param limit: The most bytes C{scan} may look at; at least 0.
        @return: C{value}, or C{None} if C{scan} returned C{None} or nothing
            is buffered.
        @raise ValueError: If C{limit} is negative, or C{end} is outside
            C{[start, stop]} (nothing is consumed then).
        @raise Exception: Whatever C{scan} raises; nothing is consumed.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, not {limit}")
        data = self._data
        start = self._start
        stop = len(data)
        if stop <= start:
            self._release_if_empty()
            return None
        if stop - start > limit:
            stop = start + limit
        found = scan(data, start, stop)
        if found is None:
            return None
        value, end = found
        if not start <= end <= stop:
            raise ValueError(
                f"scan returned end={end} outside [{start}, {stop}] "
                f"(start, start + limit)"
            )
        self._start = end
        self._lines = None
        return value

    def clear(self) -> None:
        """
        Discard everything buffered and release the buffer's memory.
        """
        self._data = b""
        self._start = 0
        self._searched = 0
        self._lines = None

    def _copy_large(self, start: int, end: int) -> bytes:
        """
        Copy C{_data[start:end]} of the array to C{bytes} once, through a
        memoryview.

        Both views are released before returning, not left to garbage
        collection (which is not immediate on PyPy): while a view exists,
        resizing the array in the next L{append} would raise L{BufferError}.

        @param start: Absolute start index.
        @param end: Absolute end index.
        @return: The bytes in that range.
        """
        with memoryview(self._data) as view, view[start:end] as part:
            return part.tobytes()
