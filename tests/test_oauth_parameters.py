"""Hostile input at every endpoint of the authorization server (``epochauth.oauth.urls``) and of the token
endpoints (``epochauth.urls``): control characters, invalid UTF-8, overlong values in every parameter
and in the Authorization header are a 4xx, never a 5xx.

PostgreSQL refuses a NUL in text (psycopg's ``DataError``) where SQLite looks it up; the database here
refuses it the same way, so the 500s of PostgreSQL show on SQLite too.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth import get_user_model
from django.db import DataError, connection
from django.test import Client
from django.urls import URLPattern
from oauth2_provider.models import get_application_model

import epochauth.oauth.urls
import epochauth.ssf.urls
import epochauth.urls
from epochauth import tokens
from epochauth.authentication import verify_token
from epochauth.oauth.models import ensure_cli_application
from epochauth.ssf.events import SESSION_REVOKED
from epochauth.urns import ACCESS_TOKEN_TYPE, DEVICE_CODE, TOKEN_EXCHANGE
from tests.helpers import make_user, rsa_pem

pytestmark = pytest.mark.django_db

SECRET = "s3cret-" * 6
REDIRECT = "http://127.0.0.1:9/callback"
FORM = "application/x-www-form-urlencoded"
SCOPE = "openid profile reports:read"
STORAGE = "https://storage.example.org"
Application = get_application_model()

#: Each value percent-encoded as bytes: control characters, invalid and overlong UTF-8, a long value.
HOSTILE: dict[str, bytes] = {
    "NUL": b"\x00",
    "NUL inside": b"ab\x00cd",
    "escape": b"\x1b[2J",
    "DEL": b"\x7f",
    "CR LF": b"x\r\ny",
    "invalid UTF-8": b"\xff\xfe",
    "overlong NUL": b"\xc0\x80",
    "a surrogate": b"\xed\xa0\x80",
    "long": b"A" * 100_000,
}


def refuse_nul(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    """What psycopg does with a NUL in a text parameter, before PostgreSQL sees the query."""
    for row in params if many else [params]:
        if any(isinstance(p, str) and "\x00" in p for p in row or ()):
            raise DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    return execute(sql, params, many, context)


@pytest.fixture(autouse=True)
def database_refuses_nul() -> Iterator[None]:
    with connection.execute_wrapper(refuse_nul):
        yield


@pytest.fixture
def site(settings) -> dict[str, str]:
    """OpenID Provider mode on (userinfo and logout answer), its clients, a user, a pending device code."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem(),
        "RESOURCES": [STORAGE],
        "SSF_TRANSMITTER": True,
    }
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OIDC_ENABLED": True,
        "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    ensure_cli_application(Application)
    alice = make_user("alice", groups=["physics"])
    Application.objects.create(
        name="svc",
        client_id="svc",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=alice,
    )
    Application.objects.create(
        name="portal",
        client_id="portal",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        post_logout_redirect_uris=REDIRECT,
    )
    device = Client().post(
        "/o/device-authorization/",
        urlencode({"client_id": "epochauth-cli", "scope": "reports:read"}),
        content_type=FORM,
    )
    assert device.status_code == 200, device.content
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "open"}
    registration = Client().post(
        "/o/register/",
        json.dumps({"grant_types": [DEVICE_CODE], "client_name": "fuzz"}),
        content_type="application/json",
    )
    assert registration.status_code == 201, registration.content
    return {
        **device.json(),
        "registered": registration.json()["client_id"],
        "registration_token": registration.json()["registration_access_token"],
    }


def basic(client_id: str | bytes, secret: str | bytes = SECRET) -> str:
    """HTTP Basic credentials, form-encoded first (RFC 6749 section 2.3.1)."""
    return "Basic " + base64.b64encode(f"{quote(client_id)}:{quote(secret)}".encode()).decode()


