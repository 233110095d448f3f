"""A small database table held in process memory, kept current through a version key in the shared cache.

Each process re-reads the version key at most every ``REVOCATION_REFRESH_INTERVAL``; a writer sets a
new random version after its transaction commits, so every process reloads within that interval. A
reader that loaded from the database just before a write still sees the new version next time, so no
write is lost to a race. With no usable cache, the table is re-read from the database each interval.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar, cast

from django.core.cache import caches
from django.db import DatabaseError, transaction

from . import clock, conf, push

logger = logging.getLogger(__name__)

CACHE_PREFIX = "epochauth:"
T = TypeVar("T")


K = TypeVar("K")


class BoundedMemo(Generic[K, T]):
    """A per-process memo of at most ``limit()`` entries (0 = off); the oldest entry goes first.

    For values that are cheap to get again (a signature check, a shared-cache read), so that a
    long-running process does not grow with every token or identity it ever saw.
    """

    def __init__(self, limit: Callable[[], int]) -> None:
        self._limit = limit
        # An OrderedDict, not a dict: taking the oldest entry off a full dict's front again and again
        # makes ``next(iter(...))`` step over every slot freed since its last resize (2-3 µs a put in a
        # memo of 10,000, on every new token); ``popitem(last=False)`` is O(1).
        self._data: OrderedDict[K, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> T | None:
        return self._data.get(key)

    def put(self, key: K, value: T) -> None:
        with self._lock:
            limit = self._limit()
            data = self._data
            # A refreshed entry becomes the newest.
            data.pop(key, None)
            while data and len(data) >= limit:
                data.popitem(last=False)
            if limit > 0:
                data[key] = value

    def discard(self, key: K) -> None:
        with self._lock:
            self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


class StateUnavailable(Exception):
    """Neither the cache nor the database could be read: callers fail closed."""


def _shared_cache(method: str, *args: Any, **kwargs: Any) -> tuple[bool, Any]:
    """(whether the call reached the cache, its answer)."""
    try:
        return True, getattr(caches[conf.epochauth_settings.CACHE_ALIAS], method)(*args, **kwargs)
    except Exception:  # each cache backend (redis, memcached ...) raises its own connection errors
        logger.warning("epochauth: shared cache unavailable for %s", method, exc_info=True)
        return False, None


def shared_cache_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the shared cache; an unreachable cache reads as a miss, never as an answer."""
    return _shared_cache(method, *args, **kwargs)[1]


def required_cache_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the shared cache where no answer is no option (the login throttle's counters)."""
    reached, value = _shared_cache(method, *args, **kwargs)
    if not reached:
        raise StateUnavailable(f"the shared cache is unavailable for {method}")
    return value


def publish(key: str, value: Any, timeout: float | None) -> bool:
    """Write state other processes must see: the value set or, failing that, the key deleted (readers
    then go to the database). False when neither reached the cache: the old value may still be read."""
    return _shared_cache("set", key, value, timeout)[0] or _shared_cache("delete", key)[0]


def refresh_interval() -> float:
    return conf.epochauth_settings.REVOCATION_REFRESH_INTERVAL.total_seconds()


class SharedSnapshot(Generic[T]):
    """``get()`` returns the table as ``load()`` built it, at most one refresh interval old."""

    def __init__(
        self, name: str, load: Callable[[], T], on_change: Callable[[], None] | None = None
    ) -> None:
        self.name = name
        self.version_key = f"{CACHE_PREFIX}{name}:version"
        self.data_key = f"{CACHE_PREFIX}{name}"
        self._load = load
        #: Called when a read finds the table changed (what was derived from the old one is stale).
        self._on_change = on_change
        self._lock = threading.Lock()
        self.reset()
        _snapshots.add(self)

    def reset(self) -> None:
        self._value: T | None = None
        self._version: str | None = None
        self._checked_at = float("-inf")
        self._loaded_at = float("-inf")

    def get(self) -> T:
        value = self._value
        if value is None or clock.monotonic() - self._checked_at >= refresh_interval():
            with self._lock:
                now = clock.monotonic()
                if now - self._checked_at >= refresh_interval() or self._value is None:
                    self._refresh()
                    self._checked_at = now
            # _refresh() raises StateUnavailable rather than leave no value.
            value = cast(T, self._value)
        return value

    def _refresh(self) -> None:
        version = shared_cache_call("get", self.version_key)
        if version is None:
            shared_cache_call("add", self.version_key, uuid.uuid4().hex, None)
            version = shared_cache_call("get", self.version_key)
        now = clock.monotonic()
        current = version is not None and version == self._version and self._value is not None
        # An announcement can be lost (the cache refused it, the writer died after its commit): an
        # unchanged version is trusted for REVOCATION_RELOAD_INTERVAL, then the database is read again.
        due = (
            now - self._loaded_at
            >= conf.epochauth_settings.REVOCATION_RELOAD_INTERVAL.total_seconds()
        )
        if current and not due:
            return
        if not current and version is not None:
            shared = shared_cache_call("get", self.data_key)
            # Loaded by whoever saw this version first.
            if shared is not None and shared[0] == version:
                self._install(shared[1], version, now)
                return
        try:
            value = self._load()
        except DatabaseError as exc:
            if current:  # only the periodic re-read failed: keep what we have, try again later
                logger.warning(
                    "epochauth: cannot re-read %s; keeping the cached copy", self.data_key
                )
                self._loaded_at = now
                return
            raise StateUnavailable(f"cannot read {self.data_key}") from exc
        if version is not None:
            shared_cache_call("set", self.data_key, (version, value), None)
        self._install(value, version, now)

    def _install(self, value: T, version: str | None, now: float) -> None:
        previous = self._value
        self._value, self._version, self._loaded_at = value, version, now
        if previous is not None and value != previous and self._on_change is not None:
            self._on_change()

    def expire(self) -> None:
        """The next read checks the version key and, when that is unchanged (no shared cache), reads
        the database (another process announced a change)."""
        self._checked_at = self._loaded_at = float("-inf")

    def changed(self) -> None:
        """Call after writing the table: every process reloads it, this one on its next read, the
        others on theirs when the push channel carries the news (else within a refresh interval)."""

        def announce() -> None:
            if not publish(self.version_key, uuid.uuid4().hex, None):
                logger.error(
                    "epochauth: %s changed but the shared cache could not say so; other processes "
                    "see it within REVOCATION_RELOAD_INTERVAL",
                    self.data_key,
                )
            self.expire()
            push.publish({"s": self.name})

        transaction.on_commit(announce)


#: Every shared snapshot, so that a pushed ``{"s": name}`` expires the ones of that name.
_snapshots: weakref.WeakSet[SharedSnapshot[Any]] = weakref.WeakSet()


def reload_all() -> None:
    """Read again every table a process holds (the database changed, nobody said which table)."""
    for snapshot in list(_snapshots):
        if snapshot._value is not None:
            snapshot.expire()
            snapshot.get()


def expire_snapshot(name: str) -> None:
    """A change another process announced over the push channel (:meth:`SharedSnapshot.changed`)."""
    for snapshot in list(_snapshots):
        if snapshot.name == name:
            snapshot.expire()
