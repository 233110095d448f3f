"""Per-application scope limits (DOT's Application has no such field)."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings

from epochauth import urns
from epochauth.scopes import split_scope


class AllowedScopes(models.Model):
    """The scopes one application may obtain; an application without a row may obtain every user
    scope, never a service scope.

    ``g:*`` allows any group selection; ``g:<name>`` one group. A service scope listed here (for one,
    ``TOKEN_MANAGER_SCOPE``) marks a confidential application as that service: its client-credentials
    grant may obtain the scope.
    """

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_scopes",
        verbose_name=_("application"),
    )
    scopes = models.TextField(
        _("allowed scopes"),
        blank=True,
        help_text=_(
            "Space-separated. g:* allows any group, g:<name> one group. A service scope (such as "
            "tokenmanager, the Token Manager's) listed here makes this confidential application "
            "that service: its client-credentials tokens may hold the scope, and removing it ends "
            "their Token Manager access at once."
        ),
    )

    class Meta:
        verbose_name = _("allowed scopes")
        verbose_name_plural = _("allowed scopes")

    def __str__(self) -> str:
        return self.scopes

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(split_scope(self.scopes))


class ClientRegistration(models.Model):
    """An application registered at ``/o/register/`` (RFC 7591): the SHA-256 of its registration
    access token, which reads, replaces and deletes the registration (RFC 7592). The token itself was
    in the registration's answer only."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_registration",
        verbose_name=_("application"),
    )
    token_digest = models.CharField(
        _("registration access token (SHA-256)"), max_length=64, editable=False
    )

    class Meta:
        verbose_name = _("client registration")
        verbose_name_plural = _("client registrations")

    def __str__(self) -> str:
        return str(self.application)


CLI_CLIENT_ID = "epochauth-cli"


def ensure_cli_application(application_model: Any) -> None:
    """The default public client for command-line logins (device flow); used by a data migration."""
    application_model.objects.get_or_create(
        client_id=CLI_CLIENT_ID,
        defaults={
            "name": "epochauth command-line client",
            "client_type": "public",
            "authorization_grant_type": urns.DEVICE_CODE,
            "client_secret": "",
            "hash_client_secret": False,
        },
    )
