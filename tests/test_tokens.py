"""Minting and verifying our access tokens: claims, header, audience, the verified-token memo."""

from __future__ import annotations

import time
from datetime import timedelta

import jwt
import pytest
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator
from django.contrib.auth.models import Group
from joserfc.jwk import KeySet

from epochauth import authentication, tokens
from epochauth.authentication import authenticate_token, verify_token
from epochauth.exceptions import InvalidToken
from epochauth.keys import generate_private_key_pem, get_keyring
from epochauth.models import Epoch
from epochauth.revocation import bump_epoch, revoke_id
from epochauth.tokens import mint_access_token, scope_string, verified_tokens
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
SECRET = "dev-only-epochauth-signing-key-change-me-0123456789abcdef"


def unverified(token: str) -> tuple[dict, dict]:
    return jwt.get_unverified_header(token), jwt.decode(token, options={"verify_signature": False})


def resign(claims: dict, **header: object) -> str:
    """A token with arbitrary claims, correctly signed with the test project's key."""
    headers = {"kid": get_keyring().signing.kid, "typ": "at+jwt", **header}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)


def test_access_token_header_and_claims():
    user = make_user("alice", groups=["operators", "admins"])
    issued = mint_access_token(user, scope="reports:read")
    header, claims = unverified(issued.token)

    assert header == {"alg": "HS256", "typ": "at+jwt", "kid": get_keyring().signing.kid}
    assert claims["iss"] == ISSUER
    assert claims["sub"] == str(user.pk)
    assert claims["scope"] == "reports:read"
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["admins", "operators"]
    assert claims["epoch"] == 0 and claims["global_epoch"] == 0
    assert len(claims["jti"]) >= 32
    assert claims["exp"] - claims["iat"] == 15 * 60 == issued.expires_in
    assert abs(claims["iat"] - time.time()) < 5
    # RFC 9068 section 2.2: aud and client_id always (ISSUER and the first-party client by default).
    assert claims["aud"] == ISSUER and claims["client_id"] == "epochauth"
    for absent in ("group", "gid", "group_epoch", "sid"):
        assert absent not in claims
    assert verify_token(issued.token) == claims


def test_every_token_gets_its_own_jti():
    user = make_user("alice")
    assert mint_access_token(user).claims["jti"] != mint_access_token(user).claims["jti"]


def test_epochs_in_claims_follow_bumps():
    user = make_user("alice", groups=["operators"])
    group = Group.objects.get(name="operators")
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    bump_epoch(Epoch.Kind.GLOBAL, "")
    bump_epoch(Epoch.Kind.GROUP, str(group.pk))

    claims = mint_access_token(user, group=group).claims

    assert claims["epoch"] == 2
    assert claims["global_epoch"] == 1
    assert claims["group_epoch"] == 1
    assert claims["group"] == "operators"
    assert claims["gid"] == str(group.pk)


def test_login_endpoint_token_carries_selected_group_and_session(client, settings):
    make_user("alice", groups=["operators"])
    body = login(client, "alice", scope="reports:read", group="operators")
    claims = verify_token(body["access_token"])
    assert claims["group"] == "operators"
    assert claims["group_epoch"] == 0
    assert claims["scope"] == "reports:read"
    assert claims["sid"]


def test_audience_is_added_and_required(settings):
    user = make_user("alice")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://api.example.org"}
    token = mint_access_token(user).token
    assert unverified(token)[1]["aud"] == "https://api.example.org"
    assert verify_token(token)["aud"] == "https://api.example.org"

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://other.example.org"}
    with pytest.raises(InvalidToken):
        verify_token(token)


def test_token_without_aud_is_refused_when_audience_configured(settings):
    user = make_user("alice")
    token = mint_access_token(user).token
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": "https://api.example.org"}
    with pytest.raises(InvalidToken):
        verify_token(token)


def test_empty_audience_setting_means_the_default_audience(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "AUDIENCE": ""}
    token = mint_access_token(make_user("alice")).token
    assert verify_token(token)["aud"] == ISSUER


