"""Bearer authentication: every bad token is an RFC 6750 401 (never a 500, never echoed), and the hot path."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import socket
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth import revocation
from epochauth.authentication import BearerAuthentication, authenticate_token
from epochauth.exceptions import InvalidToken
from epochauth.keys import get_keyring
from epochauth.models import Epoch
from epochauth.revocation import bump_epoch
from epochauth.tokens import mint_access_token
from epochauth.users import TokenUser
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
SECRET = "dev-only-epochauth-signing-key-change-me-0123456789abcdef"
CHALLENGE = re.compile(r'^Bearer realm="api", error="invalid_token", error_description="[^"\\]+"$')


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def compact(header: dict, claims: dict, sign=None) -> str:
    """A JWS built by hand, so that any header (alg none, HS256 with a PEM secret ...) can be made."""
    return compact_bytes(json.dumps(header).encode(), json.dumps(claims).encode(), sign)


def compact_bytes(header: bytes, claims: bytes, sign=None) -> str:
    """A JWS of any bytes: another encoding, duplicate names, numbers JSON does not have."""
    signing_input = f"{b64(header)}.{b64(claims)}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def signed_bytes(claims: bytes, header: bytes | None = None) -> str:
    return compact_bytes(
        header or json.dumps(our_header()).encode(), claims, hs256(SECRET.encode())
    )


def claims_text(**change: object) -> str:
    return json.dumps(good_claims(**change))


def hs256(secret: bytes):
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def our_header(**extra: object) -> dict:
    return {"alg": "HS256", "typ": "at+jwt", "kid": get_keyring().signing.kid, **extra}


def good_claims(**change: object) -> dict:
    user = get_user_model().objects.get_or_create(username="alice")[0]
    return {**mint_access_token(user).claims, **change}


def signed(claims: dict, **header: object) -> str:
    return compact(our_header(**header), claims, hs256(SECRET.encode()))


def rsa_pem() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.fixture
def no_network(monkeypatch):
    """Any outgoing connection fails the test: keys are never fetched from a token's header."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def assert_invalid_token(response, token: str, caplog) -> None:
    assert response.status_code == 401, response.content
    assert CHALLENGE.match(response["WWW-Authenticate"]), response["WWW-Authenticate"]
    body = response.content.decode("latin-1")
    text_in_logs = "\n".join(
        r.getMessage() + str(r.args) + str(r.exc_text or "") for r in caplog.records
    )
    for part in {token, *token.split(".")} - {""}:
        if len(part) >= 8:
            assert part not in body
            assert part not in text_in_logs
            assert part not in response["WWW-Authenticate"]


