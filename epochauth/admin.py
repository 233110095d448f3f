"""Admin: revoke in one click (bump a user's or group's epoch, end a session); tokens are never shown."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import communities, jwks, revocation, snapshots
from .models import (
    AuditEvent,
    CommunityGroup,
    CommunityMembership,
    Epoch,
    Identity,
    Issuer,
    RevokedToken,
    Session,
    SsfSubscription,
)
from .sessions import end_session

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

    # The mixins below always come before a ModelAdmin (see _extend): checked as one.
    AdminMixinBase = admin.ModelAdmin[Any]
else:
    AdminMixinBase = object


def _table(headers: Sequence[StrOrPromise], rows: list[list[Any]]) -> str:
    """A small read-only table for a change page (cells are escaped unless already safe HTML)."""
    if not rows:
        return str(_("None"))
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "",
        "<tr>{}</tr>",
        ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows),
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _when(moment: Any) -> str:
    return date_format(timezone.localtime(moment), "SHORT_DATETIME_FORMAT") if moment else "—"


class UserTokensMixin:
    """On a user's page: their sessions (with "End session"), external identities and OAuth grants,
    read-only (no formsets: the user form posts as before); never a token."""

    token_fields = ("token_epoch", "token_sessions", "external_identities", "oauth_grants")
    #: Sessions listed, latest used first.
    sessions_shown = 50

    @admin.display(description=_("sessions"))
    def token_sessions(self, user: Any) -> str:
        sessions = Session.objects.filter(user=user).select_related("group")[: self.sessions_shown]
        rows = [
            [
                _when(s.created_at),
                _when(s.last_used_at),
                s.user_agent or "—",
                s.group or "—",
                _when(s.expires_at),
                _when(s.revoked_at) if s.revoked_at else self.end_button(s, user),
            ]
            for s in sessions
        ]
        headers = [
            _("created"),
            _("last used"),
            _("user agent / client"),
            _("group"),
            _("expires"),
            _("ended"),
        ]
        return _table(headers, rows)

    def end_button(self, session: Session, user: Any) -> str:
        """A button of the user's form that posts to the session's end view instead (forms do not nest)."""
        opts = user._meta
        back = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[user.pk])
        return format_html(
            '<button type="submit" class="button" formaction="{}?{}" formnovalidate>{}</button>',
            reverse("admin:epochauth_session_end", args=[session.pk]),
            urlencode({"next": back}),
            _("End session"),
        )

    @admin.display(description=_("external identities"))
    def external_identities(self, user: Any) -> str:
        rows = [
            [i.issuer, i.subject, _when(i.created_at)] for i in Identity.objects.filter(user=user)
        ]
        return _table([_("issuer"), _("subject"), _("created")], rows)

    @admin.display(description=_("OAuth grants"))
    def oauth_grants(self, user: Any) -> str:
        """The applications the user let act for them (epochauth.oauth's refresh tokens, by application)."""
        if not apps.is_installed("oauth2_provider"):
            return "—"
        # django-oauth-toolkit is optional: imported only where it is installed.
        from oauth2_provider.models import get_refresh_token_model

        grants = get_refresh_token_model().objects.filter(user=user).select_related("application")
        rows = [
            [g.application, _when(g.created), _when(g.revoked)]
            for g in grants[: self.sessions_shown]
        ]
        return _table([_("application"), _("granted"), _("revoked")], rows)


class EpochAdminMixin(AdminMixinBase):
    """Adds the epoch column, the "Revoke all tokens" action and the "Revoke all tokens and sessions"
    button (with a reason) of the change page to a user or group admin."""

    epoch_kind: str
    #: The change form the admin class had; ours extends it with the button.
    base_change_form_template: str

    #: Read-only fields of the "Tokens" fieldset on the change page.
    token_fields: tuple[str, ...] = ("token_epoch",)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        fieldsets = list(super().get_fieldsets(request, obj))
        shown = {name for _, options in fieldsets for name in options.get("fields", ())}
        if obj is not None and "token_epoch" not in shown:
            fieldsets.append((_("Tokens"), {"fields": self.token_fields}))
        return fieldsets

    @admin.display(description=_("token epoch"))
    def token_epoch(self, obj: Any) -> int:
        row = Epoch.objects.filter(kind=self.epoch_kind, object_id=str(obj.pk)).values_list(
            "value", flat=True
        )
        return row.first() or 0

    def revoke(self, request: HttpRequest, obj: Any, reason: str) -> bool:
        """Bump ``obj``'s epoch (a user's also ends their sessions); False, with a message, if it failed."""
        try:
            revocation.bump_epoch(self.epoch_kind, str(obj.pk), actor=request.user, reason=reason)
        except snapshots.StateUnavailable:
            self.message_user(
                request,
                _(
                    "The shared cache could not take the revocation of %s; nothing changed. Try again."
                )
                % obj,
                messages.ERROR,
            )
            return False
        return True

    @admin.action(description=_("Revoke all tokens (bump epoch)"), permissions=["revoke"])
    def revoke_all_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        count = sum(self.revoke(request, obj, "admin action") for obj in queryset)
        self.message_user(
            request,
            ngettext("Revoked the tokens of %d entry.", "Revoked the tokens of %d entries.", count)
            % count,
            messages.SUCCESS,
        )

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """As for POST /auth/revoke/: the permission to change epochs."""
        return request.user.has_perm("epochauth.change_epoch")

    def revoke_url_name(self) -> str:
        opts = self.model._meta
        return f"{opts.app_label}_{opts.model_name}_revoke_tokens"

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.revoke_view)
        own = path("<path:object_id>/revoke-tokens/", view, name=self.revoke_url_name())
        return [own, *super().get_urls()]

    def revoke_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST from the change page: revoke everything of the user or group, with the reason given.
        Like any admin page of an object, only for those who may see it."""
        obj = self.get_object(request, object_id)
        if (
            request.method != "POST"
            or obj is None
            or not self.has_view_or_change_permission(request, obj)
            or not self.has_revoke_permission(request)
        ):
            raise PermissionDenied
        reason = request.POST.get("reason", "").strip()
        opts = self.model._meta
        back = redirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        if not reason:
            self.message_user(request, _("Give a reason for the revocation."), messages.ERROR)
        elif self.revoke(request, obj, reason[:200]):
            text = _("Revoked every token and session of %(obj)s (reason: %(reason)s).")
            self.message_user(
                request, text % {"obj": obj, "reason": reason[:200]}, messages.SUCCESS
            )
        return back

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], *args: Any, **kwargs: Any
    ) -> Any:
        context.update(
            epochauth_base_change_form=self.base_change_form_template,
            epochauth_revoke_url=f"admin:{self.revoke_url_name()}",
            can_revoke_tokens=self.has_revoke_permission(request),
        )
        return super().render_change_form(request, context, *args, **kwargs)


class CommunityFilter(admin.SimpleListFilter):
    """Rows of one community (``COMMUNITIES``), by :attr:`lookup`, the query path to a row's slug."""

    title = _("community")
    parameter_name = "community"
    lookup = "community"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(c.slug, c.name) for c in communities.get_communities().values()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.lookup: self.value()}).distinct()
        return queryset


