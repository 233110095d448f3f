"""The bench project's URLs: one API view per authentication class, and the token endpoints."""

from __future__ import annotations

from typing import Any

import jwt
from django.urls import include, path
from knox.auth import TokenAuthentication as KnoxAuthentication
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import (
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from epochauth.authentication import BearerAuthentication


class Hello(APIView):
    """What every timed API request gets: the caller's name as JSON (JSONRenderer)."""

    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"hello": request.user.get_username()})


#: ``floor name -> (key, keyword arguments of jwt.decode)``, set by the scenario that times it (the
#: IdP's key is known only at run time).
FLOOR_DECODES: dict[str, tuple[Any, dict[str, Any]]] = {}


class ClaimsUser:
    """What a floor request's view needs of a user: authenticated, with a name."""

    is_authenticated = True

    def __init__(self, claims: dict[str, Any]) -> None:
        self.claims = claims

    def get_username(self) -> str:
        return str(self.claims.get("sub", ""))


def floor_authentication(name: str) -> type[BaseAuthentication]:
    """The floor in the request path: the same ``jwt.decode`` call as the function-call floor rows,
    made by a minimal DRF authentication class (no revocation, no memo, no user lookup), so that a
    cold token of epochauth compares with raw PyJWT under the same handler, middleware and caches."""

    class PyJWTFloor(BaseAuthentication):
        def authenticate(self, request: Request) -> tuple[ClaimsUser, dict[str, Any]]:
            key, options = FLOOR_DECODES[name]
            token = request.META["HTTP_AUTHORIZATION"].split(" ", 1)[1]
            claims = jwt.decode(token, key, **options)
            return ClaimsUser(claims), claims

    return PyJWTFloor


#: Token -> user of the DRF plumbing floor (set by the scenario that times it).
PLUMBING_USERS: dict[str, ClaimsUser] = {}


class PlumbingFloor(BaseAuthentication):
    """The least any DRF token authentication does for a token it has seen: read the header, look the
    token up in a dict, return its user. A memo hit of epochauth is compared with this."""

    def authenticate(self, request: Request) -> tuple[ClaimsUser, dict[str, Any]]:
        user = PLUMBING_USERS[request.META["HTTP_AUTHORIZATION"].split(" ", 1)[1]]
        return user, user.claims


def hello(*authentication: type, permission: type = IsAuthenticated) -> Any:
    return Hello.as_view(
        authentication_classes=list(authentication), permission_classes=[permission]
    )


urlpatterns = [
    path("api/none/", hello(permission=AllowAny)),
    path("api/epochauth/", hello(BearerAuthentication)),
    path("api/simplejwt/", hello(JWTAuthentication)),
    path("api/simplejwt-stateless/", hello(JWTStatelessUserAuthentication)),
    path("api/dot/", hello(OAuth2Authentication)),
    path("api/knox/", hello(KnoxAuthentication)),
    path("api/drf-floor/", hello(PlumbingFloor)),
    path("api/pyjwt-hs256/", hello(floor_authentication("hs256"))),
    path("api/pyjwt-idp/", hello(floor_authentication("idp"))),
    path("auth/", include("epochauth.urls")),
    path("o/", include("epochauth.oauth.urls")),
    path("simplejwt/token/", TokenObtainPairView.as_view()),
    path("simplejwt/token/refresh/", TokenRefreshView.as_view()),
]
