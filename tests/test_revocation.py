"""Revocation: epochs (user, group, global), the denylist, model events, and failing closed."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.cache import cache, caches
from django.core.management import CommandError, call_command
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from epochauth import revocation, tokens
from epochauth.authentication import verify_token
from epochauth.models import AuditEvent, Epoch, RevokedToken, Session
from epochauth.revocation import bump_epoch, current_epoch, purge_expired, record_groups, revoke_id
from epochauth.snapshots import StateUnavailable
from tests.helpers import database_down, login, make_user

pytestmark = pytest.mark.django_db


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


def refresh(client: Any, refresh_token: str) -> int:
    return client.post(
        "/auth/token/refresh/", {"refresh_token": refresh_token}, content_type="application/json"
    ).status_code


def cold_caches() -> None:
    """What a fresh process sees when the shared cache is empty too."""
    cache.clear()
    revocation.state.reset()
    tokens.verified_tokens.clear()


# -- model events ------------------------------------------------------------------------------


def test_deactivating_a_user_revokes_at_once(client):
    user = make_user("alice")
    make_user("bob")
    body = login(client, "alice")
    bobs = login(client, "bob")
    assert hello(client, body["access_token"]) == 200
    user.is_active = False
    user.save()
    assert hello(client, body["access_token"]) == 401
    assert refresh(client, body["refresh_token"]) == 400
    assert hello(client, bobs["access_token"]) == 200
    event = AuditEvent.objects.get(action="epoch_bumped")
    assert event.detail["reason"] == "user deactivated"


def test_reactivating_does_not_revive_old_tokens(client):
    user = make_user("alice")
    body = login(client, "alice")
    user.is_active = False
    user.save()
    user.is_active = True
    user.save()
    assert hello(client, body["access_token"]) == 401
    assert Epoch.objects.get(kind="user").value == 1
    assert hello(client, login(client, "alice")["access_token"]) == 200


def test_saving_an_active_user_does_not_revoke(client):
    user = make_user("alice")
    body = login(client, "alice")
    user.first_name = "Alice"
    user.save()
    assert hello(client, body["access_token"]) == 200
    assert not Epoch.objects.exists()


def test_deleting_a_user_revokes_at_once(client):
    user = make_user("alice")
    body = login(client, "alice")
    user.delete()
    assert hello(client, body["access_token"]) == 401
    assert refresh(client, body["refresh_token"]) == 400


@pytest.mark.django_db(transaction=True)
def test_deleting_a_user_commits(client):
    """The audit row written while deleting must not break the delete (foreign keys are checked)."""
    user = make_user("alice")
    login(client, "alice")
    user.delete()
    assert not get_user_model().objects.filter(username="alice").exists()
    assert AuditEvent.objects.filter(action="epoch_bumped", user__isnull=True).exists()


def test_deleting_a_group_revokes_the_tokens_that_selected_it(client):
    make_user("alice", groups=["operators", "users"])
    selected = login(client, "alice", group="operators")
    plain = login(client, "alice")
    Group.objects.get(name="operators").delete()
    assert hello(client, selected["access_token"]) == 401
    assert hello(client, plain["access_token"]) == 200


# -- epochs ------------------------------------------------------------------------------------


def test_group_bump_kills_only_tokens_that_selected_the_group(client):
    make_user("alice", groups=["operators", "users"])
    make_user("bob", groups=["operators"])
    selected = login(client, "alice", group="operators")
    other_group = login(client, "alice", group="users")
    plain = login(client, "alice")
    bobs = login(client, "bob", group="operators")
    call_command("epochauth_revoke", "--group", "operators", stdout=None)
    assert hello(client, selected["access_token"]) == 401
    assert hello(client, bobs["access_token"]) == 401
    assert refresh(client, selected["refresh_token"]) == 400
    assert hello(client, other_group["access_token"]) == 200
    assert hello(client, plain["access_token"]) == 200
    assert refresh(client, plain["refresh_token"]) == 200
    again = login(client, "alice", group="operators")
    assert hello(client, again["access_token"]) == 200


def test_global_bump_kills_everything(client):
    make_user("alice", groups=["operators"])
    make_user("bob")
    bodies = [
        login(client, "alice"),
        login(client, "alice", group="operators"),
        login(client, "bob"),
    ]
    call_command("epochauth_revoke", "--all", stdout=None)
    for body in bodies:
        assert hello(client, body["access_token"]) == 401
        assert refresh(client, body["refresh_token"]) == 400
    assert hello(client, login(client, "bob")["access_token"]) == 200


def test_bump_is_visible_to_another_process_through_the_shared_cache(client):
    user = make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    revocation.state.reset()  # another process: no memory of the bump, only the shared cache
    tokens.verified_tokens.clear()
    with database_down():
        assert hello(client, body["access_token"]) == 401


def test_bump_is_read_from_the_database_when_the_caches_are_cold(client):
    user = make_user("alice")
    body = login(client, "alice")
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    cold_caches()
    assert hello(client, body["access_token"]) == 401


def test_a_stale_shared_cache_never_lowers_an_epoch_seen_in_memory(client):
    user = make_user("alice")
    body = login(client, "alice")
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    cache.set(revocation._epoch_key("user", str(user.pk)), (0, None))
    revocation.state._memo.clear()
    assert current_epoch(Epoch.Kind.USER, str(user.pk)).value == 1
    assert hello(client, body["access_token"]) == 401


def test_bumps_are_audited_and_counted():
    user = make_user("alice")
    admin = make_user("admin")
    bump_epoch(Epoch.Kind.USER, str(user.pk), actor=admin, reason="lost laptop")
    value = bump_epoch(Epoch.Kind.USER, str(user.pk), reason="again")
    assert value.value == 2
    epoch = Epoch.objects.get(kind="user", object_id=str(user.pk))
    assert epoch.value == 2
    assert epoch.reason == "again"
    events = list(AuditEvent.objects.filter(action="epoch_bumped").order_by("at", "pk"))
    assert [e.detail["reason"] for e in events] == ["lost laptop", "again"]
    assert events[0].actor == admin
    assert events[0].user == user


# -- denylist ----------------------------------------------------------------------------------


def test_revoked_id_is_visible_to_another_process_after_commit(
    client, django_capture_on_commit_callbacks
):
    make_user("alice")
    body = login(client, "alice")
    jti = verify_token(body["access_token"])["jti"]
    assert hello(client, body["access_token"]) == 200
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/auth/logout/", **bearer(body["access_token"]))
    revocation.state.reset()
    assert hello(client, body["access_token"]) == 401
    assert (
        RevokedToken.objects.filter(jti=jti).count() == 0
    )  # the session id is denied, not each token
    assert RevokedToken.objects.filter(reason="session logout").count() == 1


def test_purge_expired_keeps_live_rows():
    from datetime import timedelta

    from django.utils import timezone

    now = timezone.now()
    revoke_id("old", now - timedelta(seconds=1))
    revoke_id("live", now + timedelta(hours=1))
    assert purge_expired() == 1
    assert list(RevokedToken.objects.values_list("jti", flat=True)) == ["live"]
    assert revocation.is_revoked("live")
    assert not revocation.is_revoked("old")


# -- the first read of a big denylist ------------------------------------------------------------


def many_denied(count: int, first_pk: int = 1000) -> None:
    """``count`` live denylist rows of ids no token carries, with primary keys from ``first_pk``."""
    expires = timezone.now() + timedelta(hours=1)
    RevokedToken.objects.bulk_create(
        RevokedToken(pk=first_pk + n, jti=f"bulk-{n}", expires_at=expires) for n in range(count)
    )


def test_the_load_reads_live_rows_with_their_expiry_never_early():
    """The database computes each row's expiry in whole seconds (no datetime per row): rounded up,
    at most a second late; expired rows are not read at all."""
    now = timezone.now()
    expiries = [
        now + timedelta(seconds=s, microseconds=m) for s in (5, 60, 86400) for m in (0, 1, 999_999)
    ]
    RevokedToken.objects.bulk_create(
        [RevokedToken(jti=f"live-{n}", expires_at=e) for n, e in enumerate(expiries)]
        + [RevokedToken(jti="gone", expires_at=now - timedelta(seconds=1))]
    )
    rows = revocation._live_denied_after(0)
    assert [jti for _pk, jti, _until in rows] == [f"live-{n}" for n in range(len(expiries))]
    for (_pk, _jti, until), expires in zip(rows, expiries, strict=True):
        assert type(until) is int and 0 <= until - expires.timestamp() <= 1


class Pieces:
    """The loading thread reads a piece of the state (LOAD_CHUNK rows) each time it is allowed to."""

    def __init__(self) -> None:
        self.allowed, self.read = threading.Semaphore(0), threading.Semaphore(0)

    def one(self) -> None:
        """Let the thread read one piece, and wait until it did."""
        self.allowed.release()
        assert self.read.acquire(timeout=30)

    def set(self) -> None:
        """Let it read all."""
        self.allowed.release(10**6)


@pytest.fixture
def held_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pieces]:
    """A state of more than one piece is read by the loading thread, as far as the test allows, so
    that requests are seen while the table is partial. Rows the thread reads must be committed: these
    tests use ``django_db(transaction=True)``."""
    monkeypatch.setattr(revocation, "LOAD_CHUNK", 50)
    pieces = Pieces()
    piece = revocation.RevocationState._load_piece

    def held(self: revocation.RevocationState, loader: object, *, first_use: bool = False) -> bool:
        if first_use:
            return piece(self, loader, first_use=True)
        assert pieces.allowed.acquire(timeout=30)
        try:
            return piece(self, loader)
        finally:
            pieces.read.release()

    monkeypatch.setattr(revocation.RevocationState, "_load_piece", held)
    yield pieces
    pieces.set()
    # Ended before the next test: a thread left over would take that test's pieces.
    for thread in threading.enumerate():
        if thread.name == "epochauth-revocation-load":
            thread.join(30)


@pytest.mark.django_db(transaction=True)
def test_a_fresh_process_reads_the_denylist_in_a_thread_without_more_requests(client, held_load):
    many_denied(120)
    make_user("alice")
    body = login(client, "alice")
    cold_caches()
    assert hello(client, body["access_token"]) == 200
    assert revocation.state._load_cursor == 0  # not a small table: none of it in the request
    held_load.set()
    assert revocation.wait_loaded(30)  # no request came
    assert revocation.is_loaded() and len(revocation.state._denied) == 120
    assert revocation.is_revoked("bulk-119") and not revocation.is_revoked("bulk-120")
    with CaptureQueriesContext(connection) as queries:
        assert hello(client, body["access_token"]) == 200
    assert len(queries) == 0, [q["sql"] for q in queries]


@pytest.mark.django_db(transaction=True)
def test_while_the_denylist_is_read_a_request_makes_one_query_and_a_database_outage_fails_closed(
    client, held_load, django_assert_max_num_queries
):
    many_denied(120)
    make_user("alice")
    body = login(client, "alice")
    session = verify_token(body["access_token"])["sid"]
    RevokedToken.objects.create(
        pk=5000, jti=session, expires_at=timezone.now() + timedelta(hours=1)
    )
    fresh = login(client, "alice")
    cold_caches()
    assert hello(client, body["access_token"]) == 401  # not read yet: the row says so
    for _ in range(3):
        for token, status in ((body["access_token"], 401), (fresh["access_token"], 200)):
            with django_assert_max_num_queries(1):  # the one indexed point query
                assert hello(client, token) == status
    with database_down():
        assert (
            hello(client, fresh["access_token"]) == 503
        )  # never a 200 while the table is partial
    assert revocation.state._load_cursor == 0 and not revocation.is_loaded()
    held_load.set()
    assert revocation.wait_loaded(30)
    with database_down():
        assert hello(client, body["access_token"]) == 401
        assert hello(client, fresh["access_token"]) == 200


@pytest.mark.django_db(transaction=True)
def test_revocations_made_while_the_denylist_is_read_are_not_lost(client, held_load, clock):
    """Another process commits a row the load has passed already (its key was taken before the load
    read past it): the change feed, reaching back before the load began, brings it."""
    many_denied(170)
    make_user("alice")
    body = login(client, "alice")
    session = verify_token(body["access_token"])["sid"]
    cold_caches()
    assert hello(client, body["access_token"]) == 200
    held_load.one()
    assert revocation.state._load_cursor == 1049
    # Another process: the row, then after its commit the new version (no push with LocMemCache).
    RevokedToken.objects.create(pk=7, jti=session, expires_at=timezone.now() + timedelta(hours=1))
    cache.set(revocation.VERSION_KEY, "changed elsewhere", None)
    assert hello(client, body["access_token"]) == 401  # looked up: the table is not complete yet
    held_load.set()
    assert revocation.wait_loaded(30)
    clock.advance(1)  # REVOCATION_REFRESH_INTERVAL: the feed is read
    assert hello(client, body["access_token"]) == 401
    assert revocation.state._denied.denies(session, timezone.now().timestamp())  # from the feed


@pytest.mark.django_db(transaction=True)
def test_a_fresh_process_reads_the_epochs_in_a_thread_and_refuses_meanwhile(client, held_load):
    users = [make_user(f"user{n}") for n in range(3)]
    bodies = [login(client, user.username) for user in users]
    Epoch.objects.bulk_create(
        Epoch(kind=Epoch.Kind.USER, object_id=str(10**6 + n), value=1, not_before=timezone.now())
        for n in range(120)
    )
    bump_epoch(Epoch.Kind.USER, str(users[0].pk))  # the last row: read by the last piece
    cold_caches()
    for _ in range(3):
        assert [hello(client, body["access_token"]) for body in bodies] == [401, 200, 200]
        assert revocation.state._covered_from is None  # epochs read by key
    held_load.set()
    assert revocation.wait_loaded(30)
    assert revocation.state._held(Epoch.Kind.USER, str(users[0].pk)).value == 1
    revocation.state._memo.clear()
    cache.clear()
    with CaptureQueriesContext(connection) as queries:
        assert [hello(client, body["access_token"]) for body in bodies] == [401, 200, 200]
    assert len(queries) == 0, [q["sql"] for q in queries]


@pytest.mark.django_db(transaction=True)
def test_a_failed_read_of_the_load_is_tried_again_and_never_marks_it_loaded(
    client, held_load, monkeypatch, caplog
):
    many_denied(120)
    make_user("alice")
    body = login(client, "alice")
    monkeypatch.setattr(revocation, "LOAD_RETRY", 0.01)
    failed, healed = threading.Event(), threading.Event()
    failures: list[bool] = []
    piece = revocation.RevocationState._load_piece

    def failing(self: revocation.RevocationState, loader: object, **kwargs: bool) -> bool:
        if not healed.is_set():
            failures.append(self.loaded)
            if len(failures) >= 3:
                failed.set()
            raise OperationalError("database is down")
        return piece(self, loader, **kwargs)

    cold_caches()
    assert hello(client, body["access_token"]) == 200  # the first use, before the failures
    monkeypatch.setattr(revocation.RevocationState, "_load_piece", failing)
    held_load.set()
    assert failed.wait(30)
    assert not revocation.is_loaded() and not any(failures)
    with CaptureQueriesContext(connection) as queries:
        assert hello(client, body["access_token"]) == 200
    assert len(queries) == 1  # looked up meanwhile
    healed.set()
    assert revocation.wait_loaded(30) and len(revocation.state._denied) == 120
    assert "cannot read the revocation state yet; trying again" in caplog.text


@pytest.mark.django_db(transaction=True)
def test_a_load_of_a_state_since_reset_holds_nothing(client, held_load, monkeypatch):
    """A settings change (or the next test) resets the state while the thread has read a piece: the
    thread holds none of it in the new state, and ends."""
    many_denied(120)
    make_user("alice")
    body = login(client, "alice")
    hold = revocation.RevocationState._hold

    def reset_first(self: revocation.RevocationState, *args: Any) -> bool:
        self.reset()
        return hold(self, *args)

    cold_caches()
    assert hello(client, body["access_token"]) == 200
    monkeypatch.setattr(revocation.RevocationState, "_hold", reset_first)
    held_load.one()
    assert revocation.state._loader is None and revocation.state._load_cursor == 0
    assert len(revocation.state._denied) == 0 and not revocation.is_loaded()


@pytest.mark.django_db(transaction=True)
def test_a_forked_child_reads_its_own_state(client, held_load):
    """gunicorn's pre-fork and recycled workers: the parent's loading thread is not in the child,
    whose copy (taken between two batches, the lock free) goes on with a load of its own."""
    many_denied(120)
    make_user("alice")
    body = login(client, "alice")
    cold_caches()
    assert hello(client, body["access_token"]) == 200
    held_load.one()
    assert revocation.state._loader is not None
    pid = os.fork()
    if pid == 0:  # the child: report by exit status, never return into pytest
        free = revocation.state._lock.acquire(blocking=False)
        os._exit(
            0
            if free
            and revocation.state._loader is None
            and revocation.state._load_cursor == 1049
            and not revocation.state._done.is_set()
            else 1
        )
    assert os.waitpid(pid, 0)[1] == 0
    held_load.set()
    assert revocation.wait_loaded(30)  # the parent's own load goes on


# -- failing closed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/api/hello/", "/auth/whoami/", "/auth/token/renew/", "/auth/logout/"]
)
def test_cold_cache_and_database_down_is_503(client, path):
    make_user("alice")
    body = login(client, "alice")
    cold_caches()
    with database_down() as attempted:
        method = client.get if path in ("/api/hello/", "/auth/whoami/") else client.post
        response = method(path, **bearer(body["access_token"]))
    assert attempted, "the test must actually reach the database"
    assert response.status_code == 503
    assert body["access_token"] not in response.content.decode()


def test_cold_epoch_with_warm_denylist_and_database_down_is_503(client, settings):
    """A token older than what the process holds (REVOCATION_WINDOW) reads its epochs one by one."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "REVOCATION_WINDOW": 0}
    make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200
    # The denylist is fresh in memory; only the epochs are unknown.
    revocation.state._memo.clear()
    cache.clear()
    with database_down():
        assert hello(client, body["access_token"]) == 503


