"""Login providers: the enabled issuers with a client id, their discovered endpoints and secrets.

Endpoints come from the issuer's discovery document only (its ``issuer`` must be exactly ours), cached
per process like the JWKS; a failed fetch is not cached, so a provider that comes back works at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from .. import clock
from ..conf import process_cache, tokenauth_settings
from ..fetching import FetchError, fetch_discovery
from ..issuer_config import IssuerConfig, validate_issuer_url
from ..issuers import all_issuers

#: Discovery documents by issuer: (document, fresh until).
metadata_cache: dict[str, tuple[dict[str, Any], float]] = {}

process_cache(metadata_cache.clear)


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be fetched or is unusable."""


@dataclass(frozen=True)
class Provider:
    slug: str
    name: str
    config: IssuerConfig

    @property
    def issuer(self) -> str:
        return self.config.issuer

    @property
    def client_id(self) -> str:
        return self.config.client_id

    def client_secret(self) -> str | None:
        """From the environment variable the issuer names, else ``TOKENAUTH["OIDC_CLIENT_SECRETS"]``."""
        if self.config.client_secret_env and os.environ.get(self.config.client_secret_env):
            return os.environ[self.config.client_secret_env]
        return tokenauth_settings.OIDC_CLIENT_SECRETS.get(self.slug) or None

    def metadata(self) -> dict[str, Any]:
        return provider_metadata(self.issuer)


def _provider(config: IssuerConfig) -> Provider:
    return Provider(config.login_slug, config.display_name or urlsplit(config.issuer).netloc, config)


def login_providers() -> list[Provider]:
    """Every enabled issuer with a client id, by display name (none while browser login is off)."""
    if not tokenauth_settings.BROWSER_LOGIN:
        return []
    providers = [_provider(config) for config in all_issuers() if config.client_id]
    return sorted(providers, key=lambda p: (p.name.lower(), p.slug))


def provider_by_slug(slug: str) -> Provider | None:
    return next((p for p in login_providers() if p.slug == slug), None)


def provider_by_issuer(issuer: str) -> Provider | None:
    return next((p for p in login_providers() if p.issuer == issuer), None)


ENDPOINTS = ("authorization_endpoint", "token_endpoint")
OPTIONAL_ENDPOINTS = ("userinfo_endpoint", "end_session_endpoint")


def provider_metadata(issuer: str) -> dict[str, Any]:
    """The issuer's discovery document, checked: exact ``issuer``, https (or loopback) endpoints."""
    cached = metadata_cache.get(issuer)
    if cached is not None and clock.wall() < cached[1]:
        return cached[0]
    try:
        document, max_age = fetch_discovery(issuer)
    except FetchError as exc:
        raise ProviderUnavailable(str(exc)) from None
    for name in (*ENDPOINTS, *OPTIONAL_ENDPOINTS):
        url = document.get(name)
        if url is None and name in OPTIONAL_ENDPOINTS:
            continue
        try:
            if not isinstance(url, str):
                raise ValidationError(f"no {name}")
            validate_issuer_url(url)
        except ValidationError as exc:
            raise ProviderUnavailable(f"discovery document of {issuer}: {name}: {exc.messages[0]}") from None
    low = tokenauth_settings.JWKS_CACHE_MIN.total_seconds()
    high = tokenauth_settings.JWKS_CACHE_MAX.total_seconds()
    lifetime = min(max(max_age if max_age is not None else high, low), high)
    metadata_cache[issuer] = (document, clock.wall() + lifetime)
    return document
