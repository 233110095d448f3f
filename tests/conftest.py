"""Generic fixtures: external services (skip locally, fail in CI) and free ports."""

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.browser import chrome  # noqa: F401  (a fixture of the browser tests)
from tests.helpers import FakeServer
from tests.idp import IdPMissing, TestIdP
from tests.ports import loopback_port
from tests.redis_server import PrivateRedis, RedisMissing


def service_required(
    name: str,
    check: Callable[[], object],
    absent: type[Exception] | tuple[type[Exception], ...] = Exception,
) -> None:
    """Run ``check``; if it raises ``absent``, the service is not here: fail when CI=true, else skip.

    Any other exception propagates and fails the test everywhere: for a service we start ourselves,
    only a missing program may skip, never a start that failed or was slow.
    """
    try:
        check()
    except absent as exc:
        message = f"{name} is not reachable: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@contextmanager
def redis_for_tests() -> Iterator[str]:
    """The URL of a Redis the tests may flush: ``REDIS_URL`` when set (CI's Redis leg), otherwise a
    private ``redis-server`` (``tests.redis_server``) on a free port, stopped on exit.

    Never a Redis that merely happens to listen on 6379: tests flush what they use, and a server's
    pub/sub channels are shared by all its databases. Without ``redis-server`` on PATH this skips
    (fails when CI=true); a server that exits or is not ready in time fails everywhere.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        def ping() -> None:
            with redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1) as client:
                client.ping()

        service_required(f"Redis at REDIS_URL={url}", ping)
        yield url
        return
    server = PrivateRedis(loopback_port())
    service_required("a private redis-server for the tests", server.start, RedisMissing)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def session_redis_url() -> Iterator[str]:
    """``redis_url`` for fixtures of a wider scope: one Redis for the whole session (``redis_for_tests``)."""
    with redis_for_tests() as url:
        yield url


@pytest.fixture
def redis_url(session_redis_url: str) -> str:
    """URL of a Redis server that tests may flush: see ``redis_for_tests``."""
    return session_redis_url


@pytest.fixture(params=["true", None], ids=["CI", "local"])
def ci(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Each test runs as in CI (CI=true) and as on a developer's machine."""
    if request.param is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", request.param)
    return request.param is not None


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    return loopback_port()


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture(scope="session", autouse=True)
def no_database_push() -> Iterator[None]:
    """The testproject pushes through the database when it has no Redis; the suite's one process
    shares its test database with nobody, and a listener's connection would keep PostgreSQL from
    dropping it. The tests of that channel run servers of their own (tests/test_push_database.py)."""
    from django.conf import settings
    from django.test.utils import override_settings

    if settings.EPOCHAUTH.get("REVOCATION_PUSH") != "database":
        yield
        return
    with override_settings(EPOCHAUTH={**settings.EPOCHAUTH, "REVOCATION_PUSH": True}):
        yield


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    """Password hashing is not under test; the default hasher would dominate the suite's run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


class StoppedClock:
    """The time epochauth's caches see (``epochauth.clock``): it stands still until ``advance()``.

    It starts at a whole second, so whole-second steps add up exactly and a step onto a lifetime's
    boundary lands on it, on every run.
    """

    def __init__(self) -> None:
        self._wall = float(int(time.time()))
        self._monotonic = float(int(time.monotonic()))

    def wall(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._monotonic

    def advance(self, seconds: float) -> None:
        self._wall += seconds
        self._monotonic += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> StoppedClock:
    """Stops the clock of epochauth's caches: a lifetime or cool-down passes by ``clock.advance()``,
    not by sleeping, so a slow machine cannot change what a test sees.

    Only ours: token times, other processes (the test IdP) and the shared cache's own timeouts (Redis,
    LocMemCache) keep real time.
    """
    from epochauth import clock as cache_clock

    stopped = StoppedClock()
    monkeypatch.setattr(cache_clock, "wall", stopped.wall)
    monkeypatch.setattr(cache_clock, "monotonic", stopped.monotonic)
    return stopped


@pytest.fixture(autouse=True)
def fresh_token_state():
    """Each test starts with empty caches: no epoch, denylist or throttle state leaks between tests."""
    from django.core.cache import cache

    from epochauth.conf import clear_process_caches

    try:
        cache.clear()
    except (
        Exception
    ):  # an unreachable Redis: the tests that need it skip or fail through `redis_url`
        pass
    clear_process_caches()
    yield
    clear_process_caches()


def start_idp(provider: TestIdP | None = None, **start: Any) -> TestIdP:
    """``provider.start(**start)`` (a new ``TestIdP`` by default) for a test that needs the test IdP.

    Without node or npm it is skipped locally (failed when CI=true); a server that exits or is not
    ready in time fails the test, with its stderr tail.
    """
    provider = TestIdP() if provider is None else provider
    service_required(
        "the test OpenID provider (Node.js, tests/idp)",
        lambda: provider.start(**start),
        IdPMissing,
    )
    return provider


@pytest.fixture(scope="session")
def idp() -> Iterator[TestIdP]:
    """The real test OpenID provider (tests/idp, Node.js) on a free loopback port, for the whole session.

    A ``tests.idp.TestIdP``: ``idp.issuer``, ``idp.client_credentials_token()``, ``idp.user_token("alice")``,
    ``idp.rotate()``, ``idp.down()``/``up()``, ``idp.stats()``. See ``start_idp`` for when it skips.
    Shared: a test that rotates keys or takes it down must undo what others rely on (``up()``), or
    start a provider of its own with ``start_idp``.
    """
    provider = start_idp()
    yield provider
    provider.stop()


@pytest.fixture(scope="session")
def es_idp() -> Iterator[TestIdP]:
    """A second provider like ``idp``, whose access tokens are ES256; shared in the same way."""
    provider = start_idp(env={"IDP_ACCESS_TOKEN_ALG": "ES256"})
    yield provider
    provider.stop()


@pytest.fixture
def idp_stats_reset(idp):
    """``idp`` with zeroed request stats, discovery/JWKS up and undelayed; brought up again afterwards."""
    idp.up()
    idp.delay(0)
    idp.reset_stats()
    yield idp
    idp.up()
    idp.delay(0)


@pytest.fixture
def attacker():
    """An issuer on loopback that is never allow-listed: it must never be asked for anything."""
    from tests.loopback_issuer import CraftedIssuer, key

    issuer = CraftedIssuer({"rsa-1": (key("rsa-evil"), "RS256")})
    yield issuer
    assert issuer.counts.total() == 0
    issuer.stop()


WEB_IDP_SECRET_ENV = "EPOCHAUTH_TEST_WEB_IDP_SECRET"


@pytest.fixture
def web_idp_env() -> dict[str, str]:
    """More environment for the ``web_idp`` provider (see tests/idp/server.js): a module overrides it."""
    return {}


@pytest.fixture
def web_idp(live_server, settings, monkeypatch, web_idp_env):
    """A provider of its own whose web-client redirects to the live server: our only login provider,
    "Test IdP" (slug ``test-idp``), whose access tokens for the default resource are accepted too."""
    from tests.idp import DEFAULT_RESOURCE

    provider = start_idp(
        env={"IDP_REDIRECT_URIS": f"{live_server.url}/oidc/callback/", **web_idp_env}
    )
    monkeypatch.setenv(WEB_IDP_SECRET_ENV, provider.WEB_CLIENT_SECRET)
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [
            {
                "issuer": provider.issuer,
                "slug": "test-idp",
                "display_name": "Test IdP",
                "client_id": provider.WEB_CLIENT_ID,
                "client_secret_env": WEB_IDP_SECRET_ENV,
                "audiences": [DEFAULT_RESOURCE],
            }
        ],
    }
    yield provider
    provider.stop()


@pytest.fixture
def oauth_live_server(live_server, settings):
    """Our site as the OAuth server: tokens name ``live_server.url`` as issuer, its device page is the
    verification URI (``?user_code=`` the complete one), one-second polling; and the ``epochauth-cli``
    client of the data migration again (transactional tests flush it)."""
    from oauth2_provider.models import get_application_model

    from epochauth.oauth.models import ensure_cli_application

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUER": live_server.url}
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OAUTH_DEVICE_VERIFICATION_URI": f"{live_server.url}/o/device/",
        "OAUTH_DEVICE_VERIFICATION_URI_COMPLETE": f"{live_server.url}/o/device/?user_code={{user_code}}",
        "DEVICE_FLOW_INTERVAL": 1,
        # DOT caches each view's oauthlib server, built from these settings, on the view class at
        # its first request: an earlier test (tests/test_oauth.py) would leave the default interval
        # and verification URI in place. Build the server for each request while this override holds.
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    ensure_cli_application(get_application_model())
    return live_server


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """A user of our own: HOME, XDG_RUNTIME_DIR (0700) and config under tmp_path; no display, no token."""
    home = tmp_path / "home"
    runtime = tmp_path / "run"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    drop = {
        "BEARER_TOKEN",
        "BEARER_TOKEN_FILE",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "DJANGO_SETTINGS_MODULE",
    }
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("XDG_")}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    return env
