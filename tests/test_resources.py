"""RFC 8707 resource indicators at our own login: ``resource`` narrows ``aud`` to a service we serve."""

from __future__ import annotations

import base64
from urllib.parse import urlencode

import pytest
from django.core import checks
from oauth2_provider.models import Application

from epochauth.authentication import verify_token
from epochauth.revocation import bump_epoch
from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

STORAGE = "https://storage.example.org"
COMPUTE = "https://compute.example.org"
SECRET = "s3cret-s3cret"


@pytest.fixture
def served(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "RESOURCES": [STORAGE, COMPUTE]}


def _refresh(client, refresh_token, **extra):
    return client.post(
        "/auth/token/refresh/",
        {"refresh_token": refresh_token, **extra},
        content_type="application/json",
    )


def test_login_resource_narrows_aud_and_refresh_and_renew_keep_it(client, served):
    make_user("alice")
    body = login(client, "alice", resource=STORAGE)
    assert verify_token(body["access_token"])["aud"] == STORAGE
    refreshed = _refresh(client, body["refresh_token"]).json()
    assert verify_token(refreshed["access_token"])["aud"] == STORAGE
    renewed = client.post(
        "/auth/token/renew/", HTTP_AUTHORIZATION=f"Bearer {refreshed['access_token']}"
    )
    assert verify_token(renewed.json()["access_token"])["aud"] == STORAGE


def test_form_login_repeats_resource_for_an_aud_of_several(client, served):
    make_user("alice")
    response = client.post(
        "/auth/token/", {"username": "alice", "password": "pw", "resource": [STORAGE, COMPUTE]}
    )
    assert verify_token(response.json()["access_token"])["aud"] == [STORAGE, COMPUTE]


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        ("https://elsewhere.example.org", "invalid_target"),  # not served here
        ("storage.example.org", "invalid_target"),  # not an absolute URI
        ("/storage", "invalid_target"),
        (f"{STORAGE}#part", "invalid_target"),  # RFC 8707 section 2: no fragment
        ("", "invalid_target"),
        (42, "invalid_request"),  # no string at all
        ({"uri": STORAGE}, "invalid_request"),
    ],
)
def test_login_refuses_a_resource_not_served(client, served, resource, error):
    make_user("alice")
    response = client.post(
        "/auth/token/",
        {"username": "alice", "password": "pw", "resource": resource},
        content_type="application/json",
    )
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_without_resources_only_the_default_audience_is_served(client, settings):
    make_user("alice")
    issuer = settings.EPOCHAUTH["ISSUER"]
    assert verify_token(login(client, "alice", resource=issuer)["access_token"])["aud"] == issuer
    response = client.post(
        "/auth/token/",
        {"username": "alice", "password": "pw", "resource": STORAGE},
        content_type="application/json",
    )
    assert response.json()["error"] == "invalid_target"


def test_refresh_narrows_among_the_granted_resources_never_wider(client, served):
    make_user("alice")
    body = login(client, "alice", resource=[STORAGE, COMPUTE])
    narrowed = _refresh(client, body["refresh_token"], resource=COMPUTE).json()
    assert verify_token(narrowed["access_token"])["aud"] == COMPUTE
    # The grant keeps both: the next refresh without resource has them again.
    again = _refresh(client, narrowed["refresh_token"]).json()
    assert verify_token(again["access_token"])["aud"] == [STORAGE, COMPUTE]

    only_storage = login(client, "alice", resource=STORAGE)
    wider = _refresh(client, only_storage["refresh_token"], resource=COMPUTE)
    assert wider.status_code == 400
    assert wider.json()["error"] == "invalid_target"
    # Refused before the refresh token rotated away: it still works.
    assert _refresh(client, only_storage["refresh_token"]).status_code == 200


def test_refresh_of_a_login_without_resource_may_name_any_served_one(client, served):
    make_user("alice")
    body = login(client, "alice")
    refreshed = _refresh(client, body["refresh_token"], resource=STORAGE).json()
    assert verify_token(refreshed["access_token"])["aud"] == STORAGE
    bad = _refresh(client, refreshed["refresh_token"], resource="https://elsewhere.example.org")
    assert bad.json()["error"] == "invalid_target"


