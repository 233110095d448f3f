"""The client's DPoP (RFC 9449): proofs checked by PyJWT and by joserfc, the key kept with the login, proofs
at the token endpoint and on every request of ``BearerAuth``, ``use_dpop_nonce`` retried once."""

import json
import stat
from pathlib import Path

import jwt
import pytest
import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import JWKRegistry

from epochauth.client import BearerAuth, DPoPAuth, ProofKey
from epochauth.client import oauth as client_oauth
from epochauth.client.cli import jwt_claims
from epochauth.client.dpop import Signer, access_token_hash, chosen_algorithm, thumbprint
from epochauth.client.errors import InvalidToken, ServerError
from epochauth.client.store import Session, SessionInfo
from tests.conftest import start_idp
from tests.helpers import FakeServer
from tests.idp import TestIdP
from tests.test_client_cli import SCOPE, device_login, fake_jwt, run_cli, token_path

NONCE_CHALLENGE = 'DPoP error="use_dpop_nonce", error_description="Resource server requires nonce"'


def verify(proof: str, method: str, url: str, token: str | None = None) -> tuple[dict, dict]:
    """A proof checked as a server checks it (RFC 9449 §4.3), with the key its header carries."""
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt"
    assert header["alg"] in ("ES256", "EdDSA")
    assert set(header["jwk"]) <= {"kty", "crv", "x", "y"}  # public members only
    claims = jwt.decode(proof, jwt.PyJWK(header["jwk"]).key, algorithms=[header["alg"]])
    assert claims["htm"] == method and claims["htu"] == url
    assert isinstance(claims["iat"], int) and len(jwt.utils.base64url_decode(claims["jti"])) >= 16
    if token is None:
        assert "ath" not in claims
    else:
        assert claims["ath"] == access_token_hash(token)
    return header, claims


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ------------------------------------------------------------------------------ proofs


@pytest.mark.parametrize(("algorithm", "kty"), [("ES256", "EC"), ("EdDSA", "OKP")])
def test_a_proof_is_a_dpop_jwt_signed_by_the_key_in_its_header(algorithm, kty):
    key = ProofKey.generate(algorithm)
    proof = key.proof("post", "https://as.example/token?x=1#frag", "the-token", nonce="n-1")
    header, claims = verify(proof, "POST", "https://as.example/token", "the-token")
    assert header["alg"] == algorithm and header["jwk"] == key.public_jwk
    assert header["jwk"]["kty"] == kty and "d" not in header["jwk"]
    assert claims["nonce"] == "n-1"
    assert set(claims) == {"jti", "htm", "htu", "iat", "ath", "nonce"}
    # RFC 9449 §4.2 example: ath of "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"
    assert (
        access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU")
        == "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo"
    )


def test_each_proof_has_its_own_jti_and_no_nonce_unless_given():
    key = ProofKey.generate()
    claims = [verify(key.proof("GET", "https://rs.example/a"), "GET", "https://rs.example/a")[1]]
    claims.append(
        verify(key.proof("GET", "https://rs.example/a"), "GET", "https://rs.example/a")[1]
    )
    assert claims[0]["jti"] != claims[1]["jti"]
    assert all("nonce" not in c for c in claims)


# RFC 9864 prefers "Ed25519" to "EdDSA"; servers' dpop_signing_alg_values_supported still name EdDSA.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
def test_proofs_verify_with_joserfc(algorithm):
    """An independent JOSE implementation reads our proofs and computes the same thumbprint."""
    key = ProofKey.generate(algorithm)
    proof = key.proof("GET", "https://rs.example/data", "tok")
    public = JWKRegistry.import_key(jwt.get_unverified_header(proof)["jwk"])
    decoded = jose_jwt.decode(proof, public, algorithms=[algorithm])
    assert decoded.header["typ"] == "dpop+jwt"
    assert decoded.claims["htu"] == "https://rs.example/data"
    assert decoded.claims["ath"] == access_token_hash("tok")
    assert public.thumbprint() == key.thumbprint


