"""Signals (token_issued, session_revoked, epoch_bumped) and the audit events written with them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from epochauth import signals
from epochauth.models import AuditEvent, Epoch, Session
from tests.helpers import login, make_user, received

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_token_issued_on_login_refresh_and_renew(client):
    user = make_user("alice", groups=["operators"])
    with received(signals.token_issued) as calls:
        body = login(client, "alice", group="operators", scope="reports:read")
        refreshed = client.post(
            "/auth/token/refresh/",
            {"refresh_token": body["refresh_token"]},
            content_type="application/json",
        ).json()
        client.post("/auth/token/renew/", **bearer(refreshed["access_token"]))
    assert len(calls) == 3
    sid = Session.objects.get().id.hex
    for call in calls:
        assert set(call) == {"sender", "user", "claims", "session_id"}
        assert call["user"] == user
        assert call["session_id"] == sid
        assert call["claims"]["sid"] == sid
        assert call["claims"]["group"] == "operators"
        assert call["claims"]["scope"] == "reports:read"
    tokens = {body["access_token"], refreshed["access_token"], body["refresh_token"]}
    for call in calls:
        text = repr(call)
        assert not any(token in text for token in tokens)


def test_token_issued_by_the_command_has_no_session():
    from io import StringIO

    from django.core.management import call_command

    make_user("alice")
    with received(signals.token_issued) as calls:
        call_command("epochauth_issue", "--user", "alice", stdout=StringIO())
    assert len(calls) == 1
    assert calls[0]["session_id"] is None
    assert "sid" not in calls[0]["claims"]


def test_no_token_issued_on_failed_login(client):
    make_user("alice")
    with received(signals.token_issued) as calls:
        client.post(
            "/auth/token/", {"username": "alice", "password": "x"}, content_type="application/json"
        )
        client.post(
            "/auth/token/",
            {"username": "alice", "password": "pw", "scope": "nope"},
            content_type="application/json",
        )
    assert calls == []


def test_session_revoked_on_logout(client):
    user = make_user("alice")
    body = login(client, "alice")
    with received(signals.session_revoked) as calls:
        client.post("/auth/logout/", **bearer(body["access_token"]))
    assert len(calls) == 1
    call = calls[0]
    assert call["sender"] is Session
    assert call["reason"] == "logout"
    assert call["session"].pk == Session.objects.get().pk
    assert call["session"].revoked_at is not None
    assert call["actor"] == user
    event = AuditEvent.objects.get(action="session_revoked")
    assert event.user == user
    assert event.detail == {"session": str(call["session"].pk), "reason": "logout"}


def test_session_revoked_for_each_session_a_user_bump_ends(client):
    user = make_user("alice")
    first = login(client, "alice")
    login(client, "alice")  # a second session
    with received(signals.session_revoked) as calls:
        client.post("/auth/logout-all/", **bearer(first["access_token"]))
    assert sorted(c["session"].pk for c in calls) == sorted(
        Session.objects.values_list("pk", flat=True)
    )
    assert len(calls) == 2 and {c["reason"] for c in calls} == {"epoch_bumped"}
    assert all(c["actor"] == user and c["session"].revoked_at is not None for c in calls)
    with received(signals.session_revoked) as calls:
        client.post("/auth/logout-all/", **bearer(login(client, "alice")["access_token"]))
    assert len(calls) == 1  # only the session still live


def test_session_revoked_on_reuse(client):
    make_user("alice")
    body = login(client, "alice")
    post = client.post
    post(
        "/auth/token/refresh/",
        {"refresh_token": body["refresh_token"]},
        content_type="application/json",
    )
    with received(signals.session_revoked) as calls:
        post(
            "/auth/token/refresh/",
            {"refresh_token": body["refresh_token"]},
            content_type="application/json",
        )
        post(
            "/auth/token/refresh/",
            {"refresh_token": body["refresh_token"]},
            content_type="application/json",
        )
    assert [c["reason"] for c in calls] == ["reuse"]
    assert calls[0]["actor"] is None


def test_session_revoked_when_the_group_was_lost(client):
    user = make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    user.groups.clear()
    with received(signals.session_revoked) as calls:
        client.post(
            "/auth/token/refresh/",
            {"refresh_token": body["refresh_token"]},
            content_type="application/json",
        )
    assert [c["reason"] for c in calls] == ["group_removed"]


def test_epoch_bumped_on_logout_all(client):
    user = make_user("alice")
    body = login(client, "alice")
    with received(signals.epoch_bumped) as calls:
        client.post("/auth/logout-all/", **bearer(body["access_token"]))
    assert len(calls) == 1
    call = calls[0]
    assert call["sender"] is Epoch
    assert set(call) == {"sender", "kind", "object_id", "epoch", "actor", "reason"}
    assert call["kind"] == "user"
    assert call["object_id"] == str(user.pk)
    assert call["epoch"] == 1
    assert call["actor"] == user
    assert call["reason"] == "logout-all"
    event = AuditEvent.objects.get(action="epoch_bumped")
    assert event.user == user
    assert event.actor == user
    assert event.detail == {
        "kind": "user",
        "object_id": str(user.pk),
        "epoch": 1,
        "reason": "logout-all",
    }


@pytest.mark.parametrize(
    ("change", "kind", "reason"),
    [
        ("deactivate", "user", "user deactivated"),
        ("delete_user", "user", "user deleted"),
        ("delete_group", "group", "group deleted"),
    ],
)
def test_epoch_bumped_by_model_events(change, kind, reason):
    user = make_user("alice", groups=["operators"])
    group = Group.objects.get(name="operators")
    expected_id = str(group.pk) if kind == "group" else str(user.pk)
    with received(signals.epoch_bumped) as calls:
        if change == "deactivate":
            user.is_active = False
            user.save()
        elif change == "delete_user":
            user.delete()
        else:
            group.delete()
    assert [(c["kind"], c["object_id"], c["reason"], c["actor"]) for c in calls] == [
        (kind, expected_id, reason, None)
    ]


def test_epoch_bumped_by_the_global_command():
    from io import StringIO

    from django.core.management import call_command

    with received(signals.epoch_bumped) as calls:
        call_command("epochauth_revoke", "--all", "--reason", "key leak", stdout=StringIO())
    assert [(c["kind"], c["object_id"], c["epoch"], c["reason"]) for c in calls] == [
        ("global", "", 1, "key leak")
    ]
    event = AuditEvent.objects.get(action="epoch_bumped")
    assert event.user is None
    assert event.detail["kind"] == "global"


def test_audit_trail_of_a_login_lifecycle(client):
    make_user("alice")
    client.post(
        "/auth/token/", {"username": "alice", "password": "x"}, content_type="application/json"
    )
    body = login(client, "alice")
    client.post("/auth/logout/", **bearer(body["access_token"]))
    second = login(client, "alice")
    client.post("/auth/logout-all/", **bearer(second["access_token"]))
    actions = list(AuditEvent.objects.order_by("at", "pk").values_list("action", flat=True))
    assert actions == ["login_failed", "login", "session_revoked", "login", "epoch_bumped"]
    for event in AuditEvent.objects.all():
        text = repr(event.detail)
        for token in (body["access_token"], second["access_token"], body["refresh_token"]):
            assert token not in text


def test_epoch_bumping_runs_inside_the_bump_and_a_failure_undoes_it(client):
    """What a receiver writes commits or rolls back with the bump: one that raises leaves the epoch
    and the user's sessions as they were, and nothing is announced."""
    from epochauth.revocation import bump_epoch, current_epoch

    user = make_user("alice")
    login(client, "alice")

    def fail(**kwargs):
        assert Session.objects.get().revoked_at is not None  # in the bump's transaction
        raise RuntimeError("outbox unavailable")

    signals.epoch_bumping.connect(fail)
    try:
        with received(signals.epoch_bumped) as bumped, pytest.raises(RuntimeError):
            bump_epoch("user", str(user.pk), reason="test")
    finally:
        signals.epoch_bumping.disconnect(fail)
    assert not bumped
    assert not Epoch.objects.filter(kind="user", object_id=str(user.pk), value__gt=0).exists()
    assert current_epoch("user", str(user.pk)).value == 0
    assert Session.objects.get().revoked_at is None
    with received(signals.epoch_bumping) as bumping:
        bump_epoch("user", str(user.pk), reason="test")
    assert [(c["kind"], c["object_id"], c["reason"]) for c in bumping] == [
        ("user", str(user.pk), "test")
    ]
