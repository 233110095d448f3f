"""Revocation across real processes sharing a real Redis (DESIGN.md, invariant 3).

Every test runs ``manage.py runserver --noreload`` server processes on one temporary SQLite file and
the Redis database of the ``redis_url`` fixture (with a key prefix of the test's own), and drives them
over HTTP. Revocations are made by other processes (a management command, or another server), so
nothing here shares Python memory with the servers:

* a bump is visible at once in the process that made it and in every other process within
  ``PROPAGATION_BOUND`` (the refresh interval is 1 s);
* a logout in one server reaches the others through the shared denylist;
* so do a new password, a deleted session row, a group left or deleted (only the group is lost) and a
  login beyond ``MAX_SESSIONS_PER_USER``;
* when neither the cache nor the database can answer, a request fails closed with 503.

The subprocesses get their own ``DATABASE_URL``/``REDIS_URL``, whatever the environment of pytest says.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parent.parent
PROPAGATION_BOUND = 2.0  # seconds; DESIGN.md invariant 3 ("default <= 2 s")
POLL_INTERVAL = 0.05
USERS = ("alice", "bob")
HTTP_TIMEOUT = 5
HELLO = "/api/hello/"  # needs a valid token
STAFF_AREA = "/api/staff-area/"  # needs the group operators too
COMMAND_TIMEOUT = 60
START_TIMEOUT = 15

CREATE_USERS = """
import os
from django.contrib.auth import get_user_model

for name in os.environ["TEST_USERNAMES"].split():
    user, _ = get_user_model().objects.get_or_create(username=name)
    user.set_password(os.environ["TEST_USER_PASSWORD"])
    user.save()
"""
PASSWORD = "multiprocess-test-password"
COUNT_EPOCHS = "from epochauth.models import Epoch; print(Epoch.objects.count())"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _subprocess_env(db_path: Path, redis_url: str | None) -> dict[str, str]:
    """The environment of every process of a test: its own DATABASE_URL and REDIS_URL, never pytest's."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DATABASE_URL": f"sqlite:///{db_path}",
        "DJANGO_DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("REDIS_URL", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return env


