"""Keeping, using and ending upstream grants.

Invariants: a refresh token is stored only encrypted (``MultiFernet`` over ``TOKEN_MANAGER_KEYS``, the
first key encrypts, all decrypt, so keys rotate by putting a new one first); one live grant per (user,
issuer), a newer one ends the older; an ended grant is no longer handed out at once (it ends in the
transaction of the logout), and is revoked at the provider (RFC 7009) after the commit by this
process's background worker, so that a provider that hangs does not keep the logout waiting; when the
provider fails, the grant stays with its error for ``epochauth_upstream_grants`` and the admin.
Access tokens are cached encrypted in the shared cache, keyed by the live grant, so an ended grant's
cached tokens are never handed out either.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import requests
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .. import background, communities, conf, models, scopes, urns
from ..oidc import providers
from .models import UpstreamGrant

logger = logging.getLogger(__name__)

#: Revokes ended grants at their provider off the request path (``revocations.drain(timeout)`` waits).
revocations = background.Worker("epochauth-upstream-revocation")


class GrantUnavailable(Exception):
    """No live grant for the user at the issuer, or one that cannot be used (unreadable with our keys,
    refused by the provider). ``error`` is the RFC 6749 code the endpoint answers with."""

    def __init__(self, description: str | Promise, error: str = "invalid_grant") -> None:
        super().__init__(description)
        self.error, self.description = error, description


class UpstreamUnavailable(Exception):
    """The provider could not be reached or answered garbage; the grant stays as it was."""


def vault() -> MultiFernet:
    keys = conf.epochauth_settings.TOKEN_MANAGER_KEYS
    if not keys:
        raise ImproperlyConfigured(
            'EPOCHAUTH["TOKEN_MANAGER_KEYS"] is empty (check epochauth.tokenmanager.E001)'
        )
    return MultiFernet([Fernet(key) for key in keys])


def encrypt(value: str) -> str:
    return vault().encrypt(value.encode()).decode()


def decrypt(value: str) -> str:
    try:
        return vault().decrypt(value.encode()).decode()
    except InvalidToken:
        raise GrantUnavailable(
            _("The stored grant cannot be read with the configured keys")
        ) from None


def keep(
    user: Any, issuer: str, refresh_token: str, scope: str = "", *, via: str = "browser_login"
) -> UpstreamGrant:
    """Store the user's new grant at ``issuer``; the older one ends (DIRAC: "extra tokens are revoked")."""
    sealed = encrypt(refresh_token)
    with transaction.atomic():
        replaced = _end(UpstreamGrant.objects.filter(user=user, issuer=issuer), "replaced")
        grant = UpstreamGrant.objects.create(
            user=user, issuer=issuer, encrypted_token=sealed, scope=scope
        )
        detail = {"issuer": issuer, "replaced": len(replaced), "via": via}
        models.AuditEvent.objects.create(action="upstream_grant_stored", user=user, detail=detail)
    return grant


def end_grants(
    user_ids: Iterable[Any] | None, reason: str, *, issuer: str | None = None
) -> list[int]:
    """End the live grants of these users (every user's for None), at ``issuer`` only when given;
    revoked at the provider in the background after the commit. Returns the ended grants' ids."""
    grants = (
        UpstreamGrant.objects.all()
        if user_ids is None
        else UpstreamGrant.objects.filter(user_id__in=user_ids)
    )
    if issuer is not None:
        grants = grants.filter(issuer=issuer)
    return end(grants, reason)


def end(grants: Any, reason: str) -> list[int]:
    """End the live ones of these grants (a queryset), as :func:`end_grants` does."""
    with transaction.atomic():
        return _end(grants, reason)


def _end(grants: Any, reason: str) -> list[int]:
    ids = list(
        grants.select_for_update().filter(ended_at__isnull=True).values_list("pk", flat=True)
    )
    if ids:
        UpstreamGrant.objects.filter(pk__in=ids).update(
            ended_at=timezone.now(), end_reason=reason[:64]
        )
        transaction.on_commit(lambda: revocations.submit(lambda: revoke_ended(ids)))
    return ids


