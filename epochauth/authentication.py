"""DRF authentication: ``Authorization: Bearer <JWT>`` verified without a database query, and
``Authorization: DPoP <JWT>`` with its ``DPoP`` proof (RFC 9449, :mod:`epochauth.dpop`)."""

from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.http import HttpRequest
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from . import (
    communities,
    conf,
    dpop,
    issuers,
    jwks,
    migrating,
    models,
    provisioning,
    revocation,
    scopes,
    snapshots,
    statuslist,
    tokens,
    users,
    verification,
)
from .exceptions import (
    REALM,
    InsufficientScope,
    InvalidProof,
    InvalidToken,
    ProofRequired,
    ServiceUnavailable,
)

ERROR_ATTRIBUTE = "_epochauth_error"


def verify_token(token: str) -> dict[str, Any]:
    """Signature and claims of a token from us or from an allow-listed issuer (not revocation).

    The issuer is read unverified only to choose where the key comes from; an issuer that is
    neither us nor enabled is refused before any network I/O.
    """
    jws = verification.parse(token)
    iss = jws.claims.get("iss")
    if conf.epochauth_settings.LOCAL_TOKENS and communities.is_ours(iss):
        # The site's or a community's: routed by ``iss`` to its keys (communities.py).
        if not communities.accepts(communities.of_issuer(iss)):
            raise InvalidToken(_("The access token's community is not accepted here"))
        return verification.verify(jws, verification.local_policy(iss))
    config = issuers.get_issuer(iss) if isinstance(iss, str) else None
    if config is None:
        raise InvalidToken(_("The access token's issuer is not accepted"))
    return verification.verify(jws, verification.external_policy(config))


def _local_token(claims: dict[str, Any]) -> tokens.AccessToken:
    # A host token's sub is the host (WLCG host.auth); its application's owner stands behind it.
    user_id = claims.get(tokens.CLAIM_OWNER, claims["sub"])
    groups = revocation.check_local_claims(claims, user_id)
    try:
        pk = users.primary_key().to_python(user_id)
    except ValidationError:
        raise InvalidToken(_("The access token's subject is invalid")) from None
    return tokens.AccessToken(
        claims, groups, pk, claims.get(tokens.CLAIM_USERNAME, ""), dpop.confirmation(claims)
    )


def _external_token(claims: dict[str, Any]) -> tokens.AccessToken:
    config = issuers.get_issuer(claims["iss"])
    # Disabled since the token was first seen.
    if config is None:
        raise InvalidToken(_("The access token's issuer is not accepted"))
    granted = frozenset(scopes.split_scope(tokens.scope_string(claims)))
    if not all(config.scope_granted(granted, scope) for scope in config.required_scopes):
        raise InsufficientScope(config.required_scopes)
    statuslist.check_external(claims, config)
    principal = provisioning.resolve(config, claims)
    if not principal.is_active:
        raise InvalidToken(_("The user is inactive"))
    revocation.check_external_claims(
        claims, str(principal.user_id), models.identity_digest(claims["iss"], claims["sub"])
    )
    groups = provisioning.groups_of(config, claims, principal)
    return tokens.AccessToken(
        claims, groups, principal.user_id, principal.username, dpop.confirmation(claims)
    )


def validate_token(token: str) -> tokens.AccessToken:
    """A bearer token verified, not revoked and of an issuer still accepted; raises :class:`InvalidToken`.

    A token's signature is checked once per process (``verified_tokens``); expiry on every call; the
    issuer's standing and revocation on every call, except for our own token sent again while the
    revocation state has not changed in this process (:func:`~epochauth.revocation.generation`).
    """
    if len(token) > conf.epochauth_settings.MAX_TOKEN_BYTES:
        raise InvalidToken(_("The access token is too large"))
    # A JWT is base64url and dots; PyJWT would fail encoding anything else.
    if not token.isascii():
        raise InvalidToken(_("The access token is malformed"))
    entry = tokens.verified_tokens.get(token)
    if entry is not None:
        if entry.deadline < time.time():
            raise InvalidToken(_("The access token expired"))
        passed = entry.passed
        if passed is not None and passed[0] == revocation.generation():
            return passed[1]
        if not _is_local(entry.claims) and not _still_verified(token, entry.claims["iss"]):
            entry = None
    if entry is None:
        try:
            claims = verify_token(token)
        except InvalidToken:
            # Perhaps a token of the system the site is moving from (epochauth.contrib.simplejwt).
            migrated = migrating.validated(token)
            if migrated is None:
                raise
            return migrated
        leeway = conf.epochauth_settings.LEEWAY.total_seconds()
        entry = tokens.Verified(claims, claims["exp"] + leeway)
        tokens.verified_tokens.put(token, entry)
    if not _is_local(entry.claims):
        return _external_token(entry.claims)
    # Read before the check: a change made meanwhile makes the next request check again.
    generation = revocation.generation()
    access = _local_token(entry.claims)
    if generation is not None:
        entry.passed = (generation, access)
    return access


