"""Claims a site adds to our access tokens (``EPOCHAUTH["CUSTOM_CLAIMS"]``).

The callable is called as ``(user, *, session, scope, group, request) -> dict`` each time we mint an access
token: ``session`` is the refresh session (None for OAuth-server and command-line tokens), ``scope`` the
granted scope string, ``group`` the selected Group or None, ``request`` the HTTP request of our token
endpoint (None elsewhere). What it returns goes into the token beside our claims, so it is as revocable
as they are (epochs, logout, the denylist) and readable as ``request.auth.claims`` on the API side.

It may not set a reserved claim: registered claims and the ones epochauth's checks rely on. A callable
that declares its names as a ``claim_names`` attribute is checked at startup (``epochauth.E015``) and they
are listed in our OpenID configuration's ``claims_supported``; any reserved name it returns at run time is
an :class:`~django.core.exceptions.ImproperlyConfigured` error, never a token.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from . import conf

#: Claims the callable may not set: RFC 7519's registered claims, RFC 9068's and ours. Spelled out
#: rather than imported: tokens.py calls this module while minting (tests/test_claims.py checks that
#: every ``CLAIM_*`` name of tokens.py is here).
RESERVED_CLAIMS = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "nbf",
        "jti",
        "scope",
        "scp",
        "client_id",
        "typ",
        "cnf",
        "preferred_username",
        "groups",
        "group",
        "gid",
        "sid",
        "token_family",
        "gty",
        "owner",
        "epoch",
        "group_epoch",
        "global_epoch",
        "vo_epoch",
    }
)
#: Reserved on a site with ``COMMUNITIES`` only: a site without may have set ``vo`` itself (the only
#: way before communities existed), and its tokens keep it.
COMMUNITY_CLAIMS = frozenset({"vo"})

ClaimsCallable = Callable[..., dict[str, Any]]


@cache
def get_claims_callable() -> ClaimsCallable | None:
    """The configured callable (a dotted path is imported once per process), or None."""
    configured = conf.epochauth_settings.CUSTOM_CLAIMS
    if configured is None:
        return None
    function = import_string(configured) if isinstance(configured, str) else configured
    if not callable(function):
        raise ImproperlyConfigured('EPOCHAUTH["CUSTOM_CLAIMS"] must name a callable.')
    return function


conf.process_cache(get_claims_callable.cache_clear)


def declared_claim_names() -> tuple[str, ...]:
    """The names the callable declares in ``claim_names`` (empty when it declares none)."""
    names = getattr(get_claims_callable(), "claim_names", ())
    return (names,) if isinstance(names, str) else tuple(names)


def reserved_in(names: Any) -> list[str]:
    """The reserved claim names among ``names``, sorted."""
    reserved = (
        RESERVED_CLAIMS | COMMUNITY_CLAIMS
        if conf.epochauth_settings.COMMUNITIES
        else RESERVED_CLAIMS
    )
    return sorted(set(names) & reserved)


def custom_claims(
    user: Any, *, session: Any, scope: str, group: Any, request: Any
) -> dict[str, Any]:
    """What the site's callable adds to a token of ``user``; ``{}`` when none is configured."""
    function = get_claims_callable()
    if function is None:
        return {}
    added = function(user, session=session, scope=scope, group=group, request=request)
    if not isinstance(added, dict) or not all(isinstance(name, str) for name in added):
        raise ImproperlyConfigured(
            'EPOCHAUTH["CUSTOM_CLAIMS"] must return a dict with string keys.'
        )
    reserved = reserved_in(added)
    if reserved:
        raise ImproperlyConfigured(
            f'EPOCHAUTH["CUSTOM_CLAIMS"] may not set the reserved claims: {", ".join(reserved)}'
        )
    return added
