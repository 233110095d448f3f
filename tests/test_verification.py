"""The verification pipeline itself (epochauth.verification): each rule refusing on its own, under the
policies of our tokens, of allow-listed issuers' access tokens, and of logout tokens."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured

from epochauth import verification
from epochauth.authentication import authenticate_token
from epochauth.exceptions import InvalidToken
from epochauth.issuers import IssuerConfig, get_issuer
from epochauth.keys import get_keyring, load_key
from epochauth.tokens import mint_access_token
from epochauth.verification import (
    Policy,
    TokenExpired,
    WrongAudience,
    WrongType,
    check_claims,
    external_policy,
    local_policy,
    parse,
    verify,
)
from tests.helpers import make_user
from tests.loopback_issuer import CraftedIssuer, compact, key

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
SECRET = b"dev-only-epochauth-signing-key-change-me-0123456789abcdef"
OTHER = "https://issuer.example.org"
#: A stand-in key source for the policies of other issuers, so that their header and claim rules are
#: checked without a JWKS: every token names this HMAC key.
TEST_KEY = b"a test key that only these tests sign with, 32+ bytes"


def stand_in_keys(header: dict[str, Any]) -> tuple[str, Any]:
    return "HS256", TEST_KEY


def our_header(**change: Any) -> dict[str, Any]:
    header = {"alg": "HS256", "typ": "at+jwt", "kid": get_keyring().signing.kid, **change}
    return {name: value for name, value in header.items() if value is not None}


def our_claims(**change: Any) -> dict[str, Any]:
    user = get_user_model().objects.get_or_create(username="alice")[0]
    claims = {**mint_access_token(user).claims, **change}
    return {name: value for name, value in claims.items() if value is not None}


def ours(claims: dict[str, Any] | None = None, **header: Any) -> str:
    return compact(
        our_header(**header), our_claims() if claims is None else claims, SECRET, "HS256"
    )


def other_claims(**change: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": OTHER,
        "sub": "svc-1",
        "aud": "https://api.example.org",
        "iat": now,
        "exp": now + 300,
    }
    return {name: value for name, value in {**claims, **change}.items() if value is not None}


def signed_for_test(claims: dict[str, Any], **header: Any) -> str:
    head = {"alg": "HS256", "kid": "k", **header}
    return compact({k: v for k, v in head.items() if v is not None}, claims, TEST_KEY, "HS256")


def external(**rules: Any) -> Policy:
    config = IssuerConfig(issuer=OTHER, audiences=("https://api.example.org",))
    return dataclasses.replace(external_policy(config), keys=stand_in_keys, **rules)


def refusal(token: str, policy: Policy) -> InvalidToken:
    with pytest.raises(InvalidToken) as caught:
        verify(parse(token), policy)
    return caught.value


# -- once parsed, never decoded again ---------------------------------------------------------


def test_a_token_is_parsed_once_and_never_handed_to_jwt_decode(monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("PyJWT parsed the token again")

    monkeypatch.setattr(jwt.api_jws.PyJWS, "decode_complete", refuse)
    monkeypatch.setattr(jwt.api_jwt.PyJWT, "decode_complete", refuse)
    parsed = []
    parse_segment = verification.parse_segment
    monkeypatch.setattr(
        verification, "parse_segment", lambda s: parsed.append(s) or parse_segment(s)
    )
    verification.parse_header.cache_clear()
    alice = make_user("alice")
    first, second = mint_access_token(alice), mint_access_token(alice)

    user, access = authenticate_token(first.token)
    assert access.claims == first.claims and user.username == "alice"
    assert parsed == first.token.split(".")[:2]

    # The second token has the same header: only its claims are parsed.
    parsed.clear()
    assert authenticate_token(second.token)[1].claims == second.claims
    assert parsed == [second.token.split(".")[1]]


def test_the_signature_covers_the_exact_bytes_parsed():
    token = ours()
    header, claims, signature = token.split(".")
    other = ours(our_claims(sub="999")).split(".")[1]
    assert verify(parse(token), local_policy())["sub"] != "999"
    assert (
        refusal(f"{header}.{other}.{signature}", local_policy()).description
        == "The access token is invalid"
    )


BASE64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "claims", "signature"])
def test_only_the_canonical_base64url_spelling_is_accepted(segment):
    """RFC 4648 section 3.5: a last character with its left-over bits set spells the same bytes again."""
    for length in range(4):  # until the segment ends in a partial group of 2 or 3 characters
        filler = {"x": "y" * length}
        token = compact(
            our_header(**filler if segment == 0 else {}), our_claims(**filler), SECRET, "HS256"
        )
        parts = token.split(".")
        if len(parts[segment]) % 4 in (2, 3):
            break
    assert verify(parse(token), local_policy())
    spelled = parts[segment][:-1] + BASE64URL[BASE64URL.index(parts[segment][-1]) + 1]
    assert jwt.utils.base64url_decode(spelled) == jwt.utils.base64url_decode(parts[segment])
    parts[segment] = spelled
    with pytest.raises(InvalidToken, match="malformed"):
        parse(".".join(parts))


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "claims", "signature"])
@pytest.mark.parametrize(
    "character, ours",
    [("+", "-"), ("/", "_"), (" ", ""), ("\n", ""), ("!", ""), ("=", "")],
    ids=["plus", "slash", "space", "newline", "junk", "padding"],
)
def test_a_segment_in_another_alphabet_is_malformed(segment, character, ours):
    """RFC 7515 section 2: base64url only, without padding or line breaks. base64's ``+`` and ``/``
    spell the same bytes as ``-`` and ``_``, and a lenient decoder skips the others: each would be a
    second spelling of a token whose signature still verifies."""
    for n in range(50):  # a signature with the base64url character, to spell it the other way
        parts = compact(our_header(), our_claims(n=n), SECRET, "HS256").split(".")
        if ours in parts[2]:
            break
    text = parts[segment]
    at = text.find(ours) if ours and ours in text else len(text) // 2
    parts[segment] = text[:at] + character + text[at + (len(ours) if ours in text else 0) :]
    with pytest.raises(InvalidToken, match="malformed"):
        parse(".".join(parts))


# -- the header --------------------------------------------------------------------------------


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "At+Jwt"])
def test_our_tokens_take_at_jwt_in_any_case(typ):
    assert verify(parse(ours(typ=typ)), local_policy())["iss"] == ISSUER


@pytest.mark.parametrize("typ", [None, "JWT", "application/at+jwt", "", "at+jwt ", ["at+jwt"], 1])
def test_our_tokens_need_typ_at_jwt(typ):
    header = our_header() if typ is None else our_header(typ=typ)
    if typ is None:
        del header["typ"]
    error = refusal(compact(header, our_claims(), SECRET, "HS256"), local_policy())
    assert isinstance(error, WrongType) and error.description == "The token is not an access token"


@pytest.mark.parametrize(
    "typ",
    [
        None,
        "at+jwt",
        "application/at+jwt",
        "JWT",
        "jwt",
        "Application/AT+JWT",
        "application/jwt",
        "APPLICATION/JWT",
    ],
)
def test_external_access_tokens_take_these_typ_spellings_or_none(typ):
    """RFC 7515 section 4.1.9: media types compare without case, ``application/`` may be left out."""
    assert verify(parse(signed_for_test(other_claims(), typ=typ)), external())["sub"] == "svc-1"


@pytest.mark.parametrize(
    "typ",
    [
        "id_token+jwt",
        "logout+jwt",
        "",
        ["at+jwt"],
        {"typ": "jwt"},
        "application/",
        "text/jwt",
        "application/application/jwt",
        "jwt; charset=utf-8",
    ],
)
def test_external_access_tokens_refuse_other_typ_values(typ):
    assert isinstance(refusal(signed_for_test(other_claims(), typ=typ), external()), WrongType)


@pytest.mark.parametrize("crit", [["exp"], [], "exp", ["b64"]])
def test_crit_is_refused_whatever_it_names(crit):
    error = refusal(ours(crit=crit), local_policy())
    assert error.description == "The access token has unsupported critical header parameters"


@pytest.mark.parametrize("b64", [False, "false", 0])
def test_unencoded_payloads_are_refused(b64):
    assert refusal(ours(b64=b64), local_policy()).description == "The access token is invalid"


def test_key_fields_in_the_header_are_never_read(no_network):
    """jku, x5u, jwk and x5c are neither used nor refused: the key comes by kid from our keyring."""
    fields = {
        "jku": "https://evil.example/jwks",
        "x5u": "https://evil.example/c.pem",
        "x5c": ["AAAA"],
    }
    fields["jwk"] = {"kty": "oct", "k": "c2VjcmV0"}
    assert verify(parse(ours(**fields)), local_policy())["iss"] == ISSUER
    forged = compact(our_header(**fields), our_claims(), b"secret", "HS256")
    assert refusal(forged, local_policy()).description == "The access token is invalid"


@pytest.fixture
def no_network(monkeypatch):
    import socket

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", refuse)


# -- our keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid",
    [None, "someone-else", ["a"], {"kid": "x"}, 1],
    ids=["missing", "unknown", "list", "object", "int"],
)
def test_a_kid_not_in_our_keyring_is_an_unknown_key(kid):
    header = our_header()
    header.pop("kid")
    if kid is not None:
        header["kid"] = kid
    error = refusal(compact(header, our_claims(), SECRET, "HS256"), local_policy())
    assert error.description == "The access token was signed with an unknown key"


@pytest.mark.parametrize("alg", ["none", "None", "HS384", "HS512", "RS256", ["HS256"], None])
def test_the_algorithm_is_the_keys_not_the_headers(alg):
    """Signed correctly with our HS256 key: only the header's ``alg`` is wrong."""
    header = (
        our_header(alg=alg)
        if alg is not None
        else {k: v for k, v in our_header().items() if k != "alg"}
    )
    token = compact(header, our_claims(), SECRET, "HS256")
    assert refusal(token, local_policy()).description == "The access token is invalid"


