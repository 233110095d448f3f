from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db.models import Q
from django.utils import timezone

from tokenauth.models import Session
from tokenauth.revocation import purge_expired


class Command(BaseCommand):
    help = "Delete expired or ended sessions and denylist rows that can no longer matter (run daily)."

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        sessions, _ = Session.objects.filter(Q(expires_at__lte=now) | Q(revoked_at__isnull=False)).delete()
        revoked = purge_expired()
        self.stdout.write(f"Deleted {sessions} sessions and {revoked} revoked-token rows.")
        if apps.is_installed("tokenauth.oauth"):
            from oauth2_provider.models import clear_expired

            clear_expired()  # expired or revoked DOT tokens, grants and device codes
            self.stdout.write("Cleared expired OAuth tokens and grants.")
