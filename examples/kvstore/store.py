"""
The in-memory key space: values by key, and when each key expires.

This module owns the data and expiry. It is sans-IO and sans-time: it knows
nothing of RESP, commands, connections or clocks. Time reaches it only as the
integer milliseconds each caller passes to L{Store.expire_due}, which the
server calls with its protocol's clock before every command, so a test's
L{twisted.internet.task.Clock} drives expiry and no timer is ever scheduled
per key.

Expiry: every key with a time to live has its deadline in C{expires} and an
entry C{(deadline, key)} in a heap. L{Store.expire_due} pops the heap while
its top is due and deletes the keys whose deadline is still that one (an
entry left behind by a later C{EXPIRE} or C{PERSIST} is skipped). A key that
is never touched again is still deleted on time (at the next command of any
client), and the heap is rebuilt when stale entries outnumber live ones, so
memory stays proportional to the keys that exist.
"""

from __future__ import annotations

import heapq
from collections import deque

__all__ = ["Store", "Value"]

#: What a key holds: a string, a list, a set or a hash.
Value = bytes | deque[bytes] | set[bytes] | dict[bytes, bytes]


class Store:
    """
    One key space (Redis's database 0), shared by every connection that
    uses it.

    The command code reads and writes L{data} directly, after calling
    L{expire_due}: every key in it is then live. A container value (list,
    set, hash) is never empty; the command that empties it deletes the key,
    as Redis does.

    @ivar data: The keys and their values.
    @ivar expires: The deadline of each key that has one, in integer
        milliseconds on the caller's clock.
    """

    __slots__ = ("_heap", "data", "expires")

    def __init__(self) -> None:
        """
        Make an empty key space.
        """
        self.data: dict[bytes, Value] = {}
        self.expires: dict[bytes, int] = {}
        self._heap: list[tuple[int, bytes]] = []

    def expire_due(self, now_ms: int) -> None:
        """
        Delete every key whose deadline is at or before C{now_ms}.

        Costs one comparison when nothing is due.

        @param now_ms: The time now, in milliseconds on the clock the
            deadlines were set with.
        """
        heap = self._heap
        if not heap or heap[0][0] > now_ms:
            return
        expires = self.expires
        data = self.data
        while heap and heap[0][0] <= now_ms:
            deadline, key = heapq.heappop(heap)
            if expires.get(key) == deadline:
                del expires[key]
                data.pop(key, None)

    def set_deadline(self, key: bytes, deadline_ms: int) -> None:
        """
        Make C{key} (which must exist) expire at C{deadline_ms}.

        @param key: The key.
        @param deadline_ms: When, in milliseconds on the caller's clock.
        """
        self.expires[key] = deadline_ms
        heap = self._heap
        heapq.heappush(heap, (deadline_ms, key))
        if len(heap) > 2 * len(self.expires) + 64:
            # Stale entries (keys re-expired, persisted or deleted) outnumber
            # the live ones: rebuild from the deadlines in force.
            self._heap = [(when, k) for k, when in self.expires.items()]
            heapq.heapify(self._heap)

    def persist(self, key: bytes) -> bool:
        """
        Remove C{key}'s deadline, if it has one.

        @param key: The key.
        @return: Whether it had one.
        """
        return self.expires.pop(key, None) is not None

    def delete(self, key: bytes) -> bool:
        """
        Delete C{key} and its deadline.

        @param key: The key.
        @return: Whether it existed.
        """
        if self.data.pop(key, None) is None:
            return False
        self.expires.pop(key, None)
        return True

    def replace(self, key: bytes, value: Value) -> None:
        """
        Set C{key} to C{value} and drop its deadline (as C{SET} does).

        @param key: The key.
        @param value: The new value.
        """
        self.data[key] = value
        if self.expires:
            self.expires.pop(key, None)

    def flush(self) -> None:
        """
        Delete every key.
        """
        self.data.clear()
        self.expires.clear()
        self._heap.clear()

    def __len__(self) -> int:
        """
        The number of keys.
        """
        return len(self.data)

    def __repr__(self) -> str:
        """
        Say how many keys there are and how many expire.
        """
        return f"<Store keys={len(self.data)} expiring={len(self.expires)}>"
