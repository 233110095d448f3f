"""The token endpoints as a client sees them: login, refresh, renew, logout(-all), whoami."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import jwt
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from django.contrib.auth.models import Group, Permission
from django.core.cache import cache
from django.test import Client, override_settings

from epochauth.models import AuditEvent, Epoch, Identity, Session
from epochauth.throttling import USERNAME_FACTOR
from epochauth.tokens import mint_access_token
from tests.helpers import database_down, login, make_user, openid_provider

pytestmark = pytest.mark.django_db


def settings_with(**values: Any) -> override_settings:
    from django.conf import settings

    if str(values.get("LOGIN_THROTTLE_RATE", "")).endswith("/min"):
        # The throttle's windows are fixed minutes: a test that crosses into the next one sees its
        # counts start again. Begin with some seconds of this one left.
        left = 60 - time.time() % 60
        if left < 15:
            time.sleep(left + 0.05)
    return override_settings(EPOCHAUTH={**settings.EPOCHAUTH, **values})


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def post_json(client: Any, path: str, data: Any, **extra: Any) -> Any:
    return client.post(path, data, content_type="application/json", **extra)


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


def refresh(client: Any, refresh_token: str) -> Any:
    return post_json(client, "/auth/token/refresh/", {"refresh_token": refresh_token})


# -- login -------------------------------------------------------------------------------------


def test_login_returns_a_working_token_pair(client):
    make_user("alice")
    body = login(client, "alice")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 15 * 60
    assert body["refresh_expires_in"] == pytest.approx(86400, abs=5)
    assert body["scope"] == ""
    assert set(body) == {
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "refresh_expires_in",
        "scope",
        "user",
        "groups",
        "group",
        "vo",
    }
    assert body["vo"] is None  # no COMMUNITIES: the site's token, of no community
    response = client.get("/api/hello/", **bearer(body["access_token"]))
    assert response.status_code == 200
    assert response.json() == {"hello": "alice"}


def test_token_answers_say_who_the_token_is_for(client):
    """geoportal: the login answer carries expiry, roles and identity; refresh and renew say the same
    (groups re-read), and the token is no bigger for it."""
    user = make_user("alice", groups=["operators", "users"])
    body = login(client, "alice", group="operators")
    who = {"user": {"id": str(user.pk), "username": "alice"}, "groups": ["operators", "users"]}
    assert body | who == body and body["group"] == "operators" and body["expires_in"] == 15 * 60
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert not {"user", "id", "username"} & set(claims)

    user.groups.remove(Group.objects.get(name="users"))
    refreshed = refresh(client, body["refresh_token"]).json()
    assert refreshed["groups"] == ["operators"] and refreshed["user"] == who["user"]
    renewed = client.post("/auth/token/renew/", **bearer(refreshed["access_token"])).json()
    assert renewed["groups"] == ["operators"] and renewed["group"] == "operators"
    assert renewed["user"] == who["user"] and "refresh_token" not in renewed

    plain = login(client, "alice")
    assert plain["group"] is None and plain["groups"] == ["operators"]
    make_user("bob")
    assert login(client, "bob")["groups"] == []


def test_login_response_is_not_cached(client):
    make_user("alice")
    response = post_json(client, "/auth/token/", {"username": "alice", "password": "pw"})
    assert response["Cache-Control"] == "no-store"


def test_refresh_token_is_stored_hashed(client):
    make_user("alice")
    body = login(client, "alice")
    secret = body["refresh_token"].partition(".")[2]
    session = Session.objects.get()
    assert secret not in session.refresh_hash
    assert body["refresh_token"] not in str(Session.objects.values().get())


@pytest.mark.parametrize(
    "credentials",
    [{"username": "alice", "password": "wrong"}, {"username": "nobody", "password": "pw"}],
)
def test_wrong_credentials_are_401_json(client, credentials):
    make_user("alice")
    response = post_json(client, "/auth/token/", credentials)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_grant"
    assert "access_token" not in response.json()


def test_inactive_user_cannot_log_in(client):
    user = make_user("alice")
    user.is_active = False
    user.save()
    response = post_json(client, "/auth/token/", {"username": "alice", "password": "pw"})
    assert response.status_code == 401


def test_scope_is_granted_when_known(client):
    make_user("alice")
    body = login(client, "alice", scope="reports:read reports:read")
    assert body["scope"] == "reports:read"
    assert client.get("/api/reports/", **bearer(body["access_token"])).status_code == 200


def test_without_scope_the_scoped_view_is_403(client):
    make_user("alice")
    body = login(client, "alice")
    response = client.get("/api/reports/", **bearer(body["access_token"]))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


def test_unknown_scope_is_400_invalid_scope(client):
    make_user("alice")
    response = post_json(
        client, "/auth/token/", {"username": "alice", "password": "pw", "scope": "admin"}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert not Session.objects.exists()


def test_a_session_carries_no_service_scope_into_its_next_tokens(client, settings):
    """A scope that became a service scope after the login is left out at the next refresh."""
    make_user("alice")
    body = login(client, "alice", scope="reports:read")
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SCOPES": {},
        "SERVICE_SCOPES": {"reports:read": "Read the example reports"},
    }
    refreshed = post_json(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json()["scope"] == ""
    access = refreshed.json()["access_token"]
    assert client.get("/api/reports/", **bearer(access)).status_code == 403


def test_group_selection(client):
    make_user("alice", groups=["operators", "users"])
    body = login(client, "alice", group="operators")
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["group"] == "operators"
    assert claims["groups"] == ["operators", "users"]
    assert client.get("/api/staff-area/", **bearer(body["access_token"])).status_code == 200


def test_selecting_another_group_hides_the_rest(client):
    make_user("alice", groups=["operators", "users"])
    body = login(client, "alice", group="users")
    assert client.get("/api/staff-area/", **bearer(body["access_token"])).status_code == 403


@pytest.mark.parametrize("group", ["operators", "does-not-exist"])
def test_group_the_user_is_not_in_is_400(client, group):
    make_user("alice", groups=["users"])
    Group.objects.get_or_create(name="operators")
    response = post_json(
        client, "/auth/token/", {"username": "alice", "password": "pw", "group": group}
    )
    assert response.status_code == 400
    assert "error" in response.json()
    assert not Session.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("not json", "application/json"),
        ("{", "application/json"),
        ("[]", "application/json"),
        ('["alice", "pw"]', "application/json"),
        ("null", "application/json"),
        ('"alice"', "application/json"),
        ("42", "application/json"),
        ('{"username": ["alice"], "password": "pw"}', "application/json"),
        ('{"username": {"a": 1}, "password": "pw"}', "application/json"),
        ('{"username": "alice"}', "application/json"),
        ('{"username": "alice", "password": null}', "application/json"),
        ('{"username": "alice", "password": "pw", "remember_me": "maybe"}', "application/json"),
        ('{"username": "alice", "password": "pw", "scope": ["reports:read"]}', "application/json"),
        ('{"username": "al\\u0000ice", "password": "pw"}', "application/json"),
        ("[" * 100_000, "application/json"),
        ('{"a":' * 50_000, "application/json"),
        ("username=alice&password=pw", "text/plain"),
        ("\xff\xfe garbage", "application/octet-stream"),
        ("", "application/json"),
        (
            '{"username": "' + "x" * 3_000_000 + '"}',
            "application/json",
        ),  # > DATA_UPLOAD_MAX_MEMORY_SIZE
        ("a=1&" * 1001, "application/x-www-form-urlencoded"),  # > DATA_UPLOAD_MAX_NUMBER_FIELDS
    ],
)
def test_malformed_login_body_is_400_invalid_request(client, body, content_type):
    make_user("alice")
    response = client.post("/auth/token/", body, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


def test_each_body_is_checked_on_its_own(client):
    """The login serializer is reused across requests: what one body held or lacked never leaks
    into the next one's fields or errors."""
    make_user("alice", groups=["operators"])

    def description(data: Any) -> str:
        return post_json(client, "/auth/token/", data).json()["error_description"]

    assert description({"username": "alice"}) == "Missing or invalid fields: password"
    assert description(["alice", "pw"]) == "Missing or invalid fields: non_field_errors"
    assert description({"username": "alice", "password": "pw", "remember_me": "maybe"}) == (
        "Missing or invalid fields: remember_me"
    )
    grouped = login(client, "alice", group="operators", remember_me=True)
    plain = post_json(client, "/auth/token/", {"username": "alice", "password": "pw"}).json()
    claims = jwt.decode(plain["access_token"], options={"verify_signature": False})
    assert "group" not in claims and plain["refresh_expires_in"] < grouped["refresh_expires_in"]


