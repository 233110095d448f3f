"""(issuer, sub) -> user: look up the Identity, or create the user when the issuer allows it.

The answer is cached (process memory over the shared cache), so a warm request with an external
token makes no query and, in steady state, no shared-cache read either: a process trusts its memo
until the shared generation of mappings changes (any mapping dropped anywhere; read once per
``REVOCATION_REFRESH_INTERVAL``) or ``IDENTITY_CACHE_TIMEOUT`` passed. Concurrent first requests
for one identity create exactly one user: the unique (issuer, subject) constraint decides, and the
loser uses the winner's row.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import DatabaseError, IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import PermissionDenied

from . import (
    clock,
    conf,
    exceptions,
    issuer_config,
    models,
    revocation,
    scopes,
    signals,
    snapshots,
)

logger = logging.getLogger(__name__)

NOT_REGISTERED = "not-registered"
USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")


class IdentityNotRegistered(PermissionDenied):
    default_detail = _(
        "Identity not registered with this service; ask its administrators for access."
    )
    default_code = "identity_not_registered"


@dataclass(frozen=True)
class Principal:
    """Who an (issuer, sub) pair is here, as much as a request needs without loading the user."""

    user_id: Any
    username: str
    is_active: bool
    groups: tuple[str, ...]


def _cache_key(digest: str) -> str:
    return f"{snapshots.CACHE_PREFIX}identity:{digest}"


#: (iss, sub) digest -> (principal or NOT_REGISTERED, when read); bounded like the verified tokens.
_local: snapshots.BoundedMemo[str, tuple[Principal | str, float]] = snapshots.BoundedMemo(
    lambda: conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)


GENERATION_KEY = f"{snapshots.CACHE_PREFIX}identity:generation"


class Generation:
    """The shared generation of mappings as this process last read it: when it changed, a mapping
    was dropped somewhere (we do not know which), so the whole memo goes."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.value: Any = None
        self.checked_at = float("-inf")

    def check(self) -> None:
        """At most one shared-cache read per refresh interval, whatever the number of identities."""
        now = clock.monotonic()
        if now - self.checked_at < snapshots.refresh_interval():
            return
        value = snapshots.shared_cache_call("get", GENERATION_KEY)
        if value is None:  # evicted or never set: start one, so that the next change differs
            snapshots.shared_cache_call("add", GENERATION_KEY, uuid.uuid4().hex, None)
            value = snapshots.shared_cache_call("get", GENERATION_KEY)
        # An unreadable generation (the cache is down) trusts nothing for longer than an interval.
        if value is None or value != self.value:
            _local.clear()
        self.value, self.checked_at = value, now


generation = Generation()


def reset() -> None:
    _local.clear()
    _mirrored.clear()
    generation.reset()


conf.process_cache(reset)


def forget(issuer: str, subject: str) -> None:
    """Drop the cached mapping of one identity (it was deleted, registered or its user changed), here
    at once and, after commit, in every process (a new generation; the key deleted again, in case a
    process re-cached the old row before the commit)."""
    digest = models.identity_digest(issuer, subject)
    _local.discard(digest)
    snapshots.shared_cache_call("delete", _cache_key(digest))

    def announce() -> None:
        snapshots.shared_cache_call("delete", _cache_key(digest))
        if not snapshots.publish(GENERATION_KEY, uuid.uuid4().hex, None):
            logger.error(
                "epochauth: an identity mapping changed but the shared cache could not say so; other "
                "processes see it within IDENTITY_CACHE_TIMEOUT"
            )

    transaction.on_commit(announce)


