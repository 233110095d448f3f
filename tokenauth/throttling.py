"""Failed password attempts at ``POST /auth/token/``, counted per client address and per username.

DRF's throttles count every request, so a user who logs in correctly a dozen times a minute would be
locked out; here only failures count. An attempt is counted before the password is checked and taken
back once it succeeded, or when the check had no answer (the database down), so parallel guesses
cannot slip past the limit while their checks run, and an outage counts nothing.

Two limits per window. An address may fail ``LOGIN_THROTTLE_RATE`` times (whatever usernames it
tries). A username may fail :data:`USERNAME_FACTOR` times as often from everywhere together before
only the addresses it logged in from lately may try it: guessing one password from many addresses
stays bounded, and failures from anyone's addresses never lock the user out of an address they log
in from. The counters live in the shared cache: when it cannot be reached, a login is refused (503),
never checked unthrottled.
"""

from __future__ import annotations

import hashlib
import time
from datetime import timedelta
from typing import Any

from rest_framework.exceptions import Throttled
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from . import conf, snapshots

PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: A username's limit per window is the rate's count times this; beyond it, only addresses that
#: logged in as it within :data:`KNOWN_ADDRESS_LIFETIME` may try it.
USERNAME_FACTOR = 10
#: How long a correct login makes its address one the username logs in from.
KNOWN_ADDRESS_LIFETIME = timedelta(days=30)


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
    """One password check: ``start()`` before it, then ``succeeded()`` after a correct password or
    ``take_back()`` when the check could not run."""

    def __init__(self, request: Request, username: str) -> None:
        rate = conf.tokenauth_settings.LOGIN_THROTTLE_RATE
        self.limit, self.period = parse_rate(rate) if rate else (0, 0)
        if not self.period:
            return
        now = time.time()
        window = int(now) // self.period
        #: Until the window ends: a fixed window per period, like DRF's own throttle history expires.
        self.wait = (window + 1) * self.period - now
        address, username = client_address(request), username.casefold()
        prefix = f"{snapshots.CACHE_PREFIX}login-failures"
        self.address_key = f"{prefix}:address:{_digest(address)}:{window}"
        self.username_key = f"{prefix}:username:{_digest(username)}:{window}"
        known = _digest(f"{username}\0{address}")
        self.known_key = f"{snapshots.CACHE_PREFIX}login-known:{known}"

    def start(self) -> None:
        """Count this attempt as failed; raises Throttled when the address is over the limit, or the
        username over its own and this address not one it logged in from; StateUnavailable when the
        counters cannot be read."""
        if not self.period:
            return
        from_address = self._increment(self.address_key)
        for_username = self._increment(self.username_key)
        if from_address > self.limit or (
            for_username > self.limit * USERNAME_FACTOR
            and not snapshots.required_cache_call("get", self.known_key, False)
        ):
            raise Throttled(wait=self.wait)

    def succeeded(self) -> None:
        """Take the count back (correct logins are not limited) and remember the address as one the
        username logs in from."""
        if self.period:
            self.take_back()
            lifetime = int(KNOWN_ADDRESS_LIFETIME.total_seconds())
            snapshots.shared_cache_call("set", self.known_key, True, lifetime)

    def take_back(self) -> None:
        """Take the count back: a correct password, or a check that could not run (the database
        down), is no failed guess. Best effort, the window ends anyway."""
        if self.period:
            for key in (self.address_key, self.username_key):
                snapshots.shared_cache_call("decr", key)

    def _increment(self, key: str) -> Any:
        # A key evicted between add and incr makes incr fail: that reads as unavailable (fail closed).
        snapshots.required_cache_call("add", key, 0, self.period + 1)
        return snapshots.required_cache_call("incr", key)
