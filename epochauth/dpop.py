"""DPoP (RFC 9449): proofs of possession of a key, and access tokens bound to that key.

A proof is a JWT the client signs with a key whose public half it carries in the header (``jwk``);
a bound token carries that key's RFC 7638 thumbprint as ``cnf.jkt``. :func:`verify_proof` is every
check of section 4.3, for the resource server (``epochauth.authentication``) and the token endpoints
alike:

* a compact JWS, parsed as strictly as our tokens (:func:`~epochauth.verification.parse_segment`);
* ``typ`` exactly ``dpop+jwt``; ``alg`` in ``DPOP_ALGORITHMS`` (asymmetric only, checked by
  ``epochauth.E025``); ``jwk`` a public key (no private member, no symmetric key) that fits ``alg``
  and verifies the signature;
* ``jti`` an identifier, seen once in ``DPOP_PROOF_LIFETIME`` by any process (the shared cache:
  ``cache.add`` fails for the second one; an unreachable cache fails closed, 503);
* ``htm`` the request's method, ``htu`` its URL without query and fragment (RFC 3986 section 6
  normalisation of scheme, host and default port), ``iat`` within ``DPOP_PROOF_LIFETIME`` back and
  ``LEEWAY`` ahead;
* ``ath`` the hash of the access token sent with it, if any;
* ``nonce`` one of ours when ``DPOP_NONCE`` is set (section 9): an HMAC of a time slot under the
  site's ``SECRET_KEY``, so every process accepts every process's nonces without shared state.
"""

from __future__ import annotations

import binascii
import hashlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import jwt
from django.http import HttpRequest, HttpResponse
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.translation import gettext_lazy as _
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode

from . import conf, jwks, snapshots, verification

# The client's (it imports no Django): what it signs and what is checked here are computed alike.
from .client.dpop import access_token_hash, thumbprint
from .exceptions import InvalidProof, NonceRequired
from .keys import ALGORITHMS, ED25519, EDDSA

