"""Communities (VOs, ``EPOCHAUTH["COMMUNITIES"]``): a token belongs to one (``vo``, its issuer, its
key), a login selects it (``vo:<slug>``), groups live inside one, its documents are served under its
issuer, and a site without communities changes nothing (DIRAC #4741, diracx's one VO per token)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth import checks, communities, keys, revocation, tokens
from epochauth.authentication import BearerAuthentication, verify_token
from epochauth.exceptions import InvalidToken
from epochauth.models import CommunityGroup, CommunityMembership, Epoch
from epochauth.permissions import InCommunity
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
BELLE2_KEY = keys.generate_private_key_pem("ES256")
#: Two communities: lhcb with a key derived from SECRET_KEY (HS256), belle2 with its own ES256 key.
COMMUNITIES = {
    "lhcb": {"name": "LHCb"},
    "belle2": {"name": "Belle II", "algorithm": "ES256", "signing_key": BELLE2_KEY},
}


@pytest.fixture
def vos(settings) -> dict[str, Any]:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "COMMUNITIES": COMMUNITIES}
    return settings.EPOCHAUTH


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def member(username: str, *slugs: str, groups: tuple[str, ...] = ()) -> Any:
    user = make_user(username, groups=groups)
    for slug in slugs:
        CommunityMembership.objects.create(user=user, community=slug)
    return user


def refused(client: Any, username: str, **extra: Any) -> dict[str, Any]:
    response = client.post(
        "/auth/token/", {"username": username, "password": "pw", **extra}, format="json"
    )
    assert response.status_code == 400, response.content
    return response.json()


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


# -- a site without communities ---------------------------------------------------------------


@pytest.fixture
def no_vos(settings) -> None:
    """A site without the setting (the test project has two communities)."""
    settings.EPOCHAUTH = {
        k: v
        for k, v in settings.EPOCHAUTH.items()
        if k not in ("COMMUNITIES", "DEFAULT_COMMUNITY")
    }


def test_a_site_without_communities_mints_and_accepts_what_it_did_before(client, no_vos, settings):
    """The upgrade: no setting, the same issuer, key and claims, and a token minted the way earlier
    versions did (no ``vo``, no ``vo_epoch``) stays valid."""
    user = make_user("alice")
    body = login(client, "alice")
    claims = claims_of(body["access_token"])
    assert claims["iss"] == ISSUER and "vo" not in claims and "vo_epoch" not in claims
    assert set(claims) == {
        "iss",
        "sub",
        "aud",
        "client_id",
        "iat",
        "nbf",
        "exp",
        "jti",
        "preferred_username",
        "epoch",
        "global_epoch",
        "sid",
    }
    assert jwt.get_unverified_header(body["access_token"])["kid"] == keys.get_keyring().signing.kid
    # What the release before communities minted, signed with the site's key as it was.
    earlier = {k: v for k, v in claims.items() if k != "sid"} | {"jti": "earlier"}
    old = keys.get_keyring().sign(earlier, tokens.ACCESS_TOKEN_TYPE)
    response = client.get("/auth/whoami/", **bearer(old))
    assert response.status_code == 200
    assert response.json()["vo"] is None and response.json()["subject"] == str(user.pk)
    # The site then adds communities: its earlier tokens (of no community) stay valid.
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "COMMUNITIES": COMMUNITIES}
    assert client.get("/auth/whoami/", **bearer(old)).status_code == 200
    assert client.get("/auth/whoami/", **bearer(body["access_token"])).status_code == 200


def test_a_vo_scope_on_a_site_without_communities_is_refused(client, no_vos):
    make_user("alice")
    body = refused(client, "alice", scope="vo:lhcb")
    assert body == {
        "error": "invalid_scope",
        "error_description": "This service has no communities",
    }


# -- selecting the community at login ---------------------------------------------------------


def test_a_login_selecting_its_community_gets_a_token_of_it(client, vos):
    member("alice", "lhcb", "belle2")
    body = login(client, "alice", scope="vo:belle2")
    claims = claims_of(body["access_token"])
    belle2 = communities.get("belle2")
    assert belle2 is not None
    assert claims["iss"] == f"{ISSUER}/belle2" == belle2.issuer
    assert claims["vo"] == "belle2" and claims["vo_epoch"] == 0
    assert claims["scope"] == "vo:belle2" and body["vo"] == "belle2"
    header = jwt.get_unverified_header(body["access_token"])
    assert (header["alg"], header["kid"]) == ("ES256", belle2.keyring.signing.kid)
    assert header["kid"] != keys.get_keyring().signing.kid
    whoami = client.get("/auth/whoami/", **bearer(body["access_token"])).json()
    assert (whoami["issuer"], whoami["vo"]) == (f"{ISSUER}/belle2", "belle2")
    lhcb = claims_of(login(client, "alice", scope="vo:lhcb")["access_token"])
    assert (lhcb["iss"], lhcb["vo"]) == (f"{ISSUER}/lhcb", "lhcb")


@pytest.mark.parametrize(
    ("scope", "description"),
    [
        ("vo:belle2", "You are not a member of that community"),
        ("vo:cta", "Unknown community: cta"),
        ("vo:lhcb vo:belle2", "Select at most one community"),
    ],
)
def test_a_login_for_a_community_it_may_not_have_is_refused(client, vos, scope, description):
    member("alice", "lhcb")
    body = refused(client, "alice", scope=scope)
    assert body == {"error": "invalid_scope", "error_description": description}


def test_a_login_naming_none_gets_the_default_community_open_to_every_user(client, vos, settings):
    settings.EPOCHAUTH = {**vos, "DEFAULT_COMMUNITY": "lhcb"}
    make_user("alice")  # in no community: the default takes everyone
    claims = claims_of(login(client, "alice")["access_token"])
    assert (claims["iss"], claims["vo"], claims["scope"]) == (f"{ISSUER}/lhcb", "lhcb", "vo:lhcb")


def test_without_a_default_a_login_gets_the_users_only_community_or_none(client, vos):
    member("alice", "belle2")
    assert claims_of(login(client, "alice")["access_token"])["vo"] == "belle2"
    member("bob", "lhcb", "belle2")
    assert refused(client, "bob")["error_description"] == (
        "You are a member of several communities: select one with vo:<slug>"
    )
    # A user of no community (staff, a service account) gets the site's token, as before.
    make_user("carol")
    carol = login(client, "carol")
    assert carol["vo"] is None and claims_of(carol["access_token"])["iss"] == ISSUER
    assert "vo" not in claims_of(carol["access_token"])


def test_refresh_and_renew_keep_the_community(client, vos):
    member("alice", "belle2", "lhcb")
    body = login(client, "alice", scope="vo:belle2")
    refreshed = client.post(
        "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}, format="json"
    ).json()
    assert claims_of(refreshed["access_token"])["vo"] == "belle2" and refreshed["vo"] == "belle2"
    renewed = client.post("/auth/token/renew/", **bearer(refreshed["access_token"])).json()
    claims = claims_of(renewed["access_token"])
    assert (claims["iss"], claims["vo"]) == (f"{ISSUER}/belle2", "belle2")


def test_leaving_the_community_ends_the_users_tokens_and_sessions(client, vos):
    alice = member("alice", "lhcb", "belle2")
    body = login(client, "alice", scope="vo:lhcb")
    CommunityMembership.objects.filter(user=alice, community="lhcb").delete()
    assert client.get("/api/hello/", **bearer(body["access_token"])).status_code == 401
    response = client.post(
        "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}, format="json"
    )
    assert response.status_code == 400
    assert refused(client, "alice", scope="vo:lhcb")["error_description"] == (
        "You are not a member of that community"
    )
    assert login(client, "alice", scope="vo:belle2")["vo"] == "belle2"


def test_a_session_of_a_community_the_site_no_longer_has_ends_at_its_refresh(
    client, vos, settings
):
    member("alice", "lhcb", "belle2")
    body = login(client, "alice", scope="vo:belle2")
    settings.EPOCHAUTH = {**vos, "COMMUNITIES": {"lhcb": {}}}
    response = client.post(
        "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error_description"] == (
        "You are no longer a member of the session's community"
    )


def test_moving_a_group_to_another_community_ends_the_tokens_that_selected_it(client, vos):
    member("alice", "lhcb", "belle2", groups=("prod",))
    tie = CommunityGroup.objects.create(group=Group.objects.get(name="prod"), community="lhcb")
    token = login(client, "alice", scope="vo:lhcb g:prod")["access_token"]
    tie.community = "belle2"
    tie.save()
    assert client.get("/api/hello/", **bearer(token)).status_code == 401


# -- groups inside a community ----------------------------------------------------------------


def test_a_group_is_selected_and_listed_only_in_its_own_community(client, vos):
    member("alice", "lhcb", "belle2", groups=("lhcb_prod", "belle2_prod", "everyone"))
    CommunityGroup.objects.create(group=Group.objects.get(name="lhcb_prod"), community="lhcb")
    CommunityGroup.objects.create(group=Group.objects.get(name="belle2_prod"), community="belle2")
    body = login(client, "alice", scope="vo:lhcb g:lhcb_prod")
    claims = claims_of(body["access_token"])
    assert claims["group"] == "lhcb_prod" and claims["groups"] == ["everyone", "lhcb_prod"]
    assert body["groups"] == ["everyone", "lhcb_prod"]
    assert refused(client, "alice", scope="vo:lhcb g:belle2_prod")["error_description"] == (
        "That group is not in the selected community"
    )
    # A group of no community is the site's: in every community.
    site = claims_of(login(client, "alice", scope="vo:belle2 g:everyone")["access_token"])
    assert site["group"] == "everyone" and site["groups"] == ["belle2_prod", "everyone"]


# -- verification routes by iss ---------------------------------------------------------------


def test_verification_routes_each_token_to_its_own_issuers_keys(client, vos):
    member("alice", "lhcb", "belle2")
    token = login(client, "alice", scope="vo:lhcb")["access_token"]
    claims = claims_of(token)
    lhcb = communities.get("lhcb")
    assert lhcb is not None and verify_token(token)["vo"] == "lhcb"
    forgeries = {
        # The site's key under the community's issuer, and the community's under the site's.
        "site key": keys.get_keyring().sign(claims, tokens.ACCESS_TOKEN_TYPE),
        "community key as the site": lhcb.keyring.sign(
            {**claims, "iss": ISSUER}, tokens.ACCESS_TOKEN_TYPE
        ),
        # Another community's vo under lhcb's issuer and key.
        "other vo": lhcb.keyring.sign({**claims, "vo": "belle2"}, tokens.ACCESS_TOKEN_TYPE),
        "no vo epoch": lhcb.keyring.sign(
            {k: v for k, v in claims.items() if k != "vo_epoch"}, tokens.ACCESS_TOKEN_TYPE
        ),
        # belle2's key is pinned to ES256: its public key as an HMAC secret is no key of it.
        "algorithm confusion": keys.Key(
            belle2_kid(), "HS256", belle2_public_pem(), belle2_public_pem()
        ).sign({**claims, "iss": f"{ISSUER}/belle2", "vo": "belle2"}, tokens.ACCESS_TOKEN_TYPE),
    }
    for name, forged in forgeries.items():
        with pytest.raises(InvalidToken):
            verify_token(forged)
        assert client.get("/api/hello/", **bearer(forged)).status_code == 401, name


def belle2_public_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization

    belle2 = communities.get("belle2")
    assert belle2 is not None
    return belle2.keyring.signing.verifying_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def belle2_kid() -> str:
    belle2 = communities.get("belle2")
    assert belle2 is not None
    return belle2.keyring.signing.kid


def test_a_service_accepts_only_its_communities(client, vos, settings):
    member("alice", "lhcb", "belle2")
    lhcb = login(client, "alice", scope="vo:lhcb")["access_token"]
    belle2 = login(client, "alice", scope="vo:belle2")["access_token"]
    settings.EPOCHAUTH = {**vos, "ACCEPTED_COMMUNITIES": ["belle2"]}
    assert client.get("/api/hello/", **bearer(belle2)).status_code == 200
    response = client.get("/api/hello/", **bearer(lhcb))
    assert response.status_code == 401
    assert "community is not accepted here" in response["WWW-Authenticate"]


def test_request_auth_vo_and_the_in_community_permission(client, vos):
    member("alice", "lhcb", "belle2")
    lhcb = login(client, "alice", scope="vo:lhcb")["access_token"]
    belle2 = login(client, "alice", scope="vo:belle2")["access_token"]

    class LHCbOnly(APIView):
        authentication_classes = (BearerAuthentication,)
        permission_classes = (InCommunity.of("lhcb"),)

        def get(self, request: Any) -> Any:
            from rest_framework.response import Response

            return Response({"vo": request.auth.vo})

    class ByAttribute(LHCbOnly):
        permission_classes = (InCommunity,)
        required_communities = ("belle2",)

    factory = APIRequestFactory()
    view = LHCbOnly.as_view()
    assert view(factory.get("/", **bearer(lhcb))).data == {"vo": "lhcb"}
    assert view(factory.get("/", **bearer(belle2))).status_code == 403
    by_attribute = ByAttribute.as_view()
    assert by_attribute(factory.get("/", **bearer(belle2))).status_code == 200
    assert by_attribute(factory.get("/", **bearer(lhcb))).status_code == 403


# -- discovery documents ----------------------------------------------------------------------


def test_each_community_publishes_its_keys_and_metadata_under_its_issuer(client, vos):
    belle2 = communities.get("belle2")
    assert belle2 is not None
    jwks = client.get("/belle2/.well-known/jwks.json").json()
    assert [key["kid"] for key in jwks["keys"]] == [belle2.keyring.signing.kid]
    assert jwks["keys"][0]["alg"] == "ES256" and "d" not in jwks["keys"][0]
    # lhcb signs with HS256: nothing public to publish, never its secret.
    assert client.get("/lhcb/.well-known/jwks.json").json() == {"keys": []}
    for path in (
        "/.well-known/oauth-authorization-server/belle2",
        "/belle2/.well-known/openid-configuration",
    ):
        document = client.get(path).json()
        assert document["issuer"] == f"{ISSUER}/belle2"
        assert document["jwks_uri"] == f"{ISSUER}/belle2/.well-known/jwks.json"
        assert document["epochauth_endpoints"]["token"] == f"{ISSUER}/auth/token/"
        assert "vo:belle2" in document["scopes_supported"]
        assert "vo:lhcb" not in document["scopes_supported"]
        # The OAuth server's endpoints (epochauth.oauth is installed), whose grants take vo:belle2.
        assert {
            name: document.get(name)
            for name in (
                "token_endpoint",
                "device_authorization_endpoint",
                "authorization_endpoint",
                "introspection_endpoint",
                "revocation_endpoint",
            )
        } == {
            "token_endpoint": f"{ISSUER}/o/token/",
            "device_authorization_endpoint": f"{ISSUER}/o/device-authorization/",
            "authorization_endpoint": f"{ISSUER}/o/authorize/",
            "introspection_endpoint": f"{ISSUER}/o/introspect/",
            "revocation_endpoint": f"{ISSUER}/o/revoke_token/",
        }
        assert "urn:ietf:params:oauth:grant-type:device_code" in document["grant_types_supported"]
        # No OpenID Provider promises: its ID tokens carry the site's issuer.
        assert "userinfo_endpoint" not in document
        assert "id_token_signing_alg_values_supported" not in document
    site = client.get("/.well-known/oauth-authorization-server").json()
    assert site["issuer"] == ISSUER and site["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert client.get("/.well-known/oauth-authorization-server/cta").status_code == 404
    assert client.get("/cta/.well-known/jwks.json").status_code == 404


def test_a_communitys_documents_make_no_openid_provider_promises(client, vos, settings):
    """In OpenID Provider mode the site's document names userinfo and ID-token algorithms; a
    community's does not (its ID tokens would carry the site's issuer), its OAuth endpoints stay."""
    from tests.helpers import openid_provider

    openid_provider(settings, COMMUNITIES={**COMMUNITIES, "lhcb": {"algorithm": "HS256"}})
    site = client.get("/.well-known/openid-configuration").json()
    assert site["userinfo_endpoint"] == f"{ISSUER}/o/userinfo/"
    assert "id_token_signing_alg_values_supported" in site
    for path in (
        "/.well-known/oauth-authorization-server/lhcb",
        "/lhcb/.well-known/openid-configuration",
    ):
        document = client.get(path).json()
        assert document["issuer"] == f"{ISSUER}/lhcb"
        assert document["token_endpoint"] == f"{ISSUER}/o/token/"
        assert "userinfo_endpoint" not in document and "end_session_endpoint" not in document
        assert "id_token_signing_alg_values_supported" not in document
        assert "openid" not in document["scopes_supported"]


def test_a_rotated_community_key_still_verifies_its_tokens(client, vos, settings):
    member("alice", "belle2")
    token = login(client, "alice", scope="vo:belle2")["access_token"]
    new_key = keys.generate_private_key_pem("ES256")
    rotated = {
        "belle2": {
            "algorithm": "ES256",
            "signing_key": new_key,
            "verification_keys": [{"algorithm": "ES256", "key": BELLE2_KEY}],
        },
        "lhcb": {},
    }
    settings.EPOCHAUTH = {**vos, "COMMUNITIES": rotated}
    assert client.get("/api/hello/", **bearer(token)).status_code == 200
    fresh = login(client, "alice", scope="vo:belle2")["access_token"]
    assert jwt.get_unverified_header(fresh)["kid"] != jwt.get_unverified_header(token)["kid"]
    assert len(client.get("/belle2/.well-known/jwks.json").json()["keys"]) == 2


# -- system checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epochauth", "check_id", "words"),
    [
        ({"COMMUNITIES": {"lhcb": {}}, "DEFAULT_COMMUNITY": "cta"}, "E029", "DEFAULT_COMMUNITY"),
        ({"COMMUNITIES": {"lhcb": {}}, "ACCEPTED_COMMUNITIES": ["cta"]}, "E029", "ACCEPTED"),
        ({"COMMUNITIES": {"lh cb": {}}}, "E029", "slug"),
        ({"COMMUNITIES": {"lhcb": {"colour": "red"}}}, "E029", "unknown options colour"),
        (
            {"COMMUNITIES": {"lhcb": {"identity_providers": ["https://nowhere.example"]}}},
            "E029",
            "not in ISSUERS",
        ),
        ({"COMMUNITIES": {"lhcb": {"issuer": ISSUER}}}, "E030", "the site's"),
        (
            {"COMMUNITIES": {"lhcb": {}, "belle2": {"issuer": f"{ISSUER}/lhcb"}}},
            "E030",
            "community lhcb's",
        ),
        ({"COMMUNITIES": {"lhcb": {"algorithm": "RS256"}}}, "E031", "needs signing_key"),
        ({"COMMUNITIES": {"lhcb": {"signing_key": "short"}}}, "E031", "at least 32 bytes"),
        ({"COMMUNITIES": {"lhcb": {"issuer": "lhcb"}}}, "E030", "http(s) URL"),
        (
            {"COMMUNITIES": {"lhcb": {"identity_providers": "https://idp.example"}}},
            "E029",
            "a list of issuers",
        ),
        (
            {
                "ISSUERS": [{"issuer": "https://idp.example"}],
                "COMMUNITIES": {"lhcb": {"issuer": "https://idp.example"}},
            },
            "E030",
            "an external issuer's",
        ),
        (
            {"COMMUNITIES": {"lhcb": {"algorithm": "ES256", "signing_key": "not a key"}}},
            "E031",
            "cannot load",
        ),
    ],
)
def test_misconfigured_communities_are_check_errors(settings, epochauth, check_id, words):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, **epochauth}
    errors = checks.check_communities()
    assert [e.id for e in errors] == [f"epochauth.{check_id}"], errors
    assert words in errors[0].msg


def test_good_communities_pass_the_checks(vos):
    assert checks.check_communities() == []


# -- revoking a community ---------------------------------------------------------------------


def test_a_community_bump_ends_that_communitys_tokens_only(client, vos):
    member("alice", "lhcb", "belle2")
    lhcb = login(client, "alice", scope="vo:lhcb")
    belle2 = login(client, "alice", scope="vo:belle2")
    call_command("epochauth_revoke", "--community", "lhcb", stdout=open("/dev/null", "w"))
    assert Epoch.objects.get(kind=Epoch.Kind.COMMUNITY, object_id="lhcb").value == 1
    assert client.get("/api/hello/", **bearer(lhcb["access_token"])).status_code == 401
    assert client.get("/api/hello/", **bearer(belle2["access_token"])).status_code == 200
    refresh = client.post(
        "/auth/token/refresh/", {"refresh_token": lhcb["refresh_token"]}, format="json"
    )
    assert refresh.status_code == 400
    fresh = login(client, "alice", scope="vo:lhcb")
    assert claims_of(fresh["access_token"])["vo_epoch"] == 1
    assert client.get("/api/hello/", **bearer(fresh["access_token"])).status_code == 200


def test_an_unknown_community_cannot_be_revoked(vos):
    with pytest.raises(revocation.NoSuchTarget, match="No such community cta"):
        revocation.find_target(community="cta")


def test_the_revoke_api_takes_a_community_for_those_who_may_change_epochs(client, vos):
    from django.contrib.auth.models import Permission

    member("alice", "lhcb")
    token = login(client, "alice", scope="vo:lhcb")["access_token"]
    revoker = member("revoker", "belle2")
    revoker_token = login(client, "revoker")["access_token"]

    def revoke(body: dict[str, Any]) -> Any:
        return client.post("/auth/revoke/", body, format="json", **bearer(revoker_token))

    assert revoke({"community": "lhcb"}).status_code == 403  # no permission: nothing changes
    assert client.get("/api/hello/", **bearer(token)).status_code == 200
    revoker.user_permissions.add(Permission.objects.get(codename="change_epoch"))
    assert revoke({"community": "lhcb"}).json() == {"revoked": "community lhcb", "epoch": 1}
    assert client.get("/api/hello/", **bearer(token)).status_code == 401
    assert revoke({"community": "cta"}).status_code == 404
    assert revoke({"community": "lhcb", "all": True}).status_code == 400


def test_the_demo_defines_lhcb_and_belle2_and_a_login_naming_none_gets_the_default(
    client, settings, monkeypatch
):
    """The test project (the demo): two communities; ``dev.py demo`` sets the default to lhcb."""
    import importlib

    import testproject.settings

    monkeypatch.setenv("EPOCHAUTH_DEFAULT_COMMUNITY", "lhcb")
    demo = importlib.reload(testproject.settings).EPOCHAUTH
    importlib.reload(testproject.settings)  # the module as the other tests read it
    assert set(demo["COMMUNITIES"]) == {"lhcb", "belle2"} and demo["DEFAULT_COMMUNITY"] == "lhcb"
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "COMMUNITIES": demo["COMMUNITIES"],
        "DEFAULT_COMMUNITY": "lhcb",
    }
    assert checks.check_communities() == []
    member("admin", "lhcb", "belle2")
    assert login(client, "admin")["vo"] == "lhcb"
    assert login(client, "admin", scope="vo:belle2")["vo"] == "belle2"


# -- the newest applicable epoch wins (Keycloak's 2026 not-before CVEs: two epochs combined) ---------

KINDS = ("user", "group", "global", "community")
#: Two different kinds bumped one after the other, in every order.
PAIRS = [(a, b) for a in KINDS for b in KINDS if a != b]


def bump(kind: str, alice: Any, at: Any = None) -> None:
    """Bump one of the epochs a token of alice's in lhcb selecting prod depends on; ``at``: as of
    then (an external token's ``iat`` is whole seconds: a bump made in its second is ambiguous)."""
    target = {
        "user": (Epoch.Kind.USER, str(alice.pk)),
        "group": (Epoch.Kind.GROUP, str(Group.objects.get(name="prod").pk)),
        "global": (Epoch.Kind.GLOBAL, ""),
        "community": (Epoch.Kind.COMMUNITY, "lhcb"),
    }[kind]
    revocation.bump_epoch(*target, reason="combination test", at=at)


@pytest.fixture
def introspector(vos) -> Any:
    from oauth2_provider.models import get_application_model

    application = get_application_model()
    owner = make_user("service-owner")
    application.objects.create(
        name="introspector",
        client_id="introspector",
        client_secret="introspector-secret",
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_CLIENT_CREDENTIALS,
        user=owner,
    )

    def active(client: Any, token: str) -> bool:
        import base64

        basic = base64.b64encode(b"introspector:introspector-secret").decode()
        response = client.post(
            "/o/introspect/", {"token": token}, HTTP_AUTHORIZATION=f"Basic {basic}"
        )
        assert response.status_code == 200, response.content
        return response.json()["active"]

    return active


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_the_newest_applicable_epoch_wins_on_every_path(client, introspector, first, second):
    """A community token of a selected group depends on four epochs. With two bumped one after the
    other, a login before either and one between them are dead on every path (bearer, refresh, renew,
    introspection); one after both lives, whichever kinds and order."""
    alice = member("alice", "lhcb", groups=("prod",))
    CommunityGroup.objects.create(group=Group.objects.get(name="prod"), community="lhcb")

    def log_in() -> dict[str, Any]:
        return login(client, "alice", scope="vo:lhcb g:prod")

    before = log_in()
    bump(first, alice)
    between = log_in()
    bump(second, alice)
    after = log_in()
    for name, pair in (("before", before), ("between", between), ("after", after)):
        lives = name == "after"
        token = pair["access_token"]
        assert (client.get("/api/hello/", **bearer(token)).status_code == 200) is lives, name
        assert introspector(client, token) is lives, name
        renewed = client.post("/auth/token/renew/", **bearer(token))
        assert renewed.status_code == (200 if lives else 401), name
        refreshed = client.post(
            "/auth/token/refresh/", {"refresh_token": pair["refresh_token"]}, format="json"
        )
        assert refreshed.status_code == (200 if lives else 400), name
        if lives:
            fresh = refreshed.json()["access_token"]
            assert claims_of(fresh)["vo"] == "lhcb"
            assert client.get("/api/hello/", **bearer(fresh)).status_code == 200


@pytest.fixture
def exchanger(vos, settings) -> Any:
    """A loopback issuer whose ``/prod`` group claim is the local group prod (tied to lhcb), its
    user dora a member of lhcb, and a service that exchanges its tokens: ``exchanger(iat)`` is the
    response of ``/o/token/``'s token exchange of dora's token issued at ``iat`` for vo:lhcb g:prod."""
    from oauth2_provider.models import get_application_model

    from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
    from tests.loopback_issuer import AUDIENCE, CraftedIssuer

    issuer = CraftedIssuer()
    settings.EPOCHAUTH = {
        **vos,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [
            {
                "issuer": issuer.issuer,
                "audiences": [AUDIENCE],
                "group_claims": ["groups"],
                "group_map": {"/prod": "prod"},
            }
        ],
    }
    application = get_application_model()
    application.objects.create(
        name="svc",
        client_id="svc",
        client_secret="svc-secret",
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_CLIENT_CREDENTIALS,
        user=make_user("svc-owner"),
    )
    CommunityGroup.objects.create(group=Group.objects.create(name="prod"), community="lhcb")

    def exchange(iat: int) -> Any:
        data = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": issuer.token(sub="dora", groups=["/prod"], iat=iat),
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": "vo:lhcb g:prod",
        }
        return oauth_token(client_of_exchange, data, basic="svc:svc-secret")

    from django.test import Client

    client_of_exchange = Client()
    whoami = client_of_exchange.get(
        "/auth/whoami/", **bearer(issuer.token(sub="dora", groups=["/prod"]))
    )
    assert whoami.status_code == 200, whoami.content
    from django.contrib.auth import get_user_model

    dora = get_user_model().objects.get(epochauth_identities__issuer=issuer.issuer)
    CommunityMembership.objects.create(user=dora, community="lhcb")
    exchange.user = dora  # type: ignore[attr-defined]
    yield exchange
    issuer.stop()


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_the_newest_applicable_epoch_wins_at_token_exchange(
    client, introspector, exchanger, first, second
):
    """Token exchange mints a community token of a selected group from an external token: what it
    minted before a bump dies with it, and a subject token issued before the bump of any epoch the
    new token would depend on (the user's, the group's, everyone's, the community's) is refused,
    whichever kinds and order: as a refresh token issued before it is."""
    import time

    now = int(time.time())
    minted_before = exchanger(now - 90)
    assert minted_before.status_code == 200, minted_before.content
    claims = claims_of(minted_before.json()["access_token"])
    assert (claims["vo"], claims["group"]) == ("lhcb", "prod")
    assert (
        client.get("/api/hello/", **bearer(minted_before.json()["access_token"])).status_code
        == 200
    )
    from datetime import UTC, datetime

    bump(first, exchanger.user, at=datetime.fromtimestamp(now - 60, tz=UTC))
    minted_between = exchanger(now - 45)
    assert minted_between.status_code == 200, minted_between.content
    bump(second, exchanger.user, at=datetime.fromtimestamp(now - 30, tz=UTC))
    for token in (minted_before, minted_between):
        access = token.json()["access_token"]
        assert client.get("/api/hello/", **bearer(access)).status_code == 401
        assert introspector(client, access) is False
    for iat in (now - 90, now - 45):
        refused_exchange = exchanger(iat)
        assert refused_exchange.status_code == 400, iat
        assert refused_exchange.json() == {
            "error": "invalid_request",
            "error_description": "Invalid subject_token: The access token was revoked",
        }
    after = exchanger(now - 10)
    assert after.status_code == 200, after.content
    assert client.get("/api/hello/", **bearer(after.json()["access_token"])).status_code == 200
    assert introspector(client, after.json()["access_token"]) is True


