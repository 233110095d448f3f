"""RFC 8707 resource indicators: the services a token is for.

A ``resource`` parameter narrows a token's ``aud`` to the services it names, each one this deployment
issues tokens for: the default audience (:func:`epochauth.tokens.audience`) or one of ``RESOURCES``.
A service verifying our tokens with its own ``AUDIENCE`` then refuses a token narrowed to another.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.utils.translation import gettext as _

from . import conf, exceptions, tokens


class InvalidTarget(exceptions.OAuthError):
    """RFC 8707 section 2: ``invalid_target``, a resource malformed or not served here."""

    def __init__(self, description: str) -> None:
        super().__init__("invalid_target", description)
        self.description = description


def is_absolute(resource: str) -> bool:
    """An absolute URI (RFC 3986 section 4.3: a scheme, no fragment) as RFC 8707 section 2 requires;
    a network location too, as every service reached over HTTP has."""
    parts = urlsplit(resource)
    return bool(parts.scheme and parts.netloc) and "#" not in resource


def names(audience: Any) -> tuple[str, ...]:
    """``aud`` (a string or a list, RFC 7519 section 4.1.3) as a tuple."""
    if isinstance(audience, str):
        return (audience,)
    return tuple(audience or ())


def served() -> tuple[str, ...]:
    """Every resource a token may be narrowed to: the default audience, then ``RESOURCES``."""
    default = names(tokens.audience())
    return default + tuple(
        name for name in conf.epochauth_settings.RESOURCES if name not in default
    )


def audience(requested: Iterable[str], granted: Iterable[str] | None = None) -> Any:
    """The ``aud`` of a token asked for the ``requested`` resources (repeatable), or None when none
    is asked for (the default audience, or the grant's). Each must be served here and, narrowing a
    grant already narrowed (RFC 8707 section 2.2: a refresh), one of ``granted``; raises
    :class:`InvalidTarget`."""
    asked = list(dict.fromkeys(requested))
    if not asked:
        return None
    if not all(is_absolute(name) for name in asked):
        raise InvalidTarget(_("A resource must be an absolute URI without fragment"))
    allowed = served() if granted is None else tuple(granted)
    if not all(name in allowed for name in asked):
        raise InvalidTarget(_("No token can be issued for that resource here"))
    return asked[0] if len(asked) == 1 else asked
