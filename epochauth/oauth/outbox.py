"""Outboxes: rows of something to deliver (:class:`~.models.Outbox`), written in the transaction that
caused them and delivered after it commits, by a background thread of the process that wrote them or
by ``manage.py epochauth_outbox``, with retries that wait longer each time. Logout tokens
(:mod:`.backchannel`) and Security Event Tokens (:mod:`epochauth.ssf.transmitter`) are two kinds."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.db.models import Q, QuerySet
from django.utils import timezone

from .. import background, conf
from .models import Outbox

logger = logging.getLogger(__name__)

#: The rows one drain reads at a time.
BATCH = 100
#: How long ``epochauth_purge`` keeps a delivered row, and one given up (for the admin to look at).
KEEP_DELIVERED = timedelta(days=1)
KEEP_GIVEN_UP = timedelta(days=30)

worker = background.Worker("epochauth-outbox")


def drain(rows: QuerySet, attempt: Callable[[Any], None], limit: int | None = None) -> int:
    """Attempt every row of ``rows`` that is due (at most ``limit``); ``attempt`` takes its primary
    key. Returns how many were attempted.

    A row is claimed by raising its attempt count where it still has the count read, so that
    drainers in other threads and processes attempt it once between them."""
    model = rows.model
    attempted = 0
    while limit is None or attempted < limit:
        due = list(
            rows.filter(state=Outbox.State.PENDING, next_attempt_at__lte=timezone.now())
            .order_by("next_attempt_at")
            .values_list("pk", "attempts")[:BATCH]
        )
        if not due:
            break
        for pk, attempts in due:
            if limit is not None and attempted >= limit:
                break
            # The lease: another drainer leaves it alone until this attempt has had its time.
            claimed = model.objects.filter(
                pk=pk, state=Outbox.State.PENDING, attempts=attempts
            ).update(attempts=attempts + 1, next_attempt_at=timezone.now() + _lease())
            if claimed:
                attempt(pk)
                attempted += 1
        if len(due) < BATCH:
            break
    return attempted


def _lease() -> Any:
    return 2 * conf.epochauth_settings.HTTP_TIMEOUT + conf.epochauth_settings.LEEWAY


def record(
    row: Outbox,
    delivered: bool,
    status: int | None,
    error: str,
    *,
    attempts: int,
    retry_delay: timedelta,
    label: str,
    give_up: bool = False,
) -> None:
    """Delivered; or again after a wait that doubles with each attempt; or given up: after
    ``attempts``, after a second 4xx other than 429 (the receiver refuses it: once more in case the
    first was a hiccup), at once with ``give_up``. ``label`` names the delivery in the warning
    logged for each failure (never with a token)."""
    now = timezone.now()
    row.last_error = error[:255]
    if delivered:
        row.state, row.delivered_at = Outbox.State.DELIVERED, now
    elif (
        give_up
        or (status is not None and 400 <= status < 500 and status != 429 and row.attempts >= 2)
        or row.attempts >= attempts
    ):
        row.state = Outbox.State.FAILED
    else:
        row.next_attempt_at = now + retry_delay * 2 ** (row.attempts - 1)
    if row.state != Outbox.State.DELIVERED:
        logger.warning(
            "epochauth: %s (%s %s, attempt %d): %s%s",
            label,
            row._meta.model_name,
            row.pk,
            row.attempts,
            error,
            "; given up" if row.state == Outbox.State.FAILED else "",
        )
    row.save(update_fields=["state", "delivered_at", "next_attempt_at", "last_error"])


def retry(rows: QuerySet) -> int:
    """Make these (given up or pending) rows due again from the start; how many."""
    count = rows.exclude(state=Outbox.State.DELIVERED).update(
        state=Outbox.State.PENDING, attempts=0, next_attempt_at=timezone.now()
    )
    return int(count)


def purge(rows: QuerySet) -> int:
    """Delete the rows that are over: delivered ones after :data:`KEEP_DELIVERED`, given-up ones
    after :data:`KEEP_GIVEN_UP`; returns how many."""
    now = timezone.now()
    over = Q(state=Outbox.State.DELIVERED, delivered_at__lte=now - KEEP_DELIVERED) | Q(
        state=Outbox.State.FAILED, created_at__lte=now - KEEP_GIVEN_UP
    )
    return int(rows.filter(over).delete()[0])
