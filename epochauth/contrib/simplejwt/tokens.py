"""simplejwt's tokens during a migration: decoded by simplejwt's own classes (its ``SIMPLE_JWT`` key,
algorithm, audience, issuer, leeway, token type and user id claim), then held to epochauth's revocation.

A simplejwt access token has no epochs of ours: like an external issuer's token it is refused when it
was issued before a bump of its user's (or everyone's) epoch, or when its ``jti`` is denied (logout).
What it was minted from counts too, since simplejwt mints access tokens from refresh tokens that may
be revoked or exchanged already: one minted by :class:`~epochauth.contrib.simplejwt.views.TokenRefreshView`
names its refresh token (:data:`CLAIM_REFRESH_ID`, :data:`CLAIM_REFRESH_ISSUED`) and is refused with
it; one minted by simplejwt itself could come from any refresh token of its user, so after a bump it
is refused until every refresh token from before the bump has expired (``SIMPLE_JWT
["REFRESH_TOKEN_LIFETIME"]``), and after an exchange of one of its user's refresh tokens until those
from before the exchange have.
Its signature is checked and its user read once per process; later requests use the memo below and
make no query. ``request.auth.claims`` holds its claims, with ``iss`` (simplejwt's ``ISSUER``, or
:data:`SIMPLEJWT_ISSUER`) and ``sub`` (the user id) added, as every AccessToken has them.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Field
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken
from rest_framework_simplejwt.tokens import RefreshToken as SimpleJWTRefreshToken

from epochauth import (
    communities,
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
SIMPLEJWT_ISSUER = "urn:epochauth:simplejwt"

#: Claims of the access tokens our refresh view mints: the ``jti`` and ``iat`` of their refresh token.
CLAIM_REFRESH_ID = "refresh_jti"
CLAIM_REFRESH_ISSUED = "refresh_iat"

#: simplejwt access token -> its AccessToken: the signature is checked, the user read, once per process.
seen_tokens: snapshots.BoundedMemo[str, tokens.AccessToken] = snapshots.BoundedMemo(
    lambda: conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)

conf.process_cache(seen_tokens.clear)


def _settings() -> Any:
    """simplejwt's settings as they are now: its ``api_settings`` is replaced when ``SIMPLE_JWT``
    changes, so a copy taken at import would keep the old ones."""
    return simplejwt_settings.api_settings


def header_types() -> tuple[str, ...]:
    """simplejwt's ``AUTH_HEADER_TYPES`` (one name or several): the schemes the site's clients send."""
    types = _settings().AUTH_HEADER_TYPES
    return (types,) if isinstance(types, str) else tuple(types)


def migration_open() -> bool:
    """Whether simplejwt tokens are still accepted (``SIMPLEJWT_MIGRATION_ENDS`` not reached)."""
    ends = conf.epochauth_settings.SIMPLEJWT_MIGRATION_ENDS
    return ends is None or timezone.now() < ends


def looks_like_simplejwt(token: str) -> dict[str, Any] | None:
    """The unverified claims of a token shaped like simplejwt's (its type and user id claims, not our
    ``iss``), else None; only to choose who verifies it."""
    try:
        claims = verification.parse(token).claims
    except exceptions.InvalidToken:
        return None
    if _settings().TOKEN_TYPE_CLAIM not in claims or _settings().USER_ID_CLAIM not in claims:
        return None
    if communities.is_ours(claims.get("iss")):
        return None
    return claims


def _user(payload: dict[str, Any]) -> Any:
    """The user a simplejwt token names, by simplejwt's ``USER_ID_FIELD`` and its authentication rule;
    None for an id that field cannot hold (a list, ``"abc"`` for an integer, out of its range)."""
    model = get_user_model()
    user_id = payload[_settings().USER_ID_CLAIM]
    if not isinstance(user_id, str | int) or isinstance(user_id, bool):
        return None
    field = model._meta.get_field(_settings().USER_ID_FIELD)
    try:
        user_id = cast(Field, field).clean(user_id, None)
    except ValidationError:
        return None
    user = model._default_manager.filter(**{_settings().USER_ID_FIELD: user_id}).first()
    if not _settings().USER_AUTHENTICATION_RULE(user):
        return None
    return user


def _claims(payload: dict[str, Any], user: Any) -> dict[str, Any]:
    if not isinstance(payload.get("iat"), int | float):
        raise exceptions.InvalidToken(_("The access token has no iat"))
    if CLAIM_REFRESH_ID in payload and not (
        isinstance(payload[CLAIM_REFRESH_ID], str)
        and isinstance(payload.get(CLAIM_REFRESH_ISSUED), int | float)
    ):
        raise exceptions.InvalidToken(_("The access token's refresh token is malformed"))
    return {**payload, "iss": payload.get("iss") or SIMPLEJWT_ISSUER, "sub": str(user.pk)}


def _leeway_seconds() -> float:
    """simplejwt's ``LEEWAY``: seconds or a timedelta."""
    leeway = _settings().LEEWAY
    return leeway.total_seconds() if isinstance(leeway, timedelta) else float(leeway)