def test_failing_closed_is_retried_once_the_database_is_back(client):
    make_user("alice")
    body = login(client, "alice")
    cold_caches()
    with database_down():
        assert hello(client, body["access_token"]) == 503
    assert hello(client, body["access_token"]) == 200


def test_revoked_token_is_never_accepted_when_the_database_is_down(client):
    user = make_user("alice")
    body = login(client, "alice")
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    cold_caches()
    with database_down():
        assert hello(client, body["access_token"]) in (401, 503)


def test_warm_cache_serves_with_the_database_down(client):
    make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200
    with database_down() as attempted:
        response = client.get("/api/hello/", **bearer(body["access_token"]))
        whoami = client.get("/auth/whoami/", **bearer(body["access_token"]))
    assert response.status_code == 200
    assert response.json() == {"hello": "alice"}
    assert whoami.status_code == 200
    assert attempted == []


def test_a_fresh_process_with_the_database_down_serves_no_token_until_it_is_back(client):
    """The denylist comes from the database only: a process that could not read it yet fails closed."""
    make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200
    revocation.state.reset()
    tokens.verified_tokens.clear()
    # Everywhere: the thread that reads the state must not read it either.
    with database_down(everywhere=True) as attempted:
        assert hello(client, body["access_token"]) == 503
    assert attempted
    assert hello(client, body["access_token"]) == 200


