"""Scope strings (RFC 6749 section 3.3): one place that splits them, says what a scope-token is, and
which scopes a user may ask for (``SCOPES``) and which only a service application may hold
(``SERVICE_SCOPES``, ``TOKEN_MANAGER_SCOPE`` and the WLCG profile's ``host.auth``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from . import conf, profiles
from .ssf.config import SCOPE as SSF_SCOPE

SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

#: ``g:<group>`` selects one of the user's groups for a token (DIRAC's parametric scope).
GROUP_PREFIX = "g:"
#: The same selection as the WLCG Common JWT Profile 1.3 spells it (section 3.1, "Scope-based Group
#: Selection"): ``wlcg.groups:/<group>``, the group's path in ``wlcg.groups``.
WLCG_GROUP_PREFIX = f"{profiles.WLCG_GROUPS}:/"


def split_scope(scope: str) -> list[str]:
    """Scope-tokens are separated by the ASCII space (0x20) only.

    ``str.split()`` would also split at a no-break space or other Unicode whitespace, turning one
    invalid scope-token into valid-looking ones.
    """
    return [name for name in scope.split(" ") if name]


def is_scope_token(name: str) -> bool:
    """``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``: printable ASCII but space, ``"`` and ``\\``."""
    return SCOPE_TOKEN.fullmatch(name) is not None


def group_name(scope: str) -> str | None:
    """The group a group selection names, in either spelling (``g:<group>``,
    ``wlcg.groups:/<group>``), else None: every way in (login, device and code flow, token
    exchange, refresh) takes both."""
    for prefix in (GROUP_PREFIX, WLCG_GROUP_PREFIX):
        if scope.startswith(prefix):
            return scope[len(prefix) :] or None
    return None


def group_scope(name: str) -> str:
    """The scope selecting group ``name`` in what we issue: with ``TOKEN_PROFILE = "wlcg"`` the
    profile's ``wlcg.groups:/<group>`` (the SciTokens ``Enforcer`` refuses a whole token for
    ``g:<group>``, a relative path to it), else ``g:<group>``."""
    if conf.epochauth_settings.TOKEN_PROFILE == profiles.WLCG:
        return f"{WLCG_GROUP_PREFIX}{name}"
    return f"{GROUP_PREFIX}{name}"


def issued_scopes(names: Iterable[str]) -> list[str]:
    """``names`` as we issue them: each group selection in :func:`group_scope`'s spelling, in
    order, none twice (``g:cms wlcg.groups:/cms`` is one selection)."""
    return list(
        dict.fromkeys(
            name if (group := group_name(name)) is None else group_scope(group) for name in names
        )
    )


#: How ``TOKEN_MANAGER_SCOPE`` is described when ``SERVICE_SCOPES`` does not name it.
TOKEN_MANAGER_DESCRIPTION = gettext_lazy("Obtain users' upstream tokens")
#: How ``ssf:manage`` (:data:`epochauth.ssf.config.SCOPE`) is described.
SSF_DESCRIPTION = gettext_lazy("Manage shared signals streams as a receiver")
#: How ``host.auth`` is described when ``SERVICE_SCOPES`` does not name it.
HOST_AUTH_DESCRIPTION = gettext_lazy("Act as the host the application's client id names")


@lru_cache(maxsize=1)
def service_scopes() -> Mapping[str, Any]:
    """The scopes only a service application may hold, with their descriptions: ``SERVICE_SCOPES``
    and, always, ``TOKEN_MANAGER_SCOPE`` and ``host.auth`` (WLCG Common JWT Profile 1.3 section
    2.2.4: its token speaks for a host, never for a user who asked) and ``ssf:manage`` (a Shared
    Signals receiver's: it learns about other users' revocations). Only the client-credentials
    grant of our authorization server issues them, to a confidential application whose allowed
    scopes list them by name."""
    names = {
        conf.epochauth_settings.TOKEN_MANAGER_SCOPE: TOKEN_MANAGER_DESCRIPTION,
        profiles.HOST_AUTH: HOST_AUTH_DESCRIPTION,
        SSF_SCOPE: SSF_DESCRIPTION,
    }
    return MappingProxyType({**names, **conf.epochauth_settings.SERVICE_SCOPES})


conf.process_cache(service_scopes.cache_clear)


def user_scopes() -> dict[str, Any]:
    """``SCOPES`` without any service scope (check ``epochauth.E019`` refuses one there anyway),
    with their descriptions (a string or a lazy translation)."""
    service = service_scopes()
    return {n: d for n, d in conf.epochauth_settings.SCOPES.items() if n not in service}


def service_scope_refusal(names: Iterable[str]) -> str | None:
    """Why ``names`` may not be obtained this way, if one is a service scope, else None."""
    service = [name for name in names if name in service_scopes()]
    if not service:
        return None
    return _("Only a service application may obtain: %(scope)s") % {"scope": " ".join(service)}


def refused_user_scopes(names: Iterable[str]) -> str | None:
    """Why a user may not ask for ``names`` (at login, or ``epochauth_issue``), else None."""
    names = list(names)
    problem = service_scope_refusal(names)
    if problem:
        return problem
    unknown = [name for name in names if name not in conf.epochauth_settings.SCOPES]
    if unknown:
        return _("Unknown scope: %(scope)s") % {"scope": " ".join(unknown)}
    return None


def without_service_scopes(scope: str) -> str:
    """``scope`` less any service scope: a session started before a scope became one (or before
    ``TOKEN_MANAGER_SCOPE`` left ``SCOPES``) does not carry it into its next tokens."""
    service = service_scopes()
    return " ".join(name for name in split_scope(scope) if name not in service)
