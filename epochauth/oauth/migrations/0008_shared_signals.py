import uuid

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models
from oauth2_provider.settings import oauth2_settings


class Migration(migrations.Migration):
    dependencies = [
        ("epochauth_oauth", "0007_dpop"),
        migrations.swappable_dependency(oauth2_settings.APPLICATION_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name="SSFStream",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "stream_id",
                    models.UUIDField(
                        default=uuid.uuid4, editable=False, unique=True, verbose_name="stream id"
                    ),
                ),
                (
                    "audience",
                    models.CharField(editable=False, max_length=2000, verbose_name="audience"),
                ),
                (
                    "events_requested",
                    models.JSONField(blank=True, default=list, verbose_name="events requested"),
                ),
                (
                    "method",
                    models.CharField(
                        choices=[
                            ("urn:ietf:rfc:8935", "push (RFC 8935)"),
                            ("urn:ietf:rfc:8936", "poll (RFC 8936)"),
                        ],
                        max_length=32,
                        verbose_name="delivery method",
                    ),
                ),
                (
                    "endpoint_url",
                    models.CharField(
                        blank=True,
                        help_text="Push delivery only.",
                        max_length=2000,
                        verbose_name="push endpoint",
                    ),
                ),
                (
                    "authorization_header",
                    models.CharField(
                        blank=True,
                        editable=False,
                        max_length=2000,
                        verbose_name="authorization header",
                    ),
                ),
                (
                    "description",
                    models.CharField(blank=True, max_length=255, verbose_name="description"),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("enabled", "enabled"),
                            ("paused", "paused"),
                            ("disabled", "disabled"),
                        ],
                        default="enabled",
                        max_length=16,
                        verbose_name="status",
                    ),
                ),
                (
                    "status_reason",
                    models.CharField(blank=True, max_length=255, verbose_name="status reason"),
                ),
                (
                    "all_subjects",
                    models.BooleanField(
                        default=False,
                        help_text="Events about every user, not only the subjects the receiver added.",
                        verbose_name="all subjects",
                    ),
                ),
                (
                    "verified_at",
                    models.DateTimeField(blank=True, null=True, verbose_name="last verification"),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created")),
                (
                    "application",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="epochauth_ssf_streams",
                        to=oauth2_settings.APPLICATION_MODEL,
                        verbose_name="receiver",
                    ),
                ),
            ],
            options={
                "verbose_name": "shared signals stream",
                "verbose_name_plural": "shared signals streams",
                "ordering": ("-created_at",),
            },
        ),
        migrations.CreateModel(
            name="SSFEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
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
                ("jti", models.CharField(max_length=64, unique=True, verbose_name="event id")),
                ("event_type", models.CharField(max_length=255, verbose_name="event type")),
                ("claims", models.JSONField(verbose_name="claims")),
                (
                    "stream",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="epochauth_oauth.ssfstream",
                        verbose_name="stream",
                    ),
                ),
            ],
            options={
                "verbose_name": "shared signals event",
                "verbose_name_plural": "shared signals events",
                "ordering": ("-created_at",),
                "permissions": [("retry_ssfevent", "Can retry shared signals events")],
                "abstract": False,
                "indexes": [
                    models.Index(
                        fields=["state", "next_attempt_at"], name="epochauth_o_state_0ff435_idx"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="SSFSubject",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("user_id", models.CharField(max_length=64, verbose_name="user id")),
                ("subject", models.JSONField(verbose_name="subject")),
                ("created_at", models.DateTimeField(auto_now_add=True, verbose_name="created")),
                (
                    "stream",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="subjects",
                        to="epochauth_oauth.ssfstream",
                        verbose_name="stream",
                    ),
                ),
            ],
            options={
                "verbose_name": "shared signals subject",
                "verbose_name_plural": "shared signals subjects",
                "constraints": [
                    models.UniqueConstraint(
                        fields=("stream", "user_id"), name="epochauth_ssf_subject"
                    )
                ],
            },
        ),
    ]
