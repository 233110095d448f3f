"""The JWKS cache: each allow-listed issuer's signature keys, per process and shared with the other
processes through the Django cache (:mod:`epochauth.verification` picks keys from it).

Invariants (see DESIGN.md): keys come only from the issuer's discovered ``jwks_uri``, never from token
headers; each key is used only with an algorithm that fits its type and curve; at most one JWKS
refetch per issuer per cool-down for unknown key ids; the last good keys keep serving while the
issuer is down, up to a maximum staleness; then (or when a process starts during the outage) the WLCG
system JWKS cache on disk (:mod:`epochauth.system_jwks`) may serve, until its entry expires.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from django.utils.translation import gettext_lazy as _
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from . import clock, conf, exceptions, fetching, snapshots, system_jwks, tokens
from .keys import ED25519, ED25519_NAMES, EDDSA

logger = logging.getLogger(__name__)

EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


class IssuerUnavailable(Exception):
    """The issuer's keys could not be fetched and no usable copy is left."""


def discover_jwks_uri(iss: str) -> str:
    """The ``jwks_uri`` the issuer's discovery document names now."""
    document, _ = fetching.fetch_discovery(iss, oauth_metadata=True)
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise fetching.FetchError(f"discovery document of {iss} has no jwks_uri")
    return jwks_uri


def download_jwks(iss: str, known_uri: str | None) -> tuple[str, dict[str, Any], int | None]:
    """The issuer's JWKS from the ``jwks_uri`` we know or, when that fails, from the one discovery
    names now: an issuer may move its keys. Returns the URI, the JWKS and its max-age."""
    if known_uri is not None:
        try:
            return known_uri, *fetching.fetch_json(known_uri)
        except fetching.FetchError:
            jwks_uri = discover_jwks_uri(iss)
            if jwks_uri == known_uri:
                raise
    else:
        jwks_uri = discover_jwks_uri(iss)
    return jwks_uri, *fetching.fetch_json(jwks_uri)


@dataclass(frozen=True)
class PublicKey:
    kty: str
    crv: str | None
    alg: str | None
    key: Any

    def usable_with(self, algorithm: str) -> bool:
        """Whether the key fits ``algorithm`` and the ``alg`` its JWK names, if any. RFC 9864:
        ``Ed25519`` is ``EdDSA`` on an Ed25519 key; for such a key either name stands for the other."""
        ed25519 = self.kty == "OKP" and self.crv == "Ed25519"
        if self.alg is not None and self.alg != algorithm:
            # A tuple, not a set: the JWK's alg may be any JSON value.
            if not (ed25519 and algorithm in ED25519_NAMES and self.alg in (ED25519, EDDSA)):
                return False
        if algorithm.startswith(("RS", "PS")):
            return self.kty == "RSA"
        if algorithm in EC_CURVES:
            return self.kty == "EC" and self.crv == EC_CURVES[algorithm]
        if algorithm == ED25519:
            return ed25519
        return algorithm == EDDSA and self.kty == "OKP"


def signature_keys(jwks: dict[str, Any]) -> list[tuple[str | None, PublicKey]]:
    """``(kid or None, key)`` of each signature key; symmetric, encryption-only and unparsable keys
    are left out."""
    parsers: dict[object, Callable[[dict[str, Any]], Any]] = {
        "RSA": RSAAlgorithm.from_jwk,
        "EC": ECAlgorithm.from_jwk,
        "OKP": OKPAlgorithm.from_jwk,
    }
    keys: list[tuple[str | None, PublicKey]] = []
    for jwk in jwks.get("keys", []) if isinstance(jwks.get("keys"), list) else []:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        parser = parsers.get(jwk.get("kty"))
        kid = jwk.get("kid")
        if parser is None or "d" in jwk or not isinstance(kid, str | None):
            continue
        try:
            key = parser(jwk)
        except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        keys.append((kid, PublicKey(jwk["kty"], jwk.get("crv"), jwk.get("alg"), key)))
    return keys


def parse_jwks(jwks: dict[str, Any]) -> dict[str, PublicKey]:
    """Signature keys by kid (see :func:`signature_keys`)."""
    return {kid: key for kid, key in signature_keys(jwks) if kid is not None}


