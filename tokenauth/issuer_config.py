"""What we accept from one external issuer, and which issuer URLs we accept at all.

A leaf: only the settings, no models and no network, so the ``Issuer`` model, the system checks and
the fetcher all build on it (``django/contrib/auth/models.py`` imports its helpers the same way).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.utils.text import slugify
from django.utils.translation import gettext as _

from . import conf, profiles
from .profiles import WLCG_ANY_AUDIENCE

__all__ = [
    "WLCG_ANY_AUDIENCE",
    "IssuerConfig",
    "login_slug",
    "settings_login_slugs",
    "validate_issuer_url",
]


@dataclass(frozen=True)
class IssuerConfig:
    """What we accept from one external issuer (from the Issuer model or ``TOKENAUTH["ISSUERS"]``)."""

    issuer: str
    audiences: tuple[str, ...] = ()
    #: The token profile the issuer follows (:mod:`tokenauth.profiles`): "", "wlcg" or "scitokens".
    profile: str = ""
    #: Accept the profile's any-audience values (nothing without a profile: system check E017).
    accept_any_audience: bool = False
    required_scopes: tuple[str, ...] = ()
    algorithms: frozenset[str] = frozenset({"RS256", "ES256"})
    auto_provision: bool = True
    default_groups: tuple[str, ...] = ()
    group_claims: tuple[str, ...] = ()
    #: With group claims, a principal's groups are its token's; mirrored into the user's groups.
    mirror_groups: bool = True
    username_claim: str = "preferred_username"
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
        for entry in conf.tokenauth_settings.ISSUERS
        if isinstance(entry, dict)
        and isinstance(entry.get("issuer"), str)
        and entry.get("client_id")
    }


def validate_issuer_url(url: str) -> None:
    """https only; plain http just for loopback hosts when ``ALLOW_LOOPBACK_HTTP_ISSUERS`` is on."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if (
        parts.scheme == "http"
        and parts.hostname
        and conf.tokenauth_settings.ALLOW_LOOPBACK_HTTP_ISSUERS
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
