"""System checks of the simplejwt migration: a window that ends, one that is not misspelt, and our
refresh view in place of simplejwt's."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.core import checks
from django.urls import URLResolver, get_resolver
from django.utils import timezone
from rest_framework_simplejwt.views import TokenRefreshView as SimpleJWTTokenRefreshView

from epochauth import conf

from .views import TokenRefreshView


@checks.register(checks.Tags.security)
def check_migration_window(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    ends = conf.epochauth_settings.SIMPLEJWT_MIGRATION_ENDS
    if ends is None:
        return [
            checks.Warning(
                "simplejwt tokens are accepted with no end date.",
                hint='Set EPOCHAUTH["SIMPLEJWT_MIGRATION_ENDS"] (an aware datetime) to end the migration '
                "window, then remove epochauth.contrib.simplejwt.",
                id="epochauth.simplejwt.W001",
            )
        ]
    if not isinstance(ends, datetime) or timezone.is_naive(ends):
        return [
            checks.Error(
                'EPOCHAUTH["SIMPLEJWT_MIGRATION_ENDS"] must be None or an aware datetime.',
                hint="e.g. datetime(2027, 1, 31, tzinfo=UTC)",
                id="epochauth.simplejwt.E001",
            )
        ]
    return []


def _view_classes(patterns: list[Any]) -> Iterator[Any]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _view_classes(pattern.url_patterns)
        else:
            yield getattr(pattern.callback, "view_class", None)


@checks.register(checks.Tags.security, checks.Tags.urls)
def check_refresh_view(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """simplejwt's own refresh view mints access tokens from revoked and exchanged refresh tokens: we
    refuse those, so nothing leaks, but the clients that refresh there get 401s instead."""
    mounted = [
        view
        for view in _view_classes(get_resolver().url_patterns)
        if isinstance(view, type)
        and issubclass(view, SimpleJWTTokenRefreshView)
        and not issubclass(view, TokenRefreshView)
    ]
    if not mounted:
        return []
    return [
        checks.Warning(
            "simplejwt's TokenRefreshView is mounted: the access tokens it mints are refused after a "
            "revocation or an exchange of their user's refresh tokens.",
            hint="Mount epochauth.contrib.simplejwt.views.TokenRefreshView in its place.",
            id="epochauth.simplejwt.W002",
        )
    ]
