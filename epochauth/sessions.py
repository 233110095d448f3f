"""Refresh-token families (sessions): start, rotate with reuse detection, end.

A refresh token is ``<session family>.<secret>``; only a SHA-256 of the current secret is stored. Using a
secret that was already rotated away means it leaked: the whole session is revoked. The one exception is
``REFRESH_TOKEN_GRACE_PERIOD`` (WLCG Common JWT Profile section 4.3.2): the secret the last rotation
replaced may be used once more within it, by a client whose answer was lost.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NoReturn

from django.db import connections, router, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from . import (
    communities,
    conf,
    exceptions,
    inserts,
    journal,
    models,
    resources,
    revocation,
    signals,
    tokens,
)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def lifetime(remember_me: bool) -> timedelta:
    if remember_me:
        return conf.epochauth_settings.REMEMBER_ME_REFRESH_TOKEN_LIFETIME
    return conf.epochauth_settings.REFRESH_TOKEN_LIFETIME


def start_session(
    user: Any,
    *,
    remember_me: bool = False,
    user_agent: str = "",
    scope: str = "",
    group: Any = None,
    resources: list[str] | None = None,
    browser_login: Any = None,
    login: dict[str, Any] | None = None,
    standing: tokens.Standing | None = None,
    dpop_jkt: str = "",
    community: str = "",
) -> tuple[models.Session, str]:
    """Open a session and return it with its first refresh token; beyond ``MAX_SESSIONS_PER_USER``
    the user's oldest live sessions end (reason "limit"). ``browser_login``: the BrowserLogin on whose
    page it starts (the provider's back-channel logout of that login ends it). ``login``: the detail of
    a "login" audit event to write with the session (its id is added), in the same transaction.
    ``standing``: the user's groups and epochs if the caller read them; else they are read with the
    inserts (one statement on PostgreSQL), for :func:`standing` to hand to the first token.
    ``dpop_jkt``: the DPoP key the login proved (RFC 9449 section 5), which every refresh must prove.
    ``community``: the slug of the community every token of the session belongs to."""
    secret = secrets.token_urlsafe(32)
    session = models.Session(
        user=user,
        expires_at=timezone.now() + lifetime(remember_me),
        remember_me=remember_me,
        user_agent=user_agent[:255],
        scope=scope,
        group=group,
        resources=resources or [],
        refresh_hash=digest(secret),
        browser_login=browser_login,
        dpop_jkt=dpop_jkt,
        community=community,
    )
    rows: list[Model] = [session]
    if conf.epochauth_settings.STATUS_LIST:
        # Its key, numbered by the database in the same insert, is the session's index in our
        # Token Status Lists (epochauth.statuslist).
        rows.append(models.StatusListSlot(session=session))
    if login is not None:
        # The session's key is its own (a UUID): the event names it before either row is written.
        detail = {"session": str(session.pk), **login}
        rows.append(models.AuditEvent(action="login", user=user, detail=detail))
    limit = conf.epochauth_settings.MAX_SESSIONS_PER_USER
    if limit is None:
        _insert(session, rows, standing)
        return session, f"{session.family}.{secret}"
    # No savepoint: a caller's transaction (the login) commits or rolls back the session as a whole.
    with transaction.atomic(savepoint=False):
        _lock_user(user)
        _insert(session, rows, standing)
        live = models.Session.objects.filter(
            user=user, revoked_at__isnull=True, expires_at__gt=timezone.now()
        )
        for old in live.exclude(pk=session.pk).order_by("-created_at")[limit - 1 :]:
            end_session(old, reason="limit")
    return session, f"{session.family}.{secret}"


def _insert(session: models.Session, rows: list[Model], standing: tokens.Standing | None) -> None:
    """Insert the session's ``rows``, reading its standing along unless the caller has it."""
    if standing is not None:
        inserts.insert_together(*rows)
    else:
        alias = router.db_for_write(models.Session, instance=session)
        read = tokens.standing_read(session.user_id, session.group_id, alias, session.community)
        standing = tokens.standing_of(inserts.insert_together(*rows, read=read), alias)
    session.__dict__["_standing"] = standing
    # Once committed: a rolled-back login leaves nothing to refresh during an outage.
    transaction.on_commit(lambda: mirror(session))


def mirror(session: models.Session) -> None:
    """Write what a refresh or a renewal reads through to the shared cache's mirror, for a database
    outage (:mod:`epochauth.outage`): after the session started or rotated, with the user's groups
    as its last check read them."""
    if not journal.enabled():
        return
    found = session.__dict__.get("_standing")
    slot = session._state.fields_cache.get("status_slot")
    fields = {
        "id": session.id.hex,
        "user": str(session.user_id),
        "username": session.user.get_username(),
        "group": "" if session.group_id is None else str(session.group_id),
        "group_name": "" if session.group is None else session.group.name,
        "community": session.community,
        "scope": session.scope,
        "resources": json.dumps(session.resources or []),
        "remember_me": "1" if session.remember_me else "",
        "created_at": repr(session.created_at.timestamp()),
        "expires_at": repr(session.expires_at.timestamp()),
        "last_used_at": repr(session.last_used_at.timestamp()),
        "refresh_hash": session.refresh_hash,
        "previous_refresh_hash": session.previous_refresh_hash,
        "dpop_jkt": session.dpop_jkt,
        "slot": "" if slot is None else str(slot.pk),
        # Without a standing read along, none: a refresh from the mirror mints no group then.
        "groups": json.dumps({} if found is None else found.groups),
        "groups_at": repr(timezone.now().timestamp()),
        "revoked": "0",
    }
    journal.mirror_session(session.family, session.id.hex, fields, session.expires_at.timestamp())


def _lock_user(user: Any) -> None:
    """Lock the user's row until the login's transaction ends, so that the logins of one user count
    their live sessions, end the oldest and insert one at a time: side by side, each would count
    without the other's uncommitted session and both end the same oldest one, one session too many.

    ``FOR NO KEY UPDATE`` where the database has it: logins wait for each other, inserts of rows
    referring to the user (its audit events) do not. Where there are no row locks (SQLite) writes are
    serialised anyway: the session insert, the transaction's first statement, takes the one write
    lock before the count reads.
    """
    model = type(user)
    alias = router.db_for_write(model, instance=user)
    features = connections[alias].features
    if features.has_select_for_update:
        rows = model._default_manager.using(alias).select_for_update(
            no_key=features.has_select_for_no_key_update
        )
        list(rows.filter(pk=user.pk).values_list("pk", flat=True))


def _invalid(description: str | Promise) -> exceptions.OAuthError:
    return exceptions.OAuthError("invalid_grant", description)


def standing(session: models.Session) -> tokens.Standing:
    """The session user's groups and epochs as the last check of the session (:func:`rotate`,
    :func:`check_session`) read them, so that the token minted next says what was checked; read now
    if the session was not checked."""
    return session.__dict__.get("_standing") or tokens.read_standing(
        session.user_id, session.group_id, session.community
    )


def lost_rights(
    session: models.Session, found: tokens.Standing, *, read_membership: bool = True
) -> tuple[str, str | Promise] | None:
    """Why the session's user may no longer hold its tokens, as (reason, description); None if not:
    the user is inactive, a user, group, community or global bump came after the session began, or
    the user left the session's group or community (or the site no longer has it). ``found``: the
    user's standing, kept for :func:`standing`. ``read_membership=False`` (the outage mirror, with
    no database): leaving a community bumps the user's epoch, which ``found`` holds."""
    session.__dict__["_standing"] = found
    group_id = str(session.group_id) if session.group_id is not None else None
    if not session.user.is_active or found.bumped_after(
        session.created_at, str(session.user_id), group_id, session.community
    ):
        return ("revoked", _("The session was revoked"))
    if session.group_id is not None and session.group_id not in found.groups.values():
        return ("group_removed", _("You are no longer a member of the session's group"))
    if session.community:
        community = communities.get(session.community)
        if community is None or (
            read_membership and not communities.is_member(session.user_id, community)
        ):
            return (
                "community_removed",
                _("You are no longer a member of the session's community"),
            )
    return None


def _end(session: models.Session, failure: tuple[str, str | Promise]) -> NoReturn:
    end_session(session, reason=failure[0])
    raise _invalid(failure[1])


def check_session(session: models.Session) -> None:
    """Refuse (and end) a session that ended or whose user lost its rights; renew must not outlast them."""
    if not session.is_active:
        raise _invalid(_("The session has ended"))
    failure = lost_rights(
        session, tokens.read_standing(session.user_id, session.group_id, session.community)
    )
    if failure is not None:
        _end(session, failure)


#: What a rotation writes.
ROTATED = ("refresh_hash", "previous_refresh_hash", "last_used_at", "expires_at", "dpop_jkt")


def rotate(
    refresh_token: str, resource: Iterable[str] = (), dpop_jkt: str | None = None
) -> tuple[models.Session, str]:
    """Exchange a refresh token for the next one of its session; that the ``resource`` asked for is
    among the session's (:func:`epochauth.resources.audience`) is checked before the secret rotates
    away, the user's rights as it rotates: a session whose user lost them ends, its new token unsent.

    The rotation is a compare-and-swap (:func:`epochauth.inserts.swap`): the session's row changes
    only if it still holds the secret the check read and is not revoked. Of concurrent uses of one
    secret, one rotates it; the others find the row changed, read it again and find the secret
    rotated away, a reuse. No lock and no transaction around it: on PostgreSQL a refresh is the
    session's read and one statement that rotates it and reads the user's groups and epochs.

    Within ``REFRESH_TOKEN_GRACE_PERIOD`` of a rotation, the secret it replaced rotates once more (a
    retry whose first answer was lost): a new pair, and the token the first use gave stops working.
    Only a hash of that token is kept, so it cannot be handed out again; and so the family keeps one
    live refresh token: whoever holds the other one finds it rotated away on its next use, a reuse.

    ``dpop_jkt``: the key the request's DPoP proof is of (RFC 9449 section 5). A session bound to a
    key rotates only with a proof of it; without, it is refused before anything else, so a bound
    refresh token stolen without its key can neither rotate nor end the session (a reuse). A bearer
    session refreshed with a proof is bound from then on.
    """
    family, _dot, secret = refresh_token.partition(".")
    if not family or not secret:
        raise _invalid(_("The refresh token is invalid"))
    presented = digest(secret)
    # The database the rotation writes, where the secret it compares with is current.
    alias = router.db_for_write(models.Session)
    found = (
        models.Session.objects.using(alias)
        .select_related("user", "group", "status_slot")
        .filter(family=family)
    )
    while True:
        try:
            session = found.get()  # no ORDER BY: the family is unique
        except models.Session.DoesNotExist:
            raise _invalid(_("The refresh token is invalid")) from None
        read = session.refresh_hash
        check_binding(session, dpop_jkt)
        replaced = _replaced(session, presented)
        resources.audience(resource, session.resources or None)
        new_secret = secrets.token_urlsafe(32)
        now = timezone.now()
        session.refresh_hash = digest(new_secret)
        session.previous_refresh_hash = replaced
        session.last_used_at = now
        session.expires_at = now + lifetime(session.remember_me)
        session.dpop_jkt = session.dpop_jkt or dpop_jkt or ""
        standing = inserts.swap(
            session,
            ROTATED,
            {"refresh_hash": read, "revoked_at": None},
            read=tokens.standing_read(session.user_id, session.group_id, alias, session.community),
        )
        if standing is not None:
            break
        # Another use rotated or ended the session since it was read: look again.
    failure = lost_rights(session, tokens.standing_of(standing, alias))
    if failure is not None:
        _end(session, failure)
    transaction.on_commit(lambda: mirror(session))
    return session, f"{session.family}.{new_secret}"


def check_binding(session: models.Session, dpop_jkt: str | None) -> None:
    if session.dpop_jkt and not (dpop_jkt and constant_time_compare(dpop_jkt, session.dpop_jkt)):
        raise exceptions.InvalidProof(
            _("The refresh token is bound to a DPoP key: send a proof of that key")
        )


def _replaced(session: models.Session, presented: str) -> str:
    """The hash a rotation of the session with the ``presented`` secret replaces, kept for a retry
    within the grace period ("" when the presented one was that retry); a reuse ends the session."""
    if session.revoked_at is not None:
        raise _invalid(_("The session has ended"))
    now = timezone.now()
    if session.expires_at <= now:
        raise _invalid(_("The refresh token expired"))
    if constant_time_compare(presented, session.refresh_hash):
        return session.refresh_hash
    if _retried_in_grace(session, presented, now):
        return ""  # its one retry is spent
    if not journal.is_empty():
        # Rotations made during a database outage are not all replayed yet: the secret may be
        # the one the journal rotated to. The replay decides (a reuse still ends the session).
        raise journal.Unavailable("the outage journal is being replayed")
    _end(session, ("reuse", _("The refresh token was already used; the session is revoked")))


def _retried_in_grace(session: models.Session, presented: str, now: datetime) -> bool:
    """Whether ``presented`` hashes the secret the session's last rotation (at ``last_used_at``)
    replaced, not yet retried, within ``REFRESH_TOKEN_GRACE_PERIOD`` of that rotation."""
    grace = conf.epochauth_settings.REFRESH_TOKEN_GRACE_PERIOD
    return (
        bool(grace)
        and bool(session.previous_refresh_hash)
        and now < session.last_used_at + grace
        and constant_time_compare(presented, session.previous_refresh_hash)
    )


def end_session(
    session: models.Session, *, reason: str, actor: Any = None, at: datetime | None = None
) -> None:
    """Revoke a session: its refresh token at once, its access tokens through the denylist. ``at``:
    when it ended, if before now (an end made during a database outage, replayed)."""
    now = at or timezone.now()
    # Before the row: the mirror must not let a refresh during an outage outlive the session.
    journal.end_mirrored_session(session.family)
    with transaction.atomic():
        updated = models.Session.objects.filter(pk=session.pk, revoked_at__isnull=True).update(
            revoked_at=now
        )
        session.revoked_at = now
        # No access token of the session outlives this: it is at most one access lifetime old.
        revocation.revoke_id(
            session.id.hex, now + access_token_margin(), reason=f"session {reason}"
        )
        if updated:
            models.AuditEvent.objects.create(
                at=now,
                action="session_revoked",
                user_id=session.user_id,
                actor_id=getattr(actor, "pk", None),
                detail={"session": str(session.pk), "reason": reason},
            )
            signals.session_ending.send(
                sender=models.Session, session=session, reason=reason, actor=actor
            )
    if updated:
        signals.session_revoked.send(
            sender=models.Session, session=session, reason=reason, actor=actor
        )


def access_token_margin() -> timedelta:
    """How long an access token can outlive the moment it was minted: no session's token is alive
    this long after the session expired or ended."""
    return conf.epochauth_settings.ACCESS_TOKEN_LIFETIME + conf.epochauth_settings.LEEWAY


def refresh_expires_in(session: models.Session) -> int:
    return max(0, int((session.expires_at - timezone.now()).total_seconds()))
