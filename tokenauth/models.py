"""Identities, revocation state (epochs and the token denylist), refresh sessions and the audit log."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Identity(models.Model):
    """The caller as the pair (issuer, subject), mapped to one Django user."""

    issuer = models.CharField(_("issuer"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokenauth_identities"
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("identity")
        verbose_name_plural = _("identities")
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="tokenauth_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer}"


class Epoch(models.Model):
    """A revocation counter: tokens minted under an older value (or issued before ``not_before``) are dead.

    One row per user, per group, and one global row; rows exist only once something was bumped.
    """

    class Kind(models.TextChoices):
        USER = "user", _("user")
        GROUP = "group", _("group")
        GLOBAL = "global", _("global")

    kind = models.CharField(_("kind"), max_length=8, choices=Kind.choices)
    object_id = models.CharField(
        _("object id"),
        max_length=64,
        blank=True,
        help_text=_("Primary key of the user or group; empty for global."),
    )
    value = models.PositiveIntegerField(_("epoch"), default=0)
    not_before = models.DateTimeField(_("not before"), null=True, blank=True)
    bumped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("epoch")
        verbose_name_plural = _("epochs")
        constraints = [models.UniqueConstraint(fields=["kind", "object_id"], name="tokenauth_epoch_unique")]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id}: {self.value}"


class RevokedToken(models.Model):
    """One denied token id (``jti``) or session id (``sid``), kept until every token it names expired."""

    jti = models.CharField(_("token or session id"), max_length=255, unique=True)
    expires_at = models.DateTimeField(_("expires"), db_index=True)
    revoked_at = models.DateTimeField(_("revoked"), default=timezone.now)
    reason = models.CharField(_("reason"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("revoked token")
        verbose_name_plural = _("revoked tokens")

    def __str__(self) -> str:
        return self.jti


class Session(models.Model):
    """A refresh-token family. Only a hash of the current refresh secret is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tokenauth_sessions"
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires"), db_index=True)
    remember_me = models.BooleanField(_("remember me"), default=False)
    user_agent = models.CharField(_("user agent"), max_length=255, blank=True)
    scope = models.CharField(_("scope"), max_length=1024, blank=True)
    group = models.ForeignKey("auth.Group", null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    refresh_hash = models.CharField(max_length=64, editable=False)
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        ordering = ["-last_used_at"]

    def __str__(self) -> str:
        return f"{self.user} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class AuditEvent(models.Model):
    """Security-relevant things that happened: logins, revocations, bumps. Never holds a token."""

    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    action = models.CharField(_("action"), max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"
