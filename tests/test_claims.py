"""Custom claims (``EPOCHAUTH["CUSTOM_CLAIMS"]``): added to our tokens, never over a reserved claim,
visible in ``request.auth``, and revoked like every other token."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

from epochauth import tokens
from epochauth.authentication import authenticate_token, verify_token
from epochauth.checks import check_custom_claims
from epochauth.claims import COMMUNITY_CLAIMS, RESERVED_CLAIMS
from epochauth.models import Session
from epochauth.tokens import mint_access_token
from tests.helpers import login, make_user, openid_provider

pytestmark = pytest.mark.django_db

#: What the callable was called with, for the tests to look at.
calls: list[dict[str, Any]] = []


def vo_claims(user: Any, *, session: Any, scope: str, group: Any, request: Any) -> dict[str, Any]:
    """DIRAC's case: the user's virtual organisation, and where the token was asked for."""
    calls.append(
        {"user": user, "session": session, "scope": scope, "group": group, "request": request}
    )
    return {"vo": "lhcb", "vo_role": group.name if group else None}


vo_claims.claim_names = ("vo", "vo_role")


def overriding_claims(user: Any, **context: Any) -> dict[str, Any]:
    return {"sub": "someone-else", "epoch": 99, "vo": "lhcb"}


def declares_reserved(user: Any, **context: Any) -> dict[str, Any]:
    return {}


declares_reserved.claim_names = ["vo", "groups", "exp"]


@pytest.fixture
def vo(settings):
    calls.clear()
    # A site without communities sets "vo" itself (with COMMUNITIES it is ours: test_communities.py).
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "COMMUNITIES": {},
        "CUSTOM_CLAIMS": "tests.test_claims.vo_claims",
    }


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_login_refresh_and_renew_tokens_carry_the_claims(client, vo):
    make_user("alice", groups=["lhcb_user"])
    pair = login(client, "alice", group="lhcb_user")
    claims = verify_token(pair["access_token"])
    assert claims["vo"] == "lhcb" and claims["vo_role"] == "lhcb_user"
    session = Session.objects.get()
    assert calls[-1]["session"] == session and calls[-1]["group"].name == "lhcb_user"
    assert calls[-1]["request"].path == "/auth/token/"

    refreshed = client.post(
        "/auth/token/refresh/",
        {"refresh_token": pair["refresh_token"]},
        content_type="application/json",
    ).json()
    assert verify_token(refreshed["access_token"])["vo"] == "lhcb"
    assert calls[-1]["request"].path == "/auth/token/refresh/" and calls[-1]["session"] == session

    renewed = client.post("/auth/token/renew/", **bearer(refreshed["access_token"])).json()
    assert verify_token(renewed["access_token"])["vo_role"] == "lhcb_user"


def test_the_claims_are_in_request_auth_and_end_with_logout_all(
    client, vo, django_assert_num_queries
):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    authenticate_token(token)
    with django_assert_num_queries(0):
        _, auth = authenticate_token(token)
    assert auth.claims["vo"] == "lhcb" and auth.claims["vo_role"] is None

    assert client.post("/auth/logout-all/", **bearer(token)).status_code == 204
    assert client.get("/api/hello/", **bearer(token)).status_code == 401


def test_a_token_with_the_claims_ends_with_its_session(client, vo):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    assert client.get("/api/hello/", **bearer(token)).status_code == 200
    assert client.post("/auth/logout/", **bearer(token)).status_code == 204
    assert client.get("/api/hello/", **bearer(token)).status_code == 401


def test_a_reserved_claim_is_a_runtime_error_not_a_token(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CUSTOM_CLAIMS": overriding_claims}
    with pytest.raises(ImproperlyConfigured, match="reserved claims: epoch, sub"):
        mint_access_token(make_user("alice"))


def test_the_callable_must_return_a_dict(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CUSTOM_CLAIMS": lambda user, **context: ["vo"]}
    with pytest.raises(ImproperlyConfigured, match="must return a dict"):
        mint_access_token(make_user("alice"))


def test_without_the_setting_nothing_is_added():
    claims = mint_access_token(make_user("alice")).claims
    assert "vo" not in claims


@pytest.mark.parametrize(
    "configured, text",
    [
        ("tests.test_claims.declares_reserved", "declares reserved claims: exp, groups"),
        ("tests.test_claims.no_such_function", "no_such_function"),
        ("tests.test_claims.calls", "must name a callable"),
    ],
)
def test_system_check_e015(settings, configured, text):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CUSTOM_CLAIMS": configured}
    messages = check_custom_claims()
    assert [m.id for m in messages] == ["epochauth.E015"]
    assert text in messages[0].msg


def test_system_check_passes_a_good_callable(vo):
    assert check_custom_claims() == []


def test_declared_claims_are_in_the_openid_configuration(settings, client, vo):
    openid_provider(settings)
    supported = client.get("/.well-known/openid-configuration").json()["claims_supported"]
    assert {"vo", "vo_role", "groups"} <= set(supported)


def test_every_claim_name_of_tokens_py_is_reserved():
    ours = {value for name, value in vars(tokens).items() if name.startswith("CLAIM_")}
    # "vo" only on a site with communities (test_communities.py): a site without may set it.
    assert ours and ours <= RESERVED_CLAIMS | COMMUNITY_CLAIMS
    assert set(tokens.REQUIRED_CLAIMS) <= RESERVED_CLAIMS