def test_tokens_within_the_window_read_no_epoch_from_the_shared_cache(client, monkeypatch):
    """At any number of users a request reads nothing: an epoch row this process does not hold
    changed before the token was issued."""
    users = [make_user(f"user{n}") for n in range(20)]
    bodies = [login(client, user.username) for user in users]
    bump_epoch(Epoch.Kind.USER, str(users[0].pk))
    assert hello(client, bodies[1]["access_token"]) == 200
    reads: list[str] = []
    real_get = cache.get
    monkeypatch.setattr(
        cache, "get", lambda key, *a, **k: reads.append(key) or real_get(key, *a, **k)
    )
    revocation.state._memo.clear()
    cache.clear()  # what another process's LocMemCache would hold: nothing
    with CaptureQueriesContext(connection) as queries:
        assert [hello(client, body["access_token"]) for body in bodies] == [401] + [200] * 19
    assert len(queries) == 0, [q["sql"] for q in queries]
    assert reads == []


def test_epoch_changes_older_than_the_window_leave_memory(
    client, settings, monkeypatch, django_capture_on_commit_callbacks
):
    user, other = make_user("alice"), make_user("bob")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200  # the feed has started, all is held
    with django_capture_on_commit_callbacks(execute=True):
        bump_epoch(Epoch.Kind.USER, str(user.pk))
    record_groups(str(other.pk), [])  # uncommitted (the test's transaction): held apart
    state = revocation.state
    assert state._held(Epoch.Kind.USER, str(user.pk)).value == 1 and len(state._epochs) == 1
    assert (Epoch.Kind.USER, str(user.pk)) not in state._pending  # committed: in the compact map
    assert state._held(Epoch.Kind.USER, str(other.pk)).groups_at is not None
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "REVOCATION_WINDOW": 0}
    monkeypatch.setattr(revocation, "PRUNE_INTERVAL", 0)
    state._read_soon()
    assert hello(client, body["access_token"]) == 401  # read one by one: still refused
    assert state._held(Epoch.Kind.USER, str(user.pk)) is None
    assert state._held(Epoch.Kind.USER, str(other.pk)) is None
    assert len(state._epochs) == 0 and not state._pending and not state._exact


