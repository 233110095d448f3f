"""Leaving a group, by any path, takes it from the tokens minted before — and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client

from epochauth import signals
from epochauth.models import AuditEvent
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

STAFF_AREA = "/api/staff-area/"  # InGroup: required_groups = ["operators"]


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def whoami(client: Any, token: str) -> Any:
    return client.get("/auth/whoami/", **bearer(token))


def refreshed(client: Any, tokens: dict[str, Any]) -> dict[str, Any]:
    response = client.post(
        "/auth/token/refresh/",
        {"refresh_token": tokens["refresh_token"]},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def operators() -> Group:
    return Group.objects.get(name="operators")


def user_groups_remove(user: Any) -> None:
    user.groups.remove(operators())


def user_groups_clear(user: Any) -> None:
    user.groups.clear()


def user_groups_set(user: Any) -> None:
    user.groups.set([Group.objects.get(name="dev")])


def group_user_set_remove(user: Any) -> None:
    operators().user_set.remove(user)


def group_user_set_clear(user: Any) -> None:
    operators().user_set.clear()


def group_deleted(user: Any) -> None:
    operators().delete()


def admin_form(user: Any) -> None:
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(root)
    data = {
        "username": user.username,
        "is_active": "on",
        "groups": [Group.objects.get(name="dev").pk],
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
    }
    response = admin.post(f"/admin/auth/user/{user.pk}/change/", data)
    assert response.status_code == 302, response.context["adminform"].form.errors


LEAVING = [
    user_groups_remove,
    user_groups_clear,
    user_groups_set,
    group_user_set_remove,
    group_user_set_clear,
    group_deleted,
    admin_form,
]


@pytest.mark.parametrize("leave", LEAVING, ids=[f.__name__ for f in LEAVING])
def test_a_left_group_is_taken_from_earlier_tokens(client, leave: Callable[[Any], None]):
    alice = make_user("alice", groups=["operators", "dev"])
    bob = make_user("bob", groups=["operators"]) if leave is not group_deleted else None
    tokens = login(client, "alice")
    bobs = login(client, "bob") if bob else None
    assert client.get(STAFF_AREA, **bearer(tokens["access_token"])).status_code == 200

    leave(get_user_model().objects.get(pk=alice.pk))

    assert client.get(STAFF_AREA, **bearer(tokens["access_token"])).status_code == 403
    kept = [] if leave is user_groups_clear else ["dev"]
    assert whoami(client, tokens["access_token"]).json()["groups"] == kept
    # the token's other access stays, and a refresh mints the current groups
    assert client.get("/api/hello/", **bearer(tokens["access_token"])).status_code == 200
    fresh = refreshed(client, tokens)
    assert whoami(client, fresh["access_token"]).json()["groups"] == sorted(
        alice.groups.values_list("name", flat=True)
    )
    if bobs is not None and leave is not group_user_set_clear:
        assert client.get(STAFF_AREA, **bearer(bobs["access_token"])).status_code == 200


def test_a_token_that_selected_the_left_group_is_refused(client):
    alice = make_user("alice", groups=["operators", "dev"])
    selected = login(client, "alice", group="operators")
    plain = login(client, "alice")
    alice.groups.remove(operators())
    response = client.get("/api/hello/", **bearer(selected["access_token"]))
    assert response.status_code == 401
    assert "group" in response["WWW-Authenticate"]
    assert client.get("/api/hello/", **bearer(plain["access_token"])).status_code == 200


def test_rejoining_does_not_need_a_new_token_for_new_ones(client):
    alice = make_user("alice", groups=["operators"])
    alice.groups.remove(operators())
    alice.groups.add(operators())
    assert (
        client.get(STAFF_AREA, **bearer(login(client, "alice")["access_token"])).status_code == 200
    )


def test_leaving_is_audited_and_signalled(client):
    alice = make_user("alice", groups=["operators", "dev"])
    seen: list[dict[str, Any]] = []

    def record(**kwargs: Any) -> None:
        seen.append(kwargs)

    signals.groups_changed.connect(record)
    try:
        alice.groups.remove(operators())
    finally:
        signals.groups_changed.disconnect(record)
    assert [(s["user_id"], s["groups"]) for s in seen] == [(str(alice.pk), ["dev"])]
    event = AuditEvent.objects.get(action="groups_changed")
    assert (event.user_id, event.detail["groups"]) == (alice.pk, ["dev"])


def test_the_hot_path_stays_free_of_queries_after_a_change(client, django_assert_num_queries):
    alice = make_user("alice", groups=["operators", "dev"])
    tokens = login(client, "alice")
    alice.groups.remove(operators())
    assert (
        client.get(STAFF_AREA, **bearer(tokens["access_token"])).status_code == 403
    )  # warms the caches
    with django_assert_num_queries(0):
        assert client.get(STAFF_AREA, **bearer(tokens["access_token"])).status_code == 403
        assert client.get("/api/hello/", **bearer(tokens["access_token"])).status_code == 200
