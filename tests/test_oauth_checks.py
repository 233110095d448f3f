"""System checks of the DOT settings that epochauth.oauth needs (epochauth/oauth/checks.py)."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks

from epochauth.oauth.checks import check_oauth_settings
from epochauth.oauth.server import Server


class MyServer(Server):
    """A project's own server class built on ours."""


def ids(settings, **changes: object) -> list[str]:
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, **changes}
    return [message.id for message in check_oauth_settings()]


def test_the_test_project_passes(settings):
    assert ids(settings) == []


def test_registered_by_the_app(settings):
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "ROTATE_REFRESH_TOKEN": False}
    assert "epochauth.oauth.E002" in {m.id for m in run_checks(tags=["security"])}


@pytest.mark.parametrize(
    "name, value",
    [
        ("OAUTH2_SERVER_CLASS", "oauthlib.oauth2.Server"),  # DOT's opaque tokens
        ("OAUTH2_VALIDATOR_CLASS", "oauth2_provider.oauth2_validators.OAuth2Validator"),
        ("SCOPES_BACKEND_CLASS", "oauth2_provider.scopes.SettingsScopes"),
        ("OAUTH2_VALIDATOR_CLASS", "epochauth.oauth.validators.NoSuchValidator"),
    ],
)
def test_e001_classes_are_ours(settings, name, value):
    assert ids(settings, **{name: value}) == ["epochauth.oauth.E001"]


def test_e001_accepts_subclasses(settings):
    assert ids(settings, OAUTH2_SERVER_CLASS="tests.test_oauth_checks.MyServer") == []


def test_e001_when_the_settings_are_missing(settings):
    settings.OAUTH2_PROVIDER = {"OAUTH_DEVICE_VERIFICATION_URI": "https://example.org/o/device/"}
    found = [message.id for message in check_oauth_settings()]
    assert found == ["epochauth.oauth.E001"] * 3 + [
        "epochauth.oauth.E002"
    ]  # reuse protection is off


@pytest.mark.parametrize("name", ["ROTATE_REFRESH_TOKEN", "REFRESH_TOKEN_REUSE_PROTECTION"])
def test_e002_rotation_and_reuse_protection(settings, name):
    assert ids(settings, **{name: False}) == ["epochauth.oauth.E002"]


def test_e003_grace_period(settings):
    assert ids(settings, REFRESH_TOKEN_GRACE_PERIOD_SECONDS=60) == ["epochauth.oauth.E003"]


def test_w001_device_verification_uri(settings):
    assert ids(settings, OAUTH_DEVICE_VERIFICATION_URI=None) == ["epochauth.oauth.W001"]


def test_e005_rp_initiated_logout_always_asks(settings):
    logout = {"OIDC_ENABLED": True, "OIDC_RP_INITIATED_LOGOUT_ENABLED": True}
    assert "epochauth.oauth.E005" in ids(
        settings, **logout, OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT=False
    )
    assert "epochauth.oauth.E005" not in ids(
        settings,
        **logout,
        OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT=True,  # DOT's default
    )
