"""Signing keys: algorithms, keys from settings and files, rotation, JWKS and discovery, the command."""

from __future__ import annotations

import io
import json
from functools import cache

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, rsa
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import KeySet

from epochauth.keys import KeyRing, generate_private_key_pem, get_keyring, load_key
from epochauth.tokens import mint_access_token
from tests.helpers import make_user
from tests.loopback_issuer import compact

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"


def pem_of(private_key) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_pem_of(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@cache
def private_pem(algorithm: str, n: int = 0) -> str:
    """A private key per (algorithm, n); RSA at 2048 bits to keep the tests quick."""
    if algorithm.startswith(("RS", "PS")):
        return pem_of(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return generate_private_key_pem(algorithm)


def use_key(settings, algorithm: str, pem: str, **extra: object) -> None:
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "ALGORITHM": algorithm, "SIGNING_KEY": pem, **extra}


def hello(client, token: str):
    return client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}")


@pytest.mark.parametrize(
    "algorithm", ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA", "Ed25519"]
)
def test_asymmetric_algorithms_sign_and_verify(settings, client, algorithm):
    use_key(settings, algorithm, private_pem(algorithm))
    token = mint_access_token(make_user("alice")).token
    header = jwt.get_unverified_header(token)
    assert header["alg"] == algorithm
    assert header["typ"] == "at+jwt"
    assert header["kid"] == get_keyring().signing.kid
    response = hello(client, token)
    assert response.status_code == 200
    assert response.json() == {"hello": "alice"}


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "EdDSA"])
def test_signing_with_the_prepared_key_makes_what_jwt_encode_makes(algorithm):
    """Key.sign skips jwt.encode's per-token key preparation, not a byte of its output (these
    algorithms sign deterministically)."""
    key = load_key(
        algorithm, "s" * 64 if algorithm == "HS256" else private_pem(algorithm), kid="k1"
    )
    claims = {"sub": "42", "iat": 1, "name": "Zoë", "groups": ["a", "b"]}
    material = key.signing_key
    expected = jwt.encode(
        claims, material, algorithm=algorithm, headers={"kid": "k1", "typ": "at+jwt"}
    )
    assert key.sign(claims, "at+jwt") == expected


def test_hs256_is_the_default(settings):
    assert "ALGORITHM" not in settings.EPOCHAUTH
    assert get_keyring().signing.algorithm == "HS256"
    assert jwt.get_unverified_header(mint_access_token(make_user("alice")).token)["alg"] == "HS256"


def test_hmac_falls_back_to_secret_key(settings):
    settings.EPOCHAUTH = {"ISSUER": ISSUER}
    assert get_keyring().signing.signing_key == settings.SECRET_KEY.encode()


def test_signing_key_from_file(settings, client, tmp_path):
    path = tmp_path / "signing.pem"
    path.write_text(private_pem("ES256"))
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "ALGORITHM": "ES256", "SIGNING_KEY_FILE": str(path)}
    token = mint_access_token(make_user("alice")).token
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    assert hello(client, token).status_code == 200
    assert get_keyring().signing.kid == load_key("ES256", private_pem("ES256")).kid


def test_kid_is_derived_from_the_key_and_stable():
    first = load_key("ES256", private_pem("ES256"))
    assert first.kid == load_key("ES256", private_pem("ES256")).kid
    assert first.kid != load_key("ES256", private_pem("ES256", 1)).kid
    assert load_key("ES256", private_pem("ES256"), kid="2024-01").kid == "2024-01"
    # the public half has the same kid as the private key, so a retired key can be given either way
    private = serialization.load_pem_private_key(private_pem("ES256").encode(), None)
    assert load_key("ES256", public_pem_of(private)).kid == first.kid
    assert load_key("HS256", "x" * 32).kid != load_key("HS256", "y" * 32).kid


def test_explicit_key_id_setting(settings):
    use_key(settings, "ES256", private_pem("ES256"), KEY_ID="main-2024")
    assert (
        jwt.get_unverified_header(mint_access_token(make_user("alice")).token)["kid"]
        == "main-2024"
    )


@pytest.mark.parametrize(
    ("algorithm", "curve"),
    [
        ("ES256", ec.SECP384R1()),
        ("ES384", ec.SECP256R1()),
        ("ES512", ec.SECP256R1()),
        ("ES256", ec.SECP521R1()),
    ],
)
def test_ec_key_on_the_wrong_curve_is_refused(algorithm, curve):
    pem = pem_of(ec.generate_private_key(curve))
    with pytest.raises(ImproperlyConfigured):
        load_key(algorithm, pem)
    public = public_pem_of(ec.generate_private_key(curve))
    with pytest.raises(ImproperlyConfigured):
        load_key(algorithm, public)


