"""Housekeeping of the Token Manager: retry revocations the provider missed, re-encrypt with the first key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import transaction

from epochauth.tokenmanager import models
from epochauth.tokenmanager.grants import revoke_ended, vault


class Command(BaseCommand):
    help = "Retry revoking ended upstream grants at their provider; --rotate re-encrypts with the first key."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--rotate", action="store_true", help="re-encrypt every grant with the first key"
        )

    def handle(self, *args: Any, rotate: bool = False, **options: Any) -> None:
        if rotate:
            keys = vault()
            with transaction.atomic():
                grants = list(models.UpstreamGrant.objects.select_for_update())
                for grant in grants:
                    grant.encrypted_token = keys.rotate(grant.encrypted_token.encode()).decode()
                models.UpstreamGrant.objects.bulk_update(grants, ["encrypted_token"])
            self.stdout.write(f"re-encrypted {len(grants)} grant(s)")
        left = revoke_ended()
        self.stdout.write(f"{left} ended grant(s) still wait for their provider")