class OurTokens(JWTBearerTokenValidator):
    """Authlib's RFC 9068 resource-server validator, with the keys our JWKS publishes."""

    def __init__(self, jwks: dict, **kwargs: str) -> None:
        super().__init__(**kwargs)
        self.jwks = jwks

    def get_jwks(self) -> KeySet:
        return KeySet.import_key_set(self.jwks)


@pytest.mark.parametrize(
    ("extra", "audience"),
    [
        ({}, ISSUER),
        ({"AUDIENCE": "https://api.example.org"}, "https://api.example.org"),
        ({"FIRST_PARTY_CLIENT_ID": "portal-login"}, ISSUER),
    ],
)
def test_password_login_tokens_pass_authlibs_rfc_9068_validator(settings, client, extra, audience):
    """POST /auth/token/ and the session's refresh and renew mint RFC 9068 access tokens: typ at+jwt,
    aud and client_id besides the other required claims, as Authlib's validator checks them."""
    settings.EPOCHAUTH = {
        "ISSUER": ISSUER,
        "ALGORITHM": "ES256",
        "SIGNING_KEY": generate_private_key_pem("ES256"),
        **extra,
    }
    make_user("alice")
    pair = login(client, "alice")
    refreshed = client.post(
        "/auth/token/refresh/",
        {"refresh_token": pair["refresh_token"]},
        content_type="application/json",
    ).json()
    renewed = client.post(
        "/auth/token/renew/", HTTP_AUTHORIZATION=f"Bearer {refreshed['access_token']}"
    ).json()
    validator = OurTokens(
        client.get("/.well-known/jwks.json").json(), issuer=ISSUER, resource_server=audience
    )
    client_id = extra.get("FIRST_PARTY_CLIENT_ID", "epochauth")
    for token in (pair["access_token"], refreshed["access_token"], renewed["access_token"]):
        assert jwt.get_unverified_header(token)["typ"] == "at+jwt"
        claims = validator.authenticate_token(token)
        validator.validate_token(claims, scopes=None, request=None)
        assert (claims["aud"], claims["client_id"]) == (audience, client_id)
        assert verify_token(token)["sid"]  # and we take them as before


def test_tokens_minted_before_they_carried_aud_and_client_id_stay_valid(client):
    """A token of our login minted by an earlier version, without aud and client_id, still works,
    as a token of our own login (it may revoke)."""
    admin = make_user("root")
    admin.is_superuser = True
    admin.save()
    claims = verify_token(login(client, "root")["access_token"])
    old = resign({k: v for k, v in claims.items() if k not in ("aud", "client_id")})
    assert client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {old}").status_code == 200
    response = client.post(
        "/auth/revoke/",
        {"user": "root"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {old}",
    )
    assert response.status_code == 200, response.content


def test_zero_lifetime_is_not_replaced_by_the_default(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 0}
    issued = mint_access_token(make_user("alice"), lifetime=timedelta(0))
    assert issued.expires_in == 0
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(issued.token)


def test_memo_still_checks_expiry(settings, monkeypatch):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 0}
    issued = mint_access_token(make_user("alice"), lifetime=timedelta(seconds=60))
    assert authenticate_token(issued.token)
    assert verified_tokens.get(issued.token) is not None  # now served from the memo

    now = time.time()
    monkeypatch.setattr(authentication.time, "time", lambda: now + 61)
    with pytest.raises(InvalidToken, match="expired"):
        authenticate_token(issued.token)


def test_memo_honours_leeway(settings, monkeypatch):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 30}
    issued = mint_access_token(make_user("alice"), lifetime=timedelta(seconds=60))
    authenticate_token(issued.token)
    now = time.time()
    monkeypatch.setattr(authentication.time, "time", lambda: now + 80)
    assert authenticate_token(issued.token)[1].jti == issued.claims["jti"]
    monkeypatch.setattr(authentication.time, "time", lambda: now + 100)
    with pytest.raises(InvalidToken):
        authenticate_token(issued.token)


