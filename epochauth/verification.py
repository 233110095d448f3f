"""The one pipeline every JWT we accept goes through: our access tokens, allow-listed issuers' access
tokens, their ID tokens (browser login) and their logout tokens (back-channel logout).

Each step runs once per token (DESIGN.md, invariant 11):

1. :func:`parse` splits the compact JWS and decodes header and claims strictly (UTF-8 JSON objects
   without duplicate names, NaN or lone surrogates; canonical base64url); a header seen before is
   not parsed again.
2. The :class:`Policy`'s key source picks the key by ``kid``: our keyring (:func:`our_key`) or the
   allow-listed issuer's cached JWKS (:class:`IssuerKeys`); the algorithm is pinned to the key.
   ``jku``, ``x5u``, ``jwk`` and ``x5c`` are never looked at; ``crit`` is refused.
3. The signature is checked over the signing input split in step 1 with PyJWT's algorithm objects
   (HMAC compared in constant time) and keys prepared when they were loaded, not per token.
4. :func:`check_claims`, one set of rules for every issuer, configured by the policy.

A refused token raises :class:`~epochauth.exceptions.InvalidToken` worded for an access token; the
subclasses :class:`TokenExpired`, :class:`WrongAudience` and :class:`WrongType` let the ID and logout
token verifiers word those three their own way.
"""

from __future__ import annotations

import binascii
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from types import MappingProxyType
from typing import Any, NamedTuple, TypeGuard

from django.core.exceptions import ValidationError
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from . import communities, conf, exceptions, issuer_config, jwks, profiles, tokens
from .keys import (
    ALGORITHMS,
    ASYMMETRIC_ALGORITHMS,
    ED25519,
    ED25519_NAMES,
    KeyRing,
    get_keyring,
)


class TokenExpired(exceptions.InvalidToken):
    """``exp`` has passed (beyond LEEWAY); the logout-token verifier words it its own way."""

    def __init__(self) -> None:
        super().__init__(_("The access token expired"))


class WrongAudience(exceptions.InvalidToken):
    """No accepted audience in ``aud``; the logout-token verifier words it its own way."""

    def __init__(self) -> None:
        super().__init__(_("The access token is not meant for this service"))


class WrongType(exceptions.InvalidToken):
    """A header ``typ`` (or ``typ`` claim) of another kind of token; the logout-token verifier words it."""

    def __init__(self) -> None:
        super().__init__(_("The token is not an access token"))


# -- 1. parsing ---------------------------------------------------------------------------------

#: A JSON escape of a UTF-16 surrogate (``\ud800``): only a pair of them makes a character.
SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
#: RFC 4648 section 3.5: the bits a last partial character leaves over are zero, so a segment has one
#: spelling only (by the length of that last group: its last character's value is a multiple of 16 or 4).
LAST_CHARACTERS = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}
BASE64URL_TO_BASE64 = bytes.maketrans(b"-_", b"+/")
PADDING = {0: b"", 2: b"==", 3: b"="}


def _unique_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """RFC 7515 section 5.2 step 3 / RFC 7519 section 4: duplicate member names are refused."""
    names = dict(pairs)
    if len(names) != len(pairs):
        raise ValueError("duplicate member name")
    return names


