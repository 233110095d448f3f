"""What a request costs besides time: SQL queries and commands sent to the shared cache (Redis).

SQL: ``connection.execute_wrapper`` sees every query of the default database. Redis: the cache's
connection pool is built with :class:`CountingConnection`, which counts each command as it is written
to the socket (a pipeline counts each of its commands). Counting in the client, not with the server's
``INFO commandstats``, keeps other users of the same Redis server out of the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from redis.connection import Connection

TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")


class CountingConnection(Connection):
    commands = 0  # a class attribute: one total over every connection of the process

    def send_command(self, *args: Any, **kwargs: Any) -> None:
        CountingConnection.commands += 1
        super().send_command(*args, **kwargs)

    def pack_commands(self, commands: Any) -> list[bytes]:
        commands = list(commands)
        CountingConnection.commands += len(commands)
        return super().pack_commands(commands)


class Counters:
    """SQL queries and Redis commands, counted while :meth:`counting` is active."""

    def __init__(self) -> None:
        self.queries = 0

    def _count_query(self, execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        # Transaction control is not a query: "one transaction" is the goal, not a cost.
        if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL):
            self.queries += 1
        return execute(sql, *args)

    @contextmanager
    def counting(self) -> Iterator[Counters]:
        from django.db import connection

        with connection.execute_wrapper(self._count_query):
            yield self

    def snapshot(self) -> tuple[int, int]:
        return self.queries, CountingConnection.commands
