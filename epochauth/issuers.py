"""The allow-list of external issuers: entries of ``EPOCHAUTH["ISSUERS"]`` and enabled ``Issuer``
rows, looked up by the exact ``iss`` before any network I/O.

The other parts of accepting an issuer live beside it, one module each: what we accept from one
issuer (:mod:`epochauth.issuer_config`), fetching its documents within limits
(:mod:`epochauth.fetching`), its keys (:mod:`epochauth.jwks`) and verifying its tokens
(:mod:`epochauth.verification`). Their public names stay importable from here.
"""

from __future__ import annotations

from functools import lru_cache

from . import conf, models, snapshots, tokens
from .fetching import MAX_AGE, NO_CACHE, FetchError, fetch_discovery, fetch_json
from .issuer_config import (
    WLCG_ANY_AUDIENCE,
    IssuerConfig,
    login_slug,
    settings_login_slugs,
    validate_issuer_url,
)
from .jwks import (
    EC_CURVES,
    IssuerUnavailable,
    JWKSCache,
    KeySet,
    PublicKey,
    discover_jwks_uri,
    download_jwks,
    jwks_cache,
    parse_jwks,
)

__all__ = [
    "EC_CURVES",
    "MAX_AGE",
    "NO_CACHE",
    "WLCG_ANY_AUDIENCE",
    "FetchError",
    "IssuerConfig",
    "IssuerUnavailable",
    "JWKSCache",
    "KeySet",
    "PublicKey",
    "all_issuers",
    "db_issuers",
    "discover_jwks_uri",
    "download_jwks",
    "fetch_discovery",
    "fetch_json",
    "get_issuer",
    "jwks_cache",
    "login_slug",
    "parse_jwks",
    "settings_issuers",
    "settings_login_slugs",
    "validate_issuer_url",
]


def _load_db_issuers() -> dict[str, IssuerConfig]:
    return {
        row.issuer: row.config()
        for row in models.Issuer.objects.filter(enabled=True).prefetch_related("default_groups")
    }


#: A changed issuer drops the verified-token memo: its tokens are checked against the new rules
#: (audiences, algorithms, profile) on their next request, in every process.
db_issuers: snapshots.SharedSnapshot[dict[str, IssuerConfig]] = snapshots.SharedSnapshot(
    "issuers", _load_db_issuers, on_change=tokens.verified_tokens.clear
)


@lru_cache(maxsize=1)
def settings_issuers() -> dict[str, IssuerConfig | None]:
    """Issuers configured in code, built once per settings reload; ``None`` marks a disabled one."""
    return {
        entry["issuer"]: IssuerConfig.from_mapping(entry) if entry.get("enabled", True) else None
        for entry in conf.epochauth_settings.ISSUERS
        # Check E007 reports the other entries.
        if isinstance(entry, dict) and isinstance(entry.get("issuer"), str)
    }


conf.process_cache(db_issuers.reset)
conf.process_cache(settings_issuers.cache_clear)


def get_issuer(iss: str) -> IssuerConfig | None:
    """The enabled issuer named exactly ``iss`` (settings entries win over database rows), or None."""
    if not conf.epochauth_settings.EXTERNAL_ISSUERS:
        return None
    configured = settings_issuers()
    if iss in configured:
        return configured[iss]
    return db_issuers.get().get(iss)


def all_issuers() -> list[IssuerConfig]:
    if not conf.epochauth_settings.EXTERNAL_ISSUERS:
        return []
    merged = {**db_issuers.get(), **settings_issuers()}
    return [config for config in merged.values() if config is not None]
