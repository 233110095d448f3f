"""A compact per-process map from string names to a few numbers: flat arrays, no Python object per name.

Each name is kept as a 64-bit keyed fingerprint, str's own SipHash (or BLAKE2b where hash
randomization is off; either way the key is random per process, so nobody can make a name that
collides on purpose; a chance collision is about one in 10^13 per lookup at a million
entries), its numbers in one C array per column. Open addressing with linear probing: a lookup costs
one hash and a probe or two. Writing a name again keeps the larger number of each column, so two names
whose fingerprints collide share the larger numbers of both: callers choose columns for which a larger
number only ever refuses more (a later expiry, a higher epoch, a later cutoff), never less.

The table is never rebuilt in one go (a second or more at a million entries, inside whichever request
caused it): growing, or dropping entries whose last column is past (:meth:`FingerprintMap.prune`),
starts a new table, and the old one is moved into it a few slots at a time, with each
:meth:`~FingerprintMap.put` and each :meth:`~FingerprintMap.step`. Until the move ends, lookups ask
both tables.
"""

from __future__ import annotations

import hashlib
import math
import mmap
import os
import struct
import sys
from collections.abc import Callable, Iterable
from typing import Any, Literal

#: The C numbers a column may hold: unsigned 32 or 64 bits, or a double.
Typecode = Literal["I", "Q", "d"]

_KEY = os.urandom(16)
_EMPTY = 0
_MIN_CAPACITY = 1024
_MAX_LOAD = 0.5
#: Slots of the old table moved with each put: enough to end a move before the new table fills
#: (it has room for half as many entries again as the old one held, and the old one is at least a
#: sixth full unless it is small).
STEP_PER_ADD = 32
#: Slots moved by one :meth:`FingerprintMap.step` (about a millisecond or two).
STEP_SLOTS = 4096


def _zeros(typecode: Typecode, count: int) -> memoryview[Any]:
    """``count`` zeros as an array of C numbers, in anonymous memory: allocated at once however
    large (a page is only taken when first written), not copied from a zero buffer (some 20 ms a
    million entries, inside whichever request sized the table)."""
    length = struct.calcsize(typecode) * count
    if hasattr(mmap, "MAP_PRIVATE"):
        # Private: a forked worker's writes are its own (copy on write), as with any other memory.
        memory = mmap.mmap(-1, length, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:
        memory = mmap.mmap(-1, length)
    return memoryview(memory).cast(typecode)


def _blake2b_fingerprint(name: str) -> int:
    value = int.from_bytes(
        hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=8, key=_KEY).digest(),
        "little",
    )
    return value or 1  # 0 marks an empty slot


def _siphash_fingerprint(name: str) -> int:
    # str's own hash: SipHash-1-3 under the interpreter's random key (PEP 456), ten times cheaper
    # than a keyed BLAKE2b and computed once per string object.
    return (hash(name) & _MASK) or 1


_MASK = 2**64 - 1
#: A keyed 64-bit hash of a name. str's hash is keyed only while hash randomization is on (it is,
#: unless PYTHONHASHSEED fixes it), and is 64 bits wide only on 64-bit builds.
fingerprint: Callable[[str], int] = (
    _siphash_fingerprint
    if sys.flags.hash_randomization and sys.hash_info.width == 64
    else _blake2b_fingerprint
)