def test_thumbprints_of_the_rfcs_examples():
    rfc7638 = {  # RFC 7638 §3.1
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY36"
        "8QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lF"
        "d2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(rfc7638) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    rfc9449 = {  # RFC 9449 §4.1's proof key, whose jkt §6.1 shows in the token's cnf
        "kty": "EC",
        "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
        "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA",
        "crv": "P-256",
    }
    assert thumbprint(rfc9449) == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


def test_the_key_survives_its_pem_and_a_bad_key_file_is_a_readable_error():
    key = ProofKey.generate()
    pem = key.to_pem()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    again = ProofKey.from_pem(pem)
    assert again.thumbprint == key.thumbprint and again.algorithm == "ES256"
    verify(again.proof("GET", "https://rs.example/"), "GET", "https://rs.example/")
    with pytest.raises(InvalidToken, match="key.pem is not a usable private key"):
        ProofKey.from_pem("nonsense", "key.pem")


def test_the_algorithm_is_ours_and_the_servers():
    assert chosen_algorithm({}) is None
    assert chosen_algorithm({"dpop_signing_alg_values_supported": ["RS256"]}) is None
    assert chosen_algorithm({"dpop_signing_alg_values_supported": ["EdDSA", "ES256"]}) == "ES256"
    assert chosen_algorithm({"dpop_signing_alg_values_supported": ["EdDSA"]}) == "EdDSA"


# ------------------------------------------------------------------------------ a scripted server


