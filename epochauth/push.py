"""Push of revocation changes between processes: over Redis pub/sub when the shared cache is Redis, or
through the database (``REVOCATION_PUSH = "database"``, :mod:`epochauth.dbpush`).

A writer publishes each change after its transaction commits; every process runs one listener thread
that applies the change to its memory within milliseconds. Push is only the fast path: a message can
be lost (a listener reconnecting, a writer dying after its commit), so the version key and the
database stay the net (see :mod:`epochauth.revocation`). A listener that subscribes again asks for a
read of the database, since messages may have been missed while it was away.

Fork-safe: a listener belongs to the process that started it; a forked child (gunicorn's pre-fork
workers) starts its own on first use. Django's autoreloader runs the server in a new process anyway.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

from django.core.cache import caches

from . import conf, dbpush, listeners

logger = logging.getLogger(__name__)

CHANNEL = "epochauth:revocation"
#: How long the first use waits for the subscription (longer: its listener asks for a read later).
SUBSCRIBE_SECONDS = 1.0


def shared_redis() -> tuple[Any, Any] | None:
    """The redis-py client behind the shared cache and the cache itself (whose ``make_key`` names
    keys and channels with its prefix, so that sites sharing a Redis do not meet), or None when the
    shared cache is not Django's Redis cache."""
    try:
        cache = caches[conf.epochauth_settings.CACHE_ALIAS]
    except Exception:  # an unknown alias is check E006
        return None
    backend = getattr(cache, "_cache", None)
    # The client of django.core.cache.backends.redis.RedisCache.
    get_client = getattr(backend, "get_client", None)
    if get_client is None or not type(cache).__module__.startswith(
        "django.core.cache.backends.redis"
    ):
        return None
    return get_client(write=True), cache


def _redis_client() -> tuple[Any, str] | None:
    """The client and the channel name, or None without Redis push."""
    if conf.epochauth_settings.REVOCATION_PUSH is not True:
        return None
    found = shared_redis()
    return None if found is None else (found[0], found[1].make_key(CHANNEL))


def publish(message: dict[str, Any]) -> bool:
    """Send one change to every listener; False when there is no push channel or it failed."""
    if conf.epochauth_settings.REVOCATION_PUSH == "database":
        return dbpush.publish(message)
    found = _redis_client()
    if found is None:
        return False
    client, channel = found
    try:
        client.publish(channel, json.dumps(message, separators=(",", ":")))
    except Exception:  # redis raises its own connection errors; polling delivers the change
        logger.warning("epochauth: could not push a revocation change", exc_info=True)
        return False
    return True


class RedisListener(listeners.Listener):
    """Subscribes to the Redis channel and hands each message to ``apply``."""

    def __init__(self, client: Any, channel: str, callbacks: listeners.Callbacks) -> None:
        super().__init__(channel, callbacks)
        self.client = client

    def _listen(self, resync: bool) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.subscribed.set()
            if resync:
                self.callbacks.resync()
            while not self.stopped.is_set():
                message = pubsub.get_message(timeout=listeners.POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    self._deliver(message["data"])
                elif message is None:
                    self.callbacks.idle()  # upkeep off the request path
        finally:
            pubsub.close()


class Subscription:
    """The one listener of this process for the current settings, started on first use."""

    def __init__(self, callbacks: listeners.Callbacks) -> None:
        self._callbacks = callbacks
        self._listener: listeners.Listener | None = None
        self._lock = threading.Lock()

    def ensure(self) -> listeners.Listener | None:
        """Start (or restart, after a fork or a settings change) the listener; None without push."""
        listener = self._listener
        if listener is not None and listener.pid == os.getpid() and listener.is_alive():
            return listener
        with self._lock:
            new = self._new_listener()
            listener = self._listener
            if (
                listener is not None
                and listener.pid == os.getpid()
                and listener.is_alive()
                and new is not None
                and listener.channel == new.channel
            ):
                return listener
            self.stop()
            if new is None:
                return None
            self._listener = new
            self._listener.start()
            # The caller reads the database next: subscribed first, no change falls between the two.
            self._listener.subscribed.wait(SUBSCRIBE_SECONDS)
            return self._listener

    def _new_listener(self) -> listeners.Listener | None:
        """A listener for the current settings (not started), None without push."""
        if conf.epochauth_settings.REVOCATION_PUSH == "database":
            return dbpush.listener(self._callbacks)
        found = _redis_client()
        return None if found is None else RedisListener(found[0], found[1], self._callbacks)

    def stop(self) -> None:
        """Stop this process's listener (settings changed); a forked child's copy is not running."""
        listener, self._listener = self._listener, None
        if listener is not None and listener.pid == os.getpid():
            listener.stopped.set()
