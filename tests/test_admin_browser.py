"""The admin pages an admin uses to take access away, in a real Chromium: the user's page (sessions,
identities, OAuth grants, "Revoke all tokens and sessions" with a reason), the group's page, the epochs
and the audit log. Screenshots go to ``${TMPDIR:-/tmp}/epochauth-artifacts/admin/`` (CI artifacts)."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from epochauth.models import Epoch, Identity, Session
from tests.browser import screenshot
from tests.helpers import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def admin_login(chrome: Any, base: str) -> Any:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    get_user_model().objects.create_superuser("root", "root@example.com", "root-pw")
    chrome.get(f"{base}/admin/login/")
    chrome.find_element(By.NAME, "username").send_keys("root")
    chrome.find_element(By.NAME, "password").send_keys("root-pw")
    chrome.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    wait = WebDriverWait(chrome, 20)
    wait.until(lambda driver: driver.current_url.rstrip("/").endswith("/admin"))
    return wait


def api_login(base: str, username: str, **extra: Any) -> dict[str, Any]:
    body = {"username": username, "password": "pw", **extra}
    response = requests.post(
        f"{base}/auth/token/", json=body, headers={"User-Agent": "reports-cli/1.2"}
    )
    response.raise_for_status()
    return response.json()


def hello(base: str, token: str) -> int:
    return requests.get(
        f"{base}/api/hello/", headers={"Authorization": f"Bearer {token}"}
    ).status_code


def object_tool_style(chrome: Any, selector: str) -> list[str]:
    """What makes an object-tools link look like one: its colours, shape and lettering."""
    return chrome.execute_script(
        "const s = getComputedStyle(document.querySelector(arguments[0]));"
        "return [s.backgroundColor, s.color, s.borderRadius, s.textTransform, s.fontSize,"
        " s.fontWeight, s.letterSpacing, s.paddingTop, s.paddingLeft, s.borderTopWidth];",
        selector,
    )


def test_admin_revokes_a_user_and_a_group_from_their_pages(chrome, live_server):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    base = live_server.url
    alice = make_user("alice", groups=["operators"])
    first, second = api_login(base, "alice"), api_login(base, "alice", group="operators")
    Identity.objects.create(issuer="https://idp.example.org", subject="alice@idp", user=alice)
    wait = admin_login(chrome, base)

    chrome.get(f"{base}/admin/auth/user/{alice.pk}/change/")
    page = chrome.find_element(By.TAG_NAME, "body").text
    assert "reports-cli/1.2" in page and "alice@idp" in page
    assert first["access_token"] not in chrome.page_source
    screenshot(chrome, "admin/user-page.png")
    chrome.execute_script("document.querySelector('.field-token_sessions').scrollIntoView()")
    screenshot(chrome, "admin/user-page-sessions.png")

    # End one session from the user's page: the other keeps working.
    chrome.find_elements(By.XPATH, "//button[normalize-space()='End session']")[0].click()
    wait.until(
        ec.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".messagelist"), "The session was ended."
        )
    )
    assert Session.objects.filter(user=alice, revoked_at__isnull=False).count() == 1
    assert sorted([hello(base, first["access_token"]), hello(base, second["access_token"])]) == [
        200,
        401,
    ]
    chrome.execute_script("document.querySelector('.field-token_sessions').scrollIntoView()")
    screenshot(chrome, "admin/user-page-session-ended.png")

    # The group's page: the session that selected it ends.
    group = Group.objects.get(name="operators")
    third = api_login(base, "alice", group="operators")
    chrome.get(f"{base}/admin/auth/group/{group.pk}/change/")
    reason = chrome.find_element(By.CSS_SELECTOR, "#epochauth-revoke input[name=reason]")
    reason.send_keys("rotating operators")
    screenshot(chrome, "admin/group-page.png")
    chrome.find_element(By.CSS_SELECTOR, "#epochauth-revoke button").click()
    wait.until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".messagelist"), "rotating operators")
    )
    assert hello(base, third["access_token"]) == 401

    # Everything of the user, with a reason.
    chrome.get(f"{base}/admin/auth/user/{alice.pk}/change/")
    reason = chrome.find_element(By.CSS_SELECTOR, "#epochauth-revoke input[name=reason]")
    reason.send_keys("laptop stolen")
    # The button looks like its neighbour, Django's "History" link.
    assert object_tool_style(chrome, "#epochauth-revoke button") == object_tool_style(
        chrome, ".object-tools a.historylink"
    )
    chrome.find_element(By.CSS_SELECTOR, "#epochauth-revoke button").click()
    wait.until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, ".messagelist"), "laptop stolen")
    )
    screenshot(chrome, "admin/user-page-revoked.png")
    assert not chrome.find_elements(By.XPATH, "//button[normalize-space()='End session']")
    assert hello(base, first["access_token"]) == hello(base, second["access_token"]) == 401
    assert Epoch.objects.get(kind="user", object_id=str(alice.pk)).reason == "laptop stolen"

    chrome.get(f"{base}/admin/epochauth/epoch/")
    assert (
        chrome.find_element(By.LINK_TEXT, "alice")
        .get_attribute("href")
        .endswith(f"/admin/auth/user/{alice.pk}/change/")
    )
    assert chrome.find_element(By.LINK_TEXT, "operators")
    screenshot(chrome, "admin/epochs.png")

    chrome.get(f"{base}/admin/epochauth/auditevent/")
    chrome.find_elements(By.LINK_TEXT, "alice")[0].click()
    wait.until(ec.url_contains(f"/admin/auth/user/{alice.pk}/change/"))
    chrome.get(f"{base}/admin/epochauth/auditevent/")
    screenshot(chrome, "admin/audit-events.png")
