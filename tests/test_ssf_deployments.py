"""Issue 28's loop, proved with two deployments on one machine (tests/deployments.py): A revokes a
user, and B — which accepts A's tokens as an external issuer and subscribed to A's Shared Signals
stream — refuses that user's token for B within :data:`BOUND`.

Each deployment is a ``runserver`` process of the test project with its own database (SQLite files;
on CI's PostgreSQL leg, two scratch databases on the server of ``DATABASE_URL``) and its own cache
(LocMemCache; with ``REDIS_URL``, a key prefix of its own there). Push delivery: A's outbox thread
POSTs each SET to B. Poll delivery: B's ``epochauth_ssf_poll --loop`` fetches them, which works while
A cannot reach B; a push that finds B down is made again by A's ``epochauth_outbox --loop``.
Revocations at A: the user's ``POST /auth/logout-all/``, an administrator's ``POST /auth/revoke/``,
and an operator's deactivation from a script. The bound is one of correctness, not a timing benchmark
(bench scenario ``revocation-ssf`` measures it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from tests.conftest import redis_for_tests, service_required
from tests.deployments import (
    DEACTIVATE,
    KINDS,
    RECEIVER,
    SPARE_USERS,
    USER,
    Loop,
    two_deployments,
)

BOUND = 10.0  # seconds
POLL_INTERVAL = 1.0  # seconds between B's polls
POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")
METHODS = {"push": "urn:ietf:rfc:8935", "poll": "urn:ietf:rfc:8936"}


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """A and B, running for the module; every process stopped, scratch databases dropped after."""
    with ExitStack() as stack:
        database_server = None
        if POSTGRES:
            import psycopg

            database_server = os.environ["DATABASE_URL"]
            service_required(
                f"PostgreSQL at DATABASE_URL={database_server}",
                lambda: psycopg.connect(database_server, connect_timeout=2).close(),
            )
        redis_url = None
        if os.environ.get("REDIS_URL"):
            redis_url = stack.enter_context(redis_for_tests())
        yield stack.enter_context(
            two_deployments(tmp_path_factory.mktemp("deployments"), database_server, redis_url)
        )


def stream_at_a(loop: Loop) -> dict:
    """B's stream as A's stream management endpoint shows it to B."""
    response = loop.a.request("GET", "/ssf/streams/", loop.management_token())
    assert response.status_code == 200, response.text
    (stream,) = response.json()
    return stream


def test_without_the_stream_b_keeps_accepting(loop: Loop) -> None:
    """The control: with B's stream at A disabled, nothing tells B, and A's token for B stays
    valid at B after A revoked the user (until it expires): the refusals below are the loop's."""
    loop.subscribe("push", POLL_INTERVAL)
    set_status(loop, "disabled")
    try:
        assert loop.trial("logout-all", 3.0) is None
    finally:
        set_status(loop, "enabled")


def set_status(loop: Loop, status: str) -> None:
    """B sets its stream's status at A (SSF 1.0 section 8.1.2)."""
    response = loop.a.request(
        "POST",
        "/ssf/streams/status/",
        loop.management_token(),
        json={"stream_id": stream_at_a(loop)["stream_id"], "status": status},
    )
    assert response.status_code == 200 and response.json()["status"] == status, response.text


def test_a_push_that_finds_b_down_reaches_it_when_it_is_back(loop: Loop) -> None:
    """The push channel lost for a while: B's server is stopped when A revokes, so A's first push
    fails; A's outbox worker tries again (after 1 s, then 2 s: ``retry_delay`` of the deployments)
    and B, started again, refuses the token within the bound."""
    loop.subscribe("push", POLL_INTERVAL)
    token_at_a, token_for_b = loop.tokens(USER)
    loop.b.stop()
    started = time.monotonic()
    loop.revoke("logout-all", USER, token_at_a)
    loop.b.start()
    assert loop.refused_since(started, token_for_b, BOUND) is not None, loop.a.log_tail()
    assert "shared signals push to deployment-b (ssfevent" in loop.a.log_tail()  # the failed one


@pytest.mark.parametrize("delivery", ["push", "poll"])
def test_a_revocation_at_a_is_refused_at_b(loop: Loop, delivery: str) -> None:
    loop.subscribe(delivery, POLL_INTERVAL)
    stream = stream_at_a(loop)
    assert stream["aud"] == RECEIVER and stream["delivery"]["method"] == METHODS[delivery]
    # An operator's deactivation too, of a user of its own for each delivery (B deactivates it).
    spare = SPARE_USERS[list(METHODS).index(delivery)]
    for kind, user in [*((kind, USER) for kind in KINDS), (DEACTIVATE, spare)]:
        took = loop.trial(kind, BOUND, user=user)
        assert took is not None, (
            f"{kind} at A, {delivery}: B still accepted the token after {BOUND} s\n"
            f"A: {loop.a.log_tail()}\nB: {loop.b.log_tail()}"
        )
