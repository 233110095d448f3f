"""Moving from simplejwt (epochauth.contrib.simplejwt, installed in the test project): the site's real
simplejwt ``TokenObtainPairView`` issues tokens, BearerAuthentication accepts them (no query once seen),
revocation ends them and what is refreshed from them (by our refresh view, which the test project
mounts, and by simplejwt's own), a simplejwt refresh token is exchanged once for our session, and the
migration window's end stops them."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import Group
from django.urls import include, path
from rest_framework.test import APIRequestFactory
from rest_framework_simplejwt import authentication as simplejwt_authentication
from rest_framework_simplejwt import settings as simplejwt_settings
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken
from rest_framework_simplejwt.tokens import RefreshToken as SimpleJWTRefreshToken
from rest_framework_simplejwt.views import TokenRefreshView as SimpleJWTTokenRefreshView

from epochauth.authentication import authenticate_token
from epochauth.contrib.simplejwt.checks import check_migration_window, check_refresh_view
from epochauth.contrib.simplejwt.tokens import SIMPLEJWT_ISSUER
from epochauth.models import AuditEvent, Epoch, RevokedToken, Session
from epochauth.revocation import bump_epoch
from tests.helpers import make_user

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def simplejwt_login(client: Any, username: str = "alice") -> dict[str, str]:
    """The site's existing login: simplejwt's own TokenObtainPairView."""
    response = client.post(
        "/simplejwt/token/",
        {"username": username, "password": "pw"},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def exchange(client: Any, refresh: str) -> Any:
    return client.post(
        "/auth/token/refresh/", {"refresh_token": refresh}, content_type="application/json"
    )


def refresh_at_mounted_view(client: Any, refresh: str) -> Any:
    """The refresh view the handbook tells the operator to mount at simplejwt's refresh URL."""
    return client.post(
        "/simplejwt/token/refresh/", {"refresh": refresh}, content_type="application/json"
    )


def refresh_at_simplejwts_own_view(refresh: str) -> Any:
    """simplejwt's own TokenRefreshView, as a site that forgot to swap it still serves it."""
    request = APIRequestFactory().post("/", {"refresh": refresh}, format="json")
    return SimpleJWTTokenRefreshView.as_view()(request)


def end_window(settings: Any, when: datetime) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SIMPLEJWT_MIGRATION_ENDS": when}


def test_a_site_on_simplejwt_switches_without_logging_anyone_out(
    client, django_assert_num_queries
):
    alice = make_user("alice")
    old = simplejwt_login(client)
    assert set(old) == {"access", "refresh"}

    # Step one: epochauth accepts the tokens the site's clients hold.
    response = client.get("/api/hello/", **bearer(old["access"]))
    assert response.status_code == 200 and response.json() == {"hello": "alice"}
    with django_assert_num_queries(0):
        user, auth = authenticate_token(old["access"])
    assert user.pk == alice.pk and user.username == "alice"
    assert auth.issuer == SIMPLEJWT_ISSUER and auth.subject == str(alice.pk)
    assert auth.claims["token_type"] == "access" and auth.claims["user_id"] == str(alice.pk)
    assert client.get("/auth/whoami/", **bearer(old["access"])).json()["username"] == "alice"

    # Step two: a client's next refresh goes to us and comes back with our pair (once).
    pair = exchange(client, old["refresh"])
    assert pair.status_code == 200, pair.content
    body = pair.json()
    assert set(body) >= {"access_token", "refresh_token", "expires_in", "refresh_expires_in"}
    session = Session.objects.get(user=alice)
    login_event = AuditEvent.objects.get(action="login")
    assert login_event.detail["via"] == "simplejwt refresh token"
    again = exchange(client, old["refresh"])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert "exchanged already" in again.json()["error_description"]
    assert Session.objects.filter(user=alice).count() == 1

    ours = client.get("/api/hello/", **bearer(body["access_token"]))
    assert ours.status_code == 200
    rotated = exchange(client, body["refresh_token"])
    assert rotated.status_code == 200 and Session.objects.get() == session

    # logout-all with our token ends the simplejwt access token too.
    assert (
        client.post("/auth/logout-all/", **bearer(rotated.json()["access_token"])).status_code
        == 204
    )
    refused = client.get("/api/hello/", **bearer(old["access"]))
    assert refused.status_code == 401 and 'error="invalid_token"' in refused["WWW-Authenticate"]