@pytest.fixture
def upstream(vos, settings, monkeypatch) -> Any:
    """A login provider (loopback) whose token endpoint answers every refresh, with ``group_scopes``
    for lhcb's prod and belle2's ops; a stored grant there for erin; carol holds the Token
    Manager's permission and is in lhcb. ``upstream(token, **fields)``: ``/tokenmanager/token/``'s
    answer for erin to carol's ``token``; ``upstream.issuer``: the provider, whose
    ``token_requests`` say which scope it was asked for."""
    from django.contrib.auth.models import Permission
    from django.test import Client

    from epochauth.tokenmanager.grants import keep
    from tests.loopback_issuer import CraftedIssuer

    issuer = CraftedIssuer(oidc=True)
    issuer.token_answer = (
        200,
        {"access_token": "upstream", "token_type": "Bearer", "expires_in": 300},
    )
    monkeypatch.setenv("EPOCHAUTH_TEST_COMMUNITY_UPSTREAM", "upstream-secret")
    settings.EPOCHAUTH = {
        **vos,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [
            {
                "issuer": issuer.issuer,
                "slug": "upstream",
                "client_id": "us",
                "client_secret_env": "EPOCHAUTH_TEST_COMMUNITY_UPSTREAM",
                "group_scopes": {"prod": "openid prod", "ops": "openid ops", "all": "openid"},
            }
        ],
    }
    erin = member("erin", "lhcb", "belle2", groups=("prod", "ops", "all"))
    CommunityGroup.objects.create(group=Group.objects.get(name="prod"), community="lhcb")
    CommunityGroup.objects.create(group=Group.objects.get(name="ops"), community="belle2")
    keep(erin, issuer.issuer, "erins-refresh-token", "openid offline_access")
    carol = member("carol", "lhcb", "belle2", groups=("prod",))
    carol.user_permissions.add(Permission.objects.get(codename="obtain_upstream_token"))

    def obtain(token: str, **fields: str) -> Any:
        return Client().post(
            "/tokenmanager/token/", {"username": "erin", **fields}, **bearer(token)
        )

    obtain.issuer = issuer  # type: ignore[attr-defined]
    yield obtain
    issuer.stop()


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-then-{b}" for a, b in PAIRS])
def test_the_newest_applicable_epoch_wins_at_the_token_manager(client, upstream, first, second):
    """What the Token Manager hands out to a community token of a selected group: nothing once any
    of its epochs is behind, whichever kinds and order."""
    carol = CommunityMembership.objects.get(user__username="carol", community="lhcb").user

    def log_in() -> str:
        return login(client, "carol", scope="vo:lhcb g:prod")["access_token"]

    def bumped(kind: str) -> None:
        # A global bump ends every upstream grant too (tokenmanager/receivers.py): erin signs in
        # at the provider again.
        bump(kind, carol)
        keep(erin, upstream.issuer.issuer, "erins-refresh-token")

    from epochauth.tokenmanager.grants import keep

    erin = CommunityMembership.objects.get(user__username="erin", community="lhcb").user
    before = log_in()
    assert upstream(before).status_code == 200
    bumped(first)
    between = log_in()
    assert upstream(between).status_code == 200
    bumped(second)
    after = log_in()
    for token in (before, between):
        refused_here = upstream(token)
        assert refused_here.status_code == 401
        assert refused_here.json()["detail"] == "The access token was revoked"
    answer = upstream(after)
    assert answer.status_code == 200, answer.content
    assert answer.json()["access_token"] == "upstream"