def revoke_ended(ids: Iterable[int] | None = None) -> int:
    """Revoke ended grants at their provider and delete those it confirmed; how many are left."""
    ended = UpstreamGrant.objects.filter(ended_at__isnull=False)
    if ids is not None:
        ended = ended.filter(pk__in=list(ids))
    left = 0
    for grant in ended:
        error = _revoke(grant)
        if error is None:
            grant.delete()
            continue
        left += 1
        logger.warning(
            "epochauth: revoking an upstream grant at %s failed: %s", grant.issuer, error
        )
        UpstreamGrant.objects.filter(pk=grant.pk).update(
            revoke_attempts=grant.revoke_attempts + 1, revoke_error=error[:255]
        )
    return left


def _revoke(grant: UpstreamGrant) -> str | None:
    """RFC 7009 at the grant's provider: None when it is done (or there is nothing to do), else why not."""
    provider = providers.provider_by_issuer(grant.issuer)
    if provider is None:
        return "the issuer is no login provider (any more)"
    try:
        if not provider.metadata().get("revocation_endpoint"):
            # nothing to call: forgetting our copy is all that can be done
            return None
        token = decrypt(grant.encrypted_token)
        response = provider.client_post(
            "revocation_endpoint", {"token": token, "token_type_hint": "refresh_token"}
        )
    except GrantUnavailable as exc:
        # stored in the grant's row: the text in the language of this request, not a lazy one
        return str(exc.description)
    except (providers.ProviderUnavailable, requests.RequestException) as exc:
        return f"{type(exc).__name__}: {exc}"[:255]
    # Section 2.2: 200 also for a token the provider no longer knows.
    return (
        None
        if response.status_code == 200
        else f"revocation endpoint answered {response.status_code}"
    )


def live_grant(user: Any, issuer: str | None) -> UpstreamGrant:
    grants = UpstreamGrant.objects.filter(user=user, ended_at__isnull=True)
    if issuer is not None:
        grants = grants.filter(issuer=issuer)
    found = list(grants[:2])
    if len(found) != 1:
        if not found:
            raise GrantUnavailable(_("The user has no stored grant"))
        raise GrantUnavailable(_("The user has more than one stored grant (name the issuer)"))
    return found[0]


def access_token(
    user: Any,
    issuer: str | None = None,
    *,
    scope: str | None = None,
    resource: str | None = None,
    group: str | None = None,
    actor_id: Any = None,
    client_id: str | None = None,
    community: communities.Community | None = None,
) -> dict[str, Any]:
    """A fresh upstream access token for ``user`` (``access_token``, ``token_type``, ``expires_in``,
    ``scope``, ``issuer``): from the cache until shortly before it expires, else refreshed at the
    provider, narrowed to ``scope`` and ``resource`` (RFC 8707) when given, and to the scope of
    ``group`` at the issuer (:func:`group_scope`; ``community``: the caller's token's, whose groups
    and the site's are the only ones it maps). Every hand-out is audited.

    Raises :class:`GrantUnavailable` and :class:`UpstreamUnavailable`. Never for a browser.
    """
    grant = live_grant(user, issuer)
    if group is not None:
        scope = group_scope(user, grant.issuer, group, scope, community)
    cache = caches[conf.epochauth_settings.CACHE_ALIAS]
    key = (
        "epochauth:upstream:"
        + hashlib.sha256(json.dumps([grant.pk, scope, resource]).encode()).hexdigest()
    )
    answer = _cached(cache.get(key))
    if (
        answer is None
        or answer["expires_at"] - conf.epochauth_settings.TOKEN_MANAGER_MARGIN.total_seconds()
        <= _now()
    ):
        answer = _refresh(grant, scope, resource)
        lifetime = (
            answer["expires_at"]
            - conf.epochauth_settings.TOKEN_MANAGER_MARGIN.total_seconds()
            - _now()
        )
        if lifetime > 0:
            cache.set(key, encrypt(json.dumps(answer)), int(lifetime))
    models.AuditEvent.objects.create(
        action="upstream_token_issued",
        user=user,
        actor_id=actor_id,
        detail={
            "issuer": grant.issuer,
            "scope": scope,
            "resource": resource,
            "group": group,
            "client_id": client_id,
            "vo": community.slug if community is not None else None,
        },
    )
    return {
        "access_token": answer["access_token"],
        "token_type": "Bearer",
        "expires_in": max(int(answer["expires_at"] - _now()), 0),
        "scope": answer["scope"],
        "issuer": grant.issuer,
    }


