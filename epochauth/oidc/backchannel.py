"""OpenID Connect Back-Channel Logout 1.0: a provider tells us that a user's session there ended.

The provider POSTs a Logout Token (spec section 2.4) to ``/oidc/backchannel-logout/``. It is verified
like an ID token of an allow-listed issuer (section 2.6): the signature with the issuer's keys from the
shared JWKS cache and one of its pinned algorithms, ``aud`` our client id at that issuer and no other
audience (nor an ``azp`` naming another client), and the rules that keep any other JWT from passing
for a logout token (``typ``, ``events``, no ``nonce``). Then (section 2.7) a token with ``sub`` ends
every token and session of that identity's user (an epoch bump), and one with ``sid`` the browser
logins of that provider session: their Django sessions and the API sessions started on their pages.

Ordering: the ``jti`` is claimed in the shared cache (``add``: of two processes racing on one token,
one wins) only once the token verified; the logout then runs in one transaction, and if it fails the
claim is given back, so the provider may deliver the token again. Only a process that dies between
the claim and the commit leaves a claim behind: the provider's retry is then refused as a replay.
Needs only epochauth itself (not mozilla-django-oidc).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from dataclasses import dataclass
from importlib import import_module
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.http import HttpRequest
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .. import (
    conf,
    exceptions,
    issuers,
    jwks,
    models,
    revocation,
    sessions,
    signals,
    snapshots,
    urns,
    verification,
)

logger = logging.getLogger(__name__)

BACKCHANNEL_LOGOUT_EVENT = urns.BACKCHANNEL_LOGOUT_EVENT
#: Section 2.4 and RFC 8725 section 3.11; a media type is compared without case and may leave out
#: "application/" (RFC 7515 section 4.1.9). Explicit typing is only recommended: JWT libraries (PyJWT,
#: joserfc) and Keycloak before 25 type logout tokens ``JWT``, and ``events`` with no ``nonce`` sets
#: them apart from the issuer's other JWTs (:func:`_logout_claims`). Any other type is refused.
LOGOUT_TOKEN_TYPES = verification.media_types("logout+jwt", "jwt")
#: The length of Django's session keys (``AbstractBaseSession.session_key``); a signed-cookie
#: session has a longer one and no server-side state to end.
SESSION_KEY_LENGTH = 40


@dataclass(frozen=True)
class LogoutToken:
    """The verified claims that say whose sessions end."""

    issuer: str
    jti: str
    subject: str | None
    sid: str | None


def _refused(description: str | Promise) -> exceptions.OAuthError:
    """Section 2.8: 400 with an RFC 6749 error body; the description never holds the token."""
    logger.warning("epochauth: back-channel logout refused: %s", description)
    return exceptions.OAuthError("invalid_request", description)


def verify_logout_token(token: str) -> LogoutToken:
    """Section 2.6. Raises OAuthError (400), ServiceUnavailable when the issuer's keys cannot be read,
    StateUnavailable when the issuer table cannot."""
    if len(token) > conf.epochauth_settings.MAX_TOKEN_BYTES:
        raise _refused(_("The logout token is too long"))
    try:
        jws = verification.parse(token)
    except exceptions.InvalidToken:
        raise _refused(_("The logout token is malformed")) from None
    issuer = jws.claims.get("iss")
    # The allow-list before the network.
    config = issuers.get_issuer(issuer) if isinstance(issuer, str) else None
    if config is None or not config.client_id:
        raise _refused(_("The logout token's issuer is not an identity provider of this service"))
    policy = verification.Policy.for_issuer(
        config,
        audience=(config.client_id,),
        required=("iss", "aud", "iat", "jti"),  # exp too, in the final spec; checked when present
        types=LOGOUT_TOKEN_TYPES,
        subject_required=False,
    )
    try:
        claims = verification.verify(jws, policy)
    except jwks.IssuerUnavailable:
        raise exceptions.ServiceUnavailable() from None
    except verification.WrongType:
        raise _refused(_("The token is not a logout token")) from None
    except verification.TokenExpired:
        raise _refused(_("The logout token expired")) from None
    except verification.WrongAudience:
        raise _refused(_("The logout token is meant for another client")) from None
    except exceptions.InvalidToken:
        raise _refused(_("The logout token's signature or claims are invalid")) from None
    if not _only_for(claims, config.client_id):
        raise _refused(_("The logout token is meant for another client"))
    return _logout_claims(claims)


def _only_for(claims: dict[str, Any], client_id: str) -> bool:
    """Section 2.6 step 3 (OIDC Core 3.1.3.7 step 3): a token with an audience we do not trust is
    refused, and we trust none but ourselves, so every ``aud`` entry is our client id; an ``azp``
    (step 5) names us too. Otherwise a token meant for another client could end our sessions."""
    audience = claims["aud"]
    audiences = audience if isinstance(audience, list) else [audience]
    if any(name != client_id for name in audiences):
        return False
    return claims.get("azp", client_id) == client_id


def _logout_claims(claims: dict[str, Any]) -> LogoutToken:
    """What sets a logout token apart from the issuer's other JWTs, and names what ends."""
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_LOGOUT_EVENT), dict):
        raise _refused(_("The token carries no back-channel logout event"))
    # Section 2.4: an ID token cannot pass for a logout token, nor the reverse.
    if "nonce" in claims:
        raise _refused(_("A logout token carries no nonce"))
    if "sid" in claims and not verification.is_identifier(claims["sid"]):
        raise _refused(_("The logout token's sid is invalid"))
    if "sub" not in claims and "sid" not in claims:
        raise _refused(_("The logout token names neither sub nor sid"))
    if not verification.is_identifier(claims["jti"]):
        raise _refused(_("The logout token's jti is invalid"))
    max_age = conf.epochauth_settings.BACKCHANNEL_LOGOUT_MAX_AGE + conf.epochauth_settings.LEEWAY
    if claims["iat"] < time.time() - max_age.total_seconds():
        raise _refused(_("The logout token is too old"))
    return LogoutToken(claims["iss"], claims["jti"], claims.get("sub"), claims.get("sid"))