def _manage(env: dict[str, str], *args: str, check: bool = True, **extra_env: str):
    """Run ``manage.py`` in a separate process; fail the test if it fails (unless ``check=False``)."""
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**env, **extra_env},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
    )
    if check and result.returncode:
        pytest.fail(f"manage.py {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def prepare_database(env: dict[str, str]) -> None:
    """Migrate the database ``env`` names and create :data:`USERS` with :data:`PASSWORD`."""
    _manage(env, "migrate", "--noinput", "--verbosity", "0")
    _manage(
        env,
        "shell",
        "-v",
        "0",
        "-c",
        CREATE_USERS,
        TEST_USERNAMES=" ".join(USERS),
        TEST_USER_PASSWORD=PASSWORD,
    )


@dataclass
class Stack:
    """What the processes of one test share: a SQLite file, a cache namespace in Redis, an environment.

    The servers' cache keys start with ``key_prefix``, unique per test: in the one database tests may
    use (``redis_url``) a test reads only its own keys and drops only those (``drop_keys``).
    """

    db_path: Path
    key_prefix: str
    env: dict[str, str]
    redis: object  # redis.Redis

    def manage(
        self, *args: str, check: bool = True, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        """Run ``manage.py`` in a separate process with the shared environment."""
        return _manage(self.env, *args, check=check, **extra_env)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """Start ``manage.py`` in a separate process with the shared environment (output is small)."""
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def bump_time(self, kind: str, username: str) -> float:
        """POSIX time of the last bump of a user's epoch, read straight from the SQLite file."""
        with closing(sqlite3.connect(self.db_path)) as db:
            (not_before,) = db.execute(
                "SELECT e.not_before FROM epochauth_epoch e JOIN auth_user u ON e.object_id = u.id || ''"
                " WHERE e.kind = ? AND u.username = ?",
                (kind, username),
            ).fetchone()
        return datetime.fromisoformat(not_before).replace(tzinfo=UTC).timestamp()

    def drop_keys(self, pattern: str = "*") -> int:
        """Delete this test's cache keys matching ``pattern`` (after the prefix); returns how many."""
        keys = list(self.redis.scan_iter(match=f"{self.key_prefix}:{pattern}"))
        if keys:
            self.redis.delete(*keys)
        return len(keys)

    @contextmanager
    def database_unreadable(self) -> Iterator[None]:
        """Move the SQLite file away: the next connection creates an empty one, so queries fail."""
        away = self.db_path.with_name(self.db_path.name + ".away")
        self.db_path.rename(away)
        try:
            probe = self.manage("shell", "-c", COUNT_EPOCHS, check=False)
            assert probe.returncode != 0 and "no such table" in probe.stderr, (
                "moving the SQLite file away did not make queries fail",
                probe.stdout,
                probe.stderr[-2000:],
            )
            yield
        finally:
            self.db_path.unlink(missing_ok=True)
            away.rename(self.db_path)


@dataclass
class Server:
    """One ``runserver`` process."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path
    http: requests.Session = field(default_factory=requests.Session)

    def __post_init__(self) -> None:
        self.http.trust_env = False  # no proxy for 127.0.0.1, whatever the environment says

    def request(
        self, method: str, path: str, token: str | None = None, **kwargs
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.http.request(
            method, self.url + path, headers=headers, timeout=HTTP_TIMEOUT, **kwargs
        )

    def status(self, token: str, path: str = HELLO) -> int:
        return self.request("GET", path, token).status_code

    def login(self, username: str) -> str:
        response = self.request(
            "POST", "/auth/token/", json={"username": username, "password": PASSWORD}
        )
        assert response.status_code == 200, (self.name, response.status_code, response.text)
        return response.json()["access_token"]

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture(scope="module")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Callable[[], Path]:
    """A migrated SQLite file with the users ``alice`` and ``bob``, built on first use; tests copy it."""
    built: list[Path] = []

    def get() -> Path:
        if not built:
            path = tmp_path_factory.mktemp("multiprocess") / "template.sqlite3"
            prepare_database(_subprocess_env(path, redis_url=None))
            built.append(path)
        return built[0]

    return get


@pytest.fixture
def epochauth_settings() -> dict[str, object]:
    """``EPOCHAUTH`` entries of every process of a test beyond the testproject's; parametrize to set some."""
    return {}


@pytest.fixture
def stack(
    tmp_path: Path,
    redis_url: str,
    migrated_database: Callable[[], Path],
    epochauth_settings: dict[str, object],
) -> Iterator[Stack]:
    """A fresh copy of the migrated SQLite file and an empty cache namespace in the ``redis_url`` database."""
    import redis

    key_prefix = f"epochauth-multiprocess-{uuid.uuid4().hex}"
    settings_dir = tmp_path / "settings"
    settings_dir.mkdir()
    (settings_dir / "multiprocess_settings.py").write_text(
        "from testproject.settings import *  # noqa: F403\n\n"
        f"CACHES['default']['KEY_PREFIX'] = {key_prefix!r}  # noqa: F405\n"
        f"EPOCHAUTH.update({epochauth_settings!r})  # noqa: F405\n"
    )
    env = {
        **_subprocess_env(tmp_path / "shared.sqlite3", redis_url),
        "DJANGO_SETTINGS_MODULE": "multiprocess_settings",
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(settings_dir), str(ROOT), os.environ.get("PYTHONPATH")])
        ),
    }
    result = Stack(
        tmp_path / "shared.sqlite3",
        key_prefix,
        env,
        redis.Redis.from_url(redis_url, socket_timeout=5),
    )
    shutil.copyfile(migrated_database(), result.db_path)
    try:
        yield result
    finally:
        result.drop_keys()
        result.redis.close()


def run_server(name: str, env: dict[str, str], log: Path) -> Server:
    """A ``runserver --noreload`` process with ``env``, once it answers (its output goes to ``log``)."""
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = Server(name=name, url=f"http://127.0.0.1:{port}", process=process, log=log)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if process.poll() is not None:
            pytest.fail(f"server {name} exited with {process.returncode}:\n{server.log_tail()}")
        try:
            if server.request("GET", "/.well-known/jwks.json").status_code == 200:
                return server
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            pytest.fail(
                f"server {name} did not answer within {START_TIMEOUT} s:\n{server.log_tail()}"
            )
        time.sleep(0.1)


