"""What login and refresh cost the database: which statements, and that their writes are one
transaction (a failure part-way leaves nothing behind). Runs on SQLite and, in CI, on PostgreSQL."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import jwt
import pytest
import requests
from django.contrib.auth.signals import user_logged_in
from django.db import OperationalError, connection

from epochauth import inserts
from epochauth.models import AuditEvent, Epoch, Session
from epochauth.revocation import bump_epoch
from tests.helpers import ONE_WINNER, login, make_user, race, received

pytestmark = pytest.mark.django_db(transaction=True)  # no test transaction around the view's own

COMMIT = ("COMMIT", "", False)


@pytest.fixture(autouse=True)
def no_communities(settings: Any) -> None:
    """The costs of a site without communities (the test project has two): with them, a login
    naming none reads the user's memberships once more unless there is a default, and a token of
    a community its groups' communities (test_communities.py)."""
    settings.EPOCHAUTH = {
        k: v
        for k, v in settings.EPOCHAUTH.items()
        if k not in ("COMMUNITIES", "DEFAULT_COMMUNITY")
    }


#: The verb of a statement and the first name it quotes (Django qualifies columns: a table).
STATEMENT = re.compile(r'\(?(\w+)[^"]*"(\w+)"')


@contextmanager
def statements() -> Iterator[list[tuple[str, str, bool]]]:
    """Every statement run meanwhile as (verb, first table, inside an atomic block), and ``COMMIT``
    when a transaction commits. SQLite's ``BEGIN`` is left out: PostgreSQL's is implicit."""
    log: list[tuple[str, str, bool]] = []

    def record(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql != "BEGIN":
            verb, table = STATEMENT.match(sql).groups()
            log.append((verb, table, connection.in_atomic_block))
        return execute(sql, params, many, context)

    commit = connection.commit

    def committed() -> None:
        commit()
        log.append(COMMIT)

    connection.commit = committed
    try:
        with connection.execute_wrapper(record):
            yield log
    finally:
        del connection.commit


@contextmanager
def failing(statement: str) -> Iterator[None]:
    """SQL starting with ``statement`` fails as if the database went away."""

    def refuse(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        if sql.startswith(statement):
            raise OperationalError("database is down")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


def post(client: Any, path: str, body: dict[str, Any]) -> Any:
    return client.post(path, body, content_type="application/json")


#: Issue 12, goal 6: beyond the credential check (the auth backend's user lookup, then the password
#: hash) a login costs at most 3 statements, a refresh at most 4, each writing in one transaction.
#: Issue 32: on PostgreSQL a login's writes are one statement, and a refresh's, each a transaction of
#: its own: no BEGIN and no COMMIT, each a round trip of its own.
LOGIN_BUDGET, REFRESH_BUDGET = 3, 4
CREDENTIAL_CHECK = ("SELECT", "auth_user", False)


def round_trips(log: list[tuple[str, str, bool]]) -> int:
    """Statements and the COMMIT and BEGIN of each transaction (PostgreSQL's driver sends BEGIN
    before a transaction's first statement, on its own)."""
    return len(log) + log.count(COMMIT)


def within_budget(log: list[tuple[str, str, bool]], budget: int) -> bool:
    """At most ``budget`` statements besides the credential check, writing in one transaction: one
    commit, the last entry, or a single write statement outside any (its own transaction)."""
    statements = [entry for entry in log if entry not in (COMMIT, CREDENTIAL_CHECK)]
    writes = [entry for entry in statements if entry[0] in ("INSERT", "UPDATE", "DELETE", "WITH")]
    one_statement = COMMIT not in log and len(writes) == 1
    return len(statements) <= budget and (
        one_statement or (log.count(COMMIT) == 1 and log[-1] == COMMIT)
    )


#: Data-modifying WITH (PostgreSQL): the session and its audit event inserted, and the user's groups
#: and epochs read, by one statement; elsewhere the read, then two INSERTs in one transaction.
ONE_STATEMENT = connection.vendor == "postgresql"
STANDING = ("SELECT", "epochauth_epoch", False)  # groups and epochs, one UNION ALL
LOGIN = (
    [CREDENTIAL_CHECK, ("WITH", "epochauth_session", False)]
    if ONE_STATEMENT
    else [
        CREDENTIAL_CHECK,
        STANDING,
        ("INSERT", "epochauth_session", True),
        ("INSERT", "epochauth_auditevent", True),
        COMMIT,
    ]
)
#: Issue 32: on PostgreSQL the user, then the one statement (simplejwt's login: the user, then its
#: outstanding token); elsewhere 6 (an in-process database's round trips cost no network).
LOGIN_ROUND_TRIPS = 2 if ONE_STATEMENT else 6
#: A group selection needs the user's groups before the session names it: one read more.
GROUP_LOGIN = [CREDENTIAL_CHECK, STANDING, *LOGIN[1:]] if ONE_STATEMENT else LOGIN
#: The session with its user and group, then its rotation, a compare-and-swap of one statement: no
#: lock, so no transaction around them. On PostgreSQL the statement reads the user's groups and epochs
#: too (simplejwt's refresh with rotation and blacklist: 5 round trips and more).
REFRESH = (
    [("SELECT", "epochauth_session", False), ("WITH", "epochauth_session", False)]
    if ONE_STATEMENT
    else [
        ("SELECT", "epochauth_session", False),
        ("SELECT", "epochauth_epoch", False),
        ("UPDATE", "epochauth_session", False),
    ]
)
#: The rotation's statement, which fails in the tests of a failing rotation.
ROTATION = "WITH" if ONE_STATEMENT else 'UPDATE "epochauth_session"'


@pytest.mark.parametrize("group", [None, "operators"])
def test_login_reads_twice_and_writes_in_one_transaction(client, group):
    make_user("alice", groups=["operators", "staff"])
    extra = {"group": group} if group else {}
    with statements() as log:
        body = login(client, "alice", **extra)
    assert log == (GROUP_LOGIN if group else LOGIN)
    assert within_budget(log, LOGIN_BUDGET)
    assert round_trips(log) == LOGIN_ROUND_TRIPS + (log != LOGIN)
    event = AuditEvent.objects.get(action="login")
    assert event.detail == {"session": str(Session.objects.get().pk)}
    response = client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert response.json()["groups"] == ["operators", "staff"]
    assert response.json()["group"] == group


@pytest.mark.parametrize("group", [None, "operators"])
def test_a_refresh_reads_the_session_then_rotates_it_in_one_statement(client, group):
    make_user("alice", groups=["operators"])
    body = login(client, "alice", **({"group": group} if group else {}))
    with statements() as log:
        response = post(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]})
    assert response.status_code == 200
    assert log == REFRESH
    assert within_budget(log, REFRESH_BUDGET)
    assert round_trips(log) == len(REFRESH)


