"""An issuer's group claims join only the local groups the admin allowed for that issuer: its mapping
(``group_map``) or its namespace (``group_prefix``); never a group holding a Django permission unless
mapped, never a group created from a value nobody allowed, and never at the cost of the user's other
groups (issue 25, finding 4)."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.test import Client
from oauth2_provider.models import get_application_model

from epochauth.models import Identity
from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.helpers import make_user
from tests.loopback_issuer import AUDIENCE, CraftedIssuer

pytestmark = pytest.mark.django_db

PERMISSION = "epochauth_tokenmanager.obtain_upstream_token"


def entry(issuer: CraftedIssuer, **options: Any) -> dict[str, Any]:
    return {
        "issuer": issuer.issuer,
        "audiences": [AUDIENCE],
        "required_scopes": ["servicex"],
        "group_claims": ["groups"],
        **options,
    }


@pytest.fixture
def issuers(settings: Any) -> Iterator[tuple[CraftedIssuer, CraftedIssuer, CraftedIssuer]]:
    """A maps ``/ops`` to tm-operators; B has the namespace ``b:``; C allows nothing."""
    a, b, c = CraftedIssuer(), CraftedIssuer(), CraftedIssuer()
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [
            entry(a, group_map={"/ops": "tm-operators"}),
            entry(b, group_prefix="b:", default_groups=["b-users"]),
            entry(c),
        ],
    }
    yield a, b, c
    for issuer in (a, b, c):
        issuer.stop()


@pytest.fixture
def tm_operators() -> Group:
    """A local group holding the Token Manager's permission over every user's upstream tokens."""
    group = Group.objects.create(name="tm-operators")
    group.permissions.add(Permission.objects.get(codename="obtain_upstream_token"))
    return group


def whoami(token: str) -> Any:
    response = Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 200, response.content
    return response.json()


def user_of(issuer: CraftedIssuer, subject: str) -> Any:
    # A fresh row: Django caches a user's permissions on the instance.
    return get_user_model().objects.get(
        epochauth_identities__issuer=issuer.issuer, epochauth_identities__subject=subject
    )


def groups_of(user: Any) -> list[str]:
    return sorted(user.groups.values_list("name", flat=True))


def test_another_issuers_claim_confers_no_local_group_nor_its_permission(issuers, tm_operators):
    _, b, _ = issuers
    token = b.token(sub="mallory", groups=["tm-operators"])
    assert whoami(token)["groups"] == ["b-users", "b:tm-operators"]
    user = user_of(b, "mallory")
    assert groups_of(user) == ["b-users", "b:tm-operators"]
    assert not user.has_perm(PERMISSION)
    answer = Client().post(
        "/tokenmanager/token/", {"username": "alice"}, HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer.status_code == 403


def test_values_nobody_allowed_create_no_group(issuers):
    _, b, c = issuers
    assert whoami(c.token(sub="eve", groups=["staff-admins"]))["groups"] == []
    assert whoami(b.token(sub="eve", groups=["staff-admins"]))["groups"] == [
        "b-users",
        "b:staff-admins",
    ]
    assert not Group.objects.filter(name="staff-admins").exists()
    assert groups_of(user_of(c, "eve")) == []


def test_a_mapped_value_joins_the_mapped_group_even_one_with_a_permission(issuers, tm_operators):
    a, _, _ = issuers
    assert whoami(a.token(sub="olga", groups=["/ops", "/other"]))["groups"] == ["tm-operators"]
    user = user_of(a, "olga")
    assert groups_of(user) == ["tm-operators"]
    assert user.has_perm(PERMISSION)  # the admin mapped it for this issuer


def test_a_namespaced_group_given_a_permission_is_no_longer_joined_from_a_claim(issuers):
    _, b, _ = issuers
    now = int(time.time())
    whoami(b.token(sub="first", groups=["ops"], iat=now - 20))
    ops = Group.objects.get(name="b:ops")  # created on demand, inside the namespace
    assert groups_of(user_of(b, "first")) == ["b-users", "b:ops"]
    ops.permissions.add(Permission.objects.get(codename="obtain_upstream_token"))
    ops.user_set.clear()  # the admin makes it theirs

    whoami(b.token(sub="second", groups=["ops"]))  # provisioning
    whoami(b.token(sub="first", groups=["ops", "more"], iat=now - 10))  # mirroring
    for subject, groups in (("second", ["b-users"]), ("first", ["b-users", "b:more"])):
        user = user_of(b, subject)
        assert groups_of(user) == groups
        assert not user.has_perm(PERMISSION)


def test_a_refused_namespaced_group_costs_no_query_on_the_next_token(
    issuers, settings, django_assert_num_queries
):
    """Which namespaced groups hold a permission is read where the mirror writes, once: a newer
    token naming the same groups finds nothing to write and asks the database nothing."""
    _, b, _ = issuers
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [entry(b, group_prefix="b:")]}
    privileged = Group.objects.create(name="b:ops")
    privileged.permissions.add(Permission.objects.get(codename="obtain_upstream_token"))
    now = int(time.time())
    assert whoami(b.token(sub="dan", groups=["ops"], iat=now - 20))["groups"] == ["b:ops"]
    assert groups_of(user_of(b, "dan")) == []
    newer = b.token(sub="dan", groups=["ops"], iat=now - 10)
    with django_assert_num_queries(0):
        whoami(newer)


def test_mirroring_leaves_the_groups_the_issuer_does_not_manage(issuers, tm_operators):
    """A local administrator who is also an external identity keeps their local groups."""
    _, b, _ = issuers
    admin = make_user("boss", groups=["staff"])
    admin.groups.add(tm_operators)
    Identity.objects.create(issuer=b.issuer, subject="boss-sub", user=admin)
    now = int(time.time())
    whoami(b.token(sub="boss-sub", groups=["x"], iat=now - 20))
    assert groups_of(admin) == ["b-users", "b:x", "staff", "tm-operators"]
    whoami(b.token(sub="boss-sub", groups=["y"], iat=now - 10))
    assert groups_of(admin) == ["b-users", "b:y", "staff", "tm-operators"]
    assert user_of(b, "boss-sub").has_perm(PERMISSION)


SECRET = "s3cret-" * 6


@pytest.fixture
def service() -> Any:
    """A confidential client that may exchange tokens."""
    return get_application_model().objects.create(
        name="svc",
        client_id="svc",
        client_secret=SECRET,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        user=make_user("svc-owner"),
    )


def exchange(subject_token: str, scope: str) -> Any:
    basic = base64.b64encode(f"svc:{SECRET}".encode()).decode()
    return Client().post(
        "/o/token/",
        {
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": scope,
        },
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )


def test_token_exchange_selects_only_a_group_the_subject_token_may_join(
    issuers, tm_operators, service
):
    _, b, _ = issuers
    token = b.token(sub="mallory", groups=["tm-operators"])
    whoami(token)
    # Even a membership made another way (by hand, or by an older release's mirroring) is not
    # this token's to select.
    user_of(b, "mallory").groups.add(tm_operators)
    refused = exchange(token, "g:tm-operators")
    assert refused.status_code == 400, refused.content
    assert refused.json()["error"] == "invalid_scope"
    granted = exchange(token, "g:b:tm-operators")
    assert granted.status_code == 200, granted.content
    assert granted.json()["scope"] == "g:b:tm-operators"


def test_wlcg_group_paths_follow_the_same_rule(settings, tm_operators):
    """A WLCG issuer's ``wlcg.groups`` (its default group claim) go through the same rule."""
    wlcg = CraftedIssuer()
    try:
        namespaced = ["wlcg:/cms", "wlcg:tm-operators"]
        for subject, options, groups in (
            ("w1", {}, []),
            ("w2", {"group_prefix": "wlcg:"}, namespaced),
        ):
            settings.EPOCHAUTH = {
                **settings.EPOCHAUTH,
                "ISSUERS": [{**entry(wlcg, profile="wlcg", **options), "group_claims": []}],
            }
            token = wlcg.token(sub=subject, **{"wlcg.groups": ["/cms", "tm-operators"]})
            assert whoami(token)["groups"] == groups
            assert groups_of(user_of(wlcg, subject)) == groups
    finally:
        wlcg.stop()
