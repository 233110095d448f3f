"""Rows written on the login and refresh paths, by statements compiled once per model and database.

``Model.objects.create`` builds and compiles its INSERT again on every call, which costs more ORM
work than the statement costs a local database; a login writes two rows (its session and its audit
event). The statement here is the one Django's compiler writes (quoting, ``RETURNING`` where the
backend has it); each value is still prepared by its field (defaults, time zones, JSON), and
``pre_save`` / ``post_save`` are sent as ``Model.save`` sends them, so receivers see no difference.

Rows written together (:func:`insert_together`) are one statement on PostgreSQL, whose
data-modifying ``WITH`` makes them one round trip and one transaction without ``BEGIN`` and
``COMMIT`` (three more round trips); elsewhere one ``INSERT`` each, in one transaction. A refresh's
rotation (:func:`swap`) is a compare-and-swap: one ``UPDATE`` whose ``WHERE`` names the values it
read, a transaction of its own, with its read in the same statement on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
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
    return _reading(queries, keys or "NULL", read), statements


def _reading(queries: str, keys: str, read: str | None) -> str:
    """``WITH`` the data-modifying ``queries``, selecting ``keys`` and ``read``'s rows after a column
    that is never NULL in them (one row of NULLs when it has none)."""
    main = f"SELECT {keys}"
    if read is not None:
        main = f"SELECT * FROM ({main}) k LEFT JOIN (SELECT TRUE, q.* FROM ({read}) q) r ON TRUE"
    return f"WITH {queries} {main}"


conf.process_cache(_together.cache_clear)


def _listened(objs: Sequence[Model]) -> bool:
    """Whether a receiver of the rows' ``pre_save`` or ``post_save`` might write rows of its own,
    which must share their transaction."""
    return any(
        signal.has_listeners(type(obj))
        for signal in (model_signals.pre_save, model_signals.post_save)
        for obj in objs
    )


def _one_statement(connection: Any, objs: Sequence[Model]) -> bool:
    """Whether the rows go in one statement: on PostgreSQL, when no receiver writes along."""
    return connection.vendor == "postgresql" and not _listened(objs)


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


@lru_cache(maxsize=16)
def _swap_statement(
    model: type[Model], alias: str, fields: tuple[str, ...], expected: tuple[tuple[str, bool], ...]
) -> tuple[str, tuple[Field, ...], tuple[Field, ...]]:
    """``UPDATE`` of ``fields`` of one row whose ``expected`` columns (name, is NULL) hold what was read."""
    meta = model._meta
    qn = connections[alias].ops.quote_name

    def column(field: Field) -> str:
        return qn(cast(str, field.column))

    written = tuple(cast(Field, meta.get_field(name)) for name in fields)
    compared = tuple(cast(Field, meta.get_field(name)) for name, null in expected if not null)
    sets = ", ".join(f"{column(f)} = %s" for f in written)
    where = " AND ".join(
        [f"{column(meta.pk)} = %s"]
        + [f"{column(f)} = %s" for f in compared]
        + [
            f"{column(cast(Field, meta.get_field(name)))} IS NULL"
            for name, null in expected
            if null
        ]
    )
    return f"UPDATE {qn(meta.db_table)} SET {sets} WHERE {where}", written, compared


conf.process_cache(_swap_statement.cache_clear)


def swap(
    obj: Model,
    fields: tuple[str, ...],
    expected: dict[str, Any],
    read: tuple[str, list[Any]] | None = None,
) -> list[tuple[Any, ...]] | None:
    """Write ``obj``'s ``fields`` to its row if the row's columns still hold ``expected`` (field name
    -> value read before): of concurrent writers that read the same values, one writes and the others
    find the row changed, ``None``. ``read``: a query of other tables run along (its rows returned),
    in the same statement on PostgreSQL. ``pre_save`` and ``post_save`` are sent as
    ``obj.save(update_fields=fields)`` sends them (``post_save`` only if the row was written)."""
    model = type(obj)
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    shape = tuple((name, value is None) for name, value in expected.items())
    sql, written, compared = _swap_statement(model, alias, fields, shape)
    update_fields = frozenset(fields)
    model_signals.pre_save.send(
        sender=model, instance=obj, raw=False, using=alias, update_fields=update_fields
    )
    # Prepared after pre_save, whose receivers may change them.
    params = [f.get_db_prep_save(f.pre_save(obj, add=False), connection) for f in written]
    params.append(model._meta.pk.get_db_prep_value(obj.pk, connection))
    params += [f.get_db_prep_value(expected[f.name], connection) for f in compared]
    if not _listened([obj]):
        # One UPDATE, a transaction of its own: of the writers that read the same values, one writes.
        return _swapped(obj, alias, (sql, params), update_fields, read)
    # Receivers may write rows of their own, which share the row's transaction.
    with transaction.atomic(using=alias, savepoint=False):
        return _swapped(obj, alias, (sql, params), update_fields, read)


def _swapped(
    obj: Model,
    alias: str,
    update: tuple[str, list[Any]],
    update_fields: frozenset[str],
    read: tuple[str, list[Any]] | None,
) -> list[tuple[Any, ...]] | None:
    """Runs :func:`swap`'s statement (with ``read`` in it on PostgreSQL), then sends ``post_save``."""
    connection = connections[alias]
    sql, params = update
    rows: list[tuple[Any, ...]] = []
    with connection.cursor() as cursor:
        if read is not None and connection.vendor == "postgresql":
            pk = connection.ops.quote_name(cast(str, obj._meta.pk.column))
            statement = _reading(f"u AS ({sql} RETURNING {pk})", "COUNT(*) FROM u", read[0])
            cursor.execute(statement, params + read[1])
            found = cursor.fetchall()
            changed = found[0][0]
            rows = [row[2:] for row in found if row[1] is not None]
        else:
            if read is not None:
                cursor.execute(*read)
                rows = cursor.fetchall()
            cursor.execute(sql, params)
            changed = cursor.rowcount
    if not changed:
        return None
    model_signals.post_save.send(
        sender=type(obj),
        instance=obj,
        created=False,
        update_fields=update_fields,
        raw=False,
        using=alias,
    )
    return rows
