"""The compact per-process denylist: exact for what it holds, expiries never early, bounded memory."""

from __future__ import annotations

import sys

from tokenauth.denylist import Denylist, fingerprint


def test_denies_until_the_expiry_and_no_longer():
    denylist = Denylist()
    denylist.add("jti-1", 1000.5)
    assert denylist.denies("jti-1", 1000.9)  # rounded up, never early
    assert not denylist.denies("jti-1", 1001)
    assert not denylist.denies("jti-2", 0)


def test_a_later_expiry_wins_and_an_earlier_one_does_not_shorten():
    denylist = Denylist()
    denylist.add("a", 100)
    denylist.add("a", 50)
    assert denylist.denies("a", 99)
    denylist.add("a", 200)
    assert denylist.denies("a", 199)
    assert len(denylist) == 1


def test_grows_keeps_everything_and_prune_drops_only_the_expired():
    denylist = Denylist()
    for n in range(5000):
        denylist.add(f"id-{n}", 100 if n % 2 else 10**10)
    assert len(denylist) == 5000
    assert all(denylist.denies(f"id-{n}", 50) for n in range(5000))
    denylist.prune(now=100)
    assert len(denylist) == 2500
    assert all(denylist.denies(f"id-{n}", 150) == (n % 2 == 0) for n in range(5000))


def test_far_future_expiries_and_odd_ids_are_held():
    denylist = Denylist()
    denylist.add("\udcff-lone-surrogate", 10**12)  # a year past what 32 bits hold: held until then
    denylist.add("", 10)
    assert denylist.denies("\udcff-lone-surrogate", 4 * 10**9)
    assert fingerprint("x") != 0


def test_memory_per_entry_is_a_few_bytes():
    denylist = Denylist(100_000)
    for n in range(100_000):
        denylist.add(f"{n:032x}", 10**10)
    table = denylist._table
    size = sys.getsizeof(table.keys) + sys.getsizeof(table.until)
    assert size / len(denylist) <= 48, size  # 12 bytes a slot, a table between 1/4 and 1/2 full
