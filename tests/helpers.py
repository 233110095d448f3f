"""Small helpers shared by the test modules: users and logging in through the real endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import OperationalError, connection


def make_user(username: str, password: str = "pw", groups: Iterable[str] = ()) -> Any:
    """A user with a usable password, member of ``groups`` (created when missing)."""
    user = get_user_model().objects.create_user(username=username, password=password)
    for name in groups:
        group, _ = Group.objects.get_or_create(name=name)
        user.groups.add(group)
    return user


def login(client: Any, username: str, password: str = "pw", **extra: Any) -> dict[str, Any]:
    """POST /auth/token/ as JSON (``extra`` adds fields such as scope or group); returns the body."""
    response = client.post(
        "/auth/token/", {"username": username, "password": password, **extra}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


@contextmanager
def database_down() -> Iterator[list[str]]:
    """Every SQL statement fails as if the server were gone; yields the statements attempted."""
    attempted: list[str] = []

    def refuse(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        attempted.append(sql)
        raise OperationalError("database is down")

    with connection.execute_wrapper(refuse):
        yield attempted
