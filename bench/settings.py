"""Django settings of one bench process: a small but complete project (middleware, URL routing, JSON).

Each scenario runs in its own process (settings can be configured once per process, and a fresh
process gives an honest RSS), so the few things that differ between scenarios are arguments here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import django
from django.conf import settings

from .counters import CountingConnection

HS_SECRET = "bench-hs256-secret-0123456789abcdef0123456789abcdef"
HS_KID = "bench-hs256"
RS_KID = "bench-rs256"
ISSUER = "https://bench.example"
IDP_AUDIENCE = "https://api.example.test"  # tests/idp's default resource: the "aud" of its tokens
IDP_SCOPE = "servicex"
#: The usual stack of a project that serves an API and browser sessions (epochauth's handbook adds
#: EpochSessionMiddleware after AuthenticationMiddleware).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "epochauth.middleware.EpochSessionMiddleware",
]
# What epochauth.oauth needs from DOT (see docs/handbook.md, "OAuth2 authorization server").
OAUTH2_PROVIDER = {
    "OAUTH2_SERVER_CLASS": "epochauth.oauth.server.Server",
    "OAUTH2_VALIDATOR_CLASS": "epochauth.oauth.validators.EpochAuthValidator",
    "SCOPES_BACKEND_CLASS": "epochauth.oauth.scopes.EpochAuthScopes",
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
}


@dataclass(frozen=True)
class Setup:
    """What differs between the bench processes."""

    #: Redis URL of the shared cache, or None for Django's default LocMemCache (300 entries).
    redis_url: str | None = None
    #: Prefix of every cache key of this bench run (a Redis database may be shared with others).
    key_prefix: str = "epochauth-bench"
    #: SQLite file shared by several processes, or None for an in-memory database.
    sqlite_path: str | None = None
    rsa_pem: str | None = None
    idp_issuer: str | None = None
    #: A PostgreSQL database URL (postgres://user@host:port/name) instead of SQLite.
    postgres_url: str | None = None
    #: ``EPOCHAUTH["REVOCATION_PUSH"]``: Redis pub/sub (True), through the database, or none.
    revocation_push: bool | str = True


def postgres(url: str) -> dict[str, Any]:
    """Django's DATABASES entry of a postgres:// URL."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parts.path.lstrip("/"),
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": parts.hostname or "",
        "PORT": str(parts.port or ""),
        "CONN_MAX_AGE": None,
    }


def caches(setup: Setup) -> dict[str, Any]:
    if setup.redis_url is None:
        return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    return {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": setup.redis_url,
            "KEY_PREFIX": setup.key_prefix,
            # Counts every command this process sends to Redis.
            "OPTIONS": {"connection_class": CountingConnection},
        }
    }


def epochauth_settings(setup: Setup) -> dict[str, Any]:
    verification = (
        [{"algorithm": "RS256", "key": setup.rsa_pem, "kid": RS_KID}] if setup.rsa_pem else []
    )
    issuers = [
        {"issuer": setup.idp_issuer, "audiences": [IDP_AUDIENCE], "required_scopes": [IDP_SCOPE]}
    ]
    return {
        "ISSUER": ISSUER,
        "ALGORITHM": "HS256",
        "SIGNING_KEY": HS_SECRET,
        "KEY_ID": HS_KID,
        "VERIFICATION_KEYS": verification,
        "ISSUERS": issuers if setup.idp_issuer else [],
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,  # the test IdP serves http on 127.0.0.1
        "SCOPES": {"read": "the scope of the opaque DOT token, requested for the DOT-issued JWT"},
        # The DPoP rows' proofs are all signed before timing: none may grow too old during a long run.
        "DPOP_PROOF_LIFETIME": timedelta(hours=1),
        # No token may expire during a long run; the login throttle would refuse the login bench.
        "ACCESS_TOKEN_LIFETIME": timedelta(days=1),
        "LOGIN_THROTTLE_RATE": None,
        "REVOCATION_PUSH": setup.revocation_push,
    }


def configure(setup: Setup) -> None:
    # A persistent connection (CONN_MAX_AGE), as a production server keeps.
    database: dict[str, Any] = {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": ":memory:",
        "CONN_MAX_AGE": None,
    }
    if setup.postgres_url:
        database = postgres(setup.postgres_url)
    elif setup.sqlite_path:  # shared by processes: WAL lets one read while another writes
        database.update(
            NAME=setup.sqlite_path, OPTIONS={"init_command": "PRAGMA journal_mode=WAL;"}
        )
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-django-secret-key-0123456789abcdef0123456789abcdef",
        ROOT_URLCONF="bench.urls",
        MIDDLEWARE=MIDDLEWARE,
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "rest_framework",
            "rest_framework_simplejwt.token_blacklist",
            "knox",
            "epochauth",
            "oauth2_provider",
            "epochauth.oauth",
        ],
        DATABASES={"default": database},
        CACHES=caches(setup),
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        ALLOWED_HOSTS=["bench.example"],
        SECURE_PROXY_SSL_HEADER=None,
        # The same cheap hasher on both sides of the login bench, so it compares the rest of the work.
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
        REST_FRAMEWORK={
            "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
            "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
        },
        EPOCHAUTH=epochauth_settings(setup),
        OAUTH2_PROVIDER=OAUTH2_PROVIDER,
        SIMPLE_JWT={
            "ALGORITHM": "HS256",
            "SIGNING_KEY": HS_SECRET,
            "ACCESS_TOKEN_LIFETIME": timedelta(days=1),
            "ROTATE_REFRESH_TOKENS": True,
            "BLACKLIST_AFTER_ROTATION": True,
        },
        REST_KNOX={"TOKEN_TTL": timedelta(days=1)},
    )
    django.setup()
