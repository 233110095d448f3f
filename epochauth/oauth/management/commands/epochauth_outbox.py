from __future__ import annotations

from epochauth.management import base
from epochauth.oauth import backchannel
from epochauth.ssf import transmitter


class Command(base.LoopingCommand):
    help = (
        "Deliver the logout tokens that are due to relying parties (back-channel logout) and the "
        "Security Event Tokens due to Shared Signals receivers (push), with retries; once, or with "
        "--loop until stopped. Each process also delivers what it queued, in "
        "the background: this picks up what a process left behind."
    )
    doing = "draining"

    def once(self, *, last: bool) -> None:
        attempted = backchannel.drain() + transmitter.drain()
        if last:
            self.stdout.write(f"Attempted {attempted} deliveries.")