@pytest.mark.parametrize(
    ("algorithm", "material"),
    [
        ("ES256", "not a key"),
        ("RS256", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
        ("none", "whatever"),
        ("HS1", "x" * 40),
        ("HS256", 12345),
        ("HS256", None),
    ],
    ids=repr,
)
def test_broken_key_material_is_refused(algorithm, material):
    with pytest.raises(ImproperlyConfigured):
        load_key(algorithm, material)


@pytest.mark.parametrize(
    ("algorithm", "other"), [("ES256", "RS256"), ("RS256", "EdDSA"), ("EdDSA", "ES256")]
)
def test_key_of_another_type_is_refused(algorithm, other):
    with pytest.raises(ImproperlyConfigured):
        load_key(algorithm, private_pem(other))


def test_public_key_cannot_sign():
    private = serialization.load_pem_private_key(private_pem("ES256").encode(), None)
    with pytest.raises(ImproperlyConfigured):
        KeyRing(load_key("ES256", public_pem_of(private)), [])


def test_duplicate_kid_is_refused():
    with pytest.raises(ImproperlyConfigured):
        KeyRing(load_key("HS256", "a" * 32, kid="k"), [load_key("HS256", "b" * 32, kid="k")])


@pytest.mark.parametrize(
    "entry",
    [{"key": "x" * 32}, {"algorithm": "HS256"}, "a PEM string", {"algorithm": "HS256", "key": ""}],
)
def test_malformed_verification_key_entries_are_configuration_errors(settings, entry):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "VERIFICATION_KEYS": [entry]}
    with pytest.raises(ImproperlyConfigured):
        get_keyring()


def test_missing_asymmetric_key_is_refused(settings):
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "ALGORITHM": "RS256"}
    with pytest.raises(ImproperlyConfigured):
        get_keyring()


@pytest.mark.parametrize("algorithm", ["ES256", "RS256", "HS256"])
def test_rotation_old_key_verifies_until_removed(settings, client, algorithm):
    old_pem = private_pem(algorithm) if algorithm != "HS256" else "old-secret-" + "o" * 40
    new_pem = private_pem(algorithm, 1) if algorithm != "HS256" else "new-secret-" + "n" * 40
    use_key(settings, algorithm, old_pem)
    user = make_user("alice")
    old_token = mint_access_token(user).token
    old_kid = get_keyring().signing.kid
    assert hello(client, old_token).status_code == 200

    use_key(
        settings, algorithm, new_pem, VERIFICATION_KEYS=[{"algorithm": algorithm, "key": old_pem}]
    )
    new_token = mint_access_token(user).token
    assert jwt.get_unverified_header(new_token)["kid"] != old_kid
    assert hello(client, old_token).status_code == 200
    assert hello(client, new_token).status_code == 200

    use_key(settings, algorithm, new_pem)
    response = hello(client, old_token)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]
    assert hello(client, new_token).status_code == 200


def test_retired_key_from_file_and_public_only(settings, client, tmp_path):
    old_pem = private_pem("ES256")
    use_key(settings, "ES256", old_pem)
    old_token = mint_access_token(make_user("alice")).token
    public = public_pem_of(serialization.load_pem_private_key(old_pem.encode(), None))
    (tmp_path / "old.pub").write_text(public)
    use_key(
        settings,
        "ES256",
        private_pem("ES256", 1),
        VERIFICATION_KEYS=[{"algorithm": "ES256", "file": str(tmp_path / "old.pub")}],
    )
    assert hello(client, old_token).status_code == 200


def test_retired_key_keeps_its_own_algorithm(settings, client):
    """An RS256 token still verifies after moving to EdDSA; the header cannot pick another algorithm."""
    use_key(settings, "RS256", private_pem("RS256"))
    old_token = mint_access_token(make_user("alice")).token
    use_key(
        settings,
        "EdDSA",
        private_pem("EdDSA"),
        VERIFICATION_KEYS=[{"algorithm": "RS256", "key": private_pem("RS256")}],
    )
    assert hello(client, old_token).status_code == 200
    assert sorted(key.algorithm for key in get_keyring().by_kid.values()) == ["EdDSA", "RS256"]


def test_ed25519_tokens_and_keys_by_rfc_9864_as_joserfc_reads_them(settings, client):
    """RFC 9864: ``Ed25519`` is the name of what ``EdDSA`` named with an Ed25519 key; a library that
    knows it (joserfc) verifies our token with our published JWKS, for that algorithm only. (No
    metadata names it: ``id_token_signing_alg_values_supported`` is the ID tokens' RS256.)"""
    use_key(settings, "Ed25519", private_pem("EdDSA"))
    user = make_user("alice")
    token = mint_access_token(user).token
    jwks = client.get("/.well-known/jwks.json").json()
    [published] = jwks["keys"]
    assert (published["kty"], published["crv"], published["alg"]) == ("OKP", "Ed25519", "Ed25519")
    decoded = joserfc_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["Ed25519"])
    assert decoded.header == {"alg": "Ed25519", "kid": published["kid"], "typ": "at+jwt"}
    assert decoded.claims["sub"] == str(user.pk)
    assert hello(client, token).status_code == 200


