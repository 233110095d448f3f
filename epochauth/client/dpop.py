"""DPoP (RFC 9449) on the client: a key per login, the proof signed for each request, the server's nonces.

A DPoP-bound token is useless without its key: the server asks every request for a fresh proof (a JWT
signed by the key, naming the request's method and URL and the token's hash). The key is generated at
login, kept beside the refresh token (``store.Session``, mode 0600) and deleted at logout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from . import errors

#: Our algorithms, in the order we prefer them when a server supports several.
ALGORITHMS = ("ES256", "EdDSA")
#: RFC 7638 §3.2 (RFC 8037 §2 for OKP): the members a JWK thumbprint hashes, per key type.
THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}

_USE_NONCE = re.compile(r'\berror\s*=\s*"?use_dpop_nonce\b', re.IGNORECASE)

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 (``jkt``): base64url SHA-256 of the key's required members as JSON, in lexical order
    and without whitespace. ``ValueError`` for a key type without thumbprint members or a member that
    is missing or no string (a server checks a proof's key with it too)."""
    members = THUMBPRINT_MEMBERS.get(jwk.get("kty"))  # type: ignore[arg-type]
    if members is None or not all(isinstance(jwk.get(name), str) for name in members):
        raise ValueError("not a public RSA, EC or OKP key")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url SHA-256 of the ASCII access token."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


def htu(url: str) -> str:
    """RFC 9449 §4.2: the request's URL without query and fragment."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def chosen_algorithm(metadata: dict[str, Any]) -> str | None:
    """Our preferred algorithm among the server's ``dpop_signing_alg_values_supported``; None: no DPoP."""
    supported = metadata.get("dpop_signing_alg_values_supported")
    if not isinstance(supported, list):
        return None
    return next((alg for alg in ALGORITHMS if alg in supported), None)


class ProofKey:
    """The key of one login and the proofs it signs; only its public JWK ever leaves the process."""

    def __init__(self, private_key: PrivateKey) -> None:
        if isinstance(private_key, ec.EllipticCurvePrivateKey):
            if not isinstance(private_key.curve, ec.SECP256R1):
                raise errors.InvalidToken(
                    f"DPoP key on {private_key.curve.name}: only P-256 is used"
                )
            self.algorithm = "ES256"
        else:
            self.algorithm = "EdDSA"
        self.private_key = private_key
        self.public_jwk = self._public_jwk()
        self.thumbprint = thumbprint(self.public_jwk)

    @classmethod
    def generate(cls, algorithm: str = "ES256") -> ProofKey:
        if algorithm == "ES256":
            return cls(ec.generate_private_key(ec.SECP256R1()))
        if algorithm == "EdDSA":
            return cls(ed25519.Ed25519PrivateKey.generate())
        raise errors.UsageError(
            f"unsupported DPoP algorithm {algorithm} (supported: {ALGORITHMS})"
        )

    @classmethod
    def from_pem(cls, text: str, source: str = "the DPoP key") -> ProofKey:
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise errors.InvalidToken(f"{source} is not a usable private key ({exc})") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
            raise errors.InvalidToken(f"{source} is a {type(key).__name__}, not a DPoP key")
        return cls(key)

    def to_pem(self) -> str:
        """PKCS #8, unencrypted: the file's mode 0600 protects it, as it protects the refresh token."""
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def _public_jwk(self) -> dict[str, str]:
        public = self.private_key.public_key()
        if isinstance(public, ec.EllipticCurvePublicKey):
            numbers = public.public_numbers()
            return {
                "kty": "EC",
                "crv": "P-256",
                "x": b64url(numbers.x.to_bytes(32, "big")),
                "y": b64url(numbers.y.to_bytes(32, "big")),
            }
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}

    def proof(
        self, method: str, url: str, access_token: str | None = None, nonce: str | None = None
    ) -> str:
        """RFC 9449 §4.2: a DPoP proof JWT for one request (a fresh ``jti`` each time)."""
        claims: dict[str, Any] = {
            "jti": b64url(secrets.token_bytes(18)),
            "htm": method.upper(),
            "htu": htu(url),
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        headers = {"typ": "dpop+jwt", "jwk": self.public_jwk}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


def asks_for_nonce(response: requests.Response) -> bool:
    """``use_dpop_nonce``: a 400 JSON error at a token endpoint (RFC 9449 §8), a 401 challenge at a
    resource server (§9)."""
    if _USE_NONCE.search(response.headers.get("WWW-Authenticate", "")):
        return True
    if response.status_code != 400:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("error") == "use_dpop_nonce"


class Signer:
    """A key and the latest ``DPoP-Nonce`` of each server it talks to, sent in the next proof there.

    Servers may hand out a new nonce in any answer (RFC 9449 §8.2), so every answer is read for one.
    """

    def __init__(self, key: ProofKey) -> None:
        self.key = key
        self.nonces: dict[str, str] = {}

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        return self.key.proof(method, url, access_token, self.nonces.get(origin(url)))

    def retry_with_nonce(self, url: str, response: requests.Response) -> bool:
        """Remember the answer's nonce; True if it asks for one we had not sent: worth one retry."""
        nonce = response.headers.get("DPoP-Nonce")
        if not nonce or self.nonces.get(origin(url)) == nonce:
            return False
        self.nonces[origin(url)] = nonce
        return asks_for_nonce(response)
