"""Shared Signals receiver: Security Event Tokens (RFC 8417) from an allow-listed transmitter, pushed
to us (RFC 8935, :mod:`.receiver_views`) or polled (RFC 8936, :mod:`.subscription`), end access here.

A transmitter is an entry of ``EPOCHAUTH["SSF_TRANSMITTERS"]`` naming an allow-listed issuer. A SET is
verified in the one pipeline (:mod:`epochauth.verification`) with that issuer's JWKS and pinned
algorithms, ``typ`` ``secevent+jwt``, ``aud`` the configured audience, ``iat`` within ``SSF_MAX_AGE``
(``exp`` is not required, RFC 8417 section 2.2); its ``jti`` is claimed once in the shared cache. Then:

- CAEP ``session-revoked`` (RISC ``sessions-revoked``): a complex subject naming a ``session`` ends the
  browser logins of that provider session (as a back-channel logout with ``sid``); otherwise the user
  of the identity loses every token and session (an epoch bump, as a back-channel logout with ``sub``);
- CAEP ``credential-change`` (RISC ``credential-compromise``): an epoch bump of the user;
- CAEP ``token-claims-change``: an epoch bump of the user too. Groups are mirrored from each token's
  claims when it is first seen; ending the earlier tokens makes the next one, with the changed claims,
  set the groups, rather than applying a partial claim set that the transmitter names in its own terms;
- RISC ``account-disabled`` and ``account-purged``: the user is deactivated (which ends every token);
  a purge keeps the row, whose deletion is the site's decision;
- SSF ``verification``: marks the subscription verified when its ``state`` is the one we asked for.

A transmitter only reaches its own issuer's identities: an ``iss_sub`` of another issuer is ignored; an
``opaque`` id is a ``sub`` at the transmitter's issuer; an ``email`` names the users with that address
that hold an identity of the transmitter's issuer. A subject we do not know is accepted and ignored,
so the answer never tells whether it exists. Each change goes through :mod:`epochauth.revocation` (or
the user's save), so it reaches every process within the revocation bound.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _

from .. import conf, exceptions, issuers, models, revocation, snapshots, verification
from ..oidc import backchannel
from . import events

logger = logging.getLogger(__name__)

SET_TYPES = verification.media_types(events.SECEVENT_JWT)

#: The event types we act on, which a stream asks for unless the transmitter's entry names others.
SUPPORTED_EVENTS = (
    events.SESSION_REVOKED,
    events.CREDENTIAL_CHANGE,
    events.TOKEN_CLAIMS_CHANGE,
    events.ACCOUNT_DISABLED,
    events.ACCOUNT_PURGED,
    events.CREDENTIAL_COMPROMISE,
    events.SESSIONS_REVOKED,
)
DELIVERIES = {"push": events.PUSH, "poll": events.POLL}


class Refused(Exception):
    """A SET (or a push) we do not accept, with its RFC 8935 section 2.4 error code. The push view
    answers it (400; 401 for ``authentication_failed``), the poller reports it in ``setErrs``."""

    def __init__(self, err: str, description: str | Promise) -> None:
        super().__init__(str(description))
        self.err = err
        self.description = description


@dataclass(frozen=True)
class Transmitter:
    """One entry of ``SSF_TRANSMITTERS``, with its defaults filled in."""

    issuer: str
    token_env: str
    delivery: str = "push"
    audience: str = ""
    push_url: str = ""
    events: tuple[str, ...] = SUPPORTED_EVENTS


def _push_url() -> str:
    issuer = conf.epochauth_settings.ISSUER or ""
    try:
        return issuer.rstrip("/") + reverse("epochauth-ssf-push")
    except NoReverseMatch:
        return ""


@lru_cache(maxsize=1)
def transmitters() -> dict[str, Transmitter]:
    """``SSF_TRANSMITTERS`` by issuer, once per settings reload (check E035 reports bad entries)."""
    configured = {}
    for entry in conf.epochauth_settings.SSF_TRANSMITTERS:
        if not (isinstance(entry, dict) and isinstance(entry.get("issuer"), str)):
            continue
        configured[entry["issuer"]] = Transmitter(
            issuer=entry["issuer"],
            token_env=entry.get("token_env", ""),
            delivery=entry.get("delivery", "push"),
            audience=entry.get("audience") or conf.epochauth_settings.ISSUER or "",
            push_url=entry.get("push_url") or _push_url(),
            events=tuple(entry.get("events") or SUPPORTED_EVENTS),
        )
    return configured


conf.process_cache(transmitters.cache_clear)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def authenticate_push(authorization: str | None) -> models.SsfSubscription:
    """The push subscription whose secret ``Authorization: Bearer`` carries, compared in constant
    time with each one's hash. Raises Refused."""
    scheme, _space, secret = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secret:
        raise Refused("authentication_failed", _("The push carries no authorization"))
    presented = secret_hash(secret.strip())
    found = None
    for subscription in models.SsfSubscription.objects.filter(
        delivery=models.SsfSubscription.Delivery.PUSH
    ).exclude(push_secret_hash=""):
        if hmac.compare_digest(subscription.push_secret_hash, presented):
            found = subscription
    if found is None:
        raise Refused("authentication_failed", _("The push authorization is not valid"))
    if transmitters().get(found.issuer) is None:
        raise Refused("access_denied", _("The transmitter is no longer accepted"))
    return found


