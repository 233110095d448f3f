"""Stored grants per user: issuer, scope, created, last used, revocation state; never the token."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import grants, models


@admin.register(models.UpstreamGrant)
class UpstreamGrantAdmin(admin.ModelAdmin):
    fields = (
        "user",
        "issuer",
        "scope",
        "created",
        "last_used",
        "ended_at",
        "end_reason",
        "revoke_attempts",
        "revoke_error",
    )
    list_display = tuple(name for name in fields if name != "end_reason")
    list_filter = ("issuer", ("ended_at", admin.EmptyFieldListFilter))
    search_fields = ("user__username", "issuer")
    readonly_fields = fields
    actions = ("revoke", "retry")

    def has_add_permission(self, request: Any) -> bool:
        return False

    def has_change_permission(self, request: Any, obj: Any = None) -> bool:
        return False

    @admin.action(
        description=_("Revoke the selected grants at their provider"), permissions=["delete"]
    )
    def revoke(self, request: Any, queryset: Any) -> None:
        ended = grants.end(queryset, "admin")
        self.message_user(
            request,
            ngettext(
                "%d grant ended; revoked at the provider unless listed still.",
                "%d grants ended; revoked at the provider unless listed still.",
                len(ended),
            )
            % len(ended),
        )

    @admin.action(description=_("Retry the revocation of ended grants"), permissions=["delete"])
    def retry(self, request: Any, queryset: Any) -> None:
        left = grants.revoke_ended(
            queryset.filter(ended_at__isnull=False).values_list("pk", flat=True)
        )
        level = messages.WARNING if left else messages.SUCCESS
        text = ngettext(
            "%d grant still waits for its provider.",
            "%d grants still wait for their provider.",
            left,
        )
        self.message_user(request, text % left, level)
