"""Browser login (epochauth.oidc) against the real test OpenID provider, driven with the test client.

The shared provider's ``web-client`` accepts http://127.0.0.1:8000/oidc/callback/ as redirect URI, so
the test client poses as that host; the provider's login and consent forms are filled over HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import django
import pytest
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import SESSION_KEY, get_user_model
from django.core import mail
from django.test import Client

from epochauth.issuers import jwks_cache
from epochauth.models import AuditEvent, Epoch, Identity
from epochauth.oidc.providers import provider_by_slug
from epochauth.revocation import bump_epoch
from tests.idp import TestIdP, sign_in_at_provider
from tests.loopback_issuer import CraftedIssuer, compact, key

pytestmark = pytest.mark.django_db

HOST = "127.0.0.1:8000"
CALLBACK = f"http://{HOST}/oidc/callback/"
SECRET_ENV = "EPOCHAUTH_TEST_WEB_SECRET"


def provider_entry(idp: TestIdP, **overrides: Any) -> dict[str, Any]:
    return {
        "issuer": idp.issuer,
        "slug": "test-idp",
        "display_name": "Test IdP",
        "client_id": idp.WEB_CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        **overrides,
    }


def configure(settings: Any, *entries: dict[str, Any], **extra: Any) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": list(entries),
        **extra,
    }


@pytest.fixture
def provider(idp: TestIdP, settings: Any, monkeypatch: pytest.MonkeyPatch) -> TestIdP:
    """The shared provider as login provider "test-idp", plus a second one that is never contacted."""
    idp.up()
    monkeypatch.setenv(SECRET_ENV, idp.WEB_CLIENT_SECRET)
    other = {
        "issuer": "https://login.example.org",
        "slug": "example",
        "display_name": "Example Login",
    }
    configure(settings, provider_entry(idp), {**other, "client_id": "app"})
    # Django 6 takes plain addresses (and deprecates the pairs that 5.2 needs).
    settings.ADMINS = (
        ["admin@example.test"] if django.VERSION >= (6,) else [("Admin", "admin@example.test")]
    )
    yield idp
    idp.up()


@pytest.fixture
def browser() -> Client:
    return Client(HTTP_HOST=HOST)


def authorize(url: str, username: str, callback: str = CALLBACK) -> str:
    """Be the user's browser at the provider; return its redirect to our (test client's) callback."""
    return sign_in_at_provider(url, username, callback)


def start(browser: Client, slug: str = "test-idp", **params: str) -> str:
    response = browser.get(f"/oidc/login/{slug}/", params)
    assert response.status_code == 302, response.content
    return response["Location"]


def sign_in(browser: Client, username: str = "alice") -> Any:
    """The whole flow; returns the callback's response."""
    return browser.get(authorize(start(browser), username))


