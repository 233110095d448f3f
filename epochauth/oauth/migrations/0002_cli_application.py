"""The default public client ``epochauth-cli``: command-line logins through the device flow."""

from django.db import migrations
from oauth2_provider.settings import oauth2_settings

from epochauth.oauth.models import CLI_CLIENT_ID, ensure_cli_application


def create(apps, schema_editor):
    ensure_cli_application(apps.get_model(*oauth2_settings.APPLICATION_MODEL.split(".")))


def remove(apps, schema_editor):
    apps.get_model(*oauth2_settings.APPLICATION_MODEL.split(".")).objects.filter(client_id=CLI_CLIENT_ID).delete()


class Migration(migrations.Migration):
    dependencies = [("epochauth_oauth", "0001_initial")]

    operations = [migrations.RunPython(create, remove)]
