"""Request parameters that DOT and oauthlib may see: none with a control character.

No OAuth parameter's syntax admits one (RFC 6749 appendix A: VSCHAR, NQCHAR, URI references), and a NUL
in a lookup is a 500 on PostgreSQL, which refuses it in text (psycopg's ``DataError``) wherever DOT or we
look a client, code or token up. So every parameter of the query and the form, names included, and the
client credentials of HTTP Basic authentication are checked once, before any view code runs, rather than
field by field. Wrap each view of the authorization server in :func:`endpoint` or :func:`page`.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from django.http import HttpRequest, HttpResponseBase
from django.shortcuts import render
from django.utils.translation import gettext_lazy as _

from .views import _error

CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")
CLIENT_CREDENTIALS = frozenset({"client_id", "client_secret"})

View = Callable[..., HttpResponseBase]


def basic_credentials(request: HttpRequest) -> list[str] | None:
    """The client id and secret of ``Authorization: Basic`` as DOT reads them (base64, then form-decoded,
    RFC 6749 section 2.3.1); ``[]`` without Basic authentication, None when they do not decode (DOT
    would fail on a non-ASCII header)."""
    scheme, _, credentials = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme != "Basic":
        return []
    try:
        decoded = base64.b64decode(credentials.encode("ascii"), validate=True).decode("utf-8")
    except (UnicodeError, binascii.Error):
        return None
    return [unquote_plus(part) for part in decoded.split(":", 1)]


def problem(request: HttpRequest) -> str | None:
    """The OAuth error for a control character in the request (``invalid_client`` in the client's
    credentials, ``invalid_request`` elsewhere), or None."""
    credentials = basic_credentials(request)
    if credentials is None or any(CONTROL_CHARACTER.search(c) for c in credentials):
        return "invalid_client"
    for params in (request.GET, request.POST):
        for name, values in params.lists():
            if any(CONTROL_CHARACTER.search(text) for text in (name, *values)):
                return "invalid_client" if name in CLIENT_CREDENTIALS else "invalid_request"
    return None


def endpoint(view: View) -> View:
    """An OAuth endpoint of JSON answers: a control character is a ``400 invalid_request``, or a ``401
    invalid_client`` in the client's credentials (RFC 6749 section 5.2)."""

    @functools.wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        error = problem(request)
        if error is None:
            return view(request, *args, **kwargs)
        if error == "invalid_request":
            return _error(error, _("A parameter holds a control character"))
        response = _error(
            error, _("The client credentials hold a control character or do not decode"), 401
        )
        response["WWW-Authenticate"] = 'Basic realm="oauth"'
        return response

    return checked


def page(view: View) -> View:
    """A page a person sees: a control character gets a readable ``400`` page."""

    @functools.wraps(view)
    def checked(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if problem(request) is None:
            return view(request, *args, **kwargs)
        context = {
            "title": _("Invalid link"),
            "message": _(
                "This address or form holds characters no sign-in uses. Check the link or the code "
                "and try again."
            ),
        }
        return render(request, "epochauth/oidc/error.html", context, status=400)

    return checked
