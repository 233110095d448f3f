"""Settings for the demo/test project.

Everything that differs between a laptop demo and CI comes from the environment:

``DJANGO_DEBUG``           "1"/"true" (default) or "0"/"false"
``DJANGO_SECRET_KEY``      Django's SECRET_KEY (dev default below; never use it in production)
``DATABASE_URL``           any dj-database-url URL; default: SQLite file ``db.sqlite3`` in the repo root
``REDIS_URL``              when set, the default cache is Redis; otherwise per-process LocMemCache
``EPOCHAUTH_ISSUER``       our ``iss`` claim (default http://127.0.0.1:8000)
``EPOCHAUTH_ALGORITHM``    signing algorithm of local tokens (default HS256; ``dev.py demo`` sets RS256)
``EPOCHAUTH_SIGNING_KEY``  key used to sign local tokens (dev default below)
``EPOCHAUTH_SIGNING_KEY_FILE``  a PEM file with the signing key instead (``dev.py demo`` generates one)
``EPOCHAUTH_ID_TOKEN_SIGNING_KEY_FILE``  an RSA key for ID tokens beside another signing algorithm
``DJANGO_LOG_LEVEL``       console log level (default WARNING)
``DJANGO_CORS_ALLOWED_ORIGINS``  comma-separated origins of browser apps that may call the API (default none)
``TEST_IDP_ISSUER``        when set, that OpenID provider (e.g. tests/idp on http://127.0.0.1:9000) is a
                           browser-login provider "Test IdP" with client ``web-client``, whose secret
                           is read from ``TEST_IDP_CLIENT_SECRET`` (tests/idp's default: web-secret)
``EPOCHAUTH_SSF_TRANSMITTER``  when set, that issuer (e.g. another epochauth deployment) is allow-listed
                           (its tokens for our ISSUER accepted) and a Shared Signals transmitter we
                           receive from (``EPOCHAUTH_SSF_DELIVERY``: push, the default, or poll; its
                           management token in ``EPOCHAUTH_SSF_TOKEN``); then run
                           ``manage.py epochauth_ssf_subscribe <issuer>``
"""

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean from the environment ("1", "true", "yes", "on" are true)."""
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


DEBUG = env_bool("DJANGO_DEBUG", True)
SECRET_KEY = os.environ.get(
    "DJANGO_SECRET_KEY", "dev-only-insecure-secret-key-do-not-use-in-production"
)
ALLOWED_HOSTS = ["*"] if DEBUG else os.environ.get("DJANGO_ALLOWED_HOSTS", "localhost").split(",")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served from here: the demo works offline
    "epochauth",
    "oauth2_provider",
    "epochauth.oauth",
    "epochauth.tokenmanager",
    "epochauth.contrib.simplejwt",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Before CommonMiddleware, so that it answers preflights and adds its headers to every answer.
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # Pages and error descriptions in the language the browser or client asks for (Accept-Language).
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "epochauth.middleware.EpochSessionMiddleware",
    # Off until EPOCHAUTH["OIDC_SESSION_CHECK_INTERVAL"] is set.
    "epochauth.oidc.recheck.ProviderSessionMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "testproject.urls"
WSGI_APPLICATION = "testproject.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "testproject" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# SQLite by default; e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/test in CI
# (pytest-django then creates and drops the database "test_test").
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
    ),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = os.environ.get("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Pub/sub channels are server-wide, not per database: the database in the prefix keeps
            # two checkouts that share one Redis server (each on its own database) apart.
            "KEY_PREFIX": "epochauth-testproject-" + REDIS_URL.rstrip("/").rpartition("/")[2],
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "OPTIONS": {"MAX_ENTRIES": 100000},
        }
    }

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []  # demo project: any password goes

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "epochauth.authentication.BearerAuthentication",
        "epochauth.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The OpenAPI document (drf-spectacular) at /api/schema/, Swagger UI at /api/docs/ (no CDN).
SPECTACULAR_SETTINGS = {
    "TITLE": "epochauth demo API",
    "DESCRIPTION": "Log in at POST /auth/token/, then send the access token as Authorization: Bearer.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from drf-spectacular-sidecar's static files rather than a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

EPOCHAUTH = {
    "ISSUER": os.environ.get("EPOCHAUTH_ISSUER", "http://127.0.0.1:8000"),
    "SIGNING_KEY": os.environ.get(
        "EPOCHAUTH_SIGNING_KEY", "dev-only-epochauth-signing-key-change-me-0123456789abcdef"
    ),
    # The test OpenID provider (tests/idp) serves plain http on 127.0.0.1.
    "ALLOW_LOOPBACK_HTTP_ISSUERS": DEBUG,
    # The sign-in page of the user pages (LOGIN_URL below) has a password form beside the providers.
    "PASSWORD_LOGIN": True,
    # offline_access: the provider's refresh token, kept by the Token Manager (epochauth.tokenmanager).
    "OIDC_SCOPES": "openid profile email offline_access",
    "TOKEN_MANAGER_KEYS": [
        os.environ.get(
            "EPOCHAUTH_TOKEN_MANAGER_KEY", "7yzty8UFLugPfO-17uXi1qxDjcT03D5Of_s4Dzl0J4w="
        )
    ],
    "SCOPES": {"reports:read": "Read the example reports"},
    # "tokenmanager" (TOKEN_MANAGER_SCOPE) is a service scope without being listed: only the
    # client-credentials token of an application whose allowed scopes name it may hold it.
    # The demo moves from simplejwt (its endpoints are under /simplejwt/): a window that always ends a
    # month ahead; a real site names a date.
    "SIMPLEJWT_MIGRATION_ENDS": datetime.now(UTC) + timedelta(days=30),
    # Without Redis, revocations are pushed through the database (PostgreSQL LISTEN/NOTIFY, SQLite's
    # data_version): a logout in one server process reaches the others within a second or two.
    "REVOCATION_PUSH": True if REDIS_URL else "database",
}

# Two communities (VOs, epochauth.communities) on the one demo site, as LHCb and Belle II on one DIRAC:
# each with its own issuer (<ISSUER>/lhcb, <ISSUER>/belle2), JWKS and discovery documents. Their keys
# are HS256 secrets derived from SECRET_KEY here; a real site gives each an asymmetric key of its own.
# A user joins one in the admin ("Community memberships"); a login selects it with the scope vo:<slug>.
EPOCHAUTH["COMMUNITIES"] = {
    "lhcb": {"name": "LHCb", "algorithm": "HS256"},
    "belle2": {"name": "Belle II", "algorithm": "HS256"},
}
# A login naming no community gets this one (dev.py demo sets "lhcb"); unset, the user's only
# community, or the site's token for a user of none (every user of the test suite but its own).
EPOCHAUTH["DEFAULT_COMMUNITY"] = os.environ.get("EPOCHAUTH_DEFAULT_COMMUNITY") or None

# dev.py demo signs with an RS256 key file (epochauth's default algorithm, HS256, otherwise).
if os.environ.get("EPOCHAUTH_ALGORITHM"):
    EPOCHAUTH["ALGORITHM"] = os.environ["EPOCHAUTH_ALGORITHM"]
if os.environ.get("EPOCHAUTH_SIGNING_KEY_FILE"):
    EPOCHAUTH["SIGNING_KEY_FILE"] = os.environ["EPOCHAUTH_SIGNING_KEY_FILE"]
if os.environ.get("EPOCHAUTH_ID_TOKEN_SIGNING_KEY_FILE"):
    EPOCHAUTH["ID_TOKEN_SIGNING_KEY_FILE"] = os.environ["EPOCHAUTH_ID_TOKEN_SIGNING_KEY_FILE"]

# The simplejwt setup the demo is moving from (epochauth.contrib.simplejwt accepts its tokens).
SIMPLE_JWT = {
    "SIGNING_KEY": os.environ.get(
        "SIMPLE_JWT_SIGNING_KEY", "dev-only-simplejwt-signing-key-0123456789abcdef"
    ),
    "ALGORITHM": "HS256",
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=5),
}

# Browser apps on other origins (django-cors-headers): they send the bearer token in Authorization, so
# no cookie crosses origins (credentials stay off) and the 401's reason is readable by the app.
CORS_ALLOWED_ORIGINS = [
    o for o in os.environ.get("DJANGO_CORS_ALLOWED_ORIGINS", "").split(",") if o
]
CORS_ALLOW_CREDENTIALS = False
CORS_EXPOSE_HEADERS = ["WWW-Authenticate", "Retry-After"]

# The OAuth 2.0 authorization server (epochauth.oauth on django-oauth-toolkit): access tokens are ours.
DEVICE_PAGE = EPOCHAUTH["ISSUER"].rstrip("/") + "/o/device/"
OAUTH2_PROVIDER = {
    "OAUTH2_SERVER_CLASS": "epochauth.oauth.server.Server",
    "OAUTH2_VALIDATOR_CLASS": "epochauth.oauth.validators.EpochAuthValidator",
    "SCOPES_BACKEND_CLASS": "epochauth.oauth.scopes.EpochAuthScopes",
    "PKCE_REQUIRED": True,
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,  # refresh tokens stored hashed
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "REFRESH_TOKEN_EXPIRE_SECONDS": 30 * 24 * 3600,
    "OAUTH_DEVICE_VERIFICATION_URI": DEVICE_PAGE,
    "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": DEVICE_PAGE + "?user_code={user_code}",
}
# OpenID Provider mode (ID tokens, /o/userinfo/, /o/logout/) where the site has an RS256 key for ID
# tokens (dev.py demo signs with RS256): the one algorithm every relying party verifies.
OAUTH2_PROVIDER["OIDC_ENABLED"] = OAUTH2_PROVIDER["OIDC_RP_INITIATED_LOGOUT_ENABLED"] = (
    EPOCHAUTH.get("ALGORITHM") == "RS256" or "ID_TOKEN_SIGNING_KEY_FILE" in EPOCHAUTH
)
# The Shared Signals transmitter where receivers can verify its SETs: with the RS256 key of OpenID
# Provider mode (an HMAC secret is never published).
if OAUTH2_PROVIDER["OIDC_ENABLED"]:
    EPOCHAUTH["SSF_TRANSMITTER"] = True
# Where the authorize and device pages send a visitor to sign in: a provider or a password, staff or not.
LOGIN_URL = "epochauth-oidc-login"

# Browser login (epochauth.oidc): password logins (admin) and OpenID providers side by side.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "epochauth.oidc.backend.OIDCBackend",
]
# Session cookies are HttpOnly and SameSite=Lax (Django's defaults; Lax lets the provider's redirect
# back in); outside DEBUG the site runs on HTTPS and they are Secure too.
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = not DEBUG
if os.environ.get("TEST_IDP_ISSUER"):
    EPOCHAUTH["ISSUERS"] = [
        {
            "issuer": os.environ["TEST_IDP_ISSUER"],
            "slug": "test-idp",
            "display_name": "Test IdP",
            "client_id": "web-client",
            "client_secret_env": "TEST_IDP_CLIENT_SECRET",
            "audiences": ["https://api.example.test"],
            "group_claims": ["groups"],
            # Its groups are its own: "/atlas" is test-idp:/atlas here (no claim names a local group).
            "group_prefix": "test-idp:",
            # Its users are in physics: `epochauth login --group physics` signs in there directly.
            "default_groups": ["physics"],
        }
    ]

# Shared Signals (epochauth.ssf): events from another deployment end its users' access here.
if os.environ.get("EPOCHAUTH_SSF_TRANSMITTER"):
    _transmitter = os.environ["EPOCHAUTH_SSF_TRANSMITTER"]
    EPOCHAUTH["ISSUERS"] = [
        *EPOCHAUTH.get("ISSUERS", []),
        {"issuer": _transmitter, "audiences": [EPOCHAUTH["ISSUER"]]},
    ]
    EPOCHAUTH["SSF_TRANSMITTERS"] = [
        {
            "issuer": _transmitter,
            "token_env": "EPOCHAUTH_SSF_TOKEN",
            "delivery": os.environ.get("EPOCHAUTH_SSF_DELIVERY", "push"),
        }
    ]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "WARNING")},
    # Django's default config gives "django" a console handler of its own, and its records go on
    # to ours as well: every line ("Watching for file changes", "Not Found: ...") came out twice.
    "loggers": {"django": {"handlers": [], "level": "INFO"}},
}
