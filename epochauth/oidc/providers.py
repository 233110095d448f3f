"""Login providers: the enabled issuers with a client id, their discovered endpoints and secrets.

Endpoints come from the issuer's discovery document only (its ``issuer`` must be exactly ours), cached
per process like the JWKS; a failed fetch is not cached, so a provider that comes back works at once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from django.core.exceptions import ValidationError

from .. import clock, conf, fetching, issuer_config, issuers

#: Discovery documents by issuer: (document, fresh until).
metadata_cache: dict[str, tuple[dict[str, Any], float]] = {}

conf.process_cache(metadata_cache.clear)


class ProviderUnavailable(Exception):
    """The provider's discovery document could not be fetched or is unusable."""


class NoClientSecret(ProviderUnavailable):
    """Neither the environment nor ``OIDC_CLIENT_SECRETS`` has the provider's client secret."""


@dataclass(frozen=True)
class Provider:
    slug: str
    name: str
    config: issuer_config.IssuerConfig

    @property
    def issuer(self) -> str:
        return self.config.issuer

    @property
    def client_id(self) -> str:
        return self.config.client_id

    def client_secret(self) -> str | None:
        """From the environment variable the issuer names, else ``EPOCHAUTH["OIDC_CLIENT_SECRETS"]``."""
        if self.config.client_secret_env and os.environ.get(self.config.client_secret_env):
            return os.environ[self.config.client_secret_env]
        return conf.epochauth_settings.OIDC_CLIENT_SECRETS.get(self.slug) or None

    def metadata(self) -> dict[str, Any]:
        return provider_metadata(self.issuer)

    def client_post(self, endpoint: str, payload: dict[str, str]) -> requests.Response:
        """POST to the provider's ``endpoint`` (a key of its metadata) as its client: client_secret_basic
        unless the provider takes only client_secret_post. Raises :class:`ProviderUnavailable` (also
        :class:`NoClientSecret`) and requests' errors."""
        secret = self.client_secret()
        if secret is None:
            raise NoClientSecret(f"no client secret for the login provider {self.slug}")
        metadata = self.metadata()
        url = metadata.get(endpoint)
        if not isinstance(url, str):
            raise ProviderUnavailable(f"the provider {self.slug} has no {endpoint}")
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        payload, auth = {**payload, "client_id": self.client_id}, None
        if "client_secret_basic" in methods or "client_secret_post" not in methods:
            auth = (self.client_id, secret)
        else:
            payload["client_secret"] = secret
        return requests.post(
            url,
            data=payload,
            auth=auth,
            timeout=conf.epochauth_settings.HTTP_TIMEOUT.total_seconds(),
            allow_redirects=False,
            headers={"Accept": "application/json"},
        )

    @property
    def groups(self) -> frozenset[str]:
        """The groups this provider's users are in: its default groups and ``OIDC_PROVIDER_GROUPS``."""
        listed = conf.epochauth_settings.OIDC_PROVIDER_GROUPS.get(self.slug, ())
        return frozenset(self.config.default_groups).union(listed)


def _provider(config: issuer_config.IssuerConfig) -> Provider:
    return Provider(
        config.login_slug, config.display_name or urlsplit(config.issuer).netloc, config
    )


def login_providers() -> list[Provider]:
    """Every enabled issuer with a client id, by display name (none while browser login is off)."""
    if not conf.epochauth_settings.BROWSER_LOGIN:
        return []
    providers = [_provider(config) for config in issuers.all_issuers() if config.client_id]
    return sorted(providers, key=lambda p: (p.name.lower(), p.slug))


def provider_by_slug(slug: str) -> Provider | None:
    return next((p for p in login_providers() if p.slug == slug), None)


def provider_by_issuer(issuer: str) -> Provider | None:
    return next((p for p in login_providers() if p.issuer == issuer), None)


def provider_for_group(name: str) -> Provider | None:
    """The one provider that has the group, or None when none or several have it (the user chooses)."""
    providers = [p for p in login_providers() if name in p.groups]
    return providers[0] if len(providers) == 1 else None


ENDPOINTS = ("authorization_endpoint", "token_endpoint")
OPTIONAL_ENDPOINTS = ("userinfo_endpoint", "end_session_endpoint", "revocation_endpoint")


def provider_metadata(issuer: str) -> dict[str, Any]:
    """The issuer's discovery document, checked: exact ``issuer``, https (or loopback) endpoints."""
    cached = metadata_cache.get(issuer)
    if cached is not None and clock.wall() < cached[1]:
        return cached[0]
    try:
        document, max_age = fetching.fetch_discovery(issuer)
    except fetching.FetchError as exc:
        raise ProviderUnavailable(str(exc)) from None
    for name in (*ENDPOINTS, *OPTIONAL_ENDPOINTS):
        url = document.get(name)
        if url is None and name in OPTIONAL_ENDPOINTS:
            continue
        try:
            if not isinstance(url, str):
                raise ValidationError(f"no {name}")
            issuer_config.validate_issuer_url(url)
        except ValidationError as exc:
            raise ProviderUnavailable(
                f"discovery document of {issuer}: {name}: {exc.messages[0]}"
            ) from None
    low = conf.epochauth_settings.JWKS_CACHE_MIN.total_seconds()
    high = conf.epochauth_settings.JWKS_CACHE_MAX.total_seconds()
    lifetime = min(max(max_age if max_age is not None else high, low), high)
    metadata_cache[issuer] = (document, clock.wall() + lifetime)
    return document
