"""A shared cache (Redis) that goes away: a clear 503 with Retry-After or the database's answer, never
a 500, never an unthrottled password check, nothing half-written.

The Redis here is a private ``redis-server`` on its own port, started and stopped by the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from epochauth.models import AuditEvent, Epoch, Session
from tests.conftest import service_required
from tests.helpers import login, make_user
from tests.redis_server import PrivateRedis, RedisMissing

pytestmark = [pytest.mark.redis, pytest.mark.django_db]


@pytest.fixture
def private_redis(free_port, settings) -> Iterator[PrivateRedis]:
    """Django's default cache (epochauth's shared cache) on a Redis of the test's own."""
    server = PrivateRedis(free_port)
    # Only a missing redis-server skips (outside CI); one that exits or is slow to start fails.
    service_required("redis-server (a private one)", server.start, RedisMissing)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    yield server
    server.stop()


def post(client, path: str, data: dict | None = None, token: str | None = None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.post(path, data or {}, content_type="application/json", **headers)


def assert_503(response) -> None:
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert response.json()["detail"]


def test_login_with_the_cache_down_is_503_without_a_password_check(
    client, private_redis, monkeypatch
):
    make_user("alice")
    assert post(client, "/auth/token/", {"username": "alice", "password": "pw"}).status_code == 200
    private_redis.stop()
    checked = []
    monkeypatch.setattr("epochauth.views.authenticate", lambda *a, **kw: checked.append(1))
    sessions, events = Session.objects.count(), AuditEvent.objects.count()

    for password in ("pw", "wrong"):
        assert_503(post(client, "/auth/token/", {"username": "alice", "password": password}))
    assert checked == []  # never an unthrottled password check
    assert (Session.objects.count(), AuditEvent.objects.count()) == (sessions, events)


def test_token_paths_with_the_cache_down_answer_from_the_database_or_503(client, private_redis):
    make_user("alice")
    first, second = login(client, "alice"), login(client, "alice")
    private_redis.stop()

    # Bearer requests and refresh read revocation state from the database.
    assert (
        client.get(
            "/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {first['access_token']}"
        ).status_code
        == 200
    )
    refreshed = post(client, "/auth/token/refresh/", {"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.content
    assert (
        post(client, "/auth/token/renew/", token=refreshed.json()["access_token"]).status_code
        == 200
    )

    # Logout writes the denylist row; this process denies the token at once.
    assert post(client, "/auth/logout/", token=second["access_token"]).status_code == 204
    assert (
        client.get(
            "/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {second['access_token']}"
        ).status_code
        == 401
    )

    # An epoch bump other processes could not see is not made at all.
    epochs = list(Epoch.objects.values_list("kind", "object_id", "value"))
    assert_503(post(client, "/auth/logout-all/", token=refreshed.json()["access_token"]))
    assert list(Epoch.objects.values_list("kind", "object_id", "value")) == epochs
    assert (
        Session.objects.filter(revoked_at__isnull=True).count() == 1
    )  # the refreshed session lives on

    private_redis.start()
    assert post(client, "/auth/token/", {"username": "alice", "password": "pw"}).status_code == 200
    assert (
        post(client, "/auth/logout-all/", token=refreshed.json()["access_token"]).status_code
        == 204
    )
