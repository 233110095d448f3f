"""Issue 30's fault injection on PostgreSQL + Redis: two server processes reach PostgreSQL through a
TCP proxy of the test's own, which the test cuts (the machine's PostgreSQL server keeps running) and
restores. While it is cut, sessions refresh and renew, a refresh token is replayed to the other
server, a session logs out and a user logs out everywhere; password login answers 503. Afterwards
every token a client holds is valid exactly when it should be, on every server and on a server
started after, and the database holds what the clients saw: sessions, epochs, audit events.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .test_multiprocess import PASSWORD, ROOT, Server, prepare_database, run_server
from .test_push_database import POSTGRES_URL, _postgres

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

SETTINGS = """\
from datetime import timedelta

from testproject.settings import *  # noqa: F403

CACHES["default"]["KEY_PREFIX"] = {prefix!r}  # noqa: F405
EPOCHAUTH["REVOCATION_RELOAD_INTERVAL"] = timedelta(seconds=1)  # noqa: F405
"""
#: How long PostgreSQL stays unreachable after the workload ran (the issue's test keeps it down 60 s;
#: what matters is that every request of the workload met it down).
OUTAGE_SECONDS = 3
REPLAY_TIMEOUT = 60


class CuttableProxy:
    """A TCP proxy from a loopback port to ``target``: :meth:`cut` closes the listener and every
    connection (new ones are refused, as by a server that is gone); :meth:`restore` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._listener: socket.socket | None = None
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.port = listener.getsockname()[1]
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            if listener is not None:
                listener.close()
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._open.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    server.close()
                    return
                self._open |= {client, server}
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def database() -> Iterator[tuple[str, Any]]:
    """A new PostgreSQL database of this test's own (its name, an admin connection to it)."""
    admin = _postgres()
    name = f"epochauth_outage_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    import psycopg

    direct = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield name, lambda: psycopg.connect(direct, autocommit=True)
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def stack(
    tmp_path: Path, redis_url: str, database: tuple[str, Any]
) -> Iterator[tuple[CuttableProxy, Callable[[str], Server], Any]]:
    """Servers on the database through a cuttable proxy and on Redis with a key prefix of the
    test's own; yields the proxy, a server starter and a function reading the database directly."""
    import redis

    name, connect = database
    host_port = POSTGRES_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = CuttableProxy((host, int(port or 5432)))
    prefix = f"epochauth-outage-{uuid.uuid4().hex}"
    (tmp_path / "outage_settings.py").write_text(SETTINGS.format(prefix=prefix))
    user_part = POSTGRES_URL.split("//", 1)[1].split("@", 1)[0]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "outage_settings",
        "DATABASE_URL": f"postgres://{user_part}@127.0.0.1:{proxy.port}/{name}",
        "REDIS_URL": redis_url,
        "DJANGO_DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    prepare_database(env)
    with connect() as db:
        db.execute(
            "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined)"
            " SELECT password, false, 'carol', '', '', '', false, true, now() FROM auth_user"
            " WHERE username = 'alice'"
        )
    servers: list[Server] = []

    def start(server_name: str) -> Server:
        server = run_server(server_name, env, tmp_path / f"server-{server_name}.log")
        servers.append(server)
        return server

    def query(sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with connect() as db:
            return db.execute(sql, params).fetchall()

    keys = redis.Redis.from_url(redis_url)
    try:
        yield proxy, start, query
    finally:
        for server in servers:
            server.stop()
        proxy.cut()
        found = list(keys.scan_iter(match=f"{prefix}:*"))
        if found:
            keys.delete(*found)
        keys.close()


def login(server: Server, username: str) -> dict[str, Any]:
    response = server.request(
        "POST", "/auth/token/", json={"username": username, "password": PASSWORD}
    )
    assert response.status_code == 200, (server.name, response.text)
    return response.json()


def refresh(server: Server, refresh_token: str) -> Any:
    return server.request("POST", "/auth/token/refresh/", json={"refresh_token": refresh_token})


def digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.partition(".")[2].encode()).hexdigest()