def test_the_token_manager_maps_only_groups_of_the_calling_tokens_community(client, upstream):
    """DIRAC's Token Manager "forms a scope that corresponds to the selected group": an lhcb token
    maps lhcb's groups and the site's, never belle2's (invalid_scope, the provider not asked)."""
    lhcb = login(client, "carol", scope="vo:lhcb")["access_token"]
    belle2 = login(client, "carol", scope="vo:belle2")["access_token"]
    asked = upstream.issuer.token_requests
    for token, group, scope in (
        (lhcb, "prod", "openid prod"),
        (lhcb, "all", "openid"),
        (belle2, "ops", "openid ops"),
        (belle2, "all", "openid"),
    ):
        answer = upstream(token, group=group)
        assert answer.status_code == 200, (group, answer.content)
        assert answer.json()["scope"] == scope
    # The provider was asked once per scope (then the answer is cached), never for another's.
    assert [request["scope"] for request in asked] == ["openid prod", "openid", "openid ops"]
    for token, group in ((lhcb, "ops"), (belle2, "prod")):
        answer = upstream(token, group=group)
        assert answer.status_code == 400, group
        assert answer.json() == {
            "error": "invalid_scope",
            "error_description": "The group is not in the token's community",
        }
    assert len(asked) == 3
    from epochauth.models import AuditEvent

    handed = AuditEvent.objects.filter(action="upstream_token_issued").order_by("pk")
    assert [(e.detail["group"], e.detail["vo"]) for e in handed] == [
        ("prod", "lhcb"),
        ("all", "lhcb"),
        ("ops", "belle2"),
        ("all", "belle2"),
    ]


