"""The test OpenID provider (tests/idp) works: real discovery, JWKS, RFC 9068 JWT access tokens."""

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from urllib.parse import parse_qs, urljoin, urlparse

import jwt
import pytest
import requests

from tests.conftest import start_idp
from tests.idp import DEFAULT_RESOURCE, IdPError, TestIdP, parse_forms


@pytest.fixture(params=["RS256", "ES256"])
def any_idp(request):
    return request.getfixturevalue("idp" if request.param == "RS256" else "es_idp"), request.param


def verify(provider: TestIdP, token: str, audience: str = DEFAULT_RESOURCE) -> dict:
    """Verify ``token`` like a resource server would: kid -> key from the served JWKS."""
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(provider.jwks())[header["kid"]]
    return jwt.decode(
        token,
        key=key,
        algorithms=[header["alg"]],
        audience=audience,
        issuer=provider.issuer,
        options={"require": ["iss", "sub", "aud", "exp", "iat", "jti"]},
    )


def test_discovery_issuer_is_the_configured_issuer(idp):
    metadata = requests.get(f"{idp.issuer}/.well-known/openid-configuration", timeout=5).json()
    assert metadata["issuer"] == idp.issuer
    assert idp.issuer.startswith("http://127.0.0.1:")
    assert metadata["jwks_uri"] == f"{idp.issuer}/jwks"
    assert "client_credentials" in metadata["grant_types_supported"]
    assert "urn:ietf:params:oauth:grant-type:device_code" in metadata["grant_types_supported"]


def test_client_credentials_token_is_an_rfc9068_jwt(any_idp):
    provider, alg = any_idp
    token = provider.client_credentials_token(scope="servicex reports:read")

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == alg
    jwks = provider.jwks()
    assert header["kid"] in {k["kid"] for k in jwks["keys"]}
    assert {k["alg"] for k in jwks["keys"]} >= {"RS256", "ES256"}
    assert all("d" not in k for k in jwks["keys"])  # public keys only

    claims = verify(provider, token)
    assert claims["iss"] == provider.issuer
    assert claims["aud"] == DEFAULT_RESOURCE
    assert claims["sub"] == claims["client_id"] == "test-client"
    assert claims["scope"] == "servicex reports:read"
    assert 0 < claims["exp"] - time.time() <= 600


def test_scope_is_narrowed_and_resource_becomes_audience(idp):
    token = idp.client_credentials_token(
        scope="reports:read bogus", resource="https://other.example.test"
    )
    claims = verify(idp, token, audience="https://other.example.test")
    assert claims["scope"] == "reports:read"


