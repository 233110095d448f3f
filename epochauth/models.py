"""Identities, revocation state (epochs and the token denylist), refresh sessions, browser logins and
the audit log."""

from __future__ import annotations

import hashlib
import secrets
import uuid

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import issuer_config, keys, profiles, scopes


def identity_digest(issuer: str, subject: str) -> str:
    """A fixed-length name for the pair (cache keys, identity epochs)."""
    return hashlib.sha256(f"{issuer}\0{subject}".encode()).hexdigest()


class Identity(models.Model):
    """The caller as the pair (issuer, subject), mapped to one Django user."""

    issuer = models.CharField(_("issuer"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_identities",
        verbose_name=_("user"),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("identity")
        verbose_name_plural = _("identities")
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="epochauth_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer}"


class Epoch(models.Model):
    """A revocation counter: tokens minted under an older value (or issued before ``not_before``) are dead.

    One row per user, per group, per external identity (keyed by a digest of issuer and subject), per
    community (by slug) and one global row; rows exist only once something was bumped.
    """

    class Kind(models.TextChoices):
        USER = "user", _("user")
        GROUP = "group", _("group")
        IDENTITY = "identity", _("identity")
        GLOBAL = "global", _("global")
        COMMUNITY = "community", _("community")

    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    object_id = models.CharField(
        _("object id"),
        max_length=64,
        blank=True,
        help_text=_("Primary key of the user or group, a community's slug; empty for global."),
    )
    value = models.PositiveIntegerField(_("epoch"), default=0)
    not_before = models.DateTimeField(_("not before"), null=True, blank=True)
    bumped_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("bumped by"),
    )
    reason = models.CharField(_("reason"), max_length=255, blank=True)
    # A user's row only: the groups left after the last change that took one away, and when. A token
    # minted before then confers only those of its groups.
    groups = models.JSONField(_("groups since the change"), null=True, blank=True)
    groups_changed_at = models.DateTimeField(_("groups changed"), null=True, blank=True)
    #: What the change feed of the revocation state reads from (epochauth.revocation).
    updated_at = models.DateTimeField(_("updated"), auto_now=True, db_index=True)

    class Meta:
        verbose_name = _("epoch")
        verbose_name_plural = _("epochs")
        constraints = [
            models.UniqueConstraint(fields=["kind", "object_id"], name="epochauth_epoch_unique")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id}: {self.value}"


class RevokedToken(models.Model):
    """One denied token id (``jti``) or session id (``sid``), kept until every token it names expired."""

    jti = models.CharField(_("token or session id"), max_length=255, unique=True)
    expires_at = models.DateTimeField(_("expires"), db_index=True)
    #: Set again on each revocation: what the change feed of the revocation state reads from.
    revoked_at = models.DateTimeField(_("revoked"), default=timezone.now, db_index=True)
    reason = models.CharField(_("reason"), max_length=255, blank=True)

    class Meta:
        verbose_name = _("revoked token")
        verbose_name_plural = _("revoked tokens")

    def __str__(self) -> str:
        return self.jti


class BrowserLogin(models.Model):
    """A browser login whose ID token named the provider's session (``sid``): the provider's back-channel
    logout of that session ends this login's Django session and the API sessions started from it."""

    issuer = models.CharField(_("issuer"), max_length=255)
    subject = models.CharField(_("subject"), max_length=255)
    sid = models.CharField(_("provider session"), max_length=255)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("user"),
    )
    session_key = models.CharField(_("Django session key"), max_length=40, db_index=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("browser login")
        verbose_name_plural = _("browser logins")
        indexes = [models.Index(fields=["issuer", "sid"], name="epochauth_browserlogin_sid")]

    def __str__(self) -> str:
        return f"{self.subject} @ {self.issuer} ({self.created_at:%Y-%m-%d %H:%M})"


def new_family_id() -> str:
    return secrets.token_hex(16)


class Session(models.Model):
    """A refresh-token family. Only a hash of the current refresh secret is stored."""

    id = models.UUIDField(_("session id"), primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_sessions",
        verbose_name=_("user"),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    last_used_at = models.DateTimeField(_("last used"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires"), db_index=True)
    remember_me = models.BooleanField(_("remember me"), default=False)
    user_agent = models.CharField(_("user agent"), max_length=255, blank=True)
    scope = models.CharField(_("scope"), max_length=1024, blank=True)
    group = models.ForeignKey(
        "auth.Group",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="+",
        verbose_name=_("group"),
    )
    #: RFC 8707: the resources the login named, the ``aud`` of every access token of the session
    #: (a refresh may name fewer, never others); empty: the default audience.
    resources = models.JSONField(_("resources"), default=list, blank=True)
    # The refresh token names its session by this secret-ish id, not by ``id``: access tokens carry
    # ``id`` (as ``sid``), and whoever holds one must not be able to pose as a refresh-token reuse.
    family = models.CharField(
        _("family"), max_length=32, unique=True, editable=False, default=new_family_id
    )
    refresh_hash = models.CharField(_("refresh token hash"), max_length=64, editable=False)
    #: The hash of the refresh secret the last rotation replaced (at ``last_used_at``), while it may
    #: still be used once within ``REFRESH_TOKEN_GRACE_PERIOD``; empty once it was.
    previous_refresh_hash = models.CharField(
        _("previous refresh token hash"), max_length=64, blank=True, editable=False
    )
    revoked_at = models.DateTimeField(_("revoked"), null=True, blank=True)
    #: The community (``COMMUNITIES`` slug) every access token of the session belongs to; empty: the
    #: site's tokens, without one.
    community = models.CharField(_("community"), max_length=64, blank=True)
    #: RFC 9449 section 5: the RFC 7638 thumbprint of the DPoP key the session's refresh token is
    #: bound to (its login or a refresh carried a proof of it); empty: a bearer session.
    dpop_jkt = models.CharField(
        _("DPoP key thumbprint"), max_length=64, blank=True, editable=False
    )
    #: The browser login on whose page the session was started: the provider's back-channel logout of
    #: that login's provider session ends it too.
    browser_login = models.ForeignKey(
        BrowserLogin,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="sessions",
        verbose_name=_("browser login"),
    )

    class Meta:
        verbose_name = _("session")
        verbose_name_plural = _("sessions")
        ordering = ["-last_used_at"]

    def __str__(self) -> str:
        return f"{self.user} ({self.created_at:%Y-%m-%d %H:%M})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and self.expires_at > timezone.now()


class StatusListSlot(models.Model):
    """A session's place in our Token Status Lists (epochauth.statuslist): its key, allocated by the
    database on insert, is the index of the session's bit. Its own table because a session's key is a
    UUID and only an auto key is numbered by the database on every backend, in the insert itself."""

    id = models.BigAutoField(_("index"), primary_key=True)
    session = models.OneToOneField(
        Session,
        on_delete=models.CASCADE,
        related_name="status_slot",
        verbose_name=_("session"),
    )

    class Meta:
        verbose_name = _("status list slot")
        verbose_name_plural = _("status list slots")

    def __str__(self) -> str:
        return str(self.pk)


class AuditEvent(models.Model):
    """Security-relevant things that happened: logins, revocations, bumps. Never holds a token."""

    at = models.DateTimeField(_("at"), default=timezone.now, db_index=True)
    action = models.CharField(_("action"), max_length=64, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("user"),
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        verbose_name=_("actor"),
    )
    detail = models.JSONField(_("detail"), default=dict, blank=True)

    class Meta:
        verbose_name = _("audit event")
        verbose_name_plural = _("audit events")
        ordering = ["-at"]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"


def default_issuer_algorithms() -> list[str]:
    return ["RS256", "ES256"]


class Issuer(models.Model):
    """An allow-listed external OpenID issuer whose access tokens are accepted.

    With a client id it is also a browser-login provider; its secret is read from the environment
    variable named here, never stored in the database.
    """

    issuer = models.CharField(
        _("issuer"),
        max_length=255,
        unique=True,
        help_text=_("Exactly the tokens' iss value, e.g. https://iam.example.org/"),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    audiences = models.JSONField(_("accepted audiences"), default=list, blank=True)
    profile = models.CharField(
        _("token profile"),
        max_length=16,
        blank=True,
        default="",
        choices=profiles.PROFILE_CHOICES,
        help_text=_(
            "WLCG or SciTokens: their any-audience values, storage scopes by path, wlcg.groups."
        ),
    )
    accept_any_audience = models.BooleanField(
        _("accept the profile's any-audience"),
        default=False,
        help_text=_("WLCG: https://wlcg.cern.ch/jwt/v1/any; SciTokens: ANY. Needs a profile."),
    )
    required_scopes = models.JSONField(_("required scopes"), default=list, blank=True)
    algorithms = models.JSONField(_("accepted algorithms"), default=default_issuer_algorithms)
    auto_provision = models.BooleanField(_("create users for new identities"), default=True)
    default_groups = models.ManyToManyField(
        "auth.Group", blank=True, related_name="+", verbose_name=_("default groups")
    )
    group_claims = models.JSONField(
        _("group claims"), default=list, blank=True, help_text=_('e.g. ["wlcg.groups", "groups"]')
    )
    group_map = models.JSONField(
        _("group mapping"),
        default=dict,
        blank=True,
        help_text=_(
            'Claim value to local group, e.g. {"/cms/ops": "cms-operators"}: the only way a claim '
            "joins a group that holds a permission."
        ),
    )
    group_prefix = models.CharField(
        _("group namespace"),
        max_length=64,
        blank=True,
        help_text=_(
            'Unmapped claim values become groups with this prefix, e.g. "cms:" makes /cms '
            "cms:/cms (created as needed, never one holding a permission). Empty: they are ignored."
        ),
    )
    group_scopes = models.JSONField(
        _("upstream scope per group"),
        default=dict,
        blank=True,
        help_text=_(
            "Local group to the scope the Token Manager asks this issuer for when a service names "
            'the group, e.g. {"cms-operators": "storage.read:/cms compute.create"}.'
        ),
    )
    mirror_groups = models.BooleanField(
        _("mirror the token's groups into the user's"),
        default=True,
        help_text=_(
            "With group claims: a newer token's groups replace the user's groups of this issuer "
            "here (default, mapped and namespaced ones; the others stay)."
        ),
    )
    username_claim = models.CharField(
        _("username claim"), max_length=64, default="preferred_username"
    )
    status_list = models.CharField(
        _("token status lists"),
        max_length=8,
        blank=True,
        choices=[
            ("", _("ignored")),
            ("closed", _("honoured; refuse when the list cannot be had")),
            ("open", _("honoured; accept when the list cannot be had")),
        ],
        help_text=_(
            "What the status claim of the issuer's tokens does (draft-ietf-oauth-status-list)."
        ),
    )
    slug = models.SlugField(_("login slug"), max_length=64, blank=True)
    display_name = models.CharField(_("display name"), max_length=100, blank=True)
    client_id = models.CharField(_("client id"), max_length=255, blank=True)
    client_secret_env = models.CharField(
        _("client secret variable"),
        max_length=100,
        blank=True,
        help_text=_("Environment variable with the secret."),
    )
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("issuer")
        verbose_name_plural = _("issuers")
        ordering = ["issuer"]

    def __str__(self) -> str:
        return self.issuer

    def clean(self) -> None:
        issuer_config.validate_issuer_url(self.issuer)
        if self.client_id:  # a browser-login provider: /oidc/login/<slug>/ must name only this one
            slug = issuer_config.login_slug(self.issuer, self.slug)
            others = Issuer.objects.exclude(issuer=self.issuer).exclude(client_id="")
            taken = {
                issuer_config.login_slug(row.issuer, row.slug): row.issuer
                for row in others.only("issuer", "slug")
            }
            taken.update(issuer_config.settings_login_slugs())
            if taken.get(slug, self.issuer) != self.issuer:
                raise ValidationError(
                    {
                        "slug": _("The login slug %(slug)s is %(issuer)s's already.")
                        % {"slug": slug, "issuer": taken[slug]}
                    }
                )
        if self.accept_any_audience and not self.profile:
            raise ValidationError(
                {
                    "accept_any_audience": _(
                        "An any-audience belongs to a token profile: choose WLCG or SciTokens."
                    )
                }
            )
        for name in ("audiences", "required_scopes", "algorithms", "group_claims"):
            value = getattr(self, name)
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValidationError({name: _("A list of strings.")})
        if not issuer_config.valid_group_map(self.group_map):
            raise ValidationError(
                {
                    "group_map": _(
                        'Claim values to group names, e.g. {"/cms/ops": "cms-operators"}.'
                    )
                }
            )
        if not issuer_config.valid_group_scopes(self.group_scopes):
            raise ValidationError(
                {
                    "group_scopes": _(
                        'Group names to scope strings, e.g. {"cms-operators": "storage.read:/cms"}.'
                    )
                }
            )
        if not all(scopes.is_scope_token(name) for name in self.required_scopes):
            raise ValidationError(
                {"required_scopes": _('Scope names are printable ASCII without space, " and \\.')}
            )
        bad = sorted(set(self.algorithms) - keys.ASYMMETRIC_ALGORITHMS)
        if bad or not self.algorithms:
            raise ValidationError(
                {
                    "algorithms": _("Only asymmetric algorithms: %s")
                    % ", ".join(sorted(keys.ASYMMETRIC_ALGORITHMS))
                }
            )

    def config(self) -> issuer_config.IssuerConfig:
        return issuer_config.IssuerConfig(
            issuer=self.issuer,
            audiences=tuple(self.audiences),
            profile=self.profile,
            accept_any_audience=self.accept_any_audience,
            required_scopes=tuple(self.required_scopes),
            algorithms=frozenset(self.algorithms),
            auto_provision=self.auto_provision,
            default_groups=tuple(g.name for g in self.default_groups.all()),
            group_claims=tuple(self.group_claims),
            group_map=tuple(sorted(self.group_map.items())),
            group_prefix=self.group_prefix,
            group_scopes=tuple(sorted(self.group_scopes.items())),
            mirror_groups=self.mirror_groups,
            username_claim=self.username_claim,
            status_list=self.status_list or None,
            slug=self.slug,
            display_name=self.display_name,
            client_id=self.client_id,
            client_secret_env=self.client_secret_env,
        )


class SsfSubscription(models.Model):
    """Our stream at one Shared Signals transmitter (``EPOCHAUTH["SSF_TRANSMITTERS"]``, set up by
    ``epochauth_ssf_subscribe``): its id there, and for push delivery the hash of the secret the
    transmitter sends in ``Authorization`` (epochauth.ssf.receiver compares it in constant time)."""

    class Delivery(models.TextChoices):
        PUSH = "push", _("push")
        POLL = "poll", _("poll")

    issuer = models.CharField(_("transmitter"), max_length=255, unique=True)
    stream_id = models.CharField(_("stream id"), max_length=255)
    delivery = models.CharField(_("delivery"), max_length=4, choices=Delivery.choices)
    #: SHA-256 (hex) of the push authorization secret; empty for poll delivery.
    push_secret_hash = models.CharField(
        _("push secret hash"), max_length=64, blank=True, editable=False
    )
    #: The transmitter's poll endpoint (RFC 8936), on its origin; empty for push delivery.
    poll_url = models.URLField(_("poll endpoint"), max_length=1024, blank=True)
    #: SHA-256 (hex) of the ``state`` of the verification event last asked for.
    verification_hash = models.CharField(
        _("verification state hash"), max_length=64, blank=True, editable=False
    )
    verified_at = models.DateTimeField(_("verified"), null=True, blank=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    class Meta:
        verbose_name = _("Shared Signals subscription")
        verbose_name_plural = _("Shared Signals subscriptions")

    def __str__(self) -> str:
        return f"{self.issuer} ({self.stream_id})"


class CommunityMembership(models.Model):
    """A user's membership of a community (a ``COMMUNITIES`` slug): what lets a login select it
    (``vo:<slug>``). Removing it ends the user's tokens (an epoch bump)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="epochauth_communities",
        verbose_name=_("user"),
    )
    community = models.CharField(_("community"), max_length=64, db_index=True)
    created_at = models.DateTimeField(_("created"), default=timezone.now)

    class Meta:
        verbose_name = _("community membership")
        verbose_name_plural = _("community memberships")
        constraints = [
            models.UniqueConstraint(
                fields=["user", "community"], name="epochauth_communitymembership_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.community}"


class CommunityGroup(models.Model):
    """Ties a group to the community it lives in: a token of another community neither selects it
    (``g:<group>``) nor lists it. A group without one is the site's, in every community."""

    group = models.OneToOneField(
        "auth.Group",
        on_delete=models.CASCADE,
        related_name="epochauth_community",
        verbose_name=_("group"),
    )
    community = models.CharField(_("community"), max_length=64, db_index=True)

    class Meta:
        verbose_name = _("community group")
        verbose_name_plural = _("community groups")

    def __str__(self) -> str:
        return f"{self.group} in {self.community}"
