from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db.models import Q
from django.utils import timezone

from epochauth import models, revocation
from epochauth.management import base
from epochauth.oidc import backchannel
from epochauth.sessions import access_token_margin


class Command(base.EpochauthCommand):
    help = (
        "Delete expired or ended sessions, denylist rows and browser-login records that can no longer "
        "matter (run daily)."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        now = timezone.now()
        # An expired session goes once none of its access tokens can be alive any more.
        dead = Q(expires_at__lte=now - access_token_margin()) | Q(revoked_at__isnull=False)
        sessions, _ = models.Session.objects.filter(dead).delete()
        revoked = revocation.purge_expired()
        self.stdout.write(f"Deleted {sessions} sessions and {revoked} revoked-token rows.")
        logins = (
            backchannel.purge_browser_logins()
        )  # after the sessions: an ended one keeps no login
        self.stdout.write(f"Deleted {logins} browser logins whose sessions are over.")
        if apps.is_installed("epochauth.oauth"):
            from oauth2_provider.models import clear_expired, get_device_grant_model

            clear_expired()  # expired or revoked DOT tokens and expired authorization codes
            # Expired device codes: clear_expired keeps them.
            get_device_grant_model().objects.filter(expires__lte=now).delete()
            self.stdout.write(
                "Cleared expired OAuth tokens, authorization codes and device codes."
            )
            from epochauth.oauth import backchannel as logout_outbox

            deliveries = logout_outbox.purge()
            self.stdout.write(f"Deleted {deliveries} logout deliveries that are over.")
            from epochauth.ssf import transmitter

            signals = transmitter.purge()
            self.stdout.write(f"Deleted {signals} shared signals events that are over.")
            from epochauth.oauth import proofs

            bindings = proofs.purge()  # after clear_expired: the families it ended
            self.stdout.write(f"Deleted {bindings} DPoP bindings of token families that are over.")
