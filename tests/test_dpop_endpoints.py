"""DPoP (RFC 9449) at our token endpoints: a login with a proof starts a session bound to its key
(section 5), whose refreshes need a proof of that key; errors of sections 5 and 8; the metadata."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from epochauth import dpop
from epochauth.client.dpop import ProofKey
from epochauth.models import Session
from tests.helpers import make_user, openid_provider
from tests.test_dpop import Holder

pytestmark = pytest.mark.django_db

TOKEN = "http://testserver/auth/token/"
REFRESH = "http://testserver/auth/token/refresh/"
RENEW = "http://testserver/auth/token/renew/"
WHOAMI = "http://testserver/auth/whoami/"


def post(client, url: str, body: dict[str, Any], proof: str | None = None, **headers: Any):
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return client.post(url, body, content_type="application/json", **headers)


def bound_login(client, key: Any, username: str = "alice") -> dict[str, Any]:
    """A login with a proof of ``key`` (the client's own ``ProofKey`` or a test ``Holder``)."""
    make_user(username)
    proof = (
        key.proof("POST", TOKEN) if isinstance(key, ProofKey) else key.proof(htm="POST", htu=TOKEN)
    )
    response = post(client, TOKEN, {"username": username, "password": "pw"}, proof)
    assert response.status_code == 200, response.content
    return response.json()


def oauth_error(response, error: str = "invalid_dpop_proof") -> str:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == error, body
    return body["error_description"]


def access_claims(body: dict[str, Any]) -> dict[str, Any]:
    import jwt

    return jwt.decode(body["access_token"], options={"verify_signature": False})


@pytest.fixture
def holder() -> Holder:
    return Holder()


def test_a_login_with_a_proof_of_our_clients_key_is_bound(client):
    key = ProofKey.generate()
    body = bound_login(client, key)
    assert body["token_type"] == "DPoP"
    assert access_claims(body)["cnf"] == {"jkt": key.thumbprint}
    assert Session.objects.get().dpop_jkt == key.thumbprint
    token = body["access_token"]
    whoami = client.get(
        WHOAMI, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=key.proof("GET", WHOAMI, token)
    )
    assert whoami.status_code == 200, whoami.content


def test_a_login_with_a_proof_of_pydpop_is_bound(client):
    import pydpop

    key = pydpop.generate_key(alg="ES256")
    make_user("alice")
    proof = pydpop.generate_proof(private_key=key, htm="POST", htu=TOKEN)
    body = post(client, TOKEN, {"username": "alice", "password": "pw"}, proof).json()
    assert body["token_type"] == "DPoP"
    assert access_claims(body)["cnf"]["jkt"] == pydpop.jwk_thumbprint(pydpop.public_jwk(key))


def test_a_login_without_a_proof_is_bearer(client):
    make_user("alice")
    body = post(client, TOKEN, {"username": "alice", "password": "pw"}).json()
    assert body["token_type"] == "Bearer" and "cnf" not in access_claims(body)
    assert Session.objects.get().dpop_jkt == ""


@pytest.mark.parametrize(
    ("change", "description"),
    [
        ({"htu": REFRESH}, "another URL"),
        ({"htm": "GET"}, "another HTTP method"),
    ],
)
def test_a_login_with_a_bad_proof_is_refused_before_the_password(
    client, holder, change, description
):
    make_user("alice")
    proof = holder.proof(**{"htm": "POST", "htu": TOKEN, **change})
    response = post(client, TOKEN, {"username": "alice", "password": "wrong"}, proof)
    assert description in oauth_error(response)
    assert not Session.objects.exists()


def test_two_proofs_are_refused(client, holder):
    make_user("alice")
    two = f"{holder.proof(htm='POST', htu=TOKEN)}, {holder.proof(htm='POST', htu=TOKEN)}"
    assert "exactly one" in oauth_error(
        post(client, TOKEN, {"username": "alice", "password": "pw"}, two)
    )


def test_a_bound_refresh_needs_a_proof_of_the_same_key(client):
    key = ProofKey.generate()
    body = bound_login(client, key)
    refresh = {"refresh_token": body["refresh_token"]}
    session = Session.objects.get()
    # Without a proof, and with another key's: refused, and nothing changed.
    assert "bound to a DPoP key" in oauth_error(post(client, REFRESH, refresh))
    other = ProofKey.generate()
    assert "bound to a DPoP key" in oauth_error(
        post(client, REFRESH, refresh, other.proof("POST", REFRESH))
    )
    after = Session.objects.get()
    assert after.revoked_at is None and after.refresh_hash == session.refresh_hash
    # With it: rotated, bound.
    rotated = post(client, REFRESH, refresh, key.proof("POST", REFRESH))
    assert rotated.status_code == 200, rotated.content
    assert rotated.json()["token_type"] == "DPoP"
    assert access_claims(rotated.json())["cnf"] == {"jkt": key.thumbprint}
    # The one refresh token a thief holds (the rotated-away one) ends nothing without the key.
    assert "bound to a DPoP key" in oauth_error(post(client, REFRESH, refresh))
    assert Session.objects.get().revoked_at is None


def test_a_bearer_session_refreshed_with_a_proof_is_bound_from_then_on(client, holder):
    make_user("alice")
    body = post(client, TOKEN, {"username": "alice", "password": "pw"}).json()
    rotated = post(
        client,
        REFRESH,
        {"refresh_token": body["refresh_token"]},
        holder.proof(htm="POST", htu=REFRESH),
    )
    assert rotated.json()["token_type"] == "DPoP"
    assert Session.objects.get().dpop_jkt == holder.jkt
    again = {"refresh_token": rotated.json()["refresh_token"]}
    assert "bound to a DPoP key" in oauth_error(post(client, REFRESH, again))


def test_renew_of_a_bound_token_stays_bound(client):
    key = ProofKey.generate()
    token = bound_login(client, key)["access_token"]
    renewed = post(
        client, RENEW, {}, key.proof("POST", RENEW, token), HTTP_AUTHORIZATION=f"DPoP {token}"
    )
    assert renewed.status_code == 200, renewed.content
    assert renewed.json()["token_type"] == "DPoP"
    assert access_claims(renewed.json())["cnf"] == {"jkt": key.thumbprint}


def test_dpop_required_refuses_a_login_and_a_refresh_without_a_proof(client, settings, holder):
    make_user("alice")
    bearer = post(client, TOKEN, {"username": "alice", "password": "pw"}).json()
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_REQUIRED": True}
    assert "exactly one" in oauth_error(
        post(client, TOKEN, {"username": "alice", "password": "pw"})
    )
    refresh = {"refresh_token": bearer["refresh_token"]}
    assert "exactly one" in oauth_error(post(client, REFRESH, refresh))
    assert Session.objects.get().revoked_at is None
    assert (
        post(
            client,
            TOKEN,
            {"username": "alice", "password": "pw"},
            holder.proof(htm="POST", htu=TOKEN),
        ).status_code
        == 200
    )


def test_nonce_round_trip_at_the_token_endpoint(client, settings, holder):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=5)}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "epochauth.dpop.NonceMiddleware"]
    make_user("alice")
    credentials = {"username": "alice", "password": "pw"}
    first = post(client, TOKEN, credentials, holder.proof(htm="POST", htu=TOKEN))
    oauth_error(first, "use_dpop_nonce")
    nonce = first["DPoP-Nonce"]
    second = post(client, TOKEN, credentials, holder.proof(htm="POST", htu=TOKEN, nonce=nonce))
    assert second.status_code == 200, second.content
    assert second["DPoP-Nonce"] == nonce


def test_a_replayed_proof_is_refused(client, holder):
    make_user("alice")
    proof = holder.proof(htm="POST", htu=TOKEN)
    assert post(client, TOKEN, {"username": "alice", "password": "pw"}, proof).status_code == 200
    assert "used before" in oauth_error(
        post(client, TOKEN, {"username": "alice", "password": "pw"}, proof)
    )


def test_thumbprints_agree():
    key = ProofKey.generate()
    assert dpop.thumbprint(key.public_jwk) == key.thumbprint


@pytest.mark.parametrize(
    "path", ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]
)
def test_metadata_advertises_the_proof_algorithms(client, settings, path):
    openid_provider(settings, DPOP_ALGORITHMS=["ES256", "EdDSA"])
    document = client.get(path).json()
    assert document["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]
