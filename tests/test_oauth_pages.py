"""The authorization server's pages (epochauth.oauth.pages): the device code, its approval, the consent
of /o/authorize/, in epochauth's templates; every bad code is a readable page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import get_application_model, get_device_grant_model

from tests.helpers import make_user

pytestmark = pytest.mark.django_db

DeviceGrant = get_device_grant_model()


@pytest.fixture
def carol():
    """Not staff: the pages are for every user."""
    return make_user("carol", groups=["physics"])


@pytest.fixture
def browser(carol) -> Client:
    client = Client()
    client.force_login(carol)
    return client


def device_code(scope: str = "reports:read g:physics") -> dict[str, Any]:
    response = Client().post(
        "/o/device-authorization/",
        urlencode({"client_id": "epochauth-cli", "scope": scope}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content
    return response.json()


def assert_page(response: Any, status: int, *texts: str) -> str:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    for text in texts:
        assert text in page, page
    return page


def test_the_complete_uri_fills_in_the_code_and_names_client_and_scopes(browser):
    device = device_code()
    assert device["verification_uri_complete"].endswith(
        f"/o/device/?user_code={device['user_code']}"
    )
    page = assert_page(
        browser.get("/o/device/", {"user_code": device["user_code"]}),
        200,
        "Connect a device",
        f'value="{device["user_code"]}"',
        "epochauth command-line client",
        "Act as member of physics",
        "Read the example reports",
    )
    assert 'id="user-code"' in page


def test_approving_a_device(browser, carol):
    device = device_code()
    confirm = browser.post("/o/device/", {"user_code": device["user_code"]})
    assert confirm.status_code == 302 and "/o/device-confirm/epochauth-cli/" in confirm["Location"]
    assert_page(
        browser.get(confirm["Location"]),
        200,
        "Approve epochauth command-line client?",
        "Act as member of physics",
        "(g:physics)",
        'value="accept"',
        'value="deny"',
    )
    done = browser.post(confirm["Location"], {"action": "accept"})
    assert_page(browser.get(done["Location"]), 200, "Device approved", "carol")
    assert DeviceGrant.objects.get(user_code=device["user_code"]).status == DeviceGrant.AUTHORIZED
    # the code is used now: every page says so
    assert_page(browser.get(confirm["Location"]), 409, "Code already used")
    assert_page(browser.post(confirm["Location"], {"action": "deny"}), 409, "Code already used")
    assert_page(
        browser.get("/o/device/", {"user_code": device["user_code"]}), 409, "Code already used"
    )
    assert_page(
        browser.post("/o/device/", {"user_code": device["user_code"]}), 409, "Code already used"
    )
    assert DeviceGrant.objects.get(user_code=device["user_code"]).status == DeviceGrant.AUTHORIZED


def test_the_status_page_says_approved_after_the_device_fetched_its_tokens(browser):
    """The device polls while the browser follows the redirect: redeeming the code marks it expired
    (it is used), and the page still says what the user did. A code that ran out says expired."""
    device = device_code()
    confirm = browser.post("/o/device/", {"user_code": device["user_code"]})["Location"]
    status = browser.post(confirm, {"action": "accept"})["Location"]
    redeemed = Client().post(
        "/o/token/",
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    assert redeemed.status_code == 200, redeemed.content
    assert DeviceGrant.objects.get(user_code=device["user_code"]).status == DeviceGrant.EXPIRED
    page = assert_page(browser.get(status), 200, "<title>Device approved", "signed in as carol")
    assert "Device expired" not in page
    DeviceGrant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    page = assert_page(browser.get(status), 200, "Device expired")
    assert "Device approved" not in page


def test_denying_a_device(browser):
    device = device_code()
    confirm = browser.post("/o/device/", {"user_code": device["user_code"]})["Location"]
    done = browser.post(confirm, {"action": "deny"})
    assert_page(browser.get(done["Location"]), 200, "Device denied")
    assert DeviceGrant.objects.get(user_code=device["user_code"]).status == DeviceGrant.DENIED


def test_unknown_codes(browser):
    assert_page(browser.get("/o/device/", {"user_code": "NOPE1234"}), 404, "Unknown code")
    assert_page(browser.post("/o/device/", {"user_code": "NOPE1234"}), 404, "Unknown code")
    assert_page(browser.get("/o/device-confirm/epochauth-cli/NOPE1234"), 404, "Unknown code")
    assert_page(browser.get("/o/device-grant-status/epochauth-cli/NOPE1234"), 404, "Unknown code")


def test_someone_elses_code_cannot_be_confirmed(browser):
    device = device_code()
    other = Client()
    other.force_login(make_user("mallory"))
    confirm = other.post("/o/device/", {"user_code": device["user_code"]})["Location"]
    assert_page(browser.post(confirm, {"action": "accept"}), 404, "Unknown code")
    assert_page(browser.get(confirm.replace("confirm", "grant-status")), 404, "Unknown code")
    assert (
        DeviceGrant.objects.get(user_code=device["user_code"]).status
        == DeviceGrant.AUTHORIZATION_PENDING
    )


def test_expired_codes(browser):
    device = device_code()
    confirm = browser.post("/o/device/", {"user_code": device["user_code"]})["Location"]
    DeviceGrant.objects.update(expires=timezone.now() - timedelta(seconds=1))
    assert_page(browser.get("/o/device/", {"user_code": device["user_code"]}), 410, "Code expired")
    assert_page(browser.post(confirm, {"action": "accept"}), 410, "Code expired")
    assert DeviceGrant.objects.get(user_code=device["user_code"]).status != DeviceGrant.AUTHORIZED


def test_signing_in_for_a_device_goes_to_the_provider_of_its_group(settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [
            {
                "issuer": "http://127.0.0.1:9",
                "slug": "lab",
                "client_id": "web",
                "default_groups": ["physics"],
            }
        ],
    }
    device = device_code()
    browser = Client()
    response = browser.get("/o/device/", {"user_code": device["user_code"]})
    assert response.status_code == 302
    login = urlsplit(response["Location"])
    assert login.path == "/oidc/login/"
    query = parse_qs(login.query)
    assert query["scope"] == ["reports:read g:physics"]
    assert query["next"] == [f"/o/device/?user_code={device['user_code']}"]
    straight = browser.get(response["Location"])
    assert straight.status_code == 302 and straight["Location"].startswith(
        "/oidc/login/lab/?next="
    )


# -- guessing codes (RFC 8628 section 5.1) ---------------------------------------------------


def test_codes_have_the_entropy_rfc_8628_asks_for():
    """DOT's generator: 8 characters of 32 (base32hex), 40 bits; RFC 8628 section 6.1's example has
    34.5. With DEVICE_CODE_THROTTLE_RATE and the codes' 30 minutes, guessing one is hopeless."""
    codes = [device_code()["user_code"] for _ in range(5)]
    assert all(
        len(code) == 8 and set(code) <= set("0123456789ABCDEFGHIJKLMNOPQRSTUV") for code in codes
    )
    assert len(set(codes)) == 5


