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
#: A live session by family (a hash of what a refresh reads), and its family by session id.
SESSION = f"{snapshots.CACHE_PREFIX}mirror:session:"
SESSION_ID = f"{snapshots.CACHE_PREFIX}mirror:sid:"
#: The session copies' generation: a copy of an older one is no longer trusted (see :func:`_stale`).
GENERATION = f"{snapshots.CACHE_PREFIX}mirror:generation"
LEASE = f"{snapshots.CACHE_PREFIX}journal:lease"
#: How long a replayer holds the lease without removing an entry (it renews it with each one).
LEASE_MS = 30_000

# KEYS: journal, seq, epochs, the id key of a session the entry ends. ARGV: limit, entry (a JSON
# object), the epoch to bump ("" for none), the value the bump must exceed, the session copies' key
# prefix. The entry is stored with its number and the new value in front; the session's copy says it
# ended.
_APPEND = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
local family = redis.call('GET', KEYS[4])
if family and redis.call('EXISTS', ARGV[5] .. family) == 1 then
  redis.call('HSET', ARGV[5] .. family, 'revoked', '1')
end
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
# KEYS: session, its id's key, generation. ARGV: expiry (POSIX seconds), family, last use, field,
# value ...: written unless the session ended or a later rotation is held (writes after commits may
# cross), with the current generation.
_SESSION = """
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 0 end
local held = redis.call('HGET', KEYS[1], 'last_used_at')
if held and tonumber(held) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'generation', redis.call('GET', KEYS[3]) or '0', unpack(ARGV, 4))
redis.call('EXPIREAT', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EXAT', ARGV[1])
return 1
"""
# KEYS: session. The session ended: ended it stays, whatever is written after.
_END_SESSION = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'revoked', '1') end
return 0
"""
# KEYS: session, journal, seq. ARGV: presented hash, new hash, now, new expiry, grace (seconds),
# limit, rotation entry, reuse entry, DPoP key the session is bound to from now on. The rotation's
# compare-and-swap, as epochauth.sessions.rotate makes it in the database; a secret rotated away
# (outside the grace retry) ends the session. Returns the outcome and the entry appended.
_ROTATE = """
local s = redis.call('HMGET', KEYS[1], 'refresh_hash', 'previous_refresh_hash', 'last_used_at',
  'expires_at', 'revoked')
if not s[1] then return {'missing'} end
if s[5] == '1' then return {'ended'} end
local now = tonumber(ARGV[3])
if tonumber(s[4]) <= now then return {'expired'} end
if redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[6]) then return {'full'} end
local previous
if s[1] == ARGV[1] then
  previous = s[1]
elseif tonumber(ARGV[5]) > 0 and s[2] ~= '' and now < tonumber(s[3]) + tonumber(ARGV[5])
    and s[2] == ARGV[1] then
  previous = ''
else
  redis.call('HSET', KEYS[1], 'revoked', '1')
  local seq = redis.call('INCR', KEYS[3])
  local entry = '{"seq":' .. seq .. ',"v":0,' .. string.sub(ARGV[8], 2)
  redis.call('RPUSH', KEYS[2], entry)
  return {'reuse', entry}
end
redis.call('HSET', KEYS[1], 'refresh_hash', ARGV[2], 'previous_refresh_hash', previous,
  'last_used_at', ARGV[3], 'expires_at', ARGV[4], 'dpop_jkt', ARGV[9])
local seq = redis.call('INCR', KEYS[3])
local entry = '{"seq":' .. seq .. ',"v":0,"from":"' .. s[1] .. '","previous":"' .. previous
  .. '",' .. string.sub(ARGV[7], 2)
redis.call('RPUSH', KEYS[2], entry)
return {'rotated', entry}
"""
# KEYS: journal. ARGV: a number. The entries numbered after it: those from its place on (entries
# leave from the head only, and each begins with its number).
_AFTER = """
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then return {} end
local first = tonumber(string.match(head, '^{"seq":(%d+)'))
return redis.call('LRANGE', KEYS[1], math.max(0, tonumber(ARGV[1]) - first + 1), -1)
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


class _Stale:
    """Whether this process failed to write a session's copy (Redis was away): it may say live
    after the session ended, or hold a secret rotated away as current. The next look at the journal
    starts a new generation, which no copy written before has: those sessions answer 503 during an
    outage until a rotation writes them again."""

    def __init__(self) -> None:
        self.stale = False


_stale = _Stale()


@conf.process_cache
def _forget_stale() -> None:
    """Another shared cache (settings changed): what this process owed the old one is moot."""
    _stale.stale = False


def new_generation_if_stale() -> None:
    """Start a new generation of session copies if this process could not end one (called with
    each look at the journal); tried again next time if Redis is still away."""
    found = _redis()
    if not _stale.stale or found is None:
        return
    try:
        found[0].incr(found[1].make_key(GENERATION))
    except Exception:
        return
    _stale.stale = False


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


