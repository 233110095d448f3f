"""BearerAuthentication's overridable steps (simplejwt's ``get_header``, ``get_raw_token``,
``get_validated_token``, ``get_user``): each can be replaced, the verification inside them cannot."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth.authentication import BearerAuthentication
from epochauth.exceptions import InvalidToken
from epochauth.models import Epoch
from epochauth.revocation import bump_epoch
from epochauth.users import TokenUser
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

CHALLENGE = re.compile(
    r'^Bearer realm="api", error="invalid_token", error_description="([^"\\]+)"$'
)


class FromProxyHeader(BearerAuthentication):
    def get_header(self, request):
        return request.META.get("HTTP_X_FORWARDED_AUTHORIZATION")


class AlsoJWTScheme(BearerAuthentication):
    def get_raw_token(self, header):
        scheme, _, token = header.partition(" ")
        return token.strip() if scheme == "JWT" else super().get_raw_token(header)


class NeedsReadScope(BearerAuthentication):
    def get_validated_token(self, raw_token):
        validated = super().get_validated_token(raw_token)
        if "reports:read" not in validated.scopes:
            raise InvalidToken("The access token lacks the reports:read scope")
        return validated


class LoadsTheRow(BearerAuthentication):
    def get_user(self, validated_token):
        user = get_user_model().objects.get(pk=validated_token.user_id)
        if user.username == "mallory":
            raise InvalidToken("This user may not use the API")
        return user


def call(auth_class, **headers):
    class View(APIView):
        authentication_classes = [auth_class]
        permission_classes = [IsAuthenticated]

        def get(self, request):
            return Response(
                {"user": request.user.get_username(), "type": type(request.user).__name__}
            )

    return View.as_view()(APIRequestFactory().get("/steps/", **headers))


def refusal(response) -> str:
    assert response.status_code == 401
    return CHALLENGE.match(response["WWW-Authenticate"]).group(1)


@pytest.fixture
def token(client):
    make_user("alice")
    return login(client, "alice")["access_token"]


def test_get_header_reads_another_header(token):
    response = call(FromProxyHeader, HTTP_X_FORWARDED_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert response.data["user"] == "alice"
    # The Authorization header is not looked at any more: no credentials, no challenge error.
    assert call(FromProxyHeader, HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
    assert (
        call(BearerAuthentication, HTTP_X_FORWARDED_AUTHORIZATION=f"Bearer {token}").status_code
        == 401
    )


def test_get_raw_token_takes_another_scheme(token):
    assert call(AlsoJWTScheme, HTTP_AUTHORIZATION=f"JWT {token}").data["user"] == "alice"
    assert call(AlsoJWTScheme, HTTP_AUTHORIZATION=f"Bearer {token}").data["user"] == "alice"
    assert call(BearerAuthentication, HTTP_AUTHORIZATION=f"JWT {token}").status_code == 401
    assert (
        refusal(call(AlsoJWTScheme, HTTP_AUTHORIZATION="JWT x.y.z"))
        == "The access token is malformed"
    )


def test_get_validated_token_refuses_more_but_not_less(client, token):
    assert refusal(call(NeedsReadScope, HTTP_AUTHORIZATION=f"Bearer {token}")) == (
        "The access token lacks the reports:read scope"
    )
    make_user("bob")
    read_token = login(client, "bob", scope="reports:read")["access_token"]
    assert call(NeedsReadScope, HTTP_AUTHORIZATION=f"Bearer {read_token}").data["user"] == "bob"
    # The verification inside super() still runs: a revoked token is refused by the subclass too.
    bump_epoch(Epoch.Kind.USER, str(get_user_model().objects.get(username="bob").pk))
    assert "revoked" in refusal(call(NeedsReadScope, HTTP_AUTHORIZATION=f"Bearer {read_token}"))


def test_get_user_loads_the_user_its_own_way(client, token):
    assert (
        call(BearerAuthentication, HTTP_AUTHORIZATION=f"Bearer {token}").data["type"]
        == TokenUser.__name__
    )
    response = call(LoadsTheRow, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.data == {"user": "alice", "type": get_user_model().__name__}
    make_user("mallory")
    refused = call(
        LoadsTheRow, HTTP_AUTHORIZATION=f"Bearer {login(client, 'mallory')['access_token']}"
    )
    assert refusal(refused) == "This user may not use the API"
