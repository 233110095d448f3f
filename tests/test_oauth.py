"""The authorization server (epochauth.oauth on django-oauth-toolkit), driven over real HTTP by
authlib's OAuth2 client against ``live_server``; the "browser" steps use Django's test client."""

from __future__ import annotations

import gc
import hashlib
import logging
from collections.abc import Callable
from datetime import timedelta
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import oauthlib
import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.base_client import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_refresh_token_model,
)

from epochauth.client import oauth as client_oauth
from epochauth.issuers import WLCG_ANY_AUDIENCE
from epochauth.models import Epoch, Identity
from epochauth.oauth.models import AllowedScopes, ensure_cli_application
from epochauth.revocation import bump_epoch
from epochauth.tokens import CLAIM_TOKEN_FAMILY
from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.helpers import ONE_WINNER, make_user, openid_provider, race
from tests.loopback_issuer import CraftedIssuer

pytestmark = pytest.mark.django_db(transaction=True)

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
SECRET = "s3cret-" * 6
REDIRECT = "http://127.0.0.1:9/callback"
Application = get_application_model()


@pytest.fixture(autouse=True)
def cli_application():
    """The data migration's client; transactional tests flush every table, so create it again."""
    ensure_cli_application(Application)


@pytest.fixture(autouse=True)
def close_client_connections():
    """authlib's OAuth2Session is a reference cycle, so its keep-alive connection outlives the test
    until a garbage collection; collect while the live server is up, not at interpreter exit, where
    the server thread still reading from that connection dies with a traceback."""
    yield
    gc.collect()


@pytest.fixture
def alice():
    return make_user("alice", groups=["physics", "operators"])


@pytest.fixture
def service(alice):
    """A confidential client-credentials application owned by alice."""
    return Application.objects.create(
        name="svc",
        client_id="svc",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=alice,
    )


@pytest.fixture
def webapp():
    return Application.objects.create(
        name="portal",
        client_id="portal",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        skip_authorization=True,
    )


def bearer(client: Client, path: str, token: str):
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def device_authorize(live_server, scope: str) -> tuple[OAuth2Session, dict]:
    session = OAuth2Session("epochauth-cli", scope=scope)
    response = session.post(
        f"{live_server.url}/o/device-authorization/",
        withhold_token=True,
        data={"client_id": "epochauth-cli", "scope": scope},
    )
    assert response.status_code == 200, response.text
    return session, response.json()


def poll(session: OAuth2Session, live_server, device_code: str) -> dict:
    """One poll as a well-behaved device would make it: after waiting the interval."""
    get_device_grant_model().objects.filter(device_code=device_code).update(
        last_checked=timezone.now() - timedelta(seconds=60)
    )
    return session.fetch_token(
        f"{live_server.url}/o/token/",
        grant_type=DEVICE_GRANT,
        device_code=device_code,
        client_id="epochauth-cli",
    )


def approve(user, user_code: str) -> None:
    browser = Client()
    browser.force_login(user)
    response = browser.post("/o/device/", {"user_code": user_code})
    assert response.status_code == 302, response.content
    response = browser.post(response["Location"], {"action": "accept"})
    assert response.status_code == 302, response.content


def device_login(live_server, user, scope: str = "reports:read") -> tuple[OAuth2Session, dict]:
    session, device = device_authorize(live_server, scope)
    approve(user, device["user_code"])
    return session, poll(session, live_server, device["device_code"])


def refresh_response(session: OAuth2Session, live_server, refresh_token: str) -> requests.Response:
    """A refresh as a raw answer, so that a refused one can be looked at."""
    return session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "epochauth-cli",
        },
    )


def rotated_family(live_server, user) -> tuple[OAuth2Session, list[dict]]:
    """One device login refreshed twice: three generations of one refresh-token family."""
    session, token = device_login(live_server, user)
    generations = [token]
    for _ in range(2):
        generations.append(
            session.refresh_token(
                f"{live_server.url}/o/token/", refresh_token=generations[-1]["refresh_token"]
            )
        )
    return session, generations


def status(token: dict) -> int:
    return bearer(Client(), "/api/reports/", token["access_token"]).status_code


def test_metadata_describes_every_endpoint_and_grant(settings, client):
    openid_provider(settings)
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        document = client.get(path).json()
        for key in (
            "authorization_endpoint",
            "token_endpoint",
            "device_authorization_endpoint",
            "revocation_endpoint",
            "introspection_endpoint",
            "jwks_uri",
        ):
            assert document[key].startswith("http"), (path, key)
        assert TOKEN_EXCHANGE in document["grant_types_supported"]
        assert DEVICE_GRANT in document["grant_types_supported"]
        assert document["code_challenge_methods_supported"] == ["S256"]
        # what a client may ask for: never a service scope
        assert "reports:read" in document["scopes_supported"]
        assert "tokenmanager" not in document["scopes_supported"]


