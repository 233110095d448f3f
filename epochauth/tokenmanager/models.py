"""Upstream grants: one live refresh token per (user, issuer), encrypted; ended ones wait here until the
provider confirmed their revocation."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class UpstreamGrant(models.Model):
    """A provider's refresh token for a user. ``ended_at`` set: no longer handed out, to be revoked at
    the provider (``revoke_attempts`` and ``revoke_error`` say how that goes); deleted once it is."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
    )
    issuer = models.CharField(_("issuer"), max_length=255)
    #: Fernet token of the refresh token (``EPOCHAUTH["TOKEN_MANAGER_KEYS"]``); never shown.
    encrypted_token = models.TextField(_("encrypted refresh token"), editable=False)
    scope = models.TextField(_("scope"), blank=True)
    created = models.DateTimeField(_("created"), default=timezone.now)
    last_used = models.DateTimeField(_("last used"), null=True, blank=True)
    ended_at = models.DateTimeField(_("ended"), null=True, blank=True, db_index=True)
    end_reason = models.CharField(_("end reason"), max_length=64, blank=True)
    revoke_attempts = models.PositiveIntegerField(_("revocation attempts"), default=0)
    revoke_error = models.CharField(_("last revocation error"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("upstream grant")
        verbose_name_plural = _("upstream grants")
        ordering = ["-created"]
        permissions = [("obtain_upstream_token", _("Can obtain a user's upstream access token"))]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "issuer"],
                condition=models.Q(ended_at__isnull=True),
                name="epochauth_tokenmanager_one_live_grant",
            )
        ]

    def __str__(self) -> str:
        return f"{self.issuer} ({self.user_id})"
