"""The physical limit of bearer authentication, timed in the same process as the rows compared with it.

A token sent again needs at least a dictionary lookup (the memo); a token never seen needs at least
what a minimal verifier does: the lookup that misses, the signature over ``header.payload``, the
base64url decode of the three segments and ``json.loads`` of the header and the claims; a DPoP proof,
new on every request, needs at least the verification of its signature. These rows
are bare function calls in a hot loop (no request, no Django), so an epochauth row's *added µs* over
no auth is also given as a multiple of its limit (``Variant.limit``).
"""

from __future__ import annotations

import base64
import hmac
import json
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.hashes import SHA256

from epochauth.conf import epochauth_settings

from .measure import Variant

DICT = "physical limit: a dict lookup (a memo of VERIFIED_TOKEN_CACHE_SIZE tokens)"
HS256 = (
    "physical limit: dict lookup + HMAC-SHA256 + base64url + json.loads (a minimal HS256 verifier)"
)
RS256 = "physical limit: dict lookup + RSA-SHA256 verify + base64url + json.loads (a minimal RS256 verifier)"
#: Lookups per timed call: one takes less than reading the clock twice.
LOOKUPS = 1000
VERIFIES = 10


def b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def minimal_verifier(
    memo: dict[str, Any], check: Callable[[bytes, bytes], None]
) -> Callable[[str], dict[str, Any]]:
    """The least a verifier can do with a token it has not seen: miss the memo, check the signature
    (``check`` raises on a bad one), decode the segments, parse the header and the claims."""

    def verify(token: str) -> dict[str, Any]:
        memo.get(token)
        signing_input, _, signature = token.rpartition(".")
        header, _, payload = signing_input.partition(".")
        check(signing_input.encode(), b64url(signature))
        json.loads(b64url(header))
        claims: dict[str, Any] = json.loads(b64url(payload))
        return claims

    return verify


def memo_of(token: str, holding: bool) -> dict[str, Any]:
    """A dict as full as the verified-token memo, of keys as long as ``token`` (and it, if ``holding``)."""
    size = max(1, epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE)
    memo: dict[str, Any] = {f"{i:08d}{token[8:]}": {} for i in range(size - 1)}
    memo[token if holding else f"{token[:-8]}{'-' * 8}"] = {}
    return memo


def repeated(operation: Callable[[], Any], times: int) -> Callable[[], None]:
    def call() -> None:
        for _ in range(times):
            operation()

    return call


def hs256_rows(token: str, secret: str) -> list[Variant]:
    """The dict lookup and the minimal HS256 verifier, on a token of ours (the same size)."""
    memo, key = memo_of(token, holding=True), secret.encode()

    def check(signing_input: bytes, signature: bytes) -> None:
        if not hmac.compare_digest(hmac.digest(key, signing_input, "sha256"), signature):
            raise ValueError("bad signature")

    verify = minimal_verifier(memo_of(token, holding=False), check)
    verify(token)  # the bench stops here if the limit could not verify our token
    get = memo.get
    return [
        Variant(DICT, repeated(lambda: get(token), LOOKUPS), floor=True, batch=LOOKUPS),
        Variant(
            HS256,
            repeated(lambda: verify(token), VERIFIES),
            floor=True,
            batch=VERIFIES,
        ),
    ]


def rs256_row(token: str, public_key: Any) -> Variant:
    """The minimal RS256 verifier (PKCS#1 v1.5 over SHA-256, the key object ready), on ``token``."""

    def check(signing_input: bytes, signature: bytes) -> None:
        public_key.verify(signature, signing_input, padding.PKCS1v15(), SHA256())

    verify = minimal_verifier(memo_of(token, holding=False), check)
    verify(token)
    return Variant(RS256, repeated(lambda: verify(token), VERIFIES), floor=True, batch=VERIFIES)


#: The physical limit of each DPoP row: a proof's signature checked by ``cryptography`` with the key
#: object ready and the signature decoded (the least a proof that cannot be memoized costs).
DPOP = {
    "ES256": "physical limit: ECDSA P-256 SHA-256 verify of a DPoP proof (ES256)",
    "Ed25519": "physical limit: Ed25519 verify of a DPoP proof (EdDSA)",
    "RS256": "physical limit: RSA-2048 PKCS#1 v1.5 SHA-256 verify of a DPoP proof (RS256)",
}


def dpop_row(name: str, proof: str, public_key: Any) -> Variant:
    """A bare signature verification of ``proof`` (``name``: a key of :data:`DPOP`) with ``cryptography``."""
    signing_input, _, segment = proof.rpartition(".")
    data, signature = signing_input.encode(), b64url(segment)
    if name == "ES256":
        # JWS carries r || s; cryptography takes DER (converted here, before timing).
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        der = encode_dss_signature(r, s)

        def verify() -> None:
            public_key.verify(der, data, ec.ECDSA(SHA256()))
    elif name == "Ed25519":

        def verify() -> None:
            public_key.verify(signature, data)
    else:

        def verify() -> None:
            public_key.verify(signature, data, padding.PKCS1v15(), SHA256())

    verify()  # the bench stops here if the limit could not verify the proof
    return Variant(DPOP[name], repeated(verify, VERIFIES), floor=True, batch=VERIFIES)
