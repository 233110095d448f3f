"""DOT's admin screens (token strings already masked) with revoke actions that also deny our JWTs
(DOT refuses to delete token rows, or an application that has any, so no JWT outlives its row),
and each application's allowed scopes. Needs "oauth2_provider" before "epochauth.oauth" in
INSTALLED_APPS, so that DOT's admin classes are registered first."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.auth import get_permission_codename
from django.db.models import QuerySet
from django.db.models.options import Options
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
)

from ..ssf import transmitter
from . import backchannel, models, revocation

Application = get_application_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()

if TYPE_CHECKING:
    # mypy needs bases it can see: DOT's defaults, which its *_ADMIN_CLASS settings can replace.
    from oauth2_provider.admin import AccessTokenAdmin as AccessTokenAdminBase
    from oauth2_provider.admin import ApplicationAdmin as ApplicationAdminBase
    from oauth2_provider.admin import RefreshTokenAdmin as RefreshTokenAdminBase
else:
    # The classes DOT registered, whichever its settings chose.
    ApplicationAdminBase = type(admin.site._registry[Application])
    AccessTokenAdminBase = type(admin.site._registry[AccessToken])
    RefreshTokenAdminBase = type(admin.site._registry[RefreshToken])


class AllowedScopesInline(admin.StackedInline):
    model = models.AllowedScopes
    extra = 0


class BackchannelLogoutInline(admin.StackedInline):
    model = models.BackchannelLogout
    extra = 0


class DPoPPolicyInline(admin.StackedInline):
    model = models.DPoPPolicy
    extra = 0


class ApplicationAdmin(ApplicationAdminBase):
    inlines = [AllowedScopesInline, BackchannelLogoutInline, DPoPPolicyInline]


class OutboxAdmin(admin.ModelAdmin):
    """An outbox's rows are written by revocations and read by its worker, never added or edited
    here; sending one again (the ``retry`` action) needs its model's ``retry_…`` permission."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.retry_{opts.model_name}")


@admin.register(models.LogoutDelivery)
class LogoutDeliveryAdmin(OutboxAdmin):
    """The outbox of logout tokens, read-only (the token is signed at each attempt, never stored);
    a delivery given up may be attempted again."""

    list_display = (
        "application",
        "subject",
        "sid",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
    )
    list_filter = ("state",)
    search_fields = ("application__client_id", "subject", "sid")
    actions = ["retry"]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description=_("Retry the selected deliveries"), permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = backchannel.retry(queryset)
        text = ngettext(
            "%d delivery will be attempted again.", "%d deliveries will be attempted again.", count
        )
        self.message_user(request, text % count, messages.SUCCESS)


class SSFSubjectInline(admin.TabularInline):
    model = models.SSFSubject
    extra = 0
    fields = ("user_id", "subject", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(models.SSFStream)
class SSFStreamAdmin(admin.ModelAdmin):
    """The Shared Signals streams receivers made: the admin may pause, disable (the receiver is
    told, SSF 1.0 section 8.1.5) or delete one, and widen it to all subjects; what the receiver
    asked for is its own to change. Its authorization header (the receiver's secret) is never shown."""

    list_display = ("stream_id", "application", "method", "status", "all_subjects", "created_at")
    list_filter = ("status", "method")
    search_fields = ("application__client_id", "description")
    fields = (
        "stream_id",
        "application",
        "audience",
        "method",
        "endpoint_url",
        "events_requested",
        "description",
        "status",
        "status_reason",
        "all_subjects",
        "verified_at",
        "created_at",
    )
    readonly_fields = (
        "stream_id",
        "application",
        "audience",
        "method",
        "endpoint_url",
        "events_requested",
        "description",
        "verified_at",
        "created_at",
    )
    inlines = [SSFSubjectInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and {"status", "status_reason"} & set(form.changed_data):
            transmitter.stream_updated(obj)


@admin.register(models.SSFEvent)
class SSFEventAdmin(OutboxAdmin):
    """The outbox of Security Event Tokens, read-only (the SET is signed when sent, never stored);
    an event given up may be pushed again. Deleting one (or its stream) needs the delete
    permission."""

    list_display = (
        "stream",
        "event_type",
        "state",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
    )
    list_filter = ("state", "event_type")
    search_fields = ("stream__application__client_id", "jti")
    actions = ["retry"]

    @admin.action(description=_("Retry the selected events"), permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = transmitter.retry(queryset)
        text = ngettext("%d event will be pushed again.", "%d events will be pushed again.", count)
        self.message_user(request, text % count, messages.SUCCESS)


class RevokePermissionMixin:
    """DOT's revoke actions ask for no permission; ours need the delete permission of the token's
    model: revoking ends the token as deleting its row would (which DOT's admin refuses), as ending a
    session needs ``epochauth.delete_session``."""

    opts: Options[Any]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        codename = get_permission_codename("delete", self.opts)
        return request.user.has_perm(f"{self.opts.app_label}.{codename}")


class AccessTokenAdmin(RevokePermissionMixin, AccessTokenAdminBase):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only: the JWT carries its own expiry and scope, so an edited row would change
        nothing but the checksum that finds the row by its JWT (DOT derives it from the ``jti``)."""
        return False

    @admin.action(description=_("Revoke selected access tokens"), permissions=["revoke"])
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        """DOT revokes the bound refresh tokens too: their families end."""
        with revocation.ending(queryset, RefreshToken.objects.filter(access_token__in=queryset)):
            super().revoke_tokens(request, queryset)


class RefreshTokenAdmin(RevokePermissionMixin, RefreshTokenAdminBase):
    @admin.action(
        description=_("Revoke selected refresh tokens (and their access tokens)"),
        permissions=["revoke"],
    )
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        with revocation.ending(revocation.issued_with(queryset), queryset):
            super().revoke_tokens(request, queryset)


for model, model_admin in (
    (Application, ApplicationAdmin),
    (AccessToken, AccessTokenAdmin),
    (RefreshToken, RefreshTokenAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)
