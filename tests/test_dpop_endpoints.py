"""DPoP (RFC 9449) at our token endpoints: a login with a proof starts a session bound to its key
(section 5), whose refreshes need a proof of that key; errors of sections 5 and 8; the metadata."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from oauth2_provider.models import get_application_model

from epochauth import dpop
from epochauth.client.dpop import ProofKey
from epochauth.models import Epoch, Session
from epochauth.oauth.models import DPoPBinding, DPoPPolicy, ensure_cli_application
from epochauth.revocation import bump_epoch
from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.helpers import make_user, openid_provider
from tests.loopback_issuer import CraftedIssuer
from tests.test_dpop import Holder
from tests.test_oauth import DEVICE_GRANT, REDIRECT, SECRET, approve
from tests.test_simplejwt import simplejwt_login

pytestmark = pytest.mark.django_db

TOKEN = "http://testserver/auth/token/"
REFRESH = "http://testserver/auth/token/refresh/"
RENEW = "http://testserver/auth/token/renew/"
WHOAMI = "http://testserver/auth/whoami/"
Application = get_application_model()


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
    return body.get("error_description", "")


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


# -- the OAuth server's /o/token/ ----------------------------------------------------------------

O_TOKEN = "http://testserver/o/token/"


def form(client, path: str, data: dict[str, str], proof: str | None = None, **headers: Any):
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    return client.post(
        path, urlencode(data), content_type="application/x-www-form-urlencoded", **headers
    )


def device_tokens(client, user, proof: str | None) -> Any:
    """A device login of ``epochauth-cli`` approved by ``user``, its code redeemed with ``proof``."""
    ensure_cli_application(Application)
    device = form(
        client, "/o/device-authorization/", {"client_id": "epochauth-cli", "scope": "reports:read"}
    ).json()
    approve(user, device["user_code"])
    data = {"grant_type": DEVICE_GRANT, "device_code": device["device_code"]}
    return form(client, "/o/token/", {**data, "client_id": "epochauth-cli"}, proof)


def o_refresh(client, refresh_token: str, proof: str | None = None):
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return form(client, "/o/token/", {**data, "client_id": "epochauth-cli"}, proof)


def test_device_flow_is_bound_and_so_are_the_public_clients_refresh_tokens(client, holder):
    alice = make_user("alice")
    answer = device_tokens(client, alice, holder.proof(htm="POST", htu=O_TOKEN))
    assert answer.status_code == 200, answer.content
    token = answer.json()
    assert token["token_type"] == "DPoP"
    assert access_claims(token)["cnf"] == {"jkt": holder.jkt}
    access = token["access_token"]
    whoami = client.get(
        WHOAMI,
        HTTP_AUTHORIZATION=f"DPoP {access}",
        HTTP_DPOP=holder.proof(access, htu=WHOAMI),
    )
    assert whoami.status_code == 200, whoami.content
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401
    # The refresh token: without a proof, or with another key's, refused; the family lives on.
    stolen = token["refresh_token"]
    assert "bound to a DPoP key" in oauth_error(o_refresh(client, stolen))
    other = Holder().proof(htm="POST", htu=O_TOKEN)
    assert "bound to a DPoP key" in oauth_error(o_refresh(client, stolen, other))
    rotated = o_refresh(client, stolen, holder.proof(htm="POST", htu=O_TOKEN))
    assert rotated.status_code == 200, rotated.content
    assert rotated.json()["token_type"] == "DPoP"
    assert access_claims(rotated.json())["cnf"] == {"jkt": holder.jkt}
    # The rotated-away token, replayed without the key, is refused before DOT's reuse protection.
    assert "bound to a DPoP key" in oauth_error(o_refresh(client, stolen))
    again = o_refresh(
        client, rotated.json()["refresh_token"], holder.proof(htm="POST", htu=O_TOKEN)
    )
    assert again.status_code == 200, again.content


def test_a_device_login_without_a_proof_stays_bearer(client):
    answer = device_tokens(client, make_user("alice"), None)
    assert answer.json()["token_type"] == "Bearer"
    assert not DPoPBinding.objects.exists()


def confidential(grant: str, **fields: Any) -> Any:
    owner = make_user("owner")
    return Application.objects.create(
        name="svc",
        client_id="svc",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=grant,
        user=owner,
        **fields,
    )


def test_client_credentials_bound_and_an_applications_policy(client, holder):
    app = confidential(Application.GRANT_CLIENT_CREDENTIALS)
    basic = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    data = {"grant_type": "client_credentials", "scope": "reports:read"}
    assert (
        form(client, "/o/token/", data, HTTP_AUTHORIZATION=basic).json()["token_type"] == "Bearer"
    )
    DPoPPolicy.objects.create(application=app)
    assert "exactly one" in oauth_error(form(client, "/o/token/", data, HTTP_AUTHORIZATION=basic))
    bound = form(
        client, "/o/token/", data, holder.proof(htm="POST", htu=O_TOKEN), HTTP_AUTHORIZATION=basic
    )
    assert bound.status_code == 200, bound.content
    assert bound.json()["token_type"] == "DPoP"
    assert access_claims(bound.json())["cnf"] == {"jkt": holder.jkt}


def test_a_bad_proof_at_o_token_is_refused_with_a_nonce_to_use(client, settings, holder):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=5)}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "epochauth.dpop.NonceMiddleware"]
    confidential(Application.GRANT_CLIENT_CREDENTIALS)
    basic = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    data = {"grant_type": "client_credentials"}
    first = form(
        client, "/o/token/", data, holder.proof(htm="POST", htu=O_TOKEN), HTTP_AUTHORIZATION=basic
    )
    oauth_error(first, "use_dpop_nonce")
    proof = holder.proof(htm="POST", htu=O_TOKEN, nonce=first["DPoP-Nonce"])
    second = form(client, "/o/token/", data, proof, HTTP_AUTHORIZATION=basic)
    assert second.status_code == 200, second.content
    wrong_url = holder.proof(htm="POST", htu=TOKEN, nonce=first["DPoP-Nonce"])
    assert "another URL" in oauth_error(
        form(client, "/o/token/", data, wrong_url, HTTP_AUTHORIZATION=basic)
    )


@pytest.mark.parametrize("consent", [False, True])
def test_dpop_jkt_binds_the_authorization_code(client, holder, consent):
    confidential(
        Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        skip_authorization=not consent,
    )
    browser = Client()
    browser.force_login(make_user("alice"))
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    query = {
        "response_type": "code",
        "client_id": "svc",
        "redirect_uri": REDIRECT,
        "scope": "reports:read",
        "code_challenge": challenge.decode(),
        "code_challenge_method": "S256",
        "dpop_jkt": holder.jkt,
    }
    path = "/o/authorize/?" + urlencode(query)
    response = browser.get(path)
    if consent:  # the consent form posts to the same URL, dpop_jkt and all
        assert response.status_code == 200, response.content
        fields = {k: v for k, v in response.context["form"].initial.items() if v is not None}
        response = browser.post(path, {**fields, "allow": "Authorize"})
    assert response.status_code == 302, response.content
    code = parse_qs(urlsplit(response["Location"]).query)["code"][0]
    basic = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
    }
    assert "bound to a DPoP key" in oauth_error(
        form(client, "/o/token/", data, HTTP_AUTHORIZATION=basic)
    )
    other = Holder().proof(htm="POST", htu=O_TOKEN)
    assert "bound to a DPoP key" in oauth_error(
        form(client, "/o/token/", data, other, HTTP_AUTHORIZATION=basic)
    )
    exchanged = form(
        client, "/o/token/", data, holder.proof(htm="POST", htu=O_TOKEN), HTTP_AUTHORIZATION=basic
    )
    assert exchanged.status_code == 200, exchanged.content
    assert access_claims(exchanged.json())["cnf"] == {"jkt": holder.jkt}


def test_token_exchange_bound(client, settings, holder):
    confidential(Application.GRANT_CLIENT_CREDENTIALS)  # any confidential client may exchange
    issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": issuer.issuer}]}
        basic = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
        data = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": issuer.token(sub="carol", scope="reports:read"),
            "subject_token_type": ACCESS_TOKEN_TYPE,
        }
        proof = holder.proof(htm="POST", htu=O_TOKEN)
        exchanged = form(client, "/o/token/", data, proof, HTTP_AUTHORIZATION=basic)
    finally:
        issuer.stop()
    assert exchanged.status_code == 200, exchanged.content
    assert exchanged.json()["token_type"] == "DPoP"
    assert access_claims(exchanged.json())["cnf"] == {"jkt": holder.jkt}


# -- revocation ends bound tokens as it ends bearer ones ---------------------------------------


def bound_call(client, key: ProofKey, url: str, token: str, method: str = "GET"):
    send = client.post if method == "POST" else client.get
    return send(url, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=key.proof(method, url, token))


@pytest.mark.parametrize("how", ["logout", "logout-all", "epoch", "admin"])
def test_revocation_ends_a_bound_session(client, how):
    key = ProofKey.generate()
    body = bound_login(client, key)
    token = body["access_token"]
    if how == "epoch":
        bump_epoch(Epoch.Kind.USER, str(Session.objects.get().user_id))
    elif how == "admin":  # the admin's "End the selected sessions", by a superuser's browser
        admin = Client()
        admin.force_login(
            get_user_model().objects.create_superuser("root", "root@example.test", "pw")
        )
        ended = admin.post(
            "/admin/epochauth/session/",
            {"action": "revoke_sessions", "_selected_action": [str(Session.objects.get().pk)]},
        )
        assert ended.status_code == 302, ended.content
    else:
        url = f"http://testserver/auth/{how}/"
        assert bound_call(client, key, url, token, "POST").status_code in (200, 204)
    assert bound_call(client, key, WHOAMI, token).status_code == 401
    refreshed = post(
        client, REFRESH, {"refresh_token": body["refresh_token"]}, key.proof("POST", REFRESH)
    )
    oauth_error(refreshed, "invalid_grant")


def test_an_epoch_bump_ends_a_bound_oauth_family(client, holder):
    alice = make_user("alice")
    token = device_tokens(client, alice, holder.proof(htm="POST", htu=O_TOKEN)).json()
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    refreshed = o_refresh(client, token["refresh_token"], holder.proof(htm="POST", htu=O_TOKEN))
    oauth_error(refreshed, "invalid_grant")


def test_a_simplejwt_refresh_token_exchanged_with_a_proof_starts_a_bound_session(client, holder):
    make_user("alice")
    old = simplejwt_login(client)
    body = post(
        client, REFRESH, {"refresh_token": old["refresh"]}, holder.proof(htm="POST", htu=REFRESH)
    )
    assert body.status_code == 200, body.content
    assert body.json()["token_type"] == "DPoP"
    assert Session.objects.get().dpop_jkt == holder.jkt
    again = {"refresh_token": body.json()["refresh_token"]}
    assert "bound to a DPoP key" in oauth_error(post(client, REFRESH, again))


def test_purge_forgets_the_bindings_of_families_that_are_over():
    """``epochauth_purge``: a binding goes once its family holds no refresh token and no code of it
    can still be exchanged; one with a live refresh token, or younger than a code, stays."""
    import uuid as uuid_module
    from io import StringIO

    from django.core.management import call_command
    from django.utils import timezone
    from oauth2_provider.models import get_access_token_model, get_refresh_token_model

    alice = make_user("alice")
    ensure_cli_application(Application)
    app = Application.objects.get(client_id="epochauth-cli")
    old = timezone.now() - timedelta(hours=1)
    over, kept, young = (uuid_module.uuid4() for _ in range(3))
    for family in (over, kept, young):
        DPoPBinding.objects.create(family=family, jkt="k" * 43)
    DPoPBinding.objects.filter(family__in=[over, kept]).update(created_at=old)
    access = get_access_token_model().objects.create(
        user=alice, application=app, token="a", expires=timezone.now() + timedelta(hours=1)
    )
    get_refresh_token_model().objects.create(
        user=alice, application=app, token="r", access_token=access, token_family=kept
    )
    out = StringIO()
    call_command("epochauth_purge", stdout=out)
    assert "Deleted 1 DPoP bindings of token families that are over." in out.getvalue()
    assert set(DPoPBinding.objects.values_list("family", flat=True)) == {kept, young}


@pytest.mark.parametrize("jkt", ["short", "x" * 44, "a+" * 21 + "a", ""])
def test_a_dpop_jkt_that_is_no_thumbprint_is_an_invalid_request(jkt):
    """Section 10: a code bound to a value no key has could never be redeemed; the client hears so at
    once, on its redirect URI (an empty value is no binding)."""
    confidential(
        Application.GRANT_AUTHORIZATION_CODE, redirect_uris=REDIRECT, skip_authorization=True
    )
    browser = Client()
    browser.force_login(make_user("alice"))
    query = {
        "response_type": "code",
        "client_id": "svc",
        "redirect_uri": REDIRECT,
        "scope": "reports:read",
        "code_challenge": "c" * 43,
        "code_challenge_method": "S256",
        "dpop_jkt": jkt,
    }
    response = browser.get("/o/authorize/?" + urlencode(query))
    assert response.status_code == 302, response.content
    answer = parse_qs(urlsplit(response["Location"]).query)
    if jkt:
        assert answer["error"] == ["invalid_request"] and "code" not in answer
        assert not DPoPBinding.objects.exists()
    else:
        assert "code" in answer
