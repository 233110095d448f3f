"""New rows on the login path, inserted by a statement compiled once per model and database.

``Model.objects.create`` builds and compiles its INSERT again on every call, which costs more ORM
work than the statement costs a local database; a login writes two rows (its session and its audit
event). The statement here is the one Django's compiler writes (quoting, ``RETURNING`` where the
backend has it); each value is still prepared by its field (defaults, time zones, JSON), and
``pre_save`` / ``post_save`` are sent as ``Model.save`` sends them, so receivers see no difference.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, cast

from django.db import connections, router
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


def insert(obj: M) -> M:
    """Insert the new row ``obj`` (what ``obj.save()`` does for a new object of a model without
    parents), setting its auto primary key; returns it."""
    model = type(obj)
    meta = model._meta
    alias = router.db_for_write(model, instance=obj)
    connection = connections[alias]
    own_key = meta.auto_field is None or getattr(obj, meta.pk.attname) is not None
    statement = _statement(model, alias, own_key)
    model_signals.pre_save.send(
        sender=model, instance=obj, raw=False, using=alias, update_fields=None
    )
    params = [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in statement.fields]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, params)
        key = statement.returned
        if key is not None:
            value: Any = (
                cursor.fetchone()[0]
                if connection.features.can_return_columns_from_insert
                else connection.ops.last_insert_id(cursor, meta.db_table, cast(str, key.column))
            )
            setattr(obj, key.attname, key.to_python(value))
    obj._state.adding = False
    obj._state.db = alias
    model_signals.post_save.send(
        sender=model, instance=obj, created=True, update_fields=None, raw=False, using=alias
    )
    return obj
