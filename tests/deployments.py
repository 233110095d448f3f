"""Two deployments of the test project on one machine, joined by Shared Signals: the loop of issue 28.

Deployment A is an OpenID Provider whose Shared Signals transmitter is on; deployment B accepts A's
access tokens as an external issuer and subscribes to A's stream with the client-credentials token
of an A application allowed ``ssf:manage``. Each is its own ``runserver`` process
(:mod:`tests.deployment_settings`) with its own database (an SQLite file, or a scratch PostgreSQL
database on the server of a given URL) and its own cache (its LocMemCache, or its key prefix in a
given Redis). B's poller (``epochauth_ssf_poll --loop``) and A's outbox worker
(``epochauth_outbox --loop``, which pushes again what failed) are processes of their own.

A user gets a token for B the way a site would hand one out without a browser: a login at A's
``POST /auth/token/`` with an RFC 8707 ``resource`` naming B (A's ``RESOURCES``), so that its ``aud``
is B, whose issuer entry for A accepts exactly that audience. (A's ``/o/token/`` refuses ``resource``
in its code and device grants, which need a browser, and has no password grant.)

:func:`two_deployments` builds them (used by tests/test_ssf_deployments.py and the bench scenario
``revocation-ssf``); :meth:`Loop.trial` revokes a user at A and times B's first refusal. Every process
started here is stopped when the context exits, whatever happened.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from tests.ports import loopback_port

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = "tests.deployment_settings"
START_TIMEOUT = 30.0
COMMAND_TIMEOUT = 180.0
HTTP_TIMEOUT = 10.0
API = "/api/hello/"  # any authenticated caller
USER, ADMIN = "alice", "root"
#: Users of A who each can be deactivated once (by a deactivation trial, see :data:`DEACTIVATE`).
SPARE_USERS = ("bob", "carol")
PASSWORD = "deployments-password"
RECEIVER = "deployment-b"  # B's client id at A, the audience of B's stream
#: The revocations at A a trial can make, each over its URL: the user's own logout everywhere, and
#: an administrator's epoch bump of the user (``POST /auth/revoke/``, as the admin's button does).
KINDS = ("logout-all", "revoke")
#: One more kind: an operator deactivates the user at A from a script (``manage.py shell``). B then
#: deactivates its user too, so each user can be deactivated once only.
DEACTIVATE = "deactivate"

SETUP_TRANSMITTER = """
import os
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_application_model
from epochauth.oauth.models import AllowedScopes

User, Application = get_user_model(), get_application_model()
for name in os.environ["LOOP_USERS"].split():
    User.objects.create_user(name, password=os.environ["LOOP_PASSWORD"])
admin = User.objects.create_superuser(os.environ["LOOP_ADMIN"], password=os.environ["LOOP_PASSWORD"])
receiver = Application.objects.create(
    name="Deployment B",
    client_id=os.environ["LOOP_CLIENT_ID"],
    client_secret=os.environ["LOOP_CLIENT_SECRET"],
    client_type=Application.CLIENT_CONFIDENTIAL,
    authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    user=admin,
)
AllowedScopes.objects.create(application=receiver, scopes="ssf:manage")
"""
DEACTIVATE_USER = """
import os
from django.contrib.auth import get_user_model
from epochauth.oauth import outbox

