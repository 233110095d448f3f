"""What we accept from one external issuer, and which issuer URLs we accept at all.

A leaf: only the settings, no models and no network, so the ``Issuer`` model, the system checks and
the fetcher all build on it (``django/contrib/auth/models.py`` imports its helpers the same way).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import cached_property
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.text import slugify
from django.utils.translation import gettext as _

from . import conf, profiles, scopes
from .profiles import WLCG_ANY_AUDIENCE

#: ``django.contrib.auth.models.Group.name``'s ``max_length`` (this module imports no models).
GROUP_NAME_LENGTH = 150

__all__ = [
    "WLCG_ANY_AUDIENCE",
    "IssuerConfig",
    "login_slug",
    "settings_login_slugs",
    "valid_group_map",
    "valid_group_scopes",
    "validate_issuer_url",
]


@dataclass(frozen=True)
class IssuerConfig:
    """What we accept from one external issuer (from the Issuer model or ``EPOCHAUTH["ISSUERS"]``)."""

    issuer: str
    audiences: tuple[str, ...] = ()
    #: The token profile the issuer follows (:mod:`epochauth.profiles`): "", "wlcg" or "scitokens".
    profile: str = ""
    #: Accept the profile's any-audience values (nothing without a profile: system check E017).
    accept_any_audience: bool = False
    required_scopes: tuple[str, ...] = ()
    algorithms: frozenset[str] = frozenset({"RS256", "ES256"})
    auto_provision: bool = True
    default_groups: tuple[str, ...] = ()
    group_claims: tuple[str, ...] = ()
    #: (claim value, local group) pairs the admin allowed: the only way a claim joins a group that
    #: holds a permission. Given as a dict in ``ISSUERS`` and the model; pairs here, to stay hashable.
    group_map: tuple[tuple[str, str], ...] = ()
    #: The issuer's namespace: an unmapped claim value ``v`` is the local group ``<prefix>v``; with no
    #: prefix, unmapped values are ignored. Groups of one issuer never become another's.
    group_prefix: str = ""
    #: (local group, upstream scope) pairs: the scope the Token Manager asks this issuer for when a
    #: service names the group (DIRAC: "a scope that corresponds to the selected group").
    group_scopes: tuple[tuple[str, str], ...] = ()
    #: With group claims, a principal's groups are its token's; mirrored into the user's groups.
    mirror_groups: bool = True
    username_claim: str = "preferred_username"
    #: Honour the ``status`` of its tokens (epochauth.statuslist): "closed" refuses a token whose
    #: Status List cannot be had, "open" accepts it; None ignores ``status``.
    status_list: str | None = None
    slug: str = ""
    display_name: str = ""
    client_id: str = ""
    client_secret_env: str = ""

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> IssuerConfig:
        tuples = {"audiences", "required_scopes", "default_groups", "group_claims"}
        known = cls.__dataclass_fields__
        values: dict[str, Any] = {
            k: tuple(v) if k in tuples else v for k, v in data.items() if k in known
        }
        for name in ("group_map", "group_scopes"):
            if name in values:
                values[name] = tuple(sorted(values[name].items()))
        if "algorithms" in values:
            values["algorithms"] = frozenset(values["algorithms"])
        return cls(**values)

    @property
    def login_slug(self) -> str:
        return login_slug(self.issuer, self.slug)

    @property
    def accepted_audiences(self) -> list[str] | None:
        """``None`` means the issuer has no audience restriction configured."""
        if not self.audiences and not self.accept_any_audience:
            return None
        anyone = profiles.ANY_AUDIENCES.get(self.profile, ()) if self.accept_any_audience else ()
        return [*self.audiences, *anyone]

    @property
    def group_claim_names(self) -> tuple[str, ...]:
        """The configured group claims, else the profile's (``wlcg.groups`` for WLCG issuers)."""
        return self.group_claims or profiles.DEFAULT_GROUP_CLAIMS.get(self.profile, ())

    @cached_property
    def group_mapping(self) -> dict[str, str]:
        return dict(self.group_map)

    def upstream_scope(self, group: str) -> str | None:
        """The scope the Token Manager asks this issuer for on behalf of ``group``; None: unmapped."""
        return dict(self.group_scopes).get(group)

    def local_group(self, value: str) -> str | None:
        """The local group a group claim's value stands for: the admin's mapping, else the group of
        that name in the issuer's namespace; ``None`` (ignored) outside both."""
        name = self.group_mapping.get(value) or (
            f"{self.group_prefix}{value}" if self.group_prefix else ""
        )
        # Group.name's length: a longer name is ignored, not cut into another group's.
        return name if 0 < len(name) <= GROUP_NAME_LENGTH else None

    def manages_group(self, name: str) -> bool:
        """Whether this issuer's tokens decide membership of the local group ``name`` (mirroring may
        add and remove it): its default groups, mapped groups and namespace. Other groups are local."""
        return (
            name in self.default_groups
            or name in self.group_mapping.values()
            or (bool(self.group_prefix) and name.startswith(self.group_prefix))
        )

    def explicitly_allowed(self, name: str) -> bool:
        """A default or mapped group: joined from a token even when it holds a permission (an
        admin named it for this issuer); a group that is only in the namespace is not."""
        return name in self.default_groups or name in self.group_mapping.values()

    def scope_granted(self, granted: frozenset[str], required: str) -> bool:
        """Exact scope names; for a profile issuer also its hierarchical storage scopes."""
        if self.profile in profiles.PROFILES:
            return profiles.grants(granted, required)
        return required in granted


def login_slug(issuer: str, slug: str = "") -> str:
    """The browser-login URL's slug: the configured one, else one made from the issuer URL."""
    parts = urlsplit(issuer)
    return slug or slugify(f"{parts.netloc} {parts.path}")


def settings_login_slugs() -> dict[str, str]:
    """The login slug of each issuer in ``ISSUERS`` with a client id (disabled ones too), to its issuer."""
    return {
        login_slug(entry["issuer"], entry.get("slug") or ""): entry["issuer"]
        for entry in conf.epochauth_settings.ISSUERS
        if isinstance(entry, dict)
        and isinstance(entry.get("issuer"), str)
        and entry.get("client_id")
    }


def valid_group_map(value: Any) -> bool:
    """``group_map``'s shape: claim values (non-empty strings) to group names."""
    return isinstance(value, dict) and all(
        isinstance(k, str) and k and isinstance(v, str) and 0 < len(v) <= GROUP_NAME_LENGTH
        for k, v in value.items()
    )


def valid_group_scopes(value: Any) -> bool:
    """``group_scopes``' shape: group names to non-empty scope strings (RFC 6749 section 3.3)."""
    return isinstance(value, dict) and all(
        isinstance(k, str)
        and 0 < len(k) <= GROUP_NAME_LENGTH
        and isinstance(v, str)
        and bool(scopes.split_scope(v))
        and all(scopes.is_scope_token(name) for name in scopes.split_scope(v))
        for k, v in value.items()
    )


def validate_issuer_url(url: str) -> None:
    """https only; plain http just for loopback hosts when ``ALLOW_LOOPBACK_HTTP_ISSUERS`` is on."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if (
        parts.scheme == "http"
        and parts.hostname
        and conf.epochauth_settings.ALLOW_LOOPBACK_HTTP_ISSUERS
    ):
        host = parts.hostname
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if loopback:
            return
    raise ValidationError(
        _("Not an acceptable issuer URL (https required): %(url)s") % {"url": url}
    )