@pytest.mark.parametrize("field", ["username", "password", "scope", "group"])
def test_huge_strings_are_400(client, field):
    make_user("alice")
    data = {"username": "alice", "password": "pw", field: "x" * 1_000_000}
    response = post_json(client, "/auth/token/", data)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert "x" * 100 not in response.content.decode()


def test_form_encoded_login_works(client):
    make_user("alice")
    response = client.post("/auth/token/", {"username": "alice", "password": "pw"})
    assert response.status_code == 200


def test_login_is_throttled(client):
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE="3/min"):
        statuses = [
            post_json(client, "/auth/token/", {"username": "alice", "password": "bad"}).status_code
            for _ in range(3)
        ]
        assert statuses == [401, 401, 401]
        response = post_json(client, "/auth/token/", {"username": "alice", "password": "pw"})
        assert response.status_code == 429
        assert "access_token" not in response.json()


def attempt_from(client: Any, address: str, username: str = "alice", password: str = "bad") -> int:
    body = {"username": username, "password": password}
    return post_json(client, "/auth/token/", body, REMOTE_ADDR=address).status_code


def test_throttle_counts_failures_per_client_address_and_per_username(client):
    for name in ("alice", "bob", "carol"):
        make_user(name)
    with settings_with(LOGIN_THROTTLE_RATE="1/min"):
        assert attempt_from(client, "10.0.0.1", "alice") == 401
        # the address is used up, whoever it tries next
        assert attempt_from(client, "10.0.0.1", "bob") == 429
        # the username has USERNAME_FACTOR times as many failures from everywhere together
        statuses = [attempt_from(client, f"10.0.1.{i}", "alice") for i in range(USERNAME_FACTOR)]
        assert statuses == [401] * (USERNAME_FACTOR - 1) + [429]
        assert attempt_from(client, "10.0.2.1", "ALICE") == 429
        assert attempt_from(client, "10.0.2.2", "carol") == 401


