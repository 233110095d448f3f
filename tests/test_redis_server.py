"""The tests' Redis (``tests/conftest.py``: ``redis_for_tests``): ``REDIS_URL`` when set, otherwise a
private ``redis-server`` of the session, never whatever Redis happens to listen on 6379."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest
import redis

from tests.conftest import loopback_port, redis_for_tests


@pytest.mark.redis
def test_without_REDIS_URL_the_tests_use_a_private_server(redis_url):
    if os.environ.get("REDIS_URL"):
        assert redis_url == os.environ["REDIS_URL"]
        return
    assert urlsplit(redis_url).port != 6379
    with redis.Redis.from_url(redis_url) as client:
        config = client.config_get("*")
    assert config["bind"] == "127.0.0.1"
    assert config["save"] == "" and config["appendonly"] == "no"
    assert "epochauth-redis-" in config["dir"]  # its own temporary directory


@pytest.mark.redis
def test_the_private_server_is_stopped_on_exit(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    with redis_for_tests() as url:
        with redis.Redis.from_url(url) as client:
            assert client.ping()
    with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
        with pytest.raises(redis.ConnectionError):
            client.ping()


def test_without_redis_server_the_tests_skip_locally_and_fail_in_ci(ci, monkeypatch, tmp_path):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception) as outcome:
        with redis_for_tests():
            pass
    assert "redis-server is not on PATH" in str(outcome.value)


def test_an_unreachable_REDIS_URL_skips_locally_and_fails_in_ci(ci, monkeypatch):
    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{loopback_port()}/0")  # nobody listens
    with pytest.raises(pytest.fail.Exception if ci else pytest.skip.Exception) as outcome:
        with redis_for_tests():
            pass
    assert "Redis at REDIS_URL=redis://127.0.0.1:" in str(outcome.value)