def _community_filter(lookup: str) -> type[CommunityFilter]:
    return type(f"CommunityFilter_{lookup}", (CommunityFilter,), {"lookup": lookup})


def _extend(
    model: Any, kind: str, mixins: tuple[type[Any], ...] = (), community: str | None = None
) -> None:
    """Re-register ``model`` with its current admin class plus :class:`EpochAdminMixin` (and ``mixins``);
    ``community``: the query path to a row's community, filtered by in its list."""
    base = (
        type(admin.site._registry[model]) if admin.site.is_registered(model) else admin.ModelAdmin
    )
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    token_fields = mixins[0].token_fields if mixins else EpochAdminMixin.token_fields
    attrs = {
        "epoch_kind": kind,
        "base_change_form_template": base.change_form_template or "admin/change_form.html",
        "change_form_template": "epochauth/admin/epoch_change_form.html",
        "actions": [*(base.actions or []), "revoke_all_tokens"],
        "list_display": [*base.list_display, "token_epoch"],
        "readonly_fields": [*base.readonly_fields, *token_fields],
    }
    if community is not None:
        attrs["list_filter"] = [*base.list_filter, _community_filter(community)]
    bases: tuple[type, ...] = (*mixins, EpochAdminMixin, base)
    admin.site.register(model, type(f"EpochAuth{base.__name__}", bases, attrs))


