"""System checks of the DOT settings that the authorization server depends on (registered by the app)."""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from oauth2_provider.settings import oauth2_settings

from .. import conf, keys
from . import registration, scopes, server, validators

# DOT setting -> the class of ours it must be (or subclass): the server brings our JWT generator,
# lifetimes and grants; the validator our subjects, scopes, epochs and revocation; the scopes
# backend our scope list (DOT's default offers "read write").
CLASSES = {
    "OAUTH2_SERVER_CLASS": server.Server,
    "OAUTH2_VALIDATOR_CLASS": validators.EpochAuthValidator,
    "SCOPES_BACKEND_CLASS": scopes.EpochAuthScopes,
}


@checks.register(checks.Tags.security)
def check_oauth_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    for name, ours in CLASSES.items():
        try:
            configured = getattr(oauth2_settings, name)
        except ImportError as exc:
            configured = exc
        if not (isinstance(configured, type) and issubclass(configured, ours)):
            errors.append(
                checks.Error(
                    f'OAUTH2_PROVIDER["{name}"] must be {ours.__module__}.{ours.__qualname__}.',
                    hint="Otherwise DOT issues its own opaque tokens or skips epochauth's rules.",
                    id="epochauth.oauth.E001",
                )
            )
    for name in ("ROTATE_REFRESH_TOKEN", "REFRESH_TOKEN_REUSE_PROTECTION"):
        if getattr(oauth2_settings, name) is not True:
            errors.append(
                checks.Error(
                    f'OAUTH2_PROVIDER["{name}"] must be True.',
                    hint="A stolen refresh token must be detected when it is used twice, and revoke "
                    "its whole family.",
                    id="epochauth.oauth.E002",
                )
            )
    if oauth2_settings.REFRESH_TOKEN_GRACE_PERIOD_SECONDS:
        errors.append(
            checks.Error(
                'OAUTH2_PROVIDER["REFRESH_TOKEN_GRACE_PERIOD_SECONDS"] must be 0.',
                hint="DOT answers a retry within the grace period with the stored access token, and "
                "only its jti is stored: the answer would not be a token. Set "
                'EPOCHAUTH["REFRESH_TOKEN_GRACE_PERIOD"] instead.',
                id="epochauth.oauth.E003",
            )
        )
    if not oauth2_settings.OAUTH_DEVICE_VERIFICATION_URI:
        errors.append(
            checks.Warning(
                'OAUTH2_PROVIDER["OAUTH_DEVICE_VERIFICATION_URI"] is not set.',
                hint="Device authorization answers then tell no one where to log in: set it to the "
                "absolute URL of the device page (o/device/).",
                id="epochauth.oauth.W001",
            )
        )
    errors.extend(check_openid_provider())
    errors.extend(check_rp_initiated_logout())
    errors.extend(check_client_registration())
    return errors


def check_openid_provider() -> list[checks.CheckMessage]:
    """OpenID Provider mode signs ID tokens RS256 (OpenID Connect Core 1.0 section 15.1: every
    provider supports it, and every relying party that registered no algorithm expects it)."""
    if not oauth2_settings.OIDC_ENABLED:
        return []
    try:
        keyring = keys.get_keyring()
    except (ImproperlyConfigured, OSError):
        # epochauth's own checks report a key that does not load.
        return []
    if keyring.id_token is not None:
        return []
    return [
        checks.Error(
            f'OAUTH2_PROVIDER["OIDC_ENABLED"] needs an RS256 key for ID tokens; EPOCHAUTH["ALGORITHM"] '
            f"is {keyring.signing.algorithm}.",
            hint='Set EPOCHAUTH["ID_TOKEN_SIGNING_KEY_FILE"] to an RSA private key (manage.py '
            "epochauth_keys --generate RS256): ID tokens are signed with it, access tokens keep "
            "the signing key. Until then the site is no OpenID provider: no openid scope, no "
            "/.well-known/openid-configuration.",
            id="epochauth.oauth.E004",
        )
    ]


def check_rp_initiated_logout() -> list[checks.CheckMessage]:
    """``/o/logout/`` signs a browser out only through its confirmation page (a POST with CSRF)."""
    if not (
        oauth2_settings.OIDC_ENABLED
        and oauth2_settings.OIDC_RP_INITIATED_LOGOUT_ENABLED
        and oauth2_settings.OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT is not True
    ):
        return []
    return [
        checks.Error(
            'OAUTH2_PROVIDER["OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT"] must be True.',
            hint="Otherwise any page can send the browser to /o/logout/ with the user's ID token "
            "and sign the user out without asking.",
            id="epochauth.oauth.E005",
        )
    ]


def check_client_registration() -> list[checks.CheckMessage]:
    """Dynamic client registration registers public clients only: their codes need PKCE, and only
    epochauth's registration endpoint applies that policy."""
    errors: list[checks.CheckMessage] = []
    mode = conf.epochauth_settings.CLIENT_REGISTRATION
    if mode not in registration.MODES:
        errors.append(
            checks.Error(
                f'EPOCHAUTH["CLIENT_REGISTRATION"] must be None, "open" or "authenticated", not {mode!r}.',
                id="epochauth.oauth.E006",
            )
        )
    if oauth2_settings.DCR_ENABLED:
        errors.append(
            checks.Warning(
                'OAUTH2_PROVIDER["DCR_ENABLED"] is True.',
                hint="DOT's own registration views register what a request asks for (confidential "
                "clients with the client-credentials grant too) and keep registration access tokens "
                'as DOT access tokens: leave it False and use EPOCHAUTH["CLIENT_REGISTRATION"].',
                id="epochauth.oauth.W002",
            )
        )
    if not registration.enabled():
        return errors
    if oauth2_settings.PKCE_REQUIRED is not True:
        errors.append(
            checks.Error(
                'EPOCHAUTH["CLIENT_REGISTRATION"] needs OAUTH2_PROVIDER["PKCE_REQUIRED"] = True.',
                hint="Registered clients are public: without PKCE, whoever intercepts a code on its "
                "way to their redirect URI gets the user's tokens.",
                id="epochauth.oauth.E007",
            )
        )
    if (
        mode == registration.OPEN
        and conf.epochauth_settings.CLIENT_REGISTRATION_THROTTLE_RATE is None
    ):
        errors.append(
            checks.Warning(
                'Open client registration without EPOCHAUTH["CLIENT_REGISTRATION_THROTTLE_RATE"].',
                hint='Anyone may then fill the application table: set a rate such as "10/hour".',
                id="epochauth.oauth.W003",
            )
        )
    return errors
