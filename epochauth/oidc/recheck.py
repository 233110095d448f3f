"""Re-checking the provider's session of a browser login (mozilla-django-oidc's ``SessionRefresh``):
for a provider that sends no back-channel logout, a user who signed out there would stay signed in here.

Put ``epochauth.oidc.recheck.ProviderSessionMiddleware`` after ``AuthenticationMiddleware`` and set
``EPOCHAUTH["OIDC_SESSION_CHECK_INTERVAL"]``. An HTML navigation (GET, no ``Authorization``, not XHR)
of a session that came from a provider login, checked longer ago than the interval, goes through the
provider's authorization endpoint with ``prompt=none`` (OpenID Connect Core 1.0 section 3.1.2.1): the
provider answers at once, a code for the same user (the callback lets the page load go on) or an
error such as ``login_required`` (the callback logs the session out, as ``/oidc/logout/`` does). A
request without a session cookie or with a bearer token is left alone before the session is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from .. import conf

#: The issuer of the provider the session signed in at.
PROVIDER_SESSION_KEY = "epochauth_oidc_issuer"
#: Set here, never from a request: the next provider login of this session is a re-check.
PENDING_SESSION_KEY = "epochauth_oidc_recheck"
#: The pages of a provider round trip, which a re-check must not interrupt.
ROUND_TRIP = frozenset(
    {
        "epochauth-oidc-login",
        "epochauth-oidc-login-provider",
        "epochauth-oidc-callback",
        "epochauth-oidc-recheck",
        "epochauth-oidc-logout",
    }
)

#: The session's last confirmation by the provider (a login is one), as a UNIX time.
CHECKED_AT_SESSION_KEY = "epochauth_oidc_checked_at"


def confirmed(request: HttpRequest) -> None:
    """The provider just confirmed the session: the next re-check is an interval away."""
    request.session[CHECKED_AT_SESSION_KEY] = time.time()


def is_navigation(request: HttpRequest) -> bool:
    """A page the browser loads (what a redirect through the provider can serve), not an API call."""
    meta = request.META
    return (
        request.method == "GET"
        and "HTTP_AUTHORIZATION" not in meta
        and meta.get("HTTP_X_REQUESTED_WITH") != "XMLHttpRequest"
        and meta.get("HTTP_SEC_FETCH_MODE", "navigate") == "navigate"
        and meta.get("HTTP_SEC_FETCH_DEST", "document") == "document"
        and "text/html" in meta.get("HTTP_ACCEPT", "")
    )


class ProviderSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_view(
        self, request: HttpRequest, view_func: Any, args: Any, kwargs: Any
    ) -> HttpResponse | None:
        interval = conf.epochauth_settings.OIDC_SESSION_CHECK_INTERVAL
        if (
            interval is None
            or settings.SESSION_COOKIE_NAME not in request.COOKIES
            or not is_navigation(request)
        ):
            return None
        match = request.resolver_match
        if match is not None and match.url_name in ROUND_TRIP:
            return None
        issuer = request.session.get(PROVIDER_SESSION_KEY)
        checked_at = request.session.get(CHECKED_AT_SESSION_KEY, 0.0)
        if not issuer or time.time() - checked_at < interval.total_seconds():
            return None
        request.session[PENDING_SESSION_KEY] = issuer
        query = urlencode({"next": request.get_full_path()})
        return HttpResponseRedirect(f"{reverse('epochauth-oidc-recheck')}?{query}")
