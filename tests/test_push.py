"""Revocation changes pushed over Redis pub/sub: another process's memory has them without polling.

"Another process" is a second :class:`~epochauth.revocation.RevocationState` with its own listener on
the same Redis channel; polling is made too slow to matter (an hour), so only the push can deliver.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from epochauth import push, revocation
from epochauth.models import Epoch
from epochauth.revocation import RevocationState, bump_epoch, revoke_id

from .helpers import make_user

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_settings(settings, redis_url: str) -> Iterator[None]:
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"push-{uuid.uuid4().hex}",  # this test's own channel and keys
        }
    }
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "REVOCATION_REFRESH_INTERVAL": 3600,
        "REVOCATION_RELOAD_INTERVAL": 3600,
    }
    yield
    revocation.state.reset()


@pytest.fixture
def other_process(redis_settings: None) -> Iterator[RevocationState]:
    other = RevocationState()
    assert not other.is_denied(("nothing",))  # first read of the feed; starts its listener
    listener = other._push.ensure()
    assert listener is not None and listener.subscribed.wait(5)
    yield other
    other.reset()


def eventually(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return condition()


def test_a_revoked_id_reaches_another_process_by_push(other_process: RevocationState):
    revoke_id("pushed-jti", timezone.now() + timedelta(minutes=5))
    with CaptureQueriesContext(connection) as queries:
        assert eventually(lambda: other_process.is_denied(("pushed-jti",)))
    assert len(queries) == 0


def test_a_bump_reaches_another_process_by_push(other_process: RevocationState):
    user = make_user("alice")
    issued = time.time()
    assert other_process.epoch(Epoch.Kind.USER, str(user.pk), issued).value == 0
    bump_epoch(Epoch.Kind.USER, str(user.pk))
    assert eventually(
        lambda: other_process.epoch(Epoch.Kind.USER, str(user.pk), issued).value == 1
    )


def test_malformed_messages_are_ignored(other_process: RevocationState):
    client, channel = push._redis_client()  # type: ignore[misc]
    for data in (b"not json", b"[]", b'{"d": 5}', b'{"e": ["user"]}', b'{"d": ["x", "soon"]}'):
        client.publish(channel, data)
    revoke_id("after-garbage", timezone.now() + timedelta(minutes=5))
    assert eventually(lambda: other_process.is_denied(("after-garbage",)))
    assert other_process._push.ensure().is_alive()


def test_without_push_the_version_key_still_delivers(other_process: RevocationState, settings):
    """Push off: the writer announces only the version; the reader's next interval reads the feed."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "REVOCATION_PUSH": False,
        "REVOCATION_REFRESH_INTERVAL": 0,
    }
    other_process.reset()
    assert not other_process.is_denied(("polled-jti",))
    revoke_id("polled-jti", timezone.now() + timedelta(minutes=5))
    assert other_process._push.ensure() is None
    assert eventually(lambda: other_process.is_denied(("polled-jti",)))


def test_a_forked_child_starts_its_own_listener(other_process: RevocationState, monkeypatch):
    listener = other_process._push.ensure()
    monkeypatch.setattr("os.getpid", lambda: listener.pid + 1)  # what a child of the pre-fork sees
    child_listener = other_process._push.ensure()
    assert child_listener is not listener and child_listener.is_alive()
    for thread in (listener, child_listener):  # the pid each was started under is not "ours" now
        thread.stopped.set()


def test_an_issuer_change_reaches_another_process_by_push(other_process: RevocationState):
    """The other process's issuer table (its own snapshot, polling an hour apart) reloads at the push."""
    from epochauth.issuers import _load_db_issuers
    from epochauth.models import Issuer
    from epochauth.snapshots import SharedSnapshot

    row = Issuer.objects.create(
        issuer="https://iam.example.org/", audiences=["https://api.example.org"]
    )
    others: SharedSnapshot[dict] = SharedSnapshot("issuers", _load_db_issuers)
    assert others.get()["https://iam.example.org/"].accept_any_audience is False
    row.profile, row.accept_any_audience = "wlcg", True
    row.save()
    assert eventually(lambda: others.get()["https://iam.example.org/"].accept_any_audience)
    row.enabled = False
    row.save()
    assert eventually(lambda: "https://iam.example.org/" not in others.get())
