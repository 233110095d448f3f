"""Failed attempts at guessing a secret: passwords at ``POST /auth/token/``, counted per client address
and per username, and device user codes at ``/o/device/``, per client address and per signed-in user.

DRF's throttles count every request, so a user who logs in correctly a dozen times a minute would be
locked out; here only failures count. An attempt is counted before the secret is checked and taken
back once it succeeded, so parallel guesses cannot slip past the limit while their checks run. The
counters live in the shared cache: when it cannot be reached, the attempt is refused (503), never
checked unthrottled.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.http import HttpRequest
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


class Attempt:
    """One check of a secret: ``start()`` before it, ``succeeded()`` after a right one. Failures are
    counted separately for each of ``idents`` (kind -> value), at most ``rate`` (``None``: off)."""

    #: Names the counters in the cache.
    name = ""

    def __init__(self, rate: str | None, idents: dict[str, str]) -> None:
        self.limit, self.period = parse_rate(rate) if rate else (0, 0)
        if not self.period:
            return
        now = time.time()
        window = int(now) // self.period
        #: Until the window ends: a fixed window per period, like DRF's own throttle history expires.
        self.wait = (window + 1) * self.period - now
        self.keys = [
            f"{snapshots.CACHE_PREFIX}{self.name}-failures:{kind}:{_digest(value)}:{window}"
            for kind, value in idents.items()
        ]

    def start(self) -> None:
        """Count this attempt as failed; raises Throttled when any ident is over the limit,
        StateUnavailable when the counters cannot be read."""
        if not self.period:
            return
        counts = [self._increment(key) for key in self.keys]
        if max(counts) > self.limit:
            raise Throttled(wait=self.wait)

    def succeeded(self) -> None:
        """Take the count back: right secrets are not limited. Best effort, the window ends anyway."""
        if self.period:
            for key in self.keys:
                snapshots.shared_cache_call("decr", key)

    def _increment(self, key: str) -> Any:
        # A key evicted between add and incr makes incr fail: that reads as unavailable (fail closed).
        snapshots.required_cache_call("add", key, 0, self.period + 1)
        return snapshots.required_cache_call("incr", key)


class LoginAttempt(Attempt):
    """One password check, counted per client address and per username."""

    name = "login"

    def __init__(self, request: Request, username: str) -> None:
        super().__init__(
            conf.tokenauth_settings.LOGIN_THROTTLE_RATE,
            {"address": client_address(request), "username": username.casefold()},
        )


class DeviceCodeAttempt(Attempt):
    """One device user code looked up (RFC 8628 section 5.1), counted per client address and per
    signed-in user (an anonymous browser's session otherwise): guessing from elsewhere never locks a
    user out, nor does one user's guessing lock out another address."""

    name = "device-code"

    def __init__(self, request: HttpRequest) -> None:
        idents = {"address": client_address(Request(request))}
        if request.user.is_authenticated:
            idents["user"] = str(request.user.pk)
        elif request.session.session_key:
            idents["session"] = request.session.session_key
        super().__init__(conf.tokenauth_settings.DEVICE_CODE_THROTTLE_RATE, idents)