def test_wrong_client_secret_is_rejected(idp):
    response = requests.post(
        idp.token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=("test-client", "nope"),
        timeout=5,
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_user_token_has_the_username_as_sub(idp):
    body = idp.user_token_response("alice")
    claims = verify(idp, body["access_token"])
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "test-client"
    assert set(claims["scope"].split()) == {"openid", "profile", "servicex", "reports:read"}
    id_token = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_token["sub"] == "alice" and id_token["aud"] == "test-client"
    assert verify(idp, idp.user_token("bob"))["sub"] == "bob"


def test_web_client_authorization_code_with_pkce(idp):
    """web-client + devInteractions login/consent pages, driven over plain HTTP (no browser)."""
    redirect_uri = (
        "http://127.0.0.1:8000/oidc/callback/"  # server.js default for IDP_REDIRECT_URIS
    )
    verifier = secrets.token_urlsafe(32)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    browser = requests.Session()
    response = browser.get(
        idp.metadata["authorization_endpoint"],
        params={
            "client_id": "web-client",
            "response_type": "code",
            "redirect_uri": redirect_uri,
            "scope": "openid profile reports:read",
            "state": "s1",
            "nonce": "n1",
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        },
        timeout=5,
    )
    for _ in range(10):  # login form, consent form, then a redirect to the client
        if response.is_redirect:
            location = urljoin(response.url, response.headers["location"])
            if location.startswith(redirect_uri):
                break
            response = browser.get(location, allow_redirects=False, timeout=5)
            continue
        form = parse_forms(response.text)[0]
        fields = {**form["fields"], "login": "carol", "password": "x"}
        response = browser.post(
            urljoin(response.url, form["action"]), data=fields, allow_redirects=False, timeout=5
        )
    query = parse_qs(urlparse(location).query)
    assert query["state"] == ["s1"] and query["iss"] == [idp.issuer]

    body = idp.token_response(
        {
            "grant_type": "authorization_code",
            "code": query["code"][0],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
        auth=("web-client", "web-secret"),
    )
    claims = verify(idp, body["access_token"])
    assert claims["sub"] == "carol" and claims["client_id"] == "web-client"
    assert jwt.decode(body["id_token"], options={"verify_signature": False})["nonce"] == "n1"


def test_stats_count_discovery_and_jwks_requests(idp, idp_stats_reset):
    assert idp.stats()["total"] == 0
    requests.get(idp.discovery_url, timeout=5)
    requests.get(idp.discovery_url, timeout=5)
    idp.jwks()
    stats = idp.stats()
    assert (stats["discovery"], stats["jwks"]) == (2, 1)
    assert stats["requests"]["/.well-known/openid-configuration"] == 2
    assert idp.reset_stats()["total"] == 0


def test_rotation_changes_the_kid(es_idp):
    old_token = es_idp.client_credentials_token()
    old_kid = jwt.get_unverified_header(old_token)["kid"]

    result = es_idp.rotate()
    new_token = es_idp.client_credentials_token()
    new_kid = jwt.get_unverified_header(new_token)["kid"]
    assert new_kid != old_kid and new_kid == result["signing"]["ES256"]
    assert {old_kid, new_kid} <= {k["kid"] for k in es_idp.jwks()["keys"]}
    assert verify(es_idp, old_token)["sub"] == verify(es_idp, new_token)["sub"] == "test-client"
    assert requests.get(es_idp.discovery_url, timeout=5).json()["issuer"] == es_idp.issuer

    result = es_idp.rotate(drop_old=True)
    kids = {k["kid"] for k in es_idp.jwks()["keys"]}
    assert old_kid not in kids and new_kid not in kids and len(kids) == 2  # one RS256 + one ES256
    newest = es_idp.client_credentials_token()
    assert jwt.get_unverified_header(newest)["kid"] == result["signing"]["ES256"]
    verify(es_idp, newest)
    with pytest.raises(KeyError):
        verify(es_idp, old_token)
    assert verify(es_idp, es_idp.user_token("dave"))["sub"] == "dave"  # interactions still work


def test_down_makes_discovery_and_jwks_answer_503(es_idp):
    try:
        es_idp.down()
        assert requests.get(es_idp.discovery_url, timeout=5).status_code == 503
        assert requests.get(es_idp.jwks_uri, timeout=5).status_code == 503
        assert es_idp.client_credentials_token()  # the token endpoint still works
        es_idp.up()
        assert requests.get(es_idp.discovery_url, timeout=5).status_code == 200

        es_idp.down(targets="jwks")
        assert requests.get(es_idp.discovery_url, timeout=5).status_code == 200
        assert requests.get(es_idp.jwks_uri, timeout=5).status_code == 503

        es_idp.down(seconds=0.3)
        assert requests.get(es_idp.discovery_url, timeout=5).status_code == 503
        time.sleep(0.5)
        assert requests.get(es_idp.discovery_url, timeout=5).status_code == 200
    finally:
        es_idp.up()


def test_issuer_with_path_and_persistent_keys(tmp_path):
    provider = start_idp(issuer="http://127.0.0.1:{port}/realms/test", keys_dir=tmp_path)
    try:
        assert provider.issuer.endswith("/realms/test")
        assert provider.metadata["issuer"] == provider.issuer
        assert provider.token_endpoint == f"{provider.issuer}/token"
        claims = verify(provider, provider.client_credentials_token())
        assert claims["iss"] == provider.issuer
        kids = {k["kid"] for k in provider.jwks()["keys"]}
    finally:
        provider.stop()
    with TestIdP().start(keys_dir=tmp_path) as again:  # same keys directory: same keys
        assert {k["kid"] for k in again.jwks()["keys"]} == kids


# -- starting it: only a missing node or npm may skip, and only outside CI -----------------------


def raised(call: Callable[[], object]) -> BaseException:
    """What ``call`` raised, a skip included: under ``pytest.raises(IdPError)`` a skip would skip the test."""
    with pytest.raises(BaseException) as info:
        call()
    return info.value


def test_without_node_a_test_is_skipped_locally_and_fails_in_ci(ci, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    outcome = raised(start_idp)
    assert isinstance(outcome, pytest.fail.Exception if ci else pytest.skip.Exception), repr(
        outcome
    )
    assert "node is not on PATH" in str(outcome)


def test_a_server_that_exits_fails_the_test_with_its_stderr(ci, idp):
    """``idp``: node and the npm install are here (without them this test skips like the others)."""
    outcome = raised(
        lambda: start_idp(env={"IDP_ACCESS_TOKEN_ALG": "HS256"})
    )  # server.js exits with 2
    assert isinstance(outcome, IdPError), repr(outcome)
    assert "exited with 2 before it was ready" in str(outcome)
    assert "IDP_ACCESS_TOKEN_ALG must be one of RS256, ES256, got HS256" in str(
        outcome
    )  # its stderr


def test_a_server_that_is_never_ready_fails_the_test(ci, idp, tmp_path):
    """A slow start fails too, never skips (after a second try); this server never prints READY."""
    (tmp_path / "node_modules" / "oidc-provider").mkdir(parents=True)
    (tmp_path / "node_modules" / "oidc-provider" / "package.json").write_text("{}")
    (tmp_path / "server.js").write_text("setInterval(() => {}, 1000);\n")
    provider = TestIdP(tmp_path)
    outcome = raised(lambda: start_idp(provider, timeout=0.5))
    assert isinstance(outcome, IdPError), repr(outcome)
    assert "still running but not ready within 0.5 s (2 tries: pid " in str(outcome)
    assert not provider.running  # stopped, not left behind
