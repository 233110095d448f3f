"""DPoP (RFC 9449) at the resource server: every check of section 4.3 refuses on its own, a bound token
never passes as a bearer token (section 7.2), nonces (section 9), and proofs of other implementations."""

from __future__ import annotations

import json
import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.checks import run_checks
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from epochauth import dpop
from epochauth.models import Epoch
from epochauth.revocation import bump_epoch
from epochauth.tokens import mint_access_token
from tests.helpers import make_user
from tests.loopback_issuer import CraftedIssuer, compact

pytestmark = pytest.mark.django_db

HELLO = "/api/hello/"
URL = "http://testserver/api/hello/"
#: RFC 7638 section 3.1's example key and its thumbprint.
RFC7638_KEY = {
    "kty": "RSA",
    "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
    "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQ"
    "MicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcR"
    "wr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
    "e": "AQAB",
    "alg": "RS256",
    "kid": "2011-04-29",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


class Holder:
    """A client's DPoP key and the proofs it signs."""

    def __init__(self, private_key: Any = None, alg: str = "ES256") -> None:
        self.private_key = private_key or ec.generate_private_key(ec.SECP256R1())
        self.alg = alg
        to_jwk = {"ES256": ECAlgorithm, "RS256": RSAAlgorithm, "PS256": RSAAlgorithm}.get(
            alg, OKPAlgorithm
        )
        self.jwk = to_jwk.to_jwk(self.private_key.public_key(), as_dict=True)
        self.jkt = dpop.thumbprint(self.jwk)

    def proof(
        self,
        token: str | None = None,
        *,
        htm: str = "GET",
        htu: str = URL,
        header: dict[str, Any] | None = None,
        sign_alg: str | None = None,
        **claims: Any,
    ) -> str:
        body = {"jti": uuid.uuid4().hex, "htm": htm, "htu": htu, "iat": int(time.time())}
        if token is not None:
            body["ath"] = dpop.access_token_hash(token)
        body.update(claims)
        body = {name: value for name, value in body.items() if value is not None}
        head = {"typ": "dpop+jwt", "alg": self.alg, "jwk": self.jwk, **(header or {})}
        return compact(head, body, self.private_key, sign_alg or self.alg)


@pytest.fixture
def holder() -> Holder:
    return Holder()


def bound_token(holder: Holder, username: str = "alice") -> str:
    user = make_user(username)
    return mint_access_token(user, extra_claims={"cnf": {"jkt": holder.jkt}}).token


def call(client, token: str, proof: str | None, scheme: str = "DPoP", **extra: Any):
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}", **extra}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return client.get(HELLO, **headers)


def refused(response, error: str = "invalid_dpop_proof", scheme: str = "DPoP") -> str:
    """The error description of a 401 with ``error`` in a ``scheme`` challenge."""
    assert response.status_code == 401, response.content
    challenge = response["WWW-Authenticate"]
    match = re.fullmatch(
        rf'{scheme} realm="api"(?:, algs="[^"]+")?, error="{error}", error_description="([^"\\]+)"',
        challenge,
    )
    assert match, challenge
    return match.group(1)


def test_thumbprint_of_rfc7638_example():
    assert dpop.thumbprint(RFC7638_KEY) == RFC7638_THUMBPRINT


def test_a_good_proof_passes_and_request_auth_says_bound(client, holder):
    token = bound_token(holder)
    response = call(client, token, holder.proof(token))
    assert response.status_code == 200, response.content
    assert response.json() == {"hello": "alice"}
    access = response.wsgi_request.auth  # type: ignore[attr-defined]
    assert access.is_dpop_bound and access.dpop_jkt == holder.jkt


def test_each_algorithm_of_the_default_list(client):
    for holder in (
        Holder(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        Holder(rsa.generate_private_key(public_exponent=65537, key_size=2048), "PS256"),
        Holder(ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
        Holder(ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ):
        token = bound_token(holder, username=f"u-{holder.alg}")
        sign_alg = "EdDSA" if holder.alg == "Ed25519" else None
        assert call(client, token, holder.proof(token, sign_alg=sign_alg)).status_code == 200


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"htm": "POST"}, "another HTTP method"),
        ({"htu": "http://testserver/api/reports/"}, "another URL"),
        ({"htu": "https://testserver/api/hello/"}, "another URL"),
        ({"iat": int(time.time()) - 3600}, "too old"),
        ({"iat": int(time.time()) + 3600}, "in the future"),
        ({"iat": "now"}, "no valid iat"),
        ({"jti": None}, "no valid jti"),
        ({"jti": "x" * 256}, "no valid jti"),
        ({"ath": dpop.access_token_hash("another token")}, "not for this access token"),
        ({"ath": None}, "not for this access token"),
    ],
)
def test_each_claim_check_refuses_on_its_own(client, holder, change, description):
    token = bound_token(holder)
    assert description in refused(call(client, token, holder.proof(token, **change)))


