"""Revocation: epochs for users, groups, communities and everyone, plus a denylist of token and session ids.

The truth lives in the database. Reads go through two cache levels so that a request costs no query:
process memory (re-validated every ``REVOCATION_REFRESH_INTERVAL``) over the shared Django cache
(Redis in production) over the database. A write updates all three, so it is visible at once in the
process that made it and, through the shared cache, in every other process within the refresh interval.

Nothing is ever assumed from a cache miss: a missing epoch or denylist is re-read from the database,
and when that fails too the request fails closed with :class:`~epochauth.snapshots.StateUnavailable`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, connections, transaction
from django.db.models import BigIntegerField, Func
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import (
    clock,
    communities,
    conf,
    denylist,
    exceptions,
    fingerprints,
    journal,
    listeners,
    models,
    push,
    signals,
    snapshots,
    tokens,
)

logger = logging.getLogger(__name__)


class EpochValue(NamedTuple):
    value: int
    not_before: float | None  # POSIX timestamp of the last bump
    #: A user's groups after the last change that took one away, and its POSIX time.
    groups: tuple[str, ...] = ()
    groups_at: float | None = None

    def groups_kept(self, claims: dict[str, Any], names: Iterable[str]) -> tuple[str, ...]:
        """Those of ``names`` (groups the token was minted with) that the user has kept since."""
        if self.groups_at is None or claims["iat"] >= self.groups_at:
            return tuple(names)
        return tuple(name for name in names if name in self.groups)


ZERO = EpochValue(0, None)


def _age(value: EpochValue) -> tuple[int, float]:
    """Which of two copies of one epoch row is newer: bumps raise the value, group changes the time."""
    return value.value, value.groups_at or 0.0


def _newest(held: EpochValue | None, other: EpochValue) -> EpochValue:
    """Two copies of one epoch row (or of two rows whose fingerprints collide) as one that refuses
    whatever either refuses: the higher value, the later bump, the later group record (of equal age,
    ``other``'s, the later read)."""
    if held is None:
        return other
    groups = other if _age(other) >= _age(held) else held
    not_before = max(held.not_before or 0.0, other.not_before or 0.0) or None
    return EpochValue(max(held.value, other.value), not_before, groups.groups, groups.groups_at)


def _epoch_name(kind: str, object_id: str) -> str:
    return f"{kind}\0{object_id}"


#: The largest epoch value the compact map holds (a 32-bit column); a larger one is held exactly.
_LARGEST_VALUE = 2**32 - 1


def _epoch_key(kind: str, object_id: str) -> str:
    return f"{snapshots.CACHE_PREFIX}epoch:{kind}:{object_id}"


#: How far back each read of the change feed reaches before the previous read: a change is stamped
#: (``updated_at``, ``revoked_at``) when its transaction writes it, and commits later; the clocks of
#: application servers differ a little too. Reading changes twice is harmless.
FEED_OVERLAP = 60.0
VERSION_KEY = f"{snapshots.CACHE_PREFIX}revocation:version"
#: How often expired denylist entries and epoch changes older than the window are dropped (each table
#: is moved into a new one a few thousand slots at a time, see :mod:`epochauth.fingerprints`).
PRUNE_INTERVAL = 600.0
#: What a process holds (the denylist, the epoch changes within the window) is read once its change
#: feed has started, by a thread of the process (whatever its traffic; a small state by the first use
#: at once), ``LOAD_CHUNK`` rows a query by primary key, each piece held under the lock at once. A
#: request waits for one piece at most, for the lock or the GIL: each query hands the GIL over (no
#: ``sleep(0)``, which on a busy machine gives the CPU away to other processes, a time slice a piece).
LOAD_CHUNK = 500
#: After a failed read the thread tries again in this many seconds, twice as long each time up to
#: ``LOAD_RETRY_MAX``.
LOAD_RETRY = 0.5
LOAD_RETRY_MAX = 30.0


class RevocationState:
    """Process-memory layer of the revocation state.

    The process holds every epoch row that changed within ``REVOCATION_WINDOW`` and every live denylist
    entry, and keeps them current from a change feed: each refresh interval it reads one version key
    from the shared cache, and only when that changed (or ``REVOCATION_RELOAD_INTERVAL`` passed) it
    reads the rows changed since its last read from the database. A token issued within the window
    is then checked without any I/O, whatever the number of users: an epoch row that is not held
    changed before the token existed. Older tokens read their epochs one by one (a bounded memo over
    the shared cache over the database).

    What is held is read once the feed has started, by a thread of the process (no request waits for
    it, and none has to come): the denylist, then the epoch changes within the window. Until then an
    id the table does not hold is looked up in the database, and epochs are read one by one. Rows
    committed meanwhile arrive through the feed like any change.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._push = push.Subscription(
            listeners.Callbacks(self._apply_pushed, self._read_soon, self.read_now, self.prune)
        )
        self.reset()
        # A fork copies the state between two pieces of the load (never half of one); the loading
        # thread is the parent's only: a child that has not read everything starts its own.
        os.register_at_fork(
            before=self._lock.acquire,
            after_in_parent=self._lock.release,
            after_in_child=self._forked,
        )

    def reset(self) -> None:
        with self._lock:
            self._reset()

    def _reset(self) -> None:
        self._push.stop()
        #: Changes with everything a token's revocation check reads in this process (never repeats, so
        #: that a result recorded before a reset never passes as current).
        self._generation = getattr(self, "_generation", 0) + 1
        #: REVOCATION_REFRESH_INTERVAL in seconds (a settings reload resets the state).
        self._interval = snapshots.refresh_interval()
        #: Epoch rows changed since ``_covered_from`` (POSIX time; None until they are all read): their
        #: value and last bump (POSIX time) by a fingerprint of kind and id, 20 bytes a slot. A row with
        #: a group record (a user who left a group: rare) is held exactly, in ``_exact``.
        self._epochs = fingerprints.FingerprintMap(("I", "d"))
        self._exact: dict[tuple[str, str], EpochValue] = {}
        #: Changes this process made whose transaction has not committed yet (dropped again when it
        #: rolls back; a fingerprint's slot cannot be taken back).
        self._pending: dict[tuple[str, str], EpochValue] = {}
        self._covered_from: float | None = None
        #: The epoch rows are read up to this primary key (those changed since ``_epochs_from``).
        self._epoch_cursor: int | None = 0
        self._epochs_from: datetime | None = None
        #: Denied ids and until when (POSIX time).
        self._denied = denylist.Denylist()
        #: The denylist is read up to this primary key; None once all of it is held.
        self._load_cursor: int | None = 0
        #: Who reads them (:meth:`_start_loading`): a load whose reader is no longer this one (after a
        #: reset) changes nothing.
        self._loader: object | None = None
        self._done = threading.Event()
        self._pruned_at = clock.monotonic()
        self._version: Any = None
        #: The number of the last outage-journal entry applied, and whether the journal held entries
        #: to replay at the last look (:mod:`epochauth.journal`).
        self._journal_seq = 0
        self._journal_waiting = False
        self._checked_at = float("-inf")
        self._read_at = float("-inf")
        #: Database time of the start of the last read of the feed.
        self._read_from: datetime | None = None
        self._memo: snapshots.BoundedMemo[tuple[str, str], tuple[EpochValue, float]] = (
            snapshots.BoundedMemo(lambda: conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE)
        )

    # -- the change feed --------------------------------------------------------------------------

    def _current(self) -> None:
        """Follow the feed when the refresh interval passed (at most one cache read per interval)."""
        if self._read_from is not None and clock.monotonic() - self._checked_at < self._interval:
            return
        with self._lock:
            now = clock.monotonic()
            if self._read_from is not None and now - self._checked_at < self._interval:
                return
            listener = self._push.ensure()
            version = self._follow_journal()
            if version is None:  # evicted or never set: start one, so that the next change differs
                snapshots.shared_cache_call("add", VERSION_KEY, uuid.uuid4().hex, None)
                version = snapshots.shared_cache_call("get", VERSION_KEY)
            reload = conf.epochauth_settings.REVOCATION_RELOAD_INTERVAL.total_seconds()
            unchanged = version is not None and version == self._version
            if self._read_from is None or not unchanged or now - self._read_at >= reload:
                try:
                    self._read_changes()
                    if self._journal_waiting:
                        _replay_soon()
                except DatabaseError as exc:
                    if not unchanged:
                        raise snapshots.StateUnavailable("revocation state unavailable") from exc
                    # Only the periodic re-read failed: keep what we have, try again later.
                    logger.warning(
                        "epochauth: cannot re-read the revocation state; keeping the copy"
                    )
                self._read_at = now
                self._prune_epochs()
                if listener is None and now - self._pruned_at >= PRUNE_INTERVAL:
                    self._prune_tables()
            # Without a listener, a prune (or growth) of the tables moves on here, a step an interval.
            self._denied.step()
            self._epochs.step()
            self._version = version
            self._checked_at = now

    def _follow_journal(self) -> Any:
        """The revocation version; with an outage journal (read in the same round trip), the entries
        this process has not applied yet, applied (the caller holds the lock)."""
        if not journal.enabled():
            return snapshots.shared_cache_call("get", VERSION_KEY)
        journal.new_generation_if_stale()
        found = snapshots.shared_cache_call("get_many", [VERSION_KEY, journal.SEQ]) or {}
        seq = found.get(journal.SEQ)
        if isinstance(seq, int) and seq != self._journal_seq:
            # A lower number: the counter was lost and numbers again from 1, read them all.
            after = self._journal_seq if seq > self._journal_seq else 0
            # Unreadable: raises, this process fails closed until it reads them.
            entries, self._journal_waiting = journal.entries_after(after)
            for entry in entries:
                self._apply_journaled(entry)
            self._journal_seq = seq
        return found.get(VERSION_KEY)

    def journal_replayed(self) -> None:
        """The outage journal is empty: no replay to start after the next read of the database."""
        self._journal_waiting = False

    def apply_journaled(self, entry: dict[str, Any]) -> None:
        """An outage-journal entry this process wrote, held at once."""
        with self._lock:
            self._apply_journaled(entry)

    def _apply_journaled(self, entry: dict[str, Any]) -> None:
        """Hold what an outage-journal entry ends: denied ids, a bumped epoch."""
        for jti, expires in entry.get("d", ()):
            self._deny(str(jti), float(expires))
        if entry.get("e"):
            kind, object_id = map(str, entry["e"])
            self._memo.discard((kind, object_id))
            self._merge(kind, object_id, EpochValue(int(entry["v"]), float(entry["at"])))

    def _read_changes(self) -> None:
        """Rows changed since the last read, merged into memory. The first read only marks where the
        feed starts: what changed before, :meth:`_start_loading` reads."""
        started = timezone.now()
        window = conf.epochauth_settings.REVOCATION_WINDOW
        if self._read_from is None:
            self._read_from, self._epochs_from = started, started - window
            return
        since = max(started - window, self._read_from - timedelta(seconds=FEED_OVERLAP))
        for row in models.Epoch.objects.filter(updated_at__gte=since):
            self._merge(row.kind, row.object_id, epoch_value(row))
        denied = models.RevokedToken.objects.filter(expires_at__gt=started, revoked_at__gte=since)
        for jti, expires in denied.values_list("jti", "expires_at").iterator(chunk_size=10_000):
            self._deny(jti, expires.timestamp())
        self._read_from = started

    @property
    def loaded(self) -> bool:
        return self._load_cursor is None and self._epoch_cursor is None

    def _start_loading(self) -> None:
        """The first use after the feed started reads a small state at once (one piece of each part),
        and starts a thread that reads the rest: a row committed after the piece that would have held
        it comes with the feed (whose overlap reaches back before the feed's start)."""
        with self._lock:
            if self._read_from is None or self._loader is not None:
                return
            loader = self._loader = object()
        try:
            while not self.loaded and self._load_piece(loader, first_use=True):
                pass
        except DatabaseError:
            # Ids the table lacks are looked up in the database meanwhile (or fail closed), and
            # epochs one by one; the thread tries again.
            logger.warning("epochauth: cannot read the revocation state yet", exc_info=True)
        if not self.loaded:
            threading.Thread(
                target=self._load, args=(loader,), name="epochauth-revocation-load", daemon=True
            ).start()

    def _load(self, loader: object) -> None:
        """The rest of the state, in the thread :meth:`_start_loading` started, until all is held or
        the state was reset; a failed read is tried again later."""
        delay = LOAD_RETRY
        try:
            while self._loader is loader and not self.loaded:
                try:
                    self._load_piece(loader)
                except DatabaseError:
                    logger.warning(
                        "epochauth: cannot read the revocation state yet; trying again in %.1f s",
                        delay,
                        exc_info=True,
                    )
                    connections.close_all()
                    time.sleep(delay)
                    delay = min(2 * delay, LOAD_RETRY_MAX)
                else:
                    delay = LOAD_RETRY
        finally:
            # This thread's own connection.
            connections.close_all()

    def _forked(self) -> None:
        """In a forked child (the lock was taken before the fork): the parent's loading thread is not
        here; the child's first use goes on from where the copy stands."""
        self._lock.release()
        if not self.loaded:
            self._loader, self._done = None, threading.Event()

    def wait_loaded(self, timeout: float) -> bool:
        """Wait until the whole state is held; False when ``timeout`` (seconds) passed first."""
        return self._done.wait(timeout)

    def _load_piece(self, loader: object, *, first_use: bool = False) -> bool:
        """Read and hold one piece of the denylist, or else of the epoch rows changed within the
        window; whether it ended its part (False: more to read, or the state was reset)."""
        if self._load_cursor is not None:
            return self._load_denied_piece(loader, first_use)
        return self._load_epoch_piece(loader)

    def _hold(
        self, loader: object, put: Callable[[], object], advance: Callable[[], bool]
    ) -> bool:
        """``put()`` (a piece's rows), then ``advance()`` (the part's cursor: whether the part ended),
        under the lock at once, unless ``loader`` no longer reads the state (then False)."""
        with self._lock:
            if self._loader is not loader:
                return False
            put()
            self._generation += 1
            return advance()

    def _load_denied_piece(self, loader: object, first_use: bool) -> bool:
        cursor = self._load_cursor
        assert cursor is not None
        if cursor == 0:
            # A table of about the right size at once: two index lookups, not a count (nor one
            # MIN/MAX query, which SQLite answers with a scan).
            keys = models.RevokedToken.objects.order_by("pk").values_list("pk", flat=True)
            low, high = keys.first(), keys.last()
            span = 0 if low is None or high is None else high - low + 1
            if first_use and span > LOAD_CHUNK:
                return False  # not a small table: all of it in the thread
            with self._lock:
                if self._loader is loader:
                    self._denied.reserve(span)
        rows = _live_denied_after(cursor)

        def advance() -> bool:
            self._load_cursor = rows[-1][0] if len(rows) == LOAD_CHUNK else None
            return self._load_cursor is None

        live = [(jti, until) for _pk, jti, until in rows]
        return self._hold(loader, lambda: self._denied.add_many(live), advance)

    def _load_epoch_piece(self, loader: object) -> bool:
        start = self._epochs_from
        assert start is not None
        rows = list(
            models.Epoch.objects.filter(pk__gt=self._epoch_cursor)
            .order_by("pk")
            .values_list("pk", "updated_at", "kind", "object_id", *EPOCH_FIELDS)[:LOAD_CHUNK]
        )
        changed = [
            (kind, object_id, _epoch_value(*fields))
            for _pk, updated, kind, object_id, *fields in rows
            if updated >= start
        ]
        # The outage journal's mirror learns every row, those changed before it existed too.
        journal.mirror_epochs(
            (kind, object_id, value) for _pk, _u, kind, object_id, value, *_f in rows
        )

        def put() -> None:
            for kind, object_id, value in changed:
                self._merge(kind, object_id, value)

        def advance() -> bool:
            if len(rows) == LOAD_CHUNK:
                self._epoch_cursor = rows[-1][0]
                return False
            # Every change within the window is held: tokens issued within it read no epoch (the
            # window first, so that ``loaded`` never holds before it).
            self._covered_from = start.timestamp()
            self._epoch_cursor = None
            self._done.set()
            return True

        return self._hold(loader, put, advance)

    def _read_soon(self) -> None:
        """The next request reads the database (the push channel was away: messages may be lost)."""
        self._checked_at = self._read_at = float("-inf")

    def read_now(self) -> None:
        """Read the changed rows in the calling thread (a push listener's, told only that the database
        changed), and the shared tables: the requests that follow read nothing."""
        try:
            with self._lock:
                if self._read_from is not None:
                    self._read_changes()
                    self._read_at = clock.monotonic()
            snapshots.reload_all()
        finally:
            # This thread's own connection: a listener that idles must not hold one open.
            connections.close_all()

    def _apply_pushed(self, change: dict[str, Any]) -> None:
        """A change another process committed, as :func:`announce` sent it."""
        try:
            with self._lock:
                if "d" in change:
                    jti, expires = change["d"]
                    self._deny(str(jti), float(expires))
                elif "e" in change:
                    kind, object_id, *value = change["e"]
                    value = EpochValue(
                        int(value[0]), value[1], tuple(map(str, value[2])), value[3]
                    )
                    self._memo.discard((str(kind), str(object_id)))
                    self._merge(str(kind), str(object_id), value)
            if "s" in change:
                snapshots.expire_snapshot(str(change["s"]))
        except (TypeError, ValueError):
            logger.warning("epochauth: ignoring a revocation push message of an unknown shape")

    def _merge(self, kind: str, object_id: str, value: EpochValue) -> None:
        """Hold a committed epoch row. Epochs only grow: an older copy never lowers one (the map keeps
        the larger value and the later bump; of equal age, the later read wins)."""
        if value.groups_at is None and value.value <= _LARGEST_VALUE:
            if value.value or value.not_before:
                self._epochs.put(
                    _epoch_name(kind, object_id), (value.value, value.not_before or 0.0)
                )
        else:
            held = self._exact.get((kind, object_id))
            if held is None or _age(value) >= _age(held):
                self._exact[(kind, object_id)] = value
        self._generation += 1

    def _deny(self, jti: str, expires_at: float) -> None:
        """Hold a denied id (the caller holds the lock)."""
        self._denied.add(jti, expires_at)
        self._generation += 1

    def generation(self) -> int | None:
        """After following the feed: a number that changes whenever anything a token's revocation
        check reads changes in this process, so that a check's result holds while it stays the same
        (:func:`generation`). None while the state is being read: ids it lacks are looked up in the
        database meanwhile, a result of no use later."""
        self._current()
        return self._generation if self.loaded else None

    def _held(self, kind: str, object_id: str) -> EpochValue | None:
        """What this process holds of an epoch row, None when nothing (changed within the window)."""
        row = self._epochs.get(_epoch_name(kind, object_id))
        found = None if row is None else EpochValue(int(row[0]), row[1] or None)
        if self._exact or self._pending:  # rarely: a group record, or a change not committed yet
            for exact in (self._exact, self._pending):
                value = exact.get((kind, object_id))
                if value is not None:
                    found = _newest(found, value)
        return found

    def known_epoch(self, kind: str, object_id: str) -> int:
        """The largest value of an epoch this process holds or remembers, reading nothing (0 when
        it knows none): a value the next bump must exceed, when the database cannot say."""
        remembered = self._memo.get((kind, object_id))
        held = self._held(kind, object_id)
        return max(
            remembered[0].value if remembered is not None else 0,
            held.value if held is not None else 0,
        )

    def _prune_epochs(self) -> None:
        """Forget epoch changes older than the window (with each read of the database, not each
        interval; the compact map with the denylist, every ``PRUNE_INTERVAL``): no token within it
        predates them."""
        start = time.time() - conf.epochauth_settings.REVOCATION_WINDOW.total_seconds()
        if self._covered_from is not None and start > self._covered_from:
            # Holding more than the window is harmless: only what it covers must be held.
            self._covered_from = start
            for exact in (self._exact, self._pending):
                for key in [key for key, value in exact.items() if _changed_at(value) < start]:
                    del exact[key]

    def prune(self) -> None:
        """Forget denied ids whose tokens expired anyway, every ``PRUNE_INTERVAL``: in the push
        listener's thread when there is one (which also moves the table on, a step at a time, so that
        no request waits on the lock for long), else with a read of the database."""
        if clock.monotonic() - self._pruned_at >= PRUNE_INTERVAL:
            with self._lock:
                self._prune_tables()
        while self._denied.moving or self._epochs.moving:
            with self._lock:
                self._denied.step()
                self._epochs.step()

    def _prune_tables(self) -> None:
        """Start moving the denylist and the epoch map into new tables without what expired."""
        now = time.time()
        self._denied.prune(now)
        if self._covered_from is not None:
            self._epochs.prune(now - conf.epochauth_settings.REVOCATION_WINDOW.total_seconds())
        self._pruned_at = clock.monotonic()

    # -- epochs ---------------------------------------------------------------------------------

    def epoch(self, kind: str, object_id: str, issued_at: float | None = None) -> EpochValue:
        """The epoch row as far as a token issued at ``issued_at`` (POSIX time) is concerned."""
        self._current()
        covered = self._covered_from
        if issued_at is not None and covered is not None and issued_at >= covered + FEED_OVERLAP:
            return self._held(kind, object_id) or ZERO
        return self._epoch_by_key(kind, object_id)

    def _epoch_by_key(self, kind: str, object_id: str) -> EpochValue:
        """For what the window does not cover: one row, memoised, over the shared cache."""
        now = clock.monotonic()
        local = self._memo.get((kind, object_id))
        if local is not None and now - local[1] < snapshots.refresh_interval():
            return local[0]
        key = _epoch_key(kind, object_id)
        found = snapshots.shared_cache_call("get", key)
        if found is None:
            found = self._load_epoch(kind, object_id)
            snapshots.shared_cache_call(
                "add",
                key,
                tuple(found),
                conf.epochauth_settings.EPOCH_CACHE_TIMEOUT.total_seconds(),
            )
        found = EpochValue(*found)
        # Epochs only grow: a lagging cache never lowers what we saw.
        for held in (local[0] if local is not None else None, self._held(kind, object_id)):
            if held is not None:
                found = _newest(found, held)
        self._memo.put((kind, object_id), (found, now))
        return found

    @staticmethod
    def _load_epoch(kind: str, object_id: str) -> EpochValue:
        try:
            row = models.Epoch.objects.filter(kind=kind, object_id=object_id).first()
        except DatabaseError as exc:
            raise snapshots.StateUnavailable("revocation state unavailable") from exc
        return ZERO if row is None else epoch_value(row)

    def remember_epoch(self, kind: str, object_id: str, value: EpochValue) -> None:
        """Raises StateUnavailable when other processes could go on reading the old epoch."""
        with self._lock:
            self._pending[(kind, object_id)] = _newest(self._pending.get((kind, object_id)), value)
            self._generation += 1
        self._memo.put((kind, object_id), (value, clock.monotonic()))
        timeout = conf.epochauth_settings.EPOCH_CACHE_TIMEOUT.total_seconds()
        if not snapshots.publish(_epoch_key(kind, object_id), tuple(value), timeout):
            raise snapshots.StateUnavailable(
                "the new epoch could not be published to the shared cache"
            )
        # Ahead of the commit: a mirror ahead of a change that rolled back only makes an outage's
        # bump larger.
        if not journal.mirror_epochs([(kind, object_id, value.value)]):
            raise snapshots.StateUnavailable("the new epoch could not be mirrored")
        transaction.on_commit(lambda: self._committed(kind, object_id, value))

    def _committed(self, kind: str, object_id: str, value: EpochValue) -> None:
        with self._lock:
            self._merge(kind, object_id, value)
            pending = self._pending.get((kind, object_id))
            # Unless a later change (of this transaction or another one) is pending still.
            if pending is not None and _age(pending) <= _age(value):
                del self._pending[(kind, object_id)]
        announce({"e": [kind, object_id, *value]})

    def forget_epoch(self, kind: str, object_id: str) -> None:
        """After a change rolled back: memory and the shared cache must not stay ahead of the row."""
        with self._lock:
            self._pending.pop((kind, object_id), None)
            self._generation += 1
        self._memo.discard((kind, object_id))
        snapshots.shared_cache_call("delete", _epoch_key(kind, object_id))

    # -- denylist -------------------------------------------------------------------------------

    def is_denied(self, ids: tuple[str | None, ...]) -> bool:
        self._current()
        if self._loader is None:
            # Here, not in epoch(): once per token, whatever the number of its epochs.
            self._start_loading()
        # Read before the table: once the load has ended, the table holds every live row.
        loading = self._load_cursor is not None
        wanted = [i for i in ids if i]
        wall, denies = time.time(), self._denied.denies
        for denied_id in wanted:  # a loop, not any() over a generator: this runs per new token
            if denies(denied_id, wall):
                return True
        return loading and bool(wanted) and _denied_in_database(wanted)

    def deny(self, jti: str, expires_at: float) -> None:
        """Visible in this process at once; in the others after commit, through the feed."""
        with self._lock:
            self._deny(jti, expires_at)
        transaction.on_commit(lambda: announce({"d": [jti, expires_at]}))


class _Seconds(Func):
    """A time as POSIX seconds rounded up, computed by the database: a million denylist rows are read
    without a ``datetime`` object each (parsed, made aware, converted back)."""

    output_field = BigIntegerField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        # Stored as text in UTC; whole seconds plus one is never early (an entry may end 1 s late).
        template = "CAST(strftime('%%%%s', %(expressions)s) AS INTEGER) + 1"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_mysql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(CEIL(UNIX_TIMESTAMP(%(expressions)s)) AS SIGNED)"
        return self.as_sql(compiler, connection, template=template, **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        template = "CAST(CEIL(EXTRACT(EPOCH FROM %(expressions)s)) AS BIGINT)"
        return self.as_sql(compiler, connection, template=template, **extra)


def _live_denied_after(pk: int) -> list[tuple[int, str, int]]:
    """``LOAD_CHUNK`` denylist rows after primary key ``pk`` that have not expired, by key: the key,
    the id and the expiry in POSIX seconds (rounded up)."""
    return list(
        models.RevokedToken.objects.filter(pk__gt=pk, expires_at__gt=timezone.now())
        .order_by("pk")
        .values_list("pk", "jti", _Seconds("expires_at"))[:LOAD_CHUNK]
    )


def _denied_in_database(ids: list[str]) -> bool:
    """While the denylist is being read: one indexed query for what the table does not hold yet."""
    try:
        return models.RevokedToken.objects.filter(
            jti__in=ids, expires_at__gt=timezone.now()
        ).exists()
    except DatabaseError as exc:
        raise snapshots.StateUnavailable("the denylist could not be read") from exc


def _changed_at(value: EpochValue) -> float:
    return max(value.not_before or 0.0, value.groups_at or 0.0)


#: Starts the replay of the outage journal into the database, in a thread (no request waits): set by
#: :mod:`epochauth.outage`, which builds on this module (imported by the app's ``ready``).
replay_journal: Callable[[], None] | None = None


def _replay_soon() -> None:
    if replay_journal is not None:
        replay_journal()


def announce(change: dict[str, Any]) -> None:
    """Tell every process that the revocation state changed: the change itself over the push channel
    (applied within milliseconds), and a new version, which makes them read the feed within an interval."""
    push.publish(change)
    if not snapshots.publish(VERSION_KEY, uuid.uuid4().hex, None):
        logger.error(
            "epochauth: the revocation state changed but the shared cache could not say so; other "
            "processes see it within REVOCATION_RELOAD_INTERVAL"
        )


state = RevocationState()

conf.process_cache(state.reset)


#: The fields of an epoch row that make its :class:`EpochValue`, in order.
EPOCH_FIELDS = ("value", "not_before", "groups", "groups_changed_at")


def epoch_value(row: models.Epoch) -> EpochValue:
    return _epoch_value(*(getattr(row, name) for name in EPOCH_FIELDS))


def _epoch_value(
    value: int, not_before: datetime | None, groups: list[str] | None, groups_at: datetime | None
) -> EpochValue:
    def timestamp(moment: datetime | None) -> float | None:
        return moment.timestamp() if moment is not None else None

    return EpochValue(value, timestamp(not_before), tuple(groups or ()), timestamp(groups_at))


# -- reads used by authentication --------------------------------------------------------------


def is_loaded() -> bool:
    """Whether this process holds the whole revocation state yet: from its first use, a thread of
    the process reads the denylist and the epoch changes within the window (meanwhile ids it lacks
    are looked up in the database, epochs one by one). For health checks and the bench."""
    return state.loaded


def wait_loaded(timeout: float) -> bool:
    """Wait until :func:`is_loaded` (once something used the state); False when ``timeout`` (seconds)
    passed first. For tests, the bench and a server that warms up before it takes traffic."""
    return state.wait_loaded(timeout)


def current_epoch(kind: str, object_id: str, issued_at: float | None = None) -> EpochValue:
    """The epoch of a user, group, identity or everyone, for a token issued at ``issued_at`` (POSIX
    time): changes made before then may read as :data:`ZERO`. Without it: the row as it is."""
    return state.epoch(kind, object_id, issued_at)


def generation() -> int | None:
    """A number that stays the same while nothing that decides whether a token is revoked changes in
    this process (after following the feed, as every check does); None while the process is still
    reading its state. A token that passed its checks at one value passes them again at that value:
    the bearer memo records it, and a repeated token costs no revocation check."""
    return state.generation()


def is_revoked(*ids: str | None) -> bool:
    """Whether any of the given token/session ids is on the denylist."""
    return state.is_denied(ids)


def check_local_claims(claims: dict[str, Any], user_id: str) -> tuple[str, ...]:
    """Refuse one of our tokens whose id, session or refresh-token family is denied, whose epochs (the
    user's, everyone's, its group's, its community's) are behind, or whose selected group the user
    has left; returns the groups it still confers."""
    issued = claims["iat"]
    community = communities.of_issuer(claims["iss"])
    user = current_epoch(models.Epoch.Kind.USER, user_id, issued)
    behind = (
        claims[tokens.CLAIM_EPOCH] < user.value
        or claims[tokens.CLAIM_GLOBAL_EPOCH]
        < current_epoch(models.Epoch.Kind.GLOBAL, "", issued).value
        or (
            tokens.CLAIM_GROUP_ID in claims
            and claims.get(tokens.CLAIM_GROUP_EPOCH, -1)
            < current_epoch(
                models.Epoch.Kind.GROUP, str(claims[tokens.CLAIM_GROUP_ID]), issued
            ).value
        )
        or (
            # A community's token (verification checked its vo_epoch); a site token's "vo" is none.
            community is not None
            and claims[tokens.CLAIM_COMMUNITY_EPOCH]
            < current_epoch(models.Epoch.Kind.COMMUNITY, community.slug, issued).value
        )
    )
    if behind or is_revoked(
        claims.get("jti"), claims.get(tokens.CLAIM_SESSION), claims.get(tokens.CLAIM_TOKEN_FAMILY)
    ):
        raise exceptions.InvalidToken(_("The access token was revoked"))
    if tokens.CLAIM_GROUP in claims and not user.groups_kept(claims, [claims[tokens.CLAIM_GROUP]]):
        raise exceptions.InvalidToken(_("The access token's group was left"))
    return user.groups_kept(claims, tokens.group_names(claims))


def denylist_id(claims: dict[str, Any]) -> str | None:
    """Denylist name of a token: our jti, or ``iss#jti`` for an external one (unique only per issuer)."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti:
        return None
    return jti if communities.is_ours(claims["iss"]) else f"{claims['iss']}#{jti}"


def check_external_claims(
    claims: dict[str, Any],
    user_id: str,
    identity: str,
    *,
    issued: float | None = None,
    denied: tuple[str, ...] = (),
) -> None:
    """External tokens carry no epochs of ours: refuse those issued before a bump (iat cutoff).

    ``issued``: when what the token stands for began, if earlier than its ``iat`` (a token minted from
    a refresh token: that refresh token's ``iat``); ``denied``: more denylist ids that end it.
    """
    if is_revoked(denylist_id(claims), *denied):
        raise exceptions.InvalidToken(_("The access token was revoked"))
    if issued is None:
        issued = claims["iat"]
    for kind, object_id in (
        (models.Epoch.Kind.USER, user_id),
        (models.Epoch.Kind.IDENTITY, identity),
        (models.Epoch.Kind.GLOBAL, ""),
    ):
        not_before = current_epoch(kind, object_id, issued).not_before
        if not_before is not None and issued < not_before:
            raise exceptions.InvalidToken(_("The access token was revoked"))


# -- writes ------------------------------------------------------------------------------------


@contextmanager
def _locked_epoch(kind: str, object_id: str) -> Iterator[models.Epoch]:
    """The epoch row, locked, to change in the block; then saved and published while the lock is held
    (so concurrent writers reach the cache in order), or dropped from the cache if anything failed."""
    try:
        with transaction.atomic():
            epoch, _ = models.Epoch.objects.select_for_update().get_or_create(
                kind=kind, object_id=object_id
            )
            yield epoch
            epoch.save()
            state.remember_epoch(kind, object_id, epoch_value(epoch))
    except BaseException:
        # The cache must not stay ahead of a change that rolled back.
        state.forget_epoch(kind, object_id)
        raise


def bump_epoch(
    kind: str,
    object_id: str,
    *,
    actor: Any = None,
    reason: str = "",
    at: datetime | None = None,
    floor: int = 0,
) -> EpochValue:
    """Invalidate every earlier token of a user, a group (``object_id`` = its pk) or everyone.

    ``at`` and ``floor``: a bump made at ``at`` during a database outage, to at least ``floor``
    (:mod:`epochauth.outage`), replayed now: nothing happens if the row holds that value or more and
    a bump at ``at`` or later (this one, replayed already: every token it ended is behind still)."""
    now = at or timezone.now()
    ended: list[models.Session] = []
    with _locked_epoch(kind, object_id) as epoch:
        if (
            at is not None
            and epoch.value >= floor
            and epoch.not_before is not None
            and epoch.not_before >= at
        ):
            return epoch_value(epoch)
        epoch.value = max(epoch.value + 1, floor)
        epoch.not_before = now
        epoch.bumped_by_id = getattr(actor, "pk", None)
        epoch.reason = reason[:255]
        if kind == models.Epoch.Kind.USER:
            live = models.Session.objects.select_for_update().filter(
                user_id=object_id, revoked_at__isnull=True
            )
            if at is not None:  # sessions begun after the outage's bump keep on
                live = live.filter(created_at__lte=at)
            ended = list(live)
            live.update(revoked_at=now)
        signals.epoch_bumping.send(
            sender=models.Epoch, kind=kind, object_id=object_id, actor=actor, reason=reason
        )
        models.AuditEvent.objects.create(
            at=now,
            action="epoch_bumped",
            user_id=object_id if kind == models.Epoch.Kind.USER else None,
            actor_id=epoch.bumped_by_id,
            detail={
                "kind": kind,
                "object_id": object_id,
                "epoch": epoch.value,
                "reason": epoch.reason,
            },
        )
    signals.epoch_bumped.send(
        sender=models.Epoch,
        kind=kind,
        object_id=object_id,
        epoch=epoch.value,
        actor=actor,
        reason=reason,
    )
    for session in ended:  # the bump's audit event stands for theirs
        session.revoked_at = now
        signals.session_revoked.send(
            sender=models.Session, session=session, reason="epoch_bumped", actor=actor
        )
    return epoch_value(epoch)


def record_groups(
    user_id: str, groups: Iterable[str], *, reason: str = "", only_update: bool = False
) -> None:
    """Call before a change that takes groups away from a user: tokens minted until now confer only
    ``groups`` (what the user keeps), the user's other access stays; a refresh mints current groups.

    ``only_update``: after the user joined a group, list ``groups`` in an existing record, keeping its
    time (nothing to record when no group was ever left).
    """
    if (
        only_update
        and not models.Epoch.objects.filter(
            kind=models.Epoch.Kind.USER, object_id=user_id, groups_changed_at__isnull=False
        ).exists()
    ):
        return
    with _locked_epoch(models.Epoch.Kind.USER, user_id) as epoch:
        epoch.groups = sorted(set(groups))
        if only_update:
            return
        epoch.groups_changed_at = timezone.now()
        models.AuditEvent.objects.create(
            action="groups_changed",
            user_id=user_id,
            detail={"groups": epoch.groups, "reason": reason[:255]},
        )
    signals.groups_changed.send(
        sender=models.Epoch, user_id=user_id, groups=epoch.groups, reason=reason
    )


class Target(NamedTuple):
    """Whose tokens a bump ends: an epoch and a label for people."""

    kind: str
    object_id: str
    label: str


class NoSuchTarget(LookupError):
    pass


def find_target(
    *,
    user: str | None = None,
    group: str | None = None,
    issuer: str | None = None,
    subject: str | None = None,
    community: str | None = None,
) -> Target:
    """The epoch of a username, a group name, an external identity (``issuer`` and ``subject``: its
    tokens only, not its user's local ones) or a community (its slug: every token of it); everyone's
    when nothing is named. Raises :class:`NoSuchTarget` with a readable message."""
    if community is not None:
        if communities.get(community) is None:
            raise NoSuchTarget(_("No such community %(name)s") % {"name": community})
        return Target(models.Epoch.Kind.COMMUNITY, community, f"community {community}")
    if user is not None:
        model = get_user_model()
        pk = (
            model._default_manager.filter(**{model.USERNAME_FIELD: user})
            .values_list("pk", flat=True)
            .first()
        )
        kind, label = models.Epoch.Kind.USER, f"user {user}"
        missing = _("No such user %(name)s") % {"name": user}
    elif group is not None:
        pk = Group.objects.filter(name=group).values_list("pk", flat=True).first()
        kind, label = models.Epoch.Kind.GROUP, f"group {group}"
        missing = _("No such group %(name)s") % {"name": group}
    elif issuer is not None or subject is not None:
        label = f"identity {subject} of {issuer}"
        if (
            issuer is None
            or subject is None
            or not models.Identity.objects.filter(issuer=issuer, subject=subject).exists()
        ):
            raise NoSuchTarget(
                _("No such identity %(subject)s of %(issuer)s")
                % {"subject": subject, "issuer": issuer}
            )
        return Target(models.Epoch.Kind.IDENTITY, models.identity_digest(issuer, subject), label)
    else:
        return Target(models.Epoch.Kind.GLOBAL, "", "everyone")
    if pk is None:
        raise NoSuchTarget(missing)
    return Target(kind, str(pk), label)


def deny_once(jti: str, expires_at: datetime, *, reason: str = "") -> bool:
    """Deny an id that is not denied yet (a single-use token being spent): whether this call did.
    Call in the transaction that spends it, so that of two concurrent calls only one succeeds."""
    created = models.RevokedToken.objects.get_or_create(
        jti=jti, defaults={"expires_at": expires_at, "reason": reason[:255]}
    )[1]
    if created:
        state.deny(jti, expires_at.timestamp())
    return created


def revoke_id(jti: str, expires_at: datetime, *, reason: str = "") -> None:
    """Deny one token id (or session id) until ``expires_at``, when nothing it names is valid anyway."""
    models.RevokedToken.objects.update_or_create(
        jti=jti,
        defaults={"expires_at": expires_at, "reason": reason[:255], "revoked_at": timezone.now()},
    )
    state.deny(jti, expires_at.timestamp())


def purge_expired() -> int:
    """Delete denylist rows whose tokens expired anyway; returns how many."""
    deleted, _ = models.RevokedToken.objects.filter(expires_at__lte=timezone.now()).delete()
    return deleted
