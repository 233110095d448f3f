"""Token profiles an external issuer may follow, and their rules: the WLCG Common JWT Profiles
(IAM, CILogon; version 1.3 of 17 June 2026, whose tokens still say ``wlcg.ver`` "1.0") and
SciTokens 2.0.

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
#: What our tokens say in ``wlcg.ver``: section 2.1.1 of profile 1.3 keeps "1.0" on tokens that
#: follow 1.2 or later until every consumer is known to read them (1.0 libraries refuse any other).
WLCG_VERSION = "1.0"
#: The scope of host-based authorization (section 2.2.4): the token's ``sub`` is the client id
#: ``host:<fully qualified domain name>`` of the client-credentials grant that obtained it.
HOST_AUTH = "host.auth"
#: That client id: ``host:`` and a DNS name of at least two labels (a predictable, globally unique
#: name, never verified against the client's address, as the profile says).
HOST_CLIENT_ID = re.compile(
    r"host:(?=.{1,253}\Z)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
#: The group claims read from a profile issuer's tokens when none are configured.
DEFAULT_GROUP_CLAIMS: dict[str, tuple[str, ...]] = {WLCG: (WLCG_GROUPS,)}

#: The "stat" operation of WLCG storage (metadata: size, checksum, locality), which no scope names:
#: a view requires it by path (``required_scopes = ["storage.stat:/data/file"]``) and only the scopes
#: of :data:`PATH_SCOPES` that include it grant it; ``storage.stat`` in a token grants nothing.
STAT = "storage.stat"

#: Scope names that take a path (``storage.read:/data``), each with the names it grants besides
#: itself. WLCG Common JWT Profile 1.3 section 2.2.1: ``storage.modify`` includes
#: ``storage.create``; ``storage.stage`` includes ``storage.poll`` (locality polling, also a scope of
#: its own) and no longer ``storage.read``, whatever the token's ``wlcg.ver``; read, create, modify and
#: stage authorize :data:`STAT`. SciTokens ``write`` is its ``modify``.
PATH_SCOPES: dict[str, frozenset[str]] = {
    "storage.read": frozenset({STAT}),
    "storage.create": frozenset({STAT}),
    "storage.modify": frozenset({"storage.create", STAT}),
    "storage.stage": frozenset({"storage.poll", STAT}),
    "storage.poll": frozenset(),
    "read": frozenset(),
    "write": frozenset(),
}
#: Names a view may require by path besides the scopes themselves.
PATH_NAMES = frozenset({*PATH_SCOPES, STAT})


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
    if name not in PATH_NAMES:
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
    if required.partition(":")[0] not in PATH_NAMES:
        return required in granted
    wanted = _path(required)
    if wanted is None:
        return False
    name, segments = wanted
    for scope in granted:
        held = _path(scope)
        # No scope, or a path operation (storage.stat) named in a token: that grants nothing.
        if held is None or held[0] not in PATH_SCOPES:
            continue
        if held[0] == name or name in PATH_SCOPES[held[0]]:
            if segments[: len(held[1])] == held[1]:
                return True
    return False


#: WLCG Common JWT Profile 1.3 section 2.2.1, "Capability-based Authorization": storage scopes take
#: an absolute path, compute scopes none; other names are the service's own (the profile allows them).
WLCG_SCOPE = re.compile(
    r"storage\.(?:read|create|modify|stage|poll):/\S*|compute\.(?:read|modify|create|cancel)"
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
