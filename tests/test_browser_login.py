"""A real headless Chromium logs in end to end: our provider page, the provider's login and consent
forms, back to the app, signed in. Screenshots go to ``<tmp>/epochauth-artifacts/`` (CI artifacts).

Needs Chromium (see tests/browser.py) and Node for the test provider: skipped locally without them,
failed when CI=true.
"""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from epochauth.models import Identity
from tests.browser import screenshot
from tests.helpers import start_login

pytestmark = pytest.mark.django_db(transaction=True)


def page_settled(driver: Any) -> bool:
    """The page finished loading; a page that is being replaced reads as not settled."""
    from selenium.common.exceptions import WebDriverException

    try:
        return driver.execute_script("return document.readyState") == "complete"
    except WebDriverException:
        return False


def submit_provider_form(driver: Any, wait: Any, **fields: str) -> None:
    """Fill the provider's (devInteractions) form, press its button and wait for the next page.

    The provider's pages redirect among themselves; an element can vanish between finding and
    clicking it, so a step that raced a navigation is tried again on the page that replaced it.
    """
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    for attempt in range(3):
        wait.until(page_settled)
        try:
            button = wait.until(
                ec.element_to_be_clickable(
                    (By.CSS_SELECTOR, "form button[type=submit], form button")
                )
            )
            for name, value in fields.items():
                field = driver.find_element(By.NAME, name)
                field.clear()
                field.send_keys(value)
            button.click()
        except (StaleElementReferenceException, WebDriverException):
            if attempt == 2:
                raise
            continue
        wait.until(detached(button))
        return


