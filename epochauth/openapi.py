"""drf-spectacular extensions: ``manage.py spectacular`` describes epochauth's authentication and endpoints.

Imported by :class:`~epochauth.apps.EpochAuthConfig` when ``drf_spectacular`` is installed; defining an
extension class is what registers it with drf-spectacular. The schemes:

* ``bearer``: ``Authorization: Bearer <JWT>`` (:class:`~epochauth.authentication.BearerAuthentication`);
* ``oauth2``: with ``epochauth.oauth`` installed, the authorization server's flows and the ``SCOPES``;
  an operation whose view has :class:`~epochauth.permissions.HasScope` lists its ``required_scopes`` there
  (OpenAPI 3.0 allows scopes only on OAuth2 requirements);
* ``cookieAuth``: the Django session fallback (drf-spectacular's own scheme).
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.urls import NoReverseMatch, reverse
from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiViewExtension
from drf_spectacular.plumbing import build_bearer_security_scheme_object
from drf_spectacular.utils import (
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import serializers

from . import views
from .permissions import HasAnyScope, HasScope
from .scopes import service_scopes, user_scopes

BEARER = "bearer"
OAUTH2 = "oauth2"


def oauth_server_installed() -> bool:
    return apps.is_installed("epochauth.oauth")


def required_scope_sets(view: Any) -> list[list[str]]:
    """The scope lists of which a token must carry one, from the view's HasScope/HasAnyScope; [[]]: none."""
    scopes = getattr(view, "required_scopes", ())
    scopes = [scopes] if isinstance(scopes, str) else list(scopes)
    permissions = [type(p) for p in view.get_permissions()]
    if not scopes or not any(issubclass(p, HasScope) for p in permissions):
        return [[]]
    if any(issubclass(p, HasAnyScope) for p in permissions):
        return [[scope] for scope in scopes]
    return [scopes]