def signed_in(user: Any, address: str) -> Client:
    client = Client(REMOTE_ADDR=address)
    client.force_login(user)
    return client


def test_wrong_codes_are_throttled_per_user_and_per_address(settings, carol):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DEVICE_CODE_THROTTLE_RATE": "3/min"}
    right = device_code()["user_code"]
    guesser = signed_in(carol, "10.0.0.1")
    for wrong in ("WRONG001", "WRONG002"):
        assert_page(guesser.post("/o/device/", {"user_code": wrong}), 404, "Unknown code")
    assert_page(guesser.get("/o/device/", {"user_code": "WRONG003"}), 404, "Unknown code")
    for code in ("WRONG004", right):
        throttled = guesser.post("/o/device/", {"user_code": code})
        assert_page(throttled, 429, "Too many wrong codes")
        assert 0 < int(throttled["Retry-After"]) <= 60
    # carol from elsewhere is over her limit; someone else at her address is over its limit
    assert guesser.get("/o/device/", {"user_code": right}).status_code == 429
    assert signed_in(carol, "10.0.0.2").post("/o/device/", {"user_code": right}).status_code == 429
    dave = make_user("dave")
    assert signed_in(dave, "10.0.0.1").post("/o/device/", {"user_code": right}).status_code == 429
    # while a user elsewhere is not locked out by the guessing
    confirm = signed_in(dave, "10.0.0.3").post("/o/device/", {"user_code": right})
    assert confirm.status_code == 302 and right in confirm["Location"]


