"""A relying party of our OpenID provider, for tests/test_openid_provider.py: a Django site of its own
with nothing but mozilla-django-oidc, run as a separate process (``python -m django runserver``).

The provider is named by the environment: ``RP_OP_URL`` (our live server), ``RP_CLIENT_ID``,
``RP_CLIENT_SECRET``; ``RP_DATABASE`` is its SQLite file. mozilla-django-oidc's ``SessionRefresh``
signs the user in again silently (``prompt=none``) once the ID token is ``RP_RENEW_SECONDS`` old (its
default: 15 minutes).
"""

import os

OP = os.environ.get("RP_OP_URL", "http://localhost:8000")

DEBUG = True
SECRET_KEY = "test-relying-party-only"
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "mozilla_django_oidc",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "mozilla_django_oidc.middleware.SessionRefresh",
]
ROOT_URLCONF = "tests.rp_urls"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("RP_DATABASE", ":memory:"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
# Not the provider's cookie: both sites may share a host name, and cookies ignore the port.
SESSION_COOKIE_NAME = "rp_sessionid"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]

AUTHENTICATION_BACKENDS = ["mozilla_django_oidc.auth.OIDCAuthenticationBackend"]
OIDC_RP_CLIENT_ID = os.environ.get("RP_CLIENT_ID", "portal")
OIDC_RP_CLIENT_SECRET = os.environ.get("RP_CLIENT_SECRET", "")
OIDC_RP_SIGN_ALGO = "RS256"
OIDC_RP_SCOPES = "openid email profile"
OIDC_USE_PKCE = True
OIDC_STORE_ACCESS_TOKEN = True
OIDC_STORE_ID_TOKEN = True
OIDC_OP_AUTHORIZATION_ENDPOINT = f"{OP}/o/authorize/"
OIDC_OP_TOKEN_ENDPOINT = f"{OP}/o/token/"
OIDC_OP_USER_ENDPOINT = f"{OP}/o/userinfo/"
OIDC_OP_JWKS_ENDPOINT = f"{OP}/.well-known/jwks.json"
OIDC_OP_LOGOUT_URL_METHOD = "tests.rp_urls.provider_logout_url"
OIDC_RENEW_ID_TOKEN_EXPIRY_SECONDS = int(os.environ.get("RP_RENEW_SECONDS", 15 * 60))
# The pages of tests/rp_urls.py that show the session's tokens start no silent sign-in.
OIDC_EXEMPT_URLS = ["/tokens/"]
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
