"""Small helpers shared by the test modules: users, logging in through the real endpoint, signals, a
database outage, a slow server, a scripted OAuth server, racing requests, OpenID Provider mode."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock
from urllib.parse import parse_qs

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import OperationalError, connection
from django.db.backends.utils import CursorWrapper
from django.dispatch import Signal


@cache
def rsa_pem(n: int = 0) -> str:
    """An RSA private key in PEM, one per ``n`` (2048 bits: quick to make)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def openid_provider(settings: Any, **epochauth: Any) -> None:
    """OpenID Provider mode: DOT's ``OIDC_ENABLED`` with RP-initiated logout, an RS256 signing key
    (``epochauth`` overrides these ``EPOCHAUTH`` settings and adds others)."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem(),
        **epochauth,
    }
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OIDC_ENABLED": True,
        "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
        # DOT caches each view's oauthlib server from the settings of its first request.
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }


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
        "/auth/token/",
        {"username": username, "password": password, **extra},
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return response.json()


@contextmanager
def received(signal: Signal) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments (and ``sender``) of every ``signal`` sent meanwhile."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        kwargs.pop("signal")
        calls.append({"sender": sender, **kwargs})

    signal.connect(receiver, weak=False)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


@contextmanager
def database_down(everywhere: bool = False) -> Iterator[list[str]]:
    """Every SQL statement of this thread fails as if the server were gone (``everywhere``: of every
    thread, a process's background readers too); yields the statements attempted."""
    attempted: list[str] = []

    def refuse(execute: Callable, sql: str, params: Any, many: bool, context: Any) -> Any:
        attempted.append(sql)
        raise OperationalError("database is down")

    if not everywhere:
        with connection.execute_wrapper(refuse):
            yield attempted
        return

    def down(self: Any, sql: str, params: Any = None) -> Any:
        return refuse(None, sql, params, False, None)

    with (
        mock.patch.object(CursorWrapper, "execute", down),
        mock.patch.object(CursorWrapper, "executemany", down),
    ):
        yield attempted


@contextmanager
def trickling_server(interval: float = 0.05) -> Iterator[str]:
    """A loopback server answering every GET and POST with a JSON object, one byte every ``interval``
    seconds: each read is quick, the whole is slow. Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = b'{"keys": []}' + b" " * 200
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                for byte in body:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(interval)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up, as it should

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


RACERS = 10
ONE_WINNER = [(200, None)] + [(400, "invalid_grant")] * (RACERS - 1)


def race(send: Callable[[], requests.Response]) -> tuple[list, list[dict]]:
    """``send`` from ``RACERS`` threads at once: the sorted (status, OAuth error) answers and the
    bodies of the successes. Needs row locks, so a real database: SQLite's in-memory test database
    is one connection that the live server's threads share."""
    if connection.vendor == "sqlite":
        pytest.skip(
            "The live server's threads share the one connection to SQLite's in-memory test database, "
            "which has no row locks: the requests cannot race; CI's PostgreSQL leg runs this test"
        )
    barrier = threading.Barrier(RACERS)
    answers: list = []
    won: list[dict] = []

    def one() -> None:
        try:
            barrier.wait(timeout=30)
            response = send()
            body = response.json() if response.status_code < 500 else {"error": response.reason}
            answers.append((response.status_code, body.get("error")))
            if response.ok:
                won.append(body)
        except Exception as exc:  # reported by the caller's assertion, not lost in the thread
            answers.append(exc)

    threads = [threading.Thread(target=one) for _ in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return sorted(answers, key=str), won


def start_login(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """``epochauth login ...`` in a subprocess, read up to its second line (``or open`` and the
    ``verification_uri_complete``, from a server that sends one)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "epochauth.client.cli", "login", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    return process, [process.stdout.readline(), process.stdout.readline()]


class FakeServer:
    """A tiny OAuth server on loopback whose answers a test scripts: ``routes[path] = fn(form) -> (status,
    body, headers)``. For what the real IdP cannot be made to do on demand (expire a device code)."""

    def __init__(self) -> None:
        self.routes: dict[str, Callable[[dict[str, str]], tuple[int, dict, dict[str, str]]]] = {}
        self.requests: list[tuple[str, dict[str, str], dict[str, str]]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, form: dict[str, str]) -> None:
                path = self.path.split("?")[0]
                outer.requests.append((path, form, dict(self.headers)))
                status, body, headers = outer.routes.get(
                    path, lambda f: (404, {"error": "not_found"}, {})
                )(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._answer({})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
                self._answer(form)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.routes["/.well-known/oauth-authorization-server"] = lambda form: (
            200,
            self.metadata(),
            {},
        )
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def metadata(self) -> dict[str, str]:
        return {
            "issuer": self.url,
            "token_endpoint": f"{self.url}/token",
            "device_authorization_endpoint": f"{self.url}/device",
            "revocation_endpoint": f"{self.url}/revoke",
        }

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
