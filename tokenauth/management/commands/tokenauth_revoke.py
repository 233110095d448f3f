from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from tokenauth.models import Epoch
from tokenauth.revocation import bump_epoch


class Command(BaseCommand):
    help = "Revoke every token of a user, of a group, or of everyone (bumps the epoch)."

    def add_arguments(self, parser: CommandParser) -> None:
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--user", metavar="USERNAME")
        target.add_argument("--group", metavar="NAME")
        target.add_argument("--all", action="store_true", help="every token this service ever issued")
        parser.add_argument("--reason", default="management command")

    def handle(
        self, *args: Any, user: str | None, group: str | None, all: bool, reason: str, **options: Any
    ) -> None:
        if user is not None:
            model = get_user_model()
            obj = model._default_manager.filter(**{model.USERNAME_FIELD: user}).first()
            kind, label = Epoch.Kind.USER, f"user {user}"
        elif group is not None:
            obj = Group.objects.filter(name=group).first()
            kind, label = Epoch.Kind.GROUP, f"group {group}"
        else:
            obj, kind, label = None, Epoch.Kind.GLOBAL, "everyone"
        if obj is None and kind != Epoch.Kind.GLOBAL:
            raise CommandError(f"No such {kind}: {user or group}")
        value = bump_epoch(kind, str(obj.pk) if obj else "", reason=reason)
        self.stdout.write(self.style.SUCCESS(f"Revoked all tokens of {label} (epoch now {value.value})."))