def assert_page(response: Any, status: int, text: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/html")
    assert text in response.content.decode()


# -- the provider list and the start of the flow ------------------------------------------------


def test_login_page_offers_every_provider_with_a_client_id(provider, browser, settings):
    settings.EPOCHAUTH["ISSUERS"].append(
        {"issuer": "https://api-only.example.org"}
    )  # no client id
    response = browser.get("/oidc/login/", {"next": "/admin/"})
    assert_page(response, 200, "Sign in with Test IdP")
    page = response.content.decode()
    assert "Sign in with Example Login" in page
    assert "/oidc/login/test-idp/?next=%2Fadmin%2F" in page
    assert "api-only" not in page


def test_any_user_signs_in_with_a_password_and_goes_on_to_next(provider, browser):
    get_user_model().objects.create_user("carol", password="carol-pw")
    page = browser.get("/oidc/login/", {"next": "/o/device/?user_code=ABCD"})
    assert_page(page, 200, 'id="password-login"')
    # The form posts next back under its name: what a browser submits, not only what a test posts.
    assert 'name="next" value="/o/device/?user_code=ABCD"' in page.content.decode()
    wrong = browser.post(
        "/oidc/login/", {"username": "carol", "password": "nope", "next": "/o/device/"}
    )
    assert_page(wrong, 200, "enter a correct username and password")
    response = browser.post(
        "/oidc/login/", {"username": "carol", "password": "carol-pw", "next": "/o/device/"}
    )
    assert response.status_code == 302 and response["Location"] == "/o/device/"
    assert browser.get("/auth/whoami/").json()["username"] == "carol"


def test_without_next_a_password_login_lands_on_the_token_page(provider, browser):
    get_user_model().objects.create_user("carol", password="carol-pw")
    response = browser.post("/oidc/login/", {"username": "carol", "password": "carol-pw"})
    assert response.status_code == 302 and response["Location"] == "/oidc/tokens/"


def test_the_password_form_is_throttled_with_the_token_endpoint(provider, browser, settings):
    """One limit for guessing a password, whichever form it is guessed at; a right one is not
    counted, and a throttled browser is told when to come back."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LOGIN_THROTTLE_RATE": "3/min"}
    get_user_model().objects.create_user("carol", password="carol-pw")
    ok = browser.post("/oidc/login/", {"username": "carol", "password": "carol-pw"})
    assert ok.status_code == 302
    browser.logout()
    wrong = {"username": "carol", "password": "nope"}
    assert [browser.post("/oidc/login/", wrong).status_code for _ in range(2)] == [200, 200]
    assert Client().post("/auth/token/", wrong).status_code == 401
    refused = browser.post("/oidc/login/", {"username": "carol", "password": "carol-pw"})
    assert_page(refused, 429, "Too many failed sign-ins")
    assert int(refused["Retry-After"]) >= 1
    assert SESSION_KEY not in browser.session


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"]
)
def test_a_next_off_the_site_is_refused(provider, browser, method, target):
    get_user_model().objects.create_user("carol", password="carol-pw")
    response = getattr(browser, method)(
        "/oidc/login/", {"next": target, "username": "carol", "password": "carol-pw"}
    )
    assert_page(response, 400, "leads to another site")
    assert "evil" not in response.content.decode()
    assert SESSION_KEY not in browser.session


def test_the_password_form_is_off_unless_asked_for(provider, browser, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "PASSWORD_LOGIN": False}
    get_user_model().objects.create_user("carol", password="carol-pw")
    page = browser.get("/oidc/login/")
    assert_page(page, 200, "Sign in with Test IdP")
    assert "password-login" not in page.content.decode()
    assert (
        browser.post("/oidc/login/", {"username": "carol", "password": "carol-pw"}).status_code
        == 405
    )
    assert SESSION_KEY not in browser.session


def test_a_group_of_one_provider_goes_straight_to_it(provider, browser, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OIDC_PROVIDER_GROUPS": {"test-idp": ["physics"]}}
    authorize = "/o/authorize/?client_id=portal&scope=reports:read+g:physics"
    response = browser.get("/oidc/login/", {"next": authorize})
    assert response.status_code == 302
    assert response["Location"] == "/oidc/login/test-idp/?" + urlencode({"next": authorize})
    device = browser.get("/oidc/login/", {"next": "/o/device/?user_code=X", "scope": "g:physics"})
    assert device.status_code == 302 and device["Location"].startswith(
        "/oidc/login/test-idp/?next="
    )
    # a group no provider has, or one that two have: the user chooses
    assert browser.get("/oidc/login/", {"scope": "g:chemistry"}).status_code == 200
    entries = settings.EPOCHAUTH["ISSUERS"]
    entries[1] = {**entries[1], "default_groups": ["physics"]}
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": entries}
    assert_page(
        browser.get("/oidc/login/", {"scope": "g:physics"}), 200, "Sign in with Example Login"
    )


def test_without_offline_access_the_provider_is_not_asked_to_prompt(provider, browser, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OIDC_SCOPES": "openid profile"}
    query = parse_qs(urlsplit(start(browser)).query)
    assert query["scope"] == ["openid profile"] and "prompt" not in query


def test_a_single_provider_may_redirect_straight_away(provider, browser, settings):
    configure(settings, provider_entry(provider), OIDC_REDIRECT_SINGLE_PROVIDER=True)
    response = browser.get("/oidc/login/")
    assert response.status_code == 302
    assert response["Location"] == "/oidc/login/test-idp/"


def test_login_redirects_with_state_nonce_and_pkce(provider, browser):
    url = start(browser)
    endpoint = provider.metadata["authorization_endpoint"]
    assert url.startswith(endpoint + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert query["client_id"] == "web-client"
    assert query["redirect_uri"] == CALLBACK
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    # the test project asks for offline_access (the Token Manager keeps the refresh token), which
    # needs prompt=consent (OpenID Connect Core 1.0 section 11)
    assert query["scope"] == "openid profile email offline_access" and query["prompt"] == "consent"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    entry = browser.session["oidc_states"][query["state"]]
    assert entry["issuer"] == provider.issuer and entry["nonce"] == query["nonce"]


def test_provider_endpoints_come_from_discovery(provider):
    found = provider_by_slug("test-idp")
    assert found is not None and found.client_secret() == "web-secret"
    assert found.metadata()["token_endpoint"] == provider.metadata["token_endpoint"]


def test_client_secret_from_the_secrets_setting(provider, settings, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "OIDC_CLIENT_SECRETS": {"test-idp": "from-settings"},
    }
    assert provider_by_slug("test-idp").client_secret() == "from-settings"


# -- a successful login ------------------------------------------------------------------------


def test_login_provisions_the_identity_and_opens_a_django_session(provider, browser):
    response = sign_in(browser, "alice")
    assert response.status_code == 302
    assert response["Location"] == "/oidc/tokens/"
    cookie = browser.cookies["sessionid"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"

    identity = Identity.objects.get(issuer=provider.issuer, subject="alice")
    assert identity.user.get_username() == "alice"
    assert jwks_cache.is_fresh(
        provider.issuer
    )  # the ID token was checked with the bearer-token keys
    assert AuditEvent.objects.filter(action="browser_login", user=identity.user).exists()

    whoami = browser.get("/auth/whoami/")
    assert whoami.status_code == 200
    assert whoami.json()["username"] == "alice"
    assert_page(browser.get("/oidc/tokens/"), 200, "Signed in as alice")


def test_login_goes_back_to_next(provider, browser):
    response = browser.get(authorize(start(browser, next="/auth/whoami/"), "alice"))
    assert response["Location"] == "/auth/whoami/"


def test_userinfo_claims_are_used_with_a_conformant_provider(provider, browser, settings):
    """The provider's ID tokens carry ``sub`` only: the groups come from its userinfo endpoint."""
    configure(
        settings,
        provider_entry(provider, group_claims=["groups"], group_prefix="idp:"),
        OIDC_SCOPES="openid profile groups",
    )
    asked = provider.stats()["requests"].get("/me", 0)
    assert sign_in(browser, "erin").status_code == 302
    user = Identity.objects.get(issuer=provider.issuer, subject="erin").user
    assert sorted(user.groups.values_list("name", flat=True)) == ["idp:/atlas", "idp:/atlas/users"]
    assert provider.stats()["requests"]["/me"] == asked + 1


def test_a_token_userinfo_refuses_leaves_the_id_token_claims(provider, browser, settings):
    """Asking for a resource server's scope gets an access token that userinfo answers with 401."""
    configure(
        settings,
        provider_entry(provider, group_claims=["groups"], group_prefix="idp:"),
        OIDC_SCOPES="openid reports:read",
    )
    assert sign_in(browser, "frank").status_code == 302
    user = Identity.objects.get(issuer=provider.issuer, subject="frank").user
    assert user.get_username() == "frank" and not user.groups.exists()


def test_users_are_never_matched_by_email(provider, browser):
    stranger = get_user_model().objects.create_user("someone", email="alice@example.test")
    sign_in(browser, "alice")
    identity = Identity.objects.get(issuer=provider.issuer, subject="alice")
    assert identity.user != stranger


def test_staff_users_reach_the_admin(provider, browser):
    staff = get_user_model().objects.create_user("operator", is_staff=True, is_superuser=True)
    Identity.objects.create(issuer=provider.issuer, subject="op-sub", user=staff)
    sign_in(browser, "op-sub")
    assert browser.get("/admin/").status_code == 200
    assert "Administration" in browser.get("/oidc/tokens/").content.decode()


@pytest.mark.parametrize("oauth_server", [True, False], ids=["oauth-server", "no-oauth-server"])
def test_the_signed_in_page_offers_the_cli_login_only_with_the_oauth_server(
    settings, browser, oauth_server
):
    """``epochauth login`` needs the OAuth server's device flow: without it, the hint would not work."""
    if not oauth_server:
        settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "epochauth.oauth"]
    browser.force_login(get_user_model().objects.create_user("alice"))
    page = browser.get("/oidc/tokens/").content.decode()
    assert ("epochauth login http://127.0.0.1:8000" in page) is oauth_server
    assert 'id="create-token"' in page  # the page itself is the same