@dataclass(frozen=True)
class SecurityEvent:
    """A verified SET: its one event and whom it is about."""

    issuer: str
    jti: str
    event_type: str
    payload: dict[str, Any]
    subject: events.Subject | None


def verify_set(token: str, transmitter: Transmitter) -> SecurityEvent:
    """RFC 8417 and SSF 1.0 section 4 for ``transmitter``'s SETs. Raises Refused, and
    ``jwks.IssuerUnavailable`` when the issuer's keys cannot be read (try again later)."""
    if len(token) > conf.epochauth_settings.MAX_TOKEN_BYTES:
        raise Refused("invalid_request", _("The security event token is too long"))
    try:
        jws = verification.parse(token)
    except exceptions.InvalidToken:
        raise Refused("invalid_request", _("The security event token is malformed")) from None
    # The allow-list before the network: the stream's transmitter, and an accepted issuer.
    config = issuers.get_issuer(transmitter.issuer)
    if jws.claims.get("iss") != transmitter.issuer or config is None:
        raise Refused("invalid_issuer", _("The security event token's issuer is not accepted"))
    policy = verification.Policy.for_issuer(
        config,
        audience=(transmitter.audience,),
        required=("iss", "aud", "iat", "jti", "events"),
        types=SET_TYPES,
        untyped=False,
        subject_required=False,
    )
    # The key on its own first, to tell invalid_key (RFC 8935 section 2.4) from the other refusals;
    # verify() finds it again in the JWKS cache.
    try:
        policy.keys(jws.header)
    except exceptions.InvalidToken:
        raise Refused("invalid_key", _("The security event token's key is not accepted")) from None
    try:
        claims = verification.verify(jws, policy)
    except verification.WrongAudience:
        raise Refused(
            "invalid_audience", _("The security event token is meant for another receiver")
        ) from None
    except verification.WrongType:
        raise Refused("invalid_request", _("The token is not a security event token")) from None
    except exceptions.InvalidToken:
        raise Refused(
            "invalid_request", _("The security event token's signature or claims are invalid")
        ) from None
    return _event(claims)


def _event(claims: dict[str, Any]) -> SecurityEvent:
    """SSF 1.0 section 4.1: one event per SET; its subject in ``sub_id`` (or, for events defined
    before SSF, in the event's ``subject``)."""
    found = claims["events"]
    if not (isinstance(found, dict) and len(found) == 1):
        raise Refused("invalid_request", _("A security event token carries exactly one event"))
    ((event_type, payload),) = found.items()
    if not isinstance(payload, dict):
        raise Refused("invalid_request", _("The security event is not a JSON object"))
    if not verification.is_identifier(claims["jti"]):
        raise Refused("invalid_request", _("The security event token's jti is invalid"))
    max_age = conf.epochauth_settings.SSF_MAX_AGE + conf.epochauth_settings.LEEWAY
    if claims["iat"] < time.time() - max_age.total_seconds():
        raise Refused("invalid_request", _("The security event token is too old"))
    raw_subject = claims.get("sub_id", payload.get("subject"))
    return SecurityEvent(
        claims["iss"],
        claims["jti"],
        event_type,
        payload,
        events.parse_subject(raw_subject, claims["iss"]),
    )


