"""The Shared Signals transmitter (SSF 1.0, CAEP 1.0): every revocation made here becomes Security
Event Tokens (RFC 8417) for the streams whose receivers know its user.

A stream knows a user when the receiver added the user as a subject (SSF 1.0 section 8.1.3.2), or
when the stream was created for all subjects (``default_subjects: "ALL"``). What is sent:

- a session that ended (logout, the admin, refresh-token reuse, a login at the authorization server
  that ended): CAEP ``session-revoked`` about the user and that session (``complex``: ``user``
  ``iss_sub``, ``session`` ``opaque``, the session's id as our tokens' ``sid`` names it);
- an epoch bump of a user (logout-all, the admin, a password change, deactivation), which ends all
  of the user's sessions: ``session-revoked`` about the user (``iss_sub``); with a password change
  also CAEP ``credential-change`` (``password``, ``update``), with a deactivation also RISC
  ``account-disabled``. A receiver gets the types it asked for (``events_requested``).

Each event is one :class:`~epochauth.oauth.models.SSFEvent` row written in the revocation's own
transaction, inside a savepoint: a failure to queue is logged and never fails the revocation. A
push stream's events are delivered after the commit by the process's outbox thread
(:mod:`epochauth.oauth.outbox`, ``manage.py epochauth_outbox``), with retries; a poll stream's wait
until its receiver polls and acknowledges them. A SET is signed when it is sent, never stored or
logged.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, transaction
from django.db.models import Q
from oauth2_provider.models import get_refresh_token_model

from .. import conf, keys
from ..oauth import outbox
from ..oauth.backchannel import resolves_to_public_addresses
from ..oauth.models import SSFEvent, SSFStream, SSFSubject
from . import events
from .config import TransmitterConfig, transmitter_config

logger = logging.getLogger(__name__)

#: The event types a stream may ask for (``events_supported``).
SUPPORTED_EVENTS = (events.SESSION_REVOKED, events.CREDENTIAL_CHANGE, events.ACCOUNT_DISABLED)
#: RFC 8935 section 2.2: a receiver accepts a SET with 202; 200 and 204 are as good.
ACCEPTED = frozenset({200, 202, 204})
#: How many events one poll answers at most (RFC 8936 section 2.4 lets the transmitter choose).
POLL_MAX = 100
#: What the epoch bumps' reasons mean to a receiver (CAEP 1.0 ``initiating_entity``).
INITIATED_BY = {
    "logout": "user",
    "logout-all": "user",
    "password change": "user",
    "admin": "admin",
    "user deactivated": "admin",
}


def config() -> TransmitterConfig | None:
    """The transmitter's settings; None while it is off or misconfigured (check ``epochauth.E037``)."""
    try:
        return transmitter_config()
    except (ValueError, TypeError):
        return None


def signing_key() -> keys.Key:
    """SETs are signed with our signing key when receivers can verify it with our JWKS (an
    asymmetric one), else with the ID-token key (check ``epochauth.E038``)."""
    keyring = keys.get_keyring()
    if not keyring.signing.is_symmetric:
        return keyring.signing
    if keyring.id_token is None:
        raise ImproperlyConfigured(
            "EPOCHAUTH: SSF needs an asymmetric signing key or an ID-token key"
        )
    return keyring.id_token


def user_subject(user_id: str) -> dict[str, Any]:
    """RFC 9493 ``iss_sub``: our issuer and the ``sub`` of the user's tokens."""
    return events.iss_sub(conf.epochauth_settings.ISSUER, str(user_id))


# -- what a revocation queues ------------------------------------------------------------------


def user_epoch_bumped(user_id: str, reason: str) -> None:
    """An epoch bump of a user ended all of the user's sessions (in the bump's transaction)."""
    now = int(time.time())
    initiated = {"event_timestamp": now, "initiating_entity": INITIATED_BY.get(reason, "system")}
    found: dict[str, dict[str, Any]] = {events.SESSION_REVOKED: initiated}
    if reason == "password change":
        found[events.CREDENTIAL_CHANGE] = {
            **initiated,
            "credential_type": "password",
            "change_type": "update",
        }
    elif reason == "user deactivated":
        found[events.ACCOUNT_DISABLED] = {}
    _queue_for_user(user_id, user_subject(user_id), found)


def session_ended(user_id: str, session_id: str, reason: str) -> None:
    """One session of the user ended (in the transaction that ended it)."""
    subject = events.complex_subject(user=user_subject(user_id), session=events.opaque(session_id))
    event = {
        "event_timestamp": int(time.time()),
        "initiating_entity": INITIATED_BY.get(reason, "system"),
    }
    _queue_for_user(user_id, subject, {events.SESSION_REVOKED: event})


def families_ended(families: Iterable[uuid.UUID]) -> None:
    """Logins at the authorization server (refresh-token families) that ended: a session each."""
    if config() is None:
        return
    held = (
        get_refresh_token_model()
        .objects.filter(token_family__in=set(families), user__isnull=False)
        .values_list("user_id", "token_family")
        .distinct()
    )
    for user_id, family in held:
        session_ended(str(user_id), family.hex, "logout")