def group_scope(
    user: Any,
    issuer: str,
    group: str,
    scope: str | None,
    community: communities.Community | None = None,
) -> str:
    """The upstream scope of the user's ``group`` at ``issuer`` (its ``group_scopes``); an explicit
    ``scope`` must lie within it. A user outside the group, a group the issuer does not map, a group
    of another community than ``community`` (the caller's token's: a group of belle2 is no group of
    an lhcb token, as ``g:`` would not select it) and a scope beyond the group's are
    ``invalid_scope``: never another group's scope, never a wider one."""
    provider = providers.provider_by_issuer(issuer)
    mapped = provider.config.upstream_scope(group) if provider is not None else None
    if mapped is None:
        raise GrantUnavailable(_("The group has no scope at this issuer"), "invalid_scope")
    joined = user.groups.filter(name=group).values_list("pk", flat=True).first()
    if joined is None:
        raise GrantUnavailable(_("The user is not in the group"), "invalid_scope")
    if communities.foreign_groups(community, [joined]):
        raise GrantUnavailable(_("The group is not in the token's community"), "invalid_scope")
    if scope is None:
        return mapped
    if not set(scopes.split_scope(scope)) <= set(scopes.split_scope(mapped)):
        raise GrantUnavailable(_("The scope exceeds the group's scope"), "invalid_scope")
    return scope


def _cached(sealed: Any) -> dict[str, Any] | None:
    """A cached answer; one sealed with a key no longer configured is a miss."""
    try:
        return json.loads(decrypt(sealed)) if isinstance(sealed, str) else None
    except GrantUnavailable:
        return None


def _now() -> float:
    return timezone.now().timestamp()


def _refresh(grant: UpstreamGrant, scope: str | None, resource: str | None) -> dict[str, Any]:
    """Use the grant at its provider, under a row lock: a rotated refresh token replaces the stored one
    before anyone else can use the old one. A provider that calls it invalid ends the grant."""
    with transaction.atomic():
        locked = (
            UpstreamGrant.objects.select_for_update()
            .filter(pk=grant.pk, ended_at__isnull=True)
            .first()
        )
        if locked is None:
            raise GrantUnavailable(_("The stored grant has ended"))
        provider = providers.provider_by_issuer(locked.issuer)
        if provider is None:
            raise GrantUnavailable(_("The grant's issuer is no login provider (any more)"))
        body = _refresh_request(provider, decrypt(locked.encrypted_token), scope, resource)
        if body is None:
            locked.delete()
        else:
            if isinstance(body.get("refresh_token"), str) and body["refresh_token"]:
                locked.encrypted_token = encrypt(body["refresh_token"])
            locked.last_used = timezone.now()
            locked.save(update_fields=["encrypted_token", "last_used"])
    if body is None:
        raise GrantUnavailable(_("The provider no longer accepts the stored grant"))
    return {
        "access_token": body["access_token"],
        "expires_at": _now() + body["expires_in"],
        "scope": body.get("scope")
        if isinstance(body.get("scope"), str)
        else (scope or locked.scope),
    }