user = get_user_model().objects.get(username=os.environ["LOOP_USER"])
user.is_active = False
user.save()
# A script's outbox thread ends with it: what the save queued is delivered before it exits.
outbox.worker.drain(30)
"""


class DeploymentError(Exception):
    """A deployment that could not be set up or did not answer as it must, with what it said."""


@dataclass
class Deployment:
    """One ``runserver`` process of the test project, its environment, and its commands."""

    name: str
    port: int
    env: dict[str, str]
    directory: Path
    process: subprocess.Popen[bytes] | None = None
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False  # no proxy for 127.0.0.1, whatever the environment says

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / f"{self.name}.log"

    def log_tail(self, path: Path | None = None) -> str:
        path = path or self.log
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def manage(self, *args: str, **extra_env: str) -> str:
        """``manage.py`` in a process of its own; its output, or DeploymentError when it fails."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
        )
        if done.returncode:
            raise DeploymentError(
                f"{self.name}: manage.py {args[0]} failed ({done.returncode}):\n"
                f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )
        return done.stdout

    def spawn(self, label: str, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        """A long-lived ``manage.py`` command, stopped with the deployment (output in its log)."""
        with (self.directory / f"{self.name}-{label}.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env={**self.env, **extra_env},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.helpers.append(process)
        return process

    def start(self) -> None:
        """``runserver --noreload``, once it answers."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise DeploymentError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if self.request("GET", "/.well-known/jwks.json").status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise DeploymentError(f"{self.name} did not answer:\n{self.log_tail()}")
            time.sleep(0.1)

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers.update(kwargs.pop("headers", {}))
        return self.http.request(
            method, self.url + path, headers=headers, timeout=HTTP_TIMEOUT, **kwargs
        )

    def login(self, username: str, **extra: str) -> str:
        """An access token of ``username`` from ``POST /auth/token/`` (``extra``: e.g. resource)."""
        response = self.request(
            "POST", "/auth/token/", json={"username": username, "password": PASSWORD, **extra}
        )
        if response.status_code != 200:
            raise DeploymentError(f"{self.name}: login {response.status_code} {response.text}")
        return str(response.json()["access_token"])

    def stop_helpers(self) -> None:
        for process in self.helpers:
            _stop(process)
        self.helpers.clear()

    def stop(self) -> None:
        self.stop_helpers()
        if self.process is not None:
            _stop(self.process)
            self.process = None

    def close(self) -> None:
        self.stop()
        self.http.close()


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class Loop:
    """A and B, subscribed by :meth:`subscribe`; :meth:`trial` measures one revocation."""

    a: Deployment
    b: Deployment
    delivery: str = ""
    poll_interval: float = 0.0
    _admin_token: str = ""

    def management_token(self) -> str:
        """A client-credentials token of B's application at A, with ``ssf:manage``."""
        basic = base64.b64encode(f"{RECEIVER}:{self.a.env['LOOP_CLIENT_SECRET']}".encode())
        response = self.a.request(
            "POST",
            "/o/token/",
            data={"grant_type": "client_credentials", "scope": "ssf:manage"},
            headers={"Authorization": f"Basic {basic.decode()}"},
        )
        if response.status_code != 200:
            raise DeploymentError(f"A's token endpoint: {response.status_code} {response.text}")
        return str(response.json()["access_token"])

    def subscribe(self, delivery: str, poll_interval: float = 1.0) -> None:
        """B (restarted with ``delivery``) runs ``epochauth_ssf_subscribe`` against A and, for poll,
        ``epochauth_ssf_poll --loop --interval poll_interval`` beside its server; nothing when B
        is subscribed so already."""
        if (self.delivery, self.poll_interval) == (delivery, poll_interval):
            return
        self.b.stop()
        self.b.env["EPOCHAUTH_SSF_DELIVERY"] = delivery
        self.b.start()
        token = self.management_token()
        said = self.b.manage("epochauth_ssf_subscribe", self.a.url, EPOCHAUTH_SSF_TOKEN=token)
        if "Verified" not in said:
            raise DeploymentError(f"B's stream at A is not verified: {said}\n{self.a.log_tail()}")
        if delivery == "poll":
            interval = f"{poll_interval}s"
            self.b.spawn(
                "poller", "epochauth_ssf_poll", "--loop", "--interval", interval,
                EPOCHAUTH_SSF_TOKEN=token,
            )  # fmt: skip
        self.delivery, self.poll_interval = delivery, poll_interval

    def revoke(self, kind: str, user: str, token_at_a: str) -> None:
        """Revoke ``user`` at A: over the URL of ``kind``, or :data:`DEACTIVATE` by a script."""
        if kind == DEACTIVATE:
            self.a.manage("shell", "-v", "0", "-c", DEACTIVATE_USER, LOOP_USER=user)
            return
        if kind == "logout-all":
            response = self.a.request("POST", "/auth/logout-all/", token_at_a)
            expected = 204
        else:
            if not self._admin_token:
                self._admin_token = self.a.login(ADMIN)
            response = self.a.request(
                "POST", "/auth/revoke/", self._admin_token, json={"user": user}
            )
            expected = 200
        if response.status_code != expected:
            raise DeploymentError(f"A: {kind} {response.status_code} {response.text}")

    def tokens(self, user: str) -> tuple[str, str]:
        """``user`` logs in at A twice: a token for A and one for B, which B accepts."""
        token_at_a = self.a.login(user)
        token_for_b = self.a.login(user, resource=self.b.url)
        answer = self.b.request("GET", API, token_for_b)
        if answer.status_code != 200:
            raise DeploymentError(f"B refused A's token: {answer.status_code} {answer.text}")
        return token_at_a, token_for_b

    def trial(self, kind: str, bound: float, wait: float = 0.0, user: str = USER) -> float | None:
        """``user`` gets :meth:`tokens`; after ``wait`` seconds A revokes the user (``kind``).
        Returns the seconds from the start of A's revoking request to B's first 401, or None when B
        did not refuse within ``bound`` seconds."""
        token_at_a, token_for_b = self.tokens(user)
        time.sleep(wait)
        started = time.monotonic()
        self.revoke(kind, user, token_at_a)
        return self.refused_since(started, token_for_b, bound)

    def refused_since(self, started: float, token_for_b: str, bound: float) -> float | None:
        """Seconds from ``started`` (monotonic) to B's first 401 to the token; None after ``bound``."""
        while time.monotonic() - started < bound:
            try:
                status = self.b.request("GET", API, token_for_b).status_code
            except requests.ConnectionError:
                status = None  # B is not up (yet)
            if status not in (None, 200, 401):
                raise DeploymentError(f"B answered {status}:\n{self.b.log_tail()}")
            if status == 401:
                refused = time.monotonic() - started
                # B's cutoff for A's tokens is a time (iat before it): the next trial's token is
                # issued in a later second.
                time.sleep(1.05)
                return refused
            time.sleep(0.005)
        return None


def base_env(port: int, database_url: str, cache_prefix: str) -> dict[str, str]:
    """The environment of every process of a deployment: its own, never pytest's."""
    return {
        **_environ(database_url),
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_DEBUG": "1",  # loopback http issuers and push endpoints
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(32),
        "DEPLOYMENT_NAME": cache_prefix,
        "EPOCHAUTH_ISSUER": f"http://127.0.0.1:{port}",
    }


def _environ(database_url: str) -> dict[str, str]:
    """This process's environment without what configures a deployment, and ``database_url``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("EPOCHAUTH_", "DEPLOYMENT_", "TEST_IDP_", "LOOP_"))
        and key not in ("REDIS_URL", "DJANGO_SETTINGS_MODULE")
    }
    return {**env, "DJANGO_SETTINGS_MODULE": "testproject.settings", "DATABASE_URL": database_url}


@contextmanager
def databases(
    directory: Path, names: tuple[str, ...], server_url: str | None
) -> Iterator[dict[str, str]]:
    """A migrated database per name: SQLite files (one migrated, copied), or scratch databases on
    the PostgreSQL server of ``server_url``, migrated side by side and dropped afterwards."""
    if not server_url:
        template = directory / "template.sqlite3"
        _migrate([f"sqlite:///{template}"])
        urls = {}
        for name in names:
            shutil.copyfile(template, directory / f"{name}.sqlite3")
            urls[name] = f"sqlite:///{directory / f'{name}.sqlite3'}"
        yield urls
        return
    import psycopg
    from psycopg import sql

    parts = urlsplit(server_url)
    base = parts.path.lstrip("/") or "postgres"
    suffix = uuid.uuid4().hex[:8]
    scratch = {name: f"{base}_{name}_{suffix}".lower() for name in names}
    created: list[str] = []
    try:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for database in scratch.values():
                admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                created.append(database)
        urls = {n: urlunsplit(parts._replace(path=f"/{d}")) for n, d in scratch.items()}
        _migrate(list(urls.values()))
        yield urls
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            for database in created:
                admin.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(database)
                    )
                )


def _migrate(urls: list[str]) -> None:
    """``migrate`` of each database, side by side."""
    running = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=_environ(url),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for url in urls
    ]
    failed = []
    for process in running:
        output, _ = process.communicate(timeout=COMMAND_TIMEOUT)
        if process.returncode:
            failed.append(output[-3000:])
    if failed:
        raise DeploymentError("migrate failed:\n" + "\n".join(failed))


@contextmanager
def two_deployments(
    directory: Path, database_server: str | None = None, redis_url: str | None = None
) -> Iterator[Loop]:
    """A (transmitter) and B (receiver) running, A's user, admin and B's application made; not yet
    subscribed (:meth:`Loop.subscribe`). ``database_server``: a PostgreSQL URL whose server gets
    the two databases (else SQLite files in ``directory``); ``redis_url``: the cache of both, each
    under a key prefix of its own (else each process's LocMemCache, revocations pushed through the
    database)."""
    from epochauth.keys import generate_private_key_pem

    key_file = directory / "a-signing-key.pem"
    key_file.write_text(generate_private_key_pem("RS256"))
    key_file.chmod(0o600)
    run = uuid.uuid4().hex[:8]
    port_a, port_b = loopback_port(), loopback_port()
    with ExitStack() as stack:
        urls = stack.enter_context(databases(directory, ("a", "b"), database_server))
        env_a = base_env(port_a, urls["a"], f"epochauth-loop-{run}-a")
        env_a.update(
            EPOCHAUTH_ALGORITHM="RS256",  # OpenID Provider mode, and with it the transmitter
            EPOCHAUTH_SIGNING_KEY_FILE=str(key_file),
            DEPLOYMENT_RESOURCES=f"http://127.0.0.1:{port_b}",
            LOOP_CLIENT_SECRET=secrets.token_urlsafe(24),
        )
        env_b = base_env(port_b, urls["b"], f"epochauth-loop-{run}-b")
        env_b.update(
            EPOCHAUTH_SIGNING_KEY=secrets.token_urlsafe(48),
            EPOCHAUTH_SSF_TRANSMITTER=f"http://127.0.0.1:{port_a}",
            DEPLOYMENT_SSF_AUDIENCE=RECEIVER,
        )
        if redis_url:
            env_a["REDIS_URL"] = env_b["REDIS_URL"] = redis_url
            stack.callback(_delete_keys, redis_url, f"epochauth-loop-{run}-")
        a = Deployment("a", port_a, env_a, directory)
        b = Deployment("b", port_b, env_b, directory)
        stack.callback(a.close)
        stack.callback(b.close)
        a.manage(
            "shell", "-v", "0", "-c", SETUP_TRANSMITTER,
            LOOP_USERS=" ".join((USER, *SPARE_USERS)), LOOP_ADMIN=ADMIN,
            LOOP_PASSWORD=PASSWORD, LOOP_CLIENT_ID=RECEIVER,
        )  # fmt: skip
        a.start()
        # Retries are the outbox worker's: the server's own thread pushes only what a commit queued.
        a.spawn("outbox", "epochauth_outbox", "--loop", "--interval", "1s")
        yield Loop(a, b)


def _delete_keys(url: str, prefix: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
