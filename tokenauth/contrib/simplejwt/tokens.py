"""simplejwt's tokens during a migration: decoded by simplejwt's own classes (its ``SIMPLE_JWT`` key,
algorithm, audience, issuer, leeway, token type and user id claim), then held to tokenauth's revocation.

A simplejwt access token has no epochs of ours: like an external issuer's token it is refused when it
was issued before a bump of its user's (or everyone's) epoch, or when its ``jti`` is denied (logout).
Its signature is checked and its user read once per process; later requests use the memo below and
make no query. ``request.auth.claims`` holds its claims, with ``iss`` (simplejwt's ``ISSUER``, or
:data:`SIMPLEJWT_ISSUER`) and ``sub`` (the user id) added, as every AccessToken has them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken
from rest_framework_simplejwt.tokens import RefreshToken as SimpleJWTRefreshToken

from tokenauth import (
    conf,
    exceptions,
    models,
    revocation,
    sessions,
    snapshots,
    tokens,
    verification,
)

#: The ``iss`` of simplejwt tokens that carry none (simplejwt's default).
SIMPLEJWT_ISSUER = "urn:tokenauth:simplejwt"

#: simplejwt access token -> its AccessToken: the signature is checked, the user read, once per process.
seen_tokens: snapshots.BoundedMemo[str, tokens.AccessToken] = snapshots.BoundedMemo(
    lambda: conf.tokenauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)

conf.process_cache(seen_tokens.clear)


def migration_open() -> bool:
    """Whether simplejwt tokens are still accepted (``SIMPLEJWT_MIGRATION_ENDS`` not reached)."""
    ends = conf.tokenauth_settings.SIMPLEJWT_MIGRATION_ENDS
    return ends is None or timezone.now() < ends


def looks_like_simplejwt(token: str) -> dict[str, Any] | None:
    """The unverified claims of a token shaped like simplejwt's (its type and user id claims, not our
    ``iss``), else None; only to choose who verifies it."""
    try:
        claims = verification.parse(token).claims
    except exceptions.InvalidToken:
        return None
    if api_settings.TOKEN_TYPE_CLAIM not in claims or api_settings.USER_ID_CLAIM not in claims:
        return None
    if claims.get("iss") == conf.tokenauth_settings.ISSUER:
        return None
    return claims


def _user(payload: dict[str, Any]) -> Any:
    """The user a simplejwt token names, by simplejwt's ``USER_ID_FIELD`` and its authentication rule."""
    lookup = {api_settings.USER_ID_FIELD: payload[api_settings.USER_ID_CLAIM]}
    user = get_user_model()._default_manager.filter(**lookup).first()
    if not api_settings.USER_AUTHENTICATION_RULE(user):
        return None
    return user


def _claims(payload: dict[str, Any], user: Any) -> dict[str, Any]:
    if not isinstance(payload.get("iat"), int | float):
        raise exceptions.InvalidToken(_("The access token has no iat"))
    return {**payload, "iss": payload.get("iss") or SIMPLEJWT_ISSUER, "sub": str(user.pk)}


def _leeway_seconds() -> float:
    """simplejwt's ``LEEWAY``: seconds or a timedelta."""
    leeway = api_settings.LEEWAY
    return leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)


def _check_revocation(access: tokens.AccessToken) -> None:
    revocation.check_external_claims(
        access.claims, str(access.user_id), models.identity_digest(access.issuer, access.subject)
    )


def validate_access_token(token: str) -> tokens.AccessToken | None:
    """A simplejwt access token verified, its user active and not revoked; None for other tokens."""
    access = seen_tokens.get(token)
    if access is None:
        if looks_like_simplejwt(token) is None:
            return None
        if not migration_open():
            raise exceptions.InvalidToken(
                _("simplejwt tokens are no longer accepted; log in again")
            )
        try:
            # simplejwt 5.5 annotates the encoded token as a Token (its issue #958): a str works.
            payload = SimpleJWTAccessToken(token).payload  # type: ignore[arg-type]
        except TokenError:
            raise exceptions.InvalidToken(
                _("The simplejwt access token is invalid or expired")
            ) from None
        user = _user(payload)
        if user is None:
            raise exceptions.InvalidToken(_("The user is inactive or deleted"))
        access = tokens.AccessToken(_claims(payload, user), (), user.pk, user.get_username())
        seen_tokens.put(token, access)
    elif not migration_open():
        raise exceptions.InvalidToken(_("simplejwt tokens are no longer accepted; log in again"))
    elif access.claims["exp"] + _leeway_seconds() < time.time():
        raise exceptions.InvalidToken(_("The access token expired"))
    _check_revocation(access)
    return access


def exchange_refresh_token(raw: str, request: Any) -> tuple[Any, str] | None:
    """A simplejwt refresh token, once, for a new session of ours; None for other tokens.

    Its ``jti`` goes to the denylist in the same transaction as the session, so a second exchange
    (a copy of the token) is refused.
    """
    if looks_like_simplejwt(raw) is None:
        return None
    if not migration_open():
        raise exceptions.OAuthError(
            "invalid_grant", _("simplejwt refresh tokens are no longer accepted; log in again")
        )
    try:
        # simplejwt 5.5 annotates the encoded token as a Token (its issue #958): a str works.
        payload = SimpleJWTRefreshToken(raw).payload  # type: ignore[arg-type]
    except TokenError:
        raise exceptions.OAuthError(
            "invalid_grant", _("The simplejwt refresh token is invalid or expired")
        ) from None
    user = _user(payload)
    if user is None:
        raise exceptions.OAuthError("invalid_grant", _("The user is inactive or deleted"))
    try:
        access = tokens.AccessToken(_claims(payload, user), (), user.pk, user.get_username())
        _check_revocation(access)
    except exceptions.InvalidToken:
        raise exceptions.OAuthError(
            "invalid_grant", _("The simplejwt refresh token was revoked")
        ) from None
    token_id = revocation.denylist_id(access.claims)
    if token_id is None:
        raise exceptions.OAuthError(
            "invalid_grant", _("The simplejwt refresh token has no jti to exchange it once by")
        )
    expires = datetime.fromtimestamp(payload["exp"], tz=UTC) + timedelta(seconds=_leeway_seconds())
    with transaction.atomic():
        first = models.RevokedToken.objects.get_or_create(
            jti=token_id, defaults={"expires_at": expires, "reason": "simplejwt exchanged"}
        )[1]
        if not first:
            raise exceptions.OAuthError(
                "invalid_grant", _("This simplejwt refresh token was exchanged already")
            )
        return sessions.start_session(
            user,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            login={"via": "simplejwt refresh token"},
        )