def _jti_key(token: LogoutToken) -> str:
    digest = hashlib.sha256(f"{token.issuer}\0{token.jti}".encode()).hexdigest()
    return f"{snapshots.CACHE_PREFIX}logout-jti:{digest}"


def _jti_lifetime() -> int:
    """A token is accepted from LEEWAY before its iat to MAX_AGE + LEEWAY after: no longer than this."""
    window = (
        conf.epochauth_settings.BACKCHANNEL_LOGOUT_MAX_AGE + 2 * conf.epochauth_settings.LEEWAY
    )
    return math.ceil(window.total_seconds()) + 1


def log_out(token: LogoutToken) -> None:
    """Section 2.7, once per ``jti``: claimed before, given back when the logout fails (module docs).
    Raises OAuthError for a replay, StateUnavailable when the shared cache cannot tell."""
    key = _jti_key(token)
    if not snapshots.required_cache_call("add", key, True, _jti_lifetime()):
        raise _refused(_("The logout token was used already"))
    try:
        with transaction.atomic():
            _end_sessions(token)
    except BaseException:
        snapshots.shared_cache_call("delete", key)
        raise


def _end_sessions(token: LogoutToken) -> None:
    """The browser logins of ``sid`` and, with ``sub``, everything of the identity's user; nothing to
    do for an unknown one. The bump comes last, so only the commit can fail after it published."""
    logins = end_browser_logins(token) if token.sid is not None else []
    identity = None
    if token.subject is not None:
        identity = models.Identity.objects.filter(
            issuer=token.issuer, subject=token.subject
        ).first()
    user_id = identity.user_id if identity is not None else next((b.user_id for b in logins), None)
    models.AuditEvent.objects.create(
        action="backchannel_logout",
        user_id=user_id,
        detail={
            "issuer": token.issuer,
            "subject": token.subject,
            "sid": token.sid,
            "browser_sessions": len(logins),
        },
    )
    if identity is not None:
        revocation.bump_epoch(
            models.Epoch.Kind.USER, str(identity.user_id), reason="backchannel logout"
        )


def end_browser_logins(token: LogoutToken) -> list[models.BrowserLogin]:
    """End the browser logins of the token's ``sid`` (of its ``sub`` too, when it names one): their
    Django sessions and the API sessions started on their pages; then forget them."""
    found = models.BrowserLogin.objects.select_for_update().filter(
        issuer=token.issuer, sid=token.sid
    )
    logins = list(found.filter(subject=token.subject) if token.subject is not None else found)
    store = _session_store()
    for login in logins:
        if login.session_key:  # empty: its Django session went to a later login
            store.delete(login.session_key)
        for session in login.sessions.filter(revoked_at__isnull=True):
            sessions.end_session(session, reason="backchannel_logout")
    models.BrowserLogin.objects.filter(pk__in=[login.pk for login in logins]).delete()
    if logins:
        user_ids = sorted({login.user_id for login in logins})
        signals.provider_logout.send(
            sender=LogoutToken, issuer=token.issuer, user_ids=user_ids, sid=token.sid
        )
    return logins


# -- the browser logins a provider session may end ------------------------------------------------


def _session_store() -> Any:
    """Django's session store, to end or look up a session by its key."""
    return import_module(settings.SESSION_ENGINE).SessionStore()


def record_browser_login(
    request: HttpRequest, user: Any, issuer: str, claims: dict[str, Any]
) -> None:
    """After ``auth.login(request, user)``: remember the provider session (the ID token's ``sid``)
    this Django session belongs to. Without a ``sid`` only a logout of the whole user (``sub``) can
    reach the session."""
    sid, key = claims.get("sid"), request.session.session_key
    if key is None or len(key) > SESSION_KEY_LENGTH:
        return
    # Django keeps the key when the same user signs in again: the session is the new login's now, the
    # API sessions started before stay with the earlier login.
    models.BrowserLogin.objects.filter(session_key=key).update(session_key="")
    if verification.is_identifier(sid):
        models.BrowserLogin.objects.create(
            issuer=issuer, subject=claims["sub"], sid=sid, user=user, session_key=key
        )


def browser_login_of(request: HttpRequest) -> models.BrowserLogin | None:
    """The record of this Django session's browser login, if its provider named a session."""
    key = request.session.session_key
    if not key or not request.user.is_authenticated:
        return None
    return models.BrowserLogin.objects.filter(session_key=key, user_id=request.user.pk).first()


def purge_browser_logins() -> int:
    """Forget browser logins whose Django session is gone (logged out, or expired and removed by
    ``clearsessions``) and none of whose API sessions is still open; returns how many."""
    open_sessions = models.Session.objects.filter(
        browser_login=OuterRef("pk"), revoked_at__isnull=True
    )
    idle = models.BrowserLogin.objects.filter(~Exists(open_sessions)).values_list(
        "pk", "session_key"
    )
    store = _session_store()
    gone = [pk for pk, key in idle if not key or not store.exists(key)]
    deleted, _ = models.BrowserLogin.objects.filter(pk__in=gone).delete()
    return deleted