def _refresh_lifetime() -> float:
    """How long a simplejwt refresh token lives (``REFRESH_TOKEN_LIFETIME`` and ``LEEWAY``)."""
    return _settings().REFRESH_TOKEN_LIFETIME.total_seconds() + _leeway_seconds()


def _unchecked_id(access: tokens.AccessToken) -> str:
    """Denied for a while after one of the user's refresh tokens was exchanged: refuses their access
    tokens that name no refresh token (simplejwt's own refresh view may have minted them from it)."""
    return f"{access.issuer}#user:{access.user_id}"


def _check_revocation(
    access: tokens.AccessToken, issued: float | None = None, denied: tuple[str, ...] = ()
) -> None:
    """As an external issuer's token (:func:`~epochauth.revocation.check_external_claims`)."""
    revocation.check_external_claims(
        access.claims,
        str(access.user_id),
        models.identity_digest(access.issuer, access.subject),
        issued=issued,
        denied=denied,
    )


def _check_access_revocation(access: tokens.AccessToken) -> None:
    """A simplejwt access token not revoked, nor the refresh token it may have been minted from."""
    claims = access.claims
    if CLAIM_REFRESH_ID in claims:
        refresh_id = f"{access.issuer}#{claims[CLAIM_REFRESH_ID]}"
        _check_revocation(access, claims[CLAIM_REFRESH_ISSUED], (refresh_id,))
    else:
        _check_revocation(access, claims["iat"] - _refresh_lifetime(), (_unchecked_id(access),))


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
    _check_access_revocation(access)
    return access


class CheckedRefreshToken(NamedTuple):
    """A simplejwt refresh token that may be used: to mint an access token, or to exchange once."""

    token: SimpleJWTRefreshToken
    #: Its claims (with ``iss`` and ``sub``) as an AccessToken, as revocation reads them.
    access: tokens.AccessToken
    #: Its denylist id, denied when it is exchanged.
    token_id: str
    user: Any


def checked_refresh_token(raw: str) -> CheckedRefreshToken:
    """A simplejwt refresh token decoded by simplejwt, its user active, neither revoked nor exchanged;
    raises :class:`~epochauth.exceptions.InvalidToken`."""
    if not migration_open():
        raise exceptions.InvalidToken(
            _("simplejwt refresh tokens are no longer accepted; log in again")
        )
    try:
        # simplejwt 5.5 annotates the encoded token as a Token (its issue #958): a str works.
        refresh = SimpleJWTRefreshToken(raw)  # type: ignore[arg-type]
    except TokenError:
        raise exceptions.InvalidToken(
            _("The simplejwt refresh token is invalid or expired")
        ) from None
    user = _user(refresh.payload)
    if user is None:
        raise exceptions.InvalidToken(_("The user is inactive or deleted"))
    claims = _claims(refresh.payload, user)
    token_id = revocation.denylist_id(claims)
    if token_id is None:
        raise exceptions.InvalidToken(
            _("The simplejwt refresh token has no jti to exchange it once by")
        )
    if revocation.is_revoked(token_id):
        raise exceptions.InvalidToken(_("This simplejwt refresh token was exchanged already"))
    access = tokens.AccessToken(claims, (), user.pk, user.get_username())
    try:
        _check_revocation(access)
    except exceptions.InvalidToken:
        raise exceptions.InvalidToken(_("The simplejwt refresh token was revoked")) from None
    return CheckedRefreshToken(refresh, access, token_id, user)


def refreshed_access_token(raw: str) -> str:
    """A new simplejwt access token from a refresh token that :func:`checked_refresh_token` passes,
    naming that refresh token, so that revoking or exchanging it ends the access token too."""
    refresh = checked_refresh_token(raw).token
    access = refresh.access_token
    access[CLAIM_REFRESH_ID] = refresh["jti"]
    access[CLAIM_REFRESH_ISSUED] = refresh["iat"]
    return str(access)


def exchange_refresh_token(raw: str, request: Any) -> tuple[Any, str] | None:
    """A simplejwt refresh token, once, for a new session of ours; None for other tokens.

    Its ``jti`` goes to the denylist in the same transaction as the session, so a second exchange
    (a copy of the token) is refused, and with it what our refresh view minted from it. So is, for a
    refresh token's lifetime, every access token of the user that names no refresh token: simplejwt's
    own refresh view, if still mounted, may mint them from the exchanged one.
    """
    if looks_like_simplejwt(raw) is None:
        return None
    try:
        refresh = checked_refresh_token(raw)
    except exceptions.InvalidToken as exc:
        raise exceptions.OAuthError("invalid_grant", exc.description) from None
    spent = datetime.fromtimestamp(refresh.token["exp"], tz=UTC) + timedelta(
        seconds=_leeway_seconds()
    )
    with transaction.atomic():
        if not revocation.deny_once(refresh.token_id, spent, reason="simplejwt exchanged"):
            raise exceptions.OAuthError(
                "invalid_grant", _("This simplejwt refresh token was exchanged already")
            )
        revocation.revoke_id(
            _unchecked_id(refresh.access),
            timezone.now() + timedelta(seconds=_refresh_lifetime()),
            reason="simplejwt exchanged",
        )
        return sessions.start_session(
            refresh.user,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            login={"via": "simplejwt refresh token"},
        )
