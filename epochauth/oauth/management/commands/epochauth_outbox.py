from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError
from django.db import DatabaseError, connections

from epochauth.management import base
from epochauth.oauth import backchannel
from epochauth.ssf import transmitter


class Command(base.EpochauthCommand):
    help = (
        "Deliver the logout tokens that are due to relying parties (back-channel logout) and the "
        "Security Event Tokens due to Shared Signals receivers (push), with retries; once, or with "
        "--loop until stopped. Each process also delivers what it queued, in "
        "the background: this picks up what a process left behind."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Keep draining, every --interval, until stopped."
        )
        parser.add_argument(
            "--interval",
            default="5s",
            help="The wait between drains with --loop (seconds, or 30s, 5m...; default 5s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            interval = base.duration(options["interval"]).total_seconds()
        except ValueError:
            interval = 0
        if interval <= 0:
            raise CommandError("--interval must be a duration of more than zero")
        while True:
            try:
                attempted = backchannel.drain() + transmitter.drain()
            except DatabaseError as exc:
                if not options["loop"]:
                    raise CommandError(f"The database cannot be read: {exc}") from None
                self.stderr.write(f"The database cannot be read: {exc}")
                attempted = 0
            if not options["loop"]:
                self.stdout.write(f"Attempted {attempted} deliveries.")
                return
            connections.close_all()
            time.sleep(interval)
