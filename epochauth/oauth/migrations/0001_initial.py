import django.db.models.deletion
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("oauth2_provider", "0022_refreshtoken_token_family_index"),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="AllowedScopes",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("scopes", models.TextField(blank=True, help_text="Space-separated.", verbose_name="allowed scopes")),
                (
                    "application",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="epochauth_scopes",
                        to=oauth2_settings.APPLICATION_MODEL,
                    ),
                ),
            ],
            options={"verbose_name": "allowed scopes", "verbose_name_plural": "allowed scopes"},
        ),
    ]
