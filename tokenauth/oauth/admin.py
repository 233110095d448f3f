"""DOT's admin screens (token strings already masked) with revoke actions that also deny our JWTs
(DOT refuses to delete token rows, or an application that has any, so no JWT outlives its row),
and each application's allowed scopes. Needs "oauth2_provider" before "tokenauth.oauth" in
INSTALLED_APPS, so that DOT's admin classes are registered first."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.http import HttpRequest
from oauth2_provider.models import get_access_token_model, get_application_model, get_refresh_token_model

from .models import AllowedScopes
from .revocation import ending, issued_with

Application = get_application_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


class AllowedScopesInline(admin.StackedInline):
    model = AllowedScopes
    extra = 0


class GrantInline(admin.TabularInline):
    """On a user's page: the applications they let act for them (refresh tokens, never their values);
    revoke one in the refresh-token list, or all with "Revoke all tokens and sessions"."""

    model = RefreshToken
    fk_name = "user"
    extra = 0
    can_delete = False
    fields = ("application", "created", "updated", "revoked")
    readonly_fields = fields
    verbose_name = "OAuth grant"
    verbose_name_plural = "OAuth grants (refresh tokens of applications)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ApplicationAdmin(type(admin.site._registry[Application])):
    inlines = [AllowedScopesInline]


class AccessTokenAdmin(type(admin.site._registry[AccessToken])):
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Read-only: the JWT carries its own expiry and scope, so an edited row would change
        nothing but the checksum that finds the row by its JWT (DOT derives it from the ``jti``)."""
        return False

    @admin.action(description="Revoke selected access tokens")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        """DOT revokes the bound refresh tokens too: their families end."""
        with ending(queryset, RefreshToken.objects.filter(access_token__in=queryset)):
            super().revoke_tokens(request, queryset)


class RefreshTokenAdmin(type(admin.site._registry[RefreshToken])):
    @admin.action(description="Revoke selected refresh tokens (and their access tokens)")
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        with ending(issued_with(queryset), queryset):
            super().revoke_tokens(request, queryset)


for model, model_admin in (
    (Application, ApplicationAdmin),
    (AccessToken, AccessTokenAdmin),
    (RefreshToken, RefreshTokenAdmin),
):
    admin.site.unregister(model)
    admin.site.register(model, model_admin)

# tokenauth's admin re-registered the user admin with its sessions and identities; grants join them.
_user_admin = admin.site._registry.get(get_user_model())
if _user_admin is not None and GrantInline not in _user_admin.inlines:
    _user_admin.inlines = [*_user_admin.inlines, GrantInline]
