"""Scopes (403 insufficient_scope, case-sensitive whole words) and groups (the selected one only)."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth.authentication import BearerAuthentication
from epochauth.permissions import HasAnyScope, HasScope, InGroup
from epochauth.tokens import mint_access_token
from tests.helpers import login, make_user
from tests.loopback_issuer import CraftedIssuer

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def token_with_scope(scope: str, username: str = "alice") -> str:
    return mint_access_token(make_user(username), scope=scope).token


def test_reports_with_scope(client):
    make_user("alice")
    token = login(client, "alice", scope="reports:read")["access_token"]
    response = client.get("/api/reports/", **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"reports": []}


def test_reports_without_scope_is_403_insufficient_scope(client):
    make_user("alice")
    token = login(client, "alice")["access_token"]
    response = client.get("/api/reports/", **bearer(token))
    assert response.status_code == 403
    assert response["WWW-Authenticate"].startswith(
        'Bearer realm="api", error="insufficient_scope"'
    )
    assert 'scope="reports:read"' in response["WWW-Authenticate"]


def test_reports_without_token_is_401(client):
    response = client.get("/api/reports/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == (
        'Bearer realm="api", DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256"'
    )


@pytest.mark.parametrize(
    "scope",
    [
        "reports:READ",
        "Reports:read",
        "reports:rea",
        "reports",
        "reports:read:all",
        "xreports:read",
        "reports:read,",
        # RFC 6749 section 3.3: only the ASCII space separates scope-tokens.
        "reports:read\u00a0admin",
        "admin\u2003reports:read",
        "reports:read\tadmin",
        "reports:read\nadmin",
    ],
)
def test_scope_match_is_case_sensitive_and_whole_word(client, scope):
    response = client.get("/api/reports/", **bearer(token_with_scope(scope)))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    "scope", ["reports:read", "openid reports:read", "a reports:read b", "  reports:read  "]
)
def test_scope_among_others(client, scope):
    assert client.get("/api/reports/", **bearer(token_with_scope(scope))).status_code == 200


class AllScopesView(APIView):
    authentication_classes = [BearerAuthentication]
    permission_classes = [HasScope]
    required_scopes = ["a", "b"]

    def get(self, request):
        return Response({"ok": True})


class AnyScopeView(AllScopesView):
    permission_classes = [HasAnyScope]


class OneScopeStringView(AllScopesView):
    required_scopes = "a"


def call(view: type[APIView], token: str | None = None):
    extra = bearer(token) if token else {}
    return view.as_view()(APIRequestFactory().get("/x/", **extra))


@pytest.mark.parametrize(
    ("view", "scope", "status"),
    [
        (AllScopesView, "a b", 200),
        (AllScopesView, "b a c", 200),
        (AllScopesView, "a", 403),
        (AllScopesView, "", 403),
        (AnyScopeView, "a", 200),
        (AnyScopeView, "b", 200),
        (AnyScopeView, "A B", 403),
        (AnyScopeView, "", 403),
        (OneScopeStringView, "a", 200),
        (OneScopeStringView, "ab", 403),  # a string attribute is one scope, not characters
    ],
)
def test_has_scope_and_has_any_scope(view, scope, status):
    response = call(view, token_with_scope(scope))
    assert response.status_code == status
    if status == 403:
        assert response["WWW-Authenticate"].startswith(
            'Bearer realm="api", error="insufficient_scope"'
        )


def requiring(*scopes: str) -> type[APIView]:
    return type("RequiringView", (AllScopesView,), {"required_scopes": list(scopes)})


def test_an_external_token_never_grants_a_service_scope(settings):
    """An issuer's ``scope`` is its word, not ours: the Token Manager's scope or a SERVICE_SCOPES
    name in it grants nothing; the same names in a token of ours (a service application's) do."""
    issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {
            **settings.EPOCHAUTH,
            "ISSUERS": [{"issuer": issuer.issuer}],
            "SERVICE_SCOPES": {"jobs:admin": "Administer the jobs"},
        }
        for service in ("tokenmanager", "jobs:admin"):
            external = issuer.token(sub="mallory", scope=f"{service} reports:read")
            assert call(requiring(service), external).status_code == 403
            assert call(requiring("reports:read"), external).status_code == 200
            ours = token_with_scope(service, username=f"{service}-owner")
            assert call(requiring(service), ours).status_code == 200
    finally:
        issuer.stop()


def test_a_storage_scope_grants_no_service_scope_below_it(settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "TOKEN_PROFILE": "wlcg",
        "SERVICE_SCOPES": {"storage.modify:/admin": "Change the service's own files"},
    }
    above = token_with_scope("storage.modify:/")
    assert call(requiring("storage.modify:/data"), above).status_code == 200
    assert call(requiring("storage.modify:/admin"), above).status_code == 403
    exact = token_with_scope("storage.modify:/admin", username="svc")
    assert call(requiring("storage.modify:/admin"), exact).status_code == 200


def test_scope_permissions_without_token_are_401():
    for view in (AllScopesView, AnyScopeView):
        assert call(view).status_code == 401


def test_session_user_has_no_scopes(client):
    alice = make_user("alice")
    client.force_login(alice)
    response = client.get("/api/reports/")
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]


def test_in_group(client):
    make_user("alice", groups=["operators"])
    token = login(client, "alice")["access_token"]
    response = client.get("/api/staff-area/", **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"group": "operators"}


def test_not_in_group(client):
    make_user("bob", groups=["others"])
    token = login(client, "bob")["access_token"]
    assert client.get("/api/staff-area/", **bearer(token)).status_code == 403


def test_group_names_are_case_sensitive(client):
    make_user("carol", groups=["Operators"])
    token = login(client, "carol")["access_token"]
    assert client.get("/api/staff-area/", **bearer(token)).status_code == 403


def test_selected_group_counts(client):
    make_user("alice", groups=["operators", "others"])
    token = login(client, "alice", group="operators")["access_token"]
    assert client.get("/api/staff-area/", **bearer(token)).status_code == 200


def test_token_that_selected_another_group_is_refused(client):
    make_user("alice", groups=["operators", "others"])
    token = login(client, "alice", group="others")["access_token"]
    response = client.get("/api/staff-area/", **bearer(token))
    assert response.status_code == 403
    assert client.get("/api/hello/", **bearer(token)).status_code == 200


def test_group_membership_comes_from_the_token_not_the_database(client, django_assert_num_queries):
    alice = make_user("alice")
    token = login(client, "alice")["access_token"]
    alice.groups.add(Group.objects.create(name="operators"))
    # the token was minted before; the new membership applies from the next token
    assert client.get("/api/staff-area/", **bearer(token)).status_code == 403
    fresh = login(client, "alice")["access_token"]
    client.get("/api/staff-area/", **bearer(fresh))
    with django_assert_num_queries(0):
        assert client.get("/api/staff-area/", **bearer(fresh)).status_code == 200


def test_in_group_with_session_uses_the_database(client):
    client.force_login(make_user("alice", groups=["operators"]))
    assert client.get("/api/staff-area/").status_code == 200
    client.force_login(make_user("bob"))
    assert client.get("/api/staff-area/").status_code == 403


def test_in_group_without_token_is_401(client):
    assert client.get("/api/staff-area/").status_code == 401


def test_in_group_with_no_required_groups_refuses():
    class NoGroupsView(AllScopesView):
        permission_classes = [InGroup]
        required_groups = ()

    make_user("alice", groups=["operators"])
    token = mint_access_token(make_user("bob", groups=["operators"])).token
    assert call(NoGroupsView, token).status_code == 403