def bad_tokens() -> dict[str, object]:
    """name -> a function (called inside the test, with settings applied) returning the token."""
    attacker = ec.generate_private_key(ec.SECP256R1())

    return {
        "garbage": lambda: "this-is-not-a-token-at-all",
        "one segment": lambda: b64(b'{"alg":"HS256"}'),
        "two segments": lambda: signed(good_claims()).rsplit(".", 1)[0],
        "four segments": lambda: signed(good_claims()) + ".abcdefgh",
        "five segments": lambda: signed(good_claims()) + ".abcdefgh.ijklmnop",
        "empty segments": lambda: "..",
        "non-utf8 header": lambda: ".".join([b64(b'{"alg\xff\xfe":1}'), b64(b"{}"), b64(b"sig")]),
        "non-json header": lambda: ".".join([b64(b"[1, 2]"), b64(b"{}"), b64(b"sig")]),
        "non-base64 header": lambda: "@@@@.e30.c2ln",
        "non-json payload": lambda: (
            compact(our_header(), {}, None).split(".")[0] + ".bm90IGpzb24.c2ln"
        ),
        "latin-1 junk": lambda: "\xff\xfe\xfd.\xe9\xe8.\xe0",
        "alg none": lambda: compact(our_header(alg="none"), good_claims()),
        "alg None": lambda: compact(our_header(alg="None"), good_claims()),
        "wrong key": lambda: compact(our_header(), good_claims(), hs256(b"w" * 64)),
        "tampered payload": lambda: (
            lambda t: (
                t.split(".")[0]
                + "."
                + b64(json.dumps(good_claims(sub="999")).encode())
                + "."
                + t.split(".")[2]
            )
        )(signed(good_claims())),
        "unknown kid": lambda: signed(good_claims(), kid="someone-else"),
        "no kid": lambda: compact(
            {"alg": "HS256", "typ": "at+jwt"}, good_claims(), hs256(SECRET.encode())
        ),
        "kid not a string": lambda: signed(good_claims(), kid=["a"]),
        "jku elsewhere": lambda: jwt.encode(
            good_claims(),
            attacker,
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": "attacker", "jku": "https://evil.example/jwks.json"},
        ),
        "x5u elsewhere": lambda: jwt.encode(
            good_claims(),
            attacker,
            algorithm="ES256",
            headers={"typ": "at+jwt", "kid": "attacker", "x5u": "https://evil.example/cert.pem"},
        ),
        "embedded jwk": lambda: jwt.encode(
            good_claims(),
            attacker,
            algorithm="ES256",
            headers={
                "typ": "at+jwt",
                "kid": "attacker",
                "jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key())),
            },
        ),
        "embedded jwk with our kid": lambda: jwt.encode(
            good_claims(),
            attacker,
            algorithm="ES256",
            headers={
                "typ": "at+jwt",
                "kid": get_keyring().signing.kid,
                "jwk": json.loads(jwt.algorithms.ECAlgorithm.to_jwk(attacker.public_key())),
            },
        ),
        "expired": lambda: signed(
            good_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)
        ),
        "string exp": lambda: signed(good_claims(exp=str(int(time.time()) + 3600))),
        "missing exp": lambda: signed({k: v for k, v in good_claims().items() if k != "exp"}),
        "missing jti": lambda: signed({k: v for k, v in good_claims().items() if k != "jti"}),
        "missing sub": lambda: signed({k: v for k, v in good_claims().items() if k != "sub"}),
        "missing epoch": lambda: signed({k: v for k, v in good_claims().items() if k != "epoch"}),
        "not yet valid": lambda: signed(good_claims(nbf=int(time.time()) + 3600)),
        "issued in the future": lambda: signed(good_claims(iat=int(time.time()) + 3600)),
        "wrong iss": lambda: signed(good_claims(iss="https://evil.example")),
        "iss with trailing slash": lambda: signed(good_claims(iss=ISSUER + "/")),
        "typ JWT": lambda: signed(good_claims(), typ="JWT"),
        "no typ": lambda: compact(
            {"alg": "HS256", "kid": get_keyring().signing.kid},
            good_claims(),
            hs256(SECRET.encode()),
        ),
        "crit header": lambda: signed(good_claims(), crit=["exp"]),
        "payload not an object": lambda: compact(our_header(), ["a"], hs256(SECRET.encode())),
        "sub not a user id": lambda: signed(good_claims(sub="not-a-number")),
        "sub an integer": lambda: signed(good_claims(sub=1)),
        "empty sub": lambda: signed(good_claims(sub="")),
        "whitespace-only sub": lambda: signed(good_claims(sub=" ")),
        "scope a list": lambda: signed(good_claims(scope=["a"])),
        # RFC 7519 section 7.2 step 8 and RFC 8259 section 8.1: the claims set is UTF-8 JSON.
        "UTF-16 claims": lambda: signed_bytes(claims_text().encode("utf-16")),
        "UTF-16-LE claims": lambda: signed_bytes(claims_text().encode("utf-16-le")),
        "UTF-32 claims": lambda: signed_bytes(claims_text().encode("utf-32")),
        "UTF-8 BOM claims": lambda: signed_bytes(b"\xef\xbb\xbf" + claims_text().encode()),
        "UTF-16 header": lambda: signed_bytes(
            claims_text().encode(), json.dumps(our_header()).encode("utf-16")
        ),
        # RFC 7515 section 5.2 / RFC 7519 section 4: no duplicate member names.
        "duplicate sub": lambda: signed_bytes(claims_text()[:-1].encode() + b', "sub": "999"}'),
        "duplicate alg": lambda: signed_bytes(
            claims_text().encode(), json.dumps(our_header())[:-1].encode() + b', "alg": "none"}'
        ),
        # RFC 8259 section 6: no NaN or Infinity, and no number that only parses as infinity.
        "exp Infinity": lambda: signed_bytes(claims_text(exp=float("inf")).encode()),
        "exp 1e400": lambda: signed_bytes(
            claims_text(exp=12345).replace("12345", "1e400").encode()
        ),
        "epoch NaN": lambda: signed_bytes(claims_text(epoch=float("nan")).encode()),
        # RFC 8259 section 8.2: an escaped lone surrogate is no Unicode text.
        "a lone surrogate": lambda: signed_bytes(
            claims_text(preferred_username="al\udfffice").encode()
        ),
        # RFC 7515 section 2: base64url without padding, line breaks or other characters.
        "padded payload": lambda: (
            lambda h, p, sig: f"{h}.{p}{'=' * (-len(p) % 4) or '=='}.{sig}"
        )(*signed(good_claims()).split(".")),
        "space inside": lambda: (lambda t: t[:20] + " " + t[20:])(signed(good_claims())),
        "junk character inside": lambda: (lambda t: t[:20] + "!" + t[20:])(signed(good_claims())),
    }


