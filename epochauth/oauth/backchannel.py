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
import socket
import time
import uuid
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from oauth2_provider.models import (
    AbstractApplication,
    get_access_token_model,
    get_application_model,
    get_id_token_model,
    get_refresh_token_model,
)

from .. import conf
from ..urns import BACKCHANNEL_LOGOUT_EVENT
from . import outbox
from .models import BackchannelLogout, LogoutDelivery, is_allowed_uri
from .openid import sign_id_token

#: Section 2.5: "the RP returns HTTP 200 OK"; 204 is as good.
DELIVERED = frozenset({200, 204})
#: The process's outbox thread (:data:`.outbox.worker`).
worker = outbox.worker


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
    """Attempt every logout delivery that is due (at most ``limit``); returns how many."""
    return outbox.drain(LogoutDelivery.objects.all(), _attempt_row, limit)


def _attempt_row(pk: Any) -> None:
    attempt(LogoutDelivery.objects.select_related("application").get(pk=pk))


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
    """:func:`.outbox.record`, with ``LOGOUT_DELIVERY_ATTEMPTS`` and ``LOGOUT_DELIVERY_RETRY_DELAY``."""
    outbox.record(
        delivery,
        status in DELIVERED,
        status,
        error,
        attempts=conf.epochauth_settings.LOGOUT_DELIVERY_ATTEMPTS,
        retry_delay=conf.epochauth_settings.LOGOUT_DELIVERY_RETRY_DELAY,
        label=f"back-channel logout to {delivery.application.client_id}",
        give_up=give_up,
    )


def retry(deliveries: Any) -> int:
    """Attempt these (given up or pending) deliveries again from the start, soon; how many."""
    count = outbox.retry(deliveries)
    if count:
        transaction.on_commit(kick)
    return count


def purge() -> int:
    """Delete the logout deliveries that are over (:func:`.outbox.purge`); returns how many."""
    return outbox.purge(LogoutDelivery.objects.all())