def test_token_page_creates_a_working_token_pair(provider, browser):
    sign_in(browser, "alice")
    page = browser.get("/oidc/tokens/")
    assert "epochauth login http://127.0.0.1:8000" in page.content.decode()
    response = browser.post("/oidc/tokens/")
    assert response.status_code == 200 and response["Cache-Control"] == "no-store"
    access = response.context["access_token"]
    assert response.context["refresh_token"]
    whoami = Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert whoami.status_code == 200 and whoami.json()["username"] == "alice"


def test_token_page_needs_a_login(provider, browser):
    response = browser.get("/oidc/tokens/")
    assert response.status_code == 302 and response["Location"].startswith("/oidc/login/?next=")


def test_bumping_the_epoch_ends_browser_sessions(provider, browser):
    sign_in(browser, "alice")
    assert browser.get("/auth/whoami/").status_code == 200
    user = Identity.objects.get(subject="alice").user
    bump_epoch(Epoch.Kind.USER, str(user.pk), reason="test")
    assert browser.get("/auth/whoami/").status_code == 401
    assert browser.get("/oidc/tokens/").status_code == 302
    sign_in(browser, "alice")  # a new login after the bump works again
    assert browser.get("/auth/whoami/").status_code == 200


def test_logout_ends_the_session_and_goes_to_the_end_session_endpoint(provider, browser):
    sign_in(browser, "alice")
    assert_page(browser.get("/oidc/logout/"), 200, "Sign out")
    response = browser.post("/oidc/logout/")
    assert response.status_code == 302
    assert (
        response["Location"] == f"{provider.metadata['end_session_endpoint']}?client_id=web-client"
    )
    assert browser.get("/auth/whoami/").status_code == 401