def test_htu_is_compared_after_normalisation(client, holder):
    token = bound_token(holder)
    htu = "HTTP://TestServer:80/api/hello/?q=1#part"
    assert call(client, token, holder.proof(token, htu=htu)).status_code == 200


@pytest.mark.parametrize(
    ("header", "sign_alg", "description"),
    [
        ({"typ": "jwt"}, None, "type is not dpop+jwt"),
        ({"typ": "DPoP+JWT"}, None, "type is not dpop+jwt"),
        ({"alg": "none"}, None, "algorithm is not accepted"),
        ({"alg": "HS256"}, "HS256", "algorithm is not accepted"),
        ({"alg": "ES384"}, None, "algorithm is not accepted"),
        ({"alg": "RS256"}, None, "does not fit its algorithm"),
        ({"crit": ["exp"]}, None, "unsupported header parameters"),
    ],
)
def test_each_header_check_refuses_on_its_own(client, holder, header, sign_alg, description):
    token = bound_token(holder)
    if sign_alg == "HS256":
        hs = compact({"typ": "dpop+jwt", "alg": "HS256", "jwk": holder.jwk}, {}, b"k" * 32)
        proof = hs
    elif header.get("alg") == "none":
        head = {"typ": "dpop+jwt", "alg": "none", "jwk": holder.jwk}
        proof = compact(head, {"htm": "GET", "htu": URL, "jti": "1", "iat": int(time.time())})
        proof += "AA"  # a signature, or the JWS is malformed before its alg is read
    else:
        proof = holder.proof(token, header=header, sign_alg=holder.alg)
    assert description in refused(call(client, token, proof))


def test_a_private_key_in_the_proof_is_refused(client, holder):
    token = bound_token(holder)
    private = ECAlgorithm.to_jwk(holder.private_key, as_dict=True)
    assert "d" in private
    proof = holder.proof(token, header={"jwk": private})
    assert "not a public key" in refused(call(client, token, proof))
    symmetric = holder.proof(token, header={"jwk": {"kty": "oct", "k": "c2VjcmV0"}})
    assert "not a public key" in refused(call(client, token, symmetric))


def test_a_bad_signature_is_refused(client, holder):
    token = bound_token(holder)
    other = Holder()
    forged = holder.proof(token).rsplit(".", 1)[0] + "." + other.proof(token).rsplit(".", 1)[1]
    assert "signature is invalid" in refused(call(client, token, forged))


def test_no_proof_or_two_proofs_are_refused(client, holder):
    token = bound_token(holder)
    assert "exactly one DPoP proof" in refused(call(client, token, None))
    two = f"{holder.proof(token)},{holder.proof(token)}"
    assert "exactly one DPoP proof" in refused(call(client, token, two))


def test_a_replayed_proof_is_refused(client, holder):
    token = bound_token(holder)
    proof = holder.proof(token)
    assert call(client, token, proof).status_code == 200
    assert "used before" in refused(call(client, token, proof))
    assert call(client, token, holder.proof(token)).status_code == 200


def test_replay_cache_down_fails_closed(client, holder, monkeypatch):
    token = bound_token(holder)
    cache = caches["default"]

    def down(*args: Any, **kwargs: Any) -> bool:
        raise ConnectionError("cache down")

    call(client, token, holder.proof(token))  # warm: revocation state read
    monkeypatch.setattr(cache, "add", down)
    assert call(client, token, holder.proof(token)).status_code == 503


def test_proof_of_another_key_is_refused(client, holder):
    token = bound_token(holder)
    other = Holder()
    description = refused(call(client, token, other.proof(token)))
    assert "not of the key the access token is bound to" in description


