"""Browser login (tokenauth.oidc) against the real test OpenID provider, driven with the test client.

The shared provider's ``web-client`` accepts http://127.0.0.1:8000/oidc/callback/ as redirect URI, so
the test client poses as that host; the provider's login and consent forms are filled over HTTP.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests
from django.contrib.auth import get_user_model
from django.core import mail
from django.test import Client

from tests.idp import TestIdP, parse_forms
from tokenauth.issuers import jwks_cache
from tokenauth.models import AuditEvent, Epoch, Identity
from tokenauth.oidc.providers import provider_by_slug
from tokenauth.revocation import bump_epoch

pytestmark = pytest.mark.django_db

HOST = "127.0.0.1:8000"
CALLBACK = f"http://{HOST}/oidc/callback/"
SECRET_ENV = "TOKENAUTH_TEST_WEB_SECRET"


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
    settings.TOKENAUTH = {
        **settings.TOKENAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": list(entries),
        **extra,
    }


@pytest.fixture
def provider(idp: TestIdP, settings: Any, monkeypatch: pytest.MonkeyPatch) -> TestIdP:
    """The shared provider as login provider "test-idp", plus a second one that is never contacted."""
    idp.up()
    monkeypatch.setenv(SECRET_ENV, idp.WEB_CLIENT_SECRET)
    other = {"issuer": "https://login.example.org", "slug": "example", "display_name": "Example Login"}
    configure(settings, provider_entry(idp), {**other, "client_id": "app"})
    settings.ADMINS = [("Admin", "admin@example.test")]
    yield idp
    idp.up()


@pytest.fixture
def browser() -> Client:
    return Client(HTTP_HOST=HOST)


def authorize(url: str, username: str, callback: str = CALLBACK) -> str:
    """Be the user's browser at the provider: log in, consent; return the redirect to ``callback``."""
    http = requests.Session()
    response = http.get(url, allow_redirects=False, timeout=10)
    for _ in range(15):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(callback):
                return location
            response = http.get(location, allow_redirects=False, timeout=10)
            continue
        forms = [f for f in parse_forms(response.text) if f["method"] == "post"]
        assert response.status_code == 200 and forms, (
            f"{response.status_code} {response.url}\n{response.text}"
        )
        fields = dict(forms[0]["fields"])
        if fields.get("prompt") == "login":
            fields.update(login=username, password="any-password")
        response = http.post(urljoin(response.url, forms[0]["action"]), data=fields, allow_redirects=False)
    raise AssertionError("the provider never redirected back")


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
    settings.TOKENAUTH["ISSUERS"].append({"issuer": "https://api-only.example.org"})  # no client id
    response = browser.get("/oidc/login/", {"next": "/admin/"})
    assert_page(response, 200, "Sign in with Test IdP")
    page = response.content.decode()
    assert "Sign in with Example Login" in page
    assert "/oidc/login/test-idp/?next=%2Fadmin%2F" in page
    assert "api-only" not in page


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
    assert query["scope"] == "openid profile email"
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    entry = browser.session["oidc_states"][query["state"]]
    assert entry["issuer"] == provider.issuer and entry["nonce"] == query["nonce"]


def test_provider_endpoints_come_from_discovery(provider):
    found = provider_by_slug("test-idp")
    assert found is not None and found.client_secret() == "web-secret"
    assert found.metadata()["token_endpoint"] == provider.metadata["token_endpoint"]


def test_client_secret_from_the_secrets_setting(provider, settings, monkeypatch):
    monkeypatch.delenv(SECRET_ENV)
    settings.TOKENAUTH = {**settings.TOKENAUTH, "OIDC_CLIENT_SECRETS": {"test-idp": "from-settings"}}
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
    assert jwks_cache.is_fresh(provider.issuer)  # the ID token was checked with the bearer-token keys
    assert AuditEvent.objects.filter(action="browser_login", user=identity.user).exists()

    whoami = browser.get("/auth/whoami/")
    assert whoami.status_code == 200
    assert whoami.json()["username"] == "alice"
    assert_page(browser.get("/oidc/tokens/"), 200, "Signed in as alice")


def test_login_goes_back_to_next(provider, browser):
    response = browser.get(authorize(start(browser, next="/auth/whoami/"), "alice"))
    assert response["Location"] == "/auth/whoami/"


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


def test_token_page_creates_a_working_token_pair(provider, browser):
    sign_in(browser, "alice")
    page = browser.get("/oidc/tokens/")
    assert "tokenauth login http://127.0.0.1:8000" in page.content.decode()
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
    assert response["Location"] == f"{provider.metadata['end_session_endpoint']}?client_id=web-client"
    assert browser.get("/auth/whoami/").status_code == 401


# -- refusals ----------------------------------------------------------------------------------


def test_not_registered_shows_a_page_writes_an_audit_event_and_mails_the_admins(provider, browser, settings):
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
    settings.TOKENAUTH = {**settings.TOKENAUTH, "BROWSER_LOGIN": False}
    assert browser.get("/oidc/login/").status_code == 404
    assert browser.get("/oidc/login/test-idp/").status_code == 404
