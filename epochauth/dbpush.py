"""Push of revocation changes through the database, for sites without Redis
(``REVOCATION_PUSH = "database"``).

* PostgreSQL: ``LISTEN/NOTIFY``. A writer sends each change with ``pg_notify`` after its transaction
  committed; every process runs one listener thread on a connection of its own (never a request's),
  which applies the change within milliseconds. A listener that connects again asks for a read of the
  database, since notifications are lost while it is away. ``LISTEN`` needs a session-pooled
  connection: behind PgBouncer in transaction pooling a notification reaches no listener, so each
  listener sends itself one when it starts and logs a warning when it does not come back.
* SQLite (one machine): each process's listener thread reads ``PRAGMA data_version`` on a connection
  of its own every ``SQLITE_POLL_SECONDS``; when another connection committed, the thread reads the
  changed rows (:meth:`epochauth.revocation.RevocationState.read_now`).

Either way requests read nothing: the work is done per interval per process, in the listener's
thread, and polling (``REVOCATION_RELOAD_INTERVAL``) stays the net.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
import uuid
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections, router

from . import listeners, models

logger = logging.getLogger(__name__)

#: The PostgreSQL notification channel (one per database, like the tables).
CHANNEL = "epochauth_revocation"
#: The ``application_name`` of listener connections (to find them in ``pg_stat_activity``).
APPLICATION_NAME = "epochauth-push"
#: How long a listener waits for its own notification before it warns that none arrive.
SELF_TEST_SECONDS = 3.0
#: How often a SQLite listener checks whether another connection committed.
SQLITE_POLL_SECONDS = 0.5


def _alias() -> str:
    """The database the revocation tables are written to."""
    return router.db_for_write(models.Epoch) or DEFAULT_DB_ALIAS


def publish(message: dict[str, Any]) -> bool:
    """Send one change (after its commit); on SQLite the commit itself is the news."""
    alias = _alias()
    if connections[alias].vendor != "postgresql":
        return connections[alias].vendor == "sqlite"
    try:
        _notify(alias, json.dumps(message, separators=(",", ":")))
    except Exception:  # the driver's errors; polling delivers the change
        logger.warning("epochauth: could not push a revocation change", exc_info=True)
        return False
    return True


def _notify(alias: str, payload: str) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_notify(%s, %s)", [CHANNEL, payload])


def listener(callbacks: listeners.Callbacks) -> listeners.Listener | None:
    """A listener for the database's vendor; None where no other process can share it."""
    alias = _alias()
    connection = connections[alias]
    if connection.vendor == "postgresql":
        return PostgresListener(alias, callbacks)
    # An in-memory database (the test suite's) is no other process's.
    if connection.vendor == "sqlite" and not connection.is_in_memory_db():  # type: ignore[attr-defined]
        return SQLiteListener(alias, callbacks)
    return None


class PostgresListener(listeners.Listener):
    """``LISTEN`` on a psycopg connection of its own, opened with the settings of the alias."""

    def __init__(self, alias: str, callbacks: listeners.Callbacks) -> None:
        super().__init__(f"postgresql:{alias}:{CHANNEL}", callbacks)
        self.alias = alias
        #: Whether the self-test notification came back (None: not yet; False: it did not).
        self.confirmed: bool | None = None

    def _connect(self) -> Any:
        import psycopg

        params = connections[self.alias].get_connection_params()
        for django_only in ("cursor_factory", "context", "prepare_threshold"):
            params.pop(django_only, None)
        params["application_name"] = APPLICATION_NAME
        return psycopg.connect(**params, autocommit=True)

    def _listen(self, resync: bool) -> None:
        with self._connect() as connection:
            connection.execute(f'LISTEN "{CHANNEL}"')
            self.subscribed.set()
            if resync:
                self.callbacks.resync()
            ping = json.dumps({"ping": uuid.uuid4().hex})
            self._self_test(ping)
            deadline = time.monotonic() + SELF_TEST_SECONDS
            while not self.stopped.is_set():
                heard = False
                for notification in connection.notifies(
                    timeout=listeners.POLL_SECONDS, stop_after=1
                ):
                    heard = True
                    if notification.payload == ping:
                        self.confirmed = True
                    else:
                        self._deliver(notification.payload)
                if self.confirmed is None and time.monotonic() >= deadline:
                    self.confirmed = False
                    logger.warning(
                        "epochauth: the LISTEN/NOTIFY self-test got no answer within %g s: "
                        "revocations reach other processes only within REVOCATION_RELOAD_INTERVAL. "
                        "Is the database behind a pooler in transaction mode (PgBouncer)? LISTEN "
                        "needs a session-pooled or direct connection.",
                        SELF_TEST_SECONDS,
                    )
                if not heard:
                    self.callbacks.idle()

    def _self_test(self, ping: str) -> None:
        """Notify through Django's connection, the way writers do, from this thread."""
        try:
            _notify(self.alias, ping)
        finally:
            connections[self.alias].close()


class SQLiteListener(listeners.Listener):
    """Reads ``PRAGMA data_version`` on a connection of its own; a change means another connection
    committed, and the thread reads what changed."""

    def __init__(self, alias: str, callbacks: listeners.Callbacks) -> None:
        super().__init__(f"sqlite:{alias}", callbacks)
        self.path = str(connections[alias].settings_dict["NAME"])

    def _listen(self, resync: bool) -> None:
        connection = sqlite3.connect(self.path, timeout=listeners.POLL_SECONDS)
        try:
            (seen,) = connection.execute("PRAGMA data_version").fetchone()
            self.subscribed.set()
            if resync:
                self.callbacks.resync()
            while not self.stopped.wait(SQLITE_POLL_SECONDS):
                (version,) = connection.execute("PRAGMA data_version").fetchone()
                if version != seen:
                    seen = version
                    self.callbacks.refresh()
                else:
                    self.callbacks.idle()
        finally:
            connection.close()