def test_logout_with_a_simplejwt_token_denies_it(client):
    make_user("alice")
    first, second = simplejwt_login(client), simplejwt_login(client)
    assert client.post("/auth/logout/", **bearer(first["access"])).status_code == 204
    assert client.get("/api/hello/", **bearer(first["access"])).status_code == 401
    assert client.get("/api/hello/", **bearer(second["access"])).status_code == 200
    assert RevokedToken.objects.filter(jti__startswith=f"{SIMPLEJWT_ISSUER}#").count() == 1


def test_an_admin_bump_and_a_deactivation_end_simplejwt_tokens(client):
    alice = make_user("alice")
    bob = make_user("bob")
    alices, bobs = simplejwt_login(client, "alice"), simplejwt_login(client, "bob")
    assert client.get("/api/hello/", **bearer(alices["access"])).status_code == 200
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="admin")
    assert client.get("/api/hello/", **bearer(alices["access"])).status_code == 401
    assert exchange(client, alices["refresh"]).json()["error_description"] == (
        "The simplejwt refresh token was revoked"
    )
    assert client.get("/api/hello/", **bearer(bobs["access"])).status_code == 200
    bob.is_active = False
    bob.save()
    assert client.get("/api/hello/", **bearer(bobs["access"])).status_code == 401


def test_bad_simplejwt_tokens_are_clear_401s_and_400s(client):
    make_user("alice")
    old = simplejwt_login(client)
    # A refresh token is not an access token.
    response = client.get("/api/hello/", **bearer(old["refresh"]))
    assert response.status_code == 401
    assert "simplejwt access token is invalid" in response["WWW-Authenticate"]
    # An access token is not a refresh token.
    assert exchange(client, old["access"]).json()["error"] == "invalid_grant"
    # Signed with another key (simplejwt's claims, not its key).
    forged = SimpleJWTAccessToken()
    forged["user_id"] = 1
    other = jwt.encode(forged.payload, "another-key-" + "x" * 40, algorithm="HS256")
    assert client.get("/api/hello/", **bearer(other)).status_code == 401
    assert exchange(client, other).status_code == 400


def test_the_window_ends(client, settings):
    make_user("alice")
    seen, unseen = simplejwt_login(client), simplejwt_login(client)
    assert client.get("/api/hello/", **bearer(seen["access"])).status_code == 200
    end_window(settings, datetime.now(UTC) - timedelta(seconds=1))
    for token in (seen["access"], unseen["access"]):
        response = client.get("/api/hello/", **bearer(token))
        assert response.status_code == 401
        assert "simplejwt tokens are no longer accepted" in response["WWW-Authenticate"]
    refused = exchange(client, unseen["refresh"])
    assert (
        refused.status_code == 400 and "no longer accepted" in refused.json()["error_description"]
    )


def test_a_window_without_an_end_or_a_naive_one_is_reported(settings):
    end_window(settings, None)
    assert [m.id for m in check_migration_window()] == ["epochauth.simplejwt.W001"]
    end_window(settings, datetime(2030, 1, 1))
    assert [m.id for m in check_migration_window()] == ["epochauth.simplejwt.E001"]
    end_window(settings, datetime(2030, 1, 1, tzinfo=UTC))
    assert check_migration_window() == []


#: A site that forgot to swap simplejwt's refresh view (tests that name this module as their URLconf).
urlpatterns = [path("token/refresh/", include([path("", SimpleJWTTokenRefreshView.as_view())]))]


def test_simplejwts_own_refresh_view_mounted_is_reported(settings):
    assert check_refresh_view() == []  # the test project mounts ours
    settings.ROOT_URLCONF = __name__
    assert [m.id for m in check_refresh_view()] == ["epochauth.simplejwt.W002"]


def test_groups_are_not_conferred_by_simplejwt_tokens(client):
    make_user("alice", groups=["operators"])
    old = simplejwt_login(client)
    assert Group.objects.filter(name="operators").exists()
    assert client.get("/api/staff-area/", **bearer(old["access"])).status_code == 403


