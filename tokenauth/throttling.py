"""Failed password attempts at ``POST /auth/token/``, counted per client address and per username.

DRF's throttles count every request, so a user who logs in correctly a dozen times a minute would be
locked out; here only failures count. An attempt is counted before the password is checked and taken
back once it succeeded, so parallel guesses cannot slip past the limit while their checks run. The
counters live in the shared cache: when it cannot be reached, a login is refused (503), never checked
unthrottled.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from . import conf, snapshots

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"10/min"`` -> (10, 60): DRF's rate strings (the period's first letter counts)."""
    count, _, period = rate.partition("/")
    return int(count), PERIODS[period[:1]]


def client_address(request: Request) -> str:
    """``REMOTE_ADDR``; ``X-Forwarded-For`` counts only behind DRF's ``NUM_PROXIES`` proxies: DRF
    would otherwise take the header as given, and a client could name a new address each try."""
    if api_settings.NUM_PROXIES is None:
        return request.META.get("REMOTE_ADDR", "")
    return BaseThrottle().get_ident(request)


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class LoginAttempt:
    """One password check: ``start()`` before it, ``succeeded()`` after a correct password."""

    def __init__(self, request: Request, username: str) -> None:
        rate = conf.tokenauth_settings.LOGIN_THROTTLE_RATE
        self.limit, self.period = parse_rate(rate) if rate else (0, 0)
        if not self.period:
            return
        now = time.time()
        window = int(now) // self.period
        #: Until the window ends: a fixed window per period, like DRF's own throttle history expires.
        self.wait = (window + 1) * self.period - now
        self.keys = [
            f"{snapshots.CACHE_PREFIX}login-failures:{kind}:{_digest(value)}:{window}"
            for kind, value in (
                ("address", client_address(request)),
                ("username", username.casefold()),
            )
        ]

    def start(self) -> None:
        """Count this attempt as failed; raises Throttled when the address or the username is over the
        limit, StateUnavailable when the counters cannot be read."""
        if not self.period:
            return
        counts = [self._increment(key) for key in self.keys]
        if max(counts) > self.limit:
            raise Throttled(wait=self.wait)

    def succeeded(self) -> None:
        """Take the count back: correct logins are not limited. Best effort, the window ends anyway."""
        if self.period:
            for key in self.keys:
                snapshots.shared_cache_call("decr", key)

    def _increment(self, key: str) -> Any:
        # A key evicted between add and incr makes incr fail: that reads as unavailable (fail closed).
        snapshots.required_cache_call("add", key, 0, self.period + 1)
        return snapshots.required_cache_call("incr", key)
