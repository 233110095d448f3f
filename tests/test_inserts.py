"""epochauth.inserts: the login's rows inserted by a statement compiled once, exactly as
``Model.objects.create`` would insert them (SQLite here, PostgreSQL in CI)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.db import IntegrityError, connection, transaction
from django.db.models.signals import post_save, pre_save
from django.test.utils import CaptureQueriesContext, isolate_apps
from django.utils import timezone

from epochauth import inserts
from epochauth.models import AuditEvent, Session
from tests.helpers import make_user

pytestmark = pytest.mark.django_db


def row(obj) -> dict:
    """Every column of ``obj`` as the database returns it."""
    return type(obj).objects.filter(pk=obj.pk).values().get()


def test_an_audit_event_gets_its_key_and_the_row_orm_create_writes():
    user = make_user("alice")
    detail = {"session": "s", "text": "é\u2028", "nested": [1, 2.5, None, True]}
    ours = inserts.insert(AuditEvent(action="login", user=user, detail=detail))
    theirs = AuditEvent.objects.create(action="login", user=user, detail=detail)
    assert isinstance(ours.pk, int) and ours.pk + 1 == theirs.pk
    assert not ours._state.adding and ours._state.db == "default"
    mine, orm = row(ours), row(theirs)
    assert mine.pop("id") != orm.pop("id") and mine.pop("at") <= orm.pop("at")
    assert mine == orm and mine["detail"] == detail


def test_a_session_keeps_its_own_key_and_every_field():
    user, group = make_user("alice"), Group.objects.create(name="atlas")
    expires = timezone.now() + timedelta(days=1)
    fields = dict(user=user, expires_at=expires, scope="a b", group=group, refresh_hash="h" * 64)
    ours = inserts.insert(Session(user_agent="ua", **fields))
    assert Session.objects.get(pk=ours.pk).family == ours.family
    stored = row(ours)
    assert stored["id"] == ours.pk and stored["group_id"] == group.pk
    assert stored["expires_at"] == expires and stored["user_agent"] == "ua"
    assert stored["created_at"] == ours.created_at and stored["revoked_at"] is None


def test_save_signals_are_sent_as_model_save_sends_them():
    seen = []

    def pre(sender, instance, **kwargs):
        seen.append(("pre", sender, instance.pk, kwargs["raw"], kwargs["update_fields"]))

    def post(sender, instance, created, **kwargs):
        seen.append(("post", sender, instance.pk, created, kwargs["using"]))

    pre_save.connect(pre, sender=AuditEvent)
    post_save.connect(post, sender=AuditEvent)
    try:
        event = inserts.insert(AuditEvent(action="login"))
    finally:
        pre_save.disconnect(pre, sender=AuditEvent)
        post_save.disconnect(post, sender=AuditEvent)
    assert seen == [
        ("pre", AuditEvent, None, False, None),
        ("post", AuditEvent, event.pk, True, "default"),
    ]


def test_one_statement_per_row_and_its_compilation_is_kept():
    inserts.insert(AuditEvent(action="warm-up"))
    with CaptureQueriesContext(connection) as queries:
        inserts.insert(AuditEvent(action="a"))
        inserts.insert(AuditEvent(action="b"))
    assert [q["sql"].split()[0] for q in queries] == ["INSERT", "INSERT"]
    assert inserts._statement.cache_info().hits >= 2


def test_a_constraint_violation_is_the_databases_error_and_leaves_nothing():
    user = make_user("alice")
    first = inserts.insert(Session(user=user, expires_at=timezone.now(), refresh_hash="h"))
    with pytest.raises(IntegrityError), transaction.atomic():
        inserts.insert(
            Session(user=user, expires_at=timezone.now(), refresh_hash="h", family=first.family)
        )
    assert Session.objects.count() == 1


@isolate_apps("epochauth")
def test_a_model_with_parents_is_refused():
    class Child(Group):
        class Meta:
            app_label = "epochauth"

    with pytest.raises(TypeError, match="inherits"):
        inserts.insert(Child(name="x"))


def login_rows(user) -> tuple[Session, AuditEvent]:
    session = Session(user=user, expires_at=timezone.now(), refresh_hash="h")
    return session, AuditEvent(action="login", user=user, detail={"session": str(session.pk)})


#: A query of another table, run along with the inserts.
USERNAMES = 'SELECT "username" FROM "auth_user" WHERE "username" LIKE %s ORDER BY "username"'


@pytest.mark.parametrize("pattern, found", [("a%", [("alice",), ("anna",)]), ("z%", [])])
def test_rows_inserted_together_get_their_keys_and_the_read_its_rows(pattern, found):
    user = make_user("alice")
    make_user("anna")
    session, event = login_rows(user)
    with CaptureQueriesContext(connection) as queries:
        rows = inserts.insert_together(session, event, read=(USERNAMES, [pattern]))
    assert rows == found
    assert AuditEvent.objects.get(pk=event.pk).detail == {"session": str(session.pk)}
    assert Session.objects.get(pk=session.pk).refresh_hash == "h"
    assert not session._state.adding and not event._state.adding
    verbs = [q["sql"].split()[0] for q in queries if q["sql"] != "BEGIN"]
    # PostgreSQL: one statement; elsewhere the read, then one INSERT a row.
    assert verbs == (
        ["WITH"] if connection.vendor == "postgresql" else ["SELECT", "INSERT", "INSERT"]
    )


def test_a_save_receiver_keeps_one_insert_a_row_in_one_transaction():
    """What a receiver writes must share the rows' transaction: no one statement then."""
    rows = login_rows(make_user("alice"))
    seen = []

    def post(sender, instance, **kwargs):
        seen.append(instance.pk)

    post_save.connect(post, sender=AuditEvent)
    try:
        with CaptureQueriesContext(connection) as queries:
            inserts.insert_together(*rows)
    finally:
        post_save.disconnect(post, sender=AuditEvent)
    assert [q["sql"].split()[0] for q in queries if q["sql"] != "BEGIN"] == ["INSERT", "INSERT"]
    assert seen == [rows[1].pk]