def token_user(access: tokens.AccessToken) -> Any:
    """The user of a validated token: a :class:`TokenUser` without a query, or the active user row
    with ``LOAD_USER``."""
    if not conf.epochauth_settings.LOAD_USER:
        return users.TokenUser(access.user_id, access.username, access.groups)
    user = get_user_model()._default_manager.filter(pk=access.user_id, is_active=True).first()
    if user is None:
        raise InvalidToken(_("The user is inactive or deleted"))
    return user


def authenticate_token(token: str) -> tuple[Any, tokens.AccessToken]:
    """Verify a bearer token and return ``(user, AccessToken)``; raises :class:`InvalidToken`, and
    :class:`ProofRequired` for a token bound to a DPoP key, which no caller without its proof may use
    (RFC 9449 section 7.2: the OAuth server's userinfo, registration and token exchange), and for
    every token of a site that takes no bearer tokens (``DPOP_REQUIRED``)."""
    access = validate_token(token)
    check_bearer_use(access)
    return token_user(access), access


def check_bearer_use(access: tokens.AccessToken) -> None:
    """Raise :class:`ProofRequired` for a token sent as ``Bearer`` that may not be: one bound to a
    DPoP key (RFC 9449 section 7.2), or any on a site that takes no bearer tokens (``DPOP_REQUIRED``)."""
    if access.dpop_jkt is not None or conf.epochauth_settings.DPOP_REQUIRED:
        raise ProofRequired()


def check_proof(request: HttpRequest, raw_token: str, access: tokens.AccessToken) -> dpop.Proof:
    """The request's one ``DPoP`` proof, of the key ``access`` is bound to, for this method and URL
    (``build_absolute_uri``: behind a proxy, set ``SECURE_PROXY_SSL_HEADER`` and
    ``USE_X_FORWARDED_HOST`` as the proxy needs). Raises :class:`InvalidToken` for a token bound to
    no key, :class:`InvalidProof` for a refused proof."""
    if access.dpop_jkt is None:
        raise InvalidToken(_("The access token is not bound to a DPoP key"))
    verified = dpop.verify_proof(
        dpop.request_proof(request.META),
        method=request.method or "",
        url=request.build_absolute_uri(),
        access_token=raw_token,
    )
    if not constant_time_compare(verified.jkt, access.dpop_jkt):
        raise InvalidProof(_("The DPoP proof is not of the key the access token is bound to"))
    return verified


def authenticate_bound_token(request: HttpRequest, token: str) -> tuple[Any, tokens.AccessToken]:
    """:func:`authenticate_token` for a token sent as ``Authorization: DPoP`` outside DRF (the OAuth
    server's userinfo): it must be bound, and ``request`` must carry a proof of its key
    (:func:`check_proof`)."""
    access = validate_token(token)
    check_proof(request, token, access)
    return token_user(access), access


def is_dpop_scheme(header: str) -> bool:
    """Whether an ``Authorization`` header uses the ``DPoP`` scheme (case-insensitive)."""
    # The first character first: a bearer request pays one string index for DPoP.
    return header[:1] in "Dd" and header[:5].lower() == "dpop "


def _still_verified(token: str, iss: str) -> bool:
    """Whether an external token's memo still holds: its issuer's keys need no refresh (a withdrawn
    key must stop working), and the issuer is unchanged. The issuer table is read first, since a
    change to it (in any process: pushed) drops the memo."""
    return (
        issuers.get_issuer(iss) is not None
        and jwks.jwks_cache.is_fresh(iss)
        and tokens.verified_tokens.get(token) is not None
    )


def _is_local(claims: dict[str, Any]) -> bool:
    return bool(conf.epochauth_settings.LOCAL_TOKENS) and communities.is_ours(claims["iss"])


