"""Our side of the conversation with a Shared Signals transmitter: its configuration (SSF 1.0 section
7.1), our stream there (section 8.1.1), the verification event (section 8.1.4) and polling (RFC 8936).

Only allow-listed URLs are fetched: the configuration at the well-known URL of a transmitter of
``SSF_TRANSMITTERS`` (an allow-listed issuer), which must name that issuer; then the endpoints it
names, each on the issuer's own origin, through :mod:`epochauth.fetching`'s limits. The transmitter
signs with the keys of its issuer's discovery document (the pipeline's JWKS cache): a configuration
naming another ``jwks_uri`` is refused rather than trusted.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.utils.translation import gettext as _

from .. import fetching, jwks, models, snapshots, verification
from . import events, receiver

logger = logging.getLogger(__name__)

#: Events asked for per poll request, and poll requests per round at most.
MAX_EVENTS = 100
MAX_REQUESTS = 100


class SubscriptionError(Exception):
    """A transmitter we cannot subscribe to or poll, in words for the operator (the commands)."""


def configuration_url(issuer: str) -> str:
    """SSF 1.0 section 7.2: the well-known segment goes between host and path."""
    parts = urlsplit(issuer)
    return urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            events.WELL_KNOWN_CONFIGURATION + parts.path.rstrip("/"),
            "",
            "",
        )
    )


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


def _endpoint(transmitter: receiver.Transmitter, document: dict[str, Any], name: str) -> str:
    """An endpoint URL the transmitter names, on its issuer's origin."""
    url = document.get(name)
    if not isinstance(url, str) or _origin(url) != _origin(transmitter.issuer):
        raise SubscriptionError(
            _("%(name)s of %(issuer)s is not on the issuer's origin")
            % {"name": name, "issuer": transmitter.issuer}
        )
    return url


def configuration(transmitter: receiver.Transmitter) -> dict[str, Any]:
    """The transmitter's configuration metadata, checked (module docs)."""
    try:
        document, _max_age = fetching.fetch_json(configuration_url(transmitter.issuer))
        keys_at = jwks.discover_jwks_uri(transmitter.issuer)
    except fetching.FetchError as exc:
        raise SubscriptionError(str(exc)) from None
    if document.get("issuer") != transmitter.issuer:
        raise SubscriptionError(
            _("The configuration of %(issuer)s names another issuer")
            % {"issuer": transmitter.issuer}
        )
    if "jwks_uri" in document and document["jwks_uri"] != keys_at:
        raise SubscriptionError(
            _("%(issuer)s signs events with other keys than its tokens'")
            % {"issuer": transmitter.issuer}
        )
    method = receiver.DELIVERIES[transmitter.delivery]
    supported = document.get("delivery_methods_supported")
    if isinstance(supported, list) and method not in supported:
        raise SubscriptionError(
            _("%(issuer)s does not deliver by %(method)s")
            % {"issuer": transmitter.issuer, "method": method}
        )
    _endpoint(transmitter, document, "configuration_endpoint")
    if "verification_endpoint" in document:
        _endpoint(transmitter, document, "verification_endpoint")
    return document


def _authorization(transmitter: receiver.Transmitter) -> dict[str, str]:
    """The header we present to the transmitter's stream management and poll endpoints."""
    token = os.environ.get(transmitter.token_env)
    if not token:
        raise SubscriptionError(
            _("The environment variable %(name)s holds no token for %(issuer)s")
            % {"name": transmitter.token_env, "issuer": transmitter.issuer}
        )
    return {"Authorization": f"Bearer {token}"}


def _send(transmitter: receiver.Transmitter, method: str, url: str, body: Any) -> dict[str, Any]:
    try:
        return fetching.send_json(method, url, body, _authorization(transmitter))
    except fetching.FetchError as exc:
        raise SubscriptionError(str(exc)) from None


def _stream(
    transmitter: receiver.Transmitter, endpoint: str, body: dict[str, Any]
) -> dict[str, Any]:
    """Update our stream when the transmitter still has it, else create one (section 8.1.1)."""
    existing = models.SsfSubscription.objects.filter(issuer=transmitter.issuer).first()
    if existing is not None:
        try:
            return fetching.send_json(
                "PATCH",
                endpoint,
                {"stream_id": existing.stream_id, **body},
                _authorization(transmitter),
            )
        except fetching.FetchError as exc:
            if exc.status != 404:
                raise SubscriptionError(str(exc)) from None
    return _send(transmitter, "POST", endpoint, body)