def test_a_bump_of_another_community_or_group_ends_nothing_here(client, introspector):
    alice = member("alice", "lhcb", "belle2", groups=("prod", "other"))
    pair = login(client, "alice", scope="vo:lhcb g:prod")
    revocation.bump_epoch(Epoch.Kind.COMMUNITY, "belle2")
    revocation.bump_epoch(Epoch.Kind.GROUP, str(Group.objects.get(name="other").pk))
    assert client.get("/api/hello/", **bearer(pair["access_token"])).status_code == 200
    assert introspector(client, pair["access_token"]) is True
    refreshed = client.post(
        "/auth/token/refresh/", {"refresh_token": pair["refresh_token"]}, format="json"
    )
    assert refreshed.status_code == 200
    del alice


def test_checking_a_community_token_again_costs_no_query(client, vos, django_assert_num_queries):
    member("alice", "lhcb")
    token = login(client, "alice", scope="vo:lhcb")["access_token"]
    assert client.get("/api/hello/", **bearer(token)).status_code == 200  # warms the process
    with django_assert_num_queries(0):
        assert client.get("/api/hello/", **bearer(token)).status_code == 200
    revocation.bump_epoch(Epoch.Kind.COMMUNITY, "belle2")  # a change: the memo is checked again
    with django_assert_num_queries(0):
        assert client.get("/api/hello/", **bearer(token)).status_code == 200


