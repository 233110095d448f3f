"""The bench project's URLs: one API view per authentication class, and the token endpoints."""

from __future__ import annotations

from typing import Any

from django.urls import include, path
from knox.auth import TokenAuthentication as KnoxAuthentication
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.authentication import (
    JWTAuthentication,
    JWTStatelessUserAuthentication,
)
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from tokenauth.authentication import BearerAuthentication


class Hello(APIView):
    """What every timed API request gets: the caller's name as JSON (JSONRenderer)."""

    permission_classes = [IsAuthenticated]

    def get(self, request: Request) -> Response:
        return Response({"hello": request.user.get_username()})


def hello(*authentication: type, permission: type = IsAuthenticated) -> Any:
    return Hello.as_view(
        authentication_classes=list(authentication), permission_classes=[permission]
    )


urlpatterns = [
    path("api/none/", hello(permission=AllowAny)),
    path("api/tokenauth/", hello(BearerAuthentication)),
    path("api/simplejwt/", hello(JWTAuthentication)),
    path("api/simplejwt-stateless/", hello(JWTStatelessUserAuthentication)),
    path("api/dot/", hello(OAuth2Authentication)),
    path("api/knox/", hello(KnoxAuthentication)),
    path("auth/", include("tokenauth.urls")),
    path("o/", include("tokenauth.oauth.urls")),
    path("simplejwt/token/", TokenObtainPairView.as_view()),
    path("simplejwt/token/refresh/", TokenRefreshView.as_view()),
]
