import django.db.models.deletion
import django.utils.timezone
import epochauth.oauth.models
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings


class Migration(migrations.Migration):
    dependencies = [
        ("epochauth_oauth", "0005_client_registration"),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="BackchannelLogout",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "uri",
                    models.CharField(
                        help_text="backchannel_logout_uri: logout tokens are POSTed here.",
                        max_length=2000,
                        validators=[epochauth.oauth.models.validate_backchannel_uri],
                        verbose_name="back-channel logout URI",
                    ),
                ),
                (
                    "session_required",
                    models.BooleanField(
                        default=False,
                        help_text="backchannel_logout_session_required: every logout token names the session (sid) it ends.",
                        verbose_name="session required",
                    ),
                ),
                (
                    "application",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="epochauth_backchannel",
                        to=oauth2_settings.APPLICATION_MODEL,
                        verbose_name="application",
                    ),
                ),
            ],
            options={
                "verbose_name": "back-channel logout",
                "verbose_name_plural": "back-channel logouts",
            },
        ),
        migrations.CreateModel(
            name="LogoutDelivery",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("subject", models.CharField(max_length=255, verbose_name="subject")),
                ("sid", models.CharField(blank=True, max_length=64, verbose_name="session id")),
                (
                    "jti",
                    models.CharField(max_length=64, unique=True, verbose_name="logout token id"),
                ),
                (
                    "state",
                    models.CharField(
                        choices=[
                            ("pending", "pending"),
                            ("delivered", "delivered"),
                            ("failed", "given up"),
                        ],
                        default="pending",
                        max_length=16,
                        verbose_name="state",
                    ),
                ),
                ("attempts", models.PositiveIntegerField(default=0, verbose_name="attempts")),
                (
                    "next_attempt_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now, verbose_name="next attempt"
                    ),
                ),
                (
                    "last_error",
                    models.CharField(blank=True, max_length=255, verbose_name="last error"),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created")),
                (
                    "delivered_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="delivered"),
                ),
                (
                    "application",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to=oauth2_settings.APPLICATION_MODEL,
                        verbose_name="application",
                    ),
                ),
            ],
            options={
                "verbose_name": "logout delivery",
                "verbose_name_plural": "logout deliveries",
                "ordering": ("-created_at",),
                "permissions": [("retry_logoutdelivery", "Can retry logout deliveries")],
                "indexes": [
                    models.Index(
                        fields=["state", "next_attempt_at"], name="epochauth_o_state_5118a9_idx"
                    )
                ],
            },
        ),
    ]
