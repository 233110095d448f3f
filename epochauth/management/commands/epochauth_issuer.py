from __future__ import annotations

from argparse import ArgumentTypeError, BooleanOptionalAction
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from epochauth import issuers, jwks, models, profiles
from epochauth.management import base

#: The Issuer fields that ``add`` sets from its options; an option not given leaves the field alone.
OPTIONS = (
    "audiences",
    "profile",
    "accept_any_audience",
    "required_scopes",
    "algorithms",
    "auto_provision",
    "group_claims",
    "group_map",
    "group_prefix",
    "mirror_groups",
    "username_claim",
    "status_list",
    "slug",
    "display_name",
    "client_id",
    "client_secret_env",
)


def group_mapping(text: str) -> tuple[str, str]:
    """``VALUE=GROUP``, split at the last ``=``: claim values (entitlement URNs) may hold one."""
    value, _, group = text.rpartition("=")
    if not value or not group:
        raise ArgumentTypeError(f"not VALUE=GROUP: {text!r}")
    return value, group


class Command(base.EpochauthCommand):
    help = "Manage the external issuers whose tokens are accepted."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        add = sub.add_parser(
            "add", help="allow an issuer, or change the options given of one allowed already"
        )
        add.add_argument("url")
        add.add_argument(
            "--audience", action="append", dest="audiences", help="an accepted audience"
        )
        add.add_argument(
            "--profile",
            choices=[*sorted(profiles.PROFILES), "none"],
            type=str.lower,
            help="the token profile the issuer follows: its any-audience, path scopes and wlcg.groups",
        )
        add.add_argument(
            "--any-audience",
            action=BooleanOptionalAction,
            dest="accept_any_audience",
            help="accept the profile's any-audience (WLCG https://wlcg.cern.ch/jwt/v1/any, SciTokens ANY)",
        )
        add.add_argument(
            "--scope", action="append", dest="required_scopes", help="a required scope"
        )
        add.add_argument(
            "--algorithm", action="append", dest="algorithms", help="an accepted algorithm"
        )
        add.add_argument(
            "--provision",
            action=BooleanOptionalAction,
            dest="auto_provision",
            help="create users for identities not seen before (the default for a new issuer)",
        )
        add.add_argument(
            "--group-claim", action="append", dest="group_claims", help="a claim listing groups"
        )
        add.add_argument(
            "--group-map",
            action="append",
            dest="group_map",
            type=group_mapping,
            metavar="VALUE=GROUP",
            help="a group claim's value joins this local group (even one holding permissions); "
            "the options given replace the mapping",
        )
        add.add_argument(
            "--group-prefix",
            help='unmapped claim values become groups with this prefix (e.g. "cms:"; "" ignores them)',
        )
        add.add_argument(
            "--mirror-groups",
            action=BooleanOptionalAction,
            dest="mirror_groups",
            help="with group claims: a newer token's groups replace the user's (the default)",
        )
        add.add_argument(
            "--default-group", action="append", dest="default_groups", help="an existing group"
        )
        add.add_argument("--username-claim")
        add.add_argument(
            "--status-list",
            choices=["closed", "open", "none"],
            help="honour the status claim of its tokens, refusing (closed) or accepting (open) "
            "them when the list cannot be had; none: ignore it",
        )
        add.add_argument("--slug", help="browser login: the provider's URL slug")
        add.add_argument(
            "--display-name", help="browser login: the provider's name on the login page"
        )
        add.add_argument("--client-id", help="browser login: our client id at the issuer")
        add.add_argument(
            "--client-secret-env", help="browser login: environment variable holding the secret"
        )
        sub.add_parser("list", help="show the issuers")
        for action in ("enable", "disable", "refresh"):
            sub.add_parser(action).add_argument("url")

    def handle(self, *args: Any, action: str, **options: Any) -> None:
        if action == "list":
            for row in models.Issuer.objects.order_by("issuer"):
                state = "enabled " if row.enabled else "disabled"
                self.stdout.write(
                    f"{state} {row.issuer}  audiences={','.join(row.audiences) or '-'}"
                    f"  scopes={','.join(row.required_scopes) or '-'}  provision={row.auto_provision}"
                    + (f"  profile={row.profile}" if row.profile else "")
                )
            return
        url = options["url"]
        if action == "add":
            self.add(url, options)
            return
        issuer = models.Issuer.objects.filter(issuer=url).first()
        if action == "refresh":
            if (
                issuer is None and issuers.get_issuer(url) is None
            ):  # settings issuers may be refreshed too
                raise CommandError(f"No such issuer: {url}")
            try:
                keyset = jwks.jwks_cache.refresh_now(url)
            except jwks.IssuerUnavailable:
                raise CommandError(
                    f"Could not fetch the discovery document or keys of {url}"
                ) from None
            self.stdout.write(f"{url}: {len(keyset.keys)} keys ({', '.join(sorted(keyset.keys))})")
            return
        if issuer is None:
            raise CommandError(f"No such issuer: {url}")
        issuer.enabled = action == "enable"
        issuer.save(update_fields=["enabled"])
        self.stdout.write(f"{action}d {url}")

    def add(self, url: str, options: dict[str, Any]) -> None:
        issuer = models.Issuer.objects.filter(issuer=url).first() or models.Issuer(issuer=url)
        for name in ("profile", "status_list"):
            if options[name] == "none":
                options[name] = ""
        if options["group_map"] is not None:
            options["group_map"] = dict(options["group_map"])
        for name in OPTIONS:
            if options[name] is not None:
                setattr(issuer, name, options[name])
        if issuer.client_secret_env and not issuer.client_id:
            raise CommandError("--client-secret-env needs --client-id")
        groups = options["default_groups"]
        if groups is not None:
            missing = sorted(
                set(groups)
                - set(Group.objects.filter(name__in=groups).values_list("name", flat=True))
            )
            if missing:
                raise CommandError(f"No such group: {', '.join(missing)}")
        try:
            issuer.full_clean()
        except ValidationError as exc:
            raise CommandError("; ".join(exc.messages)) from None
        with transaction.atomic():
            issuer.save()
            if groups is not None:
                issuer.default_groups.set(Group.objects.filter(name__in=groups))
        self.stdout.write(f"added {url}")
        if not (issuer.audiences or issuer.accept_any_audience or issuer.required_scopes):
            self.stderr.write(
                "Warning: any token this issuer signs is accepted, even one meant for another service; "
                "give it --audience or --scope."
            )