class FingerprintMap:
    """Names to one number per column (``struct`` typecodes, e.g. ``"I"`` or ``"d"``). Readers need no
    lock: they read the current table before the old one, and writers (which callers serialise) set
    the old one before the new."""

    def __init__(self, columns: tuple[Typecode, ...], expected: int = 0) -> None:
        self._columns = columns
        self._table = _Table(columns, int(expected / _MAX_LOAD) + 1)
        #: The table being moved into ``_table``, or None; slots below ``_moved`` are moved.
        self._old: _Table | None = None
        self._moved = 0
        #: Entries of the old table whose last column is at most this are left behind.
        self._drop_until: float = 0

    def __len__(self) -> int:
        """Entries held (while a move runs, those not moved yet count too, past or not)."""
        old = self._old
        return self._table.used + (old.used_from(self._moved) if old is not None else 0)

    @property
    def moving(self) -> bool:
        return self._old is not None

    def put(self, name: str, values: tuple[float, ...]) -> None:
        """Hold ``values`` for ``name`` (of each column the larger of these and what is held wins)."""
        self.step(STEP_PER_ADD)
        if self._table.used + 1 > self._table.capacity * _MAX_LOAD:
            self.step(None)  # a move too slow for the puts (a small table) ends here
            self._start(2 * self._table.capacity, 0)
        self._table.put(fingerprint(name), values)

    def put_many(self, items: list[tuple[str, tuple[float, ...]]]) -> None:
        """:meth:`put` of each ``(name, values)``, the move stepped and the table sized once for all."""
        self.step(STEP_PER_ADD * len(items))
        if self._table.used + len(items) > self._table.capacity * _MAX_LOAD:
            self.reserve(max(len(items), self._table.used))  # at least twice the size, as put
        self._table.put_all((fingerprint(name), values) for name, values in items)

    def get(self, name: str) -> tuple[float, ...] | None:
        key = fingerprint(name)
        table, old = self._table, self._old
        found = table.get(key)
        if old is not None:
            before = old.get(key)
            if before is not None:
                found = before if found is None else tuple(map(max, found, before))
        return found

    def first(self, name: str) -> float:
        """The first column of ``name``, 0 when none is held: one lookup with no tuple, for the hot path."""
        key = fingerprint(name)
        table, old = self._table, self._old
        slot = table.find(key)
        found = table.columns[0][slot] if slot >= 0 else 0
        if old is not None:
            slot = old.find(key)
            if slot >= 0:
                found = max(found, old.columns[0][slot])
        return found

    def reserve(self, expected: int) -> None:
        """Room for ``expected`` more entries, before a bulk read (which then never grows the table)."""
        capacity = int((self._table.used + expected) / _MAX_LOAD) + 1
        if capacity > self._table.capacity:
            self.step(None)
            self._start(capacity, 0)

    def prune(self, now: float) -> None:
        """Start dropping the entries whose last column is at most ``now`` (and shrinking the
        table when most of it is free); the move goes on with each :meth:`step` and :meth:`put`.
        Nothing when a move runs."""
        if self._old is None:
            self._start(int(self._table.used * 1.5 / _MAX_LOAD) + 1, now)

    def step(self, slots: int | None = STEP_SLOTS) -> None:
        """Move ``slots`` more slots of the old table (None: all that are left)."""
        old = self._old
        if old is None:
            return
        end = old.capacity if slots is None else min(self._moved + slots, old.capacity)
        table, keys, columns, drop = self._table, old.keys, old.columns, self._drop_until
        last = columns[-1]
        table.put_all(
            (keys[slot], tuple([column[slot] for column in columns]))
            for slot in range(self._moved, end)
            if keys[slot] != _EMPTY and last[slot] > drop
        )
        self._moved = end
        if end == old.capacity:
            self._old = None

    def _start(self, capacity: int, drop_until: float) -> None:
        """Move everything into a new table of (at least) ``capacity`` slots."""
        self._moved, self._drop_until = 0, drop_until
        # This order: a reader that sees the new (empty) table must see the old one too.
        self._old = self._table
        self._table = _Table(self._columns, capacity)


class _Table:
    def __init__(self, columns: tuple[Typecode, ...], capacity: int) -> None:
        self.capacity = max(_MIN_CAPACITY, 1 << math.ceil(math.log2(capacity)))
        self.mask = self.capacity - 1
        self.keys = _zeros("Q", self.capacity)
        self.columns = [_zeros(typecode, self.capacity) for typecode in columns]
        self.used = 0

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + sum(column.nbytes for column in self.columns)

    def put(self, key: int, values: tuple[float, ...]) -> None:
        self.put_all(((key, values),))

    def put_all(self, entries: Iterable[tuple[int, tuple[float, ...]]]) -> None:
        """Each ``(key, values)``: a new key takes the values, a held one the larger of each column.
        One loop for a whole batch (a bulk read, a move): no call per entry."""
        keys, mask, columns = self.keys, self.mask, self.columns
        for key, values in entries:
            slot = key & mask
            while keys[slot] != _EMPTY and keys[slot] != key:
                slot = (slot + 1) & mask
            if keys[slot] == _EMPTY:
                self.used += 1
                for column, value in zip(columns, values, strict=True):
                    column[slot] = value
                keys[slot] = key
            else:
                for column, value in zip(columns, values, strict=True):
                    if value > column[slot]:
                        column[slot] = value

    def find(self, key: int) -> int:
        """The entry's slot, -1 when there is none."""
        keys, mask = self.keys, self.mask
        slot = key & mask
        while True:
            found = keys[slot]
            if found == key:
                return slot
            if found == _EMPTY:
                return -1
            slot = (slot + 1) & mask

    def get(self, key: int) -> tuple[float, ...] | None:
        slot = self.find(key)
        return None if slot < 0 else tuple([column[slot] for column in self.columns])

    def used_from(self, start: int) -> int:
        """Entries in the slots from ``start`` on."""
        return sum(1 for key in self.keys[start:] if key != _EMPTY)