def append(
    entry: dict[str, Any], bump: tuple[str, str, int] | None = None, ends: str = ""
) -> dict[str, Any]:
    """Append ``entry`` (with an ``op``); ``bump``: (kind, object id, a value the new one must
    exceed) raises that epoch's mirror in the same script; ``ends``: the id of a session whose copy
    says it ended, in the same script too (a refresh from the mirror must not outlive it once its
    id leaves the denylist). Returns the entry as written, with its number ``seq`` and the new
    epoch value ``v`` (0 without a bump)."""
    found = _redis()
    if found is None:
        raise Unavailable("no shared Redis to journal the change in")
    client, cache = found
    field, floor = ("", 0) if bump is None else (_epoch_field(bump[0], bump[1]), bump[2])
    keys = [cache.make_key(name) for name in (JOURNAL, SEQ, EPOCHS, SESSION_ID + ends)]
    limit = conf.epochauth_settings.OUTAGE_JOURNAL_SIZE
    text = json.dumps(entry, separators=(",", ":"))
    try:
        written = client.register_script(_APPEND)(
            keys=keys, args=[limit, text, field, floor, cache.make_key(SESSION)]
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


def mirrored_epochs(kinds: list[tuple[str, str]]) -> list[int]:
    """The mirror's values of the epochs ``kinds`` (kind, object id), 0 where it holds none. Raises
    :class:`Unavailable` when Redis cannot be read."""
    found = _redis()
    if found is None:
        return [0] * len(kinds)
    client, cache = found
    try:
        held = client.hmget(cache.make_key(EPOCHS), [_epoch_field(*kind) for kind in kinds])
    except Exception as exc:
        raise Unavailable("the epoch mirror could not be read") from exc
    return [0 if value is None else int(value) for value in held]


def mirror_session(family: str, session_id: str, fields: dict[str, str], expires: float) -> None:
    """Write a session's ``fields`` (with its ``last_used_at``) through to the mirror, unless it
    holds a later rotation or the session's end; until ``expires`` (POSIX time)."""
    found = _redis()
    if found is None:
        return
    client, cache = found
    keys = [
        cache.make_key(name) for name in (SESSION + family, SESSION_ID + session_id, GENERATION)
    ]
    args = [int(expires) + 1, family, fields["last_used_at"]]
    args += [a for pair in fields.items() for a in pair]
    try:
        client.register_script(_SESSION)(keys=keys, args=args)
    except Exception:
        # A stale copy would take a secret rotated away for the current one during an outage:
        # no copy of this generation is trusted any more.
        logger.warning("epochauth: could not mirror a session", exc_info=True)
        _stale.stale = True


def end_mirrored_session(family: str) -> bool:
    """The mirror's copy of the session says it ended; False when the mirror could not be written."""
    found = _redis()
    if found is None:
        return True
    client, cache = found
    try:
        client.register_script(_END_SESSION)(keys=[cache.make_key(SESSION + family)], args=[])
    except Exception:
        logger.error("epochauth: could not mark a session ended in the mirror", exc_info=True)
        _stale.stale = True
        return False
    return True


def mirrored_session(*, family: str = "", session_id: str = "") -> dict[str, str] | None:
    """The mirror's copy of a session, by family or by session id; None when it holds none (or
    there is no mirror). Raises :class:`Unavailable` when Redis cannot be read."""
    found = _redis()
    if found is None:
        return None
    client, cache = found
    try:
        if not family:
            held = client.get(cache.make_key(SESSION_ID + session_id))
            if held is None:
                return None
            family = held.decode()
        fields, generation = (
            client.pipeline(transaction=False)
            .hgetall(cache.make_key(SESSION + family))
            .get(cache.make_key(GENERATION))
            .execute()
        )
    except Exception as exc:
        raise Unavailable("the session mirror could not be read") from exc
    if not fields or fields.get(b"generation") != (generation or b"0"):
        return None
    return {k.decode(): v.decode() for k, v in fields.items()} | {"family": family}


def rotate(
    family: str,
    presented: str,
    new: str,
    *,
    now: float,
    expires: float,
    dpop_jkt: str,
    entries: tuple[dict[str, Any], dict[str, Any]],
) -> tuple[str, dict[str, Any] | None]:
    """Rotate a mirrored session's refresh hash from ``presented`` to ``new``, journaling it (the
    first of ``entries``), or end the session when ``presented`` was rotated away (the second).
    Returns the outcome ("rotated", "reuse", "missing", "ended", "expired", "full") and the entry
    as written."""
    found = _redis()
    if found is None:
        raise Unavailable("no shared Redis to journal the rotation in")
    client, cache = found
    keys = [cache.make_key(name) for name in (SESSION + family, JOURNAL, SEQ)]
    grace = conf.epochauth_settings.REFRESH_TOKEN_GRACE_PERIOD.total_seconds()
    limit = conf.epochauth_settings.OUTAGE_JOURNAL_SIZE
    rotation, reuse = (json.dumps(e, separators=(",", ":")) for e in entries)
    args = [presented, new, repr(now), repr(expires), grace, limit, rotation, reuse, dpop_jkt]
    try:
        outcome, *written = client.register_script(_ROTATE)(keys=keys, args=args)
    except Exception as exc:
        raise Unavailable("the rotation could not be journaled") from exc
    return outcome.decode(), (json.loads(written[0]) if written else None)


def entries_after(seq: int) -> tuple[list[dict[str, Any]], bool]:
    """The entries numbered after ``seq``, and whether the journal holds any entry (one to replay).
    Raises :class:`Unavailable` when it cannot be read."""
    found = _redis()
    if found is None:
        return [], False
    client, cache = found
    try:
        # One script: a replay removing entries meanwhile cannot shift what it reads.
        held = client.register_script(_AFTER)(keys=[cache.make_key(JOURNAL)], args=[seq])
    except Exception as exc:
        raise Unavailable("the outage journal could not be read") from exc
    entries = [entry for entry in map(json.loads, held) if entry["seq"] > seq]
    return entries, bool(held) or not is_empty()


def is_empty() -> bool:
    """Whether the journal holds no entry (none is left to replay)."""
    found = _redis()
    if found is None:
        return True
    try:
        return not found[0].llen(found[1].make_key(JOURNAL))
    except Exception:  # Redis is away: nothing could be journaled meanwhile
        logger.warning("epochauth: could not read the outage journal's length", exc_info=True)
        return True


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