_extend(
    get_user_model(),
    Epoch.Kind.USER,
    (UserTokensMixin,),
    community="epochauth_communities__community",
)
_extend(Group, Epoch.Kind.GROUP, community="epochauth_community__community")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by epochauth itself."""

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

    list_display = (
        "user",
        "created_at",
        "last_used_at",
        "expires_at",
        "remember_me",
        "group",
        "revoked_at",
    )
    list_filter = ("remember_me", CommunityFilter, ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "user_agent")
    exclude = ("refresh_hash", "previous_refresh_hash")
    actions = ["revoke_sessions"]
    change_form_template = "epochauth/admin/session_change_form.html"

    def has_end_permission(self, request: HttpRequest) -> bool:
        """Ending takes the place of deleting, so it needs the delete permission (which still lets a
        user with sessions be deleted: the rows go with the user, each ended first)."""
        return self.has_delete_permission(request)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def delete_view(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        raise PermissionDenied(_("Sessions are ended, not deleted."))

    def get_urls(self) -> list[Any]:
        end = path(
            "<path:object_id>/end/",
            self.admin_site.admin_view(self.end_view),
            name="epochauth_session_end",
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
        # The user's page ends sessions too, and goes back there.
        back = request.GET.get("next", "")
        if url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
            return redirect(back)
        return redirect(reverse("admin:epochauth_session_change", args=[session.pk]))

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
        count = len(sessions)
        text = ngettext("Ended %d session.", "Ended %d sessions.", count) % count
        self.message_user(request, text, messages.SUCCESS)


@admin.register(Identity)
class IdentityAdmin(admin.ModelAdmin):
    list_display = ("subject", "issuer", "user", "created_at")
    list_filter = ("issuer",)
    search_fields = ("subject", "issuer", "user__username")
    raw_id_fields = ("user",)


def change_link(obj: Any) -> str:
    """A link to ``obj``'s admin page, or its name where it has none."""
    if obj is None:
        return "—"
    try:
        url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return str(obj)
    return format_html('<a href="{}">{}</a>', url, obj)


@admin.register(Epoch)
class EpochAdmin(PermanentAdmin):
    list_display = ("kind", "target", "value", "not_before", "bumped_by", "reason")
    list_filter = ("kind",)
    search_fields = ("object_id", "reason")

    @admin.display(description=_("whose"), ordering="object_id")
    def target(self, epoch: Epoch) -> str:
        """The user's or group's name, linked (one query per row: a page holds at most list_per_page)."""
        models: dict[str, type[Model]] = {
            Epoch.Kind.USER: get_user_model(),
            Epoch.Kind.GROUP: Group,
        }
        if epoch.kind == Epoch.Kind.GLOBAL:
            return str(_("everyone"))
        if epoch.kind == Epoch.Kind.COMMUNITY:
            return _("community %s") % epoch.object_id
        if epoch.kind not in models:
            return epoch.object_id
        obj = models[epoch.kind]._default_manager.filter(pk=epoch.object_id).first()
        return change_link(obj) if obj is not None else _("%s (deleted)") % epoch.object_id


@admin.register(RevokedToken)
class RevokedTokenAdmin(PermanentAdmin):
    list_display = ("jti", "revoked_at", "expires_at", "reason")
    search_fields = ("jti",)


@admin.register(AuditEvent)
class AuditEventAdmin(PermanentAdmin):
    list_display = ("at", "action", "user_link", "actor")
    list_filter = ("action",)
    list_select_related = ("user", "actor")
    search_fields = ("user__username", "action")

    @admin.display(description=_("user"), ordering="user")
    def user_link(self, event: AuditEvent) -> str:
        return change_link(event.user)


