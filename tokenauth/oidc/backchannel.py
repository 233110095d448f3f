"""OpenID Connect Back-Channel Logout 1.0: the browser logins a provider's logout of a session reaches.

A browser login whose ID token names the provider's session (``sid``) is recorded with its Django
session key; the API sessions started on its page point to the record.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.http import HttpRequest

from ..models import BrowserLogin, Session
from ..tokens import is_identifier

#: The length of Django's session keys (``AbstractBaseSession.session_key``); a signed-cookie
#: session has a longer one and no server-side state to end.
SESSION_KEY_LENGTH = 40


# -- the browser logins a provider session may end ------------------------------------------------


def _session_store() -> Any:
    """Django's session store, to end or look up a session by its key."""
    return import_module(settings.SESSION_ENGINE).SessionStore()


def record_browser_login(request: HttpRequest, issuer: str, claims: dict[str, Any]) -> None:
    """After ``auth.login``: remember the provider session (the ID token's ``sid``) this Django session
    belongs to. Without a ``sid`` only a logout of the whole user (``sub``) can reach the session."""
    sid, key = claims.get("sid"), request.session.session_key
    if is_identifier(sid) and key is not None and len(key) <= SESSION_KEY_LENGTH:
        BrowserLogin.objects.create(
            issuer=issuer, subject=claims["sub"], sid=sid, user=request.user, session_key=key
        )


def browser_login_of(request: HttpRequest) -> BrowserLogin | None:
    """The record of this Django session's browser login, if its provider named a session."""
    key = request.session.session_key
    if key is None:
        return None
    return BrowserLogin.objects.filter(session_key=key, user_id=request.user.pk).first()


def purge_browser_logins() -> int:
    """Forget browser logins whose Django session is gone (logged out, or expired and removed by
    ``clearsessions``) and none of whose API sessions is still open; returns how many."""
    open_sessions = Session.objects.filter(browser_login=OuterRef("pk"), revoked_at__isnull=True)
    idle = BrowserLogin.objects.filter(~Exists(open_sessions)).values_list("pk", "session_key")
    store = _session_store()
    gone = [pk for pk, key in idle if not store.exists(key)]
    deleted, _ = BrowserLogin.objects.filter(pk__in=gone).delete()
    return deleted
