"""Hooks for the tokens of a system a site is moving away from: while a migration window is open they
are accepted beside ours, and its refresh tokens can be exchanged for our sessions.

Empty unless an app registers into them in its ``ready()`` (epochauth.contrib.simplejwt does), so they
cost nothing otherwise. Bearer authentication asks :func:`accepts_scheme` only about a scheme that is not
``Bearer``, :func:`validated` only about a token it refused itself
(so ours are parsed once and never handed to another decoder), and the refresh endpoint asks
:func:`exchanged` before treating a refresh token as one of ours.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import tokens

#: Each takes a bearer token and returns an AccessToken (verified, not revoked), None for a token it does
#: not recognise, or raises :class:`~epochauth.exceptions.InvalidToken`.
access_token_validators: list[Callable[[str], tokens.AccessToken | None]] = []

#: Each takes a refresh token and the request, and returns ``(Session, our refresh token)`` for a
#: session it started, None for a token it does not recognise, or raises an
#: :class:`~epochauth.exceptions.OAuthError`.
refresh_exchanges: list[Callable[[str, Any], tuple[Any, str] | None]] = []


#: Each returns the authorization schemes besides ``Bearer`` (``JWT``, say) that the old system's clients
#: send a token with.
header_types: list[Callable[[], Iterable[str]]] = []


def accepts_scheme(scheme: str) -> bool:
    """Whether a registered hook names ``scheme`` (case-insensitive, RFC 9110 section 11.1). Asked
    only about a scheme that is not ``Bearer``, so a bearer request costs nothing more."""
    folded = scheme.lower()
    return any(folded == name.lower() for types in header_types for name in types())


def validated(token: str) -> tokens.AccessToken | None:
    """The first registered validator's answer for ``token``, or None if none recognises it."""
    for validate in access_token_validators:
        access = validate(token)
        if access is not None:
            return access
    return None


def exchanged(refresh_token: str, request: Any) -> tuple[Any, str] | None:
    """The session a registered exchange started for ``refresh_token``, or None."""
    for exchange in refresh_exchanges:
        started = exchange(refresh_token, request)
        if started is not None:
            return started
    return None