def _logout_all(client: Any, user: Any, old: dict[str, str]) -> None:
    assert client.post("/auth/logout-all/", **bearer(old["access"])).status_code == 204


def _admin_bump(client: Any, user: Any, old: dict[str, str]) -> None:
    bump_epoch(Epoch.Kind.USER, str(user.pk), reason="admin")


def _password_change(client: Any, user: Any, old: dict[str, str]) -> None:
    user.set_password("new")
    user.save()


def _exchange(client: Any, user: Any, old: dict[str, str]) -> None:
    assert exchange(client, old["refresh"]).status_code == 200


@pytest.mark.parametrize("revoke", [_logout_all, _admin_bump, _password_change, _exchange])
def test_no_refresh_view_turns_a_revoked_or_exchanged_refresh_token_into_access(
    client, revoke, django_assert_num_queries
):
    alice = make_user("alice")
    old = simplejwt_login(client)
    # Before: either view mints access tokens from the refresh token, and they are accepted.
    minted = refresh_at_mounted_view(client, old["refresh"])
    assert minted.status_code == 200 and set(minted.json()) == {"access"}
    linked = minted.json()["access"]
    assert client.get("/api/hello/", **bearer(linked)).status_code == 200
    with django_assert_num_queries(0):
        authenticate_token(linked)
    own = refresh_at_simplejwts_own_view(old["refresh"]).data["access"]
    assert client.get("/api/hello/", **bearer(own)).status_code == 200

    revoke(client, alice, old)

    # The mounted view refuses the refresh token, and what it minted from it ends.
    refused = refresh_at_mounted_view(client, old["refresh"])
    assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"
    assert refused["WWW-Authenticate"].startswith("Bearer")
    for token in (linked, own):
        response = client.get("/api/hello/", **bearer(token))
        assert (
            response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]
        )
    # simplejwt's own view checks nothing of ours and still mints; epochauth refuses what it mints.
    after = refresh_at_simplejwts_own_view(old["refresh"])
    assert after.status_code == 200
    response = client.get("/api/hello/", **bearer(after.data["access"]))
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]


def test_an_exchange_leaves_the_users_other_refresh_tokens_working(client):
    make_user("alice")
    phone, laptop = simplejwt_login(client), simplejwt_login(client)
    assert exchange(client, phone["refresh"]).status_code == 200
    # The laptop's refresh token is not spent: the mounted view and the exchange take it.
    minted = refresh_at_mounted_view(client, laptop["refresh"])
    assert minted.status_code == 200
    assert client.get("/api/hello/", **bearer(minted.json()["access"])).status_code == 200
    assert exchange(client, laptop["refresh"]).status_code == 200
    assert client.get("/api/hello/", **bearer(minted.json()["access"])).status_code == 401


def test_the_mounted_refresh_view_answers_bad_tokens_as_simplejwt_does(client, settings):
    make_user("alice")
    old = simplejwt_login(client)
    for token in (old["access"], "not-a-jwt"):
        refused = refresh_at_mounted_view(client, token)
        assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"
    end_window(settings, datetime.now(UTC) - timedelta(seconds=1))
    refused = refresh_at_mounted_view(client, old["refresh"])
    assert refused.status_code == 401 and "no longer accepted" in refused.json()["detail"]


@pytest.mark.parametrize("user_id", [[1], {"id": 1}, "abc", 10**30, -1, True, 1.5, ""])
def test_a_simplejwt_token_naming_no_possible_user_is_a_401_or_a_400(client, user_id):
    make_user("alice")
    access, refresh = SimpleJWTAccessToken(), SimpleJWTRefreshToken()
    access["user_id"] = refresh["user_id"] = user_id
    response = client.get("/api/hello/", **bearer(str(access)))
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]
    answer = exchange(client, str(refresh))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    refused = refresh_at_mounted_view(client, str(refresh))
    assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"