def dpop_server(server: FakeServer, *, token_type: str = "DPoP") -> list[str]:
    """Make ``server`` an authorization server that binds tokens and wants nonce ``as-1`` in proofs;
    returns the list of access tokens it issues, newest last."""
    issued: list[str] = []
    server.routes["/.well-known/oauth-authorization-server"] = lambda form: (
        200,
        {**server.metadata(), "dpop_signing_alg_values_supported": ["ES256"]},
        {},
    )
    server.routes["/device"] = lambda form: (
        200,
        {
            "device_code": "dc",
            "user_code": "UC-1",
            "verification_uri": f"{server.url}/activate",
            "expires_in": 60,
            "interval": 1,
        },
        {},
    )

    def token(form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        proof = server.requests[-1][2].get("DPoP")
        if proof is None:
            body = {"access_token": fake_jwt(sub="ann"), "token_type": "Bearer"}
            issued.append(body["access_token"])
            return 200, {**body, "refresh_token": "rt"}, {}
        header, claims = verify(proof, "POST", f"{server.url}/token")
        if claims.get("nonce") != "as-1":
            return 400, {"error": "use_dpop_nonce"}, {"DPoP-Nonce": "as-1"}
        access = fake_jwt(sub="ann", n=len(issued), cnf={"jkt": thumbprint(header["jwk"])})
        issued.append(access)
        return 200, {"access_token": access, "token_type": token_type, "refresh_token": "rt"}, {}

    server.routes["/token"] = token
    return issued


def posts(server: FakeServer, path: str) -> list[dict[str, str]]:
    return [headers for p, form, headers in server.requests if p == path]


# ------------------------------------------------------------------------------ the CLI


def test_login_gets_a_bound_token_keeps_its_key_0600_and_logout_removes_it(cli_env, fake_server):
    issued = dpop_server(fake_server)
    login = run_cli(cli_env, "login", fake_server.url, "--no-browser")
    assert login.returncode == 0, login.stderr

    # The first poll is refused for want of a nonce, the second carries it: both signed by one key.
    token_posts = posts(fake_server, "/token")
    assert len(token_posts) == 2
    first = verify(token_posts[0]["DPoP"], "POST", f"{fake_server.url}/token")
    second = verify(token_posts[1]["DPoP"], "POST", f"{fake_server.url}/token")
    assert "nonce" not in first[1] and second[1]["nonce"] == "as-1"
    jkt = thumbprint(second[0]["jwk"])
    assert thumbprint(first[0]["jwk"]) == jkt
    assert (
        f"The token is DPoP-bound to a key stored with the login (thumbprint {jkt})"
        in login.stdout
    )

    session = Session(token_path(cli_env), cli_env)
    assert token_path(cli_env).read_text().strip() == issued[-1]
    assert mode(session.key_path) == 0o600
    assert ProofKey.from_pem(session.key_path.read_text()).thumbprint == jkt
    assert json.loads(session.info_path.read_text())["token_type"] == "DPoP"
    assert "PRIVATE KEY" not in session.info_path.read_text()
    assert not (Path(cli_env["HOME"]) / ".config").exists()

    shown = run_cli(cli_env, "token")
    assert shown.returncode == 0, shown.stderr
    assert f"binding:   DPoP-bound (key thumbprint {jkt}, sent with a proof per request)" in (
        shown.stdout
    )

    # whoami sends the token as DPoP with a proof of that request.
    fake_server.routes["/auth/whoami/"] = lambda form: (200, {"subject": "ann"}, {})
    whoami = run_cli(cli_env, "whoami")
    assert whoami.returncode == 0, whoami.stderr
    headers = posts(fake_server, "/auth/whoami/")[-1]
    assert headers["Authorization"] == f"DPoP {issued[-1]}"
    verify(headers["DPoP"], "GET", f"{fake_server.url}/auth/whoami/", issued[-1])

    # A refresh is signed by the same key, and the new token is still bound.
    refreshed = run_cli(cli_env, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    header, claims = verify(
        posts(fake_server, "/token")[-1]["DPoP"], "POST", f"{fake_server.url}/token"
    )
    assert thumbprint(header["jwk"]) == jkt and claims["nonce"] == "as-1"
    assert json.loads(session.info_path.read_text())["token_type"] == "DPoP"

    fake_server.routes["/revoke"] = lambda form: (200, {}, {})
    logout = run_cli(cli_env, "logout")
    assert logout.returncode == 0, logout.stderr
    assert str(session.key_path) in logout.stdout
    assert not session.key_path.exists() and not token_path(cli_env).exists()


def test_login_with_no_dpop_asks_for_a_bearer_token(cli_env, fake_server):
    dpop_server(fake_server)
    login = run_cli(cli_env, "login", fake_server.url, "--no-browser", "--no-dpop")
    assert login.returncode == 0, login.stderr
    assert all("DPoP" not in headers for headers in posts(fake_server, "/token"))
    session = Session(token_path(cli_env), cli_env)
    assert not session.key_path.exists()
    assert json.loads(session.info_path.read_text())["token_type"] == "Bearer"
    assert "binding:   bearer (not bound to a key)" in run_cli(cli_env, "token").stdout


def test_a_server_that_answers_bearer_to_a_proof_gets_no_key_stored(cli_env, fake_server):
    dpop_server(fake_server, token_type="Bearer")
    login = run_cli(cli_env, "login", fake_server.url, "--no-browser")
    assert login.returncode == 0, login.stderr
    assert "the server advertises DPoP but issued a bearer token" in login.stderr
    assert not Session(token_path(cli_env), cli_env).key_path.exists()


def test_a_bound_token_whose_key_is_gone_is_a_readable_error(cli_env, fake_server):
    dpop_server(fake_server)
    assert run_cli(cli_env, "login", fake_server.url, "--no-browser").returncode == 0
    Session(token_path(cli_env), cli_env).key_path.unlink()
    shown = run_cli(cli_env, "whoami")
    assert shown.returncode == 5
    assert "is DPoP-bound but its key" in shown.stderr and "run 'epochauth login'" in shown.stderr


# ------------------------------------------------------------------------------ the token endpoint


def test_a_nonce_is_retried_once_only(fake_server):
    """A server that asks for a new nonce every time gets two requests, then its error is reported."""
    answers = iter(range(10))
    fake_server.routes["/token"] = lambda form: (
        400,
        {"error": "use_dpop_nonce"},
        {"DPoP-Nonce": f"n-{next(answers)}"},
    )
    signer = Signer(ProofKey.generate())
    with pytest.raises(ServerError, match="refresh failed: use_dpop_nonce"):
        client_oauth.refresh(
            f"{fake_server.url}/token",
            client_oauth.Client("cli"),
            requests.Session(),
            "rt",
            signer,
        )
    assert len(fake_server.requests) == 2
    assert signer.nonces == {fake_server.url: "n-1"}  # the latest, for the next request


# ------------------------------------------------------------------------------ BearerAuth / DPoPAuth


@pytest.fixture
def bound_login(tmp_path, monkeypatch, fake_server) -> tuple[Path, ProofKey, list[str]]:
    """A stored login at ``fake_server`` whose token is bound to a stored key."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    issued = dpop_server(fake_server)
    key = ProofKey.generate()
    token_file = tmp_path / "token"
    info = SessionInfo(
        fake_server.url,
        fake_server.url,
        f"{fake_server.url}/token",
        None,
        "cli",
        str(token_file),
        token_type="DPoP",
    )
    issued.append(fake_jwt(sub="ann", cnf={"jkt": key.thumbprint}))
    Session(token_file).save(issued[-1], "rt", info, key)
    return token_file, key, issued


def resource(server: FakeServer, nonce: str = "rs-1") -> None:
    """``/api`` of a resource server that wants ``nonce`` in proofs and accepts the newest token."""

    def api(form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        headers = server.requests[-1][2]
        scheme, _, token = headers.get("Authorization", "").partition(" ")
        if scheme != "DPoP" or "DPoP" not in headers:
            return 401, {}, {"WWW-Authenticate": 'DPoP error="invalid_token"'}
        claims = verify(headers["DPoP"], "GET", f"{server.url}/api", token)[1]
        if claims.get("nonce") != nonce:
            return 401, {}, {"WWW-Authenticate": NONCE_CHALLENGE, "DPoP-Nonce": nonce}
        if token != server.valid_token:  # type: ignore[attr-defined]
            return 401, {}, {"WWW-Authenticate": 'DPoP error="invalid_token"'}
        return 200, {"ok": True}, {}

    server.routes["/api"] = api


def test_bearer_auth_sends_a_bound_token_with_a_proof_and_retries_for_a_nonce(
    fake_server, bound_login
):
    token_file, key, issued = bound_login
    fake_server.valid_token = issued[-1]
    resource(fake_server)
    auth = BearerAuth(token_file=token_file)
    response = requests.get(f"{fake_server.url}/api?page=2", auth=auth, timeout=10)
    assert response.status_code == 200, response.headers
    assert [r.status_code for r in response.history] == [401]
    assert response.request.headers["Authorization"] == f"DPoP {issued[-1]}"
    header, claims = verify(
        response.request.headers["DPoP"], "GET", f"{fake_server.url}/api", issued[-1]
    )
    assert header["jwk"] == key.public_jwk and claims["nonce"] == "rs-1"

    # The nonce is remembered: the next request needs no retry.
    before = len(fake_server.requests)
    assert requests.get(f"{fake_server.url}/api", auth=auth, timeout=10).history == []
    assert len(fake_server.requests) == before + 1


def test_a_bound_token_refused_as_invalid_is_refreshed_with_a_proof(fake_server, bound_login):
    token_file, key, issued = bound_login
    fake_server.valid_token = "a token issued later"
    resource(fake_server)

    def token(form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        status, body, headers = refresh(form)
        fake_server.valid_token = body.get("access_token", fake_server.valid_token)
        return status, body, headers

    refresh = fake_server.routes["/token"]
    fake_server.routes["/token"] = token
    response = requests.get(
        f"{fake_server.url}/api", auth=DPoPAuth(token_file=token_file), timeout=10
    )
    assert response.status_code == 200
    # nonce at the resource, invalid_token, then the nonce again: the token endpoint on the same origin
    # set its own nonce during the refresh
    assert [r.status_code for r in response.history] == [401, 401, 401]
    new = token_file.read_text().strip()
    assert new == issued[-1] == fake_server.valid_token
    assert response.request.headers["Authorization"] == f"DPoP {new}"
    verify(response.request.headers["DPoP"], "GET", f"{fake_server.url}/api", new)
    refresh_proof = posts(fake_server, "/token")[-1]["DPoP"]
    assert thumbprint(verify(refresh_proof, "POST", f"{fake_server.url}/token")[0]["jwk"]) == (
        key.thumbprint
    )


def test_an_explicit_token_with_its_key(fake_server):
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    key = ProofKey.generate("EdDSA")
    requests.get(f"{fake_server.url}/api", auth=DPoPAuth("abc.def", key=key), timeout=5)
    headers = fake_server.requests[-1][2]
    assert headers["Authorization"] == "DPoP abc.def"
    verify(headers["DPoP"], "GET", f"{fake_server.url}/api", "abc.def")
    with pytest.raises(ValueError, match="key binds an explicit token"):
        BearerAuth(key=key)


def test_an_unbound_stored_token_is_still_sent_as_bearer(fake_server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    token_file = tmp_path / "token"
    info = SessionInfo(fake_server.url, fake_server.url, "t", None, "cli", str(token_file))
    Session(token_file).save("abc.def", "rt", info)
    requests.get(f"{fake_server.url}/api", auth=DPoPAuth(token_file=token_file), timeout=5)
    headers = fake_server.requests[-1][2]
    assert headers["Authorization"] == "Bearer abc.def" and "DPoP" not in headers


# ------------------------------------------------------------------------------ a real authorization server


@pytest.fixture(scope="module")
def nonce_idp():
    """The test IdP (oidc-provider) binding tokens to DPoP keys and requiring its nonce in every proof."""
    provider = start_idp(env={"IDP_DPOP": "nonce"})
    yield provider
    provider.stop()


def test_the_test_idp_binds_our_login_and_takes_our_proofs(nonce_idp, cli_env, monkeypatch):
    """oidc-provider checks our proofs (and wants its nonce in each): at the token endpoint for the
    device flow and the refresh, at userinfo for the token; its cnf.jkt is our thumbprint."""
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}
    client = ("--client-id", "test-client", "--no-browser")
    login = device_login(env, nonce_idp.issuer, *client, "--scope", SCOPE)
    assert login.returncode == 0, login.stderr
    session = Session(token_path(env), env)
    key = ProofKey.from_pem(session.key_path.read_text())
    access = token_path(env).read_text().strip()
    assert jwt_claims(access)["cnf"] == {"jkt": key.thumbprint}  # the resource's JWT
    refreshed = run_cli(env, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    new = token_path(env).read_text().strip()
    assert new != access and jwt_claims(new)["cnf"] == {"jkt": key.thumbprint}

    # A token for userinfo (OpenID scopes only): the provider takes it with our proof, never as bearer.
    login = device_login(env, nonce_idp.issuer, *client, "--purpose", "oidc", "--scope", "openid")
    assert login.returncode == 0, login.stderr
    assert "The token is DPoP-bound" in login.stdout
    for name in ("HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.setenv(name, env[name])
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    userinfo = nonce_idp.metadata["userinfo_endpoint"]
    auth = BearerAuth(purpose="oidc")
    response = requests.get(userinfo, auth=auth, timeout=10)
    assert response.status_code == 200, response.headers
    assert response.json()["sub"] == "alice"
    assert [r.status_code for r in response.history] == [401]  # its nonce first
    assert requests.get(userinfo, auth=auth, timeout=10).history == []  # then remembered
    token = token_path(env, "oidc").read_text().strip()
    as_bearer = requests.get(userinfo, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert as_bearer.status_code == 401