def test_an_unbound_token_with_the_dpop_scheme_is_refused(client, holder):
    token = mint_access_token(make_user("alice")).token
    assert "not bound" in refused(call(client, token, holder.proof(token)), "invalid_token")


def test_a_bound_token_as_bearer_is_refused_also_on_a_memo_hit(client, holder):
    token = bound_token(holder)
    assert "DPoP proof" in refused(call(client, token, None, "Bearer"), "invalid_token")
    assert call(client, token, holder.proof(token)).status_code == 200
    # Now the token is in the memo with its revocation result: the downgrade is still refused.
    assert "DPoP proof" in refused(call(client, token, None, "Bearer"), "invalid_token")
    proof_ignored = call(client, token, holder.proof(token), "Bearer")
    assert "DPoP proof" in refused(proof_ignored, "invalid_token")


def test_dpop_required_refuses_bearer_tokens(client, settings, holder):
    plain = mint_access_token(make_user("bob")).token
    assert call(client, plain, None, "Bearer").status_code == 200
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_REQUIRED": True}
    refused(call(client, plain, None, "Bearer"), "invalid_token")
    token = bound_token(holder)
    assert call(client, token, holder.proof(token)).status_code == 200


def test_without_credentials_the_challenge_offers_both_schemes(client):
    response = client.get(HELLO)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256"'
    )


def test_warm_dpop_request_makes_no_query(client, holder, django_assert_num_queries):
    token = bound_token(holder)
    assert call(client, token, holder.proof(token)).status_code == 200
    with django_assert_num_queries(0):
        assert call(client, token, holder.proof(token)).status_code == 200


def test_revocation_of_a_bound_token_refuses_the_next_dpop_request(client, holder):
    token = bound_token(holder)
    assert call(client, token, holder.proof(token)).status_code == 200
    bump_epoch(Epoch.Kind.USER, str(get_user_model().objects.get(username="alice").pk))
    refused(call(client, token, holder.proof(token)), "invalid_token")


def test_logout_ends_a_bound_token(client, holder):
    token = bound_token(holder)
    assert call(client, token, holder.proof(token)).status_code == 200
    logout = client.post(
        "/auth/logout-all/",
        HTTP_AUTHORIZATION=f"DPoP {token}",
        HTTP_DPOP=holder.proof(token, htm="POST", htu="http://testserver/auth/logout-all/"),
    )
    assert logout.status_code in (200, 204), logout.content
    refused(call(client, token, holder.proof(token)), "invalid_token")


def test_nonce_flow(client, settings, holder):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=5)}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "epochauth.dpop.NonceMiddleware"]
    token = bound_token(holder)
    first = call(client, token, holder.proof(token))
    refused(first, "use_dpop_nonce")
    nonce = first["DPoP-Nonce"]
    assert refused(call(client, token, holder.proof(token, nonce="made-up")), "use_dpop_nonce")
    second = call(client, token, holder.proof(token, nonce=nonce))
    assert second.status_code == 200, second.content
    assert second["DPoP-Nonce"] == nonce
    assert not [m for m in run_checks() if m.id == "epochauth.E026"]


def test_checks_refuse_bad_dpop_settings(settings):
    for bad in (
        {"DPOP_ALGORITHMS": ["HS256"]},
        {"DPOP_ALGORITHMS": []},
        {"DPOP_PROOF_LIFETIME": 0},
    ):
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, **bad}
        assert "epochauth.E025" in [m.id for m in run_checks()], bad
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "DPOP_PROOF_LIFETIME": 60,
        "DPOP_ALGORITHMS": ["ES256"],
    }
    assert "epochauth.E025" not in [m.id for m in run_checks()]
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=1)}
    assert "epochauth.E026" in [m.id for m in run_checks()]  # no NonceMiddleware


def test_an_external_issuers_bound_token(client, settings, holder):
    issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": issuer.issuer}]}
        token = issuer.token(cnf={"jkt": holder.jkt})
        assert call(client, token, holder.proof(token)).status_code == 200
        refused(call(client, token, None, "Bearer"), "invalid_token")
        assert "not of the key" in refused(call(client, token, Holder().proof(token)))
    finally:
        issuer.stop()