def test_wrong_passwords_from_other_addresses_do_not_lock_the_user_out(client):
    """Issue 25: ten wrong passwords from anyone's addresses locked the user out everywhere."""
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE="10/min"):
        statuses = [attempt_from(client, "10.6.6.6") for _ in range(11)]
        assert statuses == [401] * 10 + [429]
        assert [attempt_from(client, f"10.6.7.{i}") for i in range(20)] == [401] * 20
        assert attempt_from(client, "192.0.2.1", password="pw") == 200  # a fresh address
        assert attempt_from(client, "10.6.6.6", password="pw") == 429  # the guesser's


def test_guessing_from_many_addresses_is_bounded(client):
    """Past its own limit a username is tried only from addresses it logged in from lately."""
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE="3/min"):
        assert attempt_from(client, "192.0.2.1", password="pw") == 200
        bound = 3 * USERNAME_FACTOR
        statuses = [attempt_from(client, f"10.7.{i // 200}.{i % 200}") for i in range(100)]
        assert statuses == [401] * bound + [429] * (100 - bound)
        assert AuditEvent.objects.filter(action="login_failed").count() == bound
        assert attempt_from(client, "10.8.0.1", password="pw") == 429  # a new address
        assert attempt_from(client, "192.0.2.1", password="pw") == 200  # one the user came from
        # which has its own address limit like any other
        statuses = [attempt_from(client, "192.0.2.1") for _ in range(4)]
        assert statuses == [401, 401, 401, 429]


def test_a_database_outage_counts_no_failure(client):
    """Issue 25: the 503s of an outage counted as failures, and the address got 429 afterwards."""
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE="3/min"):
        with database_down():
            statuses = [attempt_from(client, "10.9.9.9", password=pw) for pw in ["pw", "bad"] * 5]
        assert statuses == [503] * 10
        assert attempt_from(client, "10.9.9.9", password="pw") == 200
        statuses = [attempt_from(client, "10.9.9.9") for _ in range(4)]
        assert statuses == [401, 401, 401, 429]  # nothing was left counted


def test_correct_logins_are_not_throttled(client):
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE="3/min"):
        for _ in range(12):
            assert (
                post_json(
                    client, "/auth/token/", {"username": "alice", "password": "pw"}
                ).status_code
                == 200
            )
        statuses = [
            post_json(
                client, "/auth/token/", {"username": "alice", "password": "guess"}
            ).status_code
            for _ in range(5)
        ]
        assert statuses == [401, 401, 401, 429, 429]
        # a guesser who then finds the password is still refused until the window ends
        response = post_json(client, "/auth/token/", {"username": "alice", "password": "pw"})
        assert response.status_code == 429
        assert int(response["Retry-After"]) <= 60


