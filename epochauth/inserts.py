"""New rows on the login path, inserted by a statement compiled once per model and database.

``Model.objects.create`` builds and compiles its INSERT again on every call, which costs more ORM
work than the statement costs a local database; a login writes two rows (its session and its audit
event). The statement here is the one Django's compiler writes (quoting, ``RETURNING`` where the
backend has it); each value is still prepared by its field (defaults, time zones, JSON), and
``pre_save`` / ``post_save`` are sent as ``Model.save`` sends them, so receivers see no difference.

Rows written together (:func:`insert_together`) are one statement on PostgreSQL, whose
data-modifying ``WITH`` makes them one round trip and one transaction without ``BEGIN`` and
``COMMIT`` (three more round trips); elsewhere one ``INSERT`` each, in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

from django.db import connections, router, transaction
from django.db.models import Field, Model
from django.db.models import signals as model_signals
from django.db.models.sql import InsertQuery

from . import conf

M = TypeVar("M", bound=Model)


@dataclass(frozen=True)
class _Statement:
    sql: str
    fields: tuple[Field, ...]
    #: The auto primary key, read back after the insert; None when the row brings its own key.
    returned: Field | None


@lru_cache(maxsize=64)
def _statement(model: type[Model], alias: str, own_key: bool) -> _Statement:
    meta = model._meta
    if meta.parents:
        raise TypeError(f"{meta.label} inherits from another model: use save()")
    returned = None if own_key else meta.auto_field
    fields = tuple(
        f
        for f in meta.local_concrete_fields
        if f is not returned and not getattr(f, "generated", False)
    )
    query = InsertQuery(model)
    query.insert_values(fields, [model()])
    compiler = query.get_compiler(using=alias)
    compiler.returning_fields = (
        [returned]
        if returned is not None and connections[alias].features.can_return_columns_from_insert
        else None
    )
    ((sql, _params),) = compiler.as_sql()
    return _Statement(sql, fields, returned)


conf.process_cache(_statement.cache_clear)


def _own_key(obj: Model) -> bool:
    meta = obj._meta
    return meta.auto_field is None or getattr(obj, meta.pk.attname) is not None


def _prepared(obj: Model, statement: _Statement, alias: str) -> list[Any]:
    """Sends ``pre_save``, then the values of the row's columns in the statement's order."""
    model = type(obj)
    model_signals.pre_save.send(
        sender=model, instance=obj, raw=False, using=alias, update_fields=None
    )
    connection = connections[alias]
    return [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in statement.fields]


def _inserted(obj: Model, key: Field | None, value: Any, alias: str) -> None:
    """Sets the key the database gave the row (if it gave one), then sends ``post_save``."""
    if key is not None:
        setattr(obj, key.attname, key.to_python(value))
    obj._state.adding = False
    obj._state.db = alias
    model_signals.post_save.send(
        sender=type(obj), instance=obj, created=True, update_fields=None, raw=False, using=alias
    )


def insert(obj: M) -> M:
    """Insert the new row ``obj`` (what ``obj.save()`` does for a new object of a model without
    parents), setting its auto primary key; returns it."""
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    statement = _statement(model, alias, _own_key(obj))
    params = _prepared(obj, statement, alias)
    value: Any = None
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        key = statement.returned
        if key is not None:
            value = (
                cursor.fetchone()[0]
                if connection.features.can_return_columns_from_insert
                else connection.ops.last_insert_id(
                    cursor, model._meta.db_table, cast(str, key.column)
                )
            )
    _inserted(obj, statement.returned, value, alias)
    return obj


@lru_cache(maxsize=16)
def _together(
    rows: tuple[tuple[type[Model], bool], ...], alias: str, read: str | None
) -> tuple[str, tuple[_Statement, ...]]:
    """One statement inserting a row of each (model, own key): each ``INSERT`` a data-modifying
    ``WITH`` query, the main query selecting the keys they return, and ``read``'s rows after a
    column that is never NULL in them (one row of NULLs when it has none)."""
    statements = tuple(_statement(model, alias, own_key) for model, own_key in rows)
    qn = connections[alias].ops.quote_name
    queries = ", ".join(f"i{n} AS ({s.sql})" for n, s in enumerate(statements))
    keys = ", ".join(
        f"(SELECT {qn(cast(str, s.returned.column))} FROM i{n})"
        for n, s in enumerate(statements)
        if s.returned is not None
    )
    main = f"SELECT {keys or 'NULL'}"
    if read is not None:
        main = f"SELECT * FROM ({main}) k LEFT JOIN (SELECT TRUE, q.* FROM ({read}) q) r ON TRUE"
    return f"WITH {queries} {main}", statements


conf.process_cache(_together.cache_clear)


def _one_statement(connection: Any, objs: tuple[Model, ...]) -> bool:
    """Whether the rows go in one statement: on PostgreSQL, and when no receiver of their
    ``pre_save`` or ``post_save`` might write rows of its own, which must share their transaction."""
    return connection.vendor == "postgresql" and not any(
        signal.has_listeners(type(obj))
        for signal in (model_signals.pre_save, model_signals.post_save)
        for obj in objs
    )


def insert_together(
    *objs: Model, read: tuple[str, list[Any]] | None = None
) -> list[tuple[Any, ...]]:
    """Insert the new rows ``objs`` (of one database) all or none: one statement on PostgreSQL,
    one transaction elsewhere; each as :func:`insert` inserts it. ``read``: a query (SQL and
    parameters) of other tables run before the inserts, in the same statement where there is one;
    returns its rows."""
    alias = router.db_for_write(type(objs[0]), instance=objs[0])
    connection = connections[alias]
    if not _one_statement(connection, objs):
        rows: list[tuple[Any, ...]] = []
        if read is not None:
            with connection.cursor() as cursor:
                cursor.execute(*read)
                rows = cursor.fetchall()
        # No savepoint: a caller's transaction commits or rolls back the rows as a whole.
        with transaction.atomic(using=alias, savepoint=False):
            for obj in objs:
                insert(obj)
        return rows
    shape = tuple((type(obj), _own_key(obj)) for obj in objs)
    sql, statements = _together(shape, alias, read[0] if read is not None else None)
    params = [p for obj, s in zip(objs, statements, strict=True) for p in _prepared(obj, s, alias)]
    with connection.cursor() as cursor:
        cursor.execute(sql, params + (read[1] if read is not None else []))
        rows = cursor.fetchall()
    keys = iter(rows[0])
    for obj, s in zip(objs, statements, strict=True):
        _inserted(obj, s.returned, next(keys) if s.returned is not None else None, alias)
    found = sum(s.returned is not None for s in statements) or 1
    return [row[found + 1 :] for row in rows if read is not None and row[found] is not None]