@pytest.fixture
def start_server(stack: Stack, tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """Start a ``runserver --noreload`` process on the shared stack; all are stopped at teardown."""
    servers: list[Server] = []

    def start(name: str) -> Server:
        server = run_server(name, stack.env, tmp_path / f"server-{name}.log")
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def watch(
    servers: list[Server],
    token: str,
    wanted: int,
    event: float | subprocess.Popen[str],
    path: str = HELLO,
):
    """GET ``path`` on each server every 50 ms until each answers ``wanted``.

    ``event`` is when the revocation happened (a ``time.time()`` value), or a process making it:
    the servers are polled (so kept warm) while it runs, and it happened when the process exited.
    Returns ``({name: time.time() of the first wanted answer}, {name: statuses seen}, event time)``.
    """
    flipped: dict[str, float] = {}
    seen: dict[str, list[int]] = {s.name: [] for s in servers}
    happened = event if isinstance(event, float) else None
    give_up = time.monotonic() + COMMAND_TIMEOUT
    while time.monotonic() < give_up:
        if happened is None and event.poll() is not None:
            happened = time.time()
        for server in servers:
            if server.name not in flipped:
                seen[server.name].append(status := server.status(token, path))
                if status == wanted:
                    flipped[server.name] = time.time()
        if happened is not None and (
            len(flipped) == len(servers) or time.time() - happened > 2 * PROPAGATION_BOUND
        ):
            break
        time.sleep(POLL_INTERVAL)
    assert happened is not None, "the revoking process did not finish"
    return flipped, seen, happened


def assert_flipped(
    servers: list[Server],
    token: str,
    before: int,
    after: int,
    event: float | subprocess.Popen[str],
    what: str,
    path: str = HELLO,
) -> dict[str, float]:
    """Every server goes from ``before`` to ``after`` within the bound, and answers nothing else.

    Returns the ``time.time()`` of each server's first ``after``; a process ``event`` counts from its
    exit (a negative delay: the server flipped before the process had exited).
    """
    flipped, seen, happened = watch(servers, token, after, event, path)
    delays = {name: at - happened for name, at in flipped.items()}
    for server in servers:
        delay = delays.get(server.name)
        shown = "never" if delay is None else f"{delay:.3f} s"
        print(f"\n  {what}: server {server.name} answered {after} after {shown}")
    for server in servers:
        assert server.name in delays, (what, server.name, seen[server.name], server.log_tail())
        assert delays[server.name] <= PROPAGATION_BOUND, (what, server.name, delays[server.name])
        assert set(seen[server.name]) <= {before, after}, (what, server.name, seen[server.name])
    return flipped


def assert_stays(
    servers: list[Server], token: str, status: int, seconds: float, path: str = HELLO
) -> None:
    """Keep asking for longer than the refresh interval: the answer never changes back."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for server in servers:
            assert server.status(token, path) == status, server.name
        time.sleep(POLL_INTERVAL * 2)


def test_bump_by_another_process_reaches_every_server(
    start_server: Callable[[str], Server], stack: Stack
):
    a, b = start_server("A"), start_server("B")
    token = a.login("alice")
    for _ in range(3):  # warm the process memory of both servers
        assert (a.status(token), b.status(token)) == (200, 200)

    command = stack.spawn("epochauth_revoke", "--user", "alice", "--reason", "multiprocess test")
    try:  # the servers are polled every 50 ms while the command runs
        flipped = assert_flipped(
            [a, b], token, 200, 401, command, "epochauth_revoke, from its exit"
        )
    finally:
        if command.poll() is None:
            command.kill()
        out, err = command.communicate(timeout=COMMAND_TIMEOUT)
    assert command.returncode == 0 and "epoch now 1" in out, (command.returncode, out, err)
    bumped_at = stack.bump_time(
        "user", "alice"
    )  # when the command bumped (just before its commit)
    for name, at in flipped.items():
        print(
            f"\n  epochauth_revoke, from the bump: server {name} answered 401 after {at - bumped_at:.3f} s"
        )
        assert at - bumped_at <= PROPAGATION_BOUND, name
    response = b.request("GET", "/api/hello/", token)
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert_stays([a, b], token, 401, seconds=1.5)

    fresh = b.login("alice")  # minted after the bump: carries the new epoch
    assert (a.status(fresh), b.status(fresh)) == (200, 200)
    assert_stays([a, b], fresh, 200, seconds=1.5)


def test_bump_is_immediate_in_its_own_process(start_server: Callable[[str], Server]):
    a, b = start_server("A"), start_server("B")
    token = a.login("alice")
    for _ in range(3):
        assert (a.status(token), b.status(token)) == (200, 200)

    assert a.request("POST", "/auth/logout-all/", token).status_code == 204
    bumped = time.time()
    assert a.status(token) == 401  # at once, no waiting, in the process that bumped
    print(
        f"\n  logout-all on A: A answered 401 after {time.time() - bumped:.3f} s (first request)"
    )

    assert_flipped([b], token, 200, 401, bumped, "logout-all on A")
    assert_stays([a, b], token, 401, seconds=1.5)
    fresh = a.login("alice")
    assert (a.status(fresh), b.status(fresh)) == (200, 200)


def test_logout_on_one_server_reaches_the_other(start_server: Callable[[str], Server]):
    a, b = start_server("A"), start_server("B")
    token = a.login("alice")
    other = a.login("bob")
    for _ in range(3):
        assert (a.status(token), b.status(token)) == (200, 200)

    assert a.request("POST", "/auth/logout/", token).status_code == 204
    logged_out = time.time()
    assert a.status(token) == 401
    print(
        f"\n  logout on A: A answered 401 after {time.time() - logged_out:.3f} s (first request)"
    )

    assert_flipped([b], token, 200, 401, logged_out, "logout on A (denylist)")
    assert_stays([a, b], token, 401, seconds=1.5)
    assert (a.status(other), b.status(other)) == (200, 200)  # only that session ended


@pytest.mark.parametrize("epochauth_settings", [{"REVOCATION_RELOAD_INTERVAL": 1}])
def test_a_logout_during_an_outage_reaches_the_database_after_its_writer_crashed(
    start_server: Callable[[str], Server], stack: Stack
):
    """Issue 30: with the database unreadable, a logout on A goes to the outage journal in Redis and
    reaches B at once; A dies (SIGKILL) before the database is back; B replays the journal into the
    database once it can read it, so that a process started afterwards refuses the token too."""
    a, b = start_server("A"), start_server("B")
    login = a.request("POST", "/auth/token/", json={"username": "alice", "password": PASSWORD})
    token, family = login.json()["access_token"], login.json()["refresh_token"].partition(".")[0]
    other = a.login("bob")
    for _ in range(3):
        assert (a.status(token), b.status(token)) == (200, 200)

    with stack.database_unreadable():
        assert a.request("POST", "/auth/logout/", token).status_code == 204
        logged_out = time.time()
        assert a.status(token) == 401
        assert_flipped([b], token, 200, 401, logged_out, "logout on A during the outage")
        a.process.kill()
        a.process.wait(timeout=10)
        assert b.status(other) == 200  # only that session ended
    assert revoked_at(stack, family) is None  # in the journal only

    deadline = time.monotonic() + COMMAND_TIMEOUT
    while revoked_at(stack, family) is None and time.monotonic() < deadline:
        assert b.status(token) == 401  # B's requests read the database again and replay
        time.sleep(POLL_INTERVAL * 4)
    assert revoked_at(stack, family) is not None, b.log_tail()
    with closing(sqlite3.connect(stack.db_path)) as db:
        ((events,),) = db.execute(
            "SELECT COUNT(*) FROM epochauth_auditevent WHERE action = 'session_revoked'"
        ).fetchall()
    assert events == 1
    assert stack.redis.llen(f"{stack.key_prefix}:1:epochauth:journal") == 0
    c = start_server("C")  # knows only what the database says
    assert (c.status(token), c.status(other)) == (401, 200)
    assert "Traceback" not in b.log.read_text(errors="replace")


@pytest.mark.parametrize("epochauth_settings", [{"REVOCATION_RELOAD_INTERVAL": 1}])
def test_a_refresh_token_replayed_to_another_server_during_an_outage_ends_its_family(
    start_server: Callable[[str], Server], stack: Stack
):
    """Issue 30: with the database unreadable, A rotates a refresh token from the mirror in Redis;
    the old token sent to B is a reuse: the session ends on both servers at once, and in the
    database once it is back."""
    a, b = start_server("A"), start_server("B")
    login = a.request("POST", "/auth/token/", json={"username": "alice", "password": PASSWORD})
    first = login.json()
    family = first["refresh_token"].partition(".")[0]
    for _ in range(3):
        assert (a.status(first["access_token"]), b.status(first["access_token"])) == (200, 200)

    with stack.database_unreadable():
        rotated = a.request(
            "POST", "/auth/token/refresh/", json={"refresh_token": first["refresh_token"]}
        )
        assert rotated.status_code == 200, rotated.text
        second = rotated.json()
        assert b.status(second["access_token"]) == 200
        renewed = b.request("POST", "/auth/token/renew/", second["access_token"])
        assert renewed.status_code == 200, renewed.text
        reuse = b.request(
            "POST", "/auth/token/refresh/", json={"refresh_token": first["refresh_token"]}
        )
        assert (reuse.status_code, reuse.json()["error"]) == (400, "invalid_grant")
        reused = time.time()
        assert_flipped(
            [a, b], second["access_token"], 200, 401, reused, "reuse on B during the outage"
        )
        again = a.request(
            "POST", "/auth/token/refresh/", json={"refresh_token": second["refresh_token"]}
        )
        assert again.status_code == 400, again.text
    assert revoked_at(stack, family) is None  # in the journal only

    deadline = time.monotonic() + COMMAND_TIMEOUT
    while revoked_at(stack, family) is None and time.monotonic() < deadline:
        assert b.status(renewed.json()["access_token"]) == 401
        time.sleep(POLL_INTERVAL * 4)
    assert revoked_at(stack, family) is not None, (a.log_tail(), b.log_tail())
    c = start_server("C")  # knows only what the database says
    assert c.status(renewed.json()["access_token"]) == 401
    refused = c.request(
        "POST", "/auth/token/refresh/", json={"refresh_token": second["refresh_token"]}
    )
    assert refused.status_code == 400


def revoked_at(stack: Stack, family: str) -> str | None:
    with closing(sqlite3.connect(stack.db_path)) as db:
        ((at,),) = db.execute(
            "SELECT revoked_at FROM epochauth_session WHERE family = ?", (family,)
        ).fetchall()
    return at


@pytest.mark.parametrize(
    "dropped",
    ["*:epochauth:revocation:version", "*"],
    ids=["version-evicted", "cache-cleared"],
)
def test_fail_closed_when_neither_cache_nor_database_answers(
    start_server: Callable[[str], Server], stack: Stack, dropped: str
):
    a = start_server("A")
    alice, bob = (
        a.login("alice"),
        a.login("bob"),
    )  # bob's token is never used on A while the DB is up
    for _ in range(3):
        assert a.status(alice) == 200

    with stack.database_unreadable():
        # What the process holds answers without the database, for a user it never saw too: an epoch
        # change it does not hold predates the token (REVOCATION_WINDOW), so no epoch is read.
        assert_stays([a], alice, 200, seconds=1.2)
        assert a.status(bob) == 200
        stack.drop_keys("*:epochauth:epoch:*")
        assert_stays([a], bob, 200, seconds=1.2)

        # A version the process cannot follow (evicted, or a change announced) needs the database:
        # the process fails closed once it reads the version key again.
        assert stack.drop_keys(dropped) > 0
        what = f"DB unreadable, {dropped!r} evicted from Redis"
        assert_flipped([a], alice, 200, 503, time.time(), what)
        assert_stays([a], alice, 503, seconds=1.5)  # never a 200 again while the truth is unknown

    # The database is back: the next request reads it and answers again.
    assert a.status(alice) == 200
    assert a.status(bob) == 200
    assert "Traceback" not in a.log.read_text(errors="replace")


IMPORTS = (
    "from django.contrib.auth.models import Group, User\nfrom epochauth.models import Session"
)
JOIN_OPERATORS = f"""
{IMPORTS}
User.objects.get(username="alice").groups.add(Group.objects.get_or_create(name="operators")[0])
"""
LEAVING = {
    "password change": 'u = User.objects.get(username="alice"); u.set_password("new-password"); u.save()',
    "session deleted": 'Session.objects.filter(user__username="alice").delete()',
    "group left": 'User.objects.get(username="alice").groups.remove(Group.objects.get(name="operators"))',
    "groups cleared": 'Group.objects.get(name="operators").user_set.clear()',
    "group deleted": 'Group.objects.get(name="operators").delete()',
}


@pytest.mark.parametrize("path", list(LEAVING))
def test_every_path_that_takes_access_away_reaches_every_server(
    start_server: Callable[[str], Server], stack: Stack, path: str
):
    """Each revocation made by another process (a ``manage.py shell``) is seen by both servers in time;
    leaving a group takes only that group (the token still authenticates), the rest end the token."""
    stack.manage("shell", "-v", "0", "-c", JOIN_OPERATORS)
    a, b = start_server("A"), start_server("B")
    token, other = a.login("alice"), a.login("bob")
    for _ in range(3):
        assert (a.status(token, STAFF_AREA), b.status(token, STAFF_AREA)) == (200, 200)
        assert (a.status(other), b.status(other)) == (200, 200)
    only_the_group = path.startswith("group")
    target, after = (STAFF_AREA, 403) if only_the_group else (HELLO, 401)

    script = f"{IMPORTS}\n{LEAVING[path]}"
    command = stack.spawn("shell", "-v", "0", "-c", script)
    try:
        assert_flipped([a, b], token, 200, after, command, f"{path}, from its exit", target)
    finally:
        if command.poll() is None:
            command.kill()
        out, err = command.communicate(timeout=COMMAND_TIMEOUT)
    assert command.returncode == 0, (out, err)
    assert_stays([a, b], token, after, seconds=1.5, path=target)
    assert (a.status(token), b.status(token)) == ((200, 200) if only_the_group else (401, 401))
    assert (a.status(other), b.status(other)) == (200, 200)  # nobody else lost anything


@pytest.mark.parametrize("epochauth_settings", [{"MAX_SESSIONS_PER_USER": 1}])
def test_a_login_beyond_the_session_limit_ends_the_oldest_session_on_every_server(
    start_server: Callable[[str], Server],
):
    a, b = start_server("A"), start_server("B")
    oldest = a.login("alice")
    for _ in range(3):
        assert (a.status(oldest), b.status(oldest)) == (200, 200)

    newest = b.login("alice")
    logged_in = time.time()
    assert b.status(oldest) == 401  # at once in the process that ended it
    assert_flipped([a], oldest, 200, 401, logged_in, "login beyond MAX_SESSIONS_PER_USER on B")
    assert (a.status(newest), b.status(newest)) == (200, 200)


def test_a_simplejwt_exchange_on_one_server_reaches_the_other(
    start_server: Callable[[str], Server],
):
    """During a simplejwt migration, the one-time exchange of a refresh token on A refuses, on every
    server, the refresh token again and the user's access tokens that name no refresh token (simplejwt's
    own refresh view may have minted them from it): a denylist entry, pushed like a logout's."""
    a, b = start_server("A"), start_server("B")
    pair = a.request(
        "POST", "/simplejwt/token/", json={"username": "alice", "password": PASSWORD}
    ).json()
    access, refresh = pair["access"], pair["refresh"]
    for _ in range(3):
        assert (a.status(access), b.status(access)) == (200, 200)

    exchanged = a.request("POST", "/auth/token/refresh/", json={"refresh_token": refresh})
    assert exchanged.status_code == 200, exchanged.text
    at = time.time()
    assert a.status(access) == 401
    assert_flipped([b], access, 200, 401, at, "simplejwt exchange on A")
    assert_stays([a, b], access, 401, seconds=1.5)
    again = b.request("POST", "/auth/token/refresh/", json={"refresh_token": refresh})
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    fresh = exchanged.json()["access_token"]  # the session of ours it became
    assert (a.status(fresh), b.status(fresh)) == (200, 200)


