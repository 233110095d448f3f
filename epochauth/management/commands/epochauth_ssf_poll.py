from __future__ import annotations

import logging
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, connections

from epochauth import models
from epochauth.management import base
from epochauth.ssf import subscription

logger = logging.getLogger("epochauth.ssf.subscription")


class Command(base.EpochauthCommand):
    help = (
        "Poll the Shared Signals transmitters we subscribed to with poll delivery (RFC 8936) and act "
        "on their events; once, or with --loop until stopped. Run one poller per deployment."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--loop", action="store_true", help="Keep polling, every --interval, until stopped."
        )
        parser.add_argument(
            "--interval",
            default="5s",
            help="The wait between polls with --loop (seconds, or 30s, 5m...; default 5s).",
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
                failed = self.poll_all()
            except DatabaseError as exc:
                if not options["loop"]:
                    raise CommandError(f"The database cannot be read: {exc}") from None
                self.stderr.write(f"The database cannot be read: {exc}")
                failed = 0
            if not options["loop"]:
                if failed:
                    raise CommandError(f"{failed} transmitter(s) could not be polled")
                return
            connections.close_all()
            time.sleep(interval)

    def poll_all(self) -> int:
        """One poll of each transmitter; returns how many failed (said, and tried again next time)."""
        failed = 0
        streams = models.SsfSubscription.objects.filter(
            delivery=models.SsfSubscription.Delivery.POLL
        )
        for stream in streams:
            try:
                taken = subscription.poll(stream)
            except subscription.SubscriptionError as exc:
                failed += 1
                logger.warning("epochauth: polling %s failed: %s", stream.issuer, exc)
                self.stderr.write(f"{stream.issuer}: {exc}")
                continue
            self.stdout.write(f"{stream.issuer}: {taken} event(s)")
        return failed
