from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from epochauth import communities, scopes, tokens
from epochauth.management import base

MAX_LIFETIME = timedelta(days=3650)


class Command(base.EpochauthCommand):
    help = "Print an access token for a user (scripts, service accounts). It is not tied to a session."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, metavar="USERNAME")
        parser.add_argument(
            "--lifetime", help="e.g. 3600, 90m, 12h, 30d (default: ACCESS_TOKEN_LIFETIME)"
        )
        parser.add_argument("--scope", default="", help="space-separated scopes")
        parser.add_argument(
            "--vo",
            metavar="SLUG",
            help="the community the token is of (default: DEFAULT_COMMUNITY, or the user's only one)",
        )

    def handle(
        self,
        *args: Any,
        user: str,
        lifetime: str | None,
        scope: str,
        vo: str | None,
        **options: Any,
    ) -> None:
        model = get_user_model()
        account = model._default_manager.filter(**{model.USERNAME_FIELD: user}).first()
        if account is None:
            raise CommandError(f"No such user: {user}")
        if not account.is_active:
            raise CommandError(f"User {user} is inactive")
        # A service scope comes only from the client-credentials grant of a marked application.
        problem = scopes.refused_user_scopes(scopes.split_scope(scope))
        if problem:
            raise CommandError(f"{problem} (a user scope is declared in EPOCHAUTH['SCOPES'])")
        try:
            duration = base.duration(lifetime) if lifetime else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        except OverflowError:
            raise CommandError(f"--lifetime is out of range: {lifetime!r}") from None
        # exp is whole seconds, and a date past MAX_LIFETIME would overflow wherever exp becomes a datetime.
        if duration is not None and not timedelta(seconds=1) <= duration <= MAX_LIFETIME:
            raise CommandError(f"--lifetime must be between 1 second and {MAX_LIFETIME.days} days")
        try:
            community = communities.choose(account.pk, [f"vo:{vo}"] if vo else [])
        except communities.Refused as exc:
            raise CommandError(str(exc.description)) from None
        names = scopes.split_scope(scope) + ([community.scope] if community is not None else [])
        issued = tokens.mint_access_token(
            account, scope=" ".join(dict.fromkeys(names)), lifetime=duration, community=community
        )
        self.stdout.write(issued.token)
