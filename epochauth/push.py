"""Push of revocation changes between processes over Redis pub/sub, when the shared cache is Redis.

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
from collections.abc import Callable
from typing import Any

from django.core.cache import caches

from . import conf

logger = logging.getLogger(__name__)

CHANNEL = "epochauth:revocation"
#: How long the listener waits for a message before it checks whether it should stop.
POLL_SECONDS = 1.0
#: How long the first use waits for the subscription (longer: its listener asks for a read later).
SUBSCRIBE_SECONDS = 1.0
#: After a failed connection, the listener tries again this long later.
RETRY_SECONDS = 1.0


def _redis_client() -> tuple[Any, str] | None:
    """The redis-py client behind the shared cache and the channel name (with the cache's key
    prefix, so that sites sharing a Redis do not hear each other), or None for other caches."""
    if not conf.epochauth_settings.REVOCATION_PUSH:
        return None
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
    return get_client(write=True), cache.make_key(CHANNEL)


def publish(message: dict[str, Any]) -> bool:
    """Send one change to every listener; False when there is no push channel or it failed."""
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


class Listener(threading.Thread):
    """Subscribes to the channel and hands each message to ``apply``; ``resync`` after a resubscribe,
    ``idle`` whenever a wait passes without a message."""

    def __init__(
        self,
        client: Any,
        channel: str,
        apply: Callable[[dict[str, Any]], None],
        resync: Callable[[], None],
        idle: Callable[[], None],
    ) -> None:
        super().__init__(name="epochauth-revocation-push", daemon=True)
        self.client, self.channel, self.apply, self.resync, self.idle = (
            client,
            channel,
            apply,
            resync,
            idle,
        )
        self.pid = os.getpid()
        self.stopped = threading.Event()
        self.subscribed = threading.Event()

    def run(self) -> None:
        first = True
        while not self.stopped.is_set():
            try:
                self._listen(resync=not first)
            except Exception:  # a dropped connection: messages may be lost, the database is read
                logger.warning("epochauth: revocation push channel lost; retrying", exc_info=True)
            first = False
            self.subscribed.clear()
            self.stopped.wait(RETRY_SECONDS)

    def _listen(self, resync: bool) -> None:
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.channel)
            self.subscribed.set()
            if resync:
                self.resync()
            while not self.stopped.is_set():
                message = pubsub.get_message(timeout=POLL_SECONDS)
                if message is not None and message.get("type") == "message":
                    self._deliver(message["data"])
                elif message is None:
                    self.idle()  # upkeep off the request path
        finally:
            pubsub.close()

    def _deliver(self, data: bytes) -> None:
        try:
            change = json.loads(data)
        except ValueError:
            logger.warning("epochauth: ignoring a malformed revocation push message")
            return
        if isinstance(change, dict):
            self.apply(change)


class Subscription:
    """The one listener of this process for the current settings, started on first use."""

    def __init__(
        self,
        apply: Callable[[dict[str, Any]], None],
        resync: Callable[[], None],
        idle: Callable[[], None],
    ) -> None:
        self._apply, self._resync, self._idle = apply, resync, idle
        self._listener: Listener | None = None
        self._lock = threading.Lock()

    def ensure(self) -> Listener | None:
        """Start (or restart, after a fork or a settings change) the listener; None without push."""
        listener = self._listener
        if listener is not None and listener.pid == os.getpid() and listener.is_alive():
            return listener
        with self._lock:
            found = _redis_client()
            listener = self._listener
            if (
                listener is not None
                and listener.pid == os.getpid()
                and listener.is_alive()
                and found is not None
                and listener.channel == found[1]
            ):
                return listener
            self.stop()
            if found is None:
                return None
            self._listener = Listener(found[0], found[1], self._apply, self._resync, self._idle)
            self._listener.start()
            # The caller reads the database next: subscribed first, no change falls between the two.
            self._listener.subscribed.wait(SUBSCRIBE_SECONDS)
            return self._listener

    def stop(self) -> None:
        """Stop this process's listener (settings changed); a forked child's copy is not running."""
        listener, self._listener = self._listener, None
        if listener is not None and listener.pid == os.getpid():
            listener.stopped.set()