def test_a_status_list_index_costs_a_login_no_statement_on_postgresql(client, settings):
    """The session's StatusListSlot (epochauth.statuslist) goes into the login's one statement; a
    refresh reads it with the session."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "STATUS_LIST": True}
    make_user("alice")
    with statements() as log:
        body = login(client, "alice")
    slot = ("INSERT", "epochauth_statuslistslot", True)
    assert log == (LOGIN if ONE_STATEMENT else [*LOGIN[:3], slot, *LOGIN[3:]])
    with statements() as log:
        response = post(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]})
    assert log == REFRESH
    assert "status" in jwt.decode(
        response.json()["access_token"], options={"verify_signature": False}
    )


@contextmanager
def refusing_login_events() -> Iterator[None]:
    """The database refuses a "login" audit event as it writes it, after the session's row."""
    if ONE_STATEMENT:
        refuse = (
            'ALTER TABLE "epochauth_auditevent" ADD CONSTRAINT "refuse_login" '
            "CHECK (action <> 'login') NOT VALID"
        )
        allow = 'ALTER TABLE "epochauth_auditevent" DROP CONSTRAINT "refuse_login"'
    else:
        refuse = (
            'CREATE TRIGGER "refuse_login" BEFORE INSERT ON "epochauth_auditevent" '
            "WHEN NEW.action = 'login' BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        allow = 'DROP TRIGGER "refuse_login"'
    with connection.cursor() as cursor:
        cursor.execute(refuse)
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(allow)


def test_a_login_whose_audit_event_fails_leaves_no_session(client):
    make_user("alice")
    with refusing_login_events():
        response = post(client, "/auth/token/", {"username": "alice", "password": "pw"})
    assert response.status_code == 503
    assert not Session.objects.exists()
    assert not AuditEvent.objects.exists()


def test_a_refresh_whose_update_fails_leaves_the_session_as_it_was(client, settings):
    # Without the outage journal, which would go on from the mirror (tests/test_outage.py).
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OUTAGE_JOURNAL_SIZE": 0}
    make_user("alice")
    body = login(client, "alice")
    with failing(ROTATION):
        response = post(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]})
    assert response.status_code == 503
    # Neither rotated nor taken for a reuse: the same refresh token still works, once.
    assert (
        post(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}).status_code
        == 200
    )
    assert Session.objects.get().revoked_at is None