def test_eddsa_labelled_tokens_of_the_same_key_still_verify(settings, client):
    """Moving ALGORITHM from EdDSA to Ed25519 keeps the key and its kid: the older tokens, labelled
    EdDSA, stay valid; so do both labels under a retired key written either way."""
    pem = private_pem("EdDSA")
    use_key(settings, "EdDSA", pem)
    user = make_user("alice")
    old = mint_access_token(user).token
    use_key(settings, "Ed25519", pem)
    new = mint_access_token(user).token
    assert jwt.get_unverified_header(old)["alg"] == "EdDSA"
    assert jwt.get_unverified_header(new)["alg"] == "Ed25519"
    assert jwt.get_unverified_header(old)["kid"] == jwt.get_unverified_header(new)["kid"]
    assert hello(client, old).status_code == 200 and hello(client, new).status_code == 200
    for retired in ("EdDSA", "Ed25519"):
        use_key(
            settings,
            "ES256",
            private_pem("ES256"),
            VERIFICATION_KEYS=[{"algorithm": retired, "key": pem}],
        )
        assert hello(client, old).status_code == 200, retired
        assert hello(client, new).status_code == 200, retired


@pytest.mark.parametrize(
    "alg", ["HS256", "ES256", "RS256", "Ed448", "ED25519", "none", ["Ed25519"], None]
)
def test_an_ed25519_key_verifies_ed25519_and_eddsa_only(settings, client, alg):
    """Pinned to the key: no other algorithm, and no HMAC keyed with the public key as published."""
    use_key(settings, "Ed25519", private_pem("EdDSA"))
    token = mint_access_token(make_user("alice")).token
    header = {**jwt.get_unverified_header(token), "alg": alg}
    claims = jwt.decode(token, options={"verify_signature": False})
    public = get_keyring().signing.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    forged = compact(header, claims, public if alg == "HS256" else None, "HS256")
    response = hello(client, forged if alg == "HS256" else forged + "c2ln")
    assert response.status_code == 401, alg


def test_an_ed448_key_is_no_ed25519_key(settings, client):
    ed448_pem = pem_of(ed448.Ed448PrivateKey.generate())
    with pytest.raises(ImproperlyConfigured, match="Ed25519"):
        load_key("Ed25519", ed448_pem)
    # An EdDSA key on Ed448 (RFC 8037) verifies EdDSA only: Ed25519 names the other curve.
    use_key(
        settings,
        "ES256",
        private_pem("ES256"),
        VERIFICATION_KEYS=[{"algorithm": "EdDSA", "key": ed448_pem, "kid": "ed448"}],
    )
    retired = get_keyring().by_kid["ed448"]
    claims = jwt.decode(
        mint_access_token(make_user("alice")).token, options={"verify_signature": False}
    )
    for alg, status in (("EdDSA", 200), ("Ed25519", 401)):
        token = compact(
            {"alg": alg, "kid": "ed448", "typ": "at+jwt"}, claims, retired.signing_key, "EdDSA"
        )
        assert hello(client, token).status_code == status, alg


def test_jwks_lists_public_keys_only(settings, client):
    use_key(
        settings,
        "ES256",
        private_pem("ES256"),
        VERIFICATION_KEYS=[
            {"algorithm": "RS256", "key": private_pem("RS256")},
            {"algorithm": "EdDSA", "key": private_pem("EdDSA")},
            {"algorithm": "HS256", "key": "retired-hmac-secret-" + "h" * 40, "kid": "hmac-old"},
        ],
    )
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    keys = response.json()["keys"]
    assert sorted(k["alg"] for k in keys) == ["ES256", "EdDSA", "RS256"]
    assert {k["kid"] for k in keys} == set(get_keyring().by_kid) - {"hmac-old"}
    for key in keys:
        # RFC 7517 section 4.3: "use" alone, the same for every key type, never beside "key_ops".
        assert key["use"] == "sig" and "key_ops" not in key
        assert "d" not in key and "k" not in key and "p" not in key and "q" not in key
        assert key["kty"] in {"EC", "RSA", "OKP"}
    assert "retired-hmac-secret" not in response.content.decode()
    # a published key verifies our tokens
    token = mint_access_token(make_user("alice")).token
    es = next(k for k in keys if k["alg"] == "ES256")
    assert jwt.decode(
        token, jwt.PyJWK(es).key, algorithms=["ES256"], options={"verify_aud": False}
    )["iss"]