def _queue_for_user(user_id: str, subject: dict[str, Any], found: dict[str, Any]) -> None:
    """An event row for each stream that knows the user and each of ``found``'s types it asked for."""
    if config() is None:
        return
    knows = Q(all_subjects=True) | Q(subjects__user_id=str(user_id))
    streams = SSFStream.objects.exclude(status=SSFStream.Status.DISABLED).filter(knows).distinct()
    _queue(streams, subject, found, requested_only=True)


def _queue(
    streams: Iterable[SSFStream],
    subject: dict[str, Any],
    found: dict[str, Any],
    *,
    requested_only: bool,
) -> None:
    claims = {"iat": int(time.time()), "txn": uuid.uuid4().hex, "sub_id": subject}
    try:
        with transaction.atomic():  # a savepoint: what fails here never undoes the revocation
            rows = [
                SSFEvent(
                    stream=stream,
                    jti=uuid.uuid4().hex,
                    event_type=uri,
                    # SSF 1.0 section 4.1.8: one event per SET; those of one cause share their txn.
                    claims={**claims, "events": {uri: event}},
                )
                for stream in streams
                for uri, event in found.items()
                if not requested_only or uri in delivered(stream)
            ]
            SSFEvent.objects.bulk_create(rows)
    except DatabaseError:
        logger.exception("epochauth: shared signals events could not be queued")
        return
    if rows:
        transaction.on_commit(kick)


def verify(stream: SSFStream, state: str | None) -> None:
    """SSF 1.0 section 8.1.4: a verification event, about the stream itself, with the receiver's
    ``state``; delivered whatever the stream asked for."""
    event = {"state": state} if state is not None else {}
    _queue(
        [stream],
        events.opaque(str(stream.stream_id)),
        {events.VERIFICATION: event},
        requested_only=False,
    )


def stream_updated(stream: SSFStream) -> None:
    """SSF 1.0 section 8.1.5: the stream's status changed here (in the admin)."""
    event: dict[str, Any] = {"status": stream.status}
    if stream.status_reason:
        event["reason"] = stream.status_reason
    _queue(
        [stream],
        events.opaque(str(stream.stream_id)),
        {events.STREAM_UPDATED: event},
        requested_only=False,
    )


def delivered(stream: SSFStream) -> list[str]:
    """``events_delivered``: what the stream asked for that we send."""
    return [uri for uri in stream.events_requested if uri in SUPPORTED_EVENTS]


# -- subjects ----------------------------------------------------------------------------------


def local_user_id(subject: dict[str, Any]) -> str | None:
    """The user an RFC 9493 subject names here: ``iss_sub`` with our issuer and a user's ``sub``,
    ``email`` of exactly one user, a ``complex`` subject's ``user``; None for anyone else."""
    if subject.get("format") == "complex" and isinstance(subject.get("user"), dict):
        return local_user_id(subject["user"])
    User = get_user_model()
    if subject.get("format") == "iss_sub":
        if subject.get("iss") != conf.epochauth_settings.ISSUER:
            return None
        sub = subject.get("sub")
        if not isinstance(sub, str):
            return None
        try:
            found = User._default_manager.filter(pk=sub).values_list("pk", flat=True).first()
        except (ValueError, TypeError, DatabaseError):
            return None
        return None if found is None else str(found)
    if subject.get("format") == "email" and isinstance(subject.get("email"), str):
        matches = list(
            User._default_manager.filter(email__iexact=subject["email"]).values_list(
                "pk", flat=True
            )[:2]
        )
        return str(matches[0]) if len(matches) == 1 else None
    return None


def add_subject(stream: SSFStream, subject: dict[str, Any]) -> None:
    """Tell ``stream`` about this subject's user from now on (nothing when we have no such user:
    the answer is the same, so that no receiver learns who has an account here)."""
    user_id = local_user_id(subject)
    if user_id is not None:
        SSFSubject.objects.get_or_create(
            stream=stream, user_id=user_id, defaults={"subject": subject}
        )


def remove_subject(stream: SSFStream, subject: dict[str, Any]) -> None:
    user_id = local_user_id(subject)
    if user_id is not None:
        SSFSubject.objects.filter(stream=stream, user_id=user_id).delete()


# -- push delivery -----------------------------------------------------------------------------


def set_token(event: SSFEvent) -> str:
    """The SET of an event row (RFC 8417; SSF 1.0 section 4): our issuer, the stream's audience."""
    claims = {
        "iss": conf.epochauth_settings.ISSUER,
        "aud": event.stream.audience,
        "jti": event.jti,
        **event.claims,
    }
    return signing_key().sign(claims, events.SECEVENT_JWT)