def _finite(text: str) -> float:
    """RFC 8259 section 6 has no NaN or Infinity; ``1e400`` would parse as one."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: Built once: ``json.loads`` with hooks builds a new decoder on every call.
JSON_OBJECTS = json.JSONDecoder(
    object_pairs_hook=_unique_names, parse_float=_finite, parse_constant=_no_constants
)


def decode_segment(segment: str) -> bytes:
    """The bytes of one base64url segment in its one canonical spelling."""
    rest = len(segment) % 4
    if rest == 1 or (rest and segment[-1] not in LAST_CHARACTERS[rest]):
        raise ValueError("not base64url")
    # binascii itself, not base64.urlsafe_b64decode: this runs twice for every new token. Strict: a
    # character of neither alphabet (whitespace too) fails rather than being skipped.
    return binascii.a2b_base64(
        segment.encode("ascii").translate(BASE64URL_TO_BASE64) + PADDING[rest], strict_mode=True
    )


def parse_segment(segment: str) -> dict[str, Any]:
    """A header or claims segment: base64url of a UTF-8 JSON object (RFC 7519 section 7.2 steps 3-8).

    ``json.loads`` on bytes would also take UTF-16 and UTF-32, duplicate names and NaN; and it turns a
    lone surrogate escape into a string that is no Unicode text (RFC 8259 section 8.2), which would
    fail later wherever it is encoded (a cache key, a database query).
    """
    text = decode_segment(segment).decode("utf-8")
    value = JSON_OBJECTS.decode(text)
    if SURROGATE_ESCAPE.search(text):
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # UnicodeEncodeError, a ValueError
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


@lru_cache(maxsize=64)
def parse_header(segment: str) -> Mapping[str, Any]:
    """A header segment (:func:`parse_segment`), parsed once per process: every token one key signs
    carries the same header, so a new token costs one JSON parse, of its claims. Read-only, since it
    is shared; a segment that does not parse is not remembered."""
    return MappingProxyType(parse_segment(segment))


conf.process_cache(parse_header.cache_clear)


class JWS(NamedTuple):
    """A compact JWS split and decoded, not verified: its header and claims only pick issuer and key."""

    header: Mapping[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def split(token: str) -> tuple[str, str, str]:
    """The header, claims and signature segments of a compact JWS (RFC 7515 section 7.1): three
    non-empty base64url segments, without padding and without what base64 has and base64url not
    (:func:`decode_segment` refuses any other character). Raises ValueError."""
    segments = token.split(".")
    if len(segments) != 3 or not all(segments) or "+" in token or "/" in token or "=" in token:
        raise ValueError("not a compact JWS")
    header, claims, signature = segments
    return header, claims, signature


def parse(token: str) -> JWS:
    """Split and decode ``token`` (see :func:`split` and :func:`parse_segment`); the signature is
    checked over exactly these bytes later, so the claims verified are the ones parsed here. The
    signature is never empty since ``none`` is never accepted."""
    try:
        header_segment, claims_segment, signature = split(token)
        return JWS(
            parse_header(header_segment),
            parse_segment(claims_segment),
            token[: -len(signature) - 1].encode("ascii"),
            decode_segment(signature),
        )
    except (ValueError, TypeError, binascii.Error, RecursionError):
        raise exceptions.InvalidToken(_("The access token is malformed")) from None


# -- 2. keys ------------------------------------------------------------------------------------

#: ``header -> (algorithm, prepared key)``, the algorithm one of PyJWT's (``keys.ALGORITHMS``);
#: raises InvalidToken for a key it will not use.
KeySource = Callable[[Mapping[str, Any]], tuple[str, Any]]


def our_key(header: Mapping[str, Any]) -> tuple[str, Any]:
    """A key of our keyring by ``kid``, used only with its own algorithm (an RS256 public key never
    becomes an HMAC secret); an Ed25519 key's under either of its names (RFC 9864)."""
    return keyring_key(get_keyring(), header)


def keyring_key(keyring: KeyRing, header: Mapping[str, Any]) -> tuple[str, Any]:
    """:func:`our_key` in ``keyring``."""
    kid = header.get("kid")
    key = keyring.by_kid.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise exceptions.InvalidToken(_("The access token was signed with an unknown key"))
    algorithm = header.get("alg")
    # A string first: a list or an object would make the set lookup raise.
    if not isinstance(algorithm, str) or algorithm not in key.header_algorithms:
        raise exceptions.InvalidToken(_("The access token is invalid"))
    return key.algorithm, key.verifying_key


