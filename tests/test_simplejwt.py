"""Moving from simplejwt (tokenauth.contrib.simplejwt, installed in the test project): the site's real
simplejwt ``TokenObtainPairView`` issues tokens, BearerAuthentication accepts them (no query once seen),
revocation ends them, a simplejwt refresh token is exchanged once for our session, and the migration
window's end stops them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from django.contrib.auth.models import Group
from rest_framework_simplejwt.tokens import AccessToken as SimpleJWTAccessToken

from tests.helpers import make_user
from tokenauth.authentication import authenticate_token
from tokenauth.contrib.simplejwt.checks import check_migration_window
from tokenauth.contrib.simplejwt.tokens import SIMPLEJWT_ISSUER
from tokenauth.models import AuditEvent, Epoch, RevokedToken, Session
from tokenauth.revocation import bump_epoch

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


def end_window(settings: Any, when: datetime) -> None:
    settings.TOKENAUTH = {**settings.TOKENAUTH, "SIMPLEJWT_MIGRATION_ENDS": when}


def test_a_site_on_simplejwt_switches_without_logging_anyone_out(
    client, django_assert_num_queries
):
    alice = make_user("alice")
    old = simplejwt_login(client)
    assert set(old) == {"access", "refresh"}

    # Step one: tokenauth accepts the tokens the site's clients hold.
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
    assert [m.id for m in check_migration_window()] == ["tokenauth.simplejwt.W001"]
    end_window(settings, datetime(2030, 1, 1))
    assert [m.id for m in check_migration_window()] == ["tokenauth.simplejwt.E001"]
    end_window(settings, datetime(2030, 1, 1, tzinfo=UTC))
    assert check_migration_window() == []


def test_groups_are_not_conferred_by_simplejwt_tokens(client):
    make_user("alice", groups=["operators"])
    old = simplejwt_login(client)
    assert Group.objects.filter(name="operators").exists()
    assert client.get("/api/staff-area/", **bearer(old["access"])).status_code == 403
