"""Fetching discovery documents and JWKS: bounded in time and size against a real loopback server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from epochauth.issuers import FetchError, fetch_json
from tests.helpers import trickling_server


@pytest.fixture
def trickle_url() -> Iterator[str]:
    with trickling_server() as url:
        yield f"{url}/jwks"


def test_a_trickling_server_is_cut_off_at_the_timeout(settings, trickle_url):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "HTTP_TIMEOUT": 0.5,
    }
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer"):
        fetch_json(trickle_url)
    assert time.monotonic() - started < 2  # the body alone would take over 10 s


def test_the_same_server_within_the_timeout_is_read(settings, trickle_url):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "HTTP_TIMEOUT": 30,
    }
    data, max_age = fetch_json(trickle_url)
    assert data == {"keys": []}
    assert max_age is None
