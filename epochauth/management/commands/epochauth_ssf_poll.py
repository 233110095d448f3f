from __future__ import annotations

import logging

from django.core.management.base import CommandError

from epochauth import models
from epochauth.management import base
from epochauth.ssf import subscription

logger = logging.getLogger("epochauth.ssf.subscription")


class Command(base.LoopingCommand):
    help = (
        "Poll the Shared Signals transmitters we subscribed to with poll delivery (RFC 8936) and act "
        "on their events; once, or with --loop until stopped. Run one poller per deployment."
    )
    doing = "polling"

    def once(self, *, last: bool) -> None:
        failed = self.poll_all()
        if last and failed:
            raise CommandError(f"{failed} transmitter(s) could not be polled")

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
