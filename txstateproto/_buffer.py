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
  - C{clear()}, C{len()}, C{bool()}, C{repr()}.

Representation
==============

A C{bytearray} plus a read offset C{_start}: bytes before it are consumed. A
read only moves the offset, so taking a line never moves the bytes after it.
The consumed prefix is deleted (compaction) in L{ReceiveBuffer.append}, and
only when it is more than half of the array and more than
C{_COMPACT_MIN} bytes, so the copy of the remainder is paid for by at
least as many consumed bytes.

C{_searched} is an absolute index into the array with the invariant "no
occurrence of C{_delimiter} starts in C{[_start, _searched)}". A search for
the same delimiter begins at C{max(_start, _searched)}; an unsuccessful
search over C{[pos, end)} sets C{_searched} to C{end - len(delimiter) + 1},
so an occurrence split across two appends is still found. Taking bytes
cannot break the invariant (the bytes after the offset do not change, and
the clamp to C{_start} handles an index left behind), so takes leave it
alone; a different delimiter resets it, and compaction shifts it.

Goals
=====

  - Results are C{bytes}, copied once (see C{_copy_large} for how).
  - Limits are checked before anything is copied: an over-long line raises
    without consuming or copying a byte.
  - Linear total cost and bounded memory whatever the peer does (below).

The denial-of-service argument
==============================

Time. Each byte is copied into the array once by C{append} (C{bytearray}
grows geometrically, so amortised O(1)), copied out once by the take that
consumes it, and moved at most once by compaction, which moves fewer bytes
than it discards. A search never rescans: a peer dripping one byte at a
time with no delimiter makes each search examine only the new byte plus
C{len(delimiter) - 1} bytes of overlap, so n bytes cost O(n * len(delimiter))
in all, not O(n**2). The search window is capped at C{limit +
len(delimiter)} bytes from the read offset, so even a 100 MB buffer without
a delimiter costs one bounded scan.

Memory. L{ReceiveBuffer.take_until} raises L{LineTooLongError} as soon as
C{max_length + len(delimiter)} bytes are buffered without a delimiter
starting within C{max_length}; a caller that searches after each append
(as the protocol does) therefore holds at most that much undelimited data
plus one received chunk. Compaction keeps the array below twice the unread
bytes plus C{_COMPACT_MIN} (plus the newest chunk), so consumed data does not
pile up either.
"""

from __future__ import annotations

from typing import final

from ._errors import LineTooLongError

__all__ = ["ReceiveBuffer"]

# Compact only once the consumed prefix exceeds this many bytes (and half the
# array): below it, the memmove would cost more than the memory it frees.
_COMPACT_MIN = 16384

# Results shorter than this use bytes(ba[a:b]): two copies, but the fastest
# for short lines (CPython 3.11: 16 B 177 ns vs 228-303 ns via memoryview;
# 1 KiB 260 vs 325-380 ns); longer ones use _copy_large's single copy
# (64 KiB 2.2 us vs 4.4 us). The two break even near 16 KiB.
_LARGE_COPY = 16384


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

    __slots__ = ("_data", "_delimiter", "_searched", "_start")

    _data: bytearray
    _start: int
    _searched: int
    _delimiter: bytes

    def __init__(self) -> None:
        """
        Create an empty buffer.
        """
        self._data = bytearray()
        # Read offset: bytes before it are consumed.
        self._start = 0
        # No occurrence of self._delimiter starts in [self._start, self._searched).
        self._searched = 0
        self._delimiter = b""

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

    def append(self, data: bytes) -> None:
        """
        Add received bytes after those already buffered.

        Before growing, drops the consumed prefix if it is more than half of
        the array and more than C{_COMPACT_MIN} bytes (see the module
        docstring for why this keeps memory bounded and time linear).

        @param data: The bytes the transport delivered (may be empty).
        """
        buf = self._data
        start = self._start
        if start > _COMPACT_MIN and start > len(buf) >> 1:
            # O(1) in CPython (it moves bytearray's logical start); the move of
            # the remainder happens at the next growth and is bounded by start.
            del buf[:start]
            self._start = 0
            searched = self._searched - start
            self._searched = searched if searched > 0 else 0
        buf += data

    def _search(self, delimiter: bytes, limit: int) -> int:
        """
        Find the first C{delimiter} starting within C{limit} of the offset.

        Shared by L{find} and L{take_until}; does not validate its arguments.

        @param delimiter: A non-empty delimiter.
        @param limit: The largest offset, relative to the read offset, at
            which a match may start.
        @return: The absolute index of the match in C{_data}, or C{-1}.
        """
        data = self._data
        start = self._start
        if delimiter == self._delimiter:
            pos = self._searched
            if pos < start:
                pos = start
        else:
            self._delimiter = delimiter
            pos = start
        size = len(delimiter)
        end = start + limit + size
        found = data.find(delimiter, pos, end)
        if found >= 0:
            # Lets a repeated find() without a take resume at the match.
            self._searched = found
        else:
            # A match may straddle the end of what is here: back off size - 1.
            stop = len(data)
            if end < stop:
                stop = end
            stop -= size - 1
            self._searched = stop if stop > pos else pos
        return found

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
        found = self._search(delimiter, limit)
        return found - self._start if found >= 0 else -1

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
        if not delimiter:
            raise ValueError("delimiter must not be empty")
        found = self._search(delimiter, max_length)
        if found >= 0:
            start = self._start
            self._start = found + len(delimiter)
            if found - start < _LARGE_COPY:
                return bytes(self._data[start:found])
            return self._copy_large(start, found)
        # A negative max_length can never match, so it is checked only here.
        if max_length < 0:
            raise ValueError(f"max_length must be >= 0, not {max_length}")
        buffered = len(self._data) - self._start
        if buffered >= max_length + len(delimiter):
            raise LineTooLongError(
                limit=max_length, length=buffered, limit_name=limit_name
            )
        return None

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
        start = self._start
        end = start + n
        if end > len(self._data):
            return None
        self._start = end
        if n < _LARGE_COPY:
            return bytes(self._data[start:end])
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
        start = self._start
        end = len(self._data)
        if end == start:
            return None
        if end - start > max_bytes:
            end = start + max_bytes
        self._start = end
        if end - start < _LARGE_COPY:
            return bytes(self._data[start:end])
        return self._copy_large(start, end)

    def take_all(self) -> bytes:
        """
        Take everything buffered and release the array's memory.

        @return: All unread bytes, possibly C{b""}.
        """
        data = self._data
        start = self._start
        if start == 0:
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
        start = self._start
        end = start + n
        if n < _LARGE_COPY:
            return bytes(self._data[start:end])
        end = min(end, len(self._data))
        return self._copy_large(start, end)

    def clear(self) -> None:
        """
        Discard everything buffered and release the array's memory.
        """
        # clear() rather than a new bytearray: keeps the same object, which
        # the tests rely on to count the bytes searched.
        self._data.clear()
        self._start = 0
        self._searched = 0

    def _copy_large(self, start: int, end: int) -> bytes:
        """
        Copy C{_data[start:end]} to C{bytes} once, through a memoryview.

        Both views are released before returning, not left to garbage
        collection (which is not immediate on PyPy): while a view exists,
        resizing the array in the next L{append} would raise L{BufferError}.

        @param start: Absolute start index.
        @param end: Absolute end index.
        @return: The bytes in that range.
        """
        with memoryview(self._data) as view, view[start:end] as part:
            return part.tobytes()