def _path(name: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return ""


class BearerScheme(OpenApiAuthenticationExtension):
    """Our bearer tokens; the OAuth2 scheme beside it when epochauth's authorization server is installed."""

    target_class = "epochauth.authentication.BearerAuthentication"
    match_subclasses = True

    def __init__(self, target: Any) -> None:
        super().__init__(target)
        # drf-spectacular makes one for each schema it builds: the installed apps of that moment.
        self.name = [BEARER, OAUTH2] if oauth_server_installed() else [BEARER]

    def get_security_requirement(self, auto_schema: Any) -> list[dict[str, list[str]]]:
        requirements: list[dict[str, list[str]]] = [{BEARER: []}]
        if oauth_server_installed():
            requirements += [{OAUTH2: scopes} for scopes in required_scope_sets(auto_schema.view)]
        return requirements

    def get_security_definition(self, auto_schema: Any) -> list[dict[str, Any]]:
        bearer = build_bearer_security_scheme_object(
            header_name="Authorization", token_prefix=self.target.keyword, bearer_format="JWT"
        )
        bearer["description"] = (
            f"An access token from POST {_path('epochauth-token') or '/auth/token/'} "
            "(or from an allow-listed OpenID issuer)."
        )
        if not oauth_server_installed():
            return [bearer]
        return [bearer, oauth2_scheme()]


def oauth2_scheme() -> dict[str, Any]:
    """The flows of epochauth.oauth (OpenAPI 3.0 has no device flow: it is described in words); a
    service scope only with client credentials, the one grant that issues it."""
    scopes = user_scopes()
    token_url = _path("oauth2_provider:token")
    return {
        "type": "oauth2",
        "description": "epochauth's OAuth 2.0 authorization server; a g:<group> scope selects one of "
        "your groups. The device flow (RFC 8628) starts at "
        f"{_path('oauth2_provider:device-authorization')}.",
        "flows": {
            "authorizationCode": {
                "authorizationUrl": _path("oauth2_provider:authorize"),
                "tokenUrl": token_url,
                "refreshUrl": token_url,
                "scopes": scopes,
            },
            "clientCredentials": {
                "tokenUrl": token_url,
                "scopes": {**scopes, **{n: str(d) for n, d in service_scopes().items()}},
            },
        },
    }


class EpochAuthSessionScheme(SessionScheme):
    """epochauth's switchable session fallback is Django's session cookie."""

    target_class = "epochauth.authentication.SessionAuthentication"


TokenResponseSerializer = inline_serializer(
    "TokenResponse",
    {
        "access_token": serializers.CharField(),
        "token_type": serializers.CharField(),
        "expires_in": serializers.IntegerField(),
        "scope": serializers.CharField(allow_blank=True),
        "refresh_token": serializers.CharField(required=False),
        "refresh_expires_in": serializers.IntegerField(required=False),
        "user": inline_serializer(
            "TokenUser",
            {
                "id": serializers.CharField(help_text="The user's id: the token's sub."),
                "username": serializers.CharField(),
            },
        ),
        "groups": serializers.ListField(
            child=serializers.CharField(), help_text="Every group of the user, by name."
        ),
        "group": serializers.CharField(
            allow_null=True, help_text="The group the session selected, or null."
        ),
        "vo": serializers.CharField(
            allow_null=True,
            help_text="The community (VO) every token of the session belongs to, or null.",
        ),
    },
)
OAuthErrorSerializer = inline_serializer(
    "OAuthError", {"error": serializers.CharField(), "error_description": serializers.CharField()}
)
WhoAmISerializer = inline_serializer(
    "WhoAmI",
    {
        "issuer": serializers.CharField(),
        "subject": serializers.CharField(),
        "username": serializers.CharField(),
        "groups": serializers.ListField(child=serializers.CharField()),
        "scope": serializers.CharField(allow_blank=True),
        "group": serializers.CharField(allow_null=True),
        "vo": serializers.CharField(allow_null=True),
        "expires_at": serializers.DateTimeField(),
    },
)
RevokedSerializer = inline_serializer(
    "Revoked", {"revoked": serializers.CharField(), "epoch": serializers.IntegerField()}
)
ENDED = OpenApiResponse(description="Done; no body.")
ERRORS = {400: OAuthErrorSerializer, 401: OAuthErrorSerializer}
SSF_ERRORS = {**ERRORS, 403: OAuthErrorSerializer, 404: OAuthErrorSerializer}

#: The schema of each of our DRF endpoints: dotted path of the view class -> extend_schema arguments
#: (an extension whose module is not installed, such as epochauth.oidc's, matches nothing).
ENDPOINTS: dict[str, dict[str, Any]] = {
    "epochauth.views.TokenView": {
        "summary": "Log in: username and password for an access and a refresh token",
        "request": views.LoginSerializer,
        "responses": {200: TokenResponseSerializer, **ERRORS},
    },
    "epochauth.views.RefreshView": {
        "summary": "Rotate the refresh token: a new pair",
        "request": views.RefreshSerializer,
        "responses": {200: TokenResponseSerializer, **ERRORS},
    },
    "epochauth.views.RenewView": {
        "summary": "A fresh access token for the same session",
        "request": None,
        "responses": {200: TokenResponseSerializer, **ERRORS},
    },
    "epochauth.views.LogoutView": {
        "summary": "End this session",
        "request": None,
        "responses": {204: ENDED, **ERRORS},
    },
    "epochauth.views.LogoutAllView": {
        "summary": "End every token and session of the caller",
        "request": None,
        "responses": {204: ENDED, **ERRORS},
    },
    "epochauth.views.RevokeView": {
        "summary": "End the tokens of a user, a group, an external identity, a community or everyone",
        "request": views.RevokeSerializer,
        "responses": {200: RevokedSerializer, **ERRORS, 404: OAuthErrorSerializer},
    },
    "epochauth.views.WhoAmIView": {
        "summary": "Who the token says the caller is",
        "responses": {200: WhoAmISerializer},
    },
    "epochauth.views.JWKSView": {
        "summary": "Our public verification keys (JWKS)",
        "responses": {200: dict},
    },
    # A community's (epochauth.communities): operation ids of their own beside the site's documents.
    "epochauth.views.CommunityJWKSView": {
        "operation_id": "community_jwks",
        "summary": "A community's public verification keys (JWKS)",
        "responses": {200: dict, 404: dict},
    },
    "epochauth.views.StatusListView": {
        "summary": "A Token Status List (draft-ietf-oauth-status-list) of our tokens' sessions",
        "responses": {
            (200, "application/statuslist+jwt"): OpenApiResponse(
                str, description="The Status List Token, a JWT"
            ),
            404: OpenApiResponse(description="No such list, or the lists are off; no body."),
        },
    },
    "epochauth.views.AuthorizationServerMetadataView": {
        "summary": "RFC 8414 authorization server metadata",
        "responses": {200: dict},
    },
    "epochauth.views.CommunityMetadataView": {
        "operation_id": "community_authorization_server_metadata",
        "summary": "A community's RFC 8414 metadata (path insertion)",
        "responses": {200: dict, 404: dict},
    },
    "epochauth.views.CommunityOpenIDConfigurationView": {
        "operation_id": "community_openid_configuration",
        "summary": "A community's metadata under its issuer's openid-configuration path",
        "responses": {200: dict, 404: dict},
    },
    "epochauth.views.OpenIDConfigurationView": {
        "summary": "OpenID Connect Discovery metadata (only as an OpenID provider)",
        "responses": {200: dict, 404: dict},
    },
    "epochauth.tokenmanager.views.UpstreamTokenView": {
        "summary": "A user's upstream access token, for a service acting on their behalf (Token Manager)",
        "request": inline_serializer(
            "UpstreamTokenRequest",
            {
                "username": serializers.CharField(),
                "issuer": serializers.CharField(required=False),
                "scope": serializers.CharField(required=False),
                "resource": serializers.URLField(required=False),
            },
        ),
        "responses": {
            200: inline_serializer(
                "UpstreamToken",
                {
                    "access_token": serializers.CharField(),
                    "token_type": serializers.CharField(),
                    "expires_in": serializers.IntegerField(),
                    "scope": serializers.CharField(),
                    "issuer": serializers.CharField(),
                },
            ),
            **ERRORS,
            403: OAuthErrorSerializer,
            503: OAuthErrorSerializer,
        },
    },
    # The Shared Signals transmitter (SSF 1.0; bodies as the specification writes them).
    "epochauth.ssf.views.ConfigurationView": {
        "summary": "Shared Signals transmitter metadata (SSF 1.0 section 7)",
        "responses": {200: dict, 404: dict},
    },
    "epochauth.ssf.views.StreamView": {
        "summary": "A receiver's streams: create, read, update, replace, delete (SSF 1.0 section 8.1.1)",
        "request": dict,
        "responses": {200: dict, 201: dict, 204: ENDED, **SSF_ERRORS, 409: OAuthErrorSerializer},
    },
    "epochauth.ssf.views.StatusView": {
        "summary": "A stream's status (SSF 1.0 section 8.1.2)",
        "request": dict,
        "responses": {200: dict, **SSF_ERRORS},
    },
    "epochauth.ssf.views.AddSubjectView": {
        "summary": "Tell a stream about a subject (SSF 1.0 section 8.1.3.2)",
        "request": dict,
        "responses": {200: ENDED, **SSF_ERRORS},
    },
    "epochauth.ssf.views.RemoveSubjectView": {
        "summary": "Stop telling a stream about a subject (SSF 1.0 section 8.1.3.3)",
        "request": dict,
        "responses": {204: ENDED, **SSF_ERRORS},
    },
    "epochauth.ssf.views.VerificationView": {
        "summary": "Ask for a verification event (SSF 1.0 section 8.1.4.2)",
        "request": dict,
        "responses": {204: ENDED, **SSF_ERRORS, 429: OAuthErrorSerializer},
    },
    "epochauth.ssf.views.PollView": {
        "summary": "Poll a stream's Security Event Tokens (RFC 8936)",
        "request": dict,
        "responses": {200: dict, **SSF_ERRORS},
    },
    "epochauth.oidc.views.BackchannelLogoutView": {
        "summary": "An OpenID provider's back-channel logout",
        "request": {
            "application/x-www-form-urlencoded": inline_serializer(
                "LogoutToken", {"logout_token": serializers.CharField()}
            )
        },
        "responses": {
            200: OpenApiResponse(description="Logged out; no body."),
            400: OAuthErrorSerializer,
        },
    },
}


def _described(view_path: str, schema: dict[str, Any]) -> type[OpenApiViewExtension]:
    def view_replacement(self: OpenApiViewExtension) -> Any:
        view = type(self.target.__name__, (self.target,), {})
        if "operation_id" in schema:
            # An operation id names one method's operation, not a view class's (a community's
            # documents share their paths' ends with the site's, and so their derived ids).
            return extend_schema_view(get=extend_schema(**schema))(view)
        return extend_schema(**schema)(view)

    attrs = {"target_class": view_path, "optional": True, "view_replacement": view_replacement}
    return type(f"{view_path.rpartition('.')[2]}Schema", (OpenApiViewExtension,), attrs)


VIEW_EXTENSIONS = [_described(path, schema) for path, schema in ENDPOINTS.items()]