def test_proofs_of_pydpop_are_accepted(client):
    import pydpop

    key = pydpop.generate_key(alg="ES256")
    jkt = pydpop.jwk_thumbprint(pydpop.public_jwk(key))
    token = mint_access_token(make_user("alice"), extra_claims={"cnf": {"jkt": jkt}}).token
    proof = pydpop.generate_proof(private_key=key, htm="GET", htu=URL, access_token=token)
    assert call(client, token, proof).status_code == 200


def test_proofs_of_joserfc_are_accepted(client):
    from joserfc import jws
    from joserfc.jwk import OKPKey

    key = OKPKey.generate_key("Ed25519")
    jkt = key.thumbprint()
    assert jkt == dpop.thumbprint(key.as_dict(private=False))
    token = mint_access_token(make_user("alice"), extra_claims={"cnf": {"jkt": jkt}}).token
    claims = {
        "jti": uuid.uuid4().hex,
        "htm": "GET",
        "htu": URL,
        "iat": int(time.time()),
        "ath": dpop.access_token_hash(token),
    }
    header = {"typ": "dpop+jwt", "alg": "EdDSA", "jwk": key.as_dict(private=False)}
    proof = jws.serialize_compact(header, json.dumps(claims), key, algorithms=["EdDSA"])
    assert call(client, token, proof).status_code == 200


def test_the_dpop_bound_permission(holder):
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from epochauth.permissions import DPoPBound

    class Bound(APIView):
        permission_classes = [DPoPBound]

        def get(self, request):
            return Response({"ok": True})

    view = Bound.as_view()
    factory = APIRequestFactory()
    plain = mint_access_token(make_user("bob")).token
    assert view(factory.get(HELLO, HTTP_AUTHORIZATION=f"Bearer {plain}")).status_code == 403
    token = bound_token(holder)
    request = factory.get(HELLO, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=holder.proof(token))
    assert view(request).status_code == 200


def test_no_other_reader_of_bearer_tokens_takes_a_bound_one(holder):
    from epochauth.authentication import authenticate_token
    from epochauth.exceptions import ProofRequired

    with pytest.raises(ProofRequired):
        authenticate_token(bound_token(holder))
    assert authenticate_token(mint_access_token(make_user("bob")).token)[0].username == "bob"


def test_a_nonce_is_accepted_for_its_slot_and_the_next_only(settings, monkeypatch):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=1)}
    now = [1_800_000_000.0]
    monkeypatch.setattr(dpop.time, "time", lambda: now[0])
    nonce = dpop.current_nonce()
    now[0] += 60
    assert dpop.nonce_valid(nonce) and dpop.current_nonce() != nonce
    now[0] += 60
    assert not dpop.nonce_valid(nonce)


def test_urls_normalised_for_htu():
    assert dpop.normalise_url("HTTPS://Example.ORG:443/a?b#c") == "https://example.org/a"
    assert dpop.normalise_url("http://example.org:8080") == "http://example.org:8080/"
    assert dpop.normalise_url("http://[::1]:80/x") == "http://[::1]/x"
    assert dpop.normalise_url("ftp://example.org/") is None
    assert dpop.normalise_url("http://example.org:99999/") is None


def test_renewing_a_bound_token_gives_a_token_bound_to_the_same_key(client, holder):
    """A renewal is no way out of the binding (RFC 9449 section 7.2's downgrade): the new token is
    of type DPoP, carries the same ``cnf.jkt``, and is refused as a bearer token."""
    import jwt

    from epochauth.models import Session
    from tests.helpers import login

    user = make_user("alice")
    login(client, "alice")
    session = Session.objects.get()
    token = mint_access_token(
        user, session_id=session.id.hex, extra_claims={"cnf": {"jkt": holder.jkt}}
    ).token
    url = "http://testserver/auth/token/renew/"
    renewed = client.post(
        "/auth/token/renew/",
        HTTP_AUTHORIZATION=f"DPoP {token}",
        HTTP_DPOP=holder.proof(token, htm="POST", htu=url),
    )
    assert renewed.status_code == 200, renewed.content
    body = renewed.json()
    assert body["token_type"] == "DPoP"
    fresh = body["access_token"]
    assert jwt.decode(fresh, options={"verify_signature": False})["cnf"] == {"jkt": holder.jkt}
    assert call(client, fresh, holder.proof(fresh)).status_code == 200
    refused(call(client, fresh, None, scheme="Bearer"), "invalid_token")