def test_jwks_never_publishes_an_hmac_secret(client, settings):
    response = client.get("/.well-known/jwks.json")
    assert response.json() == {"keys": []}
    assert settings.EPOCHAUTH["SIGNING_KEY"] not in response.content.decode()


def test_an_rs256_signing_key_signs_id_tokens_too(settings):
    use_key(settings, "RS256", private_pem("RS256"))
    assert get_keyring().id_token is get_keyring().signing


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "PS256", "HS256"])
def test_another_signing_key_has_no_id_token_key_of_its_own(settings, algorithm):
    pem = private_pem(algorithm) if algorithm != "HS256" else "s" * 40
    use_key(settings, algorithm, pem)
    assert get_keyring().id_token is None


def test_an_id_token_key_beside_an_es256_signing_key(settings, client, tmp_path):
    """Published in the JWKS under its own kid, RS256; it verifies no access token."""
    (tmp_path / "id.pem").write_text(private_pem("RS256", 1))
    use_key(
        settings, "ES256", private_pem("ES256"), ID_TOKEN_SIGNING_KEY_FILE=str(tmp_path / "id.pem")
    )
    keyring = get_keyring()
    assert keyring.id_token.algorithm == "RS256" and keyring.id_token.kid not in keyring.by_kid
    published = {k["kid"]: k for k in client.get("/.well-known/jwks.json").json()["keys"]}
    assert published[keyring.id_token.kid]["alg"] == "RS256"
    assert published[keyring.signing.kid]["alg"] == "ES256"
    user = make_user("alice")
    assert hello(client, mint_access_token(user).token).status_code == 200
    # An access token signed with the ID-token key is no token of ours.
    claims = jwt.decode(
        mint_access_token(user).token, options={"verify_signature": False}, algorithms=["ES256"]
    )
    forged = keyring.id_token.sign(claims, "at+jwt")
    response = hello(client, forged)
    assert response.status_code == 401 and "unknown key" in response["WWW-Authenticate"]


@pytest.mark.parametrize("material", ["public", "ES256", "garbage"])
def test_an_id_token_key_must_be_an_rsa_private_key(settings, material):
    private = serialization.load_pem_private_key(private_pem("RS256").encode(), None)
    pem = {
        "public": public_pem_of(private),
        "ES256": private_pem("ES256"),
        "garbage": "not a key",
    }[material]
    use_key(settings, "ES256", private_pem("ES256"), ID_TOKEN_SIGNING_KEY=pem)
    with pytest.raises(ImproperlyConfigured):
        get_keyring()


def test_keys_command_prints_the_jwks(settings):
    use_key(settings, "EdDSA", private_pem("EdDSA"))
    out = io.StringIO()
    call_command("epochauth_keys", stdout=out)
    jwks = json.loads(out.getvalue())
    assert jwks == get_keyring().jwks()
    assert jwks["keys"][0]["kty"] == "OKP" and "d" not in jwks["keys"][0]


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA", "Ed25519", "HS256"])
def test_keys_command_generates_a_usable_signing_key(settings, client, algorithm):
    out, err = io.StringIO(), io.StringIO()
    call_command("epochauth_keys", "--generate", algorithm, stdout=out, stderr=err)
    material = out.getvalue().strip()
    if algorithm != "HS256":
        assert material.startswith("-----BEGIN PRIVATE KEY-----")
        assert material.endswith("-----END PRIVATE KEY-----")
    else:
        assert len(material) >= 32
    use_key(settings, algorithm, material)
    assert get_keyring().signing.kid in err.getvalue()
    token = mint_access_token(make_user("alice")).token
    assert jwt.get_unverified_header(token)["alg"] == algorithm
    assert hello(client, token).status_code == 200


def test_generated_es256_key_is_on_p256():
    key = serialization.load_pem_private_key(generate_private_key_pem("ES256").encode(), None)
    assert isinstance(key.curve, ec.SECP256R1)


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_hmac_keyed_once_signs_and_verifies_as_pyjwt_does(algorithm):
    """The HMAC context keyed once per key (not per token) is PyJWT's HMAC: same signatures, and a
    changed message or key fails."""
    from jwt.algorithms import get_default_algorithms

    from epochauth.keys import ALGORITHMS

    theirs, ours = get_default_algorithms()[algorithm], ALGORITHMS[algorithm]
    secret, other = b"k" * 64, b"l" * 64
    for message in (b"", b"a.b", b"x" * 1000):
        signature = theirs.sign(message, secret)
        assert ours.sign(message, secret) == signature
        assert ours.verify(message, secret, signature)
        assert not ours.verify(message + b".", secret, signature)
        assert not ours.verify(message, other, signature)
