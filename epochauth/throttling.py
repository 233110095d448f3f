"""Failed attempts at guessing a secret: passwords at ``POST /auth/token/``, counted per client address
and per username, and device user codes at ``/o/device/``, per client address and per signed-in user;
and client registrations (RFC 7591), every one counted per client address.

DRF's throttles count every request, so a user who logs in correctly a dozen times a minute would be
locked out; here only failures count. An attempt is counted before the secret is checked and taken
back once it succeeded, or when the check had no answer (the database down), so parallel guesses
cannot slip past the limit while their checks run, and an outage counts nothing. The counters live in
the shared cache: when it cannot be reached, the attempt is refused (503), never checked unthrottled.

Passwords have two limits per window. An address may fail ``LOGIN_THROTTLE_RATE`` times (whatever
usernames it tries). A username may fail :data:`USERNAME_FACTOR` times as often from everywhere
together before only the addresses it logged in from lately may try it: guessing one password from
many addresses stays bounded, and failures from anyone's addresses never lock the user out of an
address they log in from.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import timedelta
from typing import Any

from django.http import HttpRequest
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


def retry_after(exc: Throttled) -> str:
    """The ``Retry-After`` of a page answering ``exc`` (DRF's views set it themselves)."""
    wait = exc.wait  # type: ignore[attr-defined]  # set by DRF, missing from its stubs
    return str(math.ceil(wait or 1))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class Attempt:
    """One check of a secret: ``start()`` before it, then ``succeeded()`` after a right one or
    ``take_back()`` when the check could not run. Failures are counted separately for each of
    ``idents`` (kind -> value), at most ``rate`` (``None``: off)."""

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
        self.keys = {
            kind: f"{snapshots.CACHE_PREFIX}{self.name}-failures:{kind}:{_digest(value)}:{window}"
            for kind, value in idents.items()
        }

    def start(self) -> None:
        """Count this attempt as failed; raises Throttled when :meth:`over` the limit,
        StateUnavailable when the counters cannot be read."""
        if not self.period:
            return
        if self.over({kind: self._increment(key) for kind, key in self.keys.items()}):
            raise Throttled(wait=self.wait)

    def over(self, counts: dict[str, int]) -> bool:
        """Whether failures so far (this one included) refuse the attempt: any ident over the limit."""
        return max(counts.values()) > self.limit

    def succeeded(self) -> None:
        """Right secrets are not limited."""
        self.take_back()

    def take_back(self) -> None:
        """Take the count back: a right secret, or a check that could not run (the database down), is
        no failed guess. Best effort, the window ends anyway."""
        if self.period:
            for key in self.keys.values():
                snapshots.shared_cache_call("decr", key)

    def _increment(self, key: str) -> Any:
        # A key evicted between add and incr makes incr fail: that reads as unavailable (fail closed).
        snapshots.required_cache_call("add", key, 0, self.period + 1)
        return snapshots.required_cache_call("incr", key)


class LoginAttempt(Attempt):
    """One password check, counted per client address and per username (see the module's text)."""

    name = "login"

    def __init__(self, request: Request, username: str) -> None:
        address, username = client_address(request), username.casefold()
        super().__init__(
            conf.epochauth_settings.LOGIN_THROTTLE_RATE,
            {"address": address, "username": username},
        )
        known = _digest(f"{username}\0{address}")
        self.known_key = f"{snapshots.CACHE_PREFIX}login-known:{known}"

    def over(self, counts: dict[str, int]) -> bool:
        """The address over the limit, or the username over its own and this address not one it
        logged in from."""
        return counts["address"] > self.limit or (
            counts["username"] > self.limit * USERNAME_FACTOR
            and not snapshots.required_cache_call("get", self.known_key, False)
        )

    def succeeded(self) -> None:
        """Take the count back and remember the address as one the username logs in from."""
        if self.period:
            self.take_back()
            lifetime = int(KNOWN_ADDRESS_LIFETIME.total_seconds())
            snapshots.shared_cache_call("set", self.known_key, True, lifetime)


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
        super().__init__(conf.epochauth_settings.DEVICE_CODE_THROTTLE_RATE, idents)


class RegistrationAttempt(Attempt):
    """One dynamic client registration (RFC 7591), counted per client address; every registration
    counts and none is taken back: a script must not fill the application table."""

    name = "registration"

    def __init__(self, request: HttpRequest) -> None:
        super().__init__(
            conf.epochauth_settings.CLIENT_REGISTRATION_THROTTLE_RATE,
            {"address": client_address(Request(request))},
        )