def detached(element: Any) -> Any:
    """Selenium's ``staleness_of``, also reading chromedriver's "Node ... does not belong to the
    document" (what newer versions answer for a node of a page that was replaced) as gone."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    def gone(_driver: Any) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return gone


def test_browser_logs_in_through_the_provider(chrome, web_idp, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 20)
    chrome.get(f"{live_server.url}/oidc/login/")
    link = wait.until(ec.element_to_be_clickable((By.LINK_TEXT, "Sign in with Test IdP")))
    assert screenshot(chrome, "login-page.png").stat().st_size > 0
    link.click()

    wait.until(ec.url_contains(web_idp.issuer))
    submit_provider_form(chrome, wait, login="alice", password="any-password")
    wait.until(
        lambda driver: (
            page_settled(driver)
            and (
                driver.current_url.startswith(live_server.url)
                or driver.find_elements(By.TAG_NAME, "form")
            )
        )
    )
    if chrome.current_url.startswith(web_idp.issuer):  # the consent form
        screenshot(chrome, "provider-consent-page.png")
        submit_provider_form(chrome, wait)

    wait.until(ec.url_to_be(f"{live_server.url}/oidc/tokens/"))
    heading = wait.until(ec.presence_of_element_located((By.TAG_NAME, "h1")))
    assert heading.text == "Signed in as alice"
    assert screenshot(chrome, "logged-in-page.png").stat().st_size > 0
    assert Identity.objects.filter(issuer=web_idp.issuer, subject="alice").exists()
    cookie = chrome.get_cookie("sessionid")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    chrome.find_element(By.ID, "create-token").click()
    token = wait.until(ec.presence_of_element_located((By.ID, "access-token"))).text
    assert token.count(".") == 2

    chrome.get(f"{live_server.url}/auth/whoami/?format=json")
    assert '"username":"alice"' in chrome.find_element(By.TAG_NAME, "body").text.replace(" ", "")

    chrome.get(f"{live_server.url}/oidc/tokens/")
    chrome.find_element(By.ID, "logout").click()
    wait.until(ec.url_contains(web_idp.metadata["end_session_endpoint"]))
    chrome.get(f"{live_server.url}/auth/whoami/?format=json")
    assert "alice" not in chrome.find_element(By.TAG_NAME, "body").text


def test_cancel_at_the_provider_shows_a_readable_page(chrome, web_idp, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 20)
    chrome.get(f"{live_server.url}/oidc/login/test-idp/")
    submit_provider_form(chrome, wait, login="bob", password="any-password")
    wait.until(ec.element_to_be_clickable((By.PARTIAL_LINK_TEXT, "Cancel"))).click()
    wait.until(ec.url_contains(f"{live_server.url}/oidc/callback/"))
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Sign-in failed"
    assert "cancelled" in chrome.find_element(By.CLASS_NAME, "error").text
    screenshot(chrome, "cancelled-page.png")
    assert not Identity.objects.filter(subject="bob").exists()


def test_an_idp_user_approves_the_cli_device_code(
    chrome, web_idp, oauth_live_server, cli_env, settings
):
    """``epochauth login --group physics``: the browser opens the complete verification URI, our sign-in
    page sends it to the provider of that group, a user who is not staff signs in there, finds the code
    filled in and approves."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    provider = {**settings.EPOCHAUTH["ISSUERS"][0], "default_groups": ["physics"]}
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [provider]}
    server = oauth_live_server.url
    # A bearer token, read from its file below by plain requests (the bound login end to end is
    # tests/test_client_cli.py's).
    process, lines = start_login(
        cli_env, server, "--no-browser", "--no-dpop", "--group", "physics"
    )
    try:
        assert lines[1].startswith("or open "), lines
        complete = lines[1].removeprefix("or open ").strip()
        wait = WebDriverWait(chrome, 20)
        chrome.get(complete)
        # physics is the provider's group: the sign-in page sends the browser straight on
        wait.until(ec.url_contains(web_idp.issuer))
        submit_provider_form(chrome, wait, login="alice", password="any-password")
        wait.until(
            lambda driver: page_settled(driver) and driver.find_elements(By.TAG_NAME, "form")
        )
        if chrome.current_url.startswith(web_idp.issuer):  # the consent form
            submit_provider_form(chrome, wait)
        wait.until(ec.url_contains(f"{server}/o/device/"))
        code = wait.until(ec.presence_of_element_located((By.NAME, "user_code")))
        assert code.get_attribute("value") == complete.rpartition("=")[2]
        screenshot(chrome, "device-code-page.png")
        submit_provider_form(chrome, wait)
        wait.until(ec.url_contains(f"{server}/o/device-confirm/"))
        screenshot(chrome, "device-confirm-page.png")
        assert "Act as member of physics" in chrome.find_element(By.TAG_NAME, "main").text
        wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "button[value=accept]"))).click()
        wait.until(ec.url_contains(f"{server}/o/device-grant-status/"))
        assert chrome.find_element(By.TAG_NAME, "h1").text == "Device approved"
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()  # else it would poll until the device code expires
            process.communicate()
    assert process.returncode == 0, (stdout, stderr)
    token = next(Path(cli_env["XDG_RUNTIME_DIR"]).glob("bt_u*")).read_text().strip()
    alice = Identity.objects.get(issuer=web_idp.issuer, subject="alice").user
    assert not alice.is_staff
    whoami = requests.get(
        f"{server}/auth/whoami/", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert whoami.status_code == 200 and whoami.json()["username"] == alice.username
    assert jwt.decode(token, options={"verify_signature": False})["group"] == "physics"


def sign_in_with_chrome(chrome: Any, wait: Any, site: str, idp_url: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    chrome.get(f"{site}/oidc/login/test-idp/")
    submit_provider_form(chrome, wait, login="alice", password="any-password")
    wait.until(
        lambda driver: (
            page_settled(driver)
            and (driver.current_url.startswith(site) or driver.find_elements(By.TAG_NAME, "form"))
        )
    )
    if chrome.current_url.startswith(idp_url):  # the consent form
        submit_provider_form(chrome, wait)
    wait.until(ec.url_to_be(f"{site}/oidc/tokens/"))


def whoami_page(chrome: Any, site: str) -> str:
    from selenium.webdriver.common.by import By

    chrome.get(f"{site}/auth/whoami/?format=json")
    return chrome.find_element(By.TAG_NAME, "body").text.replace(" ", "")


#: Long enough for a loaded machine to sign out at the provider within it.
INTERVAL = 4


def test_signing_out_at_a_provider_without_back_channel_logout_ends_our_session(
    chrome, web_idp, live_server, settings
):
    """The provider sends no back-channel logout: after ``OIDC_SESSION_CHECK_INTERVAL`` a page load
    asks it (``prompt=none``); while the user is signed in there that is silent, once signed out there
    (``login_required``) our session ends."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "OIDC_SESSION_CHECK_INTERVAL": timedelta(seconds=INTERVAL),
    }
    site, wait = live_server.url, WebDriverWait(chrome, 20)
    sign_in_with_chrome(chrome, wait, site, web_idp.issuer)
    time.sleep(INTERVAL + 0.1)
    assert '"username":"alice"' in whoami_page(chrome, site)  # re-checked, silently
    assert chrome.current_url == f"{site}/auth/whoami/?format=json"

    chrome.get(f"{web_idp.metadata['end_session_endpoint']}?client_id=web-client")
    sign_out = (By.CSS_SELECTOR, "button[name=logout][value=yes]")
    button = wait.until(ec.element_to_be_clickable(sign_out))
    button.click()  # "Yes, sign me out"
    wait.until(detached(button))
    assert '"username":"alice"' in whoami_page(chrome, site)  # within the interval: not asked
    time.sleep(INTERVAL + 0.1)
    assert "alice" not in whoami_page(chrome, site)
    assert chrome.current_url == f"{site}/auth/whoami/?format=json"


@pytest.mark.parametrize("interval", [0, timedelta(0), "15m"])
def test_a_bad_session_check_interval_is_a_system_check_error(settings, interval):
    from epochauth.checks import check_settings

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OIDC_SESSION_CHECK_INTERVAL": interval}
    assert "epochauth.E023" in [error.id for error in check_settings(None)]
