"""Token Status Lists (draft-ietf-oauth-status-list): our tokens' revocation for verifiers that are
not epochauth, and the lists of external issuers for us.

As a Status Issuer: with ``STATUS_LIST`` on, each session gets an index when it starts (its
:class:`~epochauth.models.StatusListSlot`), and every access token of the session references it as
``status.status_list`` ``{idx, uri}``: one bit per session, not per token. List ``n`` holds the
indices ``n * size`` to ``(n + 1) * size - 1``. Its bits are not written by the revocation paths but
read from the database when the list is served (:func:`list_token`): a bit is 0 (VALID) only for a
session that may still hold live tokens, so logout, logout-all, every epoch bump, deactivation, the
session limit, back-channel logout and deleting a session row all set it without knowing about lists.
The signed list is kept in the shared cache for ``ttl``: a storm of fetches is one query per ``ttl``.

As a verifier: an issuer whose option ``status_list`` is ``"closed"`` or ``"open"`` has the
``status`` of its tokens honoured (:func:`check_external`). A list is fetched only from the
issuer's own origin, verified through the one pipeline with the issuer's keys, and held per process
for its ``ttl`` (bounded): one fetch per list per ``ttl``, never one per request.
"""

from __future__ import annotations

import binascii
import threading
import time
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.db.models import CharField, Exists, OuterRef, Q
from django.db.models.functions import Cast
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from . import (
    conf,
    exceptions,
    fetching,
    issuer_config,
    jwks,
    keys,
    models,
    sessions,
    snapshots,
    verification,
)

#: The ``typ`` of a Status List Token and the media type it is served as (draft section 5.1, 8.1).
TOKEN_TYPE = "statuslist+jwt"
MEDIA_TYPE = f"application/{TOKEN_TYPE}"
#: Status values (draft section 7.1); ours are only these two, in one bit each.
VALID, INVALID = 0, 1
BITS = 1

DEFAULT_SIZE = 1 << 20
DEFAULT_TTL = timedelta(minutes=5)
#: Bounds on an external list's ``ttl`` (without one: DEFAULT_TTL), in seconds: a list that asks to be
#: fetched every second is not; one that asks for a day is fetched hourly. A failed fetch is not
#: tried again for MIN_TTL.
MIN_TTL, MAX_TTL = 30.0, 3600.0
#: External lists held per process; beyond it the least recently used is dropped.
MAX_LISTS = 256
#: Issuer option values (``ISSUERS`` entries' ``status_list``): what a list that cannot be had means.
CLOSED, OPEN = "closed", "open"


@dataclass(frozen=True)
class Options:
    size: int
    ttl: timedelta


def options() -> Options | None:
    """``STATUS_LIST`` read (check E026 refuses other shapes), None when off."""
    value = conf.epochauth_settings.STATUS_LIST
    if not value:
        return None
    given = value if isinstance(value, dict) else {}
    return Options(given.get("size", DEFAULT_SIZE), given.get("ttl", DEFAULT_TTL))


# -- the format ------------------------------------------------------------------------------------


def encode(statuses: bytes) -> str:
    """``lst`` (draft section 4.1): the byte array DEFLATE-compressed in the ZLIB format (RFC 1950),
    best compression as in the draft's examples, base64url without padding."""
    packed = zlib.compress(statuses, 9)
    return binascii.b2a_base64(packed, newline=False).decode().translate(_URLSAFE).rstrip("=")


_URLSAFE = str.maketrans("+/", "-_")


def decode(lst: str) -> bytes:
    """The byte array of an ``lst``; raises ValueError when it is not base64url of ZLIB data."""
    padded = lst.translate(str.maketrans("-_", "+/")) + "=" * (-len(lst) % 4)
    try:
        return zlib.decompress(binascii.a2b_base64(padded, strict_mode=True))
    except (binascii.Error, zlib.error) as exc:
        raise ValueError(str(exc)) from None


def status_at(statuses: bytes, bits: int, idx: int) -> int:
    """The status of index ``idx`` (draft section 4.1): the ``bits`` bits of a byte counted from its
    least significant one, index 0 in the lowest bits of the first byte."""
    per_byte = 8 // bits
    byte, slot = divmod(idx, per_byte)
    if byte >= len(statuses):
        raise IndexError(idx)
    return (statuses[byte] >> (slot * bits)) & ((1 << bits) - 1)


# -- our lists -------------------------------------------------------------------------------------