def test_epoch_changes_take_a_few_bytes_each():
    """The epoch map is flat arrays (no Python object per user): 20 bytes a slot, a table between
    1/4 and 1/2 full (the dict of tuples it replaced took some 350 bytes a user)."""
    epochs = revocation.state._epochs
    for n in range(100_000):
        epochs.put(f"user\0{n}", (n + 1, 1e9 + n))
    epochs.step(None)
    assert len(epochs) == 100_000
    assert epochs._table.nbytes / len(epochs) <= 80, epochs._table.nbytes
    assert epochs.get("user\0" + "99999") == (100_000, 1e9 + 99_999)


def test_a_bump_that_fails_leaves_the_committed_epoch(
    client, cache_refuses, django_capture_on_commit_callbacks
):
    """A change is held apart until its transaction commits: a failed bump takes back only itself,
    never the bump before it."""
    user = make_user("alice")
    before = login(client, "alice")
    assert hello(client, before["access_token"]) == 200  # the feed has started, all is held
    with django_capture_on_commit_callbacks(execute=True):
        bump_epoch(Epoch.Kind.USER, str(user.pk))
    after = login(client, "alice")
    cache_refuses("set", "delete")
    with pytest.raises(StateUnavailable):
        bump_epoch(Epoch.Kind.USER, str(user.pk))
    assert revocation.state._held(Epoch.Kind.USER, str(user.pk)).value == 1
    revocation.state._memo.clear()
    assert [hello(client, body["access_token"]) for body in (before, after)] == [401, 200]


