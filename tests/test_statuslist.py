"""Token Status Lists (draft-ietf-oauth-status-list): our tokens reference one, the list we serve
flips the bit of every session a revocation path ends, and external issuers' lists are honoured."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
import token_status_list
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from epochauth import statuslist
from epochauth.models import Epoch, Issuer, Session
from epochauth.revocation import bump_epoch
from tests.helpers import login, make_user, rsa_pem
from tests.loopback_issuer import AUDIENCE, CraftedIssuer, compact

pytestmark = pytest.mark.django_db

ISSUER = "http://127.0.0.1:8000"
SIZE = 64


@pytest.fixture
def lists(settings: Any) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUER": ISSUER,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem(),
        "STATUS_LIST": {"size": SIZE, "ttl": timedelta(minutes=5)},
    }


def reference(access_token: str) -> dict[str, Any]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return claims["status"]["status_list"]


def list_claims(client: Client, uri: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """GET our list at ``uri``, verified with our published key: (header, claims)."""
    response = client.get(uri.removeprefix(ISSUER), HTTP_ACCEPT=statuslist.MEDIA_TYPE)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/statuslist+jwt"
    token = response.content.decode()
    keys = jwt.PyJWKSet.from_dict(client.get("/.well-known/jwks.json").json())
    header = jwt.get_unverified_header(token)
    claims = jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=["RS256"],
        issuer=ISSUER,
        options={"require": ["sub", "iat", "exp"]},
    )
    return header, claims


def bit(client: Client, access_token: str, fresh: bool = True) -> int:
    """The status our served list gives the token; ``fresh``: the list served before is dropped."""
    if fresh:
        cache.clear()
    found = reference(access_token)
    _header, claims = list_claims(client, found["uri"])
    listed = claims["status_list"]
    return statuslist.status_at(statuslist.decode(listed["lst"]), listed["bits"], found["idx"])


# -- the format ------------------------------------------------------------------------------------

#: draft-ietf-oauth-status-list section 4.1's examples: statuses, bits, the byte array, its lst.
DRAFT_EXAMPLES = [
    ([1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 0, 1], 1, b"\xb9\xa3", "eNrbuRgAAhcBXQ"),
    ([1, 2, 0, 3, 0, 1, 0, 1, 1, 2, 3, 3], 2, b"\xc9\x44\xf9", "eNo76fITAAPfAgc"),
]


@pytest.mark.parametrize(("statuses", "bits", "array", "lst"), DRAFT_EXAMPLES)
def test_the_drafts_examples(statuses: list[int], bits: int, array: bytes, lst: str) -> None:
    assert statuslist.encode(array) == lst
    assert statuslist.decode(lst) == array
    assert [statuslist.status_at(array, bits, i) for i in range(len(statuses))] == statuses
    # The second implementation reads and writes the same (token-status-list from PyPI).
    theirs = token_status_list.BitArray.from_b64(bits, lst)
    assert [theirs.get(i) for i in range(len(statuses))] == statuses
    assert token_status_list.BitArray(bits, bytearray(array)).to_b64() == lst


def test_a_corrupt_list_is_refused() -> None:
    with pytest.raises(ValueError):
        statuslist.decode("eNrbuRgAAhcBX")  # truncated
    with pytest.raises(IndexError):
        statuslist.status_at(b"\x00", 1, 8)


def test_off_by_default(client: Client) -> None:
    make_user("alice")
    assert "status" not in jwt.decode(
        login(client, "alice")["access_token"], options={"verify_signature": False}
    )
    assert client.get("/auth/statuslists/0").status_code == 404


def test_a_sessions_tokens_share_its_index(lists: None, client: Client) -> None:
    make_user("alice")
    pair = login(client, "alice")
    found = reference(pair["access_token"])
    assert found["uri"] == f"{ISSUER}/auth/statuslists/0"
    assert 0 <= found["idx"] < SIZE
    renewed = client.post(
        "/auth/token/renew/", HTTP_AUTHORIZATION=f"Bearer {pair['access_token']}"
    ).json()
    refreshed = client.post(
        "/auth/token/refresh/",
        {"refresh_token": pair["refresh_token"]},
        content_type="application/json",
    ).json()
    assert reference(renewed["access_token"]) == found
    assert reference(refreshed["access_token"]) == found
    assert reference(login(client, "alice")["access_token"])["idx"] != found["idx"]


def test_a_browser_logins_tokens_reference_its_session(lists: None, client: Client) -> None:
    client.force_login(make_user("alice"))
    response = client.post("/oidc/tokens/")
    found = reference(response.context["access_token"])
    assert bit(client, response.context["access_token"]) == statuslist.VALID
    assert found["uri"] == f"{ISSUER}/auth/statuslists/0"


def test_the_status_list_token(lists: None, client: Client) -> None:
    make_user("alice")
    access = login(client, "alice")["access_token"]
    found = reference(access)
    header, claims = list_claims(client, found["uri"])
    assert header["typ"] == "statuslist+jwt"
    assert claims["sub"] == found["uri"]
    assert claims["ttl"] == 300
    assert claims["exp"] > claims["iat"]
    array = zlib.decompress(jwt.utils.base64url_decode(claims["status_list"]["lst"]))
    assert claims["status_list"]["bits"] == 1 and len(array) == SIZE // 8
    # Index 0 is the least significant bit of the first byte; only the live session's is 0.
    ours = token_status_list.BitArray.from_b64(1, claims["status_list"]["lst"])
    assert [i for i in range(SIZE) if ours.get(i) == 0] == [found["idx"]]
    assert array[found["idx"] // 8] == 0xFF ^ (1 << found["idx"] % 8)


def test_a_list_no_session_reaches_is_not_found(lists: None, client: Client) -> None:
    make_user("alice")
    login(client, "alice")
    assert client.get("/auth/statuslists/1").status_code == 404


def test_only_a_status_list_token_is_served(lists: None, client: Client) -> None:
    make_user("alice")
    login(client, "alice")
    assert client.get("/auth/statuslists/0", HTTP_ACCEPT="application/json").status_code == 406
    assert client.get("/auth/statuslists/0", HTTP_ACCEPT="*/*").status_code == 200


def test_a_served_list_is_reused_for_its_ttl(lists: None, client: Client) -> None:
    make_user("alice")
    access = login(client, "alice")["access_token"]
    path = reverse("epochauth-statuslist", kwargs={"number": 0})
    first = client.get(path).content
    client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {access}")
    with CaptureQueriesContext(connection) as queries:
        again = client.get(path).content
    assert again == first and len(queries) == 0
    assert bit(client, access, fresh=False) == statuslist.VALID
    assert bit(client, access) == statuslist.INVALID


# -- every revocation path sets the bits of the sessions it ends ----------------------------------


def _logout(client: Client, access: str, user: Any) -> None:
    assert client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 204


def _logout_all(client: Client, access: str, user: Any) -> None:
    response = client.post("/auth/logout-all/", HTTP_AUTHORIZATION=f"Bearer {access}")
    assert response.status_code == 204


def _user_bump(client: Client, access: str, user: Any) -> None:
    bump_epoch(Epoch.Kind.USER, str(user.pk), reason="test")


def _global_bump(client: Client, access: str, user: Any) -> None:
    time.sleep(0.001)  # the bump's time after the session's start
    bump_epoch(Epoch.Kind.GLOBAL, "", reason="test")


def _admin_end(client: Client, access: str, user: Any) -> None:
    admin = get_user_model().objects.create_superuser("root", password="pw")
    browser = Client()
    browser.force_login(admin)
    session = Session.objects.get(
        pk=jwt.decode(access, options={"verify_signature": False})["sid"]
    )
    response = browser.post(reverse("admin:epochauth_session_end", args=[session.pk]))
    assert response.status_code == 302


def _deactivation(client: Client, access: str, user: Any) -> None:
    user.is_active = False
    user.save()


def _password_change(client: Client, access: str, user: Any) -> None:
    user.set_password("new-pw")
    user.save()


def _session_deleted(client: Client, access: str, user: Any) -> None:
    Session.objects.filter(user=user).delete()


PATHS: dict[str, Callable[[Client, str, Any], None]] = {
    "logout": _logout,
    "logout-all": _logout_all,
    "user epoch bump": _user_bump,
    "global epoch bump": _global_bump,
    "admin ends the session": _admin_end,
    "deactivation": _deactivation,
    "password change": _password_change,
    "session row deleted": _session_deleted,
}


@pytest.mark.parametrize("path", PATHS)
def test_every_revocation_path_sets_the_bit(lists: None, client: Client, path: str) -> None:
    user = make_user("alice")
    bystander = make_user("bob")
    access = login(client, "alice")["access_token"]
    other = login(client, "bob")["access_token"]
    assert bit(client, access) == statuslist.VALID
    PATHS[path](client, access, user)
    assert bit(client, access) == statuslist.INVALID
    if path != "global epoch bump":
        assert bit(client, other) == statuslist.VALID, bystander


def test_a_group_bump_or_leaving_the_group_sets_the_bits_of_its_sessions(
    lists: None, client: Client, settings: Any
) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SCOPES": {"g:physics": "", "g:chem": ""}}
    user = make_user("alice", groups=["physics", "chem"])
    physics = login(client, "alice", scope="g:physics")["access_token"]
    chem = login(client, "alice", scope="g:chem")["access_token"]
    time.sleep(0.001)
    bump_epoch(Epoch.Kind.GROUP, str(Group.objects.get(name="physics").pk), reason="test")
    assert bit(client, physics) == statuslist.INVALID
    assert bit(client, chem) == statuslist.VALID
    user.groups.remove(Group.objects.get(name="chem"))  # leaving the session's group ends it too
    assert bit(client, chem) == statuslist.INVALID


# -- external issuers' lists ------------------------------------------------------------------------


@pytest.fixture
def crafted() -> Iterator[CraftedIssuer]:
    issuer = CraftedIssuer()
    yield issuer
    issuer.stop()


LIST_PATH = "/statuslists/1"


def serve_list(issuer: CraftedIssuer, revoked: set[int], **claims: Any) -> str:
    """Serve a Status List Token signed by the issuer with the indices ``revoked`` set."""
    array = bytearray(2)
    for index in revoked:
        array[index // 8] |= 1 << index % 8
    uri = issuer.issuer + LIST_PATH
    now = int(time.time())
    body = {
        "iss": issuer.issuer,
        "sub": uri,
        "iat": now,
        "exp": now + 600,
        "ttl": 300,
        "status_list": {"bits": 1, "lst": statuslist.encode(bytes(array))},
        **claims,
    }
    private_key, alg = issuer.keys["rsa-1"]
    token = compact({"alg": alg, "typ": "statuslist+jwt", "kid": "rsa-1"}, body, private_key)
    issuer.documents[LIST_PATH] = (statuslist.MEDIA_TYPE, token.encode())
    return uri


def allow(settings: Any, issuer: CraftedIssuer, mode: str | None) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [{"issuer": issuer.issuer, "audiences": [AUDIENCE], "status_list": mode}],
    }


def call(client: Client, token: str) -> int:
    return client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def with_status(issuer: CraftedIssuer, idx: int, uri: str | None = None) -> str:
    uri = uri or issuer.issuer + LIST_PATH
    return issuer.token(status={"status_list": {"idx": idx, "uri": uri}})


def test_an_external_token_whose_bit_is_set_is_refused(
    settings: Any, client: Client, crafted: CraftedIssuer
) -> None:
    allow(settings, crafted, statuslist.CLOSED)
    serve_list(crafted, revoked={3})
    assert call(client, with_status(crafted, 2)) == 200
    assert call(client, with_status(crafted, 3)) == 401
    assert call(client, with_status(crafted, 16)) == 401  # beyond the list
    # One fetch for every token of the list, for its ttl.
    assert crafted.counts[LIST_PATH] == 1


def test_the_list_must_be_on_the_issuers_origin(
    settings: Any, client: Client, crafted: CraftedIssuer
) -> None:
    other = CraftedIssuer()
    try:
        allow(settings, crafted, statuslist.OPEN)
        serve_list(other, revoked=set())
        assert call(client, with_status(crafted, 2, other.issuer + LIST_PATH)) == 401
        assert other.counts[LIST_PATH] == 0
    finally:
        other.stop()


def test_a_list_is_fetched_again_after_its_ttl(
    settings: Any, client: Client, crafted: CraftedIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    allow(settings, crafted, statuslist.CLOSED)
    serve_list(crafted, revoked=set())
    token = with_status(crafted, 3)
    assert call(client, token) == 200
    serve_list(crafted, revoked={3})
    assert call(client, token) == 200  # the copy held for its ttl
    later = time.monotonic() + 301
    monkeypatch.setattr(statuslist.time, "monotonic", lambda: later)
    assert call(client, token) == 401
    assert crafted.counts[LIST_PATH] == 2


@pytest.mark.parametrize(("mode", "expected"), [(statuslist.CLOSED, 401), (statuslist.OPEN, 200)])
def test_a_list_that_cannot_be_had(
    settings: Any, client: Client, crafted: CraftedIssuer, mode: str, expected: int
) -> None:
    allow(settings, crafted, mode)
    token = with_status(crafted, 3)
    assert call(client, token) == expected  # 404
    assert call(client, token) == expected
    assert crafted.counts[LIST_PATH] == 1  # not asked again at once


@pytest.mark.parametrize(
    "claims",
    [{"sub": "http://elsewhere/statuslists/1"}, {"iss": "http://127.0.0.1:1"}, {"exp": 1}],
    ids=["sub", "iss", "exp"],
)
def test_a_list_token_that_does_not_verify_is_no_list(
    settings: Any, client: Client, crafted: CraftedIssuer, claims: dict[str, Any]
) -> None:
    allow(settings, crafted, statuslist.CLOSED)
    serve_list(crafted, revoked=set(), **claims)
    assert call(client, with_status(crafted, 3)) == 401


def test_status_is_ignored_without_the_option(
    settings: Any, client: Client, crafted: CraftedIssuer
) -> None:
    allow(settings, crafted, None)
    serve_list(crafted, revoked={3})
    assert call(client, with_status(crafted, 3)) == 200
    assert crafted.counts[LIST_PATH] == 0


def test_a_malformed_status_is_refused(
    settings: Any, client: Client, crafted: CraftedIssuer
) -> None:
    allow(settings, crafted, statuslist.OPEN)
    for status in ({"status_list": {"idx": "3", "uri": "x"}}, {"status_list": []}, "x"):
        assert call(client, crafted.token(status=status)) == 401


def test_an_issuer_row_has_the_option_too(
    settings: Any, client: Client, crafted: CraftedIssuer, django_capture_on_commit_callbacks: Any
) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    with django_capture_on_commit_callbacks(execute=True):
        call_command("epochauth_issuer", "add", crafted.issuer, "--audience", AUDIENCE)
    serve_list(crafted, revoked={3})
    assert call(client, with_status(crafted, 3)) == 200
    with django_capture_on_commit_callbacks(execute=True):
        call_command("epochauth_issuer", "add", crafted.issuer, "--status-list", "closed")
    assert Issuer.objects.get().config().status_list == statuslist.CLOSED
    assert call(client, with_status(crafted, 3)) == 401


def test_a_community_bump_sets_the_bits_of_that_communitys_sessions(
    lists: None, client: Client
) -> None:
    from epochauth.models import CommunityMembership

    user = make_user("alice")
    for slug in ("lhcb", "belle2"):  # the test project's communities
        CommunityMembership.objects.create(user=user, community=slug)
    lhcb = login(client, "alice", scope="vo:lhcb")["access_token"]
    belle2 = login(client, "alice", scope="vo:belle2")["access_token"]
    assert bit(client, lhcb) == bit(client, belle2) == statuslist.VALID
    time.sleep(0.001)
    bump_epoch(Epoch.Kind.COMMUNITY, "lhcb", reason="test")
    assert bit(client, lhcb) == statuslist.INVALID
    assert bit(client, belle2) == statuslist.VALID
