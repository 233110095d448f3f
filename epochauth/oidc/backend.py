"""The authentication backend for browser logins: code for tokens, ID token checked, (iss, sub) -> user.

Unlike mozilla-django-oidc's backend it serves several providers: the provider comes with the call
(bound to the login's ``state``), not from global ``OIDC_*`` settings. The ID token is verified with
the JWKS cache that verifies bearer tokens, and users are found by (iss, sub) only, never by email.
"""

from __future__ import annotations

import logging
from typing import Any

import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.mail import mail_admins
from django.http import HttpRequest
from django.urls import reverse
from django.utils.crypto import constant_time_compare
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from mozilla_django_oidc.auth import OIDCAuthenticationBackend

from .. import exceptions, fetching, jwks, models, provisioning, snapshots, verification
from . import providers

logger = logging.getLogger(__name__)

UNREACHABLE = _(
    "The sign-in provider cannot be reached right now. Please try again in a few minutes."
)
UNVERIFIED = _("The sign-in provider's answer could not be verified. Please start again.")
#: ``authenticate`` leaves the verified ID token's claims on the request under this name: the callback
#: records the provider's session (``sid``) for back-channel logout.
ID_TOKEN_CLAIMS = "epochauth_id_token_claims"
#: The request attribute with the provider's token response, for the ``upstream_tokens`` signal.
TOKEN_RESPONSE = "epochauth_token_response"