# -- refusals ----------------------------------------------------------------------------------


def test_not_registered_shows_a_page_writes_an_audit_event_and_mails_the_admins(
    provider, browser, settings
):
    configure(settings, provider_entry(provider, auto_provision=False))
    response = sign_in(browser, "mallory")
    assert_page(response, 403, "not registered")
    assert not Identity.objects.filter(subject="mallory").exists()
    event = AuditEvent.objects.get(action="browser_login_not_registered")
    assert event.detail["subject"] == "mallory" and event.detail["provider"] == "test-idp"
    assert len(mail.outbox) == 1 and "mallory" in mail.outbox[0].body
    assert browser.get("/auth/whoami/").status_code in (401, 403)


def test_forged_state_is_refused(provider, browser):
    authorize_url = start(browser)
    callback = authorize(authorize_url, "alice")
    forged = callback.replace("state=", "state=forged", 1)
    assert_page(browser.get(forged), 400, "Please start again")
    assert not Identity.objects.exists()


def test_a_callback_from_another_browser_is_refused(provider, browser):
    callback = authorize(start(browser), "alice")
    assert_page(Client(HTTP_HOST=HOST).get(callback), 400, "Please start again")


def test_replayed_callback_is_refused(provider, browser):
    callback = authorize(start(browser), "alice")
    assert browser.get(callback).status_code == 302
    browser.logout()
    assert_page(browser.get(callback), 400, "Please start again")