def test_hot_path_makes_no_query(client):
    make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators", scope="reports:read")
    assert hello(client, body["access_token"]) == 200
    with CaptureQueriesContext(connection) as queries:
        for path in ("/api/hello/", "/api/reports/", "/api/staff-area/"):
            assert client.get(path, **bearer(body["access_token"])).status_code == 200
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_unreachable_shared_cache_falls_back_to_the_database(client, settings):
    user = make_user("alice")
    body = login(client, "alice")
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    cold_caches()
    # A real Redis client pointed at a port where nothing listens: every cache call fails.
    settings.CACHES = {
        **settings.CACHES,
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"socket_connect_timeout": 0.2},
        },
    }
    # Without a throttle a login needs no cache (with one it is a 503: tests/test_cache_outage.py).
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "CACHE_ALIAS": "down", "LOGIN_THROTTLE_RATE": None}
    assert hello(client, body["access_token"]) == 401
    fresh = login(client, "alice")
    assert hello(client, fresh["access_token"]) == 200
    with database_down():
        revocation.state.reset()
        assert hello(client, fresh["access_token"]) == 503


def test_sessions_of_a_deleted_user_are_gone():
    user = make_user("alice")
    from epochauth.sessions import start_session

    start_session(user)
    user.delete()
    assert not Session.objects.exists()


