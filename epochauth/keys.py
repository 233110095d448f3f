"""Our signing keys: loaded once from settings, each pinned to one algorithm, published as a JWKS.

The first key signs; every key verifies (rotation: move the old key to ``VERIFICATION_KEYS``).
A token names its key by ``kid``; the algorithm is the key's, never the token header's. RFC 9864 gave
EdDSA on an Ed25519 key a name of its own, ``Ed25519``: such a key verifies tokens labelled with
either name (:attr:`Key.header_algorithms`), and nothing else.
ID tokens (OpenID Provider mode) are RS256, which every relying party verifies: the signing key when
it is an RS256 key, else a key of their own (``ID_TOKEN_SIGNING_KEY``), which verifies no access token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from jwt.algorithms import HMACAlgorithm, OKPAlgorithm, get_default_algorithms
from jwt.utils import base64url_encode

from . import conf

#: RFC 9864 section 2.2: the fully specified name of EdDSA on Ed25519, and the polymorphic name it
#: deprecates (RFC 8037), which a token of an Ed25519 key may still carry.
ED25519 = "Ed25519"
EDDSA = "EdDSA"
ED25519_NAMES = frozenset({ED25519, EDDSA})

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
        EDDSA,
        ED25519,
    }
)
SUPPORTED_ALGORITHMS = HMAC_ALGORITHMS | ASYMMETRIC_ALGORITHMS
# RFC 7518 section 3.4: each ES* algorithm is defined for one curve only.
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
#: The algorithm of ID tokens: OpenID Connect Core 1.0 section 15.1 makes it the one every provider
#: supports, and the default of every client that registered none (Dynamic Client Registration 1.0).
ID_TOKEN_ALGORITHM = "RS256"


class Ed25519Algorithm(OKPAlgorithm):
    """``Ed25519`` (RFC 9864) for PyJWT releases that know only ``EdDSA``: the same signature, on
    Ed25519 keys only (PyJWT's EdDSA takes Ed448 keys too)."""

    def prepare_key(self, key: Any) -> Any:
        prepared = super().prepare_key(key)
        if not isinstance(prepared, Ed25519PrivateKey | Ed25519PublicKey):
            raise jwt.InvalidKeyError("Ed25519 needs an Ed25519 key")
        return prepared

    def verify(self, msg: str | bytes, key: Any, sig: str | bytes) -> bool:
        return isinstance(key, Ed25519PublicKey | Ed25519PrivateKey) and super().verify(
            msg, key, sig
        )


@lru_cache(maxsize=16)
def _keyed(secret: bytes, digest: Any) -> hmac.HMAC:
    """An HMAC context with ``secret`` already hashed into its inner and outer pads: a copy of it
    signs one message, two hash blocks fewer than a new context for every token."""
    return hmac.new(secret, digestmod=digest)


conf.process_cache(_keyed.cache_clear)


class KeyedHMACAlgorithm(HMACAlgorithm):
    """PyJWT's HS256/384/512 (the same keys, signatures and checks) with the key's pads hashed once
    per key (:func:`_keyed`), not per token."""

    def sign(self, msg: bytes, key: bytes) -> bytes:
        mac = _keyed(key, self.hash_alg).copy()
        mac.update(msg)
        return mac.digest()

    def verify(self, msg: bytes, key: bytes, sig: bytes) -> bool:
        return hmac.compare_digest(sig, self.sign(msg, key))


#: PyJWT's algorithm objects, built once (``get_default_algorithms()`` builds new ones each call),
#: ``Ed25519`` where PyJWT has no object of its own for it, and HMAC keyed once per key.
ALGORITHMS = get_default_algorithms()
ALGORITHMS.setdefault(ED25519, Ed25519Algorithm())
ALGORITHMS.update(
    HS256=KeyedHMACAlgorithm(HMACAlgorithm.SHA256),
    HS384=KeyedHMACAlgorithm(HMACAlgorithm.SHA384),
    HS512=KeyedHMACAlgorithm(HMACAlgorithm.SHA512),
)


@dataclass(frozen=True)
class Key:
    """One key with the single algorithm it may be used with."""

    kid: str
    algorithm: str
    signing_key: Any  # secret bytes or private key object; None for verify-only public keys
    verifying_key: Any  # secret bytes or public key object, prepared for its algorithm
    #: The ``alg`` values of tokens this key verifies: its algorithm, and for an Ed25519 key both
    #: names of its algorithm (RFC 9864), whichever the key is configured with.
    header_algorithms: frozenset[str] = frozenset()

    @property
    def is_symmetric(self) -> bool:
        return self.algorithm in HMAC_ALGORITHMS

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        """``claims`` as a compact JWS with this key's ``kid``: what ``jwt.encode`` makes, through
        PyJWT's algorithm with the key prepared once at load (``jwt.encode`` prepares it again, and
        re-checks it, for every token)."""
        header = {"alg": self.algorithm, "kid": self.kid, "typ": typ}
        signing_input = b".".join(
            base64url_encode(json.dumps(part, separators=(",", ":")).encode())
            for part in (header, claims)
        )
        signature = ALGORITHMS[self.algorithm].sign(signing_input, self.signing_key)
        return (signing_input + b"." + base64url_encode(signature)).decode()

    def public_jwk(self) -> dict[str, Any]:
        jwk = json.loads(ALGORITHMS[self.algorithm].to_jwk(self.verifying_key))
        # RFC 7517 section 4.3: "use" and "key_ops" should not be used together. PyJWT adds key_ops
        # to RSA keys only; "use" is what every JWKS consumer reads, for every key type alike.
        jwk.pop("key_ops", None)
        jwk.update(kid=self.kid, alg=self.algorithm, use="sig")
        return jwk


def _read_material(value: str | bytes) -> bytes:
    if not isinstance(value, str | bytes):
        raise ImproperlyConfigured(
            f"EPOCHAUTH: a key must be a string or bytes, not {type(value).__name__}"
        )
    return value.encode() if isinstance(value, str) else value


def load_key(algorithm: str, material: str | bytes, kid: str | None = None) -> Key:
    """Build a :class:`Key` from a secret (HS*) or a PEM private or public key (asymmetric)."""
    if algorithm not in SUPPORTED_ALGORITHMS:
        raise ImproperlyConfigured(f"EPOCHAUTH: unsupported algorithm {algorithm!r}")
    raw = _read_material(material)
    algo = ALGORITHMS[algorithm]
    # Prepared once here, not per token: verification hands the prepared key to the algorithm as is.
    try:
        parsed = algo.prepare_key(raw)
    except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
        raise ImproperlyConfigured(f"EPOCHAUTH: cannot load {algorithm} key: {exc}") from None
    if algorithm in HMAC_ALGORITHMS:  # PyJWT refused a PEM, DER or JWK as an HMAC secret
        signing = verifying = parsed
        thumb_source = b"hmac:" + hashlib.sha256(raw).digest()
    else:
        if hasattr(parsed, "public_key"):
            signing, verifying = parsed, parsed.public_key()
        else:
            signing, verifying = None, parsed
        # Checked here as well because older PyJWT releases accept any curve for any ES* algorithm.
        curve = getattr(getattr(verifying, "curve", None), "name", None)
        if algorithm in EC_CURVES and curve != EC_CURVES[algorithm]:
            raise ImproperlyConfigured(
                f"EPOCHAUTH: {algorithm} needs a {EC_CURVES[algorithm]} key, not {curve or 'this key'}"
            )
        thumb_source = algo.to_jwk(verifying).encode()
    if kid is None:
        kid = (
            base64.urlsafe_b64encode(hashlib.sha256(thumb_source).digest()[:12])
            .decode()
            .rstrip("=")
        )
    ed25519 = algorithm in ED25519_NAMES and isinstance(verifying, Ed25519PublicKey)
    return Key(
        kid=kid,
        algorithm=algorithm,
        signing_key=signing,
        verifying_key=verifying,
        header_algorithms=ED25519_NAMES if ed25519 else frozenset({algorithm}),
    )


def _signing_material() -> str | bytes:
    if conf.epochauth_settings.SIGNING_KEY_FILE:
        return Path(conf.epochauth_settings.SIGNING_KEY_FILE).read_bytes()
    if conf.epochauth_settings.SIGNING_KEY:
        return conf.epochauth_settings.SIGNING_KEY
    if conf.epochauth_settings.ALGORITHM in HMAC_ALGORITHMS:
        return settings.SECRET_KEY
    raise ImproperlyConfigured(
        "EPOCHAUTH: SIGNING_KEY or SIGNING_KEY_FILE is required for asymmetric keys"
    )


class KeyRing:
    """The signing key plus every key that still verifies, looked up by ``kid``, and the key of ID
    tokens (None: none, no OpenID Provider mode)."""

    def __init__(self, signing: Key, others: list[Key], id_token: Key | None = None) -> None:
        if signing.signing_key is None:
            raise ImproperlyConfigured("EPOCHAUTH: the signing key must be a private key")
        self.signing = signing
        self.by_kid: dict[str, Key] = {signing.kid: signing}
        for key in others:
            if key.kid in self.by_kid:
                raise ImproperlyConfigured(f"EPOCHAUTH: duplicate key id {key.kid!r}")
            self.by_kid[key.kid] = key
        if id_token is not None and id_token is not signing:
            if id_token.signing_key is None:
                raise ImproperlyConfigured("EPOCHAUTH: the ID-token key must be a private key")
            if id_token.kid in self.by_kid:
                raise ImproperlyConfigured(f"EPOCHAUTH: duplicate key id {id_token.kid!r}")
        #: Signs ID tokens; not in ``by_kid`` unless it is the signing key: it verifies no access token.
        self.id_token = id_token

    def published(self) -> list[Key]:
        """Every key whose public part is in our JWKS: never an HMAC secret."""
        keys = list(self.by_kid.values())
        if self.id_token is not None and self.id_token is not self.signing:
            keys.append(self.id_token)
        return [key for key in keys if not key.is_symmetric]

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        return {"keys": [key.public_jwk() for key in self.published()]}

    def sign(self, claims: dict[str, Any], typ: str) -> str:
        """A JWT of ``claims`` signed with the signing key, which it names by ``kid``."""
        return self.signing.sign(claims, typ)


@lru_cache(maxsize=1)
def get_keyring() -> KeyRing:
    signing = load_key(
        conf.epochauth_settings.ALGORITHM, _signing_material(), conf.epochauth_settings.KEY_ID
    )
    return KeyRing(
        signing,
        [verification_key(entry) for entry in conf.epochauth_settings.VERIFICATION_KEYS],
        _id_token_key(signing),
    )


conf.process_cache(get_keyring.cache_clear)


def verification_key(entry: Any) -> Key:
    """One ``VERIFICATION_KEYS`` entry; a malformed one is a configuration error, not a KeyError later."""
    if (
        not isinstance(entry, dict)
        or "algorithm" not in entry
        or not (entry.get("file") or entry.get("key"))
    ):
        raise ImproperlyConfigured(
            'EPOCHAUTH: each VERIFICATION_KEYS entry needs "algorithm" and "key" or "file"'
        )
    material = Path(entry["file"]).read_bytes() if entry.get("file") else entry["key"]
    return load_key(entry["algorithm"], material, entry.get("kid"))


def _id_token_key(signing: Key) -> Key | None:
    """``ID_TOKEN_SIGNING_KEY(_FILE)``, else the signing key if it is an RS256 key, else None."""
    if conf.epochauth_settings.ID_TOKEN_SIGNING_KEY_FILE:
        material = Path(conf.epochauth_settings.ID_TOKEN_SIGNING_KEY_FILE).read_bytes()
    elif conf.epochauth_settings.ID_TOKEN_SIGNING_KEY:
        material = _read_material(conf.epochauth_settings.ID_TOKEN_SIGNING_KEY)
    else:
        return signing if signing.algorithm == ID_TOKEN_ALGORITHM else None
    return load_key(ID_TOKEN_ALGORITHM, material)


def generate_private_key_pem(algorithm: str) -> str:
    """A fresh private key in PEM (or a random secret for HS*), for ``epochauth_keys``."""
    import secrets

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    if algorithm in HMAC_ALGORITHMS:
        return secrets.token_urlsafe(48)
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
    if algorithm.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    elif algorithm in ED25519_NAMES:
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[
            algorithm
        ]
        private = ec.generate_private_key(curve)
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