def test_wrong_nonce_is_refused(provider, browser):
    url = start(browser)
    state = parse_qs(urlsplit(url).query)["state"][0]
    session = browser.session
    session["oidc_states"][state]["nonce"] = "a-different-nonce"
    session.save()
    assert_page(browser.get(authorize(url, "alice")), 400, "could not be verified")
    assert not Identity.objects.exists()


def test_a_code_the_provider_does_not_know_is_refused(provider, browser):
    url = start(browser)
    state = parse_qs(urlsplit(url).query)["state"][0]
    response = browser.get("/oidc/callback/", {"code": "forged-code", "state": state})
    assert_page(response, 400, "did not accept")


def test_unknown_provider(provider, browser):
    assert_page(browser.get("/oidc/login/nope/"), 404, "no such sign-in provider")


def test_access_denied_at_the_provider(provider, browser):
    url = start(browser)
    state = parse_qs(urlsplit(url).query)["state"][0]
    response = browser.get("/oidc/callback/", {"error": "access_denied", "state": state})
    assert_page(response, 403, "cancelled")
    assert state not in browser.session["oidc_states"]


def test_other_provider_errors(provider, browser):
    response = browser.get("/oidc/callback/", {"error": "<script>", "state": "x"})
    assert_page(response, 400, "reported an error (&lt;script&gt;)")


def test_callback_without_anything(provider, browser):
    assert_page(browser.get("/oidc/callback/"), 400, "Please start again")


def test_provider_down_when_starting(provider, browser):
    provider.down()
    response = browser.get("/oidc/login/test-idp/")
    assert_page(response, 400, "cannot be reached")


def test_provider_keys_down_at_the_callback(provider, browser):
    url = start(browser)  # discovery is cached from here on
    callback = authorize(url, "alice")
    provider.down()
    assert_page(browser.get(callback), 400, "cannot be reached")
    assert not Identity.objects.exists()


def test_provider_removed_between_start_and_callback(provider, browser, settings):
    callback = authorize(start(browser), "alice")
    configure(settings)
    assert_page(browser.get(callback), 400, "not available")


def test_missing_client_secret(provider, browser, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    assert_page(sign_in(browser), 400, "not configured correctly")


def test_browser_login_can_be_switched_off(provider, browser, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "BROWSER_LOGIN": False}
    page = browser.get("/oidc/login/")
    assert_page(page, 200, 'id="password-login"')
    assert "Sign in with" not in page.content.decode()
    assert browser.get("/oidc/login/test-idp/").status_code == 404
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "PASSWORD_LOGIN": False}
    assert browser.get("/oidc/login/").status_code == 404


# -- ID tokens no real provider would issue: a loopback provider we control --------------------
#
# The flow starts at /oidc/login/loop/ (state, nonce and PKCE verifier land in the session), then the
# callback comes back with a code of our choosing; the loopback token endpoint answers that code with
# a crafted ID token signed by the loopback issuer's published key (unless the case says otherwise).

LOOP_CLIENT_ID = "loop-client"
LOOP_SECRET = "loop-secret"
LOOP_SUBJECT = "loop-sub-1"
LOOP_EMAIL = "carol@example.test"


@pytest.fixture
def loop(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CraftedIssuer]:
    """The only login provider, "loop": discovery, JWKS and a token endpoint on loopback."""
    issuer = CraftedIssuer(oidc=True)
    monkeypatch.setenv(SECRET_ENV, LOOP_SECRET)
    entry = {
        "issuer": issuer.issuer,
        "slug": "loop",
        "display_name": "Loop",
        "client_id": LOOP_CLIENT_ID,
        "client_secret_env": SECRET_ENV,
    }
    configure(settings, entry, LEEWAY=30)
    yield issuer
    issuer.stop()