class BearerAuthentication(BaseAuthentication):
    """RFC 6750 bearer tokens and RFC 9449 DPoP-bound tokens: optional unless the view's permissions
    require a user.

    A token bound to a key (``cnf.jkt``) passes only as ``Authorization: DPoP`` with one ``DPoP``
    proof of that key for this request (:func:`~epochauth.dpop.verify_proof`); as ``Bearer`` it is
    refused (section 7.2), and so is every token with ``DPOP_REQUIRED``. A token without ``cnf.jkt``
    sent as ``DPoP`` is refused too: section 7.1 leaves it to the resource server, and a client that
    holds a key was meant to get a bound token. A bad token is a 401 whose ``WWW-Authenticate`` says
    why; when revocation state (or the proofs' replay cache) cannot be read, the request fails closed
    with 503.
    """

    keyword = "Bearer"
    realm = REALM

    def authenticate(self, request: Request) -> tuple[Any, tokens.AccessToken] | None:
        """The steps below; override a step, not this. ``None`` when the request has no token (the
        next authentication class may try), a 401 or 503 when it has a bad one."""
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None:
            return None
        try:
            validated_token = self.get_validated_token(raw_token)
            if is_dpop_scheme(header):
                self.check_proof(request, raw_token, validated_token)
            else:
                check_bearer_use(validated_token)
            return self.get_user(validated_token), validated_token
        except InvalidToken as exc:
            setattr(request._request, ERROR_ATTRIBUTE, exc)
            raise exceptions.AuthenticationFailed(str(exc.description), code=exc.error) from None
        except (snapshots.StateUnavailable, jwks.IssuerUnavailable):
            raise ServiceUnavailable() from None

    def get_header(self, request: Request) -> str | None:
        """The header that carries the token; override to read another one (a proxy's, say)."""
        return request.META.get("HTTP_AUTHORIZATION")

    def get_raw_token(self, header: str) -> str | None:
        """The token in ``header`` when its scheme is :attr:`keyword` or ``DPoP`` (case-insensitive),
        or one the system the site is moving from used (:func:`~epochauth.migrating.accepts_scheme`),
        else None."""
        scheme, _, token = header.partition(" ")
        folded = scheme.lower()
        if (
            folded != self.keyword.lower()
            and folded != "dpop"
            and not migrating.accepts_scheme(scheme)
        ):
            return None
        return token.strip()

    def get_validated_token(self, raw_token: str) -> tokens.AccessToken:
        """Signature, claims, issuer and revocation (:func:`validate_token`); raises InvalidToken.

        Override to refuse more (check a claim, say) and call ``super()`` first: the verification
        itself is not a hook, so no subclass can accept a token it refuses.
        """
        return validate_token(raw_token)

    def check_proof(
        self, request: Request, raw_token: str, validated_token: tokens.AccessToken
    ) -> dpop.Proof:
        """The request's one ``DPoP`` proof of the key ``validated_token`` is bound to
        (:func:`check_proof`); override to check more of it and call ``super()`` first."""
        return check_proof(request, raw_token, validated_token)

    def get_user(self, validated_token: tokens.AccessToken) -> Any:
        """``request.user`` for a validated token (:func:`token_user`); override to load it otherwise.
        Raise :class:`~epochauth.exceptions.InvalidToken` to refuse the request."""
        return token_user(validated_token)

    def authenticate_header(self, request: Request) -> str:
        """The challenge of a 401: the error of the scheme the request used, else both schemes
        (RFC 9449 section 7.1; DRF sends the first authentication class's challenge only)."""
        error: InvalidToken | None = getattr(request._request, ERROR_ATTRIBUTE, None)
        bearer = f'{self.keyword} realm="{self.realm}"'
        algorithms = " ".join(conf.epochauth_settings.DPOP_ALGORITHMS)
        offer = f'{dpop.SCHEME} realm="{self.realm}", algs="{algorithms}"'
        if error is None:
            return f"{bearer}, {offer}"
        detail = f'error="{error.error}", error_description="{error.header_description}"'
        used_dpop = is_dpop_scheme(request.META.get("HTTP_AUTHORIZATION", ""))
        if used_dpop or isinstance(error, ProofRequired):
            return f"{offer}, {detail}"
        return f"{bearer}, {detail}"


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication, switched off by ``EPOCHAUTH["SESSION_AUTH_FALLBACK"] = False``."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        if not conf.epochauth_settings.SESSION_AUTH_FALLBACK:
            return None
        return super().authenticate(request)