@admin.register(SsfSubscription)
class SsfSubscriptionAdmin(ReadOnlyAdmin):
    """Our Shared Signals streams, set up by ``epochauth_ssf_subscribe``. Deleting one takes its
    transmitter's push secret away at once (its pushes answer 401, its stream is no longer polled)."""

    list_display = ("issuer", "stream_id", "delivery", "verified_at", "updated_at")
    readonly_fields = ("issuer", "stream_id", "delivery", "poll_url", "verified_at", "created_at")
    exclude = ("push_secret_hash", "verification_hash")


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
            {
                "fields": (
                    "audiences",
                    "profile",
                    "accept_any_audience",
                    "required_scopes",
                    "algorithms",
                    "status_list",
                )
            },
        ),
        (
            _("Users"),
            {
                "fields": (
                    "auto_provision",
                    "username_claim",
                    "group_claims",
                    "group_map",
                    "group_prefix",
                    "mirror_groups",
                    "default_groups",
                )
            },
        ),
        (
            _("Browser login"),
            {"fields": ("slug", "display_name", "client_id", "client_secret_env", "group_scopes")},
        ),
    )

    @admin.action(description=_("Enable the selected issuers"), permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, True)

    @admin.action(
        description=_("Disable the selected issuers (their tokens stop at once)"),
        permissions=["change"],
    )
    def disable(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_enabled(request, queryset, False)

    def _set_enabled(self, request: HttpRequest, queryset: QuerySet, enabled: bool) -> None:
        """Saved row by row, not with update(): the save signal tells every process to reload issuers."""
        changed = [issuer for issuer in queryset if issuer.enabled != enabled]
        for issuer in changed:
            issuer.enabled = enabled
            issuer.save(update_fields=["enabled"])
        count = len(changed)
        if enabled:
            text = ngettext("Enabled %d issuer.", "Enabled %d issuers.", count)
        else:
            text = ngettext("Disabled %d issuer.", "Disabled %d issuers.", count)
        self.message_user(request, text % count, messages.SUCCESS)

    @admin.action(description=_("Fetch discovery and keys again"), permissions=["change"])
    def refresh_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        """A change: the keys accepted change (a retired one goes at once), and we call the issuer."""
        for issuer in queryset:
            try:
                keyset = jwks.jwks_cache.refresh_now(issuer.issuer)
            except jwks.IssuerUnavailable:
                self.message_user(
                    request, _("Could not fetch the keys of %s.") % issuer, messages.ERROR
                )
            else:
                count = len(keyset.keys)
                text = _("Fetched %(count)d keys of %(issuer)s.") % {
                    "count": count,
                    "issuer": issuer,
                }
                self.message_user(request, text, messages.SUCCESS)


class CommunityChoiceForm(forms.ModelForm):
    """A community is one of ``COMMUNITIES``, chosen by name."""

    community = forms.ChoiceField(label=_("community"), choices=())

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = cast(forms.ChoiceField, self.fields["community"])
        field.choices = [(c.slug, c.name) for c in communities.get_communities().values()]


class CommunityAdminMixin(AdminMixinBase):
    """Memberships and community groups: filtered by community, and the action that revokes every
    token of the selected rows' communities (a community epoch, as ``POST /auth/revoke/``)."""

    form = CommunityChoiceForm
    list_filter = (CommunityFilter,)
    actions = ["revoke_communities"]

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        """As for POST /auth/revoke/: the permission to change epochs."""
        return request.user.has_perm("epochauth.change_epoch")

    @admin.action(
        description=_("Revoke every token of the selected rows' communities (bump their epoch)"),
        permissions=["revoke"],
    )
    def revoke_communities(self, request: HttpRequest, queryset: QuerySet) -> None:
        slugs = sorted(set(queryset.values_list("community", flat=True)))
        for slug in slugs:
            try:
                revocation.bump_epoch(
                    Epoch.Kind.COMMUNITY, slug, actor=request.user, reason="admin action"
                )
            except snapshots.StateUnavailable:
                failed = _(
                    "The shared cache could not take the revocation of %s; nothing changed."
                )
                self.message_user(request, failed % slug, messages.ERROR)
                return
        done = _("Revoked every token of the communities: %s") % ", ".join(slugs)
        self.message_user(request, done, messages.SUCCESS)


@admin.register(CommunityMembership)
class CommunityMembershipAdmin(CommunityAdminMixin, admin.ModelAdmin):
    list_display = ("user", "community", "created_at")
    search_fields = ("user__username", "community")
    raw_id_fields = ("user",)
    readonly_fields = ("created_at",)


@admin.register(CommunityGroup)
class CommunityGroupAdmin(CommunityAdminMixin, admin.ModelAdmin):
    list_display = ("group", "community")
    search_fields = ("group__name", "community")
