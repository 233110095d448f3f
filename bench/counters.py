"""What a request costs besides time: SQL queries, commands sent to the shared cache (Redis), and
hits of epochauth's verified-token memo.

SQL: ``connection.execute_wrapper`` sees every query of the default database. Redis: the cache's
connection pool is built with :class:`CountingConnection`, which counts each command as it is written
to the socket (a pipeline counts each of its commands). Counting in the client, not with the server's
``INFO commandstats``, keeps other users of the same Redis server out of the numbers. Memo hits:
a bearer token validated (``validate_token``) without its signature being checked (``verify_token``),
so a row that claims distinct users or new tokens can prove it never hit the memo.
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
        self.memo_hits = 0

    def _count_query(self, execute: Callable[..., Any], sql: str, *args: Any) -> Any:
        # Transaction control is not a query: "one transaction" is the goal, not a cost.
        if not sql.lstrip().upper().startswith(TRANSACTION_CONTROL):
            self.queries += 1
        return execute(sql, *args)

    @contextmanager
    def counting(self) -> Iterator[Counters]:
        from django.db import connection

        with connection.execute_wrapper(self._count_query), self._counting_memo_hits():
            yield self

    @contextmanager
    def _counting_memo_hits(self) -> Iterator[None]:
        from epochauth import authentication

        validate, verify = authentication.validate_token, authentication.verify_token
        checked = [False]

        def verify_token(token: str) -> Any:
            checked[0] = True
            return verify(token)

        def validate_token(token: str) -> Any:
            checked[0] = False
            access = validate(token)
            if not checked[0]:
                self.memo_hits += 1
            return access

        authentication.validate_token, authentication.verify_token = validate_token, verify_token
        try:
            yield
        finally:
            authentication.validate_token, authentication.verify_token = validate, verify

    def snapshot(self) -> tuple[int, int, int]:
        return self.queries, CountingConnection.commands, self.memo_hits