def test_throttle_ignores_a_forwarded_for_header_unless_behind_proxies(client, settings):
    data = {"password": "bad"}
    with settings_with(LOGIN_THROTTLE_RATE="2/min"):
        statuses = [
            post_json(
                client,
                "/auth/token/",
                {"username": f"u{i}", **data},
                HTTP_X_FORWARDED_FOR=f"10.9.0.{i}",
            ).status_code
            for i in range(4)
        ]
        assert statuses == [401, 401, 429, 429]  # a new forged address each try changes nothing
    cache.clear()
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}  # behind one proxy
    with settings_with(LOGIN_THROTTLE_RATE="1/min"):

        def attempt(username: str, address: str) -> int:
            body = {"username": username, **data}
            return post_json(
                client, "/auth/token/", body, HTTP_X_FORWARDED_FOR=address
            ).status_code

        assert attempt("v1", "10.9.1.1") == 401
        assert attempt("v2", "10.9.1.1") == 429
        assert attempt("v3", "10.9.1.2") == 401


def test_throttle_can_be_switched_off(client):
    make_user("alice")
    with settings_with(LOGIN_THROTTLE_RATE=None):
        for _ in range(15):
            assert (
                post_json(
                    client, "/auth/token/", {"username": "alice", "password": "x"}
                ).status_code
                == 401
            )


def test_login_and_failed_login_are_audited(client):
    user = make_user("alice")
    post_json(client, "/auth/token/", {"username": "alice", "password": "nope"})
    failed = AuditEvent.objects.get(action="login_failed")
    assert failed.detail == {"username": "alice"}
    assert "nope" not in str(failed.detail)
    body = login(client, "alice")
    event = AuditEvent.objects.get(action="login")
    assert event.user == user
    assert event.detail["session"] == str(Session.objects.get().pk)
    assert body["refresh_token"].partition(".")[2] not in str(event.detail)


# -- refresh -----------------------------------------------------------------------------------


def test_refresh_rotates(client):
    make_user("alice")
    first = login(client, "alice")
    response = refresh(client, first["refresh_token"])
    assert response.status_code == 200
    second = response.json()
    assert response["Cache-Control"] == "no-store"
    assert second["token_type"] == "Bearer"
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert hello(client, second["access_token"]) == 200
    third = refresh(client, second["refresh_token"])
    assert third.status_code == 200
    assert Session.objects.count() == 1


def test_refresh_keeps_scope_and_group(client):
    make_user("alice", groups=["operators"])
    first = login(client, "alice", scope="reports:read", group="operators")
    second = refresh(client, first["refresh_token"]).json()
    assert second["scope"] == "reports:read"
    claims = jwt.decode(second["access_token"], options={"verify_signature": False})
    assert claims["group"] == "operators"
    first_claims = jwt.decode(first["access_token"], options={"verify_signature": False})
    assert claims["sid"] == first_claims["sid"]


