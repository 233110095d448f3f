"""OpenID Connect Back-Channel Logout 1.0 as the provider (sections 2.5 to 2.7): when a user's session
here ends, each relying party that holds one of it is POSTed a logout token.

What ends a session decides whom to tell, in the transaction that ends it: a refresh-token family
that ended (a logout, the admin's revoke actions, RP-initiated logout, reuse of a refresh token) tells
the application that held it, naming the family as ``sid`` (our ID tokens' ``sid``); an epoch bump of
a user (logout-all, a password change, deactivation, the admin) tells every application with an ID
token, an access token or a live refresh token of the user: by ``sub`` alone, or by each live family
when it registered ``backchannel_logout_session_required``.

Each is a :class:`~.models.LogoutDelivery` row, the outbox: a revocation that rolls back tells no one.
After the commit a background thread of the process drains it (no request waits for a relying
party); ``manage.py epochauth_outbox`` drains what is due, once or in a loop, and picks up what a
process left behind. The token is signed at each attempt (a fresh ``iat`` and ``exp``, the same
``jti``) and is never stored or logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from oauth2_provider.models import (
    AbstractApplication,
    get_access_token_model,
    get_application_model,
    get_id_token_model,
    get_refresh_token_model,
)

from .. import background, conf
from ..urns import BACKCHANNEL_LOGOUT_EVENT
from .models import BackchannelLogout, LogoutDelivery, is_allowed_uri
from .openid import sign_id_token

logger = logging.getLogger(__name__)

#: Section 2.5: "the RP returns HTTP 200 OK"; 204 is as good.
DELIVERED = frozenset({200, 204})
#: The rows one drain reads at a time.
BATCH = 100
#: How long ``epochauth_purge`` keeps a delivered row, and one given up (for the admin to look at).
KEEP_DELIVERED = timedelta(days=1)
KEEP_GIVEN_UP = timedelta(days=30)

worker = background.Worker("epochauth-logout")


def tell_families(families: Iterable[uuid.UUID]) -> None:
    """Queue a logout token for each application that held a refresh token of these ended families."""
    held = (
        get_refresh_token_model()
        .objects.filter(
            token_family__in=set(families),
            application__epochauth_backchannel__isnull=False,
            user__isnull=False,
        )
        .values_list("application_id", "user_id", "token_family")
        .distinct()
    )
    _queue(
        LogoutDelivery(application_id=app, subject=str(user), sid=family.hex)
        for app, user, family in held
    )


def tell_user(user_id: Any) -> None:
    """Queue a logout token for each application that holds a session of the user (an epoch bump)."""
    user_rows = Q(user_id=user_id, application=OuterRef("pk"))
    live_refresh = get_refresh_token_model().objects.filter(user_rows, revoked__isnull=True)
    holders = (
        get_application_model()
        .objects.filter(epochauth_backchannel__isnull=False)
        .filter(
            Exists(get_id_token_model().objects.filter(user_rows))
            | Exists(get_access_token_model().objects.filter(user_rows))
            | Exists(live_refresh)
        )
        .values_list("pk", "epochauth_backchannel__session_required")
    )
    deliveries = []
    for app, session_required in holders:
        if not session_required:
            deliveries.append(LogoutDelivery(application_id=app, subject=str(user_id)))
            continue
        families = (
            get_refresh_token_model()
            .objects.filter(
                user_id=user_id,
                application_id=app,
                revoked__isnull=True,
                token_family__isnull=False,
            )
            .values_list("token_family", flat=True)
            .distinct()
        )
        deliveries.extend(
            LogoutDelivery(application_id=app, subject=str(user_id), sid=family.hex)
            for family in families
        )
    _queue(deliveries)


def _queue(deliveries: Iterable[LogoutDelivery]) -> None:
    rows = list(deliveries)
    if not rows:
        return
    for row in rows:
        row.jti = uuid.uuid4().hex
    LogoutDelivery.objects.bulk_create(rows)
    transaction.on_commit(kick)


def kick() -> None:
    """Drain the outbox in this process's background thread."""
    worker.submit(drain)


def drain(limit: int | None = None) -> int:
    """Attempt every delivery that is due (at most ``limit``); returns how many were attempted.

    A delivery is claimed by raising its attempt count where it still has the count read, so that
    drainers in other threads and processes attempt it once between them."""
    attempted = 0
    while limit is None or attempted < limit:
        due = list(
            LogoutDelivery.objects.filter(
                state=LogoutDelivery.State.PENDING, next_attempt_at__lte=timezone.now()
            )
            .order_by("next_attempt_at")
            .values_list("pk", "attempts")[:BATCH]
        )
        if not due:
            break
        for pk, attempts in due:
            if limit is not None and attempted >= limit:
                break
            # The lease: another drainer leaves it alone until this attempt has had its time.
            claimed = LogoutDelivery.objects.filter(
                pk=pk, state=LogoutDelivery.State.PENDING, attempts=attempts
            ).update(attempts=attempts + 1, next_attempt_at=timezone.now() + _lease())
            if claimed:
                attempt(LogoutDelivery.objects.select_related("application").get(pk=pk))
                attempted += 1
        if len(due) < BATCH:
            break
    return attempted