def endpoint_refusal(url: str) -> str | None:
    """Why a push endpoint is not acceptable, if it is not: https to a host that resolves to public
    addresses only; a loopback host (http or https) only with ``ALLOW_LOOPBACK_HTTP_ISSUERS`` (tests,
    one machine). Checked when a stream is written and again at each push."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return "not a URL"
    if not host or "@" in parts.netloc or parts.fragment or parts.scheme not in ("https", "http"):
        return "not an https URL"
    if conf.epochauth_settings.ALLOW_LOOPBACK_HTTP_ISSUERS and _is_loopback(host):
        return None
    if parts.scheme != "https":
        return "not an https URL"
    if not resolves_to_public_addresses(url):
        return "the host does not resolve to public addresses only"
    return None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def kick() -> None:
    """Deliver what is due in this process's outbox thread."""
    outbox.worker.submit(drain)


def deliverable(rows: Any) -> Any:
    """The events that go out now: all of an enabled stream's; of a paused or disabled one only
    its ``stream-updated`` (SSF 1.0 section 8.1.5: how its receiver learns of the pause)."""
    return rows.filter(
        Q(stream__status=SSFStream.Status.ENABLED) | Q(event_type=events.STREAM_UPDATED)
    )


def drain(limit: int | None = None) -> int:
    """Push every deliverable event of a push stream that is due (at most ``limit``); how many."""
    pushed = deliverable(SSFEvent.objects.filter(stream__method=SSFStream.Method.PUSH))
    return outbox.drain(pushed, _attempt_row, limit)


def _attempt_row(pk: Any) -> None:
    attempt(SSFEvent.objects.select_related("stream__application").get(pk=pk))


def attempt(event: SSFEvent) -> None:
    """One POST of the event's SET (its attempt already counted); records the outcome."""
    stream = event.stream
    settings = config() or TransmitterConfig()
    refusal = endpoint_refusal(stream.endpoint_url)
    if refusal is None:
        status, error = push(stream, set_token(event))
    else:
        status, error = None, f"the endpoint is refused: {refusal}"
    outbox.record(
        event,
        status in ACCEPTED,
        status,
        error,
        attempts=settings.attempts,
        retry_delay=settings.retry_delay,
        label=f"shared signals push to {stream.application.client_id}",
        give_up=refusal is not None,
    )


def push(stream: SSFStream, token: str) -> tuple[int | None, str]:
    """RFC 8935 section 2: the SET as ``application/secevent+jwt``, with the receiver's
    ``Authorization``; no redirects, ``HTTP_TIMEOUT``. (status, error): no status when the receiver
    could not be reached; a refusal's RFC 8935 ``err`` code in the error."""
    headers = {"Content-Type": events.SECEVENT_MEDIA_TYPE, "Accept": "application/json"}
    if stream.authorization_header:
        headers["Authorization"] = stream.authorization_header
    try:
        with requests.post(
            stream.endpoint_url,
            data=token.encode(),
            headers=headers,
            timeout=conf.epochauth_settings.HTTP_TIMEOUT.total_seconds(),
            allow_redirects=False,
            stream=True,
        ) as response:
            status = response.status_code
            body = b"" if status in ACCEPTED else response.raw.read(1024, decode_content=True)
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        return None, type(exc).__name__
    if status in ACCEPTED:
        return status, ""
    return status, f"HTTP {status}{_err(body)}"


def _err(body: bytes) -> str:
    """RFC 8935 section 2.3's ``err`` code of a refusal (a short token; never the description)."""
    try:
        err = json.loads(body).get("err")
    except (ValueError, AttributeError):
        return ""
    return f" {err}" if isinstance(err, str) and err.isascii() and len(err) <= 40 else ""


def retry(rows: Any) -> int:
    """Push these (given up or pending) events again from the start, soon; how many."""
    count = outbox.retry(rows)
    if count:
        transaction.on_commit(kick)
    return count


def purge() -> int:
    """Delete the events that are over (:func:`epochauth.oauth.outbox.purge`); a polled event is
    deleted when acknowledged, or given up with the others when never polled."""
    return outbox.purge(SSFEvent.objects.all())


# -- poll delivery -----------------------------------------------------------------------------


def poll(
    stream: SSFStream, ack: list[str], set_errors: dict[str, Any], max_events: int | None
) -> tuple[dict[str, str], bool]:
    """RFC 8936 section 2.4: delete the acknowledged events, give up those the receiver reported
    errors for, and answer the next pending ones that are :func:`deliverable`: ``(sets by jti,
    moreAvailable)``."""
    limit = POLL_MAX if max_events is None else min(max_events, POLL_MAX)
    mine = SSFEvent.objects.filter(stream=stream)
    with transaction.atomic():
        if ack:
            mine.filter(jti__in=ack).delete()
        for jti, error in set_errors.items():
            mine.filter(jti=jti).update(
                state=SSFEvent.State.FAILED, last_error=str(error.get("err", ""))[:255]
            )
        if limit <= 0:
            return {}, False
        rows = list(
            deliverable(mine.filter(state=SSFEvent.State.PENDING))
            .select_related("stream")
            .order_by("created_at", "pk")[: limit + 1]
        )
    return {row.jti: set_token(row) for row in rows[:limit]}, len(rows) > limit
