"""Sessions while the database is unreachable (issue 30): refresh and renew from the session mirror,
logout and logout-all, all kept in the outage journal in the shared Redis (:mod:`epochauth.journal`),
held by this process at once, pushed to the others as a committed change is, and written to the
database when it is back (:func:`replay`).

What they end stays ended: a refresh goes through the mirror until the journal is replayed, an entry
replayed twice does nothing more, and every process holds the entries until the database has them.
What cannot be journaled, or read from the mirror, answers 503: never a token that might be revoked.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections, transaction
from django.utils.translation import gettext_lazy as _

from . import (
    conf,
    exceptions,
    inserts,
    journal,
    models,
    push,
    resources,
    revocation,
    sessions,
    tokens,
)

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


def end_session(session_id: str, actor: Any, reason: str) -> None:
    """A session ends: its id is denied for as long as its access tokens live, its copy in the
    mirror says ended; the replay ends the row (refresh token, audit event, signal)."""
    now = time.time()
    until = now + sessions.access_token_margin().total_seconds()
    entry = {
        "op": "end",
        "at": now,
        "session": session_id,
        "actor": _pk(actor),
        "reason": reason,
        "d": [[session_id, until]],
    }
    _held(journal.append(entry, ends=session_id))


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


def _invalid(description: Any) -> exceptions.OAuthError:
    return exceptions.OAuthError("invalid_grant", description)


def _session(held: dict[str, str]) -> models.Session:
    """The mirror's copy of a session as an unsaved row, with its user and group (no query)."""
    user_model = get_user_model()
    user = user_model(
        pk=user_model._meta.pk.to_python(held["user"]),
        **{user_model.USERNAME_FIELD: held["username"]},
    )
    group = (
        Group(pk=Group._meta.pk.to_python(held["group"]), name=held["group_name"])
        if held["group"]
        else None
    )
    session = models.Session(
        id=uuid.UUID(hex=held["id"]),
        family=held["family"],
        user=user,
        group=group,
        scope=held["scope"],
        community=held["community"],
        resources=json.loads(held["resources"]),
        remember_me=bool(held["remember_me"]),
        created_at=_moment(float(held["created_at"])),
        expires_at=_moment(float(held["expires_at"])),
        last_used_at=_moment(float(held["last_used_at"])),
        refresh_hash=held["refresh_hash"],
        previous_refresh_hash=held["previous_refresh_hash"],
        dpop_jkt=held["dpop_jkt"],
    )
    slot = models.StatusListSlot(pk=int(held["slot"])) if held["slot"] else None
    models.Session.status_slot.related.set_cached_value(session, slot)
    return session


def _standing(session: models.Session, held: dict[str, str]) -> tokens.Standing:
    """The session user's groups and epochs without the database: each epoch at the largest value
    the mirror or this process knows, with the last bump this process holds since the session began
    (fails closed where it cannot tell); the groups the mirror read, less those left since."""
    user_id, group_id = str(session.user_id), held["group"] or None
    kinds: list[tuple[str, str]] = [
        (models.Epoch.Kind.USER, user_id),
        (models.Epoch.Kind.GLOBAL, ""),
    ]
    if group_id is not None:
        kinds.append((models.Epoch.Kind.GROUP, group_id))
    if session.community:
        kinds.append((models.Epoch.Kind.COMMUNITY, session.community))
    mirrored = journal.mirrored_epochs(kinds)
    began = session.created_at.timestamp()
    epochs: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for key, value in zip(kinds, mirrored, strict=True):
        since = revocation.current_epoch(*key, began)
        known = max(value, since.value, revocation.state.known_epoch(*key))
        epochs[key] = (known, None if since.not_before is None else _moment(since.not_before))
    user = revocation.current_epoch(models.Epoch.Kind.USER, user_id, began)
    groups = json.loads(held["groups"])
    kept = user.groups_kept({"iat": float(held["groups_at"])}, groups)
    return tokens.Standing({name: groups[name] for name in kept}, epochs)