def _lease() -> Any:
    return 2 * conf.epochauth_settings.HTTP_TIMEOUT + conf.epochauth_settings.LEEWAY


def attempt(delivery: LogoutDelivery) -> None:
    """One POST of a fresh logout token (its attempt already counted); records the outcome."""
    application = delivery.application
    registered = BackchannelLogout.objects.filter(application=application).first()
    if registered is None or not is_allowed_uri(registered.uri):
        _record(delivery, None, "no back-channel logout URI is registered", give_up=True)
        return
    if application.registration_source != AbstractApplication.RegistrationSource.MANUAL and not (
        resolves_to_public_addresses(registered.uri)
    ):
        _record(delivery, None, "the URI resolves to a non-public address", give_up=True)
        return
    status, error = post(registered.uri, logout_token(delivery))
    _record(delivery, status, error)


def resolves_to_public_addresses(uri: str) -> bool:
    """Whether every address ``uri``'s host resolves to now is a public (global) one. A client that
    registered itself (RFC 7591: anyone, with open registration) names where this server POSTs; it
    must not aim those requests at this server's own network (loopback, private, link-local)."""
    parts = urlsplit(uri)
    try:
        found = socket.getaddrinfo(parts.hostname, parts.port or 443, proto=socket.IPPROTO_TCP)
        addresses = {ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found}
    except (OSError, UnicodeError, ValueError):
        return False
    return bool(addresses) and all(address.is_global for address in addresses)


def logout_token(delivery: LogoutDelivery) -> str:
    """Section 2.4, signed as the application's ID tokens are (:func:`~.openid.sign_id_token`)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": conf.epochauth_settings.ISSUER,
        "aud": delivery.application.client_id,
        "iat": now,
        "exp": now + int(conf.epochauth_settings.LOGOUT_TOKEN_LIFETIME.total_seconds()),
        "jti": delivery.jti,
        "sub": delivery.subject,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    if delivery.sid:
        claims["sid"] = delivery.sid
    return sign_id_token(claims, delivery.application, typ="logout+jwt")


def post(uri: str, token: str) -> tuple[int | None, str]:
    """Section 2.5: the token as a form; no redirects, ``HTTP_TIMEOUT``. (status, error): no status
    when the relying party could not be reached."""
    timeout = conf.epochauth_settings.HTTP_TIMEOUT.total_seconds()
    try:
        with requests.post(
            uri,
            data={"logout_token": token},
            timeout=timeout,
            allow_redirects=False,
            stream=True,  # the answer's body is never read
        ) as response:
            status = response.status_code
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        return None, type(exc).__name__
    return status, "" if status in DELIVERED else f"HTTP {status}"


def _record(
    delivery: LogoutDelivery, status: int | None, error: str, *, give_up: bool = False
) -> None:
    """Delivered; or again after a wait that doubles with each attempt; or given up: after
    ``LOGOUT_DELIVERY_ATTEMPTS``, after a second 4xx other than 429 (the relying party refuses the
    token: once more in case the first was a hiccup), at once when nothing is registered."""
    now = timezone.now()
    delivery.last_error = error[:255]
    if status in DELIVERED:
        delivery.state, delivery.delivered_at = LogoutDelivery.State.DELIVERED, now
    elif (
        give_up
        or (
            status is not None and 400 <= status < 500 and status != 429 and delivery.attempts >= 2
        )
        or delivery.attempts >= conf.epochauth_settings.LOGOUT_DELIVERY_ATTEMPTS
    ):
        delivery.state = LogoutDelivery.State.FAILED
    else:
        delay = conf.epochauth_settings.LOGOUT_DELIVERY_RETRY_DELAY * 2 ** (delivery.attempts - 1)
        delivery.next_attempt_at = now + delay
    if delivery.state != LogoutDelivery.State.DELIVERED:
        logger.warning(
            "epochauth: back-channel logout to %s (delivery %s, attempt %d): %s%s",
            delivery.application.client_id,
            delivery.pk,
            delivery.attempts,
            error,
            "; given up" if delivery.state == LogoutDelivery.State.FAILED else "",
        )
    delivery.save(update_fields=["state", "delivered_at", "next_attempt_at", "last_error"])


def retry(deliveries: Any) -> int:
    """Attempt these (given up or pending) deliveries again from the start, soon; how many."""
    count = deliveries.exclude(state=LogoutDelivery.State.DELIVERED).update(
        state=LogoutDelivery.State.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    if count:
        transaction.on_commit(kick)
    return int(count)


def purge() -> int:
    """Delete deliveries that are over: delivered ones after :data:`KEEP_DELIVERED`, given-up ones
    after :data:`KEEP_GIVEN_UP`; returns how many."""
    now = timezone.now()
    over = Q(state=LogoutDelivery.State.DELIVERED, delivered_at__lte=now - KEEP_DELIVERED) | Q(
        state=LogoutDelivery.State.FAILED, created_at__lte=now - KEEP_GIVEN_UP
    )
    return int(LogoutDelivery.objects.filter(over).delete()[0])