BAD_TOKENS = bad_tokens()


@pytest.mark.parametrize("name", sorted(BAD_TOKENS))
def test_bad_token_is_401_invalid_token(client, caplog, no_network, name):
    caplog.set_level(logging.DEBUG)
    token = BAD_TOKENS[name]()
    for _ in range(2):  # the second time nothing may come from a memo either
        response = client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}")
        assert_invalid_token(response, token, caplog)


def test_oversized_token_is_refused_before_parsing(client, caplog, settings):
    token = signed(good_claims(padding="x" * 9000))
    response = client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert_invalid_token(response, token, caplog)
    assert "too large" in response["WWW-Authenticate"]

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "MAX_TOKEN_BYTES": 20000}
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_token_just_under_the_limit_is_parsed(settings):
    token = signed(good_claims())
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "MAX_TOKEN_BYTES": len(token)}
    assert authenticate_token(token)[0].username == "alice"
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "MAX_TOKEN_BYTES": len(token) - 1}
    with pytest.raises(InvalidToken, match="too large"):
        authenticate_token(token)


def test_algorithm_confusion_with_public_key_as_hmac_secret(settings, client, caplog):
    private, public = rsa_pem()
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "ALGORITHM": "RS256", "SIGNING_KEY": private}
    good = mint_access_token(make_user("alice")).token
    claims = jwt.decode(good, options={"verify_signature": False})
    header = {"alg": "HS256", "typ": "at+jwt", "kid": get_keyring().signing.kid}
    for secret in (public, public.strip(), private.encode()):
        forged = compact(header, claims, hs256(secret))
        assert_invalid_token(
            client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {forged}"), forged, caplog
        )
    unsigned = compact({**header, "alg": "none"}, claims)
    assert_invalid_token(
        client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {unsigned}"), unsigned, caplog
    )
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200


def test_wrong_audience(settings, client, caplog):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://api.example.org"}
    for aud in ("https://other.example.org", ["https://other.example.org"], None):
        claims = good_claims(aud=aud)
        if aud is None:
            del claims["aud"]
        token = signed(claims)
        assert_invalid_token(
            client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}"), token, caplog
        )
    token = signed(good_claims(aud=["https://other.example.org", "https://api.example.org"]))
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_non_utf8_bytes_in_the_authorization_header(client, caplog):
    token = "abc\udcff"  # what a server could hand over for undecodable bytes
    response = client.get("/api/hello/", HTTP_AUTHORIZATION="Bearer \xc3\x28\xff.\xfe\xfd.\x80")
    assert_invalid_token(response, "\xc3\x28\xff.\xfe\xfd.\x80", caplog)
    with pytest.raises(InvalidToken):
        authenticate_token(token)


def test_empty_bearer_token(client, caplog):
    for header in ("Bearer", "Bearer ", "Bearer    "):
        response = client.get("/api/hello/", HTTP_AUTHORIZATION=header)
        assert response.status_code == 401
        assert CHALLENGE.match(response["WWW-Authenticate"])


def test_no_authorization_header_is_plain_challenge(client):
    response = client.get("/api/hello/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256"'
    )


def test_other_scheme_is_not_ours(client):
    response = client.get("/api/hello/", HTTP_AUTHORIZATION="Basic YWxpY2U6cHc=")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256"'
    )


def test_scheme_is_case_insensitive(client):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"bearer {token}").status_code == 200
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"BEARER  {token} ").status_code == 200


def test_local_tokens_switched_off(client, settings):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LOCAL_TOKENS": False}
    response = client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 401
    assert CHALLENGE.match(response["WWW-Authenticate"])


class OpenView(APIView):
    authentication_classes = [BearerAuthentication]
    permission_classes = [AllowAny]

    def get(self, request):
        return Response({"user": str(request.user), "anonymous": request.user.is_anonymous})


def test_bearer_is_optional_on_an_anonymous_view():
    response = OpenView.as_view()(APIRequestFactory().get("/open/"))
    assert response.status_code == 200
    assert response.data == {"user": str(AnonymousUser()), "anonymous": True}


def test_bad_token_on_an_anonymous_view_is_still_refused():
    request = APIRequestFactory().get("/open/", HTTP_AUTHORIZATION="Bearer x.y.z")
    response = OpenView.as_view()(request)
    assert response.status_code == 401
    assert CHALLENGE.match(response["WWW-Authenticate"])