#: One request per endpoint that gets far into it: (URL name, method, path, parameters, Authorization).
#: ``{user_code}``, ``{device_code}`` and ``{token}`` are filled in by :func:`fill`; a
#: ``browser`` request is made signed in.
REQUESTS: list[tuple[str, str, str, dict[str, str], str | None]] = [
    (
        "token",
        "POST",
        "/o/token/",
        {"grant_type": "client_credentials", "scope": "reports:read", "resource": STORAGE},
        basic("svc"),
    ),
    (
        "token",
        "POST",
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "client_id": "portal",
            "client_secret": SECRET,
            "code": "some-code",
            "redirect_uri": REDIRECT,
            "code_verifier": "v" * 50,
        },
        None,
    ),
    (
        "token",
        "POST",
        "/o/token/",
        {"grant_type": DEVICE_CODE, "client_id": "epochauth-cli", "device_code": "{device_code}"},
        None,
    ),
    (
        "token",
        "POST",
        "/o/token/",
        {"grant_type": "refresh_token", "client_id": "epochauth-cli", "refresh_token": "r"},
        None,
    ),
    (
        "token",
        "POST",
        "/o/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": "{token}",
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "audience": "http://testserver",
            "resource": "http://testserver/api/",
            "scope": "reports:read",
        },
        basic("svc"),
    ),
    (
        "revoke-token",
        "POST",
        "/o/revoke_token/",
        {"token": "{token}", "token_type_hint": "access_token"},
        basic("svc"),
    ),
    ("introspect", "POST", "/o/introspect/", {"token": "{token}"}, basic("svc")),
    (
        "device-authorization",
        "POST",
        "/o/device-authorization/",
        {"client_id": "epochauth-cli", "scope": "reports:read"},
        None,
    ),
    ("user-info", "GET", "/o/userinfo/", {"claims": "{}"}, "Bearer {token}"),
    (
        "authorize",
        "GET",
        "/o/authorize/",
        {
            "response_type": "code",
            "client_id": "portal",
            "redirect_uri": REDIRECT,
            "scope": "openid reports:read",
            "state": "s",
            "nonce": "n",
            "code_challenge": "c" * 43,
            "code_challenge_method": "S256",
        },
        "browser",
    ),
    (
        "rp-initiated-logout",
        "GET",
        "/o/logout/",
        {
            "id_token_hint": "a.b.c",
            "client_id": "portal",
            "post_logout_redirect_uri": REDIRECT,
            "state": "s",
        },
        "browser",
    ),
    ("device", "GET", "/o/device/", {"user_code": "{user_code}"}, None),
    ("device", "GET", "/o/device/", {"user_code": "{user_code}"}, "browser"),
    ("device", "POST", "/o/device/", {"user_code": "{user_code}"}, "browser"),
    (
        "device-confirm",
        "POST",
        "/o/device-confirm/epochauth-cli/{user_code}",
        {"action": "accept"},
        "browser",
    ),
    (
        "device-grant-status",
        "GET",
        "/o/device-grant-status/epochauth-cli/{user_code}",
        {},
        "browser",
    ),
    (
        "epochauth-token",
        "POST",
        "/auth/token/",
        {
            "username": "alice",
            "password": "pw",
            "scope": "reports:read",
            "remember_me": "true",
            "resource": STORAGE,
        },
        None,
    ),
    (
        "epochauth-refresh",
        "POST",
        "/auth/token/refresh/",
        {"refresh_token": "r.r.r", "resource": STORAGE},
        None,
    ),
    ("epochauth-renew", "POST", "/auth/token/renew/", {}, "Bearer {token}"),
    ("epochauth-logout", "POST", "/auth/logout/", {"refresh_token": "r.r.r"}, "Bearer {token}"),
    ("epochauth-logout-all", "POST", "/auth/logout-all/", {}, "Bearer {token}"),
    (
        "epochauth-revoke",
        "POST",
        "/auth/revoke/",
        {"user": "alice", "group": "physics", "reason": "r"},
        "Bearer {token}",
    ),
    ("epochauth-whoami", "GET", "/auth/whoami/", {}, "Bearer {token}"),
    ("epochauth-statuslist", "GET", "/auth/statuslists/0", {"n": "1"}, None),
    # Shared Signals: a SET pushed to us (the stream's secret, not a token), and the transmitter's
    # stream management (a receiver's client-credentials token; a user's is refused first).
    ("epochauth-ssf-push", "POST", "/auth/ssf/events/", {"set": "a.b.c"}, "Bearer {token}"),
    ("epochauth-ssf-configuration", "GET", "/.well-known/ssf-configuration", {}, None),
    (
        "epochauth-ssf-streams",
        "POST",
        "/ssf/streams/",
        {"events_requested": SESSION_REVOKED, "description": "d"},
        "Bearer {token}",
    ),
    ("epochauth-ssf-status", "GET", "/ssf/streams/status/", {"stream_id": "s"}, "Bearer {token}"),
    (
        "epochauth-ssf-add-subject",
        "POST",
        "/ssf/streams/subjects/add/",
        {"stream_id": "s", "verified": "true"},
        "Bearer {token}",
    ),
    (
        "epochauth-ssf-remove-subject",
        "POST",
        "/ssf/streams/subjects/remove/",
        {"stream_id": "s"},
        "Bearer {token}",
    ),
    ("epochauth-ssf-verify", "POST", "/ssf/streams/verify/", {"state": "s"}, "Bearer {token}"),
    (
        "epochauth-ssf-poll",
        "POST",
        f"/ssf/poll/{uuid.UUID(int=1)}/",
        {"maxEvents": "5", "returnImmediately": "true"},
        "Bearer {token}",
    ),
    # Dynamic client registration reads JSON (test_hostile_json_is_never_a_server_error).
    (
        "dcr-register",
        "POST",
        "/o/register/",
        {"client_name": "fuzz", "scope": "reports:read", "grant_types": DEVICE_CODE},
        None,
    ),
    (
        "dcr-register-management",
        "GET",
        "/o/register/{registered}/",
        {"client_id": "{registered}"},
        "Bearer {registration_token}",
    ),
]


