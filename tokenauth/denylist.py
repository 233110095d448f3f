"""The denied ids of a process in two flat arrays: 12 bytes a slot, no Python object per id.

A million live entries would take some 200 MB as a dict of strings; here they take 24–48 MB. Each id
is kept as a 64-bit keyed BLAKE2b fingerprint (the key is random per process, so nobody can make a
token whose id collides on purpose); a chance collision would refuse one valid token, with a
probability of about one in 10^13 per token at a million entries. Expiries are whole seconds, rounded
up, so an entry never ends early. Open addressing with linear probing: lookups cost one hash and a
probe or two; expired entries are dropped when the table is rebuilt (on growth and by :meth:`prune`).
"""

from __future__ import annotations

import hashlib
import math
import os
from array import array

_KEY = os.urandom(16)
_EMPTY = 0
_MIN_CAPACITY = 1024
_MAX_LOAD = 0.5
_LAST_SECOND = 2**32 - 1  # the array holds unsigned 32-bit seconds (until 2106)


def fingerprint(denied_id: str) -> int:
    value = int.from_bytes(
        hashlib.blake2b(denied_id.encode("utf-8", "surrogatepass"), digest_size=8, key=_KEY).digest(),
        "little",
    )
    return value or 1  # 0 marks an empty slot


class Denylist:
    """Ids denied until a time (POSIX seconds). Readers need no lock: a table is swapped whole."""

    def __init__(self, expected: int = 0) -> None:
        self._table = _Table(int(expected / _MAX_LOAD) + 1)

    def __len__(self) -> int:
        return self._table.used

    def add(self, denied_id: str, until: float) -> None:
        """Deny ``denied_id`` until ``until`` (a later time wins). Callers serialise writes."""
        table = self._table
        if (table.used + 1) > table.capacity * _MAX_LOAD:
            table = self._table = table.rebuilt(table.used + 1)
        table.put(fingerprint(denied_id), min(math.ceil(until), _LAST_SECOND))

    def denies(self, denied_id: str, now: float) -> bool:
        return self._table.get(fingerprint(denied_id)) > now

    def prune(self, now: float) -> None:
        """Drop expired entries (and shrink the table when most of it is free)."""
        self._table = self._table.rebuilt(0, now)


class _Table:
    def __init__(self, capacity: int) -> None:
        self.capacity = max(_MIN_CAPACITY, 1 << math.ceil(math.log2(capacity)))
        self.mask = self.capacity - 1
        self.keys = array("Q", bytes(8 * self.capacity))
        self.until = array("I", bytes(4 * self.capacity))
        self.used = 0

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

    def rebuilt(self, extra: int, now: float = 0.0) -> _Table:
        """A new table with the live entries (those not expired at ``now``) and room for ``extra``."""
        live = sum(1 for k, u in zip(self.keys, self.until, strict=True) if k != _EMPTY and u > now)
        table = _Table(int((live + extra) / _MAX_LOAD) + 1)
        for key, until in zip(self.keys, self.until, strict=True):  # no list: no object per entry
            if key != _EMPTY and until > now:
                table.put(key, until)
        return table