def _token_request(provider: providers.Provider, payload: dict[str, str]) -> dict[str, Any] | None:
    """The provider's JSON answer at its token endpoint; None when it calls the grant invalid."""
    try:
        response = provider.client_post("token_endpoint", payload)
    except (providers.ProviderUnavailable, requests.RequestException) as exc:
        raise UpstreamUnavailable(f"{type(exc).__name__}") from None
    if response.status_code >= 500:
        raise UpstreamUnavailable(f"the provider answered {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise UpstreamUnavailable("the provider answered garbage")
    if response.status_code != 200:
        error = body.get("error") if isinstance(body.get("error"), str) else ""
        if error == "invalid_grant":
            return None
        if not error:
            raise UpstreamUnavailable(f"the provider answered {response.status_code}")
        # invalid_scope, invalid_target ...: the caller asked for what the grant does not cover
        raise GrantUnavailable(
            _("The provider refused: %(error)s") % {"error": error[:64]}, error[:64]
        )
    return body


def _refresh_request(
    provider: providers.Provider, refresh_token: str, scope: str | None, resource: str | None
) -> dict[str, Any] | None:
    """The refresh at the provider, its answer checked; None when it says the grant is invalid."""
    payload = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    if scope:
        payload["scope"] = scope
    if resource:
        payload["resource"] = resource
    body = _token_request(provider, payload)
    if body is None:
        return None
    expires_in = body.get("expires_in")
    if (
        not isinstance(body.get("access_token"), str)
        or not isinstance(expires_in, int)
        or expires_in <= 0
    ):
        raise UpstreamUnavailable("the provider answered garbage")
    return body


def keep_from_exchange(user: Any, issuer: str, subject_token: str) -> UpstreamGrant | None:
    """At our token exchange of ``issuer``'s access token: ask that provider for a grant of our own
    (RFC 8693, a refresh token for the user's access token) and keep it, when the provider is a login
    provider, ``OIDC_SCOPES`` has ``offline_access``, its metadata lists the grant type, and the user
    has no live grant there yet (a service that exchanges often must not pile up grants). Whatever
    the provider answers, our exchange stands: a failure is logged (never the token), None returned."""
    provider = providers.provider_by_issuer(issuer)
    wanted = conf.epochauth_settings.OIDC_SCOPES
    if provider is None or "offline_access" not in scopes.split_scope(wanted):
        return None
    if UpstreamGrant.objects.filter(user=user, issuer=issuer, ended_at__isnull=True).exists():
        return None
    try:
        if urns.TOKEN_EXCHANGE not in (provider.metadata().get("grant_types_supported") or ()):
            return None
        body = _token_request(
            provider,
            {
                "grant_type": urns.TOKEN_EXCHANGE,
                "subject_token": subject_token,
                "subject_token_type": urns.ACCESS_TOKEN_TYPE,
                "requested_token_type": urns.REFRESH_TOKEN_TYPE,
                "scope": wanted,
            },
        )
    except (GrantUnavailable, UpstreamUnavailable, providers.ProviderUnavailable) as exc:
        logger.warning("epochauth: no upstream grant from the exchange at %s: %s", issuer, exc)
        return None
    if body is None:
        logger.warning("epochauth: the provider %s refused the exchange (invalid_grant)", issuer)
        return None
    # Section 2.2.1: the token issued is in access_token and issued_token_type says which kind it
    # is; providers that answer an access token put the refresh token beside it (as a refresh does).
    refresh_token = body.get(
        "access_token"
        if body.get("issued_token_type") == urns.REFRESH_TOKEN_TYPE
        else "refresh_token"
    )
    if not isinstance(refresh_token, str) or not refresh_token:
        logger.warning("epochauth: the exchange at %s granted no refresh token", issuer)
        return None
    scope = body.get("scope")
    return keep(
        user,
        issuer,
        refresh_token,
        scope if isinstance(scope, str) else wanted,
        via="token_exchange",
    )
