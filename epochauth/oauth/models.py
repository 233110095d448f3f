"""Per-application scope limits (DOT's Application has no such field)."""

from __future__ import annotations

import uuid
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


class Outbox(models.Model):
    """A row of an outbox: something to deliver after the transaction that wrote it commits, with
    retries (:mod:`epochauth.oauth.backchannel` drains every kind)."""

    class State(models.TextChoices):
        PENDING = "pending", _("pending")
        DELIVERED = "delivered", _("delivered")
        FAILED = "failed", _("given up")

    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    next_attempt_at = models.DateTimeField(_("next attempt"), default=timezone.now)
    last_error = models.CharField(_("last error"), max_length=255, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    delivered_at = models.DateTimeField(_("delivered"), null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ("-created_at",)


class LogoutDelivery(Outbox):
    """The outbox of logout tokens: one row per relying party and session to tell, written in the
    transaction that ended the session, so that a revocation that rolls back tells no one and one
    that commits is told even if this process dies. The token itself is signed at each attempt and
    never stored."""

    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("application"),
    )
    subject = models.CharField(_("subject"), max_length=255)
    sid = models.CharField(_("session id"), max_length=64, blank=True)
    jti = models.CharField(_("logout token id"), max_length=64, unique=True)

    class Meta(Outbox.Meta):
        verbose_name = _("logout delivery")
        verbose_name_plural = _("logout deliveries")
        indexes = [models.Index(fields=["state", "next_attempt_at"])]
        permissions = [("retry_logoutdelivery", _("Can retry logout deliveries"))]

    def __str__(self) -> str:
        return f"{self.application} {self.sid or self.subject}"


class SSFStream(models.Model):
    """An event stream of the Shared Signals transmitter (SSF 1.0 section 8): which events one
    receiver (an application that holds the ``ssf:manage`` service scope) gets, about whom, and how.
    Created, changed and deleted by that receiver through the stream management API."""

    class Method(models.TextChoices):
        PUSH = "urn:ietf:rfc:8935", _("push (RFC 8935)")
        POLL = "urn:ietf:rfc:8936", _("poll (RFC 8936)")

    class Status(models.TextChoices):
        ENABLED = "enabled", _("enabled")
        PAUSED = "paused", _("paused")
        DISABLED = "disabled", _("disabled")

    stream_id = models.UUIDField(_("stream id"), unique=True, default=uuid.uuid4, editable=False)
    application = models.ForeignKey(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_ssf_streams",
        verbose_name=_("receiver"),
    )
    audience = models.CharField(_("audience"), max_length=2000, editable=False)
    events_requested = models.JSONField(_("events requested"), default=list, blank=True)
    method = models.CharField(_("delivery method"), max_length=32, choices=Method.choices)
    endpoint_url = models.CharField(
        _("push endpoint"), max_length=2000, blank=True, help_text=_("Push delivery only.")
    )
    #: What each push sends as ``Authorization``: the receiver's secret, never shown or returned.
    authorization_header = models.CharField(
        _("authorization header"), max_length=2000, blank=True, editable=False
    )
    description = models.CharField(_("description"), max_length=255, blank=True)
    status = models.CharField(
        _("status"), max_length=16, choices=Status.choices, default=Status.ENABLED
    )
    status_reason = models.CharField(_("status reason"), max_length=255, blank=True)
    all_subjects = models.BooleanField(
        _("all subjects"),
        default=False,
        help_text=_("Events about every user, not only the subjects the receiver added."),
    )
    verified_at = models.DateTimeField(_("last verification"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("shared signals stream")
        verbose_name_plural = _("shared signals streams")
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.application} {self.stream_id}"


class SSFSubject(models.Model):
    """A user a stream's receiver added (SSF 1.0 section 8.1.3.2), as the subject it sent."""

    stream = models.ForeignKey(
        SSFStream, on_delete=models.CASCADE, related_name="subjects", verbose_name=_("stream")
    )
    user_id = models.CharField(_("user id"), max_length=64)
    subject = models.JSONField(_("subject"))
    created_at = models.DateTimeField(_("created"), auto_now_add=True)

    class Meta:
        verbose_name = _("shared signals subject")
        verbose_name_plural = _("shared signals subjects")
        constraints = [
            models.UniqueConstraint(fields=["stream", "user_id"], name="epochauth_ssf_subject")
        ]

    def __str__(self) -> str:
        return self.user_id


class SSFEvent(Outbox):
    """The outbox of Security Event Tokens: one row per stream and event, written in the transaction
    of the revocation it reports. The claims are kept, the SET is signed at each push attempt or
    poll; a polled event stays pending until the receiver acknowledges it (then it is deleted)."""

    stream = models.ForeignKey(
        SSFStream, on_delete=models.CASCADE, related_name="events", verbose_name=_("stream")
    )
    jti = models.CharField(_("event id"), max_length=64, unique=True)
    event_type = models.CharField(_("event type"), max_length=255)
    claims = models.JSONField(_("claims"))

    class Meta(Outbox.Meta):
        verbose_name = _("shared signals event")
        verbose_name_plural = _("shared signals events")
        indexes = [models.Index(fields=["state", "next_attempt_at"])]
        permissions = [("retry_ssfevent", _("Can retry shared signals events"))]

    def __str__(self) -> str:
        return f"{self.stream} {self.event_type.rsplit('/', 1)[-1]}"


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