def test_what_a_community_costs_a_login_and_a_refresh(
    client, vos, settings, django_assert_max_num_queries
):
    """With communities, a login reads the user's memberships (none for the default community) and
    its groups' communities when the user has groups; a refresh of a community session rereads the
    membership. Without them: test_token_endpoint_cost.py."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    member("alice", "lhcb", "belle2")
    settings.EPOCHAUTH = {**vos, "DEFAULT_COMMUNITY": "lhcb"}
    with CaptureQueriesContext(connection) as default:
        body = login(client, "alice")
    with CaptureQueriesContext(connection) as selected:
        login(client, "alice", scope="vo:belle2")
    memberships = [q for q in selected.captured_queries if "communitymembership" in q["sql"]]
    assert len(memberships) == 1
    assert not [q for q in default.captured_queries if "communitymembership" in q["sql"]]
    with CaptureQueriesContext(connection) as refreshed:
        client.post(
            "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}, format="json"
        )
    assert not [q for q in refreshed.captured_queries if "communitymembership" in q["sql"]]


# -- the OAuth server's grants (epochauth.oauth) and the CLI -----------------------------------


def oauth_token(client: Any, data: dict[str, Any], basic: str | None = None) -> Any:
    from urllib.parse import urlencode

    headers = {}
    if basic is not None:
        import base64

        headers["HTTP_AUTHORIZATION"] = "Basic " + base64.b64encode(basic.encode()).decode()
    return client.post(
        "/o/token/",
        urlencode(data, doseq=True),
        content_type="application/x-www-form-urlencoded",
        **headers,
    )


def device_login(client: Any, user: Any, scope: str) -> Any:
    """The CLI's device flow (RFC 8628), approved in ``user``'s browser; the token response."""
    from django.test import Client
    from django.utils import timezone
    from oauth2_provider.models import get_application_model, get_device_grant_model

    from epochauth.oauth.models import ensure_cli_application
    from epochauth.urns import DEVICE_CODE

    ensure_cli_application(get_application_model())
    from urllib.parse import urlencode

    started = client.post(
        "/o/device-authorization/",
        urlencode({"client_id": "epochauth-cli", "scope": scope}),
        content_type="application/x-www-form-urlencoded",
    )
    assert started.status_code == 200, started.content
    device = started.json()
    browser = Client()
    browser.force_login(user)
    entered = browser.post("/o/device/", {"user_code": device["user_code"]})
    assert entered.status_code == 302, entered.content
    assert browser.post(entered["Location"], {"action": "accept"}).status_code == 302
    get_device_grant_model().objects.filter(device_code=device["device_code"]).update(
        last_checked=timezone.now() - timezone.timedelta(seconds=60)
    )
    return oauth_token(
        client,
        {
            "grant_type": DEVICE_CODE,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )


def test_the_device_flow_selects_the_community_and_its_refresh_keeps_it(client, vos):
    alice = member("alice", "lhcb", "belle2")
    response = device_login(client, alice, "vo:belle2")
    assert response.status_code == 200, response.content
    body = response.json()
    claims = claims_of(body["access_token"])
    assert (claims["iss"], claims["vo"], claims["client_id"]) == (
        f"{ISSUER}/belle2",
        "belle2",
        "epochauth-cli",
    )
    assert "vo:belle2" in body["scope"].split()
    assert client.get("/api/hello/", **bearer(body["access_token"])).status_code == 200
    refreshed = oauth_token(
        client,
        {
            "grant_type": "refresh_token",
            "refresh_token": body["refresh_token"],
            "client_id": "epochauth-cli",
        },
    )
    assert refreshed.status_code == 200, refreshed.content
    assert claims_of(refreshed.json()["access_token"])["vo"] == "belle2"
    # The community's epoch ends the grant's tokens and its refresh.
    revocation.bump_epoch(Epoch.Kind.COMMUNITY, "belle2")
    assert client.get("/api/hello/", **bearer(refreshed.json()["access_token"])).status_code == 401
    again = oauth_token(
        client,
        {
            "grant_type": "refresh_token",
            "refresh_token": refreshed.json()["refresh_token"],
            "client_id": "epochauth-cli",
        },
    )
    assert again.status_code == 400


def test_the_device_flow_refuses_a_community_the_user_is_not_in(client, vos):
    alice = member("alice", "lhcb")
    response = device_login(client, alice, "vo:belle2")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"
    assert response.json()["error_description"] == "You are not a member of that community"


def test_token_exchange_selects_a_community_its_identity_provider_may_enter(
    client, vos, settings, idp
):
    from oauth2_provider.models import get_application_model

    from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE

    application = get_application_model()
    application.objects.create(
        name="svc",
        client_id="svc",
        client_secret="svc-secret",
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_CLIENT_CREDENTIALS,
        user=make_user("owner"),
    )
    communities_ = {
        "lhcb": {"identity_providers": [idp.issuer]},
        "belle2": {"identity_providers": []},
    }
    settings.EPOCHAUTH = {
        **vos,
        "ISSUERS": [{"issuer": idp.issuer}],
        "COMMUNITIES": communities_,
        "DEFAULT_COMMUNITY": "lhcb",
    }

    def exchange(scope: str) -> Any:
        data = {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": idp.user_token("carol"),
            "subject_token_type": ACCESS_TOKEN_TYPE,
        }
        if scope:
            data["scope"] = scope
        return oauth_token(client, data, basic="svc:svc-secret")

    response = exchange("")
    assert response.status_code == 200, response.content
    claims = claims_of(response.json()["access_token"])
    assert (claims["iss"], claims["vo"]) == (f"{ISSUER}/lhcb", "lhcb")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "DEFAULT_COMMUNITY": "belle2"}
    refused_exchange = exchange("")
    assert refused_exchange.status_code == 400
    assert refused_exchange.json()["error_description"] == (
        "Your identity provider is not one of that community's"
    )
    assert exchange("vo:lhcb").json()["error_description"] == (
        "You are not a member of that community"
    )


#: The provider lhcb takes (below), and one it does not.
PROVIDER_Y = "https://y.example.org"
PROVIDER_X = "https://x.example.org"


@pytest.fixture
def lhcb_from_y(vos, settings) -> None:
    """lhcb admits users of provider Y only; belle2 of any."""
    settings.EPOCHAUTH = {
        **vos,
        "COMMUNITIES": {**COMMUNITIES, "lhcb": {"identity_providers": [PROVIDER_Y]}},
    }


def signed_in(user: Any, provider: str | None) -> Any:
    """A browser session of ``user``, signed in through ``provider`` (None: with a password)."""
    from django.test import Client

    from epochauth.oidc.recheck import PROVIDER_SESSION_KEY

    browser = Client()
    browser.force_login(user)
    if provider is not None:
        session = browser.session
        session[PROVIDER_SESSION_KEY] = provider
        session.save()
    return browser


def device_approval(client: Any, browser: Any, scope: str) -> tuple[Any, Any]:
    """The device flow asking for ``scope``, its code entered in ``browser``: (the confirm page,
    the device's poll of the token endpoint after it was shown)."""
    from urllib.parse import urlencode

    from django.utils import timezone
    from oauth2_provider.models import get_application_model, get_device_grant_model

    from epochauth.oauth.models import ensure_cli_application
    from epochauth.urns import DEVICE_CODE

    ensure_cli_application(get_application_model())
    device = client.post(
        "/o/device-authorization/",
        urlencode({"client_id": "epochauth-cli", "scope": scope}),
        content_type="application/x-www-form-urlencoded",
    ).json()
    entered = browser.post("/o/device/", {"user_code": device["user_code"]})
    assert entered.status_code == 302, entered.content
    page = browser.get(entered["Location"])
    if page.status_code == 200:
        assert browser.post(entered["Location"], {"action": "accept"}).status_code == 302
    get_device_grant_model().objects.filter(device_code=device["device_code"]).update(
        last_checked=timezone.now() - timezone.timedelta(seconds=60)
    )
    poll = oauth_token(
        client,
        {
            "grant_type": DEVICE_CODE,
            "device_code": device["device_code"],
            "client_id": "epochauth-cli",
        },
    )
    return page, poll


def test_a_device_code_for_a_community_is_not_approved_through_a_provider_it_does_not_take(
    client, lhcb_from_y
):
    """Signed in through provider X, approving a device code asking vo:lhcb (which takes Y only):
    a page that says why, and the device gets access_denied; Y, or a community taking any
    provider, is approved."""
    alice = member("alice", "lhcb", "belle2")
    page, poll = device_approval(client, signed_in(alice, PROVIDER_X), "vo:lhcb")
    assert page.status_code == 403
    assert "Your identity provider is not one of that community&#x27;s" in page.content.decode()
    assert poll.status_code == 400 and poll.json()["error"] == "access_denied"
    page, poll = device_approval(client, signed_in(alice, PROVIDER_X), "vo:belle2")
    assert page.status_code == 200 and poll.status_code == 200, poll.content
    assert claims_of(poll.json()["access_token"])["vo"] == "belle2"
    page, poll = device_approval(client, signed_in(alice, PROVIDER_Y), "vo:lhcb")
    assert poll.status_code == 200 and claims_of(poll.json()["access_token"])["vo"] == "lhcb"


def test_a_password_sign_in_is_bound_by_membership_not_by_identity_providers(
    client, lhcb_from_y, settings
):
    """``identity_providers`` names the external providers a community takes; a password sign-in
    comes through none: it enters every community its user is a member of, on every path (the
    password login, the device flow approved in its browser session), also one with an empty
    list. Membership is what keeps a password user out."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "COMMUNITIES": {**COMMUNITIES, "lhcb": {"identity_providers": []}},
    }
    alice = member("alice", "lhcb")
    assert claims_of(login(client, "alice", scope="vo:lhcb")["access_token"])["vo"] == "lhcb"
    page, poll = device_approval(client, signed_in(alice, None), "vo:lhcb")
    assert page.status_code == 200 and poll.status_code == 200, poll.content
    assert claims_of(poll.json()["access_token"])["vo"] == "lhcb"
    member("bob", "belle2")
    assert refused(client, "bob", scope="vo:lhcb")["error_description"] == (
        "You are not a member of that community"
    )


def test_the_code_flow_refuses_a_community_that_does_not_take_the_sessions_provider(
    client, lhcb_from_y
):
    """/o/authorize/ approved (here without a consent page) by a session signed in through X for
    vo:lhcb: back to the client with invalid_scope and the reason, no code; through Y, a code."""
    import base64
    import hashlib
    from urllib.parse import parse_qs, urlsplit

    from oauth2_provider.models import get_application_model

    application = get_application_model()
    redirect = "http://127.0.0.1:9/callback"
    application.objects.create(
        name="portal",
        client_id="portal",
        client_secret="portal-secret",
        client_type=application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect,
        skip_authorization=True,
    )
    verifier = "community-code-verifier-" * 3
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    alice = member("alice", "lhcb")

    def authorize(provider: str) -> dict[str, list[str]]:
        response = signed_in(alice, provider).get(
            "/o/authorize/",
            {
                "response_type": "code",
                "client_id": "portal",
                "redirect_uri": redirect,
                "scope": "vo:lhcb",
                "state": "s-1",
                "code_challenge": challenge.decode(),
                "code_challenge_method": "S256",
            },
        )
        assert response.status_code == 302, response.content
        assert response["Location"].startswith(redirect)
        return parse_qs(urlsplit(response["Location"]).query)

    answer = authorize(PROVIDER_X)
    assert answer == {
        "error": ["invalid_scope"],
        "error_description": ["Your identity provider is not one of that community's"],
        "state": ["s-1"],
    }
    code = authorize(PROVIDER_Y)["code"][0]
    token = oauth_token(
        client,
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect,
            "client_id": "portal",
            "client_secret": "portal-secret",
            "code_verifier": verifier,
        },
    )
    assert token.status_code == 200, token.content
    assert claims_of(token.json()["access_token"])["vo"] == "lhcb"


def test_the_signed_in_page_mints_for_the_chosen_community_and_its_providers_only(vos, settings):
    import re

    from django.test import Client

    from epochauth.oidc.views import PROVIDER_SESSION_KEY

    alice = member("alice", "lhcb", "belle2")
    browser = Client()
    browser.force_login(alice)
    page = browser.get("/oidc/tokens/").content.decode()
    assert '<option value="lhcb">LHCb</option>' in page
    assert '<option value="belle2">Belle II</option>' in page
    created = browser.post("/oidc/tokens/", {"vo": "belle2"}).content.decode()
    found = re.search(r'<pre id="access-token">([^<]+)</pre>', created)
    assert found is not None
    assert claims_of(found.group(1))["vo"] == "belle2"
    # Signed in through a provider lhcb does not take: no token of lhcb.
    settings.EPOCHAUTH = {
        **vos,
        "COMMUNITIES": {**COMMUNITIES, "lhcb": {"identity_providers": []}},
    }
    session = browser.session
    session[PROVIDER_SESSION_KEY] = "https://idp.example.org"
    session.save()
    refused_page = browser.post("/oidc/tokens/", {"vo": "lhcb"})
    assert refused_page.status_code == 400
    assert "Your identity provider is not one of that community&#x27;s" in (
        refused_page.content.decode()
    )
    assert browser.post("/oidc/tokens/", {"vo": "belle2"}).status_code == 200


# -- the admin ----------------------------------------------------------------------------------


def test_the_admin_filters_users_groups_and_sessions_by_community_and_edits_memberships(
    client, vos, admin_client
):
    alice = member("alice", "lhcb", groups=("lhcb_prod",))
    member("bob", "belle2")
    CommunityGroup.objects.create(group=Group.objects.get(name="lhcb_prod"), community="lhcb")
    Group.objects.create(name="site-wide")
    login(client, "alice", scope="vo:lhcb")
    users = admin_client.get("/admin/auth/user/", {"community": "lhcb"}).content.decode()
    assert ">alice<" in users and ">bob<" not in users
    groups = admin_client.get("/admin/auth/group/", {"community": "lhcb"}).content.decode()
    assert "lhcb_prod" in groups and "site-wide" not in groups
    sessions = "/admin/epochauth/session/"
    assert ">alice<" in admin_client.get(sessions, {"community": "lhcb"}).content.decode()
    assert ">alice<" not in admin_client.get(sessions, {"community": "belle2"}).content.decode()
    # A membership names one of COMMUNITIES, chosen by its name.
    add = "/admin/epochauth/communitymembership/add/"
    form = admin_client.get(add).content.decode()
    assert '<option value="belle2">Belle II</option>' in form
    refused = admin_client.post(add, {"user": alice.pk, "community": "cta"})
    assert (
        refused.status_code == 200
        and not CommunityMembership.objects.filter(community="cta").exists()
    )
    added = admin_client.post(add, {"user": alice.pk, "community": "belle2"})
    assert added.status_code == 302
    assert CommunityMembership.objects.filter(user=alice, community="belle2").exists()


def test_epochauth_issue_mints_for_a_community_of_the_user(vos):
    from io import StringIO

    from django.core.management import CommandError

    member("alice", "lhcb", "belle2")
    out = StringIO()
    call_command("epochauth_issue", "--user", "alice", "--vo", "belle2", stdout=out)
    claims = claims_of(out.getvalue().strip())
    assert (claims["iss"], claims["vo"], claims["scope"]) == (
        f"{ISSUER}/belle2",
        "belle2",
        "vo:belle2",
    )
    with pytest.raises(CommandError, match="select one with vo:<slug>"):
        call_command("epochauth_issue", "--user", "alice", stdout=StringIO())
    with pytest.raises(CommandError, match="Unknown community: cta"):
        call_command("epochauth_issue", "--user", "alice", "--vo", "cta", stdout=StringIO())


def test_userinfo_answers_a_community_token_until_its_community_is_revoked(client, vos, settings):
    from tests.helpers import openid_provider

    openid_provider(settings, COMMUNITIES={**COMMUNITIES, "lhcb": {"algorithm": "HS256"}})
    alice = member("alice", "lhcb")
    response = device_login(client, alice, "openid vo:lhcb")
    assert response.status_code == 200, response.content
    token = response.json()["access_token"]
    assert claims_of(token)["vo"] == "lhcb"
    answer = client.get("/o/userinfo/", **bearer(token))
    assert answer.status_code == 200 and answer.json()["sub"] == str(alice.pk)
    revocation.bump_epoch(Epoch.Kind.COMMUNITY, "lhcb")
    assert client.get("/o/userinfo/", **bearer(token)).status_code == 401
