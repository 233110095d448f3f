"""The outage journal: changes that end tokens, made while the database is unreachable and the shared
cache (Redis) is not, kept in Redis until the database takes them (:mod:`epochauth.outage` makes and
replays them).

An entry is appended by one Lua script together with the mirror change it makes (the next epoch
value), so that neither exists without the other; it is numbered (``SEQ``, never reused) and the list
is bounded (``OUTAGE_JOURNAL_SIZE``): a full or unreachable journal is
:class:`~epochauth.snapshots.StateUnavailable` (503), never a change other processes cannot learn
of. Every process applies the entries it has not seen, read with the revocation version each refresh
interval (push is the fast path, this the net). One process at a time, holding a lease, replays the
list head first into the database and removes each entry after its transaction committed; entries
are idempotent, so a replayer that dies between the two only makes the next one replay it again.

The mirror is what an outage's bump must exceed: every epoch value, written through when it changes
and by each process as it loads the epoch rows. Only with Django's Redis cache as the shared cache:
with a per-process cache nothing is journaled and these changes answer 503, as without the journal.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from django.db import InterfaceError, OperationalError

from . import conf, push, snapshots

logger = logging.getLogger(__name__)

#: What a database that cannot be reached raises (not a constraint or a programming error).
OUTAGE = (OperationalError, InterfaceError)

JOURNAL = f"{snapshots.CACHE_PREFIX}journal"
#: The number of the last entry appended (entries are numbered from 1, a number is never reused).
SEQ = f"{snapshots.CACHE_PREFIX}journal:seq"
#: Epoch values by "kind:object id": the largest each row had as far as the mirror saw it.
EPOCHS = f"{snapshots.CACHE_PREFIX}mirror:epochs"
LEASE = f"{snapshots.CACHE_PREFIX}journal:lease"
#: How long a replayer holds the lease without removing an entry (it renews it with each one).
LEASE_MS = 30_000

# KEYS: journal, seq, epochs. ARGV: limit, entry (a JSON object), the epoch to bump ("" for none),
# the value the bump must exceed. The entry is stored with its number and the new value in front.
_APPEND = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local value = 0
if ARGV[3] ~= '' then
  local held = tonumber(redis.call('HGET', KEYS[3], ARGV[3]) or '0')
  value = math.max(held, tonumber(ARGV[4])) + 1
  redis.call('HSET', KEYS[3], ARGV[3], value)
end
local seq = redis.call('INCR', KEYS[2])
local entry = '{"seq":' .. seq .. ',"v":' .. value .. ',' .. string.sub(ARGV[2], 2)
redis.call('RPUSH', KEYS[1], entry)
return entry
"""
# KEYS: epochs. ARGV: field, value, field, value ...: each kept if larger than the one held.
_MIRROR = """
for i = 1, #ARGV, 2 do
  if tonumber(ARGV[i + 1]) > tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '0') then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  end
end
return 0
"""
# KEYS: journal, lease. ARGV: the lease's holder, the head it replayed, the lease's time.
_POP = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then return 0 end
redis.call('LPOP', KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""
# KEYS: lease. ARGV: its holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Unavailable(snapshots.StateUnavailable):
    """No journal to write (no shared Redis, or it failed, or it is full): the caller answers 503."""


def _redis() -> tuple[Any, Any] | None:
    """The shared Redis client and cache, None when there is no journal."""
    if not conf.epochauth_settings.OUTAGE_JOURNAL_SIZE:
        return None
    return push.shared_redis()


def enabled() -> bool:
    return _redis() is not None


def _epoch_field(kind: str, object_id: str) -> str:
    return f"{kind}:{object_id}"


def append(entry: dict[str, Any], bump: tuple[str, str, int] | None = None) -> dict[str, Any]:
    """Append ``entry`` (with an ``op``); ``bump``: (kind, object id, a value the new one must
    exceed) raises that epoch's mirror in the same script. Returns the entry as written, with its
    number ``seq`` and the new epoch value ``v`` (0 without a bump)."""
    found = _redis()
    if found is None:
        raise Unavailable("no shared Redis to journal the change in")
    client, cache = found
    field, floor = ("", 0) if bump is None else (_epoch_field(bump[0], bump[1]), bump[2])
    keys = [cache.make_key(name) for name in (JOURNAL, SEQ, EPOCHS)]
    limit = conf.epochauth_settings.OUTAGE_JOURNAL_SIZE
    try:
        written = client.register_script(_APPEND)(
            keys=keys, args=[limit, json.dumps(entry, separators=(",", ":")), field, floor]
        )
    except Exception as exc:  # redis raises its own connection errors
        raise Unavailable("the outage journal could not be written") from exc
    if written is None:
        logger.error("epochauth: the outage journal is full (%d entries); answering 503", limit)
        raise Unavailable("the outage journal is full")
    return dict(json.loads(written))


def mirror_epochs(values: Iterable[tuple[str, str, int]]) -> bool:
    """Raise the mirror's epoch values to ``values`` (kind, object id, value) where they are lower;
    False when the mirror could not be written (True when there is none)."""
    found = _redis()
    if found is None:
        return True
    client, cache = found
    args = [a for kind, object_id, value in values for a in (_epoch_field(kind, object_id), value)]
    if not args:
        return True
    try:
        client.register_script(_MIRROR)(keys=[cache.make_key(EPOCHS)], args=args)
    except Exception:
        logger.warning("epochauth: could not write the epoch mirror", exc_info=True)
        return False
    return True


def entries_after(seq: int) -> tuple[list[dict[str, Any]], bool]:
    """The entries numbered after ``seq``, and whether the journal holds any entry (one to replay).
    Raises :class:`Unavailable` when it cannot be read."""
    found = _redis()
    if found is None:
        return [], False
    client, cache = found
    try:
        held = client.lrange(cache.make_key(JOURNAL), 0, -1)
    except Exception as exc:
        raise Unavailable("the outage journal could not be read") from exc
    entries = [entry for entry in map(json.loads, held) if entry["seq"] > seq]
    return entries, bool(held)


def is_empty() -> bool:
    """Whether the journal holds no entry (none is left to replay)."""
    found = _redis()
    return found is None or not found[0].llen(found[1].make_key(JOURNAL))


def replay(apply: Callable[[dict[str, Any]], None]) -> int:
    """Hand each entry, head first, to ``apply`` (which writes it to the database and must be
    idempotent), removing it after; under the lease, so that one process replays at a time. Returns
    how many it removed; an error of ``apply`` stops the replay (the entry stays, for the next)."""
    found = _redis()
    if found is None:
        return 0
    client, cache = found
    journal, lease = cache.make_key(JOURNAL), cache.make_key(LEASE)
    holder = uuid.uuid4().hex
    if not client.set(lease, holder, nx=True, px=LEASE_MS):
        return 0  # another process replays
    pop = client.register_script(_POP)
    done = 0
    try:
        while (head := client.lindex(journal, 0)) is not None:
            apply(json.loads(head))
            if not pop(keys=[journal, lease], args=[holder, head, LEASE_MS]):
                break  # the lease ran out: whoever holds it now goes on
            done += 1
    finally:
        client.register_script(_RELEASE)(keys=[lease], args=[holder])
    return done