def id_claims(loop: CraftedIssuer, nonce: str, /, **overrides: Any) -> dict[str, Any]:
    """A good ID token's claims for our client (``None`` drops one, ``nonce=`` overrides it)."""
    now = int(time.time())
    base = {
        "iss": loop.issuer,
        "sub": LOOP_SUBJECT,
        "aud": LOOP_CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "auth_time": now,
        "nonce": nonce,
        "email": LOOP_EMAIL,
        "email_verified": True,
        "preferred_username": "carol",
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def id_token(loop: CraftedIssuer, nonce: str, /, kid: str = "rsa-1", **overrides: Any) -> str:
    """Signed with the loopback issuer's published key ``kid``."""
    private_key, alg = loop.keys[kid]
    return compact(
        {"alg": alg, "typ": "JWT", "kid": kid}, id_claims(loop, nonce, **overrides), private_key
    )


def crafted_callback(
    browser: Client, loop: CraftedIssuer, make_token: Callable[[str], str]
) -> tuple[Any, dict[str, str]]:
    """Start at /oidc/login/loop/, return to the callback with a code answered by ``make_token(nonce)``.

    Returns the callback's response and the authorization request's query.
    """
    location = start(browser, "loop")
    assert location.startswith(f"{loop.issuer}/authorize?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    code = secrets.token_urlsafe(16)
    loop.codes[code] = make_token(query["nonce"])
    response = browser.get("/oidc/callback/", {"code": code, "state": query["state"]})
    # The token endpoint was asked for exactly this code: any refusal is about the ID token itself.
    assert [r.get("code") for r in loop.token_requests] == [code]
    assert code not in loop.codes
    return response, query


def public_key_pem() -> bytes:
    public = key("rsa-a").public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spliced_signature(loop: CraftedIssuer, nonce: str) -> str:
    """The claims of one token with the (valid) signature of another."""
    good = id_token(loop, nonce)
    other = id_token(loop, nonce, sub="someone-else")
    return good.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def now() -> int:
    return int(time.time())


BAD_ID_TOKENS: dict[str, Callable[[CraftedIssuer, str], str]] = {
    "wrong aud": lambda loop, n: id_token(loop, n, aud="another-client"),
    "aud another client only, azp us": lambda loop, n: id_token(
        loop, n, aud=["another-client"], azp=LOOP_CLIENT_ID
    ),
    "several audiences without azp": lambda loop, n: id_token(
        loop, n, aud=[LOOP_CLIENT_ID, "another-client"]
    ),
    "several audiences, azp another client": lambda loop, n: id_token(
        loop, n, aud=[LOOP_CLIENT_ID, "another-client"], azp="another-client"
    ),
    "no aud": lambda loop, n: id_token(loop, n, aud=None),
    "wrong iss": lambda loop, n: id_token(loop, n, iss=loop.issuer + "/other"),
    "iss with a trailing slash": lambda loop, n: id_token(loop, n, iss=loop.issuer + "/"),
    "no iss": lambda loop, n: id_token(loop, n, iss=None),
    "expired": lambda loop, n: id_token(loop, n, exp=now() - 120, iat=now() - 400),
    "iat in the future beyond leeway": lambda loop, n: id_token(loop, n, iat=now() + 120),
    "no exp": lambda loop, n: id_token(loop, n, exp=None),
    "no iat": lambda loop, n: id_token(loop, n, iat=None),
    "string exp": lambda loop, n: id_token(loop, n, exp=str(now() + 300)),
    "string iat": lambda loop, n: id_token(loop, n, iat=str(now())),
    "bool exp": lambda loop, n: id_token(loop, n, exp=True),
    "wrong nonce": lambda loop, n: id_token(loop, n, nonce=secrets.token_urlsafe(32)),
    "missing nonce": lambda loop, n: id_token(loop, n, nonce=None),
    "nonce not a string": lambda loop, n: id_token(loop, n, nonce=[n]),
    "no sub": lambda loop, n: id_token(loop, n, sub=None),
    "empty sub": lambda loop, n: id_token(loop, n, sub=""),
    "sub not a string": lambda loop, n: id_token(loop, n, sub=42),
    "bad signature": spliced_signature,
    "alg none": lambda loop, n: compact({"alg": "none", "kid": "rsa-1"}, id_claims(loop, n)),
    "HS256 signed with the public key": lambda loop, n: compact(
        {"alg": "HS256", "kid": "rsa-1"}, id_claims(loop, n), public_key_pem()
    ),
    "kid the issuer does not publish": lambda loop, n: compact(
        {"alg": "RS256", "kid": "not-published"}, id_claims(loop, n), key("rsa-evil")
    ),
    "published kid, another key": lambda loop, n: compact(
        {"alg": "RS256", "kid": "rsa-1"}, id_claims(loop, n), key("rsa-evil")
    ),
    "RS256 naming the EC key": lambda loop, n: compact(
        {"alg": "RS256", "kid": "ec-1"}, id_claims(loop, n), key("rsa-a")
    ),
    "no kid, not its key": lambda loop, n: compact(
        {"alg": "RS256"}, id_claims(loop, n), key("rsa-evil")
    ),
    "not a JWT": lambda loop, n: "not-a-jwt",
}


@pytest.mark.parametrize("case", list(BAD_ID_TOKENS))
def test_crafted_id_tokens_are_refused(loop, browser, case):
    response, _ = crafted_callback(browser, loop, lambda nonce: BAD_ID_TOKENS[case](loop, nonce))
    assert_page(response, 400, "could not be verified")
    assert SESSION_KEY not in browser.session
    assert browser.get("/auth/whoami/").status_code in (401, 403)
    assert not get_user_model().objects.exists()
    assert not Identity.objects.exists()
    assert not AuditEvent.objects.filter(
        action__in=["browser_login", "identity_provisioned"]
    ).exists()


GOOD_ID_TOKENS: dict[str, Callable[[CraftedIssuer, str], str]] = {
    "RS256": lambda loop, n: id_token(loop, n),
    "ES256": lambda loop, n: id_token(loop, n, kid="ec-1"),
    "several audiences with azp us": lambda loop, n: id_token(
        loop, n, aud=["another-client", LOOP_CLIENT_ID], azp=LOOP_CLIENT_ID
    ),
    "expired within leeway": lambda loop, n: id_token(loop, n, exp=now() - 10, iat=now() - 300),
}


@pytest.mark.parametrize("case", list(GOOD_ID_TOKENS))
def test_a_correct_crafted_id_token_logs_in_as_iss_and_sub_never_by_email(loop, browser, case):
    local = get_user_model().objects.create_user("carol", email=LOOP_EMAIL)
    response, query = crafted_callback(
        browser, loop, lambda nonce: GOOD_ID_TOKENS[case](loop, nonce)
    )
    assert response.status_code == 302, response.content
    assert response["Location"] == "/oidc/tokens/"

    identity = Identity.objects.get()
    assert (identity.issuer, identity.subject) == (loop.issuer, LOOP_SUBJECT)
    user = identity.user
    assert user.pk != local.pk and user.get_username() != "carol"  # same email and name: not used
    assert browser.session[SESSION_KEY] == str(user.pk)
    assert get_user_model().objects.count() == 2
    assert browser.get("/auth/whoami/").json()["username"] == user.get_username()
    assert AuditEvent.objects.filter(action="browser_login", user=user).exists()

    # The code was redeemed as the client, at our redirect URI, with the verifier of the challenge.
    (request,) = loop.token_requests
    assert request["grant_type"] == "authorization_code"
    assert request["redirect_uri"] == CALLBACK
    assert request["basic_auth"] == (LOOP_CLIENT_ID, LOOP_SECRET)
    digest = hashlib.sha256(request["code_verifier"].encode()).digest()
    assert base64.urlsafe_b64encode(digest).rstrip(b"=").decode() == query["code_challenge"]


def test_a_crafted_id_token_is_good_for_one_callback(loop, browser):
    """The same good answer again (state replayed) is refused before the token endpoint is asked."""
    location = start(browser, "loop")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    loop.codes["code-1"] = id_token(loop, query["nonce"])
    callback = {"code": "code-1", "state": query["state"]}
    assert browser.get("/oidc/callback/", callback).status_code == 302
    browser.logout()
    loop.codes["code-1"] = id_token(loop, query["nonce"])
    assert_page(browser.get("/oidc/callback/", callback), 400, "Please start again")
    assert len(loop.token_requests) == 1
    assert SESSION_KEY not in browser.session


# -- userinfo ------------------------------------------------------------------------------------


def with_group_claims(settings: Any) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [
            {
                **settings.EPOCHAUTH["ISSUERS"][0],
                "group_claims": ["groups"],
                "group_map": {"/atlas": "atlas"},
            }
        ],
    }


def test_userinfo_fills_in_what_the_id_token_leaves_out(loop, browser, settings):
    with_group_claims(settings)
    loop.userinfo = {"sub": LOOP_SUBJECT, "preferred_username": "dave", "groups": ["/atlas"]}
    response, _ = crafted_callback(
        browser, loop, lambda n: id_token(loop, n, preferred_username=None)
    )
    assert response.status_code == 302, response.content
    user = Identity.objects.get().user
    assert user.get_username() == "dave"
    assert list(user.groups.values_list("name", flat=True)) == ["atlas"]
    assert loop.counts["/userinfo"] == 1  # with the access token the token endpoint gave out


def test_the_id_token_wins_over_userinfo(loop, browser):
    loop.userinfo = {"sub": LOOP_SUBJECT, "preferred_username": "mallory"}
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert response.status_code == 302, response.content
    assert Identity.objects.get().user.get_username() == "carol"


def test_userinfo_about_another_subject_is_refused(loop, browser):
    loop.userinfo = {"sub": "someone-else", "preferred_username": "dave"}
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert_page(response, 400, "could not be verified")
    assert not Identity.objects.exists() and SESSION_KEY not in browser.session


def test_userinfo_refusing_the_token_leaves_the_id_token_claims(loop, browser, settings):
    with_group_claims(settings)
    loop.userinfo, loop.userinfo_status = {"sub": LOOP_SUBJECT, "groups": ["/atlas"]}, 403
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert response.status_code == 302, response.content
    user = Identity.objects.get().user
    assert user.get_username() == "carol" and not user.groups.exists()


@pytest.mark.parametrize("status", [500, 503])
def test_userinfo_down_is_a_readable_error(loop, browser, status):
    """Not a login without the claims: a user provisioned without its groups would keep lacking them."""
    loop.userinfo, loop.userinfo_status = {"sub": LOOP_SUBJECT}, status
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert_page(response, 400, "cannot be reached right now")
    assert not Identity.objects.exists() and SESSION_KEY not in browser.session


# -- the token endpoint and the user behind the identity --------------------------------------------


@pytest.mark.parametrize(
    "answer, status, text",
    [
        ((500, {"error": "server_error"}), 400, "cannot be reached right now"),
        ((200, {"access_token": "a", "token_type": "Bearer"}), 400, "sent no ID token"),
        ((400, {"error": "invalid_grant"}), 400, "did not accept this sign-in"),
    ],
)
def test_token_endpoint_failures_are_readable_pages(loop, browser, answer, status, text):
    loop.token_answer = answer
    location = start(browser, "loop")
    state = parse_qs(urlsplit(location).query)["state"][0]
    assert_page(browser.get("/oidc/callback/", {"code": "c-1", "state": state}), status, text)
    assert SESSION_KEY not in browser.session and not Identity.objects.exists()


def test_client_secret_post_when_the_provider_takes_only_that(loop, browser):
    loop.auth_methods = ["client_secret_post"]
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert response.status_code == 302, response.content
    (request,) = loop.token_requests
    assert request["basic_auth"] is None
    assert (request["client_id"], request["client_secret"]) == (LOOP_CLIENT_ID, LOOP_SECRET)


def test_a_disabled_user_cannot_sign_in(loop, browser):
    carol = get_user_model().objects.create_user("carol-local", is_active=False)
    Identity.objects.create(issuer=loop.issuer, subject=LOOP_SUBJECT, user=carol)
    response, _ = crafted_callback(browser, loop, lambda n: id_token(loop, n))
    assert_page(response, 403, "disabled")
    assert SESSION_KEY not in browser.session
