"""``POST /tokenmanager/token/``: a service obtains a user's upstream access token.

Only with a bearer token (never a browser's session cookie) whose user holds the permission
``tokenauth_tokenmanager.obtain_upstream_token`` or that carries ``TOKEN_MANAGER_SCOPE`` (a
client-credentials token of the service's application). Answers are RFC 6749 JSON, never cached.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from .. import authentication, conf, exceptions, tokens, views
from . import grants

PERMISSION = "tokenauth_tokenmanager.obtain_upstream_token"


class CanObtainUpstreamTokens(BasePermission):
    """The permission, or a token with ``TOKEN_MANAGER_SCOPE``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        scopes = (
            request.auth.scopes if isinstance(request.auth, tokens.AccessToken) else frozenset()
        )
        return conf.tokenauth_settings.TOKEN_MANAGER_SCOPE in scopes or request.user.has_perm(
            PERMISSION
        )


class UpstreamTokenSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    issuer = serializers.CharField(max_length=255, required=False)
    scope = serializers.CharField(max_length=1000, required=False)
    resource = serializers.URLField(max_length=1000, required=False)


class UpstreamTokenView(views.TokenAuthView):
    authentication_classes = (authentication.BearerAuthentication,)
    permission_classes = (CanObtainUpstreamTokens,)

    def post(self, request: Request) -> Response:
        data = views.validated(UpstreamTokenSerializer, request)
        user = (
            get_user_model()
            ._default_manager.filter(**{get_user_model().USERNAME_FIELD: data["username"]})
            .first()
        )
        if user is None or not user.is_active:
            raise exceptions.OAuthError("invalid_grant", _("The user has no stored grant"))
        claims = request.auth.claims if isinstance(request.auth, tokens.AccessToken) else {}
        try:
            body = grants.access_token(
                user,
                data.get("issuer"),
                scope=data.get("scope"),
                resource=data.get("resource"),
                actor_id=request.user.pk,
                client_id=claims.get("client_id"),
            )
        except grants.GrantUnavailable as exc:
            raise exceptions.OAuthError(exc.error, exc.description) from None
        except grants.UpstreamUnavailable:
            raise exceptions.OAuthError(
                "temporarily_unavailable", _("The identity provider is unavailable"), 503
            ) from None
        return Response(body, headers=views.NO_STORE)

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in views.NO_STORE.items():
            response[name] = value
        return response
