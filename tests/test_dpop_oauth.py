"""DPoP (RFC 9449) at the OAuth server's own protected resources: userinfo takes a bound token with
its proof (section 7) and refuses it as Bearer (section 7.2); introspection describes the binding
(section 6.2); a registration's ``dpop_bound_access_tokens`` is the application's DPoPPolicy
(section 5.2), and authenticated registration takes a bound token with its proof."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from oauth2_provider.models import get_application_model

from epochauth.oauth.models import DPoPPolicy
from epochauth.tokens import mint_access_token
from tests.helpers import make_user, openid_provider
from tests.test_client_registration import NATIVE_APP, manage, oauth_error, register, registered
from tests.test_dpop import Holder
from tests.test_dpop_endpoints import O_TOKEN, confidential, form
from tests.test_oauth import SECRET

pytestmark = pytest.mark.django_db

USERINFO = "http://testserver/o/userinfo/"
REGISTER = "http://testserver/o/register/"
Application = get_application_model()


@pytest.fixture
def holder() -> Holder:
    return Holder()


@pytest.fixture
def alice(settings) -> Any:
    openid_provider(settings)
    user = make_user("alice")
    user.email = "alice@example.test"
    user.save()
    return user


def bound(user: Any, holder: Holder, scope: str = "openid email") -> str:
    return mint_access_token(user, scope=scope, extra_claims={"cnf": {"jkt": holder.jkt}}).token


def userinfo(token: str, proof: str | None, method: str = "GET", scheme: str = "DPoP") -> Any:
    headers = {"HTTP_AUTHORIZATION": f"{scheme} {token}"}
    if proof is not None:
        headers["HTTP_DPOP"] = proof
    client = Client(raise_request_exception=False)
    return (client.post if method == "POST" else client.get)("/o/userinfo/", **headers)


def challenge(response: Any, error: str) -> str:
    assert response.status_code == 401, response.content
    header = response["WWW-Authenticate"]
    assert f'error="{error}"' in header, header
    return header


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_userinfo_takes_a_bound_token_with_its_proof(alice, holder, method):
    token = bound(alice, holder)
    response = userinfo(token, holder.proof(token, htm=method, htu=USERINFO), method)
    assert response.status_code == 200, response.content
    assert response.json()["sub"] == str(alice.pk)
    assert response.json()["email"] == "alice@example.test"


def test_userinfo_refuses_a_bound_token_sent_as_bearer(alice, holder):
    response = userinfo(bound(alice, holder), None, scheme="Bearer")
    header = challenge(response, "invalid_token")
    assert "must be sent with a DPoP proof" in header
    assert response.json()["error"] == "invalid_token"


def test_userinfo_refuses_every_bearer_token_when_the_site_requires_dpop(alice, holder, settings):
    """``DPOP_REQUIRED``: the site takes no bearer tokens, at userinfo as at the API."""
    token = mint_access_token(alice, scope="openid email").token
    assert userinfo(token, None, scheme="Bearer").status_code == 200
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_REQUIRED": True}
    assert "DPoP" in challenge(userinfo(token, None, scheme="Bearer"), "invalid_token")
    bound_token = bound(alice, holder)
    good = userinfo(bound_token, holder.proof(bound_token, htm="GET", htu=USERINFO))
    assert good.status_code == 200, good.content


@pytest.mark.parametrize(
    "case", ["missing", "other key", "other url", "other method", "other token", "replayed"]
)
def test_userinfo_refuses_a_bad_proof(alice, holder, case):
    token = bound(alice, holder)
    proof = {
        "missing": None,
        "other key": Holder().proof(token, htu=USERINFO),
        "other url": holder.proof(token, htu="http://testserver/o/introspect/"),
        "other method": holder.proof(token, htm="POST", htu=USERINFO),
        "other token": holder.proof(bound(alice, holder), htu=USERINFO),
        "replayed": holder.proof(token, htu=USERINFO),
    }[case]
    if case == "replayed":
        assert userinfo(token, proof).status_code == 200
    response = userinfo(token, proof)
    assert challenge(response, "invalid_dpop_proof").startswith('DPoP algs="')
    assert response.json()["error"] == "invalid_dpop_proof"


def test_userinfo_refuses_a_bearer_token_sent_as_dpop(alice, holder):
    token = mint_access_token(alice, scope="openid").token
    header = challenge(userinfo(token, holder.proof(token, htu=USERINFO)), "invalid_token")
    assert header.startswith("DPoP")


def test_userinfo_wants_openid_of_a_bound_token_too(alice, holder):
    """The scope is checked once the token and proof passed: a 403, with the DPoP challenge."""
    token = bound(alice, holder, scope="reports:read")
    response = userinfo(token, holder.proof(token, htu=USERINFO))
    assert response.status_code == 403, response.content
    assert response["WWW-Authenticate"].startswith("DPoP")
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


def test_userinfo_with_a_nonce_required_says_use_dpop_nonce(alice, holder, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DPOP_NONCE": timedelta(minutes=5)}
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "epochauth.dpop.NonceMiddleware"]
    token = bound(alice, holder)
    response = userinfo(token, holder.proof(token, htu=USERINFO))
    challenge(response, "use_dpop_nonce")
    nonce = response["DPoP-Nonce"]
    again = userinfo(token, holder.proof(token, htu=USERINFO, nonce=nonce))
    assert again.status_code == 200, again.content


# -- introspection ------------------------------------------------------------------------------


def introspect(client, token: str) -> dict[str, Any]:
    response = form(
        client, "/o/introspect/", {"token": token, "client_id": "svc", "client_secret": SECRET}
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_introspection_describes_the_binding(client, holder):
    confidential("client-credentials")
    basic = "Basic " + base64.b64encode(f"svc:{SECRET}".encode()).decode()
    data = {"grant_type": "client_credentials", "scope": "reports:read"}
    bearer = form(client, "/o/token/", data, HTTP_AUTHORIZATION=basic).json()["access_token"]
    proof = holder.proof(htm="POST", htu=O_TOKEN)
    dpop_bound = form(client, "/o/token/", data, proof, HTTP_AUTHORIZATION=basic).json()
    described = introspect(client, dpop_bound["access_token"])
    assert described["active"] is True
    assert described["cnf"] == {"jkt": holder.jkt}
    assert described["token_type"] == "DPoP"
    plain = introspect(client, bearer)
    assert plain["active"] is True
    assert "cnf" not in plain
    assert plain["token_type"] == "Bearer"


# -- dynamic registration (RFC 9449 section 5.2) ------------------------------------------------


def test_registration_maps_dpop_bound_access_tokens_to_the_policy(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "open"}
    plain = registered()
    assert "dpop_bound_access_tokens" not in plain
    assert not DPoPPolicy.objects.exists()
    answer = registered({**NATIVE_APP, "dpop_bound_access_tokens": True})
    client_id, token = answer["client_id"], answer["registration_access_token"]
    assert answer["dpop_bound_access_tokens"] is True
    assert DPoPPolicy.objects.get(application__client_id=client_id).required
    assert manage("GET", client_id, token).json()["dpop_bound_access_tokens"] is True
    # RFC 7592 section 2.2: an update replaces every field; left out, the default (false).
    updated = manage("PUT", client_id, token, {**NATIVE_APP, "client_id": client_id})
    assert "dpop_bound_access_tokens" not in updated.json()
    assert not DPoPPolicy.objects.filter(application__client_id=client_id).exists()


def test_registration_refuses_a_dpop_bound_access_tokens_that_is_no_boolean(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "open"}
    response = register({**NATIVE_APP, "dpop_bound_access_tokens": "yes"})
    assert "dpop_bound_access_tokens" in oauth_error(response, 400, "invalid_client_metadata")


def test_authenticated_registration_takes_a_bound_token_with_its_proof(settings, holder):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CLIENT_REGISTRATION": "authenticated"}
    alice = make_user("alice")
    token = bound(alice, holder, scope="")
    as_bearer = register(NATIVE_APP, HTTP_AUTHORIZATION=f"Bearer {token}")
    oauth_error(as_bearer, 401, "invalid_token")
    wrong = Holder().proof(token, htm="POST", htu=REGISTER)
    refused = register(NATIVE_APP, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=wrong)
    oauth_error(refused, 401, "invalid_dpop_proof")
    assert refused["WWW-Authenticate"].startswith('DPoP algs="')
    proof = holder.proof(token, htm="POST", htu=REGISTER)
    answer = register(NATIVE_APP, HTTP_AUTHORIZATION=f"DPoP {token}", HTTP_DPOP=proof)
    assert answer.status_code == 201, answer.content
    assert Application.objects.get(client_id=answer.json()["client_id"]).user == alice


def test_registration_refuses_a_bearer_token_when_the_site_requires_dpop(settings, alice):
    """``authenticate_token``, the check of every reader of bearer tokens outside DRF, refuses them
    all with ``DPOP_REQUIRED``: registration in ``"authenticated"`` mode here."""
    from epochauth.authentication import authenticate_token
    from epochauth.exceptions import ProofRequired

    token = mint_access_token(alice, scope="openid").token
    assert authenticate_token(token)[0] == alice
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "DPOP_REQUIRED": True,
        "CLIENT_REGISTRATION": "authenticated",
    }
    with pytest.raises(ProofRequired):
        authenticate_token(token)
    response = Client().post(
        "/o/register/",
        json.dumps(
            {"client_name": "x", "grant_types": ["urn:ietf:params:oauth:grant-type:device_code"]}
        ),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 401, response.content