def list_uri(number: int) -> str:
    """The URI of our list ``number``: the ``uri`` of its tokens' reference and its ``sub``."""
    path = reverse("epochauth-statuslist", kwargs={"number": number})
    return conf.epochauth_settings.ISSUER.rstrip("/") + path


def reference(session: models.Session) -> dict[str, Any]:
    """The ``status`` claim of the session's access tokens, for their ``extra_claims``; empty when
    the session has no index (started while ``STATUS_LIST`` was off) or the lists are off."""
    found = options()
    if found is None:
        return {}
    # A session without a slot raises RelatedObjectDoesNotExist, an AttributeError.
    slot = getattr(session, "status_slot", None)
    if slot is None:
        return {}
    number, idx = divmod(slot.pk, found.size)
    return {"status": {"status_list": {"idx": idx, "uri": list_uri(number)}}}


def _valid_indices(low: int, high: int) -> list[int]:
    """The indices in ``[low, high)`` of sessions that may still hold live tokens: not ended, not
    expired for longer than an access token lives, of an active user who has the session's group,
    and no global, group or community bump since the session began (a user's bump ends its
    sessions)."""
    now = timezone.now()
    epochs = models.Epoch.objects.filter(not_before__gt=OuterRef("session__created_at"))
    groups = get_user_model().groups
    member = groups.through.objects.filter(
        **{
            groups.field.m2m_field_name(): OuterRef("session__user_id"),
            groups.field.m2m_reverse_field_name(): OuterRef("session__group_id"),
        }
    )
    group_id = Cast(OuterRef("session__group_id"), CharField())
    rows = (
        models.StatusListSlot.objects.filter(
            pk__gte=low,
            pk__lt=high,
            session__revoked_at__isnull=True,
            session__expires_at__gt=now - sessions.access_token_margin(),
            session__user__is_active=True,
        )
        .exclude(Exists(epochs.filter(kind=models.Epoch.Kind.GLOBAL)))
        .exclude(Exists(epochs.filter(kind=models.Epoch.Kind.GROUP, object_id=group_id)))
        .exclude(
            Exists(
                epochs.filter(
                    kind=models.Epoch.Kind.COMMUNITY, object_id=OuterRef("session__community")
                )
            )
        )
        .filter(Q(session__group__isnull=True) | Exists(member))
    )
    return list(rows.values_list("pk", flat=True))