def test_right_codes_do_not_count(settings, browser):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DEVICE_CODE_THROTTLE_RATE": "2/min"}
    right = device_code()["user_code"]
    for _ in range(5):
        assert browser.get("/o/device/", {"user_code": right}).status_code == 200
    assert browser.post("/o/device/", {"user_code": right}).status_code == 302


def test_codes_looked_up_before_signing_in_are_throttled_per_address(settings):
    """The sign-in redirect names the scope of a code that exists: a lookup, throttled too."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DEVICE_CODE_THROTTLE_RATE": "2/min"}
    right = device_code()["user_code"]
    anonymous = Client(REMOTE_ADDR="10.0.0.9")
    for wrong in ("WRONG001", "WRONG002"):
        assert anonymous.get("/o/device/", {"user_code": wrong}).status_code == 302
    assert_page(anonymous.get("/o/device/", {"user_code": right}), 429, "Too many")
    assert (
        Client(REMOTE_ADDR="10.0.0.8").get("/o/device/", {"user_code": right}).status_code == 302
    )


def test_the_throttle_can_be_switched_off(settings, browser):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DEVICE_CODE_THROTTLE_RATE": None}
    for n in range(15):
        assert browser.post("/o/device/", {"user_code": f"WRONG{n:03}"}).status_code == 404


def test_codes_are_not_looked_up_unthrottled_while_the_cache_is_down(settings, browser):
    right = device_code()["user_code"]
    settings.CACHES = {
        **settings.CACHES,
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2},
        },
    }
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CACHE_ALIAS": "down"}
    assert_page(browser.post("/o/device/", {"user_code": right}), 503, "Service unavailable")


@pytest.fixture
def portal():
    return get_application_model().objects.create(
        name="Portal",
        client_id="portal",
        client_type="confidential",
        authorization_grant_type="authorization-code",
        redirect_uris="http://127.0.0.1:9/callback",
        client_secret="s3cret",
    )


def authorize_path() -> str:
    return (
        "/o/authorize/?response_type=code&client_id=portal&redirect_uri=http://127.0.0.1:9/callback"
        "&scope=reports:read+g:physics&state=xyz&code_challenge="
        + "A" * 43
        + "&code_challenge_method=S256"
    )


def test_the_consent_page(browser, portal):
    page = assert_page(
        browser.get(authorize_path()),
        200,
        "Authorize Portal?",
        "Act as member of physics",
        'name="allow"',
    )
    assert 'name="state" value="xyz"' in page


def test_first_party_applications_skip_consent(browser, portal):
    portal.skip_authorization = True
    portal.save()
    response = browser.get(authorize_path())
    assert response.status_code == 302 and response["Location"].startswith(
        "http://127.0.0.1:9/callback?code="
    )


def test_a_bad_authorization_request_is_a_readable_page(browser, portal):
    assert_page(
        browser.get("/o/authorize/?response_type=code&client_id=nobody"),
        400,
        "Authorization failed",
    )


def test_a_project_overrides_the_pages_by_name(browser, settings, tmp_path):
    override = tmp_path / "epochauth" / "oauth"
    override.mkdir(parents=True)
    (override / "device.html").write_text("our own device page")
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [tmp_path]}]
    assert_page(browser.get("/o/device/"), 200, "our own device page")