def test_reusing_a_rotated_refresh_token_revokes_the_session(client):
    make_user("alice")
    first = login(client, "alice")
    second = refresh(client, first["refresh_token"]).json()
    reuse = refresh(client, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # The legitimate holder's latest pair is dead too: the thief may have it.
    assert hello(client, second["access_token"]) == 401
    assert hello(client, first["access_token"]) == 401
    assert refresh(client, second["refresh_token"]).status_code == 400
    assert Session.objects.get().revoked_at is not None
    assert AuditEvent.objects.filter(action="session_revoked", detail__reason="reuse").count() == 1


def test_reuse_in_one_session_leaves_other_sessions_alone(client):
    make_user("alice")
    one = login(client, "alice")
    other = login(client, "alice")
    refresh(client, one["refresh_token"])
    refresh(client, one["refresh_token"])
    assert hello(client, other["access_token"]) == 200
    assert refresh(client, other["refresh_token"]).status_code == 200


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        ".",
        "....",
        "0" * 32,
        "0" * 32 + ".",
        "0" * 32 + ".secret",
        "not-a-uuid.secret",
        "x" * 600,
        "é" * 100,
        "{12345678-1234-5678-1234-567812345678}.abc",
    ],
)
def test_garbage_refresh_tokens_are_invalid_grant(client, token):
    response = refresh(client, token)
    assert response.status_code == 400
    assert response.json()["error"] in {"invalid_grant", "invalid_request"}
    if token and len(token) <= 512:
        assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    "body",
    ["not json", "[]", '{"refresh_token": null}', '{"refresh_token": []}', "{}", "[" * 100_000],
)
def test_malformed_refresh_body_is_invalid_request(client, body):
    response = client.post("/auth/token/refresh/", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_refresh_token_of_an_unknown_session_is_invalid_grant(client):
    make_user("alice")
    body = login(client, "alice")
    Session.objects.all().delete()
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_refresh_lifetimes_depend_on_remember_me(client):
    make_user("alice")
    with settings_with(
        REFRESH_TOKEN_LIFETIME=timedelta(hours=2),
        REMEMBER_ME_REFRESH_TOKEN_LIFETIME=timedelta(days=7),
    ):
        short = login(client, "alice")
        long = login(client, "alice", remember_me=True)
        assert short["refresh_expires_in"] == pytest.approx(2 * 3600, abs=5)
        assert long["refresh_expires_in"] == pytest.approx(7 * 86400, abs=5)
        assert refresh(client, long["refresh_token"]).json()[
            "refresh_expires_in"
        ] == pytest.approx(7 * 86400, abs=5)
        assert refresh(client, short["refresh_token"]).json()[
            "refresh_expires_in"
        ] == pytest.approx(2 * 3600, abs=5)


def test_expired_refresh_token_is_invalid_grant(client):
    make_user("alice")
    body = login(client, "alice")
    Session.objects.update(expires_at=Session.objects.get().created_at - timedelta(seconds=1))
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_refresh_after_removal_from_selected_group_fails(client):
    user = make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    user.groups.clear()
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
    assert Session.objects.get().revoked_at is not None


def test_refresh_rereads_groups(client):
    user = make_user("alice", groups=["operators", "users"])
    body = login(client, "alice", group="users")
    user.groups.remove(Group.objects.get(name="operators"))
    response = refresh(client, body["refresh_token"])
    assert response.status_code == 200
    claims = jwt.decode(response.json()["access_token"], options={"verify_signature": False})
    assert claims["groups"] == ["users"]
    assert claims["group"] == "users"


def test_refresh_after_deactivation_fails(client):
    user = make_user("alice")
    body = login(client, "alice")
    user.is_active = False
    user.save()
    assert refresh(client, body["refresh_token"]).status_code == 400
    user.is_active = True
    user.save()
    assert refresh(client, body["refresh_token"]).status_code == 400


# -- renew -------------------------------------------------------------------------------------


def test_renew_gives_a_fresh_access_token_for_the_same_session(client):
    make_user("alice", groups=["operators"])
    body = login(client, "alice", scope="reports:read", group="operators")
    response = client.post("/auth/token/renew/", **bearer(body["access_token"]))
    assert response.status_code == 200
    renewed = response.json()
    assert "refresh_token" not in renewed
    assert renewed["access_token"] != body["access_token"]
    assert renewed["scope"] == "reports:read"
    old = jwt.decode(body["access_token"], options={"verify_signature": False})
    new = jwt.decode(renewed["access_token"], options={"verify_signature": False})
    assert new["sid"] == old["sid"]
    assert new["group"] == "operators"
    assert new["jti"] != old["jti"]
    assert hello(client, body["access_token"]) == 200
    assert hello(client, renewed["access_token"]) == 200


def test_renew_needs_a_bearer_token(client):
    user = make_user("alice")
    assert client.post("/auth/token/renew/").status_code == 401
    client.force_login(user)
    assert client.post("/auth/token/renew/").status_code == 401


def test_renew_refuses_a_token_without_session(client):
    from io import StringIO

    from django.core.management import call_command

    make_user("alice")
    out = StringIO()
    call_command("epochauth_issue", "--user", "alice", stdout=out)
    response = client.post("/auth/token/renew/", **bearer(out.getvalue().strip()))
    assert response.status_code == 400
    assert "error" in response.json()


def test_renew_after_removal_from_the_selected_group_fails(client):
    user = make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    user.groups.clear()
    response = client.post("/auth/token/renew/", **bearer(body["access_token"]))
    assert response.status_code == 401  # the token itself: its selected group was left
    assert refresh(client, body["refresh_token"]).status_code == 400


def test_renew_of_an_expired_session_fails(client):
    make_user("alice")
    body = login(client, "alice")
    Session.objects.update(expires_at=Session.objects.get().created_at)
    response = client.post("/auth/token/renew/", **bearer(body["access_token"]))
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


# -- logout ------------------------------------------------------------------------------------


def test_logout_ends_only_this_session(client):
    make_user("alice")
    mine = login(client, "alice")
    other = login(client, "alice")
    renewed = client.post("/auth/token/renew/", **bearer(mine["access_token"])).json()
    response = client.post("/auth/logout/", **bearer(mine["access_token"]))
    assert response.status_code == 204
    assert hello(client, mine["access_token"]) == 401
    assert hello(client, renewed["access_token"]) == 401
    assert refresh(client, mine["refresh_token"]).status_code == 400
    assert hello(client, other["access_token"]) == 200
    assert refresh(client, other["refresh_token"]).status_code == 200
    assert client.post("/auth/logout/", **bearer(mine["access_token"])).status_code == 401


def test_logout_of_a_token_without_session_revokes_that_token(client):
    from io import StringIO

    from django.core.management import call_command

    make_user("alice")
    out = StringIO()
    call_command("epochauth_issue", "--user", "alice", stdout=out)
    token = out.getvalue().strip()
    assert client.post("/auth/logout/", **bearer(token)).status_code == 204
    assert hello(client, token) == 401


def test_logged_out_token_stays_denied_through_the_expiry_leeway(client):
    """Expiry is checked with leeway, so the denylist entry must outlive ``exp`` by the leeway too."""
    from io import StringIO

    from django.core.management import call_command

    from epochauth.models import RevokedToken

    make_user("alice")
    out = StringIO()
    call_command("epochauth_issue", "--user", "alice", "--lifetime", "60", stdout=out)
    token = out.getvalue().strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert client.post("/auth/logout/", **bearer(token)).status_code == 204
    row = RevokedToken.objects.get(jti=claims["jti"])
    assert row.expires_at.timestamp() >= claims["exp"] + 30


def test_logout_without_token_is_401(client):
    assert client.post("/auth/logout/").status_code == 401
    assert client.post("/auth/logout/", **bearer("nonsense")).status_code == 401


def test_logout_all_revokes_every_token_of_the_user_only(client):
    make_user("alice")
    make_user("bob")
    one = login(client, "alice")
    two = login(client, "alice", remember_me=True)
    bobs = login(client, "bob")
    response = client.post("/auth/logout-all/", **bearer(one["access_token"]))
    assert response.status_code == 204
    for body in (one, two):
        assert hello(client, body["access_token"]) == 401
        assert refresh(client, body["refresh_token"]).status_code == 400
    assert hello(client, bobs["access_token"]) == 200
    assert refresh(client, bobs["refresh_token"]).status_code == 200
    again = login(client, "alice")
    assert hello(client, again["access_token"]) == 200
    assert refresh(client, again["refresh_token"]).status_code == 200


def test_logout_all_covers_tokens_without_session(client):
    from io import StringIO

    from django.core.management import call_command

    make_user("alice")
    out = StringIO()
    call_command("epochauth_issue", "--user", "alice", "--lifetime", "30d", stdout=out)
    token = out.getvalue().strip()
    body = login(client, "alice")
    client.post("/auth/logout-all/", **bearer(body["access_token"]))
    assert hello(client, token) == 401


# -- whoami ------------------------------------------------------------------------------------


def test_whoami_with_a_bearer_token(client):
    user = make_user("alice", groups=["operators", "users"])
    body = login(client, "alice", scope="reports:read", group="operators")
    response = client.get("/auth/whoami/", **bearer(body["access_token"]))
    assert response.status_code == 200
    data = response.json()
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert data == {
        "issuer": "http://127.0.0.1:8000",
        "subject": str(user.pk),
        "username": "alice",
        "groups": ["operators", "users"],
        "scope": "reports:read",
        "group": "operators",
        "vo": None,
        "expires_at": data["expires_at"],
    }
    from datetime import datetime

    assert datetime.fromisoformat(data["expires_at"]).timestamp() == claims["exp"]


@pytest.mark.parametrize("how", ["force_login", "login"])
def test_whoami_with_a_django_session(client, how):
    user = make_user("alice", groups=["users"])
    if how == "force_login":
        client.force_login(user)
    else:
        assert client.login(username="alice", password="pw")
    response = client.get("/auth/whoami/")
    assert response.status_code == 200
    data = response.json()
    assert data["subject"] == str(user.pk)
    assert data["username"] == "alice"
    assert data["groups"] == ["users"]
    assert data["issuer"] == "http://127.0.0.1:8000"
    assert data["group"] is None
    assert data["scope"] == ""
    assert data["expires_at"]


def test_whoami_without_credentials_is_401(client):
    response = client.get("/auth/whoami/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256"'
    )
    response = client.get("/auth/whoami/", **bearer("abc.def.ghi"))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_whoami_session_fallback_can_be_switched_off(client):
    user = make_user("alice")
    client.force_login(user)
    with settings_with(SESSION_AUTH_FALLBACK=False):
        assert client.get("/auth/whoami/").status_code == 401
        assert client.get("/api/hello/").status_code == 401  # the switch covers every API view
    assert client.get("/api/hello/").status_code == 200


def test_endpoints_reject_get(client):
    make_user("alice")
    body = login(client, "alice")
    assert client.get("/auth/token/").status_code == 405
    assert client.get("/auth/token/refresh/").status_code == 405
    assert client.get("/auth/logout/", **bearer(body["access_token"])).status_code == 405


@pytest.mark.parametrize(
    "extra",
    [
        {"group": 5.5e400},
        {"group": 7},
        {"group": ""},
        {"group": None},
        {"scope": 5},
        {"scope": "   "},
        {"remember_me": "true"},
        {"remember_me": 1},
        {"username": True},
        {"password": 12345},
    ],
)
def test_odd_but_parsable_values_never_500(client, extra):
    make_user("alice")
    response = post_json(client, "/auth/token/", {"username": "alice", "password": "pw", **extra})
    assert response.status_code in (200, 400, 401), response.content
    if response.status_code != 200:
        assert "error" in response.json()


def test_renew_and_whoami_after_logout_all_are_401(client):
    make_user("alice")
    body = login(client, "alice")
    client.post("/auth/logout-all/", **bearer(body["access_token"]))
    assert client.post("/auth/token/renew/", **bearer(body["access_token"])).status_code == 401
    assert client.get("/auth/whoami/", **bearer(body["access_token"])).status_code == 401
    assert client.post("/auth/logout-all/", **bearer(body["access_token"])).status_code == 401


def test_token_endpoints_answer_503_when_the_database_is_down(client):
    make_user("alice")
    body = login(client, "alice")
    with database_down() as attempted:
        response = client.post(
            "/auth/token/",
            {"username": "alice", "password": "pw"},
            content_type="application/json",
        )
        assert response.status_code == 503
        assert response.json()["detail"]
        refreshed = client.post(
            "/auth/token/refresh/",
            {"refresh_token": body["refresh_token"]},
            content_type="application/json",
        )
        assert refreshed.status_code == 503
    assert attempted


# -- revoke (staff API) --------------------------------------------------------------------------


@pytest.fixture
def revoker(client):
    """A bearer token of an account allowed to bump epochs (``epochauth.change_epoch``)."""
    account = make_user("automation")
    account.user_permissions.add(Permission.objects.get(codename="change_epoch"))
    return login(client, "automation")["access_token"]


def revoke(client: Any, token: str, body: Any) -> Any:
    return post_json(client, "/auth/revoke/", body, **bearer(token))


def test_revoke_a_user_through_the_api(client, revoker):
    bob = make_user("bob")
    make_user("carol")
    bobs, carols = login(client, "bob")["access_token"], login(client, "carol")["access_token"]
    response = revoke(client, revoker, {"user": "bob", "reason": "left the experiment"})
    assert response.status_code == 200
    assert response.json() == {"revoked": "user bob", "epoch": 1}
    assert (hello(client, bobs), hello(client, carols), hello(client, revoker)) == (401, 200, 200)
    event = AuditEvent.objects.get(action="epoch_bumped")
    assert event.user_id == bob.pk and event.actor.get_username() == "automation"
    assert event.detail["reason"] == "left the experiment"


def test_revoke_a_group_an_identity_and_everyone(client, revoker):
    alice = make_user("alice", groups=["operators"])
    Identity.objects.create(issuer="https://iam.example.org/", subject="s-1", user=alice)
    selected = login(client, "alice", group="operators")["access_token"]
    plain = login(client, "alice")["access_token"]
    assert revoke(client, revoker, {"group": "operators"}).json() == {
        "revoked": "group operators",
        "epoch": 1,
    }
    assert (hello(client, selected), hello(client, plain)) == (401, 200)
    body = {"issuer": "https://iam.example.org/", "subject": "s-1"}
    assert (
        revoke(client, revoker, body).json()["revoked"]
        == "identity s-1 of https://iam.example.org/"
    )
    assert (
        hello(client, plain) == 200
    )  # the identity's epoch: its external tokens (tests/test_provisioning.py)
    assert revoke(client, revoker, {"all": True}).json() == {"revoked": "everyone", "epoch": 1}
    assert hello(client, revoker) == 401  # the caller's own token too


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"all": False},
        {"user": "bob", "group": "operators"},
        {"user": "bob", "all": True},
        {"issuer": "https://iam.example.org/"},
        {"subject": "s-1"},
        {"user": "bob", "subject": "s-1"},
        {"user": ["bob"]},
        ["bob"],
    ],
)
def test_revoke_needs_exactly_one_target(client, revoker, body):
    make_user("bob")
    response = revoke(client, revoker, body)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert not Epoch.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"user": "nobody"},
        {"group": "nobody"},
        {"issuer": "https://iam.example.org/", "subject": "x"},
    ],
)
def test_revoke_an_unknown_target_is_404(client, revoker, body):
    response = revoke(client, revoker, body)
    assert response.status_code == 404
    assert (
        response.json()["error"] == "invalid_target"
        and "No such" in response.json()["error_description"]
    )
    assert not Epoch.objects.exists()


