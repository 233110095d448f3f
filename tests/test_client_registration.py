"""Dynamic client registration (RFC 7591) and its management (RFC 7592) at ``/o/register/``, with
epochauth's policy (``EPOCHAUTH["CLIENT_REGISTRATION"]``): off by default; public clients only, with the
device or the code grant, user scopes, https or loopback redirect URIs; the registration access token
kept as a digest. oidc-agent itself registering is tests/test_oidc_agent.py."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
)

from epochauth.oauth.models import AllowedScopes, BackchannelLogout, ClientRegistration
from epochauth.urns import DEVICE_CODE
from tests import helpers
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

Application = get_application_model()
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
#: What oidc-agent 4.2.6 sends for ``oidc-gen --flow=device`` (its src/oidc-agent/oidc/flows/
#: registration.c): a web application, no response type our server offers for the device flow, and
#: redirect URIs of its own although the device flow redirects nowhere, one of a private-use scheme.
OIDC_AGENT = {
    "application_type": "web",
    "client_name": "oidc-agent:laptop-host",
    "response_types": [],
    "grant_types": ["refresh_token", DEVICE_CODE],
    "scope": "openid offline_access reports:read",
    "redirect_uris": [
        "http://localhost:4242",
        "http://localhost:31415",
        "http://localhost:8080",
        "edu.kit.data.oidc-agent:/redirect",
    ],
}
NATIVE_APP = {
    "client_name": "Notebook",
    "grant_types": ["authorization_code", "refresh_token"],
    "redirect_uris": ["http://127.0.0.1/callback", "https://notebook.example.org/cb"],
    "scope": "reports:read",
}


@pytest.fixture
def open_registration(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "open"}


@pytest.fixture
def openid_provider(settings):
    """OpenID Provider mode: oidc-agent asks for openid and offline_access."""
    helpers.openid_provider(settings)


def register(body: Any, **headers: str) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return Client().post("/o/register/", data, content_type=JSON, **headers)


def form(path: str, data: dict[str, str], **headers: str) -> Any:
    """A form POST as OAuth clients send it (DOT refuses Django's multipart)."""
    return Client().post(path, urlencode(data), content_type=FORM, **headers)


def manage(method: str, client_id: str, token: str | None, body: Any = None) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token is not None else {}
    data = "" if body is None else json.dumps(body)
    return Client().generic(
        method, f"/o/register/{client_id}/", data, content_type=JSON, **headers
    )


def registered(body: Any = NATIVE_APP) -> dict[str, Any]:
    response = register(body)
    assert response.status_code == 201, response.content
    return response.json()


def oauth_error(response: Any, status: int, error: str) -> str:
    assert response.status_code == status, response.content
    assert response.json()["error"] == error, response.content
    return response.json()["error_description"]


# ---------------------------------------------------------------------------------- off by default
def test_off_by_default(client, openid_provider):
    assert register(NATIVE_APP).status_code == 404
    assert manage("GET", "anything", "token").status_code == 404
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert "registration_endpoint" not in client.get(path).json()
    assert not Application.objects.filter(registration_source="dcr").exists()


def test_both_discovery_documents_name_the_endpoint(client, open_registration, openid_provider):
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        assert client.get(path).json()["registration_endpoint"] == (
            "http://127.0.0.1:8000/o/register/"
        ), path


# ---------------------------------------------------------------------------------- registering
def test_oidc_agent_registers_a_public_device_client(open_registration, openid_provider):
    response = register(OIDC_AGENT)
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    answer = response.json()
    token = answer.pop("registration_access_token")
    client_id = answer["client_id"]
    assert answer == {
        "client_id": client_id,
        "client_id_issued_at": answer["client_id_issued_at"],
        "client_name": "oidc-agent:laptop-host",
        "grant_types": [DEVICE_CODE, "refresh_token"],
        "response_types": [],
        # The device flow redirects nowhere: none of the URIs is registered (RFC 7591 section 2).
        "redirect_uris": [],
        # Public whatever was asked (oidc-agent asks nothing, which means client_secret_basic).
        "token_endpoint_auth_method": "none",
        "scope": "openid offline_access reports:read",
        "registration_client_uri": f"http://127.0.0.1:8000/o/register/{client_id}/",
    }
    application = Application.objects.get(client_id=client_id)
    assert application.registration_source == "dcr"
    assert application.client_type == Application.CLIENT_PUBLIC
    assert application.authorization_grant_type == Application.GRANT_DEVICE_CODE
    assert application.client_secret == "" and not application.skip_authorization
    assert application.user is None
    assert application.epochauth_scopes.scopes == "openid offline_access reports:read"
    # Only its SHA-256 is kept.
    kept = ClientRegistration.objects.get(application=application).token_digest
    assert kept == hashlib.sha256(token.encode()).hexdigest()
    assert len(token) >= 43


def test_a_native_app_with_the_code_grant(open_registration):
    answer = registered()
    application = Application.objects.get(client_id=answer["client_id"])
    assert application.authorization_grant_type == Application.GRANT_AUTHORIZATION_CODE
    assert application.redirect_uris.split() == NATIVE_APP["redirect_uris"]
    assert answer["grant_types"] == ["authorization_code", "refresh_token"]
    assert answer["response_types"] == ["code"]


def test_what_a_client_asks_beyond_the_policy_is_replaced(open_registration):
    """RFC 7591 section 2: the server may replace requested metadata; the answer says what is."""
    answer = registered(
        {
            **NATIVE_APP,
            "token_endpoint_auth_method": "client_secret_basic",
            "scope": "reports:read tokenmanager no-such-scope reports:read",
            "skip_authorization": True,
            "client_type": "confidential",
        }
    )
    assert answer["token_endpoint_auth_method"] == "none" and "client_secret" not in answer
    assert answer["scope"] == "reports:read"
    application = Application.objects.get(client_id=answer["client_id"])
    assert application.client_type == Application.CLIENT_PUBLIC
    assert not application.skip_authorization


def test_without_a_scope_a_client_gets_the_user_scopes(open_registration, openid_provider):
    answer = registered({**NATIVE_APP, "scope": None})
    assert answer["scope"] == "email offline_access openid profile reports:read"


@pytest.mark.parametrize(
    ("change", "error", "said"),
    [
        ({"grant_types": ["client_credentials"]}, "invalid_client_metadata", "client_credentials"),
        ({"grant_types": ["password"]}, "invalid_client_metadata", "password"),
        ({"grant_types": ["implicit"]}, "invalid_client_metadata", "implicit"),
        (
            {"grant_types": ["urn:ietf:params:oauth:grant-type:token-exchange"]},
            "invalid_client_metadata",
            "token-exchange",
        ),
        (
            {"grant_types": ["authorization_code", DEVICE_CODE]},
            "invalid_client_metadata",
            "Register one grant type",
        ),
        ({"grant_types": ["refresh_token"]}, "invalid_client_metadata", "Register one grant type"),
        ({"grant_types": "authorization_code"}, "invalid_client_metadata", "array of strings"),
        ({"redirect_uris": []}, "invalid_redirect_uri", "needs redirect_uris"),
        ({"redirect_uris": ["http://notebook.example.org/cb"]}, "invalid_redirect_uri", "https"),
        ({"redirect_uris": ["edu.kit.data.oidc-agent:/redirect"]}, "invalid_redirect_uri", ""),
        ({"redirect_uris": ["https://notebook.example.org/cb#x"]}, "invalid_redirect_uri", ""),
        ({"redirect_uris": ["https://user@notebook.example.org/cb"]}, "invalid_redirect_uri", ""),
        ({"redirect_uris": ["https://*.example.org/cb"]}, "invalid_redirect_uri", ""),
        ({"redirect_uris": ["http://[::1/cb"]}, "invalid_redirect_uri", ""),
        ({"redirect_uris": ["https:///cb"]}, "invalid_redirect_uri", ""),
        ({"scope": "tokenmanager"}, "invalid_client_metadata", "None of these scopes"),
        ({"scope": ["reports:read"]}, "invalid_client_metadata", "scope must be a string"),
        ({"client_name": "x" * 256}, "invalid_client_metadata", "client_name"),
        ({"client_name": 7}, "invalid_client_metadata", "client_name"),
        # PostgreSQL refuses a NUL in text: a clear 400, never a 500.
        ({"client_name": "a\x00b"}, "invalid_client_metadata", "control character"),
        ({"redirect_uris": ["https://a.example/\x00"]}, "invalid_client_metadata", "control"),
        ({"client_name": "a\ud800"}, "invalid_client_metadata", "no valid Unicode"),
        ({"scope": "reports:read\x1b"}, "invalid_client_metadata", "control character"),
        (
            {"backchannel_logout_uri": "http://portal.example/bcl"},
            "invalid_client_metadata",
            "backchannel_logout_uri must be https",
        ),
        (
            {"backchannel_logout_uri": "https://portal.example/bcl#x"},
            "invalid_client_metadata",
            "backchannel_logout_uri must be https",
        ),
        ({"backchannel_logout_uri": 7}, "invalid_client_metadata", "must be a string"),
        (
            {"backchannel_logout_uri": "http://127.0.0.1:8001/bcl"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://127.0.0.1/bcl"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://localhost:6379/"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://[::1]/bcl"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://10.0.0.5/bcl"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://169.254.169.254/latest"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://192.168.1.1/"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://metrics.localhost/"},
            "invalid_client_metadata",
            "https to a public host",
        ),
        (
            {"backchannel_logout_uri": "https://a.example/\x00"},
            "invalid_client_metadata",
            "control character",
        ),
        (
            {"backchannel_logout_session_required": "yes"},
            "invalid_client_metadata",
            "true or false",
        ),
        (
            {"backchannel_logout_session_required": True},
            "invalid_client_metadata",
            "needs a backchannel_logout_uri",
        ),
    ],
)
def test_what_the_policy_refuses(open_registration, change, error, said):
    description = oauth_error(register({**NATIVE_APP, **change}), 400, error)
    assert said in description
    assert not Application.objects.filter(registration_source="dcr").exists()


@pytest.mark.parametrize("body", ["not json", "[1, 2]", b"\xff\xfe", "null"])
def test_a_body_that_is_no_json_object(open_registration, body):
    oauth_error(register(body), 400, "invalid_client_metadata")


def test_a_client_registers_for_back_channel_logout(open_registration):
    """OpenID Connect Back-Channel Logout 1.0 section 2.2, as RFC 7591 metadata; an update without
    it takes it away."""
    answer = registered(
        {
            **NATIVE_APP,
            "backchannel_logout_uri": "https://portal.example/bcl",
            "backchannel_logout_session_required": True,
        }
    )
    assert answer["backchannel_logout_uri"] == "https://portal.example/bcl"
    assert answer["backchannel_logout_session_required"] is True
    logout = BackchannelLogout.objects.get(application__client_id=answer["client_id"])
    assert logout.uri == "https://portal.example/bcl" and logout.session_required
    token = answer["registration_access_token"]
    update = {**NATIVE_APP, "client_id": answer["client_id"]}
    response = manage("put", answer["client_id"], token, update)
    assert response.status_code == 200, response.content
    assert "backchannel_logout_uri" not in response.json()
    assert not BackchannelLogout.objects.filter(
        application__client_id=answer["client_id"]
    ).exists()


def test_only_post_registers(open_registration):
    assert Client().get("/o/register/").status_code == 405


# ---------------------------------------------------------------------------------- using the client
def test_a_registered_client_logs_in_with_the_device_flow_as_oidc_agent_does(
    open_registration, openid_provider
):
    """oidc-agent authenticates with HTTP Basic "client_id:" (an empty secret) and polls without
    client_id in the body; the token it gets is accepted by the API."""
    client_id = registered(OIDC_AGENT)["client_id"]
    basic = "Basic " + base64.b64encode(f"{client_id}:".encode()).decode()
    alice = make_user("alice")
    started = form(
        "/o/device-authorization/",
        {"client_id": client_id, "scope": "openid offline_access reports:read"},
        HTTP_AUTHORIZATION=basic,
    )
    assert started.status_code == 200, started.content
    device = started.json()
    browser = Client()
    browser.force_login(alice)
    confirm = browser.post("/o/device/", {"user_code": device["user_code"]})
    page = browser.get(confirm["Location"])
    # The consent page says who named the application: the application itself.
    assert b'id="self-registered"' in page.content and b"oidc-agent:laptop-host" in page.content
    assert browser.post(confirm["Location"], {"action": "accept"}).status_code == 302
    get_device_grant_model().objects.update(last_checked="2000-01-01T00:00:00Z")
    token = form(
        "/o/token/",
        {"grant_type": DEVICE_CODE, "device_code": device["device_code"]},
        HTTP_AUTHORIZATION=basic,
    )
    assert token.status_code == 200, token.content
    body = token.json()
    assert body["refresh_token"] and body["scope"] == "openid offline_access reports:read"
    reports = Client().get("/api/reports/", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert reports.status_code == 200


def test_a_registered_client_gets_no_client_credentials_token(open_registration):
    client_id = registered(OIDC_AGENT)["client_id"]
    refused = form(
        "/o/token/",
        {"grant_type": "client_credentials", "client_id": client_id, "scope": "reports:read"},
    )
    assert refused.status_code in (400, 401) and refused.json()["error"] in (
        "unauthorized_client",
        "invalid_client",
    )


def test_consent_pages_of_clients_an_admin_made_say_nothing_of_it(open_registration):
    """The note is for registered clients only."""
    alice = make_user("alice")
    started = form(
        "/o/device-authorization/", {"client_id": "epochauth-cli", "scope": "reports:read"}
    )
    browser = Client()
    browser.force_login(alice)
    confirm = browser.post("/o/device/", {"user_code": started.json()["user_code"]})
    assert b'id="self-registered"' not in browser.get(confirm["Location"]).content


# ---------------------------------------------------------------------------------- RFC 7592
def test_read_with_the_registration_access_token(open_registration):
    answer = registered()
    read = manage("GET", answer["client_id"], answer["registration_access_token"])
    assert read.status_code == 200 and read["Cache-Control"] == "no-store"
    assert read.json() == answer


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_management_needs_the_clients_own_token(open_registration, method):
    mine, other = registered(), registered()
    cases = [
        (mine["client_id"], None),
        (mine["client_id"], "not-the-token"),
        (mine["client_id"], other["registration_access_token"]),
        ("no-such-client", mine["registration_access_token"]),
    ]
    for client_id, token in cases:
        response = manage(method, client_id, token, {**NATIVE_APP, "client_id": client_id})
        assert response.status_code == 401, (client_id, token, response.content)
        challenge = response["WWW-Authenticate"]
        if token is None:
            assert challenge == "Bearer"
        else:
            assert challenge.startswith('Bearer error="invalid_token"')
    assert Application.objects.filter(client_id=mine["client_id"]).exists()


def test_update_replaces_the_registration(open_registration):
    answer = registered()
    client_id, token = answer["client_id"], answer["registration_access_token"]
    update = {
        "client_id": client_id,
        "client_name": "Notebook 2",
        "grant_types": [DEVICE_CODE],
        "scope": "reports:read",
    }
    response = manage("PUT", client_id, token, update)
    assert response.status_code == 200, response.content
    assert (
        response.json()["redirect_uris"] == [] and response.json()["client_name"] == "Notebook 2"
    )
    application = Application.objects.get(client_id=client_id)
    assert application.authorization_grant_type == Application.GRANT_DEVICE_CODE
    assert application.client_type == Application.CLIENT_PUBLIC
    # The token stays the client's.
    assert manage("GET", client_id, token).json()["client_name"] == "Notebook 2"


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"client_id": "another"}, "client_id"),
        ({"client_id": None}, "client_id"),
        ({"registration_access_token": "x"}, "registration_access_token"),
        ({"client_id_issued_at": 1}, "client_id_issued_at"),
        ({"client_secret": "chosen"}, "no client secret"),
        ({"grant_types": ["client_credentials"]}, "client_credentials"),
    ],
)
def test_what_an_update_may_not_do(open_registration, change, said):
    answer = registered()
    client_id, token = answer["client_id"], answer["registration_access_token"]
    body = {**NATIVE_APP, "client_id": client_id, **change}
    assert said in oauth_error(
        manage("PUT", client_id, token, body), 400, "invalid_client_metadata"
    )
    assert Application.objects.get(client_id=client_id).name == "Notebook"