def subscribe(transmitter: receiver.Transmitter) -> models.SsfSubscription:
    """Create or update our stream at ``transmitter`` and ask for the verification event; for push
    delivery with a new authorization secret (only its hash is kept)."""
    document = configuration(transmitter)
    delivery: dict[str, Any] = {"method": receiver.DELIVERIES[transmitter.delivery]}
    secret = ""
    if transmitter.delivery == "push":
        secret = secrets.token_urlsafe(32)
        delivery["endpoint_url"] = transmitter.push_url
        delivery["authorization_header"] = f"Bearer {secret}"
    answer = _stream(
        transmitter,
        document["configuration_endpoint"],
        {"delivery": delivery, "events_requested": list(transmitter.events)},
    )
    stream_id = answer.get("stream_id")
    if not verification.is_identifier(stream_id):
        raise SubscriptionError(_("The transmitter answered no stream id"))
    audience = answer.get("aud", transmitter.audience)
    if transmitter.audience not in (audience if isinstance(audience, list) else [audience]):
        raise SubscriptionError(
            _("The stream's audience is not %(audience)s: set the transmitter's audience")
            % {"audience": transmitter.audience}
        )
    poll_url = ""
    if transmitter.delivery == "poll":
        poll_url = _endpoint(transmitter, answer.get("delivery") or {}, "endpoint_url")
    subscription, _created = models.SsfSubscription.objects.update_or_create(
        issuer=transmitter.issuer,
        defaults={
            "stream_id": stream_id,
            "delivery": transmitter.delivery,
            "push_secret_hash": receiver.secret_hash(secret) if secret else "",
            "poll_url": poll_url,
            "verified_at": None,
        },
    )
    if "verification_endpoint" in document:
        request_verification(transmitter, subscription, document["verification_endpoint"])
    return subscription


def request_verification(
    transmitter: receiver.Transmitter, subscription: models.SsfSubscription, endpoint: str
) -> None:
    """Section 8.1.4.2: the transmitter sends a verification event with this ``state``; its hash is
    kept before asking, since a pushed event may arrive before the request returns."""
    state = secrets.token_urlsafe(24)
    subscription.verification_hash = receiver.secret_hash(state)
    subscription.save(update_fields=["verification_hash"])
    _send(transmitter, "POST", endpoint, {"stream_id": subscription.stream_id, "state": state})


def poll(subscription: models.SsfSubscription) -> int:
    """RFC 8936: fetch the SETs waiting at the transmitter, act on each, acknowledge the ones taken
    and report the refused ones (``setErrs``); until it has no more. Returns how many were taken. A
    SET that cannot be checked now (the issuer's keys or the shared state unavailable) is neither
    acknowledged nor refused: the transmitter hands it out again on the next poll."""
    transmitter = receiver.transmitters().get(subscription.issuer)
    if transmitter is None or not subscription.poll_url:
        raise SubscriptionError(
            _("%(issuer)s is not a polled transmitter") % {"issuer": subscription.issuer}
        )
    taken = 0
    acks: list[str] = []
    errors: dict[str, dict[str, str]] = {}
    for _request in range(MAX_REQUESTS):
        body: dict[str, Any] = {"ack": acks, "maxEvents": MAX_EVENTS, "returnImmediately": True}
        if errors:
            body["setErrs"] = errors
        answer = _send(transmitter, "POST", subscription.poll_url, body)
        sets = answer.get("sets")
        if not isinstance(sets, dict):
            raise SubscriptionError(_("The poll answer has no sets"))
        acks, errors, deferred = [], {}, False
        for jti, token in sets.items():
            outcome = _take(token, subscription)
            if outcome is None:
                acks.append(jti)
            elif outcome:
                errors[jti] = outcome
            else:
                deferred = True
        taken += len(acks)
        # After a SET left for later, the next answer would hand it out again: the next poll then.
        if deferred or not (sets and answer.get("moreAvailable") is True):
            break
    if acks or errors:
        final: dict[str, Any] = {"ack": acks, "maxEvents": 0, "returnImmediately": True}
        if errors:
            final["setErrs"] = errors
        _send(transmitter, "POST", subscription.poll_url, final)
    return taken


def _take(token: Any, subscription: models.SsfSubscription) -> dict[str, str] | None:
    """None when the SET was taken; its error when refused; an empty dict to leave it for later."""
    if not isinstance(token, str):
        return {"err": "invalid_request", "description": "not a SET"}
    try:
        receiver.receive(token, subscription)
    except receiver.Refused as refused:
        logger.warning("epochauth: polled security event refused: %s", refused.err)
        return {"err": refused.err, "description": str(refused.description)}
    except (jwks.IssuerUnavailable, snapshots.StateUnavailable):
        return {}
    return None
