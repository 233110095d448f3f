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


def registration_ids(settings, mode: object, **changes: object) -> list[str]:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": mode}
    return ids(settings, **changes)


@pytest.mark.parametrize("mode", [None, "open", "authenticated"])
def test_client_registration_modes(settings, mode):
    assert registration_ids(settings, mode) == []


@pytest.mark.parametrize("mode", [True, "yes", "Open", ""])
def test_e006_client_registration_is_a_mode(settings, mode):
    assert registration_ids(settings, mode) == ["epochauth.oauth.E006"]


@pytest.mark.parametrize("pkce", [False, lambda client_id: True])
def test_e007_registered_public_clients_need_pkce(settings, pkce):
    assert registration_ids(settings, "open", PKCE_REQUIRED=pkce) == ["epochauth.oauth.E007"]
    assert registration_ids(settings, None, PKCE_REQUIRED=pkce) == []


def test_w002_dots_own_registration(settings):
    """DOT's registration views register confidential client-credentials clients: whether or not
    ours is on, its switch is a warning."""
    assert registration_ids(settings, None, DCR_ENABLED=True) == ["epochauth.oauth.W002"]
    assert registration_ids(settings, "open", DCR_ENABLED=True) == ["epochauth.oauth.W002"]


def test_w003_open_registration_without_a_rate(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION_THROTTLE_RATE": None}
    assert registration_ids(settings, "open") == ["epochauth.oauth.W003"]
    # An access token of a user is a limit of its own.
    assert registration_ids(settings, "authenticated") == []