#: The ``Authorization`` scheme of a bound token (section 7.1) and the proof's header.
SCHEME = "DPoP"
PROOF_HEADER = "HTTP_DPOP"
NONCE_HEADER = "DPoP-Nonce"
PROOF_TYPE = "dpop+jwt"
#: RFC 7517/7518 members of a private or symmetric key: a proof carries a public key only.
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
KEY_PARSERS: dict[str, Callable[[Any], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}


@dataclass(frozen=True)
class Proof:
    """A verified proof: the thumbprint of its key (compare it with ``cnf.jkt``) and its claims."""

    jkt: str
    claims: dict[str, Any]

    @property
    def jti(self) -> str:
        return self.claims["jti"]


DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_url(url: str) -> str | None:
    """``htu`` and the request's URL compared (section 4.3 step 9): scheme and host in lower case,
    no default port, an empty path as ``/``, no query or fragment (RFC 3986 section 6.2.2-6.2.3).
    None for what is no http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "")
    if scheme not in DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    if port is not None and port != DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def confirmation(claims: Mapping[str, Any]) -> str | None:
    """The ``cnf.jkt`` an access token is bound to (section 6.1), or None for a bearer token."""
    cnf = claims.get("cnf")
    if not isinstance(cnf, dict) or "jkt" not in cnf:
        return None
    jkt = cnf["jkt"]
    # A bound token whose binding we cannot read must not pass as a bearer token.
    return jkt if isinstance(jkt, str) else ""


# -- the key ------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _proof_key(header_segment: str) -> tuple[str, Any, str]:
    """``(algorithm, public key, jkt)`` of a proof header; a client sends the same header with every
    proof of one key, so it is parsed and its key loaded once. Raises :class:`InvalidProof`."""
    try:
        header = verification.parse_header(header_segment)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise InvalidProof(_("The DPoP proof is malformed")) from None
    if header.get("typ") != PROOF_TYPE:
        raise InvalidProof(_("The DPoP proof's type is not dpop+jwt"))
    if "crit" in header or header.get("b64", True) is not True:
        raise InvalidProof(_("The DPoP proof has unsupported header parameters"))
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in algorithms():
        raise InvalidProof(_("The DPoP proof's algorithm is not accepted"))
    jwk = header.get("jwk")
    if not isinstance(jwk, Mapping) or PRIVATE_MEMBERS & jwk.keys():
        raise InvalidProof(_("The DPoP proof's key is not a public key"))
    parser = KEY_PARSERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    try:
        if parser is None:
            raise ValueError("no asymmetric key type")
        jkt = thumbprint(jwk)
        key = parser(dict(jwk))
    except (jwt.InvalidKeyError, ValueError, TypeError, KeyError):
        raise InvalidProof(_("The DPoP proof's key is not a public key")) from None
    public = jwks.PublicKey(jwk["kty"], jwk.get("crv"), jwk.get("alg"), key)
    if not public.usable_with(algorithm):
        raise InvalidProof(_("The DPoP proof's key does not fit its algorithm"))
    if algorithm == EDDSA and jwk.get("crv") == ED25519:
        algorithm = ED25519  # PyJWT's EdDSA would take an Ed448 key too; this one fits
    return algorithm, key, jkt


conf.process_cache(_proof_key.cache_clear)


@lru_cache(maxsize=1)
def algorithms() -> frozenset[str]:
    """``DPOP_ALGORITHMS``, once per settings reload."""
    return frozenset(conf.epochauth_settings.DPOP_ALGORITHMS)


conf.process_cache(algorithms.cache_clear)


# -- nonces (section 9) -------------------------------------------------------------------------


def _nonce_slot_nonce(slot: int) -> str:
    mac = salted_hmac("epochauth.dpop.nonce", str(slot), algorithm="sha256").digest()
    return base64url_encode(mac[:18]).decode("ascii")


def _slot() -> int:
    return math.floor(time.time() / conf.epochauth_settings.DPOP_NONCE.total_seconds())


def current_nonce() -> str | None:
    """The nonce to hand out (``DPoP-Nonce``), None when ``DPOP_NONCE`` is off. It changes every
    ``DPOP_NONCE`` and is accepted until the one after it changes too."""
    if conf.epochauth_settings.DPOP_NONCE is None:
        return None
    return _nonce_slot_nonce(_slot())


def nonce_valid(nonce: object) -> bool:
    if not isinstance(nonce, str):
        return False
    slot = _slot()
    return any(constant_time_compare(nonce, _nonce_slot_nonce(s)) for s in (slot, slot - 1))


# -- the proof ----------------------------------------------------------------------------------


def verify_proof(
    proof: str,
    *,
    method: str,
    url: str,
    access_token: str | None,
    require_nonce: bool | None = None,
) -> Proof:
    """The proof of the one ``DPoP`` header of a request (the caller refuses none or several), for
    ``method`` and ``url`` (absolute; its query and fragment are ignored) with ``access_token`` if one
    is presented. ``require_nonce``: whether a nonce of ours must be in it (None: when ``DPOP_NONCE``
    is set). Raises :class:`~epochauth.exceptions.InvalidProof` (:class:`NonceRequired` for a missing
    or stale nonce) and :class:`~epochauth.snapshots.StateUnavailable` when the replay cache is down.
    The proof's ``jti`` is used up only when every other check passed."""
    try:
        if len(proof) > conf.epochauth_settings.MAX_TOKEN_BYTES:
            raise ValueError("too large")
        header_segment, claims_segment, signature = verification.split(proof)
    except ValueError:
        raise InvalidProof(_("The DPoP proof is malformed")) from None
    signing_input = proof[: -len(signature) - 1]
    algorithm, key, jkt = _proof_key(header_segment)
    try:
        claims = verification.parse_segment(claims_segment)
        signature_bytes = verification.decode_segment(signature)
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise InvalidProof(_("The DPoP proof is malformed")) from None
    if not ALGORITHMS[algorithm].verify(signing_input.encode("ascii"), key, signature_bytes):
        raise InvalidProof(_("The DPoP proof's signature is invalid"))
    _check_claims(claims, method, url, access_token)
    if require_nonce is None:
        require_nonce = conf.epochauth_settings.DPOP_NONCE is not None
    if require_nonce and not nonce_valid(claims.get("nonce")):
        raise NonceRequired()
    _use_up(jkt, claims["jti"])
    return Proof(jkt, claims)


def request_proof(meta: Mapping[str, str]) -> str:
    """The one ``DPoP`` header of a request's ``META`` (or DOT's headers, which are a copy of it);
    none or several are refused (section 4.3 step 1)."""
    proof = meta.get(PROOF_HEADER)
    # Several DPoP headers reach a WSGI application joined by commas, which no JWS contains.
    if proof is None or "," in proof:
        raise InvalidProof(_("The request must carry exactly one DPoP proof"))
    return proof.strip()


def token_request_proof(
    meta: Mapping[str, str], method: str, url: str, *, required: bool = False
) -> Proof | None:
    """The verified proof of a token request (section 5: no access token goes with it), None when
    it carries none and neither ``required`` nor ``DPOP_REQUIRED`` asks for one. Raises what
    :func:`verify_proof` raises."""
    if PROOF_HEADER not in meta and not (required or conf.epochauth_settings.DPOP_REQUIRED):
        return None
    return verify_proof(request_proof(meta), method=method, url=url, access_token=None)


def _check_claims(claims: dict[str, Any], method: str, url: str, access_token: str | None) -> None:
    if not verification.is_identifier(claims.get("jti")):
        raise InvalidProof(_("The DPoP proof has no valid jti"))
    if claims.get("htm") != method:
        raise InvalidProof(_("The DPoP proof is for another HTTP method"))
    htu = claims.get("htu")
    target = normalise_url(url)
    if not isinstance(htu, str) or target is None or normalise_url(htu) != target:
        raise InvalidProof(_("The DPoP proof is for another URL"))
    iat = claims.get("iat")
    now = time.time()
    if type(iat) not in verification.NUMBERS:
        raise InvalidProof(_("The DPoP proof has no valid iat"))
    if iat < now - conf.epochauth_settings.DPOP_PROOF_LIFETIME.total_seconds():
        raise InvalidProof(_("The DPoP proof is too old"))
    if iat > now + conf.epochauth_settings.LEEWAY.total_seconds():
        raise InvalidProof(_("The DPoP proof is issued in the future"))
    if access_token is not None and not (
        isinstance(claims.get("ath"), str)
        and constant_time_compare(claims["ath"], access_token_hash(access_token))
    ):
        raise InvalidProof(_("The DPoP proof is not for this access token"))


def _use_up(jkt: str, jti: str) -> None:
    """Remember ``(jkt, jti)`` in the shared cache for as long as a proof with it could pass: the
    second use, in any process, finds it there (``add`` is atomic in every cache backend)."""
    window = (
        conf.epochauth_settings.DPOP_PROOF_LIFETIME + conf.epochauth_settings.LEEWAY
    ).total_seconds()
    digest = hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
    if not snapshots.required_cache_call(
        "add", f"{snapshots.CACHE_PREFIX}dpop:{digest}", 1, math.ceil(window) + 1
    ):
        raise InvalidProof(_("The DPoP proof was used before"))


class NonceMiddleware:
    """Sends ``DPoP-Nonce`` with every response to a request that carried a proof, while ``DPOP_NONCE``
    is set: the nonce a refused proof needs (``use_dpop_nonce``), and the next one before it changes
    (section 9). DRF's error responses carry no headers but ``WWW-Authenticate``, hence a middleware."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if PROOF_HEADER in request.META:
            nonce = current_nonce()
            if nonce is not None:
                response[NONCE_HEADER] = nonce
        return response