def rotated(session: Session, old: str) -> list | None:
    session.refresh_hash = "new"
    return inserts.swap(
        session,
        ("refresh_hash", "previous_refresh_hash"),
        {"refresh_hash": old, "revoked_at": None},
        read=(USERNAMES, ["a%"]),
    )


def test_a_swap_writes_only_a_row_still_holding_what_was_read():
    session = inserts.insert(login_rows(make_user("alice"))[0])
    session.previous_refresh_hash = "h"
    assert rotated(session, "h") == [("alice",)]
    assert row(session)["refresh_hash"] == "new"
    assert row(session)["previous_refresh_hash"] == "h"
    session.previous_refresh_hash = "lost"
    assert rotated(session, "h") is None  # the row no longer holds "h"
    Session.objects.filter(pk=session.pk).update(revoked_at=timezone.now())
    assert rotated(session, "new") is None  # ended meanwhile
    assert row(session)["previous_refresh_hash"] == "h"


@pytest.mark.parametrize("receiver", [False, True])
def test_a_swap_is_one_statement_on_postgresql_and_sends_the_save_signals(receiver):
    """Its signals as ``save(update_fields=...)`` sends them; ``post_save`` only for a written row. A
    receiver may write along (its writes then share the row's transaction)."""
    session = inserts.insert(login_rows(make_user("alice"))[0])
    seen = []

    def pre(sender, instance, **kwargs):
        seen.append(("pre", instance.pk, kwargs["update_fields"]))

    def post(sender, instance, created, **kwargs):
        seen.append(("post", created))

    if receiver:
        pre_save.connect(pre, sender=Session)
        post_save.connect(post, sender=Session)
    try:
        with CaptureQueriesContext(connection) as queries:
            rotated(session, "h")
            rotated(session, "h")
    finally:
        pre_save.disconnect(pre, sender=Session)
        post_save.disconnect(post, sender=Session)
    fields = frozenset({"refresh_hash", "previous_refresh_hash"})
    assert seen == (
        [("pre", session.pk, fields), ("post", False), ("pre", session.pk, fields)]
        if receiver
        else []
    )
    verbs = [q["sql"].split()[0] for q in queries if q["sql"] not in ("BEGIN", "COMMIT")]
    one = connection.vendor == "postgresql"
    assert verbs == (["WITH"] if one else ["SELECT", "UPDATE"]) * 2