def test_revoke_needs_the_permission(client):
    make_user("bob")
    token = login(client, "bob")["access_token"]
    assert revoke(client, token, {"user": "bob"}).status_code == 403
    response = post_json(client, "/auth/revoke/", {"user": "bob"})
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert not Epoch.objects.exists()


def test_revoke_refuses_a_token_issued_to_an_oauth_client(client):
    """A third-party app holding an admin's token (any scope) must not log everyone out."""
    root = make_user("root")
    root.is_superuser = True
    root.save()
    oauth = mint_access_token(
        root, scope="reports:read", extra_claims={"client_id": "some-app"}
    ).token
    response = revoke(client, oauth, {"all": True})
    assert response.status_code == 403 and "login" in response.json()["detail"]
    assert revoke(client, login(client, "root")["access_token"], {"all": True}).status_code == 200


def test_revoke_from_an_admin_session_needs_csrf():
    admin = make_user("root")
    admin.is_superuser = admin.is_staff = True
    admin.save()
    make_user("bob")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(admin)
    assert post_json(browser, "/auth/revoke/", {"user": "bob"}).status_code == 403
    browser.get("/admin/")
    csrf = browser.cookies["csrftoken"].value
    response = post_json(browser, "/auth/revoke/", {"user": "bob"}, HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200 and response.json()["epoch"] == 1


def test_the_demo_front_door_is_a_page_of_links(client):
    response = client.get("/")
    assert response.status_code == 200
    page = response.content.decode()
    for link in ("/api/docs/", "/admin/", "/oidc/login/", "/o/device/", "/auth/whoami/"):
        assert f'href="{link}"' in page, link
    for link in (
        "/api/docs/",
        "/admin/login/?next=/admin/",
        "/oidc/login/",
        "/.well-known/oauth-authorization-server",
    ):
        assert client.get(link).status_code == 200, link


@pytest.mark.parametrize(
    "path", ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server"]
)
def test_the_metadata_names_our_endpoints_beside_the_oauth_servers(settings, client, path):
    openid_provider(settings)
    document = client.get(path).json()
    assert document["token_endpoint"] == "http://127.0.0.1:8000/o/token/"
    assert document["epochauth_endpoints"] == {
        "token": "http://127.0.0.1:8000/auth/token/",
        "refresh": "http://127.0.0.1:8000/auth/token/refresh/",
        "renew": "http://127.0.0.1:8000/auth/token/renew/",
        "logout": "http://127.0.0.1:8000/auth/logout/",
        "logout_all": "http://127.0.0.1:8000/auth/logout-all/",
        "revoke": "http://127.0.0.1:8000/auth/revoke/",
        "whoami": "http://127.0.0.1:8000/auth/whoami/",
    }


# -- the metadata documents, as a third-party client library reads them ---------------------------


def test_our_metadata_documents_are_valid_for_authlib(settings, client):
    """OpenID Connect Discovery 1.0 and RFC 8414, validated by authlib's metadata classes (https:
    authlib refuses http endpoints, as it should), for the test project in OpenID Provider mode."""
    issuer = "https://api.example.org"
    openid_provider(settings, ISSUER=issuer)
    oauth = client.get("/.well-known/oauth-authorization-server")
    assert oauth.status_code == 200
    AuthorizationServerMetadata(oauth.json()).validate()
    openid = client.get("/.well-known/openid-configuration")
    assert openid.status_code == 200
    OpenIDProviderMetadata(openid.json()).validate()
    assert openid.json()["id_token_signing_alg_values_supported"] == ["RS256", "HS256"]
    for document in (oauth.json(), openid.json()):
        assert (
            document["issuer"] == issuer
            and document["jwks_uri"] == f"{issuer}/.well-known/jwks.json"
        )
        assert "access_token_signing_alg_values_supported" not in document


def test_without_the_oauth_server_only_rfc_8414_metadata_is_published(settings, client):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "epochauth.oauth"]
    assert client.get("/.well-known/openid-configuration").status_code == 404
    document = client.get("/.well-known/oauth-authorization-server").json()
    assert document["token_endpoint"].endswith("/auth/token/")
    assert document["grant_types_supported"] == ["password", "refresh_token"]
    assert "authorization_endpoint" not in document