@dataclass(frozen=True, slots=True)
class IssuerKeys:
    """An allow-listed issuer's keys: by ``kid`` from its cached JWKS (without ``kid``: its one key
    that fits), for an asymmetric algorithm the issuer may use that fits the key's type and curve
    (never ``none`` or HMAC)."""

    config: issuer_config.IssuerConfig

    def __call__(self, header: Mapping[str, Any]) -> tuple[str, Any]:
        # A plain-http issuer in the settings is a configuration error (system check), not an outage.
        if not issuer_url_acceptable(self.config.issuer):
            raise exceptions.InvalidToken(_("The access token's issuer is not accepted"))
        algorithm = header.get("alg")
        # Checked to be a string first: a list or object here would make the set lookups raise.
        if not isinstance(algorithm, str) or algorithm not in ASYMMETRIC_ALGORITHMS:
            raise exceptions.InvalidToken(
                _("The access token's algorithm is not accepted for its issuer")
            )
        accepted = self.config.algorithms
        if algorithm not in accepted:
            # RFC 9864: either name of EdDSA on Ed25519 allows the other, on an Ed25519 key only.
            if not (algorithm in ED25519_NAMES and ED25519_NAMES & accepted):
                raise exceptions.InvalidToken(
                    _("The access token's algorithm is not accepted for its issuer")
                )
            algorithm = ED25519
        kid = header.get("kid")
        if not isinstance(kid, str | None):
            raise exceptions.InvalidToken(_("The access token names no key"))
        return algorithm, jwks.jwks_cache.key_for(self.config.issuer, kid, algorithm)


@lru_cache(maxsize=256)
def issuer_url_acceptable(url: str) -> bool:
    """:func:`~epochauth.issuer_config.validate_issuer_url` once per issuer and settings reload
    (``conf.clear_process_caches``), not per token: parsing a loopback address is not cheap."""
    try:
        issuer_config.validate_issuer_url(url)
    except ValidationError:
        return False
    return True


conf.process_cache(issuer_url_acceptable.cache_clear)


# -- 3. and 4. the policy, the signature, the claims ------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    """What one kind of token must satisfy besides its signature; each use builds its own."""

    keys: KeySource
    issuer: str
    #: Accepted ``aud`` values, one of which the token must name; None: ``aud`` is not checked.
    audience: tuple[str, ...] | None
    #: Claims that must be present and not null.
    required: tuple[str, ...]
    #: Seconds of clock skew allowed for ``exp``, ``nbf`` and ``iat``.
    leeway: float
    #: Accepted header ``typ`` values in lower case (compared without case, RFC 7515 section 4.1.9);
    #: None: not checked.
    types: frozenset[str] | None = None
    #: Whether a header without ``typ`` passes the ``types`` check.
    untyped: bool = True
    #: Accepted values of a ``typ`` *claim* (Keycloak's ``Bearer``, ``ID``, ``Logout``) when present.
    typ_claims: frozenset[str] | None = None
    subject_required: bool = True
    #: More rules for one use's claims (``claims -> ok``), e.g. the types of our own claims.
    claims_valid: Callable[[dict[str, Any]], bool] | None = None

    @classmethod
    def for_issuer(cls, config: issuer_config.IssuerConfig, **rules: Any) -> Policy:
        """A policy for JWTs ``config``'s issuer signs; ``rules`` are the fields that differ per use."""
        return cls(
            keys=IssuerKeys(config),
            issuer=config.issuer,
            leeway=conf.epochauth_settings.LEEWAY.total_seconds(),
            **rules,
        )


def verify(jws: JWS, policy: Policy) -> dict[str, Any]:
    """The verified claims of ``jws`` under ``policy``. Raises InvalidToken (or a subclass) and
    whatever the key source raises (IssuerUnavailable)."""
    header = jws.header
    if policy.types is not None:
        typ = header.get("typ")
        if not (policy.untyped and typ is None) and (
            not isinstance(typ, str) or typ.lower() not in policy.types
        ):
            raise WrongType()
    if "crit" in header:
        raise exceptions.InvalidToken(
            _("The access token has unsupported critical header parameters")
        )
    if header.get("b64", True) is not True:  # RFC 7797 unencoded payloads (PyJWT refuses them too)
        raise exceptions.InvalidToken(_("The access token is invalid"))
    algorithm, key = policy.keys(header)
    if not ALGORITHMS[algorithm].verify(jws.signing_input, key, jws.signature):
        raise exceptions.InvalidToken(_("The access token is invalid"))
    check_claims(jws.claims, policy)
    return jws.claims


#: OIDC Core section 2: ``sub`` "MUST NOT exceed 255 ASCII characters in length".
MAX_SUBJECT_LENGTH = 255


