"""The denied ids of a process in two flat arrays: 12 bytes a slot, no Python object per id.

A million live entries would take some 200 MB as a dict of strings; here they take 24–48 MB
(:mod:`epochauth.fingerprints`: keyed 64-bit fingerprints, tables moved a few slots at a time). A
chance collision would refuse one valid token, with a probability of about one in 10^13 per token at
a million entries. Expiries are whole seconds, rounded up, so an entry never ends early.
"""

from __future__ import annotations

import math

from . import fingerprints
from .fingerprints import STEP_PER_ADD, STEP_SLOTS, fingerprint

__all__ = ["STEP_PER_ADD", "STEP_SLOTS", "Denylist", "fingerprint"]

_LAST_SECOND = 2**32 - 1  # the array holds unsigned 32-bit seconds (until 2106)


class Denylist(fingerprints.FingerprintMap):
    """Ids denied until a time (POSIX seconds)."""

    def __init__(self, expected: int = 0) -> None:
        super().__init__(("I",), expected)

    def add(self, denied_id: str, until: float) -> None:
        """Deny ``denied_id`` until ``until`` (a later time wins)."""
        self.put(denied_id, (min(math.ceil(until), _LAST_SECOND),))

    def add_many(self, entries: list[tuple[str, int]]) -> None:
        """:meth:`add` of each ``(denied_id, until)``, ``until`` in whole seconds already rounded up."""
        self.put_many([(denied_id, (min(until, _LAST_SECOND),)) for denied_id, until in entries])

    def denies(self, denied_id: str, now: float) -> bool:
        return self.first(denied_id) > now
