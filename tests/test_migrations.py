"""The migrations describe the models as they are: a model change (a verbose name too) comes with
its migration, or installing sites would see ``makemigrations`` create one in the package."""

from __future__ import annotations

import io

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import override_settings
from oauth2_provider.settings import oauth2_settings

pytestmark = pytest.mark.django_db


# epochauth.oauth's migrations name DOT's application model through oauth2_settings; makemigrations
# reads the swappable setting itself, which a site need not define.
@override_settings(OAUTH2_PROVIDER_APPLICATION_MODEL=oauth2_settings.APPLICATION_MODEL)
def test_no_model_change_lacks_its_migration():
    ours = [
        config.label for config in apps.get_app_configs() if config.name.startswith("epochauth")
    ]
    out = io.StringIO()
    try:
        call_command("makemigrations", *ours, "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit:
        pytest.fail(f"makemigrations would create migrations:\n{out.getvalue()}")
    assert "No changes detected" in out.getvalue()
