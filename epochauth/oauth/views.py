"""The endpoints DOT does not have or gets wrong for us: token (JSON errors), introspection, metadata,
userinfo (OpenID Provider mode)."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone, translation
from django.utils.decorators import method_decorator
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider import views as dot
from oauth2_provider.models import get_device_grant_model
from oauth2_provider.oauth2_backends import OAuthLibCore, get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request as OAuthlibRequest

from .. import authentication, conf, dpop, exceptions, jwks, snapshots, urns, views
from ..scopes import user_scopes
from . import exchange, openid, proofs, scopes, validators

GRANT_TYPES = [
    "authorization_code",
    urns.DEVICE_CODE,
    "client_credentials",
    "refresh_token",
    urns.TOKEN_EXCHANGE,
]
CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


def _error(error: str, description: str | Promise, status: int = 400) -> JsonResponse:
    return JsonResponse(
        {"error": error, "error_description": description}, status=status, headers=views.NO_STORE
    )


def _unavailable() -> JsonResponse:
    """Revocation state or the database cannot be read: a 503 to retry, as for any bearer token."""
    response = _error("temporarily_unavailable", _("Try again later"), 503)
    response["Retry-After"] = str(exceptions.ServiceUnavailable.wait)
    return response


def _challenge(request: HttpRequest | None) -> str:
    """The start of a 401's or 403's ``WWW-Authenticate``: the ``DPoP`` scheme (RFC 9449 section
    7.1) for a request that used it, else ``Bearer`` (RFC 6750 section 3)."""
    if request is None or not authentication.is_dpop_scheme(
        request.META.get("HTTP_AUTHORIZATION", "")
    ):
        return "Bearer "
    algorithms = " ".join(conf.epochauth_settings.DPOP_ALGORITHMS)
    return f'{dpop.SCHEME} algs="{algorithms}", '


def _bearer_error(
    error: str, description: str | Promise, status: int, request: HttpRequest | None = None
) -> JsonResponse:
    """An RFC 6750 section 3 error: the body in the request's language, the challenge in English,
    of the scheme ``request`` used."""
    response = _error(error, description, status)
    with translation.override(None):
        english = str(description)
    challenge = _challenge(request)
    response["WWW-Authenticate"] = f'{challenge}error="{error}", error_description="{english}"'
    return response


@method_decorator(csrf_exempt, name="dispatch")
class DeviceAuthorizationView(dot.DeviceAuthorizationView):
    """RFC 8628 section 3.1/3.2; DOT's version fails on oauthlib 4's response (it carries ``scope``)
    and stores the default polling interval instead of the one it announced.

    The interval runs between polls (section 3.5): the grant starts as if polled one interval ago,
    so the first poll may come at once (``last_checked`` is ``auto_now``, hence the ``update()``).
    """

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        headers, response, status = self.create_device_authorization_response(request)
        if status != 200:
            return JsonResponse(json.loads(response), status=status, headers=headers)
        client_id = request.POST.get("client_id")
        if not client_id:
            return _error("invalid_request", _("client_id is required in the request body"))
        model = get_device_grant_model()
        grant = model.objects.create(
            client_id=client_id,
            device_code=response["device_code"],
            user_code=response["user_code"],
            scope=response.get("scope") or request.POST.get("scope", "").strip(),
            interval=response["interval"],
            expires=timezone.now() + timedelta(seconds=response["expires_in"]),
        )
        model.objects.filter(pk=grant.pk).update(
            last_checked=validators.poll_time() - timedelta(seconds=response["interval"])
        )
        return JsonResponse(response, headers={**headers, **views.NO_STORE})


class TokenEndpointCore(OAuthLibCore):
    """DOT's request reading, keeping every value of a repeatable token-exchange parameter: DOT keeps
    repeated ``resource`` only, and a dropped ``audience`` would go unchecked; and the request's
    absolute URL, which a DPoP proof names (DOT hands oauthlib the path only)."""

    def extract_headers(self, request: HttpRequest) -> dict[str, str]:
        headers = super().extract_headers(request)
        headers[proofs.URL_KEY] = request.build_absolute_uri()
        return headers

    def extract_body(self, request: HttpRequest) -> list[tuple[str, str]]:
        return [
            (name, value)
            for name, values in request.POST.lists()
            for value in (values if name in exchange.TARGET_PARAMETERS else values[-1:])
        ]


class TokenView(dot.TokenView):
    """DOT's token endpoint with every grant, device polling included, going through oauthlib.

    DOT answers a device poll itself before oauthlib (a 404 or a 500 for bad input, no ``slow_down``);
    here the validator's ``validate_device_code`` gives the RFC 8628 answers instead.
    """

    oauthlib_backend_class = TokenEndpointCore

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return self.authorization_flow_token_response(request)
        except snapshots.StateUnavailable:  # a DPoP proof's jti could not be used up: fail closed
            return _unavailable()


def authenticated_client(request: HttpRequest) -> Any:
    """The confidential application authenticating this request (basic auth or body), or None.

    DOT's ``authenticate_client`` accepts an empty secret for a client whose stored secret is empty,
    as that of the public ``epochauth-cli``: such a client proves nothing.
    """
    core = get_oauthlib_core()
    uri, method, body, headers = core._extract_params(request)
    oauth_request = OAuthlibRequest(uri, method, body, headers)
    if not core.server.request_validator.authenticate_client(oauth_request):
        return None
    client = oauth_request.client
    return client if client.client_type == client.CLIENT_CONFIDENTIAL else None


@method_decorator(csrf_exempt, name="dispatch")
class IntrospectView(View):
    """RFC 7662 for our access tokens, verified like any bearer token: revoked or epoch-stale tokens
    are ``active: false``. Any authenticated confidential client may introspect. A DPoP-bound token
    is described with its binding (``cnf.jkt``, type ``DPoP``: RFC 9449 section 6.2), which the
    resource server checks against the proof it received; the client's credentials authenticate
    this request, no proof."""

    def post(self, request: HttpRequest) -> HttpResponse:
        if authenticated_client(request) is None:
            response = _error("invalid_client", _("Client authentication failed"), 401)
            response["WWW-Authenticate"] = 'Basic realm="oauth"'
            return response
        token = request.POST.get("token")
        if not token:
            return _error("invalid_request", _("The token parameter is missing"))
        try:
            access = validators.validate_own_token(token)
            user = authentication.token_user(access)
        except exceptions.InvalidToken:
            return JsonResponse({"active": False}, headers=views.NO_STORE)
        except (snapshots.StateUnavailable, jwks.IssuerUnavailable):
            return _unavailable()
        claims = access.claims
        body: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer" if access.dpop_jkt is None else dpop.SCHEME,
            "username": user.get_username(),
            **{
                k: claims[k]
                for k in ("iss", "sub", "aud", "exp", "iat", "jti", "scope", "client_id")
                if k in claims
            },
        }
        if access.dpop_jkt is not None:
            body["cnf"] = {"jkt": access.dpop_jkt}
        return JsonResponse(body, headers=views.NO_STORE)


#: Where ``UserInfoView`` leaves ``(user, access)`` of the DPoP-bound token it verified.
BOUND_ATTRIBUTE = "_epochauth_bound"


class UserInfoCore(OAuthLibCore):
    """DOT's request reading, handing the validator the DPoP-bound token ``UserInfoView`` verified
    with its proof (:data:`.validators.BOUND_KEY`)."""

    def extract_headers(self, request: HttpRequest) -> dict[str, Any]:
        headers = super().extract_headers(request)
        bound = getattr(request, BOUND_ATTRIBUTE, None)
        if bound is not None:
            headers[validators.BOUND_KEY] = bound
        return headers


def good_for_other_scopes(core: OAuthLibCore, request: HttpRequest) -> bool:
    """Whether the bearer token is valid when no scope is asked for, checked as userinfo checks it
    (oauthlib's resource endpoint would take any JWT for an ID token)."""
    oauth_request = OAuthlibRequest(*core._extract_params(request))
    oauth_request.scopes = []
    return bool(core.server.bearer.validate_request(oauth_request))


class UserInfoView(dot.UserInfoView):
    """``/o/userinfo/`` (OpenID Connect Core 1.0 section 5.3) for our access tokens with ``openid``,
    checked by our revocation (see the validator's ``validate_bearer_token``) and described from the
    user row (``get_userinfo_claims``); 503 when that state cannot be read, as for any bearer token.
    A good token without ``openid`` is a 403 ``insufficient_scope`` (RFC 6750 section 3.1), not
    oauthlib's 401 ``invalid_token``: the client needs another grant, not a refresh; so is a
    client-credentials token, which has no end user to describe.

    A DPoP-bound token comes as ``Authorization: DPoP`` with its proof (RFC 9449 section 7), which
    oauthlib does not read: the view verifies both first, as ``BearerAuthentication`` does, and
    errors carry the ``DPoP`` challenge. Sent as ``Bearer``, a bound token is ``invalid_token``, and
    so is any token with ``DPOP_REQUIRED``."""

    oauthlib_backend_class = UserInfoCore

    def _create_userinfo_response(self, request: HttpRequest) -> HttpResponse:
        try:
            header = request.META.get("HTTP_AUTHORIZATION", "")
            if authentication.is_dpop_scheme(header):
                bound = validators.verify_own_token(header[5:].strip(), request)
                setattr(request, BOUND_ATTRIBUTE, bound)
            elif header and conf.epochauth_settings.DPOP_REQUIRED:
                raise exceptions.ProofRequired()  # the site takes no bearer tokens, ours or DOT's
            elif header[:7].lower() == "bearer " and validators.is_own_token(header[7:].strip()):
                # A bound token of ours is refused with our description, not oauthlib's bare 401.
                authentication.check_bearer_use(authentication.validate_token(header[7:].strip()))
            response = super()._create_userinfo_response(request)
            # oauthlib checks the scope with the token: only a refused one is verified again.
            if response.status_code == 401 and good_for_other_scopes(
                self.get_oauthlib_core(), request
            ):
                response = _error(
                    "insufficient_scope",
                    _("This request requires the scope: %(scope)s") % {"scope": "openid"},
                    403,
                )
                challenge = _challenge(request)
                response["WWW-Authenticate"] = (
                    f'{challenge}error="insufficient_scope", scope="openid"'
                )
            return response
        except validators.NoEndUser:
            return _bearer_error(
                "insufficient_scope",
                _("A client-credentials token has no end user: sign a user in"),
                403,
                request,
            )
        except exceptions.InvalidToken as exc:
            return _bearer_error(exc.error, exc.description, 401, request)
        except (snapshots.StateUnavailable, jwks.IssuerUnavailable, DatabaseError):
            return _unavailable()


def openid_metadata(request: HttpRequest) -> dict[str, Any]:
    """OpenID Connect Discovery 1.0 additions in OpenID Provider mode (:func:`.openid.is_openid_provider`)."""
    if not openid.is_openid_provider():
        return {}
    document = {
        "userinfo_endpoint": views.issuer_url(request, "oauth2_provider:user-info"),
        "id_token_signing_alg_values_supported": list(openid.ID_TOKEN_ALGORITHMS),
        "scopes_supported": sorted(scopes.requestable_scopes()),
        # The ID token's and userinfo's claims beyond those of our access tokens, which the
        # OpenID configuration document lists itself.
        "claims_supported": ["auth_time", "nonce", "sid", *validators.USER_CLAIMS],
        # Back-Channel Logout 1.0 section 2.1: we send logout tokens, with sid when asked
        # (epochauth.oauth.backchannel).
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
    }
    if oauth2_settings.OIDC_RP_INITIATED_LOGOUT_ENABLED:
        document["end_session_endpoint"] = views.issuer_url(
            request, "oauth2_provider:rp-initiated-logout"
        )
    return document


def server_metadata(request: HttpRequest) -> dict[str, Any]:
    """The OAuth server's part of our RFC 8414 metadata (``views.authorization_server_metadata``)."""

    def url(name: str) -> str:
        return views.issuer_url(request, name)

    return {
        "issuer": conf.epochauth_settings.ISSUER,
        "authorization_endpoint": url("oauth2_provider:authorize"),
        "token_endpoint": url("oauth2_provider:token"),
        "device_authorization_endpoint": url("oauth2_provider:device-authorization"),
        "revocation_endpoint": url("oauth2_provider:revoke-token"),
        "introspection_endpoint": url("oauth2_provider:introspect"),
        "jwks_uri": url("epochauth-jwks"),
        "grant_types_supported": GRANT_TYPES,
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": [*CLIENT_AUTH_METHODS, "none"],
        "revocation_endpoint_auth_methods_supported": [*CLIENT_AUTH_METHODS, "none"],
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        # What a client may ask for: a service scope is for the applications an admin marked, whose
        # operators know it, and no other client should be invited to request one.
        "scopes_supported": sorted(user_scopes()),
    }