def resolve(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> Principal:
    """The principal for a verified token's (iss, sub); raises IdentityNotRegistered."""
    digest = models.identity_digest(config.issuer, claims["sub"])
    generation.check()
    now = clock.monotonic()
    local = _local.get(digest)
    trusted = conf.epochauth_settings.IDENTITY_CACHE_TIMEOUT.total_seconds()
    if local is None or now - local[1] >= trusted or _may_provision_now(config, local[0]):
        found = snapshots.shared_cache_call("get", _cache_key(digest))
        if found is None or _may_provision_now(config, found):
            found = _load_or_provision(config, claims)
            snapshots.shared_cache_call(
                "set",
                _cache_key(digest),
                found,
                conf.epochauth_settings.IDENTITY_CACHE_TIMEOUT.total_seconds(),
            )
        local = (found, now)
        _local.put(digest, local)
    principal = local[0]
    if isinstance(principal, str):  # NOT_REGISTERED, the only string
        raise IdentityNotRegistered()
    return principal


@dataclass(frozen=True)
class Mirrored:
    """The newest token whose groups were mirrored into its user's here, and what that wrote."""

    iat: float
    #: The token's groups, and the user's groups of the issuer's after the write: the same pair
    #: again needs no write (a namespaced group holding a permission stays out: ``_claims_decide``).
    wanted: tuple[str, ...]
    written: tuple[str, ...]


#: (iss, sub) digest -> the newest mirroring of its token's groups into the user's here.
_mirrored: snapshots.BoundedMemo[str, Mirrored] = snapshots.BoundedMemo(
    lambda: conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)


def token_groups(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> tuple[str, ...]:
    """The groups a token of an issuer with group claims grants: the issuer's defaults, and the
    local groups its claims' values stand for (``group_map``, ``group_prefix``); other values are
    ignored, so an issuer never names a local group the admin did not allow it."""
    named = (config.local_group(value) for value in claim_groups(config, claims))
    return tuple(sorted({*config.default_groups, *filter(None, named)}))


def groups_of(
    config: issuer_config.IssuerConfig, claims: dict[str, Any], principal: Principal
) -> tuple[str, ...]:
    """The principal's groups for this request: the token's when the issuer names group claims (not
    what the first login saw), else the user's. With ``mirror_groups``, a token newer than any
    mirrored before whose groups differ from the user's groups of this issuer makes them the token's
    (a write only then; the user's other groups stay)."""
    if not config.group_claim_names:
        return principal.groups
    groups = token_groups(config, claims)
    if config.mirror_groups:
        managed = tuple(name for name in principal.groups if config.manages_group(name))
        digest = models.identity_digest(config.issuer, claims["sub"])
        last = _mirrored.get(digest)
        if groups != managed and (
            last is None
            or (claims["iat"] > last.iat and (groups, managed) != (last.wanted, last.written))
        ):
            _mirrored.put(digest, Mirrored(claims["iat"], groups, groups))
            written = _mirror(config, principal.user_id, groups)
            if written is not None:
                _mirrored.put(digest, Mirrored(claims["iat"], groups, written))
    return groups


def _mirror(
    config: issuer_config.IssuerConfig, user_id: Any, groups: tuple[str, ...]
) -> tuple[str, ...] | None:
    """Best effort: the request is answered with the token's groups whether or not this is stored.
    Returns the user's groups of this issuer after the write (None when it failed)."""
    try:
        with transaction.atomic():
            user = get_user_model()._default_manager.get(pk=user_id)
            current = list(user.groups.all())
            privileged = _privileged({*groups, *(group.name for group in current)})
            members = [
                *(g for g in current if not _claims_decide(config, g.name, privileged)),
                *_joinable(config, groups, privileged),
            ]
            user.groups.set(members)
    except (DatabaseError, snapshots.StateUnavailable, get_user_model().DoesNotExist):
        logger.warning(
            "epochauth: could not mirror the token's groups into user %s", user_id, exc_info=True
        )
        return None
    return tuple(sorted(g.name for g in members if config.manages_group(g.name)))


def _privileged(names: set[str]) -> set[str]:
    """Those of the groups ``names`` that hold any Django permission."""
    held = Group.objects.filter(name__in=names, permissions__isnull=False)
    return set(held.values_list("name", flat=True))


def _claims_decide(config: issuer_config.IssuerConfig, name: str, privileged: set[str]) -> bool:
    """Whether a token of this issuer may put a user in the group ``name`` or take it out: a default
    or mapped group, or one in the issuer's namespace that holds no permission. A namespaced group
    the admin gave a permission is the admin's: claims neither join it nor leave it (mapping it lets
    them)."""
    return config.explicitly_allowed(name) or (
        config.manages_group(name) and name not in privileged
    )


def _joinable(
    config: issuer_config.IssuerConfig, names: tuple[str, ...], privileged: set[str]
) -> list[Group]:
    """The groups of ``names`` (a token's, see :func:`token_groups`) a claim may join, created when
    missing: each is one the admin allowed this issuer."""
    allowed = [name for name in names if _claims_decide(config, name, privileged)]
    existing = {group.name: group for group in Group.objects.filter(name__in=allowed)}
    return [existing.get(name) or Group.objects.get_or_create(name=name)[0] for name in allowed]


def _may_provision_now(config: issuer_config.IssuerConfig, cached: Principal | str) -> bool:
    """A refusal cached while the issuer did not provision is stale once it does."""
    return cached == NOT_REGISTERED and config.auto_provision


def principal_of(user: Any) -> Principal:
    return Principal(
        user.pk,
        user.get_username(),
        user.is_active,
        tuple(sorted(user.groups.values_list("name", flat=True))),
    )


def _load_or_provision(
    config: issuer_config.IssuerConfig, claims: dict[str, Any]
) -> Principal | str:
    try:
        identity = (
            models.Identity.objects.select_related("user")
            .filter(issuer=config.issuer, subject=claims["sub"])
            .first()
        )
        if identity is not None:
            return principal_of(identity.user)
        if not config.auto_provision:
            models.AuditEvent.objects.create(
                action="identity_not_registered",
                detail={"issuer": config.issuer, "subject": claims["sub"][:255]},
            )
            return NOT_REGISTERED
        if _revoked_for_identity(config, claims):
            raise exceptions.InvalidToken(_("The access token was revoked"))
        return principal_of(provision(config, claims))
    except DatabaseError as exc:
        raise snapshots.StateUnavailable("identity lookup failed") from exc


def _revoked_for_identity(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> bool:
    """A token issued before its identity was deleted (or before a global bump) must not create a user."""
    identity = models.identity_digest(config.issuer, claims["sub"])
    return any(
        not_before is not None and claims["iat"] < not_before
        for not_before in (
            revocation.current_epoch(
                models.Epoch.Kind.IDENTITY, identity, claims["iat"]
            ).not_before,
            revocation.current_epoch(models.Epoch.Kind.GLOBAL, "", claims["iat"]).not_before,
        )
    )


def provision(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> Any:
    """Create the user and Identity for a new (iss, sub), in the groups its token may join."""
    subject = claims["sub"]
    for _attempt in range(3):
        try:
            with transaction.atomic():
                user = get_user_model()._default_manager.create_user(
                    **{get_user_model().USERNAME_FIELD: free_username(config, claims)}
                )
                user.set_unusable_password()
                user.save()
                identity = models.Identity.objects.create(
                    issuer=config.issuer, subject=subject, user=user
                )
                names = token_groups(config, claims)
                user.groups.add(*_joinable(config, names, _privileged(set(names))))
                models.AuditEvent.objects.create(
                    action="identity_provisioned",
                    user=user,
                    detail={"issuer": config.issuer, "subject": subject},
                )
        except IntegrityError:
            winner = (
                models.Identity.objects.select_related("user")
                .filter(issuer=config.issuer, subject=subject)
                .first()
            )
            if winner is not None:
                return winner.user
            continue  # a username taken meanwhile: pick again
        signals.identity_provisioned.send(
            sender=models.Identity, identity=identity, user=user, claims=claims
        )
        return user
    raise snapshots.StateUnavailable("could not provision the identity")


def claim_groups(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> list[str]:
    """The values of the configured group claims (a list of strings or one string separated by ASCII
    spaces, like a scope), before the issuer's ``group_map`` and ``group_prefix`` apply."""
    names: list[str] = []
    for claim in config.group_claim_names:
        value = claims.get(claim)
        values = (
            scopes.split_scope(value)
            if isinstance(value, str)
            else value
            if isinstance(value, list)
            else []
        )
        names.extend(v for v in values if isinstance(v, str) and v)
    return names


def free_username(config: issuer_config.IssuerConfig, claims: dict[str, Any]) -> str:
    """The configured claim's value (or else ``sub``) when free, else a name derived from the identity."""
    model = get_user_model()
    field = model.USERNAME_FIELD
    wanted = claims.get(config.username_claim) or claims["sub"]
    base = USERNAME_UNSAFE.sub("", wanted)[:150] if isinstance(wanted, str) else ""
    if base and not model._default_manager.filter(**{field: base}).exists():
        return base
    suffix = models.identity_digest(config.issuer, claims["sub"])[:10]
    candidate = f"{(base or 'user')[:139]}-{suffix}"
    n = 1
    while model._default_manager.filter(**{field: candidate}).exists():
        n += 1
        candidate = f"{(base or 'user')[:135]}-{suffix}-{n}"
    return candidate
