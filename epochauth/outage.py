"""Ending tokens while the database is unreachable (issue 30): logout and logout-all go to the outage
journal in the shared Redis (:mod:`epochauth.journal`), are held by this process at once and pushed
to the others as a committed change is, and reach the database when it is back (:func:`replay`).

What they end stays ended: the journal is replayed before anything else can be (an entry replayed
twice does nothing more), and every process holds the entries until the database has them. What
cannot be journaled answers 503: never a change that other processes might not see.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connections, transaction

from . import journal, models, push, revocation, sessions, tokens

logger = logging.getLogger(__name__)


def _held(entry: dict[str, Any]) -> None:
    """This process holds ``entry`` at once, the others within milliseconds (push) or an interval
    (each reads the journal with the revocation version)."""
    revocation.state.apply_journaled(entry)
    for jti, expires in entry.get("d", ()):
        push.publish({"d": [jti, expires]})
    if entry.get("e"):
        kind, object_id = entry["e"]
        push.publish({"e": [kind, object_id, entry["v"], entry["at"], [], None]})


def end_session(token: tokens.AccessToken, actor: Any, reason: str) -> None:
    """``token``'s session ends: its id is denied for as long as its access tokens live; the
    replay ends the row (refresh token, audit event, signal)."""
    now = time.time()
    until = now + sessions.access_token_margin().total_seconds()
    session_id = token.session_id
    entry = {
        "op": "end",
        "at": now,
        "session": session_id,
        "actor": _pk(actor),
        "reason": reason,
        "d": [[session_id, until]],
    }
    _held(journal.append(entry))


def deny(ids: list[tuple[str, float]], reason: str, family: str | None = None) -> None:
    """Deny ``ids`` (id, until when); ``family``: an authorization server's refresh-token family the
    replay ends (its access tokens are among ``ids``)."""
    entry = {"op": "deny", "at": time.time(), "reason": reason, "d": [list(i) for i in ids]}
    if family:
        entry["family"] = family
    _held(journal.append(entry))


def bump_epoch(kind: str, object_id: str, floor: int, actor: Any, reason: str) -> None:
    """Bump an epoch above ``floor`` (what the caller knows it to be at least) and above the mirror."""
    entry = {
        "op": "bump",
        "at": time.time(),
        "e": [kind, object_id],
        "actor": _pk(actor),
        "reason": reason,
    }
    floor = max(floor, revocation.state.known_epoch(kind, object_id))
    _held(journal.append(entry, bump=(kind, object_id, floor)))


def _pk(user: Any) -> str | None:
    pk = getattr(user, "pk", None)
    return None if pk is None else str(pk)


def _actor(entry: dict[str, Any]) -> Any:
    pk = entry.get("actor")
    return None if pk is None else get_user_model()._default_manager.filter(pk=pk).first()


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def replay_entry(entry: dict[str, Any]) -> None:
    """Write one journal entry to the database, in a transaction; again, it changes nothing more."""
    at = _moment(entry["at"])
    reason = f"session {entry['reason']}" if entry["op"] == "end" else entry["reason"]
    with transaction.atomic():
        for jti, expires in entry.get("d", ()):
            revocation.revoke_id(jti, _moment(expires), reason=reason)
        if entry["op"] == "end":
            found = models.Session.objects.filter(pk=uuid.UUID(hex=entry["session"])).first()
            if found is not None:
                sessions.end_session(found, reason=entry["reason"], actor=_actor(entry), at=at)
        elif entry["op"] == "bump":
            kind, object_id = entry["e"]
            revocation.bump_epoch(
                kind,
                object_id,
                actor=_actor(entry),
                reason=entry["reason"],
                at=at,
                floor=entry["v"],
            )
        elif entry.get("family") and apps.is_installed("epochauth.oauth"):
            # The authorization server's app config, as the logout view reaches it.
            apps.get_app_config("epochauth_oauth").end_family(entry["family"])  # type: ignore[attr-defined]


def replay() -> int:
    """Replay the journal into the database (one process at a time); how many entries it wrote."""
    return journal.replay(replay_entry)


_replaying = threading.Lock()


def replay_soon() -> None:
    """Replay in a thread of this process unless one does already."""
    if _replaying.locked():
        return
    threading.Thread(target=_replay_thread, name="epochauth-journal-replay", daemon=True).start()


def _replay_thread() -> None:
    if not _replaying.acquire(blocking=False):
        return
    try:
        done = replay()
        if done:
            logger.info("epochauth: replayed %d outage-journal entries into the database", done)
        if journal.is_empty():
            revocation.state.journal_replayed()
    except Exception:
        logger.warning(
            "epochauth: the outage journal's replay stopped; trying later", exc_info=True
        )
    finally:
        _replaying.release()
        connections.close_all()


revocation.replay_journal = replay_soon