@dataclass
class KeySet:
    #: None for keys from the system JWKS cache: the next fetch discovers it.
    jwks_uri: str | None
    keys: dict[str, PublicKey]
    fetched_at: float
    fresh_until: float
    #: Every signature key, with a kid or without: a token naming no key may use the one that fits.
    every: tuple[PublicKey, ...] = ()
    #: When keys from the system JWKS cache must no longer serve (its entry's ``expiration``).
    expires_at: float = math.inf

    def only_key_for(self, algorithm: str) -> PublicKey:
        """The one key usable with ``algorithm``, for a token without ``kid`` (SciTokens accepts
        those too); with several that fit, which one signed is not ours to guess."""
        fitting = [key for key in self.every if key.usable_with(algorithm)]
        if not fitting:
            raise exceptions.InvalidToken(
                _("The access token names no key, and its issuer has none for its algorithm")
            )
        if len(fitting) > 1:
            raise exceptions.InvalidToken(
                _("The access token names no key, and its issuer has several for its algorithm")
            )
        return fitting[0]


@dataclass
class JWKSCache:
    """Per-process keys of every issuer, shared with other processes through the Django cache."""

    _sets: dict[str, KeySet] = field(default_factory=dict)
    _locks: defaultdict[str, threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )
    _last_forced: dict[str, float] = field(default_factory=dict)
    #: After a failed fetch with nothing usable to serve: answer "unavailable" without the network
    #: until then, so a down issuer costs one fetch per cool-down, not one per request.
    _failed_until: dict[str, float] = field(default_factory=dict)
    #: Issuers whose last fetch found no metadata at all: refused with that reason until the retry.
    _no_metadata: set[str] = field(default_factory=set)

    def reset(self) -> None:
        self._sets.clear()
        self._last_forced.clear()
        self._failed_until.clear()
        self._no_metadata.clear()

    def _unavailable(self, iss: str) -> Exception:
        """What a request is told while the issuer's keys cannot be had: 401 when it publishes no
        metadata (a permanent 404), else 503 (an outage, worth a retry)."""
        if iss in self._no_metadata:
            return exceptions.InvalidToken(
                _("The access token's issuer publishes no OpenID or OAuth metadata")
            )
        return IssuerUnavailable(iss)

    @staticmethod
    def _shared_key(iss: str) -> str:
        return f"{snapshots.CACHE_PREFIX}jwks:{iss}"

    def is_fresh(self, iss: str) -> bool:
        """Whether this process holds keys of ``iss`` that need no refresh yet (no I/O)."""
        keyset = self._sets.get(iss)
        return keyset is not None and clock.wall() < keyset.fresh_until

    def key_for(self, iss: str, kid: str | None, algorithm: str) -> Any:
        """The key ``kid`` names, or with no ``kid`` the issuer's one key for ``algorithm``."""
        now = clock.wall()
        keyset = self._sets.get(iss)
        if keyset is None or now >= keyset.fresh_until:
            keyset = self._refresh(iss)
        if kid is None:
            return keyset.only_key_for(algorithm).key
        entry = keyset.keys.get(kid)
        if entry is None:
            keyset = self._refresh(iss, unknown_kid=kid)
            entry = keyset.keys.get(kid)
        if entry is None:
            raise exceptions.InvalidToken(
                _("The access token was signed with a key its issuer does not publish")
            )
        if not entry.usable_with(algorithm):
            raise exceptions.InvalidToken(_("The access token's algorithm does not match its key"))
        return entry.key

    def _refresh(self, iss: str, unknown_kid: str | None = None) -> KeySet:
        """Keys that are fresh, or that name ``unknown_kid``: from memory, another process or a fetch.

        One fetch at a time per issuer; an unknown kid fetches at most once per cool-down.
        """
        started = clock.wall()
        with self._locks[iss]:
            now = clock.wall()
            current = self._sets.get(iss)
            if current is not None and current.fetched_at >= started:
                return current  # another thread fetched while we waited
            current = self._newer_shared(iss, current)
            if unknown_kid is None:
                if current is not None and now < current.fresh_until:
                    return current
                if now < self._failed_until.get(iss, float("-inf")):
                    raise self._unavailable(iss)
            elif current is None:
                raise IssuerUnavailable(iss)
            elif unknown_kid in current.keys or not self._may_force(iss, now):
                return current
            return self._fetch(iss, current, now)

    def _newer_shared(self, iss: str, current: KeySet | None) -> KeySet | None:
        """Install the shared cache's copy when another process fetched after us (even a stale copy:
        it serves while the issuer is down, within the maximum staleness)."""
        shared = snapshots.shared_cache_call("get", self._shared_key(iss))
        if shared is None or (current is not None and shared["fetched_at"] <= current.fetched_at):
            return current
        return self._install(
            iss, shared["jwks_uri"], shared["jwks"], shared["fetched_at"], shared["fresh_until"]
        )

    def refresh_now(self, iss: str) -> KeySet:
        """Discover and fetch an issuer's keys right away (``epochauth_issuer refresh``)."""
        with self._locks[iss]:
            try:
                return self._fetch(iss, None, clock.wall(), system_cache=False)
            except exceptions.InvalidToken:
                raise IssuerUnavailable(iss) from None

    def _may_force(self, iss: str, now: float) -> bool:
        """Unknown kids refetch at most once per cool-down per issuer, across threads and processes."""
        cooldown = conf.epochauth_settings.JWKS_REFETCH_COOLDOWN.total_seconds()
        if now - self._last_forced.get(iss, float("-inf")) < cooldown:
            return False
        self._last_forced[iss] = now
        if cooldown <= 0:
            return True
        return bool(
            snapshots.shared_cache_call(
                "add", f"{snapshots.CACHE_PREFIX}jwks-refetch:{iss}", 1, cooldown
            )
            in (True, None)
        )

    def _fetch(
        self, iss: str, current: KeySet | None, now: float, *, system_cache: bool = True
    ) -> KeySet:
        try:
            jwks_uri, jwks, max_age = download_jwks(
                iss, current.jwks_uri if current is not None else None
            )
        except fetching.FetchError as exc:
            logger.warning("epochauth: cannot refresh the keys of %s: %s", iss, exc)
            stale_limit = conf.epochauth_settings.JWKS_MAX_STALENESS.total_seconds()
            retry_at = clock.wall() + conf.epochauth_settings.JWKS_REFETCH_COOLDOWN.total_seconds()
            if (
                current is None
                or now - current.fetched_at > stale_limit
                or now > current.expires_at
            ):
                current = self._from_system_cache(iss, now) if system_cache else None
            if current is None:
                self._failed_until[iss] = retry_at
                if isinstance(exc, fetching.NoMetadata):
                    self._no_metadata.add(iss)
                raise self._unavailable(iss) from None
            # Keep serving the last good keys; try again after the cool-down, not on every request.
            current.fresh_until = min(retry_at, current.expires_at)
            return current
        finally:
            # The keys are as new as they can be: an unknown kid waits a cool-down from the fetch's end.
            self._last_forced[iss] = clock.wall()
        lifetime = (
            max_age
            if max_age is not None
            else conf.epochauth_settings.JWKS_CACHE_MAX.total_seconds()
        )
        lifetime = min(
            max(lifetime, conf.epochauth_settings.JWKS_CACHE_MIN.total_seconds()),
            conf.epochauth_settings.JWKS_CACHE_MAX.total_seconds(),
        )
        self._no_metadata.discard(iss)
        keyset = self._install(iss, jwks_uri, jwks, now, now + lifetime)
        snapshots.shared_cache_call(
            "set",
            self._shared_key(iss),
            {"jwks_uri": jwks_uri, "jwks": jwks, "fetched_at": now, "fresh_until": now + lifetime},
            conf.epochauth_settings.JWKS_MAX_STALENESS.total_seconds(),
        )
        return keyset

    def _from_system_cache(self, iss: str, now: float) -> KeySet | None:
        """The issuer's keys from the system JWKS cache, kept in this process only (every process
        can read the file) and never past the entry's expiration."""
        found = system_jwks.read(iss, now)
        if found is None:
            return None
        logger.warning("epochauth: using the keys of %s from %s", iss, found.path)
        return self._install(iss, None, found.jwks, now, now, found.expiration)

    def _install(
        self,
        iss: str,
        jwks_uri: str | None,
        jwks: dict[str, Any],
        fetched_at: float,
        fresh_until: float,
        expires_at: float = math.inf,
    ) -> KeySet:
        every = signature_keys(jwks)
        named = {kid: key for kid, key in every if kid is not None}
        keyset = KeySet(
            jwks_uri, named, fetched_at, fresh_until, tuple(key for _, key in every), expires_at
        )
        previous = self._sets.get(iss)
        if previous is not None and not previous.keys.keys() <= keyset.keys.keys():
            # A key was withdrawn: its tokens must be verified again (and fail).
            tokens.verified_tokens.clear()
        self._sets[iss] = keyset
        return keyset


jwks_cache = JWKSCache()


conf.process_cache(jwks_cache.reset)