def statuses(number: int, size: int) -> bytes:
    """List ``number``'s byte array: every bit INVALID (an unused index is no one's) but those of
    :func:`_valid_indices`."""
    array = bytearray(b"\xff" * (size // 8))
    low = number * size
    for index in _valid_indices(low, low + size):
        byte, bit = divmod(index - low, 8)
        array[byte] &= ~(1 << bit)
    return bytes(array)


def _cache_key(number: int, size: int) -> str:
    return f"epochauth:statuslist:{size}:{number}"


def list_token(number: int) -> tuple[str, int] | None:
    """Our Status List Token ``number`` (draft section 5.1), signed by our key, and its ``ttl``;
    reused from the shared cache for ``ttl``. None when the lists are off or no session has an index
    that far."""
    found = options()
    if found is None:
        return None
    ttl = int(found.ttl.total_seconds())
    key = _cache_key(number, found.size)
    token = snapshots.shared_cache_call("get", key)  # an unreachable cache is a miss
    if token is not None:
        return str(token), ttl
    last = models.StatusListSlot.objects.order_by("-pk").values_list("pk", flat=True).first()
    if last is None or number > last // found.size:
        return None
    now = int(time.time())
    claims = {
        "iss": conf.epochauth_settings.ISSUER,
        "sub": list_uri(number),
        "iat": now,
        # Twice ttl: a copy served at the end of our cache's ttl still lasts the verifier's.
        "exp": now + 2 * ttl,
        "ttl": ttl,
        "status_list": {"bits": BITS, "lst": encode(statuses(number, found.size))},
    }
    token = keys.get_keyring().sign(claims, TOKEN_TYPE)
    snapshots.shared_cache_call("set", key, token, ttl)
    return token, ttl


# -- external issuers' lists -----------------------------------------------------------------------


def same_origin(uri: str, issuer: str) -> bool:
    """Whether ``uri`` is on ``issuer``'s origin: scheme, host and port (RFC 6454) alike."""
    try:
        a, b = urlsplit(uri), urlsplit(issuer)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port) and bool(
            a.hostname
        )
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Held:
    #: ``time.monotonic()`` after which the list is fetched again.
    until: float
    #: (bits, byte array); None: the fetch failed, and the issuer's option decides until ``until``.
    statuses: tuple[int, bytes] | None


class ExternalLists:
    """The external Status Lists this process holds, by URI, each until its ``ttl`` runs out; a
    failed fetch is remembered as long (an issuer that is down is not asked on every request). Of the
    threads that find a list missing, one fetches; the others wait for it."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._lock = threading.Lock()
        self._fetching: dict[str, threading.Lock] = {}

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def _get(self, uri: str) -> _Held | None:
        with self._lock:
            held = self._held.get(uri)
            if held is None or held.until <= time.monotonic():
                return None
            self._held.move_to_end(uri)
            return held

    def statuses(self, uri: str, config: issuer_config.IssuerConfig) -> tuple[int, bytes] | None:
        """The list at ``uri`` as (bits, byte array), None when it could not be had."""
        held = self._get(uri)
        if held is not None:
            return held.statuses
        with self._lock:
            fetching = self._fetching.setdefault(uri, threading.Lock())
        with fetching:
            held = self._get(uri)  # fetched by the thread this one waited for
            if held is None:
                held = _fetched(uri, config)
                with self._lock:
                    self._held[uri] = held
                    self._held.move_to_end(uri)
                    while len(self._held) > MAX_LISTS:
                        self._held.popitem(last=False)
                    self._fetching.pop(uri, None)
        return held.statuses


external_lists = ExternalLists()
conf.process_cache(external_lists.clear)


def _fetched(uri: str, config: issuer_config.IssuerConfig) -> _Held:
    """Fetch and verify the Status List Token at ``uri`` (draft section 8.3), as the issuer signed it."""
    try:
        body, _max_age = fetching.fetch(uri, {"Accept": MEDIA_TYPE})
        jws = verification.parse(body.decode("ascii").strip())
        policy = verification.Policy.for_issuer(
            config,
            audience=None,
            required=("iss", "sub", "iat", "status_list"),
            types=verification.media_types(TOKEN_TYPE),
            untyped=False,
            claims_valid=lambda claims: claims["sub"] == uri,
        )
        claims = verification.verify(jws, policy)
        found = claims["status_list"]
        bits, lst = found.get("bits"), found.get("lst")
        if bits not in (1, 2, 4, 8) or not isinstance(lst, str):
            raise ValueError("no status list")
        statuses = (bits, decode(lst))
        ttl = claims.get("ttl", DEFAULT_TTL.total_seconds())
        if type(ttl) not in (int, float) or ttl <= 0:
            raise ValueError("ttl")
    except (
        fetching.FetchError,
        jwks.IssuerUnavailable,
        exceptions.InvalidToken,
        ValueError,
        UnicodeError,
    ):
        return _Held(time.monotonic() + MIN_TTL, None)
    return _Held(time.monotonic() + min(max(ttl, MIN_TTL), MAX_TTL), statuses)


def check_external(claims: dict[str, Any], config: issuer_config.IssuerConfig) -> None:
    """Refuse an external token whose Status List says it is not VALID, when its issuer's option
    asks for it; a list that cannot be had refuses it (``"closed"``) or not (``"open"``). A token
    without ``status`` costs a dictionary lookup."""
    mode = config.status_list
    status = claims.get("status") if mode else None
    if status is None:
        return
    reference = status.get("status_list") if isinstance(status, dict) else None
    if not isinstance(reference, dict):
        raise exceptions.InvalidToken(_("The access token's status is invalid"))
    idx, uri = reference.get("idx"), reference.get("uri")
    if type(idx) is not int or idx < 0 or not isinstance(uri, str):
        raise exceptions.InvalidToken(_("The access token's status is invalid"))
    if not same_origin(uri, config.issuer):
        raise exceptions.InvalidToken(_("The access token's status list is not its issuer's"))
    found = external_lists.statuses(uri, config)
    if found is None:
        if mode == OPEN:
            return
        raise exceptions.InvalidToken(_("The access token's status cannot be checked"))
    try:
        value = status_at(found[1], found[0], idx)
    except IndexError:
        raise exceptions.InvalidToken(_("The access token's status is invalid")) from None
    if value != VALID:
        raise exceptions.InvalidToken(_("The access token was revoked"))
