"""``prompt`` and ``max_age`` of OpenID authorization requests (OpenID Connect Core 1.0 sections
3.1.2.1 and 3.1.2.6): ``prompt=none`` answers with a redirect, a code or ``login_required`` /
``consent_required``, never a page; ``prompt=login`` and an exceeded ``max_age`` sign the user in again.
Through Django's test client; tests/test_openid_provider.py has a relying party's silent refresh in
Chromium."""

from __future__ import annotations

import base64
import hashlib
import time
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_application_model

from epochauth.oauth import revocation
from tests.helpers import make_user, openid_provider

pytestmark = pytest.mark.django_db

Application = get_application_model()
REDIRECT = "http://127.0.0.1:9/callback"
SECRET = "rp-s3cret-" * 5
VERIFIER = "v" * 64
CHALLENGE = (
    base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).decode().rstrip("=")
)


@pytest.fixture(autouse=True)
def op(settings):
    openid_provider(settings)


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def portal():
    """A relying party the user consents to on our page (no skip_authorization)."""
    return Application.objects.create(
        name="Portal",
        client_id="portal",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
    )


@pytest.fixture
def browser(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def authorize(scope: str = "openid email", **parameters: str) -> str:
    query = {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "st-1",
        "nonce": "n-1",
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
        **parameters,
    }
    return f"/o/authorize/?{urlencode(query)}"


def answer(response: Any) -> dict[str, str]:
    """The parameters of a redirect back to the relying party (never a page)."""
    assert response.status_code == 302, response.content
    assert response["Location"].startswith(f"{REDIRECT}?"), response["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}


def tokens(code: str) -> dict[str, Any]:
    response = Client().post(
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": VERIFIER,
            "client_id": "portal",
            "client_secret": SECRET,
        },
    )
    assert response.status_code == 200, response.content
    return response.json()


def consent(browser: Client, scope: str = "openid email") -> dict[str, Any]:
    """A sign-in through the consent page ("Allow"), its code exchanged."""
    page = browser.get(authorize(scope))
    assert page.status_code == 200 and "form" in page.context
    form = {k: v for k, v in page.context["form"].initial.items() if v is not None}
    return tokens(answer(browser.post(authorize(scope), {**form, "allow": "Authorize"}))["code"])


def test_signed_in_as_no_one_is_login_required(portal):
    assert answer(Client().get(authorize(prompt="none"))) == {
        "error": "login_required",
        "state": "st-1",
    }


def test_a_first_party_application_gets_a_code_silently(browser, portal):
    portal.skip_authorization = True
    portal.save()
    response = answer(browser.get(authorize(prompt="none")))
    assert response["state"] == "st-1" and set(response) == {"code", "state"}
    assert "id_token" in tokens(response["code"])


def test_without_consent_is_consent_required_and_no_page(browser, portal):
    assert answer(browser.get(authorize(prompt="none"))) == {
        "error": "consent_required",
        "state": "st-1",
    }


def test_an_earlier_consent_answers_silently(browser, portal):
    consent(browser)
    response = answer(browser.get(authorize(prompt="none")))
    assert "id_token" in tokens(response["code"])
    # ... for the scopes it covered only
    assert answer(browser.get(authorize("openid email profile", prompt="none")))["error"] == (
        "consent_required"
    )


def test_a_revoked_consent_is_consent_required(browser, portal, alice):
    consent(browser)
    for family in get_access_token_model().objects.values_list(
        "refresh_token__token_family", flat=True
    ):
        revocation.end_family(family)
    assert answer(browser.get(authorize(prompt="none")))["error"] == "consent_required"


def test_another_users_consent_counts_not(portal, alice):
    bob = Client()
    bob.force_login(make_user("bob"))
    consent(bob)
    browser = Client()
    browser.force_login(alice)
    assert answer(browser.get(authorize(prompt="none")))["error"] == "consent_required"


def test_max_age_beyond_the_last_sign_in_is_login_required(browser, portal, alice):
    portal.skip_authorization = True
    portal.save()
    alice.last_login = timezone.now() - timedelta(minutes=10)
    alice.save()
    assert answer(browser.get(authorize(prompt="none", max_age="60"))) == {
        "error": "login_required",
        "state": "st-1",
    }
    assert "code" in answer(browser.get(authorize(prompt="none", max_age="3600")))


@pytest.mark.parametrize("max_age", ["0", "60"])
def test_max_age_beyond_the_last_sign_in_signs_in_again(browser, portal, alice, max_age):
    portal.skip_authorization = True
    portal.save()
    alice.last_login = timezone.now() - timedelta(minutes=10)
    alice.save()
    response = browser.get(authorize(max_age=max_age))
    assert response.status_code == 302 and response["Location"].startswith("/oidc/login/?next=")
    back = parse_qs(urlsplit(response["Location"]).query)["next"][0]
    assert "max_age" not in back and "prompt" not in back
    browser.force_login(alice)  # the sign-in page's work
    assert "code" in answer(browser.get(back))


def test_prompt_login_signs_in_again(browser, portal):
    response = browser.get(authorize(prompt="login"))
    assert response.status_code == 302 and response["Location"].startswith("/oidc/login/?next=")
    assert "prompt" not in parse_qs(urlsplit(response["Location"]).query)["next"][0]


@pytest.mark.parametrize("max_age", ["-1", "soon", "1e3"])
def test_a_malformed_max_age_is_invalid_request(browser, portal, max_age):
    response = answer(browser.get(authorize(prompt="none", max_age=max_age)))
    assert response["error"] == "invalid_request" and response["state"] == "st-1"
    assert "max_age" in response["error_description"]


def test_none_with_another_value_is_invalid_request(browser, portal):
    assert answer(browser.get(authorize(prompt="none login")))["error"] == "invalid_request"


def test_a_bad_redirect_uri_is_a_page_not_a_redirect(portal):
    response = Client().get(authorize(prompt="none", redirect_uri="https://evil.example/"))
    assert response.status_code == 400


def test_an_oauth_request_without_openid_ignores_prompt(browser, portal):
    """RFC 6749 section 3.1: prompt is no parameter of OAuth 2.0; the consent page asks."""
    response = browser.get(authorize("email", prompt="none"))
    assert response.status_code == 200 and "form" in response.context


def test_an_id_token_hint_for_another_user_is_login_required(browser, portal, alice):
    """Section 3.1.2.1: the hint names whom the relying party believes signed in; a code for
    another user (here, a browser now signed in as alice) is refused, expired hints still select."""
    portal.skip_authorization = True
    portal.save()
    bob = Client()
    bob.force_login(make_user("bob"))
    bobs = tokens(answer(bob.get(authorize()))["code"])["id_token"]
    alices = tokens(answer(browser.get(authorize()))["code"])["id_token"]
    for hint in (bobs, "not-a-jwt", alices[:-4] + "AAAA"):
        response = answer(browser.get(authorize(prompt="none", id_token_hint=hint)))
        assert (response["error"], response["state"]) == ("login_required", "st-1"), hint
    assert "code" in answer(browser.get(authorize(prompt="none", id_token_hint=alices)))
    # Expired: the relying party's ID token is usually due when it asks again.
    later = time.time() + 2 * 86400
    with mock.patch("jwcrypto.jwt.time.time", return_value=later):
        assert "code" in answer(browser.get(authorize(prompt="none", id_token_hint=alices)))