class LoginFailed(Exception):
    """A browser login that cannot go on; the views show ``message`` on a page with ``status``."""

    template = "epochauth/oidc/error.html"

    def __init__(
        self, message: str | Promise, *, status: int = 400, title: str | Promise | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.status = message, status
        self.title = _("Sign-in failed") if title is None else title


class NotRegistered(LoginFailed):
    template = "epochauth/oidc/not_registered.html"

    def __init__(self, provider: providers.Provider) -> None:
        super().__init__(
            _("Your account is not registered with this service."),
            status=403,
            title=_("Not registered"),
        )
        self.provider = provider


class OIDCBackend(OIDCAuthenticationBackend):
    """List it in ``AUTHENTICATION_BACKENDS``: Django loads the session's user through it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Everything mozilla reads from OIDC_* settings here comes from the provider instead.
        self.UserModel = get_user_model()

    def authenticate(
        self,
        request: HttpRequest | None,
        *,
        oidc_provider: providers.Provider,
        nonce: str,
        code_verifier: str | None,
    ) -> Any:
        """Keyword-only arguments: password logins (``username=…``) never reach this backend."""
        if request is None or not request.GET.get("code"):
            return None
        self.request, self.provider = request, oidc_provider
        payload = {
            "grant_type": "authorization_code",
            "code": request.GET["code"],
            "redirect_uri": request.build_absolute_uri(reverse("epochauth-oidc-callback")),
        }
        if code_verifier is not None:
            payload["code_verifier"] = code_verifier
        tokens = self.get_token(payload)
        id_token, access_token = tokens.get("id_token"), tokens.get("access_token")
        if not isinstance(id_token, str):
            raise LoginFailed(_("The sign-in provider sent no ID token."))
        claims = self.verify_token(id_token, nonce=nonce)
        setattr(request, ID_TOKEN_CLAIMS, claims)
        setattr(request, TOKEN_RESPONSE, tokens)
        if isinstance(access_token, str) and access_token:
            claims = {**self.get_userinfo(access_token, id_token, claims), **claims}
        return self.get_or_create_user(access_token, id_token, claims)

    def get_token(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The token endpoint's answer."""
        provider = self.provider
        try:
            response = provider.client_post("token_endpoint", payload)
            body = response.json() if response.content else {}
        except providers.NoClientSecret:
            logger.error("epochauth: no client secret for the login provider %s", provider.slug)
            raise LoginFailed(
                _("Sign-in with this provider is not configured correctly.")
            ) from None
        except providers.ProviderUnavailable as exc:
            logger.warning("epochauth: login provider %s: %s", provider.slug, exc)
            raise LoginFailed(UNREACHABLE) from None
        except (requests.RequestException, ValueError) as exc:
            logger.warning(
                "epochauth: token endpoint of %s: %s", provider.slug, type(exc).__name__
            )
            raise LoginFailed(UNREACHABLE) from None
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            logger.warning(
                "epochauth: token endpoint of %s answered %s %s",
                provider.slug,
                response.status_code,
                error,
            )
            if response.status_code >= 500:
                raise LoginFailed(UNREACHABLE)
            raise LoginFailed(
                _("The sign-in provider did not accept this sign-in (expired or used twice?).")
            )
        return body

    def verify_token(self, token: str, **kwargs: Any) -> dict[str, Any]:
        """Signature (keys from the shared JWKS cache), iss, aud = our client id, exp, iat and nonce."""
        policy = verification.Policy.for_issuer(
            self.provider.config,
            audience=(self.provider.client_id,),
            required=("iss", "sub", "aud", "exp", "iat"),
        )
        try:
            claims = verification.verify(verification.parse(token), policy)
        except jwks.IssuerUnavailable:
            raise LoginFailed(UNREACHABLE) from None
        except exceptions.InvalidToken:
            raise LoginFailed(UNVERIFIED) from None
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != self.provider.client_id:
            raise LoginFailed(UNVERIFIED)  # OIDC Core 3.1.3.7: several audiences need azp = us
        nonce = kwargs.get("nonce")
        if (
            not nonce
            or not isinstance(claims.get("nonce"), str)
            or not constant_time_compare(claims["nonce"], nonce)
        ):
            raise LoginFailed(UNVERIFIED)
        return claims

    def get_userinfo(
        self, access_token: str, id_token: str, payload: dict[str, Any]
    ) -> dict[str, Any]:
        """The UserInfo claims: a conformant provider keeps profile claims (and often groups) out of
        the ID token of a code flow. Its ``sub`` must be the ID token's (OIDC Core 5.3.2).

        ``{}`` without a userinfo endpoint, or when it refuses the access token (401, 403: a token for
        a resource server, RFC 8707): the ID token's claims are then all there is.
        """
        provider = self.provider
        endpoint = provider.metadata().get("userinfo_endpoint")
        if endpoint is None:
            return {}
        try:
            userinfo, _ = fetching.fetch_json(
                endpoint, headers={"Authorization": f"Bearer {access_token}"}
            )
        except fetching.FetchError as exc:
            logger.warning("epochauth: userinfo endpoint of %s: %s", provider.slug, exc)
            if exc.status in (401, 403):
                return {}
            raise LoginFailed(UNREACHABLE) from None
        if userinfo.get("sub") != payload["sub"]:
            logger.warning(
                "epochauth: userinfo endpoint of %s answered for another subject", provider.slug
            )
            raise LoginFailed(UNVERIFIED)
        return userinfo

    def get_or_create_user(
        self, access_token: str | None, id_token: str, payload: dict[str, Any]
    ) -> Any:
        """The user of (iss, sub), provisioned like for bearer tokens; never looked up by email."""
        provider = self.provider
        try:
            principal = provisioning.resolve(provider.config, payload)
        except provisioning.IdentityNotRegistered:
            self.not_registered(payload)
            raise NotRegistered(provider) from None
        except exceptions.InvalidToken:
            raise LoginFailed(_("This account's access was revoked."), status=403) from None
        except snapshots.StateUnavailable:
            raise LoginFailed(
                _("The service is unavailable right now. Please try again."), status=503
            ) from None
        user = self.UserModel._default_manager.filter(pk=principal.user_id).first()
        if user is None or not user.is_active:
            raise LoginFailed(
                _("This account is disabled."), status=403, title=_("Account disabled")
            )
        return user

    def not_registered(self, claims: dict[str, Any]) -> None:
        """Tell the admins who knocked, so they can register the identity if it is welcome."""
        provider, subject = self.provider, claims["sub"][:255]
        shown = {
            k: str(claims[k])[:255] for k in ("preferred_username", "name", "email") if k in claims
        }
        models.AuditEvent.objects.create(
            action="browser_login_not_registered",
            detail={
                "issuer": provider.issuer,
                "subject": subject,
                "provider": provider.slug,
                **shown,
            },
        )
        lines = [f"Provider: {provider.name} ({provider.issuer})", f"Subject: {subject}"]
        lines += [f"{k}: {v}" for k, v in shown.items()]
        mail_admins(
            "Browser login of an unregistered identity", "\n".join(lines), fail_silently=True
        )

    def get_user(self, user_id: Any) -> Any:
        # Inactive users lose their session, as with passwords.
        return ModelBackend.get_user(self, user_id)
