"""Token profiles an external issuer may follow, and their rules: the WLCG Common JWT Profiles
(IAM, CILogon; version 1.0) and SciTokens 2.0.

A leaf (no settings, models or network), so the issuer configuration, the permissions and minting
read the same rules. An issuer follows a profile only when configured so: its any-audience values
and its hierarchical storage scopes are accepted from that issuer and never from another.
"""

from __future__ import annotations

import re

WLCG = "wlcg"
SCITOKENS = "scitokens"

#: ``profile`` values of an issuer, with their labels for the admin.
PROFILE_CHOICES = [
    ("", "none (OAuth 2.0 / OpenID Connect)"),
    (WLCG, "WLCG 1.0"),
    (SCITOKENS, "SciTokens 2.0"),
]
PROFILES = frozenset(value for value, _ in PROFILE_CHOICES if value)

#: The WLCG profile's "any audience" value (WLCG Common JWT Profiles, section "aud").
WLCG_ANY_AUDIENCE = "https://wlcg.cern.ch/jwt/v1/any"
#: The audience each profile defines as "any service", accepted only with ``accept_any_audience``.
ANY_AUDIENCES: dict[str, tuple[str, ...]] = {WLCG: (WLCG_ANY_AUDIENCE,), SCITOKENS: ("ANY",)}

#: The WLCG profile's group claim: group names with their leading ``/`` (``/cms/uscms``).
WLCG_GROUPS = "wlcg.groups"
WLCG_VERSION_CLAIM = "wlcg.ver"
WLCG_VERSION = "1.0"
#: The group claims read from a profile issuer's tokens when none are configured.
DEFAULT_GROUP_CLAIMS: dict[str, tuple[str, ...]] = {WLCG: (WLCG_GROUPS,)}

#: Scope names that take a path (``storage.read:/data``), each with the names it grants besides
#: itself: WLCG "storage.modify" includes creating files; SciTokens ``write`` is its ``modify``.
PATH_SCOPES: dict[str, frozenset[str]] = {
    "storage.read": frozenset(),
    "storage.create": frozenset(),
    "storage.modify": frozenset({"storage.create"}),
    "storage.stage": frozenset(),
    "read": frozenset(),
    "write": frozenset(),
}


#: A path in canonical form, the only form a path scope is read in: ``/``, or ``/``-separated
#: segments of the characters of an RFC 6749 scope-token but ``%`` (visible ASCII without ``"``,
#: ``\`` and ``%``: no space, control character or percent-encoding), none empty, and at most one
#: final ``/`` (``/data/`` is ``/data``); ``.`` and ``..`` segments are refused besides.
CANONICAL_PATH = re.compile(r"/|(?:/[!#$&-.0-\[\]-~]+)+/?")


def _path(scope: str) -> tuple[str, tuple[str, ...]] | None:
    """``(name, path segments)`` of a path scope (no path is ``/``); None for any other scope or a
    path not in canonical form (:data:`CANONICAL_PATH`). Never normalised: ``//data``,
    ``/data/%2e%2e``, ``/data/\u2025`` or ``/data/../etc`` are not read as the path a storage
    system might resolve them to; they name nothing."""
    name, colon, path = scope.partition(":")
    if name not in PATH_SCOPES:
        return None
    if not colon:
        path = "/"
    if CANONICAL_PATH.fullmatch(path) is None:
        return None
    segments = tuple(segment for segment in path.split("/") if segment)
    if any(segment in ("..", ".") for segment in segments):
        return None
    return name, segments


def grants(granted: frozenset[str], required: str) -> bool:
    """Whether a profile issuer's ``granted`` scopes include ``required``.

    Exact names always; a path scope from the same (or an implying) name for a path prefix on ``/``
    boundaries: ``storage.read:/data`` grants ``storage.read:/data/file``, not ``/database``. A path
    scope whose path is not in canonical form, granted or required, grants nothing and is granted by
    nothing, not even by the same string.
    """
    if required.partition(":")[0] not in PATH_SCOPES:
        return required in granted
    wanted = _path(required)
    if wanted is None:
        return False
    name, segments = wanted
    for scope in granted:
        held = _path(scope)
        if held is not None and (held[0] == name or name in PATH_SCOPES[held[0]]):
            if segments[: len(held[1])] == held[1]:
                return True
    return False


#: WLCG Common JWT Profile 1.0, "Capability-based authorization": storage scopes take an absolute
#: path, compute scopes none; other names are the service's own (the profile allows them).
WLCG_SCOPE = re.compile(
    r"storage\.(?:read|create|modify|stage):/\S*|compute\.(?:read|modify|create|cancel)"
)


def in_wlcg_grammar(scope: str) -> bool:
    """Whether a scope name is one a WLCG consumer reads as meant: a ``storage.`` or ``compute.``
    name only as the profile spells them."""
    if not scope.startswith(("storage.", "compute.")):
        return True
    if WLCG_SCOPE.fullmatch(scope) is None:
        return False
    # No ".." or "." segments either: the SciTokens Enforcer refuses a whole token for one.
    return scope.startswith("compute.") or _path(scope) is not None
