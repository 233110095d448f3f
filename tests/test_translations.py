"""Translations: the French catalog answers ``Accept-Language: fr`` in error bodies and pages, while
``WWW-Authenticate`` stays English ASCII (RFC 6750 section 3); the catalog covers every marked
message and its compiled form is up to date."""

from __future__ import annotations

import gettext
import io
import os
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.apps import apps
from django.test import Client
from django.utils import translation
from django.utils.functional import Promise

import epochauth
from epochauth import revocation
from epochauth.exceptions import InvalidToken
from epochauth.models import Epoch, Issuer, Session
from epochauth.tokens import mint_access_token
from epochauth.verification import check_claims, local_policy
from tests.conftest import service_required
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

FRENCH = {"HTTP_ACCEPT_LANGUAGE": "fr"}
PACKAGE = Path(epochauth.__file__).parent
CATALOG = PACKAGE / "locale" / "fr" / "LC_MESSAGES"


@pytest.fixture(autouse=True)
def english_afterwards():
    """LocaleMiddleware leaves the last request's language active in the thread (each request sets its
    own): the tests after these ones must not read French."""
    yield
    translation.deactivate()


def post_json(client: Client, path: str, data: dict, **extra: str):
    return client.post(path, data, content_type="application/json", **extra)


# -- API errors --------------------------------------------------------------------------------


def test_a_bad_token_is_refused_in_french_with_an_english_challenge(client):
    response = client.get("/api/hello/", HTTP_AUTHORIZATION="Bearer not-a-jwt", **FRENCH)
    assert response.status_code == 401
    assert response.json()["detail"] == "Le jeton d'accès est mal formé"
    challenge = response["WWW-Authenticate"]
    assert 'error_description="The access token is malformed"' in challenge
    assert challenge.isascii()
    assert response["Content-Language"] == "fr"


def test_an_expired_token_says_so_in_french(client):
    access = mint_access_token(make_user("alice"), lifetime=timedelta(hours=-1)).token
    response = client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {access}", **FRENCH)
    assert response.status_code == 401
    assert response.json()["detail"] == "Le jeton d'accès a expiré"
    assert 'error_description="The access token expired"' in response["WWW-Authenticate"]


def test_without_accept_language_the_answer_stays_english(client):
    response = client.get("/api/hello/", HTTP_AUTHORIZATION="Bearer not-a-jwt")
    assert response.json()["detail"] == "The access token is malformed"


def test_a_bad_login_is_described_in_french(client):
    make_user("alice")
    response = post_json(
        client, "/auth/token/", {"username": "alice", "password": "wrong"}, **FRENCH
    )
    assert response.status_code == 401
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Nom d'utilisateur ou mot de passe invalide",
    }


def test_a_bad_refresh_token_is_described_in_french(client):
    response = post_json(client, "/auth/token/refresh/", {"refresh_token": "nope.nope"}, **FRENCH)
    assert response.status_code == 400
    assert response.json() == {
        "error": "invalid_grant",
        "error_description": "Le jeton de rafraîchissement est invalide",
    }


def test_a_reused_refresh_token_is_described_in_french(client):
    make_user("alice")
    refresh_token = login(client, "alice")["refresh_token"]
    assert (
        post_json(client, "/auth/token/refresh/", {"refresh_token": refresh_token}).status_code
        == 200
    )
    reused = post_json(client, "/auth/token/refresh/", {"refresh_token": refresh_token}, **FRENCH)
    assert reused.status_code == 400
    assert reused.json()["error_description"] == (
        "Le jeton de rafraîchissement a déjà été utilisé ; la session est révoquée"
    )


def test_a_parametrised_description_keeps_its_value(client):
    make_user("alice")
    body = {"username": "alice", "password": "pw", "scope": "no-such-scope"}
    response = post_json(client, "/auth/token/", body, **FRENCH)
    assert response.status_code == 400
    assert response.json()["error_description"] == "Portée inconnue : no-such-scope"


def test_a_formatted_description_is_french_in_the_body_and_english_in_the_header():
    with pytest.raises(InvalidToken) as refused:
        check_claims({"iss": "https://issuer.example"}, local_policy())
    # Lazy: the text is chosen when it is read, in the language active then.
    with translation.override("fr"):
        assert (
            str(refused.value.description) == "Le jeton d'accès n'a pas de revendication « sub »"
        )
        assert refused.value.header_description == "The access token has no 'sub' claim"
    assert str(refused.value.description) == "The access token has no 'sub' claim"


# -- pages -------------------------------------------------------------------------------------


def test_the_sign_in_page_in_french():
    response = Client().get("/oidc/login/", **FRENCH)
    assert response.status_code == 200
    page = response.content.decode()
    assert '<html lang="fr">' in page
    assert "<title>Se connecter</title>" in page
    # "Username" and "Password" are Django's msgids too: an app listed before epochauth may word them.
    assert "Mot de passe" in page and "Username" not in page
    assert "Sign in" not in page