def _jti_key(event: SecurityEvent) -> str:
    digest = hashlib.sha256(f"{event.issuer}\0{event.jti}".encode()).hexdigest()
    return f"{snapshots.CACHE_PREFIX}ssf-jti:{digest}"


def _jti_lifetime() -> int:
    window = conf.epochauth_settings.SSF_MAX_AGE + 2 * conf.epochauth_settings.LEEWAY
    return math.ceil(window.total_seconds()) + 1


def receive(token: str, subscription: models.SsfSubscription) -> SecurityEvent:
    """Verify ``token`` from ``subscription``'s transmitter and act on it, once per ``jti``: claimed
    in the shared cache first, given back when acting fails so the transmitter may deliver it again.
    Raises Refused, IssuerUnavailable, StateUnavailable."""
    transmitter = transmitters().get(subscription.issuer)
    if transmitter is None:
        raise Refused("access_denied", _("The transmitter is no longer accepted"))
    event = verify_set(token, transmitter)
    key = _jti_key(event)
    if not snapshots.required_cache_call("add", key, True, _jti_lifetime()):
        raise Refused("invalid_request", _("The security event token was received already"))
    try:
        with transaction.atomic():
            apply(event, subscription)
    except BaseException:
        snapshots.shared_cache_call("delete", key)
        raise
    return event


# -- acting on an event ---------------------------------------------------------------------------


def identities(event: SecurityEvent) -> list[models.Identity]:
    """The identities of the transmitter's issuer that the event's subject names (module docs)."""
    subject = event.subject
    if subject is None:
        return []
    found = models.Identity.objects.filter(issuer=event.issuer)
    if subject.subject is not None:
        # Another issuer's identity is never a transmitter's to end.
        if subject.issuer != event.issuer:
            return []
        return list(found.filter(subject=subject.subject))
    email_field = get_user_model().get_email_field_name()
    return list(found.filter(**{f"user__{email_field}__iexact": subject.email}))


def apply(event: SecurityEvent, subscription: models.SsfSubscription) -> None:
    """Act on a verified event (module docs); an event type or subject we do not know does nothing."""
    if event.event_type == events.VERIFICATION:
        _verified(event, subscription)
        return
    action = ACTIONS.get(event.event_type)
    if action is None:
        return
    for identity in identities(event):
        models.AuditEvent.objects.create(
            action="ssf_event",
            user_id=identity.user_id,
            detail={
                "issuer": event.issuer,
                "subject": identity.subject,
                "event": event.event_type,
                "jti": event.jti,
            },
        )
        action(event, identity)


def _bump(event: SecurityEvent, identity: models.Identity) -> None:
    reason = f"ssf {event.event_type.rsplit('/', 1)[-1]}"
    revocation.bump_epoch(models.Epoch.Kind.USER, str(identity.user_id), reason=reason)


def _end_sessions(event: SecurityEvent, identity: models.Identity) -> None:
    assert event.subject is not None  # identities() found one
    if event.subject.session is None:
        _bump(event, identity)
        return
    backchannel.end_browser_logins(
        backchannel.LogoutToken(event.issuer, event.jti, identity.subject, event.subject.session)
    )


def _deactivate(event: SecurityEvent, identity: models.Identity) -> None:
    """The user's save ends its tokens (epochauth.receivers.revoke_on_lost_access)."""
    user = get_user_model()._default_manager.select_for_update().get(pk=identity.user_id)
    if not hasattr(user, "is_active"):
        _bump(event, identity)
    elif user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])


ACTIONS = {
    events.SESSION_REVOKED: _end_sessions,
    events.SESSIONS_REVOKED: _end_sessions,
    events.CREDENTIAL_CHANGE: _bump,
    events.CREDENTIAL_COMPROMISE: _bump,
    events.TOKEN_CLAIMS_CHANGE: _bump,
    events.ACCOUNT_DISABLED: _deactivate,
    events.ACCOUNT_PURGED: _deactivate,
}


def _verified(event: SecurityEvent, subscription: models.SsfSubscription) -> None:
    """SSF 1.0 section 8.1.4: the answer to our verification request, matched by its ``state``."""
    state = event.payload.get("state")
    if (
        isinstance(state, str)
        and subscription.verification_hash
        and hmac.compare_digest(secret_hash(state), subscription.verification_hash)
    ):
        models.SsfSubscription.objects.filter(pk=subscription.pk).update(
            verified_at=timezone.now(), verification_hash=""
        )