def rsa_pems() -> tuple[str, bytes]:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem, public


def test_an_rsa_public_key_never_becomes_an_hmac_secret(settings):
    private, public = rsa_pems()
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALGORITHM": "RS256", "SIGNING_KEY": private}
    good = mint_access_token(make_user("alice"))
    assert verify(parse(good.token), local_policy()) == good.claims
    for secret in (public, public.strip(), private.encode()):
        forged = compact(our_header(), good.claims, secret, "HS256")
        assert refusal(forged, local_policy()).description == "The access token is invalid"
    # Nor can a key shaped like one be configured as an HMAC secret: refused when it is loaded.
    with pytest.raises(ImproperlyConfigured, match="HS256"):
        load_key("HS256", public)


# -- an allow-listed issuer's keys: its JWKS, its algorithms ----------------------------------


@pytest.fixture
def crafted(settings) -> Iterator[CraftedIssuer]:
    issuer = CraftedIssuer()
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": issuer.issuer}]}
    yield issuer
    issuer.stop()


@pytest.mark.parametrize(
    "header, signer, message",
    [
        ({"alg": "ES256", "kid": "rsa-1"}, "ec-a", "does not match its key"),
        ({"alg": "RS256", "kid": "ec-1"}, "rsa-a", "does not match its key"),
        ({"alg": "PS256", "kid": "rsa-1"}, "rsa-a", "algorithm is not accepted"),
        ({"alg": "HS256", "kid": "rsa-1"}, None, "algorithm is not accepted"),
        ({"alg": "none", "kid": "rsa-1"}, None, "algorithm is not accepted"),
        ({"alg": ["RS256"], "kid": "rsa-1"}, "rsa-a", "algorithm is not accepted"),
        ({"alg": "RS256", "kid": ["rsa-1"]}, "rsa-a", "names no key"),
        ({"alg": "RS256", "kid": 1}, "rsa-a", "names no key"),
        ({"alg": "RS256", "kid": "unpublished"}, "rsa-a", "does not publish"),
        ({"alg": "RS256", "kid": "rsa-1"}, "rsa-evil", "The access token is invalid"),
    ],
)
def test_issuer_keys_pin_the_algorithm_to_the_published_key(crafted, header, signer, message):
    claims = crafted.claims()
    if header["alg"] == "HS256":  # the RSA public key, as published, for a secret
        token = compact(
            header,
            claims,
            key("rsa-a")
            .public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            "HS256",
        )
    elif signer is None:
        token = compact(header, claims) + "c2ln"
    else:
        token = compact(
            header, claims, key(signer), "RS256" if signer.startswith("rsa") else "ES256"
        )
    policy = external_policy(get_issuer(crafted.issuer))
    assert message in refusal(token, policy).description