def test_a_service_with_its_own_audience_refuses_tokens_for_others(client, served, settings):
    make_user("alice")
    token = login(client, "alice", resource=STORAGE)["access_token"]
    site = settings.EPOCHAUTH
    settings.EPOCHAUTH = {**site, "AUDIENCE": STORAGE}
    assert client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    settings.EPOCHAUTH = {**site, "AUDIENCE": COMPUTE}
    refused = client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused["WWW-Authenticate"]


def test_narrowed_tokens_are_still_revoked_by_logout_and_epochs(client, served):
    alice = make_user("alice")
    body = login(client, "alice", resource=STORAGE)
    assert verify_token(body["access_token"])["aud"] == STORAGE
    other = login(client, "alice", resource=COMPUTE)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {body['access_token']}"}
    assert client.post("/auth/logout/", **auth).status_code == 204
    assert client.get("/auth/whoami/", **auth).status_code == 401
    assert _refresh(client, body["refresh_token"]).json()["error"] == "invalid_grant"
    bump_epoch("user", str(alice.pk))
    other_auth = {"HTTP_AUTHORIZATION": f"Bearer {other['access_token']}"}
    assert client.get("/auth/whoami/", **other_auth).status_code == 401


@pytest.mark.parametrize(
    "value", ["storage.example.org", [f"{STORAGE}#x"], "https://storage.example.org", [42]]
)
def test_check_refuses_resources_that_are_no_list_of_absolute_uris(settings, value):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "RESOURCES": value}
    found = [m.id for m in checks.run_checks() if m.id == "epochauth.E022"]
    assert found == ["epochauth.E022"]


def test_check_accepts_absolute_resources(settings, served):
    assert "epochauth.E022" not in [m.id for m in checks.run_checks()]


def _oauth_token(client, data, client_id="svc"):
    credentials = base64.b64encode(f"{client_id}:{SECRET}".encode()).decode()
    return client.post("/o/token/", data, HTTP_AUTHORIZATION=f"Basic {credentials}")


@pytest.fixture
def service(db):
    return Application.objects.create(
        name="svc",
        client_id="svc",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=make_user("alice"),
    )


@pytest.mark.parametrize(
    ("resources", "aud"),
    [
        ([STORAGE], STORAGE),
        ([STORAGE, COMPUTE], [STORAGE, COMPUTE]),
        ([], "http://127.0.0.1:8000"),
    ],
)
def test_oauth_token_resource_narrows_aud(client, served, service, resources, aud):
    response = _oauth_token(client, {"grant_type": "client_credentials", "resource": resources})
    assert response.status_code == 200, response.content
    assert verify_token(response.json()["access_token"])["aud"] == aud


@pytest.mark.parametrize(
    "resource", ["https://elsewhere.example.org", "/storage", f"{STORAGE}#part", ""]
)
def test_oauth_token_refuses_a_resource_not_served(client, served, service, resource):
    response = _oauth_token(client, {"grant_type": "client_credentials", "resource": resource})
    assert (response.status_code, response.json()["error"]) == (400, "invalid_target")


@pytest.mark.parametrize(
    ("targets", "aud"),
    [
        ([("resource", STORAGE)], STORAGE),
        ([("audience", STORAGE)], STORAGE),  # RFC 8693 names it by its logical name too
        ([("resource", STORAGE), ("audience", COMPUTE)], [STORAGE, COMPUTE]),
    ],
)
def test_token_exchange_narrows_aud_to_a_served_resource(
    client, served, service, settings, idp, targets, aud
):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer}]}
    data = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", idp.user_token("carol")),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        *targets,
    ]
    credentials = base64.b64encode(f"svc:{SECRET}".encode()).decode()
    response = client.post(
        "/o/token/",
        urlencode(data),
        content_type="application/x-www-form-urlencoded",
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )
    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    assert verify_token(token)["aud"] == aud
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://elsewhere.example.org"}
    assert client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 401
