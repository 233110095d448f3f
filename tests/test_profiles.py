"""The WLCG and SciTokens token profiles of external issuers: hierarchical storage scopes, their
any-audience values and ``wlcg.groups``, with tokens of the real test IdP and of the SciTokens library."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import scitokens
from cryptography.hazmat.primitives import serialization
from django.contrib.auth.models import Group
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth.authentication import BearerAuthentication
from epochauth.keys import generate_private_key_pem
from epochauth.models import Issuer
from epochauth.permissions import HasAnyScope, HasScope
from epochauth.profiles import grants
from epochauth.tokens import mint_access_token
from tests.conftest import start_idp
from tests.helpers import make_user
from tests.idp import DEFAULT_RESOURCE, TestIdP
from tests.loopback_issuer import CraftedIssuer, key

WLCG_SCOPES = "storage.read:/data storage.modify:/data/out compute.read"


@pytest.mark.parametrize(
    "granted, required, expected",
    [
        ("storage.read:/data", "storage.read:/data", True),
        ("storage.read:/data", "storage.read:/data/file", True),
        ("storage.read:/data/", "storage.read:/data/sub/file", True),
        ("storage.read:/", "storage.read:/anything/at/all", True),
        ("storage.read", "storage.read:/anything", True),
        ("storage.read:/data", "storage.read:/database", False),
        ("storage.read:/data", "storage.read:/", False),
        ("storage.read:/data", "storage.read:/data/../etc", False),
        ("storage.read:/data/..", "storage.read:/etc", False),
        ("storage.read:/data/../etc", "storage.read:/data/x", False),
        ("storage.read:data", "storage.read:data/x", False),
        ("storage.modify:/data", "storage.create:/data/new", True),
        ("storage.create:/data", "storage.modify:/data/new", False),
        ("storage.modify:/data", "storage.read:/data/new", False),
        ("storage.read:/data", "storage.stage:/data/x", False),
        # WLCG Common JWT Profile 1.3 section 2.2.1: stage no longer reads; it polls, and so may
        # poll alone; read, create, modify and stage authorize stat, which no scope names.
        ("storage.stage:/tape", "storage.read:/tape/f", False),
        ("storage.stage:/tape", "storage.poll:/tape/f", True),
        ("storage.poll:/tape", "storage.poll:/tape/f", True),
        ("storage.poll:/tape", "storage.poll:/disk/f", False),
        ("storage.poll:/tape", "storage.stage:/tape/f", False),
        ("storage.poll:/tape", "storage.read:/tape/f", False),
        ("storage.read:/data", "storage.stat:/data/f", True),
        ("storage.create:/data/out", "storage.stat:/data/out/f", True),
        ("storage.modify:/data", "storage.stat:/data/f", True),
        ("storage.stage:/tape", "storage.stat:/tape/f", True),
        ("storage.read:/data", "storage.stat:/database", False),
        ("storage.poll:/tape", "storage.stat:/tape/f", False),
        ("storage.stat:/data", "storage.stat:/data/f", False),
        ("storage.stat:/data", "storage.stat:/data", False),
        ("read:/home", "storage.stat:/home/f", False),
        ("compute.read", "compute.read", True),
        ("compute.read", "compute.modify", False),
        ("compute.read:/x", "compute.read:/x/y", False),
        ("read:/home", "read:/home/alice", True),
        ("write:/home", "read:/home/alice", False),
    ],
)
def test_hierarchical_scopes(granted, required, expected):
    assert grants(frozenset(granted.split()), required) is expected


#: Paths that are not in canonical form, each one a storage system might resolve to something under
#: (or outside) ``/data``: as a requested path they are never granted, as a granted one they grant nothing.
HOSTILE_PATHS = [
    "//data",
    "//data/file",
    "/data//file",
    "/data/",  # trailing "/": canonical (the directory), here as the control: granted
    "/data/%2e%2e/etc",
    "/data/%2E%2E/etc",
    "/data/%2fetc",
    "/data/file%00",
    "/data/../etc",
    "/data/..",
    "/data/./file",
    "/data/.",
    "/data/\u2025/etc",  # TWO DOT LEADER
    "/data/\u2024\u2024/etc",  # ONE DOT LEADER twice
    "/data/\uff0e\uff0e/etc",  # FULLWIDTH FULL STOP twice
    "/data/\uff0fetc",  # FULLWIDTH SOLIDUS
    "/data/\u2215etc",  # DIVISION SLASH
    "/data/..\\etc",
    "/data\\..\\etc",
    "/data/file\x00.txt",
    "/data/\x01",
    "/data/\x7f",
    "/data/a\tb",
    "/data/a\nb",
    "/data/ ",
    "/data/a b",
    '/data/a"b',  # no scope-token (RFC 6749 section 3.3) holds a quote
    "/data/a\rb",
    "/data/\u200bfile",  # ZERO WIDTH SPACE
    "/data/caf\u00e9",
    "/d\u0430ta/file",  # CYRILLIC SMALL LETTER A
    "data/file",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_requested_path_not_in_canonical_form_is_not_granted(path):
    for granted in (
        "storage.read:/data",
        "storage.read:/",
        "storage.read",
        f"storage.read:{path}",
    ):
        assert grants(frozenset({granted}), f"storage.read:{path}") is (path == "/data/"), granted


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_granted_path_not_in_canonical_form_grants_nothing(path):
    granted = frozenset({f"storage.read:{path}", f"read:{path}"})
    for required in ("/data", "/data/file", "/etc", "/data/etc", "/"):
        assert grants(granted, f"storage.read:{required}") is (
            path == "/data/" and required.startswith("/data")
        ), required
    assert grants(granted, f"read:{path}") is (path == "/data/")


@pytest.mark.parametrize(
    "path", ["/data/.hidden", "/data/...", "/data/run-1_2.root", "/data/a~b!#$&'()*+,;=:@[]{}|^`"]
)
def test_every_scope_token_character_but_percent_is_part_of_a_name(path):
    assert grants(frozenset({"storage.read:/data"}), f"storage.read:{path}")
    assert grants(frozenset({f"storage.read:{path}"}), f"storage.read:{path}")
    assert not grants(frozenset({f"storage.read:{path}"}), "storage.read:/data")


class Storage(APIView):
    """A storage endpoint as an XRootD or dCache front end would guard it."""

    authentication_classes = (BearerAuthentication,)
    permission_classes = (HasScope,)
    required_scopes: tuple[str, ...] = ()

    def get(self, request: Any) -> Response:
        return Response({"groups": list(request.auth.groups)})


def call(token: str, *scopes: str, permission: type = HasScope) -> Any:
    view = Storage.as_view(required_scopes=scopes, permission_classes=(permission,))
    return view(APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}"))


@pytest.fixture
def save(django_capture_on_commit_callbacks: Any) -> Any:
    """Save an Issuer row and run what its commit does (every process reloads the issuers)."""

    def save_row(row: Issuer) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            row.save()

    return save_row


@pytest.fixture(scope="module")
def wlcg_idp() -> Iterator[TestIdP]:
    """A provider whose resource grants WLCG storage and compute scopes, users in WLCG groups."""
    provider = start_idp(
        env={"IDP_RESOURCE_SCOPE": WLCG_SCOPES, "IDP_USER_GROUPS": '["/cms", "/cms/uscms"]'}
    )
    yield provider
    provider.stop()


@pytest.fixture
def wlcg_issuer(wlcg_idp: TestIdP, settings: Any, db: Any) -> Issuer:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    return Issuer.objects.create(
        issuer=wlcg_idp.issuer, audiences=[DEFAULT_RESOURCE], profile="wlcg"
    )


def test_wlcg_storage_scopes_from_the_idp(wlcg_idp, wlcg_issuer):
    token = wlcg_idp.client_credentials_token(scope=WLCG_SCOPES)
    assert call(token, "storage.read:/data/run1/file.root").status_code == 200
    assert call(token, "storage.read:/data").status_code == 200
    assert call(token, "storage.create:/data/out/new.root").status_code == 200
    assert call(token, "storage.modify:/data/out/x", "compute.read").status_code == 200
    for refused in (
        "storage.read:/database",
        "storage.create:/data/in",
        "storage.read:/data/../etc",
        "storage.read://data",
        "storage.read:/data/%2e%2e/etc",
        "storage.read:/data/\u2025/etc",
        "compute.modify",
    ):
        response = call(token, refused)
        assert response.status_code == 403, refused
        assert response["WWW-Authenticate"].startswith(
            'Bearer realm="api", error="insufficient_scope"'
        )
    assert (
        call(
            token, "storage.read:/etc", "storage.read:/data/x", permission=HasAnyScope
        ).status_code
        == 200
    )


def test_a_repeated_wlcg_token_makes_no_query(wlcg_idp, wlcg_issuer, django_assert_num_queries):
    token = wlcg_idp.user_token("carol", scope=WLCG_SCOPES)
    assert call(token, "storage.read:/data/x").status_code == 200
    with django_assert_num_queries(0):
        assert call(token, "storage.create:/data/out/y").status_code == 200
        assert call(token, "storage.read:/etc").status_code == 403


def test_without_the_profile_scopes_are_whole_names_only(wlcg_idp, wlcg_issuer, save):
    wlcg_issuer.profile = ""
    save(wlcg_issuer)
    token = wlcg_idp.client_credentials_token(scope=WLCG_SCOPES)
    assert call(token, "storage.read:/data").status_code == 200
    assert call(token, "storage.read:/data/run1/file.root").status_code == 403
    assert call(token, "storage.create:/data/out/new.root").status_code == 403


def test_wlcg_groups_is_the_default_group_claim(wlcg_idp, wlcg_issuer, save):
    wlcg_issuer.group_prefix = "iam:"  # its groups, in its namespace
    save(wlcg_issuer)
    token = wlcg_idp.user_token("alice", scope=WLCG_SCOPES)
    assert call(token, "storage.read:/data/x").data["groups"] == ["iam:/cms", "iam:/cms/uscms"]
    wlcg_issuer.profile = ""
    save(wlcg_issuer)
    # Now no claim names groups: a new user has only the groups given here (none).
    bob = wlcg_idp.user_token("bob", scope=WLCG_SCOPES)
    assert call(bob, "storage.read:/data").data["groups"] == []


# -- tokens the SciTokens reference library mints -----------------------------------------------


@pytest.fixture
def scitokens_issuer(settings: Any, db: Any) -> Iterator[CraftedIssuer]:
    """A loopback issuer publishing one RSA key, whose tokens the scitokens library signs."""
    crafted = CraftedIssuer(keys={"sci-1": (key("rsa-a"), "RS256")})
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    yield crafted
    crafted.stop()


def scitoken(issuer: str, audience: str, scope: str, *, kid: str | None = None) -> str:
    token = scitokens.SciToken(key=key("rsa-a"), key_id=kid)
    token.update_claims(
        {"ver": "scitoken:2.0", "aud": audience, "scope": scope, "sub": "htcondor"}
    )
    serialized = token.serialize(issuer=issuer, lifetime=600)
    return serialized.decode() if isinstance(serialized, bytes) else serialized


@pytest.mark.parametrize("kid", ["sci-1", None], ids=["kid", "no-kid"])
def test_scitokens_library_tokens_with_the_any_audience(scitokens_issuer, kid):
    Issuer.objects.create(
        issuer=scitokens_issuer.issuer, profile="scitokens", accept_any_audience=True
    )
    token = scitoken(scitokens_issuer.issuer, "ANY", "read:/home write:/home/htcondor", kid=kid)
    assert call(token, "read:/home/htcondor/job.log").status_code == 200
    assert call(token, "write:/home/htcondor/out").status_code == 200
    assert call(token, "write:/home/other").status_code == 403
    # The WLCG value is the WLCG profile's: refused from a SciTokens issuer.
    wlcg_any = scitoken(
        scitokens_issuer.issuer, "https://wlcg.cern.ch/jwt/v1/any", "read:/home", kid=kid
    )
    assert call(wlcg_any, "read:/home").status_code == 401


@pytest.mark.parametrize("version", ["1.0", "1.3"])
def test_a_wlcg_issuers_stage_scope_polls_and_stats_but_never_reads(scitokens_issuer, version):
    """Profile 1.3 section 2.2.1, whatever ``wlcg.ver`` the token says ("1.0" from issuers that
    follow 1.3: section 2.1.1): the stage scope authorizes poll and stat, and no longer read."""
    Issuer.objects.create(issuer=scitokens_issuer.issuer, profile="wlcg", accept_any_audience=True)
    token = scitokens.SciToken(key=key("rsa-a"), key_id="sci-1")
    token.update_claims(
        {
            "wlcg.ver": version,
            "aud": "https://wlcg.cern.ch/jwt/v1/any",
            "scope": "storage.stage:/tape storage.poll:/archive storage.create:/out",
            "sub": "fts",
        }
    )
    serialized = token.serialize(issuer=scitokens_issuer.issuer, lifetime=600)
    wlcg = serialized.decode() if isinstance(serialized, bytes) else serialized
    for granted in (
        "storage.stage:/tape/run1.raw",
        "storage.poll:/tape/run1.raw",
        "storage.stat:/tape/run1.raw",
        "storage.poll:/archive/f",
        "storage.stat:/out/new.root",
    ):
        assert call(wlcg, granted).status_code == 200, granted
    for refused in (
        "storage.read:/tape/run1.raw",
        "storage.stat:/archive/f",
        "storage.stage:/archive/f",
        "storage.read:/out/new.root",
    ):
        assert call(wlcg, refused).status_code == 403, refused


def test_scitokens_any_is_refused_unless_the_issuer_accepts_it(scitokens_issuer, save):
    row = Issuer.objects.create(
        issuer=scitokens_issuer.issuer, audiences=[DEFAULT_RESOURCE], profile="scitokens"
    )
    token = scitoken(scitokens_issuer.issuer, "ANY", "read:/home", kid="sci-1")
    response = call(token, "read:/home")
    assert response.status_code == 401
    assert "not meant for this service" in response["WWW-Authenticate"]
    row.accept_any_audience = True
    save(row)
    assert call(token, "read:/home").status_code == 200
    # Marked as WLCG instead, the issuer's ANY means nothing, from the next request on.
    row.profile = "wlcg"
    save(row)
    assert call(token, "read:/home").status_code == 401


def test_paths_not_in_canonical_form_are_neither_granted_nor_grant(scitokens_issuer):
    Issuer.objects.create(
        issuer=scitokens_issuer.issuer, profile="scitokens", accept_any_audience=True
    )
    scope = "read:/ok read://home read:/data/%2e%2e read:/srv/\u2025 write:/tmp/"
    token = scitoken(scitokens_issuer.issuer, "ANY", scope, kid="sci-1")
    for granted in ("read:/ok/file", "write:/tmp", "write:/tmp/x/"):
        assert call(token, granted).status_code == 200, granted
    for refused in (
        "read://home",
        "read:/home",
        "read:/data/%2e%2e",
        "read:/data",
        "read:/srv/\u2025",
        "read:/srv",
        "read:/ok//file",
        "read://ok/file",
        "read:/ok/%2e%2e/etc",
        "read:/ok/\u2025/etc",
        "read:/ok/\uff0e\uff0e/etc",
        "read:/ok/../etc",
        "read:/ok\\..\\etc",
        "read:/ok/a\nb",
        'read:/ok/a"b',
    ):
        response = call(token, refused)
        assert response.status_code == 403, refused
        # A challenge naming the scope only where the scope can be written in it (RFC 6750 section 3).
        challenge = response["WWW-Authenticate"]
        assert challenge.startswith('Bearer realm="api", error="insufficient_scope"'), refused
        assert challenge.count('"') == 4 + 2 * ("scope=" in challenge), refused


# -- our tokens in the WLCG profile, as the SciTokens library's Enforcer checks them ---------------

STORAGE = "https://storage.example.org"


@pytest.fixture
def wlcg_minting(settings: Any, live_server: Any, tmp_path: Any, monkeypatch: Any) -> str:
    """We are the issuer, at the live server's URL, with an RS256 key (the SciTokens library verifies
    RS256 and ES256 only); scitokens keeps its key cache under ``tmp_path``."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUER": live_server.url,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": generate_private_key_pem("RS256"),
        "AUDIENCE": STORAGE,
        "TOKEN_PROFILE": "wlcg",
    }
    return live_server.url