def test_issuer_keys_verify_a_published_key_with_its_algorithm(crafted):
    policy = external_policy(get_issuer(crafted.issuer))
    for kid in ("rsa-1", "ec-1"):
        assert verify(parse(crafted.token(kid=kid)), policy)["iss"] == crafted.issuer
    assert crafted.counts["/jwks"] == 1


@pytest.mark.parametrize(
    "unnamed", [set(), {"rsa-1"}, {"rsa-1", "ec-1"}], ids=["kids", "rsa-no-kid", "no-kids"]
)
def test_a_token_without_kid_uses_the_one_key_for_its_algorithm(crafted, unnamed):
    """As SciTokens does: a token naming no key is verified with the issuer's only key that fits."""
    crafted.unnamed = unnamed
    policy = external_policy(get_issuer(crafted.issuer))
    for signer, alg in (("rsa-a", "RS256"), ("ec-a", "ES256")):
        token = compact({"alg": alg, "typ": "JWT"}, crafted.claims(), key(signer), alg)
        assert verify(parse(token), policy)["iss"] == crafted.issuer
    forged = compact({"alg": "RS256"}, crafted.claims(), key("rsa-evil"), "RS256")
    assert refusal(forged, policy).description == "The access token is invalid"


def test_a_token_without_kid_is_refused_when_several_keys_could_match(crafted):
    crafted.keys = {**crafted.keys, "rsa-2": (key("rsa-b"), "RS256")}
    crafted.unnamed = {"rsa-2"}
    policy = external_policy(get_issuer(crafted.issuer))
    token = compact({"alg": "RS256"}, crafted.claims(), key("rsa-a"), "RS256")
    assert refusal(token, policy).description == (
        "The access token names no key, and its issuer has several for its algorithm"
    )
    # Naming its key, the same token's twin passes; the unnamed key serves no token that names one.
    assert verify(parse(crafted.token(kid="rsa-1")), policy)["iss"] == crafted.issuer
    named_unnamed = compact(
        {"alg": "RS256", "kid": "rsa-2"}, crafted.claims(), key("rsa-b"), "RS256"
    )
    assert "does not publish" in refusal(named_unnamed, policy).description


