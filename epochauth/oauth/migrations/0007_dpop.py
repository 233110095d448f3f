import django.db.models.deletion
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings


class Migration(migrations.Migration):
    dependencies = [
        ("epochauth_oauth", "0006_backchannel_logout"),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="DPoPBinding",
            fields=[
                ("family", models.UUIDField(primary_key=True, serialize=False, verbose_name="token family")),
                ("jkt", models.CharField(max_length=64, verbose_name="DPoP key thumbprint")),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created")),
            ],
            options={"verbose_name": "DPoP binding", "verbose_name_plural": "DPoP bindings"},
        ),
        migrations.CreateModel(
            name="DPoPPolicy",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                (
                    "required",
                    models.BooleanField(
                        default=True,
                        help_text="Refuse this application's token requests without a DPoP proof: its access tokens are all bound to a key (dpop_bound_access_tokens, RFC 9449 section 5.2).",
                        verbose_name="DPoP required",
                    ),
                ),
                (
                    "application",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="epochauth_dpop",
                        to=oauth2_settings.APPLICATION_MODEL,
                        verbose_name="application",
                    ),
                ),
            ],
            options={"verbose_name": "DPoP policy", "verbose_name_plural": "DPoP policies"},
        ),
    ]
