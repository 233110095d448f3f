from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokenauth.issuers import IssuerUnavailable, get_issuer, jwks_cache
from tokenauth.models import Issuer


class Command(BaseCommand):
    help = "Manage the external issuers whose tokens are accepted."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser("add", help="allow an issuer (or update it)")
        add.add_argument("url")
        add.add_argument("--audience", action="append", default=[], dest="audiences")
        add.add_argument("--scope", action="append", default=[], dest="scopes", help="a required scope")
        add.add_argument("--no-provision", action="store_true", help="refuse identities not registered yet")
        add.add_argument("--client-id", default="")
        add.add_argument("--client-secret-env", default="", help="environment variable holding the secret")
        sub.add_parser("list", help="show the issuers")
        for action in ("enable", "disable", "refresh"):
            sub.add_parser(action).add_argument("url")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            for issuer in Issuer.objects.order_by("issuer"):
                state = "enabled " if issuer.enabled else "disabled"
                self.stdout.write(
                    f"{state} {issuer.issuer}  audiences={','.join(issuer.audiences) or '-'}"
                    f"  scopes={','.join(issuer.required_scopes) or '-'}  provision={issuer.auto_provision}"
                )
            return
        url = options["url"]
        if action == "add":
            self.add(url, options)
            return
        issuer = Issuer.objects.filter(issuer=url).first()
        if action == "refresh":
            if issuer is None and get_issuer(url) is None:  # settings issuers may be refreshed too
                raise CommandError(f"No such issuer: {url}")
            try:
                keyset = jwks_cache.refresh_now(url)
            except IssuerUnavailable:
                raise CommandError(f"Could not fetch the discovery document or keys of {url}") from None
            self.stdout.write(f"{url}: {len(keyset.keys)} keys ({', '.join(sorted(keyset.keys))})")
            return
        if issuer is None:
            raise CommandError(f"No such issuer: {url}")
        issuer.enabled = action == "enable"
        issuer.save(update_fields=["enabled"])
        self.stdout.write(f"{action}d {url}")

    def add(self, url: str, options: dict[str, Any]) -> None:
        if options["client_secret_env"] and not options["client_id"]:
            raise CommandError("--client-secret-env needs --client-id")
        issuer = Issuer.objects.filter(issuer=url).first() or Issuer(issuer=url)
        issuer.audiences = options["audiences"]
        issuer.required_scopes = options["scopes"]
        issuer.auto_provision = not options["no_provision"]
        issuer.client_id = options["client_id"]
        issuer.client_secret_env = options["client_secret_env"]
        try:
            issuer.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        issuer.save()
        self.stdout.write(f"added {url}")