def test_a_token_without_kid_for_an_algorithm_no_key_fits(crafted):
    crafted.keys = {"rsa-1": (key("rsa-a"), "RS256")}
    policy = external_policy(get_issuer(crafted.issuer))
    token = compact({"alg": "ES256"}, crafted.claims(), key("ec-a"), "ES256")
    assert refusal(token, policy).description == (
        "The access token names no key, and its issuer has none for its algorithm"
    )


# -- the claims: one set of rules, configured per use ------------------------------------------


def test_claims_of_a_good_token_pass_every_policy():
    check_claims(our_claims(), local_policy())
    check_claims(other_claims(), external())
    check_claims(
        other_claims(sub=None), external(required=("iss", "exp", "iat"), subject_required=False)
    )


@pytest.mark.parametrize("name", ["iss", "sub", "exp", "iat", "jti", "epoch", "global_epoch"])
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_our_required_claims(name, absent):
    claims = our_claims()
    if absent == "missing":
        del claims[name]
    else:
        claims[name] = None
    with pytest.raises(InvalidToken) as caught:
        check_claims(claims, local_policy())
    assert caught.value.description == f"The access token has no '{name}' claim"


@pytest.mark.parametrize("name", ["iat", "exp", "sub"])
def test_an_external_token_without_a_required_claim_is_told_which(name):
    claims = other_claims()
    del claims[name]
    assert (
        refusal(signed_for_test(claims), external()).description
        == f"The access token has no '{name}' claim"
    )


@pytest.mark.parametrize(
    "change",
    [
        {"exp": "9999999999"},
        {"exp": True},
        {"iat": False},
        {"nbf": "0"},
        {"iat": [1]},
        {"nbf": None},  # present, but no number
    ],
    ids=repr,
)
def test_times_are_numeric_dates(change):
    with pytest.raises(InvalidToken) as caught:
        check_claims({**our_claims(), **change}, local_policy())
    assert caught.value.description == "The access token is invalid"


def test_times_with_leeway(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 30}
    now = int(time.time())
    check_claims(our_claims(exp=now - 20, iat=now - 100), local_policy())
    check_claims(our_claims(nbf=now + 20, iat=now + 20), local_policy())
    for change in ({"exp": now - 40, "iat": now - 100}, {"exp": now - 30, "iat": now - 100}):
        with pytest.raises(TokenExpired) as caught:
            check_claims(our_claims(**change), local_policy())
        assert caught.value.description == "The access token expired"
    for change in ({"nbf": now + 40}, {"iat": now + 40}):
        with pytest.raises(InvalidToken) as caught:
            check_claims(our_claims(**change), local_policy())
        assert not isinstance(caught.value, TokenExpired)


