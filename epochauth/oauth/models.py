"""Per-application scope limits (DOT's Application has no such field)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
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


#: RFC 8252 section 7.3 loopback redirects (and relying parties on this machine), the only URIs
#: allowed over plain http.
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


def is_allowed_uri(uri: str) -> bool:
    """https, or http to a loopback host (RFC 8252 section 7.3); no fragment, userinfo or wildcard."""
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return False
    if "#" in uri or "@" in parts.netloc or not host or "*" in host:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK_HOSTS)


def validate_backchannel_uri(uri: str) -> None:
    if not is_allowed_uri(uri):
        raise ValidationError(
            _("A back-channel logout URI must be https, or http to a loopback address")
        )


class BackchannelLogout(models.Model):
    """Where an application (an OpenID relying party) is told that a user's session here ended
    (OpenID Connect Back-Channel Logout 1.0 section 2.2); DOT's Application has no such fields."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_backchannel",
        verbose_name=_("application"),
    )
    uri = models.CharField(
        _("back-channel logout URI"),
        max_length=2000,
        validators=[validate_backchannel_uri],
        help_text=_("backchannel_logout_uri: logout tokens are POSTed here."),
    )
    session_required = models.BooleanField(
        _("session required"),
        default=False,
        help_text=_(
            "backchannel_logout_session_required: every logout token names the session (sid) it ends."
        ),
    )

    class Meta:
        verbose_name = _("back-channel logout")
        verbose_name_plural = _("back-channel logouts")

    def __str__(self) -> str:
        return self.uri


class DPoPPolicy(models.Model):
    """Whether an application's token requests must carry a DPoP proof (RFC 9449); an application
    without a row may send one or not, as ``DPOP_REQUIRED`` says for the site."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_dpop",
        verbose_name=_("application"),
    )
    required = models.BooleanField(
        _("DPoP required"),
        default=True,
        help_text=_(
            "Refuse this application's token requests without a DPoP proof: its access tokens are "
            "all bound to a key (dpop_bound_access_tokens, RFC 9449 section 5.2)."
        ),
    )

    class Meta:
        verbose_name = _("DPoP policy")
        verbose_name_plural = _("DPoP policies")

    def __str__(self) -> str:
        return str(_("DPoP required") if self.required else _("DPoP optional"))


class DPoPBinding(models.Model):
    """The DPoP key a refresh-token family is bound to (RFC 9449 section 5: a public client's
    refresh tokens), or an authorization code's family by its ``dpop_jkt`` (section 10): its
    exchange, and a public client's refreshes, need a proof of that key. DOT's tokens have no
    such field; the family id (``RefreshToken.token_family``) outlives each rotation."""

    family = models.UUIDField(_("token family"), primary_key=True)
    jkt = models.CharField(_("DPoP key thumbprint"), max_length=64)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("DPoP binding")
        verbose_name_plural = _("DPoP bindings")

    def __str__(self) -> str:
        return f"{self.family} {self.jkt}"


class LogoutDelivery(models.Model):
    """The outbox of logout tokens: one row per relying party and session to tell, written in the
    transaction that ended the session, so that a revocation that rolls back tells no one and one
    that commits is told even if this process dies. The token itself is signed at each attempt and
    never stored."""

    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("given up")

    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("application"),
    )
    subject = models.CharField(_("subject"), max_length=255)
    sid = models.CharField(_("session id"), max_length=64, blank=True)
    jti = models.CharField(_("logout token id"), max_length=64, unique=True)
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    last_error = models.CharField(_("last error"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    class Meta:
        verbose_name = _("logout delivery")
        verbose_name_plural = _("logout deliveries")
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["state", "next_attempt_at"])]
        permissions = [("retry_logoutdelivery", _("Can retry logout deliveries"))]

    def __str__(self) -> str:
        return f"{self.application} {self.sid or self.subject}"


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
