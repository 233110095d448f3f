"""Django sessions end with the user's epoch: a bump logs the browser out at its next request.

Put ``epochauth.middleware.EpochSessionMiddleware`` after ``AuthenticationMiddleware``. Every login
stamps the session with its time (receiver in ``receivers``); a session whose login predates the
user's (or the global) last bump is flushed. The epochs come from the revocation cache, so a warm
request costs no query, and the user row is not loaded for the check.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, logout
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from . import models, revocation, snapshots

LOGIN_AT_SESSION_KEY = "epochauth_login_at"


def stamp_login(request: HttpRequest | None) -> None:
    if request is not None and hasattr(request, "session"):
        request.session[LOGIN_AT_SESSION_KEY] = time.time()


def session_revoked(session: Any) -> bool:
    """Whether a bump happened after this session's login (a session without a stamp: after any bump)."""
    user_id = session.get(SESSION_KEY)
    if user_id is None:
        return False
    login_at = session.get(LOGIN_AT_SESSION_KEY, float("-inf"))
    for kind, object_id in (
        (models.Epoch.Kind.USER, str(user_id)),
        (models.Epoch.Kind.GLOBAL, ""),
    ):
        not_before = revocation.current_epoch(kind, object_id, login_at).not_before
        if not_before is not None and not_before > login_at:
            return True
    return False


class EpochSessionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        if session is None:
            return self.get_response(request)
        try:
            revoked = session_revoked(session)
        except (
            snapshots.StateUnavailable
        ):  # fail closed: the truth about revocation cannot be read
            return HttpResponse(_("Service unavailable"), status=503, content_type="text/plain")
        if revoked:
            logout(request)
        auth_hash = session.get(HASH_SESSION_KEY)
        response = self.get_response(request)
        # update_session_auth_hash(): Django keeps the session in which the password was changed, so
        # the bump that change made must not end it either.
        if session.get(SESSION_KEY) is not None and session.get(HASH_SESSION_KEY) != auth_hash:
            stamp_login(request)
        return response