MINT_BOUND = """
import os
from django.contrib.auth import get_user_model
from epochauth.tokens import mint_access_token

user = get_user_model().objects.get(username="alice")
print(mint_access_token(user, extra_claims={"cnf": {"jkt": os.environ["TEST_JKT"]}}).token)
"""


def test_a_dpop_proof_replayed_to_another_server_is_refused(
    start_server: Callable[[str], Server], stack: Stack
):
    """RFC 9449 section 11.1 (DESIGN.md invariant 16): a proof's ``jti`` is remembered in the shared
    cache, so the proof A took is refused by B. B is called with A's ``Host``, so the proof's ``htu``
    is B's request URL too: only the replay is wrong."""
    from tests.test_dpop import Holder

    a, b = start_server("A"), start_server("B")
    holder = Holder()
    minted = stack.manage("shell", "-v", "0", "-c", MINT_BOUND, TEST_JKT=holder.jkt)
    token = minted.stdout.strip().splitlines()[-1]
    as_a = {"Host": a.url.removeprefix("http://")}

    def call(server: Server, proof: str) -> requests.Response:
        headers = {"Authorization": f"DPoP {token}", "DPoP": proof, **as_a}
        return server.http.get(server.url + HELLO, headers=headers, timeout=HTTP_TIMEOUT)

    proof = holder.proof(token, htu=a.url + HELLO)
    assert call(a, proof).status_code == 200
    replayed = call(b, proof)
    assert replayed.status_code == 401, replayed.text
    assert 'error="invalid_dpop_proof"' in replayed.headers["WWW-Authenticate"]
    assert "used before" in replayed.headers["WWW-Authenticate"]
    assert (
        call(b, holder.proof(token, htu=a.url + HELLO)).status_code == 200
    )  # a fresh proof passes


