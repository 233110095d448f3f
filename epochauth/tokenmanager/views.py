"""``POST /tokenmanager/token/``: a service obtains a user's upstream access token.

Only with a bearer token of ours (never a browser's session cookie, never an external issuer's
token): a client-credentials token with ``TOKEN_MANAGER_SCOPE`` of a Token Manager service
application, or a token of a user who holds the permission
``epochauth_tokenmanager.obtain_upstream_token``. Answers are RFC 6749 JSON, never cached.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from .. import authentication, communities, conf, exceptions, tokens, views
from . import grants

PERMISSION = "epochauth_tokenmanager.obtain_upstream_token"


def is_service_token(access: tokens.AccessToken) -> bool:
    """Whether a client-credentials token of ours with ``TOKEN_MANAGER_SCOPE`` was issued to an
    application that is, now, a Token Manager service (confidential, with the scope in its allowed
    scopes): read at each call, so that un-marking the application in the admin ends its access at
    once. Only the client-credentials grant stands for the application itself; a user's token issued
    through the same application (by a flow that granted the scope before it was a service scope)
    does not."""
    scope = conf.epochauth_settings.TOKEN_MANAGER_SCOPE
    client_id = access.claims.get("client_id")
    if (
        scope not in access.scopes
        or not isinstance(client_id, str)
        or not access.is_client_credentials
    ):
        return False
    if not apps.is_installed("epochauth.oauth"):
        return False  # no authorization server, no client-credentials token
    # Imported here: epochauth.oauth is optional beside the Token Manager.
    from oauth2_provider.models import get_application_model

    from ..oauth.scopes import is_service_application

    application = (
        get_application_model()
        .objects.select_related("epochauth_scopes")
        .filter(client_id=client_id)
        .first()
    )
    return application is not None and is_service_application(application, scope)


class CanObtainUpstreamTokens(BasePermission):
    """A bearer token of ours: a Token Manager service's, or of a user with the permission."""

    def has_permission(self, request: Request, view: Any) -> bool:
        access = request.auth
        if not isinstance(access, tokens.AccessToken) or not access.is_local:
            return False
        if not request.user or not request.user.is_authenticated:
            return False
        return is_service_token(access) or request.user.has_perm(PERMISSION)


class UpstreamTokenSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    issuer = serializers.CharField(max_length=255, required=False)
    scope = serializers.CharField(max_length=1000, required=False)
    resource = serializers.URLField(max_length=1000, required=False)
    #: A local group of the user's: the scope is the one the issuer's ``group_scopes`` gives it
    #: (a group of the calling token's community or the site's).
    group = serializers.CharField(max_length=150, required=False)


class UpstreamTokenView(views.EpochAuthView):
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
        access = request.auth if isinstance(request.auth, tokens.AccessToken) else None
        claims = access.claims if access is not None else {}
        try:
            body = grants.access_token(
                user,
                data.get("issuer"),
                scope=data.get("scope"),
                resource=data.get("resource"),
                group=data.get("group"),
                actor_id=request.user.pk,
                client_id=claims.get("client_id"),
                # A group maps within the caller's token's community (and the site's groups).
                community=communities.get(access.vo if access is not None else None),
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
