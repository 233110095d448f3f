"""Revocation: epochs for users, groups and everyone, plus a denylist of token and session ids.

The truth lives in the database. Reads go through two cache levels so that a request costs no query:
process memory (re-validated every ``REVOCATION_REFRESH_INTERVAL``) over the shared Django cache
(Redis in production) over the database. A write updates all three, so it is visible at once in the
process that made it and, through the shared cache, in every other process within the refresh interval.

Nothing is ever assumed from a cache miss: a missing epoch or denylist is re-read from the database,
and when that fails too the request fails closed with :class:`RevocationUnavailable`.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from django.core.cache import caches
from django.db import DatabaseError, transaction
from django.utils import timezone

from . import signals
from .conf import tokenauth_settings
from .exceptions import InvalidToken
from .models import AuditEvent, Epoch, RevokedToken, Session
from .tokens import CLAIM_EPOCH, CLAIM_GLOBAL_EPOCH, CLAIM_GROUP_EPOCH, CLAIM_GROUP_ID, CLAIM_SESSION

logger = logging.getLogger(__name__)

CACHE_PREFIX = "tokenauth:"
DENYLIST_VERSION_KEY = CACHE_PREFIX + "denylist:version"
DENYLIST_KEY = CACHE_PREFIX + "denylist"


class RevocationUnavailable(Exception):
    """Neither the cache nor the database could say whether a token is revoked."""


class EpochValue(NamedTuple):
    value: int
    not_before: float | None  # POSIX timestamp of the last bump


ZERO = EpochValue(0, None)


def _epoch_key(kind: str, object_id: str) -> str:
    return f"{CACHE_PREFIX}epoch:{kind}:{object_id}"


def _shared_cache():
    return caches[tokenauth_settings.CACHE_ALIAS]


def _cache_call(method: str, *args: Any, **kwargs: Any) -> Any:
    """Call the shared cache; an unreachable cache reads as a miss, never as an answer."""
    try:
        return getattr(_shared_cache(), method)(*args, **kwargs)
    except Exception:  # the cache backend's own connection errors (redis, memcached) vary
        logger.warning("tokenauth: shared cache unavailable for %s", method, exc_info=True)
        return None


class RevocationState:
    """Process-memory layer of the revocation state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self._epochs: dict[tuple[str, str], tuple[EpochValue, float]] = {}
        self._denylist: dict[str, float] = {}
        self._denylist_version: str | None = None
        self._denylist_checked_at = float("-inf")

    @staticmethod
    def _interval() -> float:
        return tokenauth_settings.REVOCATION_REFRESH_INTERVAL.total_seconds()

    # -- epochs ---------------------------------------------------------------------------------

    def epoch(self, kind: str, object_id: str) -> EpochValue:
        now = time.monotonic()
        local = self._epochs.get((kind, object_id))
        if local is not None and now - local[1] < self._interval():
            return local[0]
        key = _epoch_key(kind, object_id)
        found = _cache_call("get", key)
        if found is None:
            found = self._load_epoch(kind, object_id)
            _cache_call("add", key, tuple(found), tokenauth_settings.EPOCH_CACHE_TIMEOUT.total_seconds())
        found = EpochValue(*found)
        if local is not None and local[0].value > found.value:
            found = local[0]  # epochs only grow: a lagging cache never lowers what we saw
        self._epochs[(kind, object_id)] = (found, now)
        return found

    @staticmethod
    def _load_epoch(kind: str, object_id: str) -> EpochValue:
        try:
            row = (
                Epoch.objects.filter(kind=kind, object_id=object_id)
                .values_list("value", "not_before")
                .first()
            )
        except DatabaseError as exc:
            raise RevocationUnavailable("revocation state unavailable") from exc
        if row is None:
            return ZERO
        return EpochValue(row[0], row[1].timestamp() if row[1] else None)

    def remember_epoch(self, kind: str, object_id: str, value: EpochValue) -> None:
        self._epochs[(kind, object_id)] = (value, time.monotonic())
        _cache_call(
            "set",
            _epoch_key(kind, object_id),
            tuple(value),
            tokenauth_settings.EPOCH_CACHE_TIMEOUT.total_seconds(),
        )

    # -- denylist -------------------------------------------------------------------------------

    def is_denied(self, ids: Iterable[str]) -> bool:
        now = time.monotonic()
        if now - self._denylist_checked_at >= self._interval():
            with self._lock:
                if now - self._denylist_checked_at >= self._interval():
                    self._refresh_denylist()
                    self._denylist_checked_at = now
        wall = time.time()
        return any(self._denylist.get(i, 0) > wall for i in ids if i)

    def _refresh_denylist(self) -> None:
        version = _cache_call("get", DENYLIST_VERSION_KEY)
        if version is None:
            _cache_call("add", DENYLIST_VERSION_KEY, uuid.uuid4().hex, None)
            version = _cache_call("get", DENYLIST_VERSION_KEY)
        if version is not None and version == self._denylist_version:
            return
        shared = _cache_call("get", DENYLIST_KEY)
        if version is not None and shared is not None and shared[0] == version:
            denylist = shared[1]
        else:
            try:
                denylist = {
                    jti: expires.timestamp()
                    for jti, expires in RevokedToken.objects.filter(
                        expires_at__gt=timezone.now()
                    ).values_list("jti", "expires_at")
                }
            except DatabaseError as exc:
                raise RevocationUnavailable("revocation state unavailable") from exc
            if version is not None:
                _cache_call("set", DENYLIST_KEY, (version, denylist), None)
        # Entries this process added itself stay until the shared copy has them.
        self._denylist = {**{k: v for k, v in self._denylist.items() if k not in denylist}, **denylist}
        self._denylist_version = version

    def deny_locally(self, jti: str, expires_at: float) -> None:
        self._denylist[jti] = expires_at