def family(body: dict[str, Any]) -> str:
    return body["refresh_token"].partition(".")[0]


def test_sessions_go_on_and_end_while_postgresql_is_unreachable(stack):
    proxy, start, query = stack
    a, b = start("A"), start("B")
    alice_a, alice_b = login(a, "alice"), login(b, "alice")
    bob, carol = login(a, "bob"), login(b, "carol")
    for body in (alice_a, alice_b, bob, carol):
        assert (a.status(body["access_token"]), b.status(body["access_token"])) == (200, 200)

    proxy.cut()
    # Continue: alice's first session rotates on A, then on B, and renews on A.
    first = refresh(a, alice_a["refresh_token"])
    assert first.status_code == 200, (first.text, a.log_tail())
    second = refresh(b, first.json()["refresh_token"])
    assert second.status_code == 200, (second.text, b.log_tail())
    renewed = a.request("POST", "/auth/token/renew/", second.json()["access_token"])
    assert renewed.status_code == 200, renewed.text
    # End: alice's second session logs out on B; carol logs out everywhere on A.
    assert b.request("POST", "/auth/logout/", alice_b["access_token"]).status_code == 204
    assert a.request("POST", "/auth/logout-all/", carol["access_token"]).status_code == 204
    # Reuse: bob's refresh token rotated on A, the old one replayed to B ends his session.
    bobs = refresh(a, bob["refresh_token"])
    assert bobs.status_code == 200, bobs.text
    assert refresh(b, bob["refresh_token"]).status_code == 400
    # Start by password: needs the database.
    refused = a.request("POST", "/auth/token/", json={"username": "alice", "password": PASSWORD})
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0

    live = [second.json()["access_token"], renewed.json()["access_token"]]
    ended = [
        alice_b["access_token"],
        carol["access_token"],
        bob["access_token"],
        bobs.json()["access_token"],
    ]

    def consistent(servers: list[Server]) -> None:
        for server in servers:
            assert [server.status(token) for token in live] == [200, 200], server.name
            assert [server.status(token) for token in ended] == [401] * 4, server.name

    consistent([a, b])
    time.sleep(OUTAGE_SECONDS)
    consistent([a, b])
    assert refresh(b, bobs.json()["refresh_token"]).status_code == 400
    assert refresh(a, carol["refresh_token"]).status_code == 400
    assert query("SELECT COUNT(*) FROM epochauth_session WHERE revoked_at IS NOT NULL") == [(0,)]

    proxy.restore()
    deadline = time.monotonic() + REPLAY_TIMEOUT
    while time.monotonic() < deadline:
        consistent([a, b])  # requests read the database again: one server replays
        if query("SELECT COUNT(*) FROM epochauth_session WHERE revoked_at IS NOT NULL") == [(3,)]:
            break
        time.sleep(0.2)
    revoked = dict(query("SELECT family, revoked_at IS NOT NULL FROM epochauth_session"))
    assert revoked == {
        family(alice_a): False,
        family(alice_b): True,
        family(bob): True,
        family(carol): True,
    }
    assert query(
        "SELECT refresh_hash FROM epochauth_session WHERE family = %s", family(alice_a)
    ) == [(digest(second.json()["refresh_token"]),)]
    assert query(
        "SELECT e.value FROM epochauth_epoch e JOIN auth_user u ON e.object_id = u.id::text"
        " WHERE e.kind = 'user' AND u.username = 'carol'"
    ) == [(1,)]
    events = query(
        "SELECT action, detail->>'reason' FROM epochauth_auditevent"
        " WHERE action IN ('session_revoked', 'epoch_bumped') ORDER BY id"
    )
    assert events == [
        ("session_revoked", "logout"),
        ("epoch_bumped", "logout-all"),
        ("session_revoked", "reuse"),
    ]

    c = start("C")  # knows only what the database says
    consistent([a, b, c])
    assert refresh(c, second.json()["refresh_token"]).status_code == 200
    for server in (a, b, c):  # the password login's 503 is logged with its cause; no 500
        assert '" 500 ' not in server.log.read_text(errors="replace"), server.log_tail()