def test_device_flow(live_server, alice, django_assert_num_queries):
    session, device = device_authorize(live_server, "reports:read g:physics")
    url = f"{live_server.url}/o/token/"
    early = session.post(
        url,
        withhold_token=True,
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    # The first poll may come at once (RFC 8628 section 3.5: the interval is between polls).
    assert early.status_code == 400 and early.json()["error"] == "authorization_pending"
    again_at_once = session.post(
        url,
        withhold_token=True,
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    assert again_at_once.status_code == 400 and again_at_once.json()["error"] == "slow_down"

    approve(alice, device["user_code"])
    token = poll(session, live_server, device["device_code"])

    access = token["access_token"]
    header = jwt.get_unverified_header(access)
    claims = claims_of(access)
    assert header["typ"] == "at+jwt" and header["kid"]
    assert claims["sub"] == str(alice.pk) and claims["client_id"] == "epochauth-cli"
    assert claims["group"] == "physics" and "group_epoch" in claims and "epoch" in claims
    assert {"iss", "aud", "exp", "iat", "jti", "scope"} <= claims.keys()
    assert token["refresh_token"]

    client = Client()
    assert bearer(client, "/api/reports/", access).status_code == 200
    with django_assert_num_queries(0):
        assert bearer(client, "/api/reports/", access).status_code == 200

    again = session.post(
        url,
        withhold_token=True,
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    assert again.status_code == 400 and again.json()["error"] in ("expired_token", "invalid_grant")


def device_poller(scope: str = "reports:read") -> tuple[dict, Callable[[], str]]:
    """A device authorization through the test client, and a poll of its code that returns the
    error of the answer (``"token"`` for a token)."""
    client = Client()

    def form(path: str, data: dict[str, str]) -> Any:
        return client.post(path, urlencode(data), content_type="application/x-www-form-urlencoded")

    response = form("/o/device-authorization/", {"client_id": "epochauth-cli", "scope": scope})
    assert response.status_code == 200, response.content
    device = response.json()

    def poll_once() -> str:
        data = {
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        }
        return form("/o/token/", data).json().get("error", "token")

    return device, poll_once


def test_device_polling_interval_runs_between_polls_and_grows_on_slow_down(clock, alice):
    """RFC 8628 section 3.5: the interval is between polls, the first may come at once; each
    ``slow_down`` adds 5 s to it, for that poll and every later one, and the server holds the
    client to it. Timed by ``epochauth.clock``, stepped here, never slept through."""
    device, poll_once = device_poller()
    interval = device["interval"]
    assert poll_once() == "authorization_pending"  # right after the device authorization
    assert poll_once() == "slow_down"  # a second poll at once: the interval is now +5 s
    clock.advance(interval + 5)
    assert poll_once() == "authorization_pending"  # a client that added the 5 s
    clock.advance(interval)
    assert poll_once() == "slow_down"  # the old interval is too fast now: +5 s more
    clock.advance(interval + 9)
    assert poll_once() == "slow_down"  # a second short of interval + 10 s: +5 s more
    clock.advance(interval + 15)
    assert poll_once() == "authorization_pending"
    approve(alice, device["user_code"])
    assert poll_once() == "token"  # once approved, a poll is answered whenever it comes


def test_our_cli_keeps_to_the_interval_the_server_holds_it_to(oauth_live_server, clock, alice):
    """Our CLI's polling (epochauth.client.oauth) against the server, on one clock: a poll of the
    same code while the CLI waits (another copy of the device, a retry) makes the CLI's first poll
    too fast; it gets slow_down, adds 5 s as the server does, and is never slowed down again."""
    http = requests.Session()
    metadata = client_oauth.fetch_metadata(oauth_live_server.url, http)
    cli = client_oauth.Client("epochauth-cli")
    device = client_oauth.start_device_flow(metadata, cli, http, "reports:read")
    token_url = metadata["token_endpoint"]
    start = clock.wall()
    answers: list[tuple[float, str]] = []

    def sleep(seconds: float) -> None:
        if clock.wall() == start:  # half-way through the CLI's first wait
            clock.advance(seconds / 2)
            other = {"grant_type": DEVICE_GRANT, "device_code": device.device_code}
            answer = requests.post(
                token_url, data={**other, "client_id": "epochauth-cli"}, timeout=10
            )
            assert answer.json()["error"] == "authorization_pending"
            seconds /= 2
        clock.advance(seconds)

    def record(response: requests.Response, *args: object, **kwargs: object) -> None:
        if response.url != token_url:
            return
        answers.append((clock.wall() - start, response.json().get("error", "token")))
        if len(answers) == 2:  # the user approves once the CLI waits again after slow_down
            approve(alice, device.user_code)

    http.hooks["response"].append(record)
    token = client_oauth.poll_device_token(
        metadata, cli, http, device, sleep=sleep, clock=clock.wall
    )
    interval = device.interval
    assert answers == [
        (interval, "slow_down"),
        (2 * interval + 5, "authorization_pending"),
        (3 * interval + 10, "token"),
    ]
    assert bearer(Client(), "/api/reports/", token["access_token"]).status_code == 200


def test_no_application_may_take_the_first_party_client_id(live_server, alice):
    """``FIRST_PARTY_CLIENT_ID`` names the tokens of our own login, which may revoke: an application
    of that client id (an admin's slip, a registration) gets no token that could pass for one."""
    alice.is_superuser = True
    alice.save()
    Application.objects.create(
        name="impostor",
        client_id="epochauth",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=alice,
    )
    response = requests.post(
        f"{live_server.url}/o/token/",
        data={"grant_type": "client_credentials"},
        auth=("epochauth", SECRET),
        timeout=10,
    )
    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")


def test_device_flow_group_scope_needs_membership(live_server, alice):
    Group.objects.create(name="chemistry")
    session, device = device_authorize(live_server, "g:chemistry")
    approve(alice, device["user_code"])
    get_device_grant_model().objects.update(last_checked=timezone.now() - timedelta(seconds=60))
    response = session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_the_public_cli_cannot_start_a_device_flow_for_a_service_scope(live_server):
    """Even when its allowed scopes list one: only a confidential application's client-credentials
    grant obtains a service scope."""
    AllowedScopes.objects.create(
        application=Application.objects.get(client_id="epochauth-cli"),
        scopes="reports:read tokenmanager",
    )
    for scope in ("tokenmanager", "reports:read tokenmanager"):
        response = requests.post(
            f"{live_server.url}/o/device-authorization/",
            data={"client_id": "epochauth-cli", "scope": scope},
            timeout=10,
        )
        assert response.status_code == 400 and response.json()["error"] == "invalid_scope"
    assert not get_device_grant_model().objects.exists()


def test_expired_device_code(live_server):
    session, device = device_authorize(live_server, "reports:read")
    get_device_grant_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    response = session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data={
            "grant_type": DEVICE_GRANT,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    assert response.status_code == 400 and response.json()["error"] == "expired_token"


def authorization_request(live_server, user, scope: str) -> tuple[OAuth2Session, str, Client, str]:
    """The portal's PKCE authorization request, opened by ``user``'s browser: (session, code verifier,
    browser, request path)."""
    session = OAuth2Session(
        "portal", SECRET, scope=scope, redirect_uri=REDIRECT, code_challenge_method="S256"
    )
    verifier = generate_token(48)
    url, _ = session.create_authorization_url(
        f"{live_server.url}/o/authorize/", code_verifier=verifier
    )
    browser = Client()
    browser.force_login(user)
    return session, verifier, browser, url.removeprefix(live_server.url)


def code_exchange(callback: str, verifier: str) -> dict[str, str]:
    """The token request's form for the code in the ``callback`` URL (sent again: a replay)."""
    code = parse_qs(urlsplit(callback).query)["code"][0]
    return {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }


def test_authorization_code_with_pkce(live_server, alice, webapp):
    session, verifier, browser, path = authorization_request(live_server, alice, "reports:read")
    response = browser.get(path)
    assert response.status_code == 302, response.content
    callback = response["Location"]
    assert callback.startswith(REDIRECT) and "code" in parse_qs(urlsplit(callback).query)

    token = session.fetch_token(
        f"{live_server.url}/o/token/", authorization_response=callback, code_verifier=verifier
    )
    assert claims_of(token["access_token"])["client_id"] == "portal"
    assert bearer(Client(), "/api/reports/", token["access_token"]).status_code == 200

    reused = session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data=code_exchange(callback, verifier),
        auth=("portal", SECRET),
    )
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("consent", [True, False])
def test_authorization_code_selects_a_group(live_server, alice, webapp, consent):
    webapp.skip_authorization = not consent
    webapp.save()
    session, verifier, browser, path = authorization_request(
        live_server, alice, "reports:read g:physics"
    )
    response = browser.get(path)
    if consent:
        assert (
            response.status_code == 200 and "Act as member of physics" in response.content.decode()
        )
        form = {k: v for k, v in response.context["form"].initial.items() if v is not None}
        response = browser.post(path, {**form, "allow": "Authorize"})
    assert response.status_code == 302, response.content
    token = session.fetch_token(
        f"{live_server.url}/o/token/",
        authorization_response=response["Location"],
        code_verifier=verifier,
    )
    assert claims_of(token["access_token"])["group"] == "physics"


def test_no_authorization_code_for_a_service_scope(live_server, alice, webapp):
    """Not even for a confidential application whose allowed scopes list it (a Token Manager
    service): a user's consent cannot give what only the service's own grant may hold."""
    AllowedScopes.objects.create(application=webapp, scopes="reports:read tokenmanager")
    _, _, browser, path = authorization_request(live_server, alice, "reports:read tokenmanager")
    response = browser.get(path)
    assert response.status_code == 302, response.content
    answer = parse_qs(urlsplit(response["Location"]).query)
    assert answer["error"] == ["invalid_scope"] and "code" not in answer


def test_a_refresh_token_carries_no_scope_that_became_a_service_scope(
    live_server, alice, settings
):
    session, token = device_login(live_server, alice)
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SCOPES": {},
        "SERVICE_SCOPES": {"reports:read": "Read the example reports"},
    }
    response = refresh_response(session, live_server, token["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


def test_a_replayed_authorization_code_ends_the_tokens_it_gave(live_server, alice, webapp):
    """RFC 6749 section 4.1.2: a code used twice is refused, and what it was exchanged for revoked,
    also the tokens of later rotations."""
    session, verifier, browser, path = authorization_request(live_server, alice, "reports:read")
    callback = browser.get(path)["Location"]
    url = f"{live_server.url}/o/token/"
    first = session.fetch_token(url, authorization_response=callback, code_verifier=verifier)
    assert status(first) == 200
    second = session.refresh_token(url, refresh_token=first["refresh_token"])

    replay = requests.post(
        url, data=code_exchange(callback, verifier), auth=("portal", SECRET), timeout=10
    )
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert [status(first), status(second)] == [401, 401]
    with pytest.raises(OAuthError, match="invalid_grant"):
        session.refresh_token(url, refresh_token=second["refresh_token"])


def test_client_credentials_act_as_the_owner(live_server, alice, service):
    session = OAuth2Session("svc", SECRET, scope="reports:read g:operators")
    token = session.fetch_token(f"{live_server.url}/o/token/", grant_type="client_credentials")
    claims = claims_of(token["access_token"])
    assert (
        claims["sub"] == str(alice.pk)
        and claims["client_id"] == "svc"
        and claims["group"] == "operators"
    )
    client = Client()
    assert bearer(client, "/api/staff-area/", token["access_token"]).status_code == 200

    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert bearer(client, "/api/reports/", token["access_token"]).status_code == 401


@pytest.mark.parametrize(
    ("profile", "audience"), [(None, "http://127.0.0.1:8000"), ("wlcg", WLCG_ANY_AUDIENCE)]
)
def test_every_token_of_ours_has_one_default_audience(
    live_server, service, settings, profile, audience
):
    """Without AUDIENCE, the OAuth server's tokens and our login's name the same aud: ISSUER, or in
    the WLCG profile its any-audience (the profile requires aud; a storage service takes that one)."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_PROFILE": profile}
    session = OAuth2Session("svc", SECRET)
    token = session.fetch_token(f"{live_server.url}/o/token/", grant_type="client_credentials")
    login = Client().post(
        "/auth/token/", {"username": "alice", "password": "pw"}, content_type="application/json"
    )
    assert claims_of(token["access_token"])["aud"] == audience
    assert claims_of(login.json()["access_token"])["aud"] == audience


def test_allowed_scopes_limit_an_application(live_server, service):
    AllowedScopes.objects.create(application=service, scopes="g:*")
    session = OAuth2Session("svc", SECRET, scope="reports:read")
    response = session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data={"grant_type": "client_credentials", "scope": "reports:read"},
        auth=("svc", SECRET),
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("allowed", [None, "reports:read g:*"], ids=["no row", "not listed"])
def test_client_credentials_get_a_service_scope_only_when_the_application_lists_it(
    live_server, service, allowed
):
    """A confidential application without its allowed scopes naming the service scope is no
    service: an application without a row gets every user scope, never a service scope."""
    if allowed is not None:
        AllowedScopes.objects.create(application=service, scopes=allowed)

    def ask(scope: str) -> requests.Response:
        return requests.post(
            f"{live_server.url}/o/token/",
            data={"grant_type": "client_credentials", "scope": scope},
            auth=("svc", SECRET),
            timeout=10,
        )

    for scope in ("tokenmanager", "reports:read tokenmanager"):
        refused = ask(scope)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    assert ask("reports:read").status_code == 200
    AllowedScopes.objects.update_or_create(
        application=service, defaults={"scopes": "reports:read tokenmanager"}
    )
    granted = ask("reports:read tokenmanager")
    assert granted.status_code == 200 and granted.json()["scope"] == "reports:read tokenmanager"


def test_refresh_rotates_and_epoch_bump_ends_it(live_server, alice):
    session, token = device_login(live_server, alice)
    first_refresh = token["refresh_token"]
    new = session.refresh_token(f"{live_server.url}/o/token/", refresh_token=first_refresh)
    assert new["refresh_token"] != first_refresh
    assert bearer(Client(), "/api/reports/", new["access_token"]).status_code == 200

    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert bearer(Client(), "/api/reports/", new["access_token"]).status_code == 401
    response = refresh_response(session, live_server, new["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_group_epoch_ends_refresh(live_server, alice):
    session, token = device_login(live_server, alice, "g:physics")
    bump_epoch(Epoch.Kind.GROUP, str(Group.objects.get(name="physics").pk))
    response = refresh_response(session, live_server, token["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


def test_refresh_token_reuse_is_refused(live_server, alice):
    session, token = device_login(live_server, alice)
    session.refresh_token(f"{live_server.url}/o/token/", refresh_token=token["refresh_token"])
    response = refresh_response(session, live_server, token["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


STORAGE = "https://storage.example.org"


def grant_request(grant: str, live_server, alice, webapp) -> tuple[dict, Any, Callable[[], None]]:
    """A valid token request of ``grant`` at ``/o/token/``: (form, client auth, make it sendable)."""
    if grant == "authorization_code":
        _, verifier, browser, path = authorization_request(live_server, alice, "reports:read")
        return (
            code_exchange(browser.get(path)["Location"], verifier),
            ("portal", SECRET),
            lambda: None,
        )
    if grant == DEVICE_GRANT:
        _, device = device_authorize(live_server, "reports:read")
        approve(alice, device["user_code"])

        def waited() -> None:  # a well-behaved device polls after the interval
            get_device_grant_model().objects.filter(device_code=device["device_code"]).update(
                last_checked=timezone.now() - timedelta(seconds=60)
            )

        form = {"grant_type": grant, "device_code": device["device_code"]}
        return {**form, "client_id": "epochauth-cli"}, None, waited
    _, token = device_login(live_server, alice)
    form = {"grant_type": grant, "refresh_token": token["refresh_token"]}
    return {**form, "client_id": "epochauth-cli"}, None, lambda: None


@pytest.mark.parametrize("grant", ["authorization_code", DEVICE_GRANT, "refresh_token"])
def test_grants_that_keep_no_audience_refuse_a_resource(
    live_server, alice, webapp, settings, grant
):
    """RFC 8707 at ``/o/token/`` narrows client credentials only: DOT's code, device and refresh
    rows keep no audience, so a refresh could widen one (section 2.2). A served resource is refused
    with ``invalid_target``, and the grant, not consumed, still gives a token without it."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "RESOURCES": [STORAGE]}
    form, auth, ready = grant_request(grant, live_server, alice, webapp)
    url = f"{live_server.url}/o/token/"
    ready()
    refused = requests.post(url, data={**form, "resource": STORAGE}, auth=auth, timeout=10)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "error": "invalid_target",
        "error_description": "This grant takes no resource here",
    }
    ready()
    granted = requests.post(url, data=form, auth=auth, timeout=10)
    assert granted.status_code == 200, granted.text


@pytest.fixture
def grace(settings) -> timedelta:
    """``EPOCHAUTH["REFRESH_TOKEN_GRACE_PERIOD"]`` covers ``/o/token/`` refreshes too (DOT's own stays 0)."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "REFRESH_TOKEN_GRACE_PERIOD": timedelta(days=1)}
    return timedelta(days=1)


def refreshed(session: OAuth2Session, live_server, refresh_token: str) -> dict:
    response = refresh_response(session, live_server, refresh_token)
    assert response.status_code == 200, response.content
    return response.json()


def test_within_the_grace_period_a_replaced_refresh_token_rotates_once_more(
    live_server, alice, grace
):
    """As for login sessions: the retry gets a new pair of the same family, and the first use's refresh
    token stops (a single live chain): its use is a reuse, which ends the family."""
    session, token = device_login(live_server, alice)
    lost = refreshed(session, live_server, token["refresh_token"])
    retried = refreshed(session, live_server, token["refresh_token"])
    assert retried["refresh_token"] not in (token["refresh_token"], lost["refresh_token"])
    assert retried["access_token"] != lost["access_token"]
    family = {claims_of(t["access_token"])[CLAIM_TOKEN_FAMILY] for t in (token, lost, retried)}
    assert len(family) == 1 and status(retried) == 200
    following = refreshed(session, live_server, retried["refresh_token"])
    assert status(following) == 200

    reuse = refresh_response(session, live_server, lost["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert [status(t) for t in (token, lost, retried, following)] == [401] * 4
    ended = refresh_response(session, live_server, following["refresh_token"])
    assert ended.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("case", ["a second retry", "after the grace period", "an older token"])
def test_beyond_the_one_retry_a_replaced_refresh_token_ends_the_family(
    live_server, alice, grace, case
):
    session, token = device_login(live_server, alice)
    live = refreshed(session, live_server, token["refresh_token"])
    if case == "a second retry":
        live = refreshed(session, live_server, token["refresh_token"])
    elif case == "after the grace period":
        get_refresh_token_model().objects.filter(revoked__isnull=False).update(
            revoked=timezone.now() - grace - timedelta(seconds=1)
        )
    else:
        live = refreshed(session, live_server, live["refresh_token"])
    reuse = refresh_response(session, live_server, token["refresh_token"])
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert status(live) == 401
    ended = refresh_response(session, live_server, live["refresh_token"])
    assert ended.json()["error"] == "invalid_grant"


@pytest.mark.postgres
def test_simultaneous_retries_in_the_grace_period_mint_no_two_live_chains(
    live_server, alice, grace
):
    """Retries of one replaced refresh token at once: its rows' lock lets one rotate; the others find
    its one retry spent, a reuse, which ends the family, the winner's new tokens with it."""
    session, token = device_login(live_server, alice)
    first = refreshed(session, live_server, token["refresh_token"])
    answers, won = race(
        lambda: refresh_response(
            OAuth2Session("epochauth-cli"), live_server, token["refresh_token"]
        )
    )
    assert answers == ONE_WINNER
    assert [status(first), status(won[0])] == [401, 401]
    for pair in (first, won[0]):
        ended = refresh_response(session, live_server, pair["refresh_token"])
        assert ended.json()["error"] == "invalid_grant"


@pytest.mark.postgres
def test_concurrent_refreshes_of_one_token_one_wins(live_server, alice):
    """Refreshes racing on one refresh token: one rotates it, every other one is a reuse (no 500),
    which ends the family as a reuse after the race would: the winner's tokens too."""
    _, token = device_login(live_server, alice)
    answers, won = race(
        lambda: refresh_response(
            OAuth2Session("epochauth-cli"), live_server, token["refresh_token"]
        )
    )
    assert answers == ONE_WINNER
    assert status(won[0]) == 401


@pytest.mark.postgres
def test_concurrent_exchanges_of_one_code_one_wins_and_the_replays_end_its_tokens(
    live_server, alice, webapp
):
    """A code sent ten times at once is exchanged once; the other nine are replays, which end the
    tokens the one exchange gave (RFC 6749 section 4.1.2), as a replay after it would."""
    _, verifier, browser, path = authorization_request(live_server, alice, "reports:read")
    form = code_exchange(browser.get(path)["Location"], verifier)
    url = f"{live_server.url}/o/token/"
    answers, won = race(lambda: requests.post(url, data=form, auth=("portal", SECRET), timeout=30))
    assert answers == ONE_WINNER
    assert status(won[0]) == 401


def test_access_tokens_carry_their_refresh_token_family(live_server, alice, service):
    _, generations = rotated_family(live_server, alice)
    family = (
        get_refresh_token_model().objects.values_list("token_family", flat=True).distinct().get()
    )
    assert {claims_of(t["access_token"])[CLAIM_TOKEN_FAMILY] for t in generations} == {family.hex}
    assert [status(t) for t in generations] == [
        200,
        200,
        200,
    ]  # a refresh leaves earlier ones alone
    session = OAuth2Session("svc", SECRET, scope="reports:read")
    token = session.fetch_token(f"{live_server.url}/o/token/", grant_type="client_credentials")
    assert CLAIM_TOKEN_FAMILY not in claims_of(
        token["access_token"]
    )  # no refresh token, no family


def test_refresh_token_reuse_denies_every_access_token_of_the_family(live_server, alice):
    session, generations = rotated_family(live_server, alice)
    _, other_login = device_login(live_server, alice)

    replay = refresh_response(session, live_server, generations[0]["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # Every access token of the family, also those whose DOT rows rotation had deleted.
    assert [status(t) for t in generations] == [401, 401, 401]
    assert refresh_response(session, live_server, generations[-1]["refresh_token"]).json()[
        "error"
    ] == ("invalid_grant")
    assert status(other_login) == 200  # another family of the same user


@pytest.mark.parametrize("revoked", ["refresh_token", "access_token"])
def test_revoking_the_live_pair_ends_the_family(live_server, alice, revoked):
    """RFC 7009: DOT revokes the live refresh token with either token of the pair; the family ends."""
    session, generations = rotated_family(live_server, alice)
    url = f"{live_server.url}/o/revoke_token/"
    session.revoke_token(url, generations[0]["refresh_token"], token_type_hint="refresh_token")
    assert [status(t) for t in generations] == [
        200,
        200,
        200,
    ]  # a rotated-away token: nothing changes

    session.revoke_token(url, generations[-1][revoked], token_type_hint=revoked)
    assert [status(t) for t in generations] == [401, 401, 401]
    assert refresh_response(session, live_server, generations[-1]["refresh_token"]).json()[
        "error"
    ] == ("invalid_grant")


def test_revoke_access_token_works_at_once(live_server, alice):
    session, token = device_login(live_server, alice)
    client = Client()
    assert bearer(client, "/api/reports/", token["access_token"]).status_code == 200
    session.revoke_token(
        f"{live_server.url}/o/revoke_token/", token["access_token"], token_type_hint="access_token"
    )
    assert bearer(client, "/api/reports/", token["access_token"]).status_code == 401
    response = refresh_response(session, live_server, token["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


def test_rows_are_found_by_their_jwt_when_a_save_derives_the_checksum_twice(
    live_server, alice, monkeypatch
):
    """Django 6 asks each field's ``pre_save`` twice on insert; DOT's checksum field would then hash
    the ``jti`` the row holds. Done here on any Django: every row must still be found by its JWT."""
    field = type(get_access_token_model()._meta.get_field("token_checksum"))
    once = field.pre_save
    monkeypatch.setattr(
        field,
        "pre_save",
        lambda self, instance, add: once(self, instance, add) and once(self, instance, add),
    )
    session, token = device_login(
        live_server, alice
    )  # DOT's token view looks the row up by the JWT
    row = get_access_token_model().objects.get()
    assert row.token == claims_of(token["access_token"])["jti"]
    assert row.token_checksum == hashlib.sha256(token["access_token"].encode()).hexdigest()
    session.revoke_token(
        f"{live_server.url}/o/revoke_token/", token["access_token"], token_type_hint="access_token"
    )
    assert status(token) == 401


def test_revoke_refresh_token(live_server, alice):
    session, token = device_login(live_server, alice)
    session.revoke_token(
        f"{live_server.url}/o/revoke_token/",
        token["refresh_token"],
        token_type_hint="refresh_token",
    )
    response = refresh_response(session, live_server, token["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    assert bearer(Client(), "/api/reports/", token["access_token"]).status_code == 401


def test_introspection(live_server, alice, service):
    _, token = device_login(live_server, alice)
    introspector = OAuth2Session("svc", SECRET)
    url = f"{live_server.url}/o/introspect/"
    answer = introspector.introspect_token(url, token["access_token"]).json()
    assert (
        answer["active"] is True
        and answer["sub"] == str(alice.pk)
        and answer["client_id"] == "epochauth-cli"
    )

    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert introspector.introspect_token(url, token["access_token"]).json() == {"active": False}
    assert introspector.introspect_token(url, "not-a-token").json() == {"active": False}
    assert (
        OAuth2Session("svc", "wrong").introspect_token(url, token["access_token"]).status_code
        == 401
    )
    public = requests.post(
        url, data={"client_id": "epochauth-cli", "token": token["access_token"]}, timeout=10
    )
    assert public.status_code == 401  # a public client cannot authenticate


@pytest.mark.parametrize("oauthlib_debug", [False, True])
def test_no_secret_reaches_the_logs(
    live_server, alice, service, webapp, caplog, monkeypatch, oauthlib_debug
):
    """oauthlib writes whole token responses at DEBUG; none of a flow's secrets may reach a record,
    also when oauthlib's debug mode shows the requests it logs (bodies, headers)."""
    monkeypatch.setattr(oauthlib, "_DEBUG", oauthlib_debug)  # oauthlib.set_debug() sets it
    for name in (None, "oauthlib", "oauth2_provider", "epochauth"):
        caplog.set_level(logging.DEBUG, logger=name)
    url = f"{live_server.url}/o/token/"
    service_token = OAuth2Session("svc", SECRET, scope="reports:read").fetch_token(
        url, grant_type="client_credentials"
    )
    session, verifier, browser, path = authorization_request(live_server, alice, "reports:read")
    callback = browser.get(path)["Location"]
    code_token = session.fetch_token(url, authorization_response=callback, code_verifier=verifier)
    refreshed = session.refresh_token(url, refresh_token=code_token["refresh_token"])
    device_session, device = device_authorize(live_server, "reports:read")
    approve(alice, device["user_code"])
    device_token = poll(device_session, live_server, device["device_code"])
    introspected = OAuth2Session("svc", SECRET).introspect_token(
        f"{live_server.url}/o/introspect/", refreshed["access_token"]
    )
    assert introspected.json()["active"] is True
    session.revoke_token(
        f"{live_server.url}/o/revoke_token/",
        refreshed["refresh_token"],
        token_type_hint="refresh_token",
    )

    secrets = {
        "client secret": SECRET,
        "code verifier": verifier,
        "authorization code": parse_qs(urlsplit(callback).query)["code"][0],
        "device code": device["device_code"],
        "user code": device["user_code"],
    }
    for flow, token in [
        ("client credentials", service_token),
        ("code", code_token),
        ("refresh", refreshed),
        ("device", device_token),
    ]:
        secrets[f"{flow} access token"] = token["access_token"]
        if "refresh_token" in token:
            secrets[f"{flow} refresh token"] = token["refresh_token"]
    assert {r.name.split(".")[0] for r in caplog.records} >= {"oauthlib", "oauth2_provider"}
    assert [name for name, secret in secrets.items() if secret in caplog.text] == []


@pytest.mark.parametrize(
    "data, error",
    [
        ({"grant_type": "client_credentials"}, "invalid_client"),
        ({"grant_type": "urn:example:unknown"}, "unsupported_grant_type"),
        ({"grant_type": DEVICE_GRANT, "client_id": "epochauth-cli"}, "invalid_request"),
        (
            {"grant_type": DEVICE_GRANT, "client_id": "epochauth-cli", "device_code": "nope"},
            "invalid_grant",
        ),
        ({"grant_type": TOKEN_EXCHANGE}, "invalid_request"),
    ],
)
def test_bad_input_is_an_oauth_error(live_server, service, data, error):
    """Plain requests here: a client library would refuse to send most of these."""
    wrong = data["grant_type"] == "client_credentials"
    auth = None if "client_id" in data else ("svc", "wrong-secret" if wrong else SECRET)
    response = requests.post(f"{live_server.url}/o/token/", data=data, auth=auth, timeout=10)
    assert 400 <= response.status_code < 500 and response.json()["error"] == error, response.text


@pytest.mark.parametrize(
    "entry",
    [
        {},  # accepted as a bearer token elsewhere
        {"required_scopes": ["absent"]},  # would be insufficient_scope
        {"auto_provision": False},  # would be identity_not_registered
    ],
)
def test_introspection_says_nothing_of_external_tokens(live_server, idp, service, settings, entry):
    """RFC 7662 here describes our tokens; an external one is neither verified nor provisioned."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer, **entry}]}
    introspector = OAuth2Session("svc", SECRET)
    users = get_user_model().objects.count()
    for token in (idp.user_token("zed"), idp.client_credentials_token()):
        answer = introspector.introspect_token(f"{live_server.url}/o/introspect/", token)
        assert answer.status_code == 200 and answer.json() == {"active": False}
    assert get_user_model().objects.count() == users and not Identity.objects.exists()


def test_token_exchange(live_server, idp, service, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer}]}
    subject_token = idp.user_token("carol")
    session = OAuth2Session("svc", SECRET)
    token = session.fetch_token(
        f"{live_server.url}/o/token/",
        grant_type=TOKEN_EXCHANGE,
        subject_token=subject_token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="reports:read nonsense:scope",
    )
    assert token["issued_token_type"] == ACCESS_TOKEN_TYPE and token["scope"] == "reports:read"
    claims = claims_of(token["access_token"])
    subject_expires = claims_of(subject_token)[
        "exp"
    ]  # the IdP's tokens live 10 min, ours 15 by default
    assert (
        claims["exp"] <= subject_expires and token["expires_in"] <= subject_expires - claims["iat"]
    )
    assert claims["client_id"] == "svc" and claims["preferred_username"] == "carol"
    assert bearer(Client(), "/api/reports/", token["access_token"]).status_code == 200

    bad = session.post(
        f"{live_server.url}/o/token/",
        withhold_token=True,
        data={
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": "x.y.z",
            "subject_token_type": ACCESS_TOKEN_TYPE,
        },
        auth=("svc", SECRET),
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"


def test_token_exchange_grants_no_service_scope(live_server, service, settings):
    """An external token's scope is its issuer's word: carried, a service scope is dropped like any
    scope not ours; asked for, it is refused. Even a Token Manager service application gets none
    this way."""
    AllowedScopes.objects.create(application=service, scopes="reports:read tokenmanager")
    issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": issuer.issuer}]}

        def exchange(**extra: str) -> requests.Response:
            data = {
                "grant_type": TOKEN_EXCHANGE,
                "subject_token": issuer.token(sub="mallory", scope="tokenmanager reports:read"),
                "subject_token_type": ACCESS_TOKEN_TYPE,
            }
            return requests.post(
                f"{live_server.url}/o/token/",
                data={**data, **extra},
                auth=("svc", SECRET),
                timeout=10,
            )

        carried = exchange()
        assert carried.status_code == 200 and carried.json()["scope"] == "reports:read"
        assert claims_of(carried.json()["access_token"])["scope"] == "reports:read"
        for scope in ("tokenmanager", "reports:read tokenmanager"):
            asked = exchange(scope=scope)
            assert asked.status_code == 400 and asked.json()["error"] == "invalid_scope"
    finally:
        issuer.stop()


EXCHANGE_ERRORS = {
    "no subject_token": ({"subject_token": None}, 400, "invalid_request"),
    "no subject_token_type": ({"subject_token_type": None}, 400, "invalid_request"),
    # RFC 8693 section 2.2.2: a subject_token_type we do not take is invalid_request;
    # unsupported_token_type is RFC 7009's, for revocation.
    "an ID token": (
        {"subject_token_type": "urn:ietf:params:oauth:token-type:id_token"},
        400,
        "invalid_request",
    ),
    "a SAML assertion": (
        {"subject_token_type": "urn:ietf:params:oauth:token-type:saml2"},
        400,
        "invalid_request",
    ),
    "delegation": (
        {"actor_token": "a.b.c", "actor_token_type": ACCESS_TOKEN_TYPE},
        400,
        "invalid_request",
    ),
    "a refresh token wanted": (
        {"requested_token_type": "urn:ietf:params:oauth:token-type:refresh_token"},
        400,
        "invalid_request",
    ),
    "wrong client secret": ({"client_secret": "wrong"}, 401, "invalid_client"),
    "one of our own tokens": ({"subject_token": "ours"}, 400, "invalid_request"),
    "the issuer's required scope missing": (
        {"required_scopes": ["absent"]},
        400,
        "invalid_request",
    ),
    "identity not registered": ({"auto_provision": False}, 400, "invalid_request"),
}


@pytest.mark.parametrize("case", list(EXCHANGE_ERRORS))
def test_token_exchange_refusals_are_oauth_errors(
    live_server, idp, service, alice, settings, case
):
    change, status, error = EXCHANGE_ERRORS[case]
    entry = {k: change.pop(k) for k in ("required_scopes", "auto_provision") if k in change}
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer, **entry}]}
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": idp.user_token("carol"),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "client_id": "svc",
        "client_secret": SECRET,
    }
    if change.get("subject_token") == "ours":
        change["subject_token"] = device_login(live_server, alice)[1]["access_token"]
    data = {k: v for k, v in {**data, **change}.items() if v is not None}
    response = requests.post(f"{live_server.url}/o/token/", data=data, timeout=10)
    assert (response.status_code, response.json()["error"]) == (status, error), response.text
    assert "access_token" not in response.json()


# ISSUER of the test project: the aud of its tokens without AUDIENCE.
OURS = "http://127.0.0.1:8000"

#: (the audience and resource parameters, repeated as given, whether the exchange may go ahead)
EXCHANGE_TARGETS = {
    "our audience": ([("audience", OURS)], True),
    "a resource of ours": ([("resource", f"{OURS}/api/reports/?page=2")], True),
    "our audience and resources, repeated": (
        [("audience", OURS), ("resource", OURS), ("resource", f"{OURS}/api/")],
        True,
    ),
    "another audience": ([("audience", "https://evil.example")], False),
    "another resource": ([("resource", "https://evil.example/api/")], False),
    "another port": ([("resource", "http://127.0.0.1:8001/api/")], False),
    "a look-alike host": ([("resource", "http://127.0.0.1:8000.evil.example/")], False),
    "another audience after ours": (
        [("audience", OURS), ("audience", "https://evil.example")],
        False,
    ),
    "another audience before ours": (
        [("audience", "https://evil.example"), ("audience", OURS)],
        False,
    ),
    "another resource among ours": (
        [("resource", f"{OURS}/api/"), ("resource", "https://evil.example/")],
        False,
    ),
    "a relative resource": ([("resource", "/api/")], False),
    "a resource with a fragment": ([("resource", f"{OURS}/api/#top")], False),
}


@pytest.mark.parametrize("case", list(EXCHANGE_TARGETS))
def test_token_exchange_issues_tokens_for_us_only(live_server, idp, service, settings, case):
    """RFC 8693 section 2.2.2: a target the token would not be good for is ``invalid_target``."""
    targets, allowed = EXCHANGE_TARGETS[case]
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": idp.issuer}]}
    data = [
        ("grant_type", TOKEN_EXCHANGE),
        ("subject_token", idp.user_token("carol")),
        ("subject_token_type", ACCESS_TOKEN_TYPE),
        *targets,
    ]
    response = requests.post(
        f"{live_server.url}/o/token/", data=data, auth=("svc", SECRET), timeout=10
    )
    if allowed:
        assert response.status_code == 200, response.text
        assert claims_of(response.json()["access_token"])["aud"] == OURS
    else:
        assert (response.status_code, response.json()["error"]) == (400, "invalid_target")


@pytest.mark.parametrize(
    "target, allowed",
    [
        (("audience", "https://api.example.org"), True),
        (("resource", "https://api.example.org/v1/"), True),
        (("resource", f"{OURS}/api/"), True),  # still this site's
        (("audience", OURS), False),  # not the aud our tokens carry
    ],
)
def test_token_exchange_targets_with_an_audience(
    live_server, idp, service, settings, target, allowed
):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "AUDIENCE": "https://api.example.org",
        "ISSUERS": [{"issuer": idp.issuer}],
    }
    data = {
        "grant_type": TOKEN_EXCHANGE,
        "subject_token": idp.user_token("carol"),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        target[0]: target[1],
    }
    response = requests.post(
        f"{live_server.url}/o/token/", data=data, auth=("svc", SECRET), timeout=10
    )
    assert response.status_code == (200 if allowed else 400), response.text
    if allowed:
        assert claims_of(response.json()["access_token"])["aud"] == "https://api.example.org"


@pytest.fixture
def admin_browser() -> Client:
    root = make_user("root")
    root.is_staff = root.is_superuser = True
    root.save()
    browser = Client()
    browser.force_login(root)
    return browser


@pytest.mark.parametrize("model", ["refreshtoken", "accesstoken"])
def test_admin_revoke_ends_the_family(live_server, alice, admin_browser, model):
    _, generations = rotated_family(live_server, alice)
    token = generations[-1]
    changelist = admin_browser.get(f"/admin/oauth2_provider/{model}/")
    assert changelist.status_code == 200
    assert token["refresh_token"] not in changelist.content.decode()
    assert token["access_token"] not in changelist.content.decode()
    rows = list(changelist.context["cl"].queryset.values_list("pk", flat=True))
    response = admin_browser.post(
        f"/admin/oauth2_provider/{model}/", {"action": "revoke_tokens", "_selected_action": rows}
    )
    assert response.status_code == 302
    assert [status(t) for t in generations] == [401, 401, 401]


def confirm_delete(browser: Client, change_url: str):
    return browser.post(f"{change_url}delete/", {"post": "yes"})


def test_admin_cannot_delete_rows_behind_live_jwts(live_server, alice, admin_browser):
    """Deleting would not deny the JWTs; DOT's admin allows revoking instead, which does."""
    device_login(live_server, alice)
    for model in ("accesstoken", "refreshtoken"):
        changelist = admin_browser.get(f"/admin/oauth2_provider/{model}/")
        assert "delete_selected" not in dict(
            changelist.context["action_form"].fields["action"].choices
        )
        row = changelist.context["cl"].queryset.get()
        assert (
            confirm_delete(admin_browser, f"/admin/oauth2_provider/{model}/{row.pk}/").status_code
            == 403
        )
    cli = Application.objects.get(client_id="epochauth-cli")
    assert (
        confirm_delete(admin_browser, f"/admin/oauth2_provider/application/{cli.pk}/").status_code
        == 403
    )
    assert Application.objects.filter(pk=cli.pk).exists()


def test_admin_shows_access_token_rows_read_only(live_server, alice, admin_browser):
    """Editing would change nothing of the JWT, but lose the checksum that finds its row."""
    _, token = device_login(live_server, alice)
    row = get_access_token_model().objects.get()
    page = admin_browser.get(f"/admin/oauth2_provider/accesstoken/{row.pk}/change/")
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    later = {"expires_0": "2099-01-01", "expires_1": "00:00:00", "user": alice.pk, "scope": "x"}
    assert (
        admin_browser.post(
            f"/admin/oauth2_provider/accesstoken/{row.pk}/change/", later
        ).status_code
        == 403
    )
    row.refresh_from_db()
    assert row.token_checksum == hashlib.sha256(token["access_token"].encode()).hexdigest()


def test_purge_clears_expired_oauth_rows(live_server, alice):
    device_authorize(live_server, "reports:read")
    device_login(live_server, alice)
    get_access_token_model().objects.update(expires=timezone.now() - timedelta(days=400))
    get_refresh_token_model().objects.update(revoked=timezone.now() - timedelta(days=400))
    get_device_grant_model().objects.update(expires=timezone.now() - timedelta(seconds=1))
    call_command("epochauth_purge", stdout=StringIO())
    assert not get_access_token_model().objects.exists()
    assert not get_refresh_token_model().objects.exists()
    assert not get_device_grant_model().objects.exists()