def test_good_token_on_an_anonymous_view():
    make_user("alice")
    token = signed(good_claims())
    response = OpenView.as_view()(
        APIRequestFactory().get("/open/", HTTP_AUTHORIZATION=f"Bearer {token}")
    )
    assert response.data == {"user": "alice", "anonymous": False}


def test_warm_authenticated_request_makes_no_query(client, django_assert_num_queries):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    client.cookies.clear()
    assert client.get("/api/hello/", **auth).status_code == 200  # warms the revocation cache
    with django_assert_num_queries(0):
        response = client.get("/api/hello/", **auth)
    assert response.status_code == 200
    assert response.json() == {"hello": "alice"}


def test_user_from_token_needs_no_query_until_other_fields(django_assert_num_queries):
    alice = make_user("alice", groups=["operators"])
    alice.is_staff = True
    alice.email = "alice@example.org"
    alice.save()
    token = signed(good_claims())
    authenticate_token(token)  # warm
    with django_assert_num_queries(0):
        user, auth = authenticate_token(token)
        assert isinstance(user, TokenUser)
        assert user.username == "alice" and user.get_username() == "alice"
        assert user.pk == alice.pk and user.id == alice.pk
        assert user.is_authenticated and not user.is_anonymous
        assert user.group_names == ("operators",)
        assert user == alice and hash(user) == hash(TokenUser(alice.pk, "alice"))
        assert auth.subject == str(alice.pk)
    with django_assert_num_queries(1):
        assert user.is_staff is True
        assert user.email == "alice@example.org"  # the row is loaded once
    with django_assert_num_queries(0):
        assert user.user == alice


def test_a_token_sent_again_is_checked_again_only_after_the_revocation_state_changed(
    monkeypatch,
):
    """The memo holds our token's revocation result with the state's generation: a repeated token
    costs no check while nothing changed, and any change (here a denied id, as another process's push
    brings it) makes the next request check again, which refuses it."""
    make_user("alice")
    claims = good_claims()
    token = signed(claims)
    authenticate_token(token)  # the process reads its revocation state
    assert revocation.is_loaded()
    checks = []
    check = revocation.check_local_claims
    monkeypatch.setattr(
        revocation, "check_local_claims", lambda *args: checks.append(args) or check(*args)
    )
    for _ in range(3):
        authenticate_token(token)
    assert len(checks) == 1
    with revocation.state._lock:
        revocation.state._deny("unrelated-id", time.time() + 60)
    authenticate_token(token)
    assert len(checks) == 2
    with revocation.state._lock:
        revocation.state._deny(claims["jti"], time.time() + 60)
    with pytest.raises(InvalidToken, match="revoked"):
        authenticate_token(token)


def test_load_user_loads_the_row(settings, django_assert_num_queries):
    alice = make_user("alice")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LOAD_USER": True}
    token = signed(good_claims())
    authenticate_token(token)
    with django_assert_num_queries(1):
        user, _ = authenticate_token(token)
    assert isinstance(user, get_user_model())
    assert user.pk == alice.pk


def test_load_user_refuses_an_inactive_user(settings):
    alice = make_user("alice")
    token = signed(good_claims())
    get_user_model().objects.filter(pk=alice.pk).update(
        is_active=False
    )  # no signal, no epoch bump
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LOAD_USER": True}
    with pytest.raises(InvalidToken):
        authenticate_token(token)


def test_deactivating_a_user_revokes_the_token(client):
    alice = make_user("alice")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {login(client, 'alice')['access_token']}"}
    assert client.get("/api/hello/", **auth).status_code == 200
    alice.is_active = False
    alice.save()
    assert client.get("/api/hello/", **auth).status_code == 401


@pytest.mark.parametrize("kind", ["user", "global", "group"])
def test_epoch_bump_revokes(client, kind):
    alice = make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {body['access_token']}"}
    assert client.get("/api/hello/", **auth).status_code == 200
    object_id = {"user": str(alice.pk), "global": "", "group": str(alice.groups.get().pk)}[kind]
    bump_epoch(kind, object_id)
    response = client.get("/api/hello/", **auth)
    assert response.status_code == 401
    assert "revoked" in response["WWW-Authenticate"]


def test_bumping_another_group_does_not_revoke(client):
    make_user("alice", groups=["operators", "others"])
    auth = {
        "HTTP_AUTHORIZATION": f"Bearer {login(client, 'alice', group='operators')['access_token']}"
    }
    from django.contrib.auth.models import Group

    bump_epoch(Epoch.Kind.GROUP, str(Group.objects.get(name="others").pk))
    assert client.get("/api/hello/", **auth).status_code == 200


def test_request_auth_holds_claims_not_the_token(client):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    response = client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200
    assert token not in response.content.decode()
    _, auth = authenticate_token(token)
    assert token not in repr(auth)