def test_the_session_limit_locks_the_user_and_ends_sessions_in_the_logins_transaction(
    client, settings
):
    """The lock on the user (where there are row locks: not SQLite, whose writes are serialised) keeps
    parallel logins of one user from ending up beyond the limit (tests/test_sessions.py)."""
    make_user("alice")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "MAX_SESSIONS_PER_USER": 2}
    with statements() as log:
        login(client, "alice")
    lock = [("SELECT", "auth_user", True)] if connection.features.has_select_for_update else []
    writes = (
        [("WITH", "epochauth_session", True)]
        if ONE_STATEMENT
        else [
            ("SELECT", "epochauth_epoch", True),
            ("INSERT", "epochauth_session", True),
            ("INSERT", "epochauth_auditevent", True),
        ]
    )
    assert log == [CREDENTIAL_CHECK, *lock, *writes, ("SELECT", "epochauth_session", True), COMMIT]
    login(client, "alice")
    with statements() as log:
        login(client, "alice")
    assert log[-1] == COMMIT
    assert log.count(COMMIT) == 1
    writes = [entry for entry in log if entry[0] in ("INSERT", "UPDATE", "DELETE")]
    assert all(inside for _, _, inside in writes)
    assert ("UPDATE", "epochauth_session", True) in writes
    assert AuditEvent.objects.filter(action="session_revoked", detail__reason="limit").count() == 1
    assert Session.objects.filter(revoked_at__isnull=True).count() == 2


def test_a_bump_seen_by_the_refresh_ends_the_session_and_a_new_login_carries_the_epochs(client):
    make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    group_id = str(Session.objects.get().group_id)
    bump_epoch(Epoch.Kind.GROUP, group_id)
    bump_epoch(Epoch.Kind.GLOBAL, "")
    response = post(client, "/auth/token/refresh/", {"refresh_token": body["refresh_token"]})
    assert response.json()["error"] == "invalid_grant"
    fresh = login(client, "alice", group="operators")
    claims = jwt.decode(fresh["access_token"], options={"verify_signature": False})
    assert (claims["epoch"], claims["global_epoch"], claims["group_epoch"]) == (0, 1, 1)
    whoami = client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {fresh['access_token']}")
    assert whoami.status_code == 200
    renewed = post(client, "/auth/token/refresh/", {"refresh_token": fresh["refresh_token"]})
    assert renewed.status_code == 200


def test_a_token_login_is_no_django_login(client):
    """Like simplejwt's default (UPDATE_LAST_LOGIN off), and like the OAuth token endpoint: a token
    login writes its ``login`` audit event, but neither ``last_login`` nor ``user_logged_in``, whose
    receivers expect a browser's Django session."""
    user = make_user("alice")
    with received(user_logged_in) as calls:
        login(client, "alice")
    assert calls == []
    user.refresh_from_db()
    assert user.last_login is None


@pytest.mark.postgres
def test_concurrent_refreshes_of_one_token_one_wins_and_the_family_ends(live_server, monkeypatch):
    """Ten refreshes of one token at once: the compare-and-swap lets one rotate it; the others find it
    rotated away, a reuse, which ends the session: the winner's new refresh token too. The rotation
    is slowed down so that every refresh reads the secret before one changes it."""
    make_user("alice")
    swap = inserts.swap

    def slow_swap(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.05)
        return swap(*args, **kwargs)

    monkeypatch.setattr(inserts, "swap", slow_swap)
    url = f"{live_server.url}/auth/token/"
    body = requests.post(url, json={"username": "alice", "password": "pw"}, timeout=30).json()
    answers, won = race(
        lambda: requests.post(
            f"{url}refresh/", json={"refresh_token": body["refresh_token"]}, timeout=30
        )
    )
    assert answers == ONE_WINNER
    again = requests.post(
        f"{url}refresh/", json={"refresh_token": won[0]["refresh_token"]}, timeout=30
    )
    assert again.json()["error"] == "invalid_grant"
    assert Session.objects.get().revoked_at is not None
