import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [migrations.swappable_dependency(settings.AUTH_USER_MODEL)]

    operations = [
        migrations.CreateModel(
            name="UpstreamGrant",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("issuer", models.CharField(max_length=255, verbose_name="issuer")),
                ("encrypted_token", models.TextField(editable=False, verbose_name="encrypted refresh token")),
                ("scope", models.TextField(blank=True, verbose_name="scope")),
                ("created", models.DateTimeField(default=django.utils.timezone.now, verbose_name="created")),
                ("last_used", models.DateTimeField(blank=True, null=True, verbose_name="last used")),
                ("ended_at", models.DateTimeField(blank=True, db_index=True, null=True, verbose_name="ended")),
                ("end_reason", models.CharField(blank=True, max_length=64, verbose_name="end reason")),
                ("revoke_attempts", models.PositiveIntegerField(default=0, verbose_name="revocation attempts")),
                ("revoke_error", models.CharField(blank=True, max_length=255, verbose_name="last revocation error")),
                (
                    "user",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE, related_name="+", to=settings.AUTH_USER_MODEL
                    ),
                ),
            ],
            options={
                "verbose_name": "upstream grant",
                "verbose_name_plural": "upstream grants",
                "ordering": ["-created"],
                "permissions": [("obtain_upstream_token", "Can obtain a user's upstream access token")],
                "constraints": [
                    models.UniqueConstraint(
                        condition=models.Q(("ended_at__isnull", True)),
                        fields=("user", "issuer"),
                        name="epochauth_tokenmanager_one_live_grant",
                    )
                ],
            },
        ),
    ]