def is_identifier(value: object) -> TypeGuard[str]:
    """A string of 1 to 255 characters that is not only whitespace: ``sub`` (RFC 7519 section 4.1.2,
    OIDC Core section 2), and what names a session or a token the same way (``sid``, ``jti``). No NUL,
    which PostgreSQL cannot store: the lookup would fail as if the database were down."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_SUBJECT_LENGTH
        and not value.isspace()
        and "\x00" not in value
    )


#: RFC 7519 section 2 NumericDate: real JSON numbers (no strings, no booleans: ``type``, not isinstance).
NUMBERS = (int, float)
#: Marks a claim that is absent (a null ``exp`` is present, and invalid).
ABSENT = object()


def _audience_valid(claims: dict[str, Any], accepted: tuple[str, ...]) -> bool:
    """``aud`` a string or a list of strings (RFC 7519 section 4.1.3) naming an accepted audience."""
    audience = claims.get("aud")
    if isinstance(audience, str):
        return audience in accepted
    return (
        isinstance(audience, list)
        and all(isinstance(name, str) for name in audience)
        and any(name in accepted for name in audience)
    )


def check_claims(claims: dict[str, Any], policy: Policy) -> None:
    """The claim rules every issuer's tokens follow (ours, external ones, ID and logout tokens).

    The required claims; numeric times, checked with the policy's leeway (``exp`` in the past,
    ``nbf`` or ``iat`` in the future); ``iss`` exactly the policy's; ``aud``; ``sub`` an identifier
    (:func:`is_identifier`), which only a logout token may leave out; ``jti`` and ``scope`` strings when
    present (RFC 9068 section 2.2.3); a ``typ`` claim; then the policy's own rules.

    Written out claim by claim rather than as loops over names: it runs for every new token, and the
    cold path is held to the cost of a bare ``jwt.decode``.
    """
    get = claims.get
    for name in policy.required:
        if get(name) is None:
            # Lazy, so that WWW-Authenticate can still have it in English.
            raise exceptions.InvalidToken(
                format_lazy(_("The access token has no '{name}' claim"), name=name)
            )
    exp, nbf, iat = get("exp", ABSENT), get("nbf", ABSENT), get("iat", ABSENT)
    for value in (exp, nbf, iat):
        if value is not ABSENT and type(value) not in NUMBERS:
            raise exceptions.InvalidToken(_("The access token is invalid"))
    now = time.time()
    leeway = policy.leeway
    if exp is not ABSENT and exp <= now - leeway:
        raise TokenExpired()
    if (nbf is not ABSENT and nbf > now + leeway) or (iat is not ABSENT and iat > now + leeway):
        raise exceptions.InvalidToken(_("The access token is invalid"))
    if get("iss") != policy.issuer:
        raise exceptions.InvalidToken(_("The access token is invalid"))
    if policy.audience is not None and not _audience_valid(claims, policy.audience):
        raise WrongAudience()
    subject = get("sub", ABSENT)
    if subject is ABSENT:
        subject_valid = not policy.subject_required
    else:
        subject_valid = is_identifier(subject)
    if not (
        subject_valid and isinstance(get("jti", ""), str) and isinstance(get("scope", ""), str)
    ):
        raise exceptions.InvalidToken(_("The access token is invalid"))
    if policy.typ_claims is not None and "typ" in claims:
        typ = claims["typ"]
        if not (isinstance(typ, str) and typ in policy.typ_claims):
            raise WrongType()
    if policy.claims_valid is not None and not policy.claims_valid(claims):
        raise exceptions.InvalidToken(_("The access token is invalid"))


# -- the uses: our tokens and allow-listed issuers' access tokens ------------------------------


def media_types(*names: str) -> frozenset[str]:
    """Every spelling of the ``typ`` values ``names`` (lower case, without ``application/``).

    RFC 7515 section 4.1.9: a ``typ`` without ``/`` reads as if ``application/`` were prepended, and
    media types compare without case (the comparison in :func:`verify` lower-cases the header's).
    """
    return frozenset(spelling for name in names for spelling in (name, f"application/{name}"))


#: RFC 9068 section 2.1 ``at+jwt`` and plain ``JWT`` (RFC 7519 section 5.1), which many issuers, the
#: WLCG profile and SciTokens put on their access tokens.
ACCESS_TOKEN_TYPES = media_types("at+jwt", "jwt")
BEARER = frozenset({"Bearer"})


#: Our claims that are strings when present.
OPTIONAL_STRING_CLAIMS = (
    tokens.CLAIM_SESSION,
    tokens.CLAIM_TOKEN_FAMILY,
    tokens.CLAIM_USERNAME,
    tokens.CLAIM_GROUP,
)


def _our_claim_types_valid(claims: dict[str, Any]) -> bool:
    """The memo, revocation and permissions need real numbers, strings and lists in our claims,
    or a well-signed but odd token would end in a 500."""
    get = claims.get
    if type(get(tokens.CLAIM_EPOCH)) is not int or type(get(tokens.CLAIM_GLOBAL_EPOCH)) is not int:
        return False
    if tokens.CLAIM_GROUP_ID in claims and type(get(tokens.CLAIM_GROUP_EPOCH)) is not int:
        return False
    for name in OPTIONAL_STRING_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            return False
    if profiles.WLCG_GROUPS in claims:
        # The WLCG profile's groups are paths: wlcg_group() put a "/" before each name.
        paths = claims[profiles.WLCG_GROUPS]
        return isinstance(paths, list) and all(
            isinstance(name, str) and name.startswith("/") for name in paths
        )
    if tokens.CLAIM_GROUPS not in claims:
        return True
    groups = claims[tokens.CLAIM_GROUPS]
    return isinstance(groups, list) and all(isinstance(name, str) for name in groups)


def _community_claims_valid(slug: str) -> Callable[[dict[str, Any]], bool]:
    """A community's token: ours, and its ``vo`` (with the community's epoch) names the community
    whose issuer and key it has."""

    def valid(claims: dict[str, Any]) -> bool:
        return (
            claims.get(tokens.CLAIM_COMMUNITY) == slug
            and type(claims.get(tokens.CLAIM_COMMUNITY_EPOCH)) is int
            and _our_claim_types_valid(claims)
        )

    return valid


@lru_cache(maxsize=64)
def local_policy(issuer: str | None = None) -> Policy:
    """Our access tokens: ``typ`` at+jwt, the epochs required, ``aud`` only when AUDIENCE is set.
    ``issuer``: a community's (its keys, its ``vo``); None or the site's: the site's. Built once per
    issuer and settings reload (``conf.clear_process_caches``)."""
    audience = conf.epochauth_settings.AUDIENCE  # minting leaves out an empty audience too
    community = communities.of_issuer(issuer)
    return Policy(
        # A community's keys only, each pinned to its algorithm, as the site's are.
        keys=partial(keyring_key, community.keyring) if community is not None else our_key,
        issuer=community.issuer if community is not None else conf.epochauth_settings.ISSUER,
        audience=((audience,) if isinstance(audience, str) else tuple(audience))
        if audience
        else None,
        required=tuple(tokens.REQUIRED_CLAIMS),
        types=frozenset({tokens.ACCESS_TOKEN_TYPE}),
        untyped=False,
        leeway=conf.epochauth_settings.LEEWAY.total_seconds(),
        claims_valid=_community_claims_valid(community.slug)
        if community is not None
        else _our_claim_types_valid,
    )


@lru_cache(maxsize=256)
def external_policy(config: issuer_config.IssuerConfig) -> Policy:
    """An allow-listed issuer's access tokens: its audiences, an access-token ``typ`` when it sends
    one, and no ``typ`` claim but ``Bearer`` (Keycloak's ID tokens say ``ID``). Built once per issuer
    configuration (equal ones share it) and settings reload (``conf.clear_process_caches``), not per
    token."""
    audiences = config.accepted_audiences
    return Policy.for_issuer(
        config,
        audience=tuple(audiences) if audiences is not None else None,
        required=("iss", "sub", "exp", "iat"),
        types=ACCESS_TOKEN_TYPES,
        typ_claims=BEARER,
    )


conf.process_cache(local_policy.cache_clear)
conf.process_cache(external_policy.cache_clear)
