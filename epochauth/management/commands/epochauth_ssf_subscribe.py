from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError, CommandParser

from epochauth import issuers, models
from epochauth.management import base
from epochauth.ssf import receiver, subscription


class Command(base.EpochauthCommand):
    help = (
        "Create or update our Shared Signals stream at a transmitter of SSF_TRANSMITTERS (push with a "
        "new authorization secret, or poll), and ask for its verification event."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("issuer", help="the transmitter's issuer, as in SSF_TRANSMITTERS")
        parser.add_argument(
            "--wait",
            type=float,
            default=10.0,
            help="seconds to wait for a pushed verification event (default 10)",
        )

    def handle(self, *args: Any, issuer: str, wait: float, **options: Any) -> None:
        transmitter = receiver.transmitters().get(issuer)
        if transmitter is None:
            raise CommandError(f"{issuer} is not in EPOCHAUTH['SSF_TRANSMITTERS']")
        if issuers.get_issuer(issuer) is None:
            raise CommandError(f"{issuer} is not an allow-listed issuer (EPOCHAUTH['ISSUERS'])")
        try:
            stream = subscription.subscribe(transmitter)
            if stream.delivery == models.SsfSubscription.Delivery.POLL:
                subscription.poll(stream)
        except subscription.SubscriptionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"Stream {stream.stream_id} at {issuer}, delivery {stream.delivery}.")
        deadline = time.monotonic() + wait
        while True:
            stream.refresh_from_db()
            if stream.verified_at is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        if stream.verified_at is not None:
            self.stdout.write("Verified: the transmitter's verification event arrived.")
        else:
            self.stdout.write("Not verified yet: no verification event arrived.")