def test_every_endpoint_is_fuzzed():
    """A new endpoint needs a request above: the next one cannot ship without being tried."""
    patterns = [
        *epochauth.oauth.urls.urlpatterns,
        *epochauth.urls.urlpatterns,
        *epochauth.ssf.urls.urlpatterns,
    ]
    names = {p.name for p in patterns if isinstance(p, URLPattern)}
    assert names == {name for name, *_ in REQUESTS}


def fill(text: str, site: dict[str, str]) -> str:
    """``text`` with the site's codes, and a new access token (a logout before ended the last one)."""
    for name in ("user_code", "device_code", "registered", "registration_token"):
        text = text.replace(f"{{{name}}}", site[name])
    if "{token}" in text:
        alice = get_user_model().objects.get(username="alice")
        text = text.replace("{token}", tokens.mint_access_token(alice, scope=SCOPE).token)
    return text


def send(
    site: dict[str, str],
    method: str,
    path: str,
    params: dict[str, Any],
    authorization: str | None,
    *,
    as_json: bool = False,
) -> Any:
    """One request; parameter values are bytes or text, percent-encoded as they are."""
    client = Client(raise_request_exception=False)
    headers = {}
    if authorization == "browser":
        client.force_login(get_user_model().objects.get(username="alice"))
    elif authorization is not None:
        headers["HTTP_AUTHORIZATION"] = fill(authorization, site)
    path = fill(path, site)
    params = {k: fill(v, site) if isinstance(v, str) else v for k, v in params.items()}
    if method == "GET":
        return client.get(f"{path}?{urlencode(params)}" if params else path, **headers)
    if as_json:
        return client.post(path, json.dumps(params), content_type="application/json", **headers)
    return client.post(path, urlencode(params), content_type=FORM, **headers)


def request_id(request: tuple) -> str:
    return f"{request[1]} {request[2]} {request[4] if request[4] == 'browser' else ''}".strip()


@pytest.mark.parametrize("request_", REQUESTS, ids=[request_id(r) for r in REQUESTS])
def test_hostile_parameters_are_never_a_server_error(site, request_):
    name, method, path, params, authorization = request_
    assert send(site, method, path, params, authorization).status_code < 500
    failures = []
    for param in [*params, "\x00name"]:
        for label, value in HOSTILE.items():
            response = send(site, method, path, {**params, param: value}, authorization)
            if response.status_code >= 500:
                failures.append(f"{param}={label}: {response.status_code}")
    assert failures == []


@pytest.mark.parametrize("request_", REQUESTS, ids=[request_id(r) for r in REQUESTS])
def test_hostile_authorization_headers_are_never_a_server_error(site, request_):
    name, method, path, params, _ = request_
    headers = [
        *(basic(value.decode("latin-1")) for value in HOSTILE.values()),
        *(basic("svc", value.decode("latin-1")) for value in HOSTILE.values()),
        *(f"Bearer {value.decode('latin-1')}" for value in HOSTILE.values()),
        "Basic é",
        "Basic " + base64.b64encode(b"\xff\xfe:\x00").decode(),
        "Basic !!!",
        "Basic",
        "\x00",
        "Bearer " + "a" * 100_000,
    ]
    failures = [
        header[:40]
        for header in headers
        if send(site, method, path, params, header).status_code >= 500
    ]
    assert failures == []


@pytest.mark.parametrize("value", ["\x00", "a\ud800", "\x1b", "x" * 100_000])
def test_hostile_json_is_never_a_server_error(site, value):
    """The token endpoints of epochauth.urls and client registration take JSON: JSON escapes name
    any code point."""
    failures = []
    for name, _, path, params, authorization in REQUESTS:
        if not name.startswith(("epochauth-", "dcr-register")) or authorization == "browser":
            continue
        for param in params:
            response = send(
                site, "POST", path, {**params, param: value}, authorization, as_json=True
            )
            if response.status_code >= 500:
                failures.append(f"{path} {param}: {response.status_code}")
    assert failures == []


# -- what the review found, each answered as the RFC says ---------------------------------------


def post_form(path: str, data: dict[str, str], **headers: str) -> Any:
    return Client().post(path, urlencode(data), content_type=FORM, **headers)