# -- a shared cache that refuses writes ----------------------------------------------------------


@pytest.fixture
def cache_refuses(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the shared cache raise on the named write methods, as a Redis blip would."""

    def refuse(*methods: str) -> None:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise ConnectionError("cache down")

        for method in methods:
            monkeypatch.setattr(caches["default"], method, broken)

    return refuse


def test_a_bump_the_shared_cache_cannot_take_is_not_made(client, admin_client, cache_refuses):
    """Other processes would go on reading the old epoch: the bump fails instead, and says so."""
    alice = make_user("alice")
    body = login(client, "alice")
    cache_refuses("set", "delete")
    with pytest.raises(StateUnavailable):
        bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert client.post("/auth/logout-all/", **bearer(body["access_token"])).status_code == 503
    with pytest.raises(CommandError, match="shared cache"):
        call_command("epochauth_revoke", "--user", "alice")
    page = admin_client.post(
        "/admin/auth/user/",
        {"action": "revoke_all_tokens", "_selected_action": [alice.pk]},
        follow=True,
    )
    assert "could not take the revocation of alice" in page.content.decode()
    assert not Epoch.objects.exists()


def test_a_bump_whose_value_the_cache_refuses_drops_the_old_one(
    client, cache_refuses, monkeypatch
):
    alice = make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200  # the shared cache holds epoch 0
    cache_refuses("set")
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    monkeypatch.undo()
    revocation.state.reset()  # another process: it finds no epoch in the cache and reads the database
    tokens.verified_tokens.clear()
    assert hello(client, body["access_token"]) == 401


def test_a_lost_announcement_is_bounded_by_the_reload_interval(client, settings, clock):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "REVOCATION_REFRESH_INTERVAL": 1,  # the version key is read again after this ...
        "REVOCATION_RELOAD_INTERVAL": 60,  # ... the database after this, changed version or not
    }
    make_user("alice")
    body = login(client, "alice")
    assert hello(client, body["access_token"]) == 200
    jti = jwt.decode(body["access_token"], options={"verify_signature": False})["jti"]
    RevokedToken.objects.create(
        jti=jti, expires_at=timezone.now() + timedelta(hours=1)
    )  # never announced
    clock.advance(59)  # the version key is read again, unchanged: ...
    assert hello(client, body["access_token"]) == 200  # ... this process trusts its copy ...
    clock.advance(1)
    assert hello(client, body["access_token"]) == 401  # ... for REVOCATION_RELOAD_INTERVAL at most