def wlcg_enforcer(issuer: str) -> scitokens.Enforcer:
    """The Enforcer as a WLCG service builds it on the SciTokens library, which knows SciTokens'
    claims only: the WLCG profile's two it is told of, and it ignores RFC 9068's ``client_id``
    and our revocation claims (the profile has consumers ignore claims it does not define)."""
    enforcer = scitokens.Enforcer(issuer, audience=STORAGE)
    enforcer.add_validator("wlcg.ver", lambda value: value == "1.0")
    enforcer.add_validator(
        "wlcg.groups", lambda value: all(name.startswith("/") for name in value)
    )
    enforcer.add_validator("client_id", lambda value: isinstance(value, str))
    for name in ("epoch", "global_epoch"):
        enforcer.add_validator(name, lambda value: isinstance(value, int))
    return enforcer


def test_our_wlcg_tokens_pass_the_scitokens_enforcer(wlcg_minting, client):
    user = make_user("alice")
    user.groups.add(Group.objects.create(name="cms"), Group.objects.create(name="cms/uscms"))
    issued = mint_access_token(
        user, scope="storage.read:/data storage.modify:/data/out compute.read"
    )
    claims = issued.claims
    assert claims["wlcg.ver"] == "1.0" and claims["aud"] == STORAGE
    assert claims["wlcg.groups"] == ["/cms", "/cms/uscms"]
    assert "preferred_username" not in claims and "groups" not in claims

    token = scitokens.SciToken.deserialize(issued.token, insecure=True)
    assert token["sub"] == str(user.pk)
    enforcer = wlcg_enforcer(wlcg_minting)
    assert enforcer.test(token, "storage.read", "/data/run1/file.root"), enforcer.last_failure
    assert enforcer.test(token, "storage.modify", "/data/out/x"), enforcer.last_failure
    assert enforcer.test(token, "compute.read"), enforcer.last_failure
    assert not enforcer.test(token, "storage.read", "/etc/passwd")
    assert not enforcer.test(token, "storage.modify", "/data/in")
    assert not scitokens.Enforcer(wlcg_minting, audience="https://other.example.org").test(
        token, "storage.read", "/data"
    )
    # We accept them ourselves, with the groups read back from wlcg.groups, the scopes by path.
    response = client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    assert response.status_code == 200 and response.json()["groups"] == ["cms", "cms/uscms"]
    assert call(issued.token, "storage.create:/data/out/new").status_code == 200
    assert call(issued.token, "storage.read:/etc").status_code == 403


def test_without_the_profile_the_enforcer_refuses_our_tokens(wlcg_minting, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_PROFILE": None}
    issued = mint_access_token(make_user("alice"), scope="storage.read:/data")
    # Not a WLCG issuer, nor an OpenID provider here: no openid-configuration to discover keys at.
    signing_key = serialization.load_pem_private_key(
        settings.EPOCHAUTH["SIGNING_KEY"].encode(), None
    )
    public_key = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = scitokens.SciToken.deserialize(issued.token, public_key=public_key)
    enforcer = wlcg_enforcer(wlcg_minting)
    assert not enforcer.test(token, "storage.read", "/data/x")
    assert "preferred_username" in enforcer.last_failure