def mirrored_session(*, family: str = "", session_id: str = "") -> models.Session:
    """A live session from the mirror, its user's rights checked (one that lost them ends, through
    the journal); 503 when the mirror holds no copy of it, 400 when it ended or expired."""
    if conf.epochauth_settings.CUSTOM_CLAIMS:
        # The site's claims read the user's row: none to read.
        raise journal.Unavailable("custom claims need the database")
    held = journal.mirrored_session(family=family, session_id=session_id)
    if held is None or "community" not in held:
        # A copy that does not say its community cannot tell which token to mint.
        raise journal.Unavailable("the mirror holds no copy of the session")
    session = _session(held)
    if held["revoked"] == "1" or revocation.is_revoked(session.id.hex):
        raise _invalid(_("The session has ended"))
    if session.expires_at.timestamp() <= time.time():
        raise _invalid(_("The refresh token expired"))
    failure = sessions.lost_rights(session, _standing(session, held), read_membership=False)
    if failure is not None:
        end_session(session.id.hex, None, failure[0])
        raise _invalid(failure[1])
    return session


def rotate(
    refresh_token: str, resource: Iterable[str] = (), dpop_jkt: str | None = None
) -> tuple[models.Session, str]:
    """:func:`epochauth.sessions.rotate` from the mirror, while the database is unreachable: the same
    checks, the same compare-and-swap (in one Lua script with its journal entry), a reuse ends the
    session the same way."""
    family, _dot, secret = refresh_token.partition(".")
    if not family or not secret:
        raise _invalid(_("The refresh token is invalid"))
    session = mirrored_session(family=family)
    sessions.check_binding(session, dpop_jkt)
    resources.audience(resource, session.resources or None)
    new_secret = secrets.token_urlsafe(32)
    now = time.time()
    expires = now + sessions.lifetime(session.remember_me).total_seconds()
    jkt = session.dpop_jkt or dpop_jkt or ""
    sid = session.id.hex
    until = now + sessions.access_token_margin().total_seconds()
    new_hash = sessions.digest(new_secret)
    rotation = {
        "op": "rotate",
        "at": now,
        "family": family,
        "hash": new_hash,
        "expires": expires,
        "dpop_jkt": jkt,
    }
    reuse = {
        "op": "end",
        "at": now,
        "session": sid,
        "actor": None,
        "reason": "reuse",
        "d": [[sid, until]],
    }
    outcome, entry = journal.rotate(
        family,
        sessions.digest(secret),
        new_hash,
        now=now,
        expires=expires,
        dpop_jkt=jkt,
        entries=(rotation, reuse),
    )
    if entry is not None:
        _held(entry)
    if outcome == "reuse":
        raise _invalid(_("The refresh token was already used; the session is revoked"))
    if outcome == "ended":
        raise _invalid(_("The session has ended"))
    if outcome == "expired":
        raise _invalid(_("The refresh token expired"))
    if outcome != "rotated":
        raise journal.Unavailable(f"the rotation could not be journaled ({outcome})")
    session.refresh_hash = new_hash
    session.last_used_at = _moment(now)
    session.expires_at = _moment(expires)
    session.dpop_jkt = jkt
    return session, f"{family}.{new_secret}"


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
    reason = entry.get("reason", "")
    if entry["op"] == "end":
        reason = f"session {reason}"
    with transaction.atomic():
        for jti, expires in entry.get("d", ()):
            revocation.revoke_id(jti, _moment(expires), reason=reason)
        if entry["op"] == "end":
            found = models.Session.objects.filter(pk=uuid.UUID(hex=entry["session"])).first()
            if found is not None:
                sessions.end_session(found, reason=entry["reason"], actor=_actor(entry), at=at)
        elif entry["op"] == "rotate":
            _replay_rotation(entry, at)
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


def _replay_rotation(entry: dict[str, Any], at: datetime) -> None:
    """A rotation made from the mirror, on the session's row: unless the session ended (it stays
    ended) or the row holds the secret it rotated to (replayed already; by the secrets, not by the
    clocks of the servers). A row holding neither that one nor the one it replaced was rotated
    twice: a reuse, the session ends. A compare-and-swap, as a refresh is: of two replayers of one
    entry (a lease that ran out), one writes."""
    while True:
        found = models.Session.objects.filter(family=entry["family"]).first()
        if found is None or found.revoked_at is not None or found.refresh_hash == entry["hash"]:
            return
        if found.refresh_hash != entry["from"]:
            sessions.end_session(found, reason="reuse", at=at)
            return
        found.refresh_hash = entry["hash"]
        found.previous_refresh_hash = entry["previous"]
        found.last_used_at = at
        found.expires_at = _moment(entry["expires"])
        found.dpop_jkt = entry["dpop_jkt"]
        expected = {"refresh_hash": entry["from"], "revoked_at": None}
        if inserts.swap(found, sessions.ROTATED, expected) is not None:
            return


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
