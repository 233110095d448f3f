"""The compact per-process denylist: exact for what it holds, expiries never early, bounded memory."""

from __future__ import annotations

import os

import pytest

from epochauth.denylist import STEP_PER_ADD, STEP_SLOTS, Denylist, fingerprint


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
        assert denylist.denies(f"id-{n // 2}", 50)  # while a growth moves the table, too
    assert len(denylist) == 5000
    assert all(denylist.denies(f"id-{n}", 50) for n in range(5000))
    denylist.prune(now=100)
    assert denylist.moving
    while denylist.moving:
        assert all(denylist.denies(f"id-{n}", 150) == (n % 2 == 0) for n in range(0, 5000, 7))
        denylist.step(1000)
    assert len(denylist) == 2500
    assert all(denylist.denies(f"id-{n}", 150) == (n % 2 == 0) for n in range(5000))


def test_no_add_waits_on_a_whole_rebuild():
    """Growth and pruning move a few slots with each add (and each step), never the whole table."""
    denylist = Denylist()
    for n in range(20_000):
        denylist.add(f"id-{n}", 10**10)
        old = denylist._old
        if old is not None:
            assert denylist._moved < old.capacity  # still moving: this add did not do all of it
    denylist.prune(now=0)
    capacity = denylist._old.capacity
    denylist.add("new", 10**10)
    assert denylist._moved == STEP_PER_ADD < capacity
    denylist.step()
    assert denylist._moved == STEP_PER_ADD + STEP_SLOTS
    assert all(denylist.denies(f"id-{n}", 1) for n in range(20_000)) and denylist.denies("new", 1)


def test_reserve_sizes_the_table_for_a_bulk_read_and_keeps_what_it_held():
    denylist = Denylist()
    denylist.add("before", 10**10)
    denylist.reserve(100_000)
    for n in range(100_000):
        denylist.add(f"{n:032x}", 10**10)
    assert not denylist.moving and denylist._table.capacity == 2**18  # no growth on the way
    assert denylist.denies("before", 1) and len(denylist) == 100_001


def test_a_batch_holds_what_adds_one_by_one_hold_even_while_the_table_moves():
    one_by_one, batched = Denylist(), Denylist()
    for n in range(3000):
        one_by_one.add(f"id-{n}", 100 + n)
    batched.add_many([(f"id-{n}", 100 + n) for n in range(1000)])
    batched.prune(now=0)  # a move runs while the next batches come
    batched.add_many([(f"id-{n}", 100 + n) for n in range(1000, 3000)])
    batched.add_many([("id-5", 50), ("id-6", 10**4)])  # an earlier expiry does not shorten
    for n in range(3000):
        assert (
            batched.denies(f"id-{n}", 99 + n) and not batched.denies(f"id-{n}", 100 + n) or n == 6
        )
    batched.step(None)
    assert batched.denies("id-6", 9999) and len(batched) == len(one_by_one) == 3000
    big = Denylist()
    big.add_many([(f"{n:032x}", 10**10) for n in range(100_000)])  # grown once, to fit all
    assert all(big.denies(f"{n:032x}", 1) for n in range(0, 100_000, 97))


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
    size = denylist._table.nbytes
    assert size / len(denylist) <= 48, size  # 12 bytes a slot, a table between 1/4 and 1/2 full


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_writes_its_own_copy():
    """gunicorn's pre-fork workers inherit the table; what one adds is not written into the others'."""
    denylist = Denylist(10)
    denylist.add("before-fork", 10**10)
    pid = os.fork()
    if pid == 0:  # the child: its writes must stay its own
        for n in range(2000):
            denylist.add(f"child-{n}", 10**10)
        os._exit(0 if denylist.denies("child-1", 1) and denylist.denies("before-fork", 1) else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert denylist.denies("before-fork", 1)
    assert not any(denylist.denies(f"child-{n}", 1) for n in range(2000))
    assert len(denylist) == 1