def test_delete_ends_the_client_and_its_tokens(open_registration):
    answer = registered(OIDC_AGENT)
    client_id, token = answer["client_id"], answer["registration_access_token"]
    alice = make_user("alice")
    started = form("/o/device-authorization/", {"client_id": client_id, "scope": "reports:read"})
    browser = Client()
    browser.force_login(alice)
    confirm = browser.post("/o/device/", {"user_code": started.json()["user_code"]})
    browser.post(confirm["Location"], {"action": "accept"})
    get_device_grant_model().objects.update(last_checked="2000-01-01T00:00:00Z")
    issued = form(
        "/o/token/",
        {
            "grant_type": DEVICE_CODE,
            "device_code": started.json()["device_code"],
            "client_id": client_id,
        },
    ).json()
    access = issued["access_token"]
    assert Client().get("/api/reports/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 200

    deleted = manage("DELETE", client_id, token)
    assert deleted.status_code == 204
    assert not Application.objects.filter(client_id=client_id).exists()
    assert not get_access_token_model().objects.filter(application__client_id=client_id).exists()
    # RFC 7592 section 2.3: what the client was given ends too; a JWT outlives its row otherwise.
    assert Client().get("/api/reports/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401
    assert manage("GET", client_id, token).status_code == 401


# ---------------------------------------------------------------------------------- who registers
@pytest.fixture
def authenticated_registration(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "authenticated"}


def test_authenticated_registration_needs_a_users_token_of_ours(authenticated_registration):
    refused = register(NATIVE_APP)
    assert oauth_error(refused, 401, "access_denied")
    assert refused["WWW-Authenticate"] == "Bearer"
    bad = register(NATIVE_APP, HTTP_AUTHORIZATION="Bearer not-a-token")
    oauth_error(bad, 401, "invalid_token")
    assert bad["WWW-Authenticate"].startswith('Bearer error="invalid_token"')

    alice = make_user("alice")
    token = login(Client(), "alice")["access_token"]
    answer = register(NATIVE_APP, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert answer.status_code == 201, answer.content
    # The user who registered owns the application (the admin shows who).
    assert Application.objects.get(client_id=answer.json()["client_id"]).user == alice
    # A user made inactive behind Django's back (no epoch bump) owns nothing new.
    type(alice).objects.filter(pk=alice.pk).update(is_active=False)
    gone = register(NATIVE_APP, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert oauth_error(gone, 401, "invalid_token") == "The user is inactive or deleted"


def test_a_client_credentials_token_registers_nothing(authenticated_registration):
    owner = make_user("owner")
    service = Application.objects.create(
        name="svc",
        client_id="svc",
        client_secret="s3cret-" * 6,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=owner,
    )
    issued = form(
        "/o/token/",
        {"grant_type": "client_credentials", "client_id": service.client_id},
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"svc:" + b"s3cret-" * 6).decode(),
    )
    token = issued.json()["access_token"]
    oauth_error(register(NATIVE_APP, HTTP_AUTHORIZATION=f"Bearer {token}"), 403, "access_denied")
    assert not Application.objects.filter(registration_source="dcr").exists()


def test_open_registration_reads_no_credentials(open_registration):
    answer = register(NATIVE_APP, HTTP_AUTHORIZATION="Bearer not-a-token")
    assert answer.status_code == 201
    assert Application.objects.get(client_id=answer.json()["client_id"]).user is None


# ---------------------------------------------------------------------------------- rate limit
def test_registrations_are_limited_per_address(settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "CLIENT_REGISTRATION": "open",
        "CLIENT_REGISTRATION_THROTTLE_RATE": "2/hour",
    }
    # Refused requests register nothing and do not count.
    for _ in range(3):
        assert register({"grant_types": ["client_credentials"]}).status_code == 400
    assert register(NATIVE_APP).status_code == 201
    assert register(NATIVE_APP).status_code == 201
    limited = register(NATIVE_APP)
    assert oauth_error(limited, 429, "temporarily_unavailable")
    assert int(limited["Retry-After"]) > 0
    assert Application.objects.filter(registration_source="dcr").count() == 2
    other = Client(REMOTE_ADDR="192.0.2.7").post(
        "/o/register/", json.dumps(NATIVE_APP), content_type=JSON
    )
    assert other.status_code == 201


def test_no_limit_when_the_rate_is_none(settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "CLIENT_REGISTRATION": "open",
        "CLIENT_REGISTRATION_THROTTLE_RATE": None,
    }
    for _ in range(12):
        assert register(OIDC_AGENT).status_code == 201


# ---------------------------------------------------------------------------------- the admin
def test_the_admin_shows_registered_clients(open_registration, admin_client):
    mine = registered()["client_id"]
    Application.objects.create(
        name="by hand",
        client_type=Application.CLIENT_PUBLIC,
        authorization_grant_type=Application.GRANT_DEVICE_CODE,
    )
    listed = admin_client.get(
        "/admin/oauth2_provider/application/", {"registration_source__exact": "dcr"}
    )
    assert listed.status_code == 200
    assert b"Notebook" in listed.content and b"by hand" not in listed.content
    application = Application.objects.get(client_id=mine)
    page = admin_client.get(f"/admin/oauth2_provider/application/{application.pk}/change/")
    assert b"Dynamic Client Registration" in page.content
    assert AllowedScopes.objects.get(application=application).scopes == "reports:read"