def test_the_device_pages_in_french():
    browser = Client()
    browser.force_login(make_user("carol"))
    page = browser.get("/o/device/", **FRENCH).content.decode()
    assert "<h1>Connecter un appareil</h1>" in page
    assert "Connecté en tant que carol. Saisissez le code affiché par votre appareil." in page
    unknown = browser.get("/o/device/", {"user_code": "NOPE1234"}, **FRENCH)
    assert unknown.status_code == 404
    assert "Code inconnu" in unknown.content.decode()


def test_an_admin_action_and_its_message_in_french(admin_client):
    issuers = [Issuer.objects.create(issuer=f"https://idp{n}.example.org") for n in range(2)]
    page = admin_client.get("/admin/epochauth/issuer/", **FRENCH).content.decode()
    assert "Désactiver les émetteurs sélectionnés" in page
    response = admin_client.post(
        "/admin/epochauth/issuer/",
        {"action": "disable", "_selected_action": [str(i.pk) for i in issuers]},
        follow=True,
        **FRENCH,
    )
    assert "2 émetteurs désactivés." in response.content.decode()


def test_model_fields_are_named_in_french(admin_client):
    """Column headers come from the fields' verbose names, a ForeignKey's too (whose first argument
    is the model, so its name is given as ``verbose_name``)."""
    alice = make_user("alice")
    revocation.bump_epoch(Epoch.Kind.USER, str(alice.pk), actor=alice, reason="test")
    page = admin_client.get("/admin/epochauth/epoch/", **FRENCH).content.decode()
    assert "Époque incrémentée par" in page
    with translation.override("fr"):
        assert Session._meta.get_field("user").verbose_name == "utilisateur"
        assert Session._meta.verbose_name_plural == "sessions"
        assert Issuer._meta.get_field("default_groups").verbose_name == "groupes par défaut"


def test_every_model_field_has_a_translatable_name():
    """Each field of our apps' models (but the automatic ``id``) and each model name is marked for
    translation: an unmarked one is derived from the attribute and stays English."""
    unmarked = []
    for config in apps.get_app_configs():
        if config.name.split(".")[0] != "epochauth":
            continue
        for model in config.get_models():
            names = [("Meta", model._meta.verbose_name), ("Meta", model._meta.verbose_name_plural)]
            names += [
                (field.name, field.verbose_name)
                for field in model._meta.get_fields()
                if field.concrete and not field.auto_created
            ]
            unmarked += [
                f"{model.__name__}.{where}"
                for where, name in names
                if not isinstance(name, Promise)
            ]
    assert unmarked == []


# -- the catalog -------------------------------------------------------------------------------


def gettext_tools() -> None:
    """msgfmt and xgettext, which makemessages and compilemessages run too."""
    for tool in ("msgfmt", "xgettext", "msgmerge"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(tool)


def compiled(po: Path, tmp_path: Path) -> tuple[dict, str]:
    """The catalog ``po`` compiles to, and msgfmt's statistics (which name fuzzy and untranslated
    entries when there are any)."""
    mo = tmp_path / f"{po.parent.parent.name}-{abs(hash(po))}.mo"
    result = subprocess.run(
        ["msgfmt", "--check", "--statistics", "-o", str(mo), str(po)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    return catalog(mo), result.stderr


def catalog(mo: Path) -> dict:
    with mo.open("rb") as file:
        return dict(gettext.GNUTranslations(io.BytesIO(file.read()))._catalog)  # type: ignore[attr-defined]


def test_the_french_catalog_is_complete_and_compiled(tmp_path):
    service_required("gettext tools", gettext_tools, FileNotFoundError)
    messages, statistics = compiled(CATALOG / "django.po", tmp_path)
    assert "fuzzy" not in statistics and "untranslated" not in statistics, statistics
    assert catalog(CATALOG / "django.mo") == messages, "django.mo is stale: run compilemessages"
    assert messages[""].startswith("Project-Id-Version"), "the header must not be fuzzy"


def test_the_french_catalog_covers_every_marked_message(tmp_path):
    """makemessages over a copy of the package finds no message the catalog lacks or no longer needs."""
    service_required("gettext tools", gettext_tools, FileNotFoundError)
    copy = tmp_path / "epochauth"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-m", "django", "makemessages", "-l", "fr", "--no-obsolete"],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    regenerated, statistics = compiled(
        copy / "locale" / "fr" / "LC_MESSAGES" / "django.po", tmp_path
    )
    assert "fuzzy" not in statistics and "untranslated" not in statistics, statistics
    committed = compiled(CATALOG / "django.po", tmp_path)[0]
    # The header differs by its creation date only.
    del regenerated[""], committed[""]
    assert regenerated == committed
