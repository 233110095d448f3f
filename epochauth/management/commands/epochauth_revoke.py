from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from epochauth import revocation, snapshots
from epochauth.management import base


class Command(base.EpochauthCommand):
    help = (
        "Revoke every token of a user, of a group, of an external identity, of a community, or of "
        "everyone (bumps the epoch)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--user", metavar="USERNAME")
        target.add_argument("--group", metavar="NAME")
        target.add_argument(
            "--identity",
            nargs=2,
            metavar=("ISSUER", "SUBJECT"),
            help="the user of this (iss, sub)",
        )
        target.add_argument(
            "--community", metavar="SLUG", help="every token of this community (VO)"
        )
        target.add_argument(
            "--all", action="store_true", help="every token this service ever issued"
        )
        parser.add_argument("--reason", default="management command")

    def handle(
        self,
        *args: Any,
        user: str | None,
        group: str | None,
        identity: list[str] | None,
        community: str | None,
        reason: str,
        **options: Any,
    ) -> None:
        issuer, subject = identity or (None, None)
        try:
            target = revocation.find_target(
                user=user, group=group, issuer=issuer, subject=subject, community=community
            )
        except revocation.NoSuchTarget as exc:
            raise CommandError(str(exc)) from None
        try:
            value = revocation.bump_epoch(target.kind, target.object_id, reason=reason)
        except snapshots.StateUnavailable:
            raise CommandError(
                "The shared cache could not take the revocation; nothing changed. Try again."
            ) from None
        self.stdout.write(
            self.style.SUCCESS(f"Revoked all tokens of {target.label} (epoch now {value.value}).")
        )
