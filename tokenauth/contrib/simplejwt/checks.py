"""System checks of the simplejwt migration: a window that ends, and one that is not misspelt."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core import checks
from django.utils import timezone

from tokenauth import conf


@checks.register(checks.Tags.security)
def check_migration_window(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    ends = conf.tokenauth_settings.SIMPLEJWT_MIGRATION_ENDS
    if ends is None:
        return [
            checks.Warning(
                "simplejwt tokens are accepted with no end date.",
                hint='Set TOKENAUTH["SIMPLEJWT_MIGRATION_ENDS"] (an aware datetime) to end the migration '
                "window, then remove tokenauth.contrib.simplejwt.",
                id="tokenauth.simplejwt.W001",
            )
        ]
    if not isinstance(ends, datetime) or timezone.is_naive(ends):
        return [
            checks.Error(
                'TOKENAUTH["SIMPLEJWT_MIGRATION_ENDS"] must be None or an aware datetime.',
                hint="e.g. datetime(2027, 1, 31, tzinfo=UTC)",
                id="tokenauth.simplejwt.E001",
            )
        ]
    return []
