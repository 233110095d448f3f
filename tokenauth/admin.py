"""Admin: revoke in one click (bump a user's or group's epoch, end a session); tokens are never shown."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import path, reverse
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from .jwks import IssuerUnavailable, jwks_cache
from .models import AuditEvent, Epoch, Identity, Issuer, RevokedToken, Session
from .revocation import bump_epoch
from .sessions import end_session
from .snapshots import StateUnavailable


class EpochAdminMixin:
    """Adds the epoch column and the "Revoke all tokens" action to a user or group admin."""

    epoch_kind: str

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        shown = {name for _, options in fieldsets for name in options.get("fields", ())}
        if obj is not None and "token_epoch" not in shown:
            fieldsets.append((_("Tokens"), {"fields": ("token_epoch",)}))
        return fieldsets

    @admin.display(description=_("token epoch"))
    def token_epoch(self, obj: Any) -> int:
        row = Epoch.objects.filter(kind=self.epoch_kind, object_id=str(obj.pk)).values_list(
            "value", flat=True
        )
        return row.first() or 0

    @admin.action(description=_("Revoke all tokens (bump epoch)"))
    def revoke_all_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = 0
        for obj in queryset:
            try:
                bump_epoch(self.epoch_kind, str(obj.pk), actor=request.user, reason="admin action")
            except StateUnavailable:
                self.message_user(  # type: ignore[attr-defined]
                    request,
                    _("The shared cache could not take the revocation of %s; nothing changed. Try again.")
                    % obj,
                    messages.ERROR,
                )
                continue
            count += 1
        self.message_user(  # type: ignore[attr-defined]
            request,
            ngettext("Revoked the tokens of %d entry.", "Revoked the tokens of %d entries.", count) % count,
            messages.SUCCESS,
        )


def _extend(model: Any, kind: str) -> None:
    """Re-register ``model`` with its current admin class plus :class:`EpochAdminMixin`."""
    base = type(admin.site._registry[model]) if admin.site.is_registered(model) else admin.ModelAdmin
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    attrs = {
        "epoch_kind": kind,
        "actions": [*(base.actions or []), "revoke_all_tokens"],
        "list_display": [*base.list_display, "token_epoch"],
        "readonly_fields": [*base.readonly_fields, "token_epoch"],
    }
    admin.site.register(model, type(f"TokenAuth{base.__name__}", (EpochAdminMixin, base), attrs))


_extend(get_user_model(), Epoch.Kind.USER)
_extend(Group, Epoch.Kind.GROUP)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by tokenauth itself."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class PermanentAdmin(ReadOnlyAdmin):
    """Rows whose deletion would make revoked tokens valid again or erase the audit trail."""

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Session)
class SessionAdmin(ReadOnlyAdmin):
    """Sessions are ended, never deleted here: an ended one stays listed, as history."""

    list_display = ("user", "created_at", "last_used_at", "expires_at", "remember_me", "group", "revoked_at")
    list_filter = ("remember_me", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "user_agent")
    exclude = ("refresh_hash",)
    actions = ["revoke_sessions"]
    change_form_template = "tokenauth/admin/session_change_form.html"

    def has_end_permission(self, request: HttpRequest) -> bool:
        """Ending takes the place of deleting, so it needs the delete permission (which still lets a
        user with sessions be deleted: the rows go with the user, each ended first)."""
        return self.has_delete_permission(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raise PermissionDenied("Sessions are ended, not deleted.")

    def get_urls(self) -> list[Any]:
        end = path(
            "<path:object_id>/end/",
            self.admin_site.admin_view(self.end_view),
            name="tokenauth_session_end",
        )
        return [end, *super().get_urls()]

    def end_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST from the session's page: end it like a logout, then show the page again."""
        session = self.get_object(request, object_id)
        if request.method != "POST" or session is None or not self.has_end_permission(request):
            raise PermissionDenied
        if session.revoked_at is None:
            end_session(session, reason="admin", actor=request.user)
            self.message_user(request, _("The session was ended."), messages.SUCCESS)
        return redirect(reverse("admin:tokenauth_session_change", args=[session.pk]))

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        context.update(can_end=self.has_end_permission(request), show_delete=False)
        return super().render_change_form(request, context, *args, **kwargs)

    @admin.action(description=_("End the selected sessions"), permissions=["end"])
    def revoke_sessions(self, request: HttpRequest, queryset: QuerySet) -> None:
        sessions = list(queryset.filter(revoked_at__isnull=True))
        for session in sessions:
            end_session(session, reason="admin", actor=request.user)
        self.message_user(request, _("Ended %d sessions.") % len(sessions), messages.SUCCESS)


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ("subject", "issuer", "user", "created_at")
    list_filter = ("issuer",)
    search_fields = ("subject", "issuer", "user__username")
    raw_id_fields = ("user",)


@admin.register(Epoch)
class EpochAdmin(PermanentAdmin):
    list_display = ("kind", "object_id", "value", "not_before", "bumped_by", "reason")
    list_filter = ("kind",)


@admin.register(RevokedToken)
class RevokedTokenAdmin(PermanentAdmin):
    list_display = ("jti", "revoked_at", "expires_at", "reason")
    search_fields = ("jti",)


@admin.register(AuditEvent)
class AuditEventAdmin(PermanentAdmin):
    list_display = ("at", "action", "user", "actor")
    list_filter = ("action",)
    search_fields = ("user__username", "action")


@admin.register(Issuer)
class IssuerAdmin(admin.ModelAdmin):
    list_display = (
        "issuer",
        "enabled",
        "profile",
        "auto_provision",
        "required_scopes",
        "audiences",
        "client_id",
    )
    list_filter = ("enabled", "profile", "auto_provision")
    search_fields = ("issuer", "display_name", "slug")
    filter_horizontal = ("default_groups",)
    actions = ["enable", "disable", "refresh_keys"]
    fieldsets = (
        (None, {"fields": ("issuer", "enabled")}),
        (
            _("Accepted tokens"),
            {"fields": ("audiences", "profile", "accept_any_audience", "required_scopes", "algorithms")},
        ),
        (
            _("Users"),
            {
                "fields": (
                    "auto_provision",
                    "username_claim",
                    "group_claims",
                    "mirror_groups",
                    "default_groups",
                )
            },
        ),
        (_("Browser login"), {"fields": ("slug", "display_name", "client_id", "client_secret_env")}),
    )

    @admin.action(description=_("Enable the selected issuers"))
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(description=_("Disable the selected issuers (their tokens stop at once)"))
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        """Saved row by row, not with update(): the save signal tells every process to reload issuers."""
        changed = [issuer for issuer in queryset if issuer.enabled != enabled]
        for issuer in changed:
            issuer.enabled = enabled
            issuer.save(update_fields=["enabled"])
        text = _("Enabled %d issuers.") if enabled else _("Disabled %d issuers.")
        self.message_user(request, text % len(changed), messages.SUCCESS)

    @admin.action(description=_("Fetch discovery and keys again"))
    def refresh_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        for issuer in queryset:
            try:
                keyset = jwks_cache.refresh_now(issuer.issuer)
            except IssuerUnavailable:
                self.message_user(request, _("Could not fetch the keys of %s.") % issuer, messages.ERROR)
            else:
                count = len(keyset.keys)
                text = _("Fetched %(count)d keys of %(issuer)s.") % {"count": count, "issuer": issuer}
                self.message_user(request, text, messages.SUCCESS)