state = RevocationState()


# -- reads used by authentication --------------------------------------------------------------


def current_epoch(kind: str, object_id: str) -> EpochValue:
    return state.epoch(kind, object_id)


def is_revoked(*ids: str | None) -> bool:
    """Whether any of the given token/session ids is on the denylist."""
    return state.is_denied(ids)


def check_local_claims(claims: dict[str, Any], user_id: str) -> None:
    """Refuse one of our tokens whose id or session is denied or whose epochs are behind."""
    if is_revoked(claims.get("jti"), claims.get(CLAIM_SESSION)):
        raise InvalidToken("The access token was revoked")
    behind = (
        claims[CLAIM_EPOCH] < current_epoch(Epoch.Kind.USER, user_id).value
        or claims[CLAIM_GLOBAL_EPOCH] < current_epoch(Epoch.Kind.GLOBAL, "").value
        or (
            CLAIM_GROUP_ID in claims
            and claims.get(CLAIM_GROUP_EPOCH, -1)
            < current_epoch(Epoch.Kind.GROUP, str(claims[CLAIM_GROUP_ID])).value
        )
    )
    if behind:
        raise InvalidToken("The access token was revoked")


# -- writes ------------------------------------------------------------------------------------


def bump_epoch(kind: str, object_id: str, *, actor: Any = None, reason: str = "") -> EpochValue:
    """Invalidate every earlier token of a user, a group (``object_id`` = its pk) or everyone."""
    now = timezone.now()
    with transaction.atomic():
        epoch, _ = Epoch.objects.select_for_update().get_or_create(kind=kind, object_id=object_id)
        epoch.value += 1
        epoch.not_before = now
        epoch.bumped_by_id = getattr(actor, "pk", None)
        epoch.reason = reason[:255]
        epoch.save()
        if kind == Epoch.Kind.USER:
            Session.objects.filter(user_id=object_id, revoked_at__isnull=True).update(revoked_at=now)
        value = EpochValue(epoch.value, now.timestamp())
        # Set while the row lock is held, so concurrent bumps reach the cache in order.
        state.remember_epoch(kind, object_id, value)
        AuditEvent.objects.create(
            action="epoch_bumped",
            user_id=object_id if kind == Epoch.Kind.USER else None,
            actor_id=epoch.bumped_by_id,
            detail={"kind": kind, "object_id": object_id, "epoch": epoch.value, "reason": epoch.reason},
        )
    signals.epoch_bumped.send(
        sender=Epoch, kind=kind, object_id=object_id, epoch=epoch.value, actor=actor, reason=reason
    )
    return value


def revoke_id(jti: str, expires_at: datetime, *, reason: str = "") -> None:
    """Deny one token id (or session id) until ``expires_at``, when nothing it names is valid anyway."""
    RevokedToken.objects.update_or_create(
        jti=jti, defaults={"expires_at": expires_at, "reason": reason[:255]}
    )
    state.deny_locally(jti, expires_at.timestamp())
    transaction.on_commit(lambda: _cache_call("set", DENYLIST_VERSION_KEY, uuid.uuid4().hex, None))


def purge_expired() -> int:
    """Delete denylist rows whose tokens expired anyway; returns how many."""
    deleted, _ = RevokedToken.objects.filter(expires_at__lte=timezone.now()).delete()
    if deleted:
        _cache_call("set", DENYLIST_VERSION_KEY, uuid.uuid4().hex, None)
    return deleted
