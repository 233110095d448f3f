"""The denied ids of a process in two flat arrays: 12 bytes a slot, no Python object per id.

A million live entries would take some 200 MB as a dict of strings; here they take 24–48 MB. Each id
is kept as a 64-bit keyed BLAKE2b fingerprint (the key is random per process, so nobody can make a
token whose id collides on purpose); a chance collision would refuse one valid token, with a
probability of about one in 10^13 per token at a million entries. Expiries are whole seconds, rounded
up, so an entry never ends early. Open addressing with linear probing: lookups cost one hash and a
probe or two.

The table is never rebuilt in one go (a second or more at a million entries, inside whichever request
caused it): growing, or dropping expired entries (:meth:`Denylist.prune`), starts a new table, and the
old one is moved into it a few slots at a time, with each :meth:`~Denylist.add` and each
:meth:`~Denylist.step`. Until the move ends, lookups ask both tables.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
from typing import Literal

_KEY = os.urandom(16)
_EMPTY = 0
_MIN_CAPACITY = 1024
_MAX_LOAD = 0.5
_LAST_SECOND = 2**32 - 1  # the array holds unsigned 32-bit seconds (until 2106)
#: Slots of the old table moved with each add: enough to end a move before the new table fills
#: (it has room for half as many entries again as the old one held, and the old one is at least a
#: sixth full unless it is small).
STEP_PER_ADD = 32
#: Slots moved by one :meth:`Denylist.step` (about a millisecond or two).
STEP_SLOTS = 4096


def _zeros(typecode: Literal["Q", "I"], count: int) -> memoryview[int]:
    """``count`` zeros as an array of C integers, in anonymous memory: allocated at once however
    large (a page is only taken when first written), not copied from a zero buffer (some 20 ms a
    million entries, inside whichever request sized the table)."""
    length = struct.calcsize(typecode) * count
    if hasattr(mmap, "MAP_PRIVATE"):
        # Private: a forked worker's writes are its own (copy on write), as with any other memory.
        memory = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        memory = mmap.mmap(-1, length)
    return memoryview(memory).cast(typecode)


def fingerprint(denied_id: str) -> int:
    value = int.from_bytes(
        hashlib.blake2b(denied_id.encode("utf-8", "surrogatepass"), digest_size=8, key=_KEY).digest(),
        "little",
    )
    return value or 1  # 0 marks an empty slot


class Denylist:
    """Ids denied until a time (POSIX seconds). Readers need no lock: they read the current table
    before the old one, and writers (which callers serialise) set the old one before the new."""

    def __init__(self, expected: int = 0) -> None:
        self._table = _Table(int(expected / _MAX_LOAD) + 1)
        #: The table being moved into ``_table``, or None; slots below ``_moved`` are moved.
        self._old: _Table | None = None
        self._moved = 0
        #: Entries of the old table that expire by then are left behind.
        self._drop_until = 0.0

    def __len__(self) -> int:
        """Entries held (while a move runs, those not moved yet count too, expired or not)."""
        old = self._old
        return self._table.used + (old.used_from(self._moved) if old is not None else 0)

    @property
    def moving(self) -> bool:
        return self._old is not None

    def add(self, denied_id: str, until: float) -> None:
        """Deny ``denied_id`` until ``until`` (a later time wins)."""
        self.step(STEP_PER_ADD)
        if self._table.used + 1 > self._table.capacity * _MAX_LOAD:
            self.step(None)  # a move too slow for the adds (a small table) ends here
            self._start(2 * self._table.capacity, 0.0)
        self._table.put(fingerprint(denied_id), min(math.ceil(until), _LAST_SECOND))

    def reserve(self, expected: int) -> None:
        """Room for ``expected`` more entries, before a bulk read (which then never grows the table)."""
        capacity = int((self._table.used + expected) / _MAX_LOAD) + 1
        if capacity > self._table.capacity:
            self.step(None)
            self._start(capacity, 0.0)

    def denies(self, denied_id: str, now: float) -> bool:
        key = fingerprint(denied_id)
        table, old = self._table, self._old
        return table.get(key) > now or (old is not None and old.get(key) > now)

    def prune(self, now: float) -> None:
        """Start dropping the entries expired at ``now`` (and shrinking the table when most of it is
        free); the move goes on with each :meth:`step` and :meth:`add`. Nothing when a move runs."""
        if self._old is None:
            self._start(int(self._table.used * 1.5 / _MAX_LOAD) + 1, now)

    def step(self, slots: int | None = STEP_SLOTS) -> None:
        """Move ``slots`` more slots of the old table (None: all that are left)."""
        old = self._old
        if old is None:
            return
        end = old.capacity if slots is None else min(self._moved + slots, old.capacity)
        table, keys, until, drop = self._table, old.keys, old.until, self._drop_until
        for slot in range(self._moved, end):
            if keys[slot] != _EMPTY and until[slot] > drop:
                table.put(keys[slot], until[slot])
        self._moved = end
        if end == old.capacity:
            self._old = None

    def _start(self, capacity: int, drop_until: float) -> None:
        """Move everything into a new table of (at least) ``capacity`` slots."""
        self._moved, self._drop_until = 0, drop_until
        # This order: a reader that sees the new (empty) table must see the old one too.
        self._old = self._table
        self._table = _Table(capacity)


class _Table:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(_MIN_CAPACITY, 1 << math.ceil(math.log2(capacity)))
        self.mask = self.capacity - 1
        self.keys = _zeros("Q", self.capacity)
        self.until = _zeros("I", self.capacity)
        self.used = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.until.nbytes

    def put(self, key: int, until: int) -> None:
        keys, mask = self.keys, self.mask
        slot = key & mask
        while keys[slot] != _EMPTY and keys[slot] != key:
            slot = (slot + 1) & mask
        if keys[slot] == _EMPTY:
            self.used += 1
            self.until[slot] = until
            keys[slot] = key
        elif until > self.until[slot]:
            self.until[slot] = until

    def get(self, key: int) -> int:
        """The entry's expiry, 0 when there is none."""
        keys, mask = self.keys, self.mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return self.until[slot]
            if found == _EMPTY:
                return 0
            slot = (slot + 1) & mask

    def used_from(self, start: int) -> int:
        """Entries in the slots from ``start`` on."""
        return sum(1 for key in self.keys[start:] if key != _EMPTY)