SSF_SECRET = "multiprocess-ssf-push-secret-0123456789abcdef"
SSF_TOKEN_ENV = "EPOCHAUTH_TEST_SSF_TOKEN"
SETUP_SSF = """
import os
from django.contrib.auth import get_user_model
from epochauth.models import Identity, SsfSubscription

issuer = os.environ["TEST_SSF_ISSUER"]
Identity.objects.create(
    issuer=issuer, subject="alice-at-idp", user=get_user_model().objects.get(username="alice")
)
SsfSubscription.objects.create(
    issuer=issuer,
    stream_id=os.environ["TEST_SSF_STREAM"],
    delivery=os.environ["TEST_SSF_DELIVERY"],
    push_secret_hash=os.environ["TEST_SSF_SECRET_HASH"],
    poll_url=os.environ["TEST_SSF_POLL_URL"],
)
"""


class TestSharedSignals:
    """A Shared Signals event (epochauth.ssf) received by one process ends alice's tokens in every
    server: pushed to server A, or polled by a separate ``epochauth_ssf_poll`` process."""

    @pytest.fixture
    def transmitter(self) -> Iterator[object]:
        from tests.ssf_transmitter import TestTransmitter

        sender = TestTransmitter(audience="http://127.0.0.1:8000")  # the servers' ISSUER
        yield sender
        sender.stop()

    @pytest.fixture
    def epochauth_settings(self, transmitter) -> dict[str, object]:
        return {
            "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
            "ISSUERS": [{"issuer": transmitter.issuer, "audiences": ["https://unused.example"]}],
            "SSF_TRANSMITTERS": [
                {"issuer": transmitter.issuer, "token_env": SSF_TOKEN_ENV, "delivery": "push"}
            ],
        }

    def subscribe(self, stack: Stack, transmitter, delivery: str) -> str:
        from epochauth.ssf import events
        from epochauth.ssf.receiver import secret_hash

        stream_id = f"stream-{delivery}"
        method = events.PUSH if delivery == "push" else events.POLL
        transmitter.streams[stream_id] = {"stream_id": stream_id, "delivery": {"method": method}}
        stack.manage(
            "shell",
            "-c",
            SETUP_SSF,
            TEST_SSF_ISSUER=transmitter.issuer,
            TEST_SSF_STREAM=stream_id,
            TEST_SSF_DELIVERY=delivery,
            TEST_SSF_SECRET_HASH=secret_hash(SSF_SECRET) if delivery == "push" else "",
            TEST_SSF_POLL_URL=f"{transmitter.issuer}/ssf/poll" if delivery == "poll" else "",
        )
        return stream_id

    def event(self, transmitter) -> str:
        from epochauth.ssf import events

        subject = {"format": "iss_sub", "iss": transmitter.issuer, "sub": "alice-at-idp"}
        return transmitter.event_token(events.CREDENTIAL_CHANGE, {}, subject)

    def test_a_pushed_event_on_one_server_reaches_the_other(
        self, start_server: Callable[[str], Server], stack: Stack, transmitter
    ):
        from epochauth.ssf import events

        a, b = start_server("A"), start_server("B")
        self.subscribe(stack, transmitter, "push")
        token, other = a.login("alice"), a.login("bob")
        for _ in range(3):
            assert (a.status(token), b.status(token)) == (200, 200)

        response = a.http.post(
            f"{a.url}/auth/ssf/events/",
            data=self.event(transmitter),
            headers={
                "Content-Type": events.SECEVENT_MEDIA_TYPE,
                "Authorization": f"Bearer {SSF_SECRET}",
            },
            timeout=HTTP_TIMEOUT,
        )
        pushed = time.time()
        assert response.status_code == 202, (response.text, a.log_tail())
        assert a.status(token) == 401  # at once in the process that received it
        assert_flipped([b], token, 200, 401, pushed, "SSF push to A")
        assert_stays([a, b], token, 401, seconds=1.5)
        assert (a.status(other), b.status(other)) == (200, 200)  # bob is not alice-at-idp

    def test_a_polled_event_reaches_every_server(
        self, start_server: Callable[[str], Server], stack: Stack, transmitter
    ):
        from tests.ssf_transmitter import MANAGEMENT_TOKEN

        a, b = start_server("A"), start_server("B")
        stream_id = self.subscribe(stack, transmitter, "poll")
        token = a.login("alice")
        for _ in range(3):
            assert (a.status(token), b.status(token)) == (200, 200)

        transmitter.deliver(stream_id, self.event(transmitter))
        poller = subprocess.Popen(
            [sys.executable, "manage.py", "epochauth_ssf_poll"],
            cwd=ROOT,
            env={**stack.env, SSF_TOKEN_ENV: MANAGEMENT_TOKEN},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert_flipped([a, b], token, 200, 401, poller, "SSF poll by another process")
        finally:
            if poller.poll() is None:
                poller.kill()
            out, err = poller.communicate(timeout=COMMAND_TIMEOUT)
        assert poller.returncode == 0 and "1 event(s)" in out, (out, err)
        assert len(transmitter.acks) == 1 and not transmitter.queue


@pytest.mark.parametrize("epochauth_settings", [{"DEFAULT_COMMUNITY": "lhcb"}])
def test_a_community_bump_by_another_process_reaches_every_server(
    start_server: Callable[[str], Server], stack: Stack
):
    """The test project's communities: alice's token is of lhcb (the default), bob's of belle2;
    ``epochauth_revoke --community lhcb`` in another process ends alice's on both servers in time,
    and nobody else's."""
    stack.manage(
        "shell",
        "-v",
        "0",
        "-c",
        "from django.contrib.auth import get_user_model\n"
        "from epochauth.models import CommunityMembership\n"
        "bob = get_user_model().objects.get(username='bob')\n"
        "CommunityMembership.objects.create(user=bob, community='belle2')\n",
    )
    a, b = start_server("A"), start_server("B")
    token = a.login("alice")
    response = b.request(
        "POST",
        "/auth/token/",
        json={"username": "bob", "password": PASSWORD, "scope": "vo:belle2"},
    )
    assert response.status_code == 200 and response.json()["vo"] == "belle2", response.text
    other = response.json()["access_token"]
    for _ in range(3):
        assert (a.status(token), b.status(token)) == (200, 200)
        assert (a.status(other), b.status(other)) == (200, 200)

    command = stack.spawn("epochauth_revoke", "--community", "lhcb", "--reason", "multiprocess")
    try:
        assert_flipped([a, b], token, 200, 401, command, "epochauth_revoke --community")
    finally:
        if command.poll() is None:
            command.kill()
        out, err = command.communicate(timeout=COMMAND_TIMEOUT)
    assert command.returncode == 0 and "community lhcb" in out, (out, err)
    assert_stays([a, b], token, 401, seconds=1.5)
    assert (a.status(other), b.status(other)) == (200, 200)  # belle2 lost nothing
    fresh = b.login("alice")  # minted after the bump: carries lhcb's new epoch
    assert (a.status(fresh), b.status(fresh)) == (200, 200)