@pytest.fixture
def customised_simplejwt(settings, monkeypatch):
    """A site that changed simplejwt's user id and header settings before moving. simplejwt's modules
    copied its settings when imported (its reload replaces only ``settings.api_settings``): they get
    the new ones as at the start of such a site."""
    settings.SIMPLE_JWT = {
        **settings.SIMPLE_JWT,
        "USER_ID_FIELD": "username",
        "USER_ID_CLAIM": "uid",
        "AUTH_HEADER_TYPES": ("JWT",),
    }
    for name, module in list(sys.modules.items()):
        if (
            module is not simplejwt_settings
            and hasattr(module, "api_settings")
            and name.startswith("rest_framework_simplejwt.")
        ):
            monkeypatch.setattr(module, "api_settings", simplejwt_settings.api_settings)
    monkeypatch.setattr(simplejwt_authentication, "AUTH_HEADER_TYPES", ("JWT",))
    monkeypatch.setattr(simplejwt_authentication, "AUTH_HEADER_TYPE_BYTES", {b"JWT"})


def jwt_scheme(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"JWT {token}"}


def test_a_site_with_its_own_user_id_claim_and_header_type_migrates(
    client, customised_simplejwt, django_assert_num_queries
):
    alice = make_user("alice")
    old = simplejwt_login(client)
    assert jwt.decode(old["access"], options={"verify_signature": False})["uid"] == "alice"

    # Its clients send "JWT <token>": accepted (and "Bearer", the scheme they move to), no query once seen.
    response = client.get("/api/hello/", **jwt_scheme(old["access"]))
    assert response.status_code == 200 and response.json() == {"hello": "alice"}
    assert client.get("/api/hello/", **bearer(old["access"])).status_code == 200
    with django_assert_num_queries(0):
        user, auth = authenticate_token(old["access"])
    assert user.pk == alice.pk and auth.subject == str(alice.pk)

    # The mounted refresh view keeps minting (with the site's claim), and its challenge names the scheme.
    minted = refresh_at_mounted_view(client, old["refresh"])
    assert minted.status_code == 200, minted.content
    claims = jwt.decode(minted.json()["access"], options={"verify_signature": False})
    assert claims["uid"] == "alice" and "user_id" not in claims
    assert client.get("/api/hello/", **jwt_scheme(minted.json()["access"])).status_code == 200
    refused = refresh_at_mounted_view(client, "not-a-jwt")
    assert refused.status_code == 401 and refused["WWW-Authenticate"].startswith("JWT ")

    # The exchange starts alice's session; our tokens work with either scheme meanwhile.
    pair = exchange(client, old["refresh"])
    assert pair.status_code == 200, pair.content
    ours = pair.json()["access_token"]
    assert Session.objects.get().user == alice
    assert client.get("/api/hello/", **jwt_scheme(ours)).status_code == 200

    # Revocation reaches tokens named by username too.
    assert client.post("/auth/logout-all/", **bearer(ours)).status_code == 204
    for token in (old["access"], minted.json()["access"]):
        response = client.get("/api/hello/", **jwt_scheme(token))
        assert (
            response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]
        )


@pytest.mark.parametrize("uid", [["alice"], {"username": "alice"}, True, 1.5, "nobody", ""])
def test_a_customised_claim_naming_no_user_is_a_401_or_a_400(client, customised_simplejwt, uid):
    make_user("alice")
    access, refresh = SimpleJWTAccessToken(), SimpleJWTRefreshToken()
    access["uid"] = refresh["uid"] = uid
    response = client.get("/api/hello/", **jwt_scheme(str(access)))
    assert response.status_code == 401 and 'error="invalid_token"' in response["WWW-Authenticate"]
    answer = exchange(client, str(refresh))
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    refused = refresh_at_mounted_view(client, str(refresh))
    assert refused.status_code == 401 and refused.json()["code"] == "token_not_valid"


def test_other_schemes_stay_unauthenticated(client, customised_simplejwt):
    """Only simplejwt's configured types are read: another scheme is no credential at all."""
    make_user("alice")
    old = simplejwt_login(client)
    response = client.get("/api/hello/", HTTP_AUTHORIZATION=f"Token {old['access']}")
    assert response.status_code == 401 and "error=" not in response["WWW-Authenticate"]
