"""A push listener: one thread per process that hears revocation changes from a channel (Redis in
:mod:`epochauth.push`, the database in :mod:`epochauth.dbpush`), connects again after a failure and then
asks for a read of the database, since changes may have been missed while it was away."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

#: How long a listener waits for a message before it checks whether it should stop.
POLL_SECONDS = 1.0
#: After a failed connection, the listener tries again this long later.
RETRY_SECONDS = 1.0


class Callbacks(NamedTuple):
    """What a listener does: ``apply`` a change, ``resync`` after a resubscribe (messages may have
    been lost), ``refresh`` (read the database now, in the listener's thread) when a channel says only
    that something changed, ``idle`` whenever a wait passes without a message."""

    apply: Callable[[dict[str, Any]], None]
    resync: Callable[[], None]
    refresh: Callable[[], None]
    idle: Callable[[], None]


class Listener(threading.Thread):
    """Listens to ``channel`` (a name that also tells the settings it was started for) in a thread
    of its own, connecting again (and resyncing) after a failure."""

    def __init__(self, channel: str, callbacks: Callbacks) -> None:
        super().__init__(name="epochauth-revocation-push", daemon=True)
        self.channel, self.callbacks = channel, callbacks
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
        raise NotImplementedError

    def _deliver(self, data: bytes | str) -> None:
        try:
            change = json.loads(data)
        except ValueError:
            logger.warning("epochauth: ignoring a malformed revocation push message")
            return
        if isinstance(change, dict):
            self.callbacks.apply(change)