@pytest.mark.parametrize(
    "iss", [ISSUER + "/", "HTTP://127.0.0.1:8000", ["http://127.0.0.1:8000"], 1]
)
def test_iss_is_exactly_the_policys(iss):
    with pytest.raises(InvalidToken, match="invalid"):
        check_claims(our_claims(iss=iss), local_policy())


@pytest.mark.parametrize(
    "aud",
    [
        None,
        "",
        [],
        "https://other.example.org",
        ["https://other.example.org"],
        [1],
        {"a": 1},
        ["https://api.example.org", 2],
    ],
    ids=repr,
)
def test_audience_must_name_one_accepted(settings, aud):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://api.example.org"}
    claims = {**our_claims(), "aud": aud}
    if aud is None:
        del claims["aud"]
    with pytest.raises(WrongAudience) as caught:
        check_claims(claims, local_policy())
    assert caught.value.description == "The access token is not meant for this service"
    check_claims(
        {**claims, "aud": ["https://other.example.org", "https://api.example.org"]}, local_policy()
    )


def test_audience_none_is_not_checked():
    assert local_policy().audience is None
    for aud in ("https://anyone.example.org", ["x", 1], {"a": 1}):
        check_claims(our_claims(aud=aud), local_policy())


@pytest.mark.parametrize("sub", ["", " ", "\t\u00a0", "s" * 256, "a\x00b", 1, ["1"]], ids=repr)
def test_sub_is_an_identifier(sub):
    with pytest.raises(InvalidToken):
        check_claims(other_claims(sub=sub), external())
    with pytest.raises(InvalidToken):
        check_claims(other_claims(sub=sub), external(subject_required=False))


def test_only_a_policy_without_subject_may_leave_sub_out():
    with pytest.raises(InvalidToken):
        check_claims(other_claims(sub=None), external(required=("iss", "exp", "iat")))
    check_claims(
        other_claims(sub=None), external(required=("iss", "exp", "iat"), subject_required=False)
    )


@pytest.mark.parametrize(
    "change", [{"jti": 1}, {"jti": ["a"]}, {"scope": ["a"]}, {"scope": 1}], ids=repr
)
def test_jti_and_scope_are_strings(change):
    with pytest.raises(InvalidToken):
        check_claims(other_claims(**change), external())


@pytest.mark.parametrize("typ", ["ID", "Logout", "bearer", ["Bearer"], {"a": 1}, None], ids=repr)
def test_an_external_typ_claim_other_than_bearer_is_refused(typ):
    claims = {**other_claims(), "typ": typ}
    with pytest.raises(WrongType):
        check_claims(claims, external())
    check_claims(other_claims(typ="Bearer"), external())


@pytest.mark.parametrize(
    "change",
    [
        {"epoch": "0"},
        {"global_epoch": 0.0},
        {"gid": "1"},
        {"sid": 1},
        {"groups": "ops"},
        {"groups": [1]},
    ],
    ids=repr,
)
def test_our_claims_have_our_types(change):
    with pytest.raises(InvalidToken):
        check_claims(our_claims(**change), local_policy())
    check_claims(
        other_claims(**change), external()
    )  # another issuer's claims of those names are its own


# -- logout tokens: the same pipeline, their own wording --------------------------------------


def test_the_refusals_a_logout_token_words_its_own_way_are_told_apart():
    policy = external(
        audience=("loop-client",),
        required=("iss", "aud", "iat", "jti"),
        types=frozenset({"logout+jwt", "application/logout+jwt"}),
        typ_claims=None,
        subject_required=False,
    )
    claims = other_claims(aud="loop-client", jti="j1", sub=None)
    assert verify(parse(signed_for_test(claims, typ="Logout+JWT")), policy)["jti"] == "j1"
    assert verify(parse(signed_for_test(claims)), policy)["jti"] == "j1"
    now = int(time.time())
    assert isinstance(refusal(signed_for_test(claims, typ="at+jwt"), policy), WrongType)
    assert isinstance(refusal(signed_for_test({**claims, "exp": now - 600}), policy), TokenExpired)
    assert isinstance(
        refusal(signed_for_test({**claims, "aud": "another"}), policy), WrongAudience
    )
    assert type(refusal(signed_for_test({**claims, "jti": None}), policy)) is InvalidToken
