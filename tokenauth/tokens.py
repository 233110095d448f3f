"""Mint our own access tokens (RFC 9068 JWTs). Claim names live here and nowhere else; verification
is :mod:`tokenauth.verification`."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.db.models import Q

from . import signals
from .conf import tokenauth_settings
from .keys import get_keyring
from .models import Epoch
from .scopes import split_scope
from .snapshots import BoundedMemo

ACCESS_TOKEN_TYPE = "at+jwt"

# Claim names beyond the registered ones (iss, sub, aud, exp, iat, jti, scope, client_id).
CLAIM_USERNAME = "preferred_username"
CLAIM_GROUPS = "groups"
CLAIM_GROUP = "group"
CLAIM_GROUP_ID = "gid"
CLAIM_SESSION = "sid"
CLAIM_TOKEN_FAMILY = "token_family"  # the refresh-token family of an OAuth-server token (tokenauth.oauth)
CLAIM_EPOCH = "epoch"
CLAIM_GROUP_EPOCH = "group_epoch"
CLAIM_GLOBAL_EPOCH = "global_epoch"

REQUIRED_CLAIMS = ["iss", "sub", "exp", "iat", "jti", CLAIM_EPOCH, CLAIM_GLOBAL_EPOCH]


#: Token -> verified claims, so a signature is checked once per token per process; expiry and
#: revocation are still checked on every request by the caller.
verified_tokens: BoundedMemo[str, dict[str, Any]] = BoundedMemo(
    lambda: tokenauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


@dataclass(frozen=True)
class AccessToken:
    """What ``request.auth`` holds after bearer authentication: the verified claims, never the token."""

    claims: dict[str, Any]
    #: The caller's groups here: from our token's claim, or from the database for an external identity.
    groups: tuple[str, ...] = ()

    @property
    def issuer(self) -> str:
        return self.claims["iss"]

    @property
    def subject(self) -> str:
        return self.claims["sub"]

    @property
    def jti(self) -> str | None:
        return self.claims.get("jti")

    @property
    def is_local(self) -> bool:
        return self.claims["iss"] == tokenauth_settings.ISSUER

    @property
    def session_id(self) -> str | None:
        """Our refresh session; an external issuer's ``sid`` names a session of its own, not ours."""
        return self.claims.get(CLAIM_SESSION) if self.is_local else None

    @property
    def group(self) -> str | None:
        return self.claims.get(CLAIM_GROUP)

    @property
    def scope(self) -> str:
        return scope_string(self.claims)

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(split_scope(self.scope))

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims["exp"], tz=UTC)


def scope_string(claims: dict[str, Any]) -> str:
    """``scope`` (RFC 9068 space-delimited string) or ``scp`` (a list or a string, as some issuers send)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope
    scp = claims.get("scp")
    if isinstance(scp, str):
        return scp
    if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
        return " ".join(scp)
    return ""


def current_epochs(user_id: str, group_id: str | None) -> dict[str, int]:
    """Epoch claims for a new token, read from the database (minting touches the DB anyway)."""
    wanted = Q(kind=Epoch.Kind.USER, object_id=user_id) | Q(kind=Epoch.Kind.GLOBAL, object_id="")
    if group_id is not None:
        wanted |= Q(kind=Epoch.Kind.GROUP, object_id=group_id)
    values = {kind: value for kind, value in Epoch.objects.filter(wanted).values_list("kind", "value")}
    claims = {
        CLAIM_EPOCH: values.get(Epoch.Kind.USER, 0),
        CLAIM_GLOBAL_EPOCH: values.get(Epoch.Kind.GLOBAL, 0),
    }
    if group_id is not None:
        claims[CLAIM_GROUP_EPOCH] = values.get(Epoch.Kind.GROUP, 0)
    return claims


def mint_access_token(
    user: Any,
    *,
    scope: str = "",
    group: Any = None,
    session_id: str | None = None,
    lifetime: timedelta | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> IssuedToken:
    """Sign an access token for ``user``; ``group`` (a Group) is the selected group, if any."""
    keyring = get_keyring()
    if lifetime is None:
        lifetime = tokenauth_settings.ACCESS_TOKEN_LIFETIME
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": tokenauth_settings.ISSUER,
        "sub": str(user.pk),
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime.total_seconds()),
        "jti": uuid.uuid4().hex,
        "scope": scope,
        CLAIM_USERNAME: user.get_username(),
        CLAIM_GROUPS: sorted(user.groups.values_list("name", flat=True)),
        **current_epochs(str(user.pk), str(group.pk) if group is not None else None),
    }
    if tokenauth_settings.AUDIENCE:
        claims["aud"] = tokenauth_settings.AUDIENCE
    if group is not None:
        claims[CLAIM_GROUP] = group.name
        claims[CLAIM_GROUP_ID] = str(group.pk)
    if session_id:
        claims[CLAIM_SESSION] = session_id
    claims.update(extra_claims or {})
    token = jwt.encode(
        claims,
        keyring.signing.signing_key,
        algorithm=keyring.signing.algorithm,
        headers={"kid": keyring.signing.kid, "typ": ACCESS_TOKEN_TYPE},
    )
    signals.token_issued.send(sender=AccessToken, user=user, claims=claims, session_id=session_id)
    return IssuedToken(token=token, claims=claims, expires_in=claims["exp"] - now)