def test_memo_is_bounded(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "VERIFIED_TOKEN_CACHE_SIZE": 2}
    user = make_user("alice")
    minted = [mint_access_token(user).token for _ in range(3)]
    for token in minted:
        authenticate_token(token)
    assert verified_tokens.get(minted[0]) is None
    assert verified_tokens.get(minted[1]) is not None
    assert verified_tokens.get(minted[2]) is not None


def test_memo_can_be_switched_off(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "VERIFIED_TOKEN_CACHE_SIZE": 0}
    token = mint_access_token(make_user("alice")).token
    authenticate_token(token)
    assert verified_tokens.get(token) is None


def test_memo_is_cleared_when_settings_change(settings):
    token = mint_access_token(make_user("alice")).token
    verify_token(token)
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUER": "https://elsewhere.example.org"}
    with pytest.raises(InvalidToken):
        verify_token(token)


def test_memo_does_not_skip_revocation(client):
    user = make_user("alice")
    token = mint_access_token(user).token
    auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
    assert client.get("/api/hello/", **auth).status_code == 200
    assert client.get("/api/hello/", **auth).status_code == 200  # memo is warm

    bump_epoch(Epoch.Kind.USER, str(user.pk))
    assert client.get("/api/hello/", **auth).status_code == 401


def test_memo_does_not_skip_the_denylist(client):
    issued = mint_access_token(make_user("alice"))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issued.token}"}
    assert client.get("/api/hello/", **auth).status_code == 200
    revoke_id(issued.claims["jti"], tokens.AccessToken(issued.claims).expires_at)
    response = client.get("/api/hello/", **auth)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_expired_memo_entry_over_http(client, settings, monkeypatch):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 0}
    issued = mint_access_token(make_user("alice"), lifetime=timedelta(seconds=5))
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issued.token}"}
    assert client.get("/api/hello/", **auth).status_code == 200
    now = time.time()
    monkeypatch.setattr(tokens.time, "time", lambda: now + 6)
    response = client.get("/api/hello/", **auth)
    assert response.status_code == 401
    assert 'error_description="The access token expired"' in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    "change",
    [
        {"exp": "9999999999"},
        {"iat": "1"},
        {"nbf": "1"},
        {"exp": True},
        {"epoch": "0"},
        {"global_epoch": 0.0},
        {"gid": "1", "group_epoch": "0"},
        {"gid": "1"},  # a selected group without its epoch
        {"sid": ["a", "b"]},
        {"groups": "operators"},
        {"groups": [["operators"]]},
        {"preferred_username": 7},
    ],
    ids=repr,
)
def test_well_signed_token_with_mistyped_claims_is_refused(change):
    claims = {**mint_access_token(make_user("alice")).claims, **change}
    token = resign(claims)
    for _ in range(2):  # and again: nothing was memoised
        with pytest.raises(InvalidToken):
            verify_token(token)


def test_float_times_are_numeric_dates():
    claims = mint_access_token(make_user("alice")).claims
    claims = {**claims, "exp": claims["exp"] + 0.5, "iat": claims["iat"] + 0.25}
    assert verify_token(resign(claims))["exp"] == claims["exp"]


def test_scope_string_accepts_scope_or_scp():
    assert scope_string({"scope": "a b"}) == "a b"
    assert scope_string({"scp": ["a", "b"]}) == "a b"
    assert scope_string({"scp": ["a", 1]}) == ""
    assert scope_string({"scope": ["a"]}) == ""
    assert scope_string({}) == ""


def test_access_token_properties():
    user = make_user("alice", groups=["operators"])
    group = Group.objects.get(name="operators")
    issued = mint_access_token(user, scope="a b", group=group, session_id="s1")
    token = tokens.AccessToken(verify_token(issued.token))
    assert token.issuer == ISSUER
    assert token.subject == str(user.pk)
    assert token.scopes == frozenset({"a", "b"})
    assert token.group == "operators"
    assert token.session_id == "s1"
    assert token.expires_at.timestamp() == issued.claims["exp"]
