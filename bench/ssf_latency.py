"""How long a revocation made in one deployment takes to be refused by another that learns it through
Shared Signals (issue 28): two deployments of the test project on one machine (tests/deployments.py),
each a ``runserver`` process with its own SQLite file and its own LocMemCache.

A user logs in at A for a token for B; once B has accepted it, A waits a random part of B's poll
interval and revokes the user over a URL (``POST /auth/logout-all/`` and an administrator's
``POST /auth/revoke/``, alternating); B is asked with the token until its first 401. The latency is
from the start of A's revoking request to that 401, on ``time.monotonic()``. Once with push delivery
(A's outbox thread POSTs each SET to B), once with poll delivery (B's ``epochauth_ssf_poll --loop``
every :data:`POLL_INTERVAL`), the path that works when A cannot reach B.
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

from tests.deployments import KINDS, two_deployments

from .measure import summary

#: ``epochauth_ssf_poll --loop``'s default interval, seconds.
POLL_INTERVAL = 5.0
#: Seconds B may take before a trial counts as a timeout.
BOUND = 30.0
DELIVERIES = ("push", "poll")


def measure(trials: int) -> dict[str, Any]:
    """``trials`` revocations per delivery; latencies in ms."""
    latencies: dict[str, list[float]] = {delivery: [] for delivery in DELIVERIES}
    timeouts = dict.fromkeys(DELIVERIES, 0)
    with tempfile.TemporaryDirectory(prefix="epochauth-bench-ssf-") as directory:
        with two_deployments(Path(directory)) as loop:
            for delivery in DELIVERIES:
                loop.subscribe(delivery, POLL_INTERVAL)
                for trial in range(trials):
                    took = loop.trial(
                        KINDS[trial % len(KINDS)], BOUND, random.uniform(0, POLL_INTERVAL)
                    )
                    if took is None:
                        timeouts[delivery] += 1
                    else:
                        latencies[delivery].append(took * 1000)
    return {
        "latency_ms": latencies,
        "timeouts": timeouts,
        "summary": {k: summary(v) for k, v in latencies.items()},
        "poll_interval_s": POLL_INTERVAL,
    }