@pytest.mark.parametrize(
    "data, headers, status, error",
    [
        (
            {"grant_type": DEVICE_CODE, "client_id": "epochauth-cli", "device_code": "a\x00"},
            {},
            400,
            "invalid_request",
        ),
        (
            {
                "grant_type": "authorization_code",
                "client_id": "epochauth-cli",
                "code": "a\x00",
                "redirect_uri": REDIRECT,
                "code_verifier": "v" * 50,
            },
            {},
            400,
            "invalid_request",
        ),
        ({"grant_type": "client_credentials", "client_id": "svc\x00"}, {}, 401, "invalid_client"),
        (
            {"grant_type": "client_credentials"},
            {"HTTP_AUTHORIZATION": basic("svc\x00")},
            401,
            "invalid_client",
        ),
        (
            {"grant_type": "client_credentials"},
            {"HTTP_AUTHORIZATION": "Basic é"},
            401,
            "invalid_client",
        ),
    ],
    ids=["device_code", "code", "client_id", "Basic client_id", "Basic not base64"],
)
def test_nul_at_the_token_endpoint_is_an_oauth_error(site, data, headers, status, error):
    response = post_form("/o/token/", data, **headers)
    assert (response.status_code, response.json()["error"]) == (status, error)
    if status == 401:
        assert response["WWW-Authenticate"] == 'Basic realm="oauth"'


def test_nul_in_the_client_id_of_a_device_authorization_is_invalid_client(site):
    response = post_form("/o/device-authorization/", {"client_id": "epochauth-cli\x00"})
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


@pytest.mark.parametrize("signed_in", [False, True])
def test_nul_in_the_code_of_the_device_page_is_a_readable_page(site, signed_in):
    browser = Client()
    if signed_in:
        browser.force_login(get_user_model().objects.get(username="alice"))
    response = browser.get("/o/device/?user_code=%00")
    assert response.status_code == 400 and b"Invalid link" in response.content


#: RFC 8707 section 2 ``resource`` values: (repeated form values, the error; None: a token for them).
RESOURCE_VALUES: dict[str, tuple[list[str], str | None]] = {
    "served": ([STORAGE], None),
    "repeated alike": ([STORAGE, STORAGE], None),
    "repeated, one not served": ([STORAGE, "https://elsewhere.example.org"], "invalid_target"),
    "empty": ([""], "invalid_target"),
    "no scheme": (["storage.example.org"], "invalid_target"),
    "relative": (["/storage"], "invalid_target"),
    "no network location": (["urn:example:storage"], "invalid_target"),
    "a fragment": ([f"{STORAGE}#part"], "invalid_target"),
    "an empty fragment": ([f"{STORAGE}#"], "invalid_target"),
}

#: Where ``resource`` narrows a token: (path, form without it, Authorization).
RESOURCE_ENDPOINTS = {
    "client credentials": ("/o/token/", {"grant_type": "client_credentials"}, basic("svc")),
    "token exchange": (
        "/o/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": "",  # the test provider's
            "subject_token_type": ACCESS_TOKEN_TYPE,
        },
        basic("svc"),
    ),
    "login": ("/auth/token/", {"username": "alice", "password": "pw"}, None),
}


@pytest.mark.parametrize("endpoint", list(RESOURCE_ENDPOINTS))
@pytest.mark.parametrize("case", list(RESOURCE_VALUES))
def test_every_shape_of_resource_is_a_token_for_it_or_invalid_target(
    site, settings, request, endpoint, case
):
    path, form, authorization = RESOURCE_ENDPOINTS[endpoint]
    values, error = RESOURCE_VALUES[case]
    if "subject_token" in form:
        idp = request.getfixturevalue("idp")
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer}]}
        form = {**form, "subject_token": idp.user_token("carol")}
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
    data = [*form.items(), *(("resource", v) for v in values)]
    response = Client().post(path, urlencode(data), content_type=FORM, **headers)
    if error is None:
        assert response.status_code == 200, response.content
        assert verify_token(response.json()["access_token"])["aud"] == STORAGE
    else:
        assert (response.status_code, response.json()["error"]) == (400, error)


@pytest.mark.parametrize(
    ("resource", "error"),
    [
        (42, "invalid_request"),  # a string or a list of strings, nothing else
        (None, "invalid_request"),
        (True, "invalid_request"),
        ({"uri": STORAGE}, "invalid_request"),
        ([[STORAGE]], "invalid_request"),
        ([STORAGE] * 17, "invalid_request"),  # at most 16
        ([STORAGE, True], "invalid_request"),
        ([STORAGE, 42], "invalid_target"),  # a number in the list reads as its digits
    ],
)
@pytest.mark.parametrize("path", ["/auth/token/", "/auth/token/refresh/"])
def test_a_json_resource_that_is_no_string_is_refused(site, path, resource, error):
    body = {"username": "alice", "password": "pw", "refresh_token": "r.r.r", "resource": resource}
    response = Client().post(path, json.dumps(body), content_type="application/json")
    assert (response.status_code, response.json()["error"]) == (400, error)
