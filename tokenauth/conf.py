"""The ``TOKENAUTH`` settings dict: defaults in one place, read like DRF's ``api_settings``.

Access values as attributes (``tokenauth_settings.ACCESS_TOKEN_LIFETIME``); they are cached and
dropped again when a test changes the ``TOKENAUTH`` setting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    # Our own issuer string: the ``iss`` of every token we mint. Required.
    "ISSUER": None,
    # Value(s) for ``aud`` in our tokens; when set, our tokens must carry it.
    "AUDIENCE": None,
    # Signing: an HMAC secret, or a PEM private key (or a path to one) for RS*/ES*/PS*/EdDSA.
    "ALGORITHM": "HS256",
    "SIGNING_KEY": None,
    "SIGNING_KEY_FILE": None,
    # Key id of the signing key; derived from the key when None.
    "KEY_ID": None,
    # Retired keys that still verify: [{"kid": ..., "algorithm": ..., "key": PEM or secret}].
    "VERIFICATION_KEYS": [],
    # Lifetimes.
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "REMEMBER_ME_REFRESH_TOKEN_LIFETIME": timedelta(days=30),
    "LEEWAY": timedelta(seconds=30),
    # Requests with a longer bearer token are refused before any parsing.
    "MAX_TOKEN_BYTES": 8192,
    # Scopes a client may ask for at POST /auth/token/: {"name": "description"}; others are refused.
    "SCOPES": {},
    # The token profile of the tokens we mint: None, or "wlcg" (WLCG Common JWT Profile 1.0: wlcg.ver,
    # aud always, groups as wlcg.groups paths), for storage and compute services that verify them.
    "TOKEN_PROFILE": None,
    # Mechanisms.
    "LOCAL_TOKENS": True,
    "EXTERNAL_ISSUERS": True,
    "SESSION_AUTH_FALLBACK": True,
    # Live login sessions per user (None = unlimited); a login beyond it ends the oldest ones.
    "MAX_SESSIONS_PER_USER": None,
    # A user's new password (any path that saves the user) ends every token and session of theirs.
    "REVOKE_ON_PASSWORD_CHANGE": True,
    # Brute-force protection for POST /auth/token/ (DRF throttle rate string, None = off).
    "LOGIN_THROTTLE_RATE": "10/min",
    # Revocation state is re-read from the shared Django cache at most this often per process.
    "REVOCATION_REFRESH_INTERVAL": timedelta(seconds=1),
    # Each process re-reads the denylist and the issuer table from the database at least this often,
    # even when no change was announced through the shared cache (an announcement can be lost).
    "REVOCATION_RELOAD_INTERVAL": timedelta(minutes=1),
    # Each process holds every epoch change of this long ago or later: a token issued within it is
    # checked without I/O. Older tokens read their epochs through the shared cache, one by one.
    "REVOCATION_WINDOW": timedelta(days=1),
    # With Redis as the shared cache, changes are pushed to every process over pub/sub (milliseconds);
    # the version key and the database stay the net.
    "REVOCATION_PUSH": True,
    # How long the shared cache keeps an epoch it read from the database.
    "EPOCH_CACHE_TIMEOUT": timedelta(hours=1),
    # Verified tokens remembered per process (expiry and revocation are still checked each time);
    # also the bound of the per-process (issuer, sub) -> user memo.
    "VERIFIED_TOKEN_CACHE_SIZE": 10000,
    # Load the full user row on every request instead of lazily on first use of a non-claim field.
    "LOAD_USER": False,
    # External issuers configured in code (next to the Issuer rows of the admin): a list of dicts with
    # "issuer" and optionally "audiences", "profile" ("wlcg" or "scitokens"), "accept_any_audience"
    # (the profile's any-audience value), "required_scopes", "algorithms",
    # "auto_provision", "default_groups", "group_claims", "mirror_groups", "username_claim", "enabled",
    # and for browser login "slug", "display_name", "client_id", "client_secret_env".
    "ISSUERS": [],
    # Accept http:// issuers on loopback hosts (tests, local demos); https is required otherwise.
    "ALLOW_LOOPBACK_HTTP_ISSUERS": False,
    # Fetching discovery documents and JWKS: time limit (connect and whole download) and size cap.
    "HTTP_TIMEOUT": timedelta(seconds=5),
    "HTTP_MAX_BYTES": 512 * 1024,
    # JWKS lifetime: the issuer's Cache-Control max-age, kept within these bounds.
    "JWKS_CACHE_MIN": timedelta(minutes=5),
    "JWKS_CACHE_MAX": timedelta(hours=24),
    # An unknown key id refetches an issuer's JWKS at most once per this window.
    "JWKS_REFETCH_COOLDOWN": timedelta(minutes=1),
    # While an issuer is down its last good keys keep serving for this long.
    "JWKS_MAX_STALENESS": timedelta(days=1),
    # How long the shared cache keeps an (issuer, sub) -> user mapping.
    "IDENTITY_CACHE_TIMEOUT": timedelta(hours=1),
    # Which Django cache alias holds revocation state (use a shared one, e.g. Redis, in production).
    "CACHE_ALIAS": "default",
    # Browser login (tokenauth.oidc): every enabled issuer with a client id is a provider.
    "BROWSER_LOGIN": True,
    "OIDC_SCOPES": "openid profile email",
    # Client secrets by provider slug, for secrets not kept in an environment variable.
    "OIDC_CLIENT_SECRETS": {},
    # With exactly one provider, /oidc/login/ sends the browser straight to it.
    "OIDC_REDIRECT_SINGLE_PROVIDER": False,
    # Back-channel logout: a provider's logout token issued longer ago (iat, plus LEEWAY) is refused.
    "BACKCHANNEL_LOGOUT_MAX_AGE": timedelta(minutes=5),
}

TIMEDELTA_SETTINGS = (
    "ACCESS_TOKEN_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
    "REMEMBER_ME_REFRESH_TOKEN_LIFETIME",
    "LEEWAY",
    "REVOCATION_REFRESH_INTERVAL",
    "REVOCATION_RELOAD_INTERVAL",
    "REVOCATION_WINDOW",
    "EPOCH_CACHE_TIMEOUT",
    "HTTP_TIMEOUT",
    "JWKS_CACHE_MIN",
    "JWKS_CACHE_MAX",
    "JWKS_REFETCH_COOLDOWN",
    "JWKS_MAX_STALENESS",
    "IDENTITY_CACHE_TIMEOUT",
    "BACKCHANNEL_LOGOUT_MAX_AGE",
)


class TokenAuthSettings:
    """Attribute access to ``settings.TOKENAUTH`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "TOKENAUTH", {}) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid TOKENAUTH setting: {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in TIMEDELTA_SETTINGS and isinstance(value, int | float):
            value = timedelta(seconds=value)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._cached:
            delattr(self, name)
        self._cached.clear()


tokenauth_settings = TokenAuthSettings()


#: What each module that holds process state registered with :func:`process_cache`.
_resets: list[Callable[[], None]] = []


def process_cache(reset: Callable[[], None]) -> Callable[[], None]:
    """Register the reset of a module's process cache (beside the cache, as Django's hashers keep
    theirs): it runs when a test changes ``TOKENAUTH``, ``SECRET_KEY`` or ``CACHES``."""
    _resets.append(reset)
    return reset


def clear_process_caches() -> None:
    """Forget everything tokenauth holds in process memory (keys, verified tokens, revocation, issuers)."""
    for reset in _resets:
        reset()


@receiver(setting_changed)
def reload_tokenauth_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in ("TOKENAUTH", "SECRET_KEY", "CACHES"):
        tokenauth_settings.reload()
        clear_process_caches()
