"""Ending tokens while the database is down and the shared cache (Redis) is up (issue 30): logout and
logout-all go to the outage journal, end their tokens at once in every process, and reach the
database exactly once when it is back. Without Redis they answer 503, as before.

The database is made unreachable with ``tests.helpers.database_down`` (every statement fails as a
lost server's would); "another process" is a second :class:`~epochauth.revocation.RevocationState`
that shares only Redis with this one.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
import redis

from epochauth import journal, outage, push, revocation, tokens
from epochauth.models import AuditEvent, Epoch, RevokedToken, Session
from epochauth.revocation import RevocationState
from tests.conftest import service_required
from tests.helpers import database_down, login, make_user
from tests.redis_server import PrivateRedis, RedisMissing

pytestmark = pytest.mark.django_db(transaction=True)


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


def post(client: Any, path: str, token: str) -> Any:
    return client.post(path, {}, content_type="application/json", **bearer(token))


def refresh(client: Any, refresh_token: str) -> int:
    return client.post(
        "/auth/token/refresh/", {"refresh_token": refresh_token}, content_type="application/json"
    ).status_code


def assert_503(response: Any) -> None:
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0


def session_of(body: dict[str, Any]) -> Session:
    return Session.objects.get(family=body["refresh_token"].partition(".")[0])


def fresh_process() -> None:
    """What a process started after the outage holds: only what the database says."""
    revocation.state.reset()
    tokens.verified_tokens.clear()


@pytest.fixture
def redis_cache(settings: Any, redis_url: str) -> Iterator[None]:
    """Redis as the shared cache, with keys of this test's own; no polling of the database (only a
    change announced through the cache makes this process read it)."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_url,
            "KEY_PREFIX": f"outage-{uuid.uuid4().hex}",
        }
    }
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "REVOCATION_REFRESH_INTERVAL": 3600,
        "REVOCATION_RELOAD_INTERVAL": 3600,
    }
    yield
    revocation.state.reset()
    # A replay this process started ends before the tables are emptied.
    assert outage._replaying.acquire(timeout=10)
    outage._replaying.release()


def eventually(condition: Callable[[], bool], seconds: float = 5) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def warm(client: Any, body: dict[str, Any]) -> None:
    """This process holds the revocation state (a process that does not yet fails closed)."""
    assert hello(client, body["access_token"]) == 200
    assert revocation.wait_loaded(5)


def journaled() -> list[dict[str, Any]]:
    return journal.entries_after(0)[0]


@pytest.mark.redis
def test_logout_during_an_outage_ends_the_session_and_reaches_the_database(client, redis_cache):
    alice = make_user("alice")
    first, second = login(client, "alice"), login(client, "alice")
    warm(client, first)

    with database_down():
        response = post(client, "/auth/logout/", first["access_token"])
        assert response.status_code == 204, response.content
        assert hello(client, first["access_token"]) == 401
        assert hello(client, second["access_token"]) == 200
    (entry,) = journaled()
    assert entry["op"] == "end" and entry["session"] == session_of(first).id.hex
    assert session_of(first).revoked_at is None  # in the journal only, until the replay

    assert outage.replay() == 1
    ended = session_of(first)
    assert ended.revoked_at is not None
    assert abs(ended.revoked_at.timestamp() - entry["at"]) < 0.001  # when the user logged out
    assert RevokedToken.objects.filter(jti=ended.id.hex).exists()
    event = AuditEvent.objects.get(action="session_revoked")
    assert (event.user_id, event.actor_id) == (alice.pk, alice.pk)
    assert event.detail == {"session": str(ended.pk), "reason": "logout"}
    assert journaled() == [] and outage.replay() == 0

    fresh_process()
    assert hello(client, first["access_token"]) == 401
    assert refresh(client, first["refresh_token"]) == 400
    assert hello(client, second["access_token"]) == 200
    assert session_of(second).revoked_at is None


@pytest.mark.redis
def test_logout_all_during_an_outage_ends_every_token_once(client, redis_cache):
    alice = make_user("alice")
    first, second = login(client, "alice"), login(client, "alice")
    warm(client, first)

    with database_down():
        assert post(client, "/auth/logout-all/", first["access_token"]).status_code == 204
        assert hello(client, first["access_token"]) == 401
        assert hello(client, second["access_token"]) == 401
    (entry,) = journaled()
    assert (entry["op"], entry["e"], entry["v"]) == ("bump", ["user", str(alice.pk)], 1)

    assert outage.replay() == 1
    epoch = Epoch.objects.get(kind=Epoch.Kind.USER, object_id=str(alice.pk))
    assert epoch.value == 1 and abs(epoch.not_before.timestamp() - entry["at"]) < 0.001
    assert not Session.objects.filter(revoked_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="epoch_bumped").count() == 1

    # Replayed again (a replayer that died before removing it): nothing more happens.
    outage.replay_entry(entry)
    assert Epoch.objects.get(pk=epoch.pk).value == 1
    assert AuditEvent.objects.filter(action="epoch_bumped").count() == 1

    fresh_process()
    assert hello(client, first["access_token"]) == 401
    assert hello(client, second["access_token"]) == 401
    assert refresh(client, second["refresh_token"]) == 400
    assert hello(client, login(client, "alice")["access_token"]) == 200


@pytest.mark.redis
def test_an_outage_bump_exceeds_what_the_mirror_holds(client, redis_cache):
    """A token minted after a bump this process never saw (another process made it) carries the
    bumped epoch: the outage's bump goes above the mirror, which every committed change raised."""
    alice = make_user("alice")
    body = login(client, "alice")
    revocation.bump_epoch(Epoch.Kind.USER, str(alice.pk))
    revocation.bump_epoch(Epoch.Kind.USER, str(alice.pk))
    newer = login(client, "alice")
    fresh_process()  # holds and remembers no epoch of alice's

    with database_down(everywhere=True):
        # The older token names epoch 0: the mirror says 2, so the bump makes 3.
        outage.bump_epoch(Epoch.Kind.USER, str(alice.pk), 0, alice, "test")
    assert journaled()[0]["v"] == 3
    # The first request after the outage reads the database: this process replays the journal.
    assert hello(client, newer["access_token"]) == 401
    assert hello(client, body["access_token"]) == 401
    assert eventually(journal.is_empty)
    assert Epoch.objects.get(kind=Epoch.Kind.USER, object_id=str(alice.pk)).value == 3


@pytest.mark.redis
def test_another_process_learns_the_outage_changes_from_the_journal_without_push(
    client, redis_cache, settings
):
    """The journal is the net under the push: a process whose listener missed the message reads
    the entries with the revocation version, within one refresh interval, without the database."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "REVOCATION_PUSH": False,
        "REVOCATION_REFRESH_INTERVAL": 0.05,
    }
    make_user("alice")
    bob = make_user("bob")
    body, bobs = login(client, "alice"), login(client, "bob")
    warm(client, body)
    other = RevocationState()
    session_id = session_of(body).id.hex
    assert not other.is_denied((session_id,))
    assert other.wait_loaded(5)
    issued = time.time()

    with database_down(everywhere=True) as attempted:
        assert post(client, "/auth/logout/", body["access_token"]).status_code == 204
        assert post(client, "/auth/logout-all/", bobs["access_token"]).status_code == 204
        time.sleep(0.1)
        assert other.is_denied((session_id,))
        assert other.epoch(Epoch.Kind.USER, str(bob.pk), issued).value == 1
        statements = len(attempted)
    assert statements == 2  # this process's two tries; none of the other's
    other.reset()


def test_without_redis_the_session_paths_during_an_outage_are_503_and_change_nothing(
    client, settings
):
    """With a per-process cache no other process could learn of a change, and there is no mirror:
    503, as before."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    make_user("alice")
    body = login(client, "alice")
    warm(client, body)
    with database_down():
        assert_503(refreshed(client, body["refresh_token"]))
        assert_503(post(client, "/auth/token/renew/", body["access_token"]))
        assert_503(post(client, "/auth/logout/", body["access_token"]))
        assert_503(post(client, "/auth/logout-all/", body["access_token"]))
        assert hello(client, body["access_token"]) == 200
    assert hello(client, body["access_token"]) == 200
    assert refresh(client, body["refresh_token"]) == 200  # never rotated


@pytest.mark.redis
def test_logout_of_a_token_without_a_session_during_an_outage_denies_it(client, redis_cache):
    alice = make_user("alice")
    token = tokens.mint_access_token(alice).token
    other = tokens.mint_access_token(alice).token
    warm(client, {"access_token": token})
    with database_down():
        assert post(client, "/auth/logout/", token).status_code == 204
        assert hello(client, token) == 401
        assert hello(client, other) == 200
    (entry,) = journaled()
    assert entry["op"] == "deny"
    assert outage.replay() == 1
    (jti,) = (denied for denied, _until in entry["d"])
    assert RevokedToken.objects.get(jti=jti).reason == "logout"
    fresh_process()
    assert (hello(client, token), hello(client, other)) == (401, 200)


@pytest.mark.redis
def test_a_full_journal_is_503_and_ends_nothing(client, redis_cache, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OUTAGE_JOURNAL_SIZE": 1}
    make_user("alice")
    first, second = login(client, "alice"), login(client, "alice")
    warm(client, first)
    with database_down():
        assert post(client, "/auth/logout/", first["access_token"]).status_code == 204
        assert_503(post(client, "/auth/logout/", second["access_token"]))
        assert_503(post(client, "/auth/logout-all/", second["access_token"]))
        assert hello(client, second["access_token"]) == 200
    assert len(journaled()) == 1


# -- continue: refresh and renew from the mirror ------------------------------------------------


def refreshed(client: Any, refresh_token: str) -> Any:
    return client.post(
        "/auth/token/refresh/", {"refresh_token": refresh_token}, content_type="application/json"
    )


def secret_digest(refresh_token: str) -> str:
    return hashlib.sha256(refresh_token.partition(".")[2].encode()).hexdigest()


@pytest.mark.redis
def test_refresh_and_renew_during_an_outage_continue_and_reach_the_database(client, redis_cache):
    make_user("alice", groups=["operators"])
    body = login(client, "alice")
    warm(client, body)

    with database_down() as attempted:
        first = refreshed(client, body["refresh_token"])
        assert first.status_code == 200, first.content
        second = refreshed(client, first.json()["refresh_token"])
        assert second.status_code == 200, second.content
        renewed = post(client, "/auth/token/renew/", second.json()["access_token"])
        assert renewed.status_code == 200, renewed.content
        for answer in (first, second, renewed):
            assert answer.json()["groups"] == ["operators"]
            assert hello(client, answer.json()["access_token"]) == 200
    assert attempted  # each tried the database first
    assert [entry["op"] for entry in journaled()] == ["rotate", "rotate"]
    latest = second.json()["refresh_token"]
    assert session_of(body).refresh_hash == secret_digest(body["refresh_token"])

    # A replayer wrote the first entry and died before removing it: the next replays it again.
    outage.replay_entry(journaled()[0])
    assert outage.replay() == 2
    assert session_of(body).refresh_hash == secret_digest(latest)
    assert session_of(body).revoked_at is None
    fresh_process()
    assert refresh(client, latest) == 200  # the database's own rotation goes on from there
    assert hello(client, renewed.json()["access_token"]) == 200


@pytest.mark.redis
def test_a_refresh_token_replayed_during_an_outage_ends_its_family(client, redis_cache):
    make_user("alice")
    body = login(client, "alice")
    warm(client, body)

    with database_down():
        rotated = refreshed(client, body["refresh_token"]).json()
        replayed = refreshed(client, body["refresh_token"])
        assert replayed.status_code == 400 and replayed.json()["error"] == "invalid_grant"
        assert refresh(client, rotated["refresh_token"]) == 400  # the family ended
        assert hello(client, rotated["access_token"]) == 401
        assert hello(client, body["access_token"]) == 401
    assert [entry["op"] for entry in journaled()] == ["rotate", "end"]

    assert outage.replay() == 2
    ended = session_of(body)
    assert ended.revoked_at is not None
    assert AuditEvent.objects.get(action="session_revoked").detail["reason"] == "reuse"
    fresh_process()
    assert refresh(client, rotated["refresh_token"]) == 400
    assert hello(client, rotated["access_token"]) == 401


@pytest.mark.redis
def test_what_ended_before_the_outage_does_not_refresh_from_the_mirror(client, redis_cache):
    make_user("alice")
    make_user("bob")
    logged_out, other = login(client, "alice"), login(client, "alice")
    bobs = login(client, "bob")
    warm(client, other)
    assert post(client, "/auth/logout/", logged_out["access_token"]).status_code == 204
    assert post(client, "/auth/logout-all/", bobs["access_token"]).status_code == 204

    with database_down():
        assert refresh(client, logged_out["refresh_token"]) == 400
        assert refresh(client, bobs["refresh_token"]) == 400  # bumped after it began
        assert refresh(client, other["refresh_token"]) == 200
        # Logged out during the outage: no refresh either.
        assert post(client, "/auth/logout/", other["access_token"]).status_code == 204
        assert refresh(client, other["refresh_token"]) == 400


@pytest.mark.redis
def test_a_session_the_mirror_lacks_is_503_during_an_outage(client, redis_cache):
    make_user("alice")
    body = login(client, "alice")
    warm(client, body)
    family = body["refresh_token"].partition(".")[0]
    client_redis, shared = push.shared_redis()
    client_redis.delete(shared.make_key(journal.SESSION + family))
    with database_down():
        assert_503(refreshed(client, body["refresh_token"]))
        assert_503(post(client, "/auth/token/renew/", body["access_token"]))
    assert journaled() == []


@pytest.mark.redis
def test_until_the_journal_is_replayed_refresh_goes_on_from_the_mirror(client, redis_cache):
    """Before the replay the database holds the secret the outage rotated away: a refresh with the
    new one is no reuse, and the old one is still a reuse; rotations reach the database in order."""
    make_user("alice")
    body = login(client, "alice")
    warm(client, body)
    with database_down():
        rotated = refreshed(client, body["refresh_token"]).json()

    again = refreshed(client, rotated["refresh_token"])  # the database answers again
    assert again.status_code == 200, again.content
    assert session_of(body).refresh_hash == secret_digest(body["refresh_token"])
    assert refresh(client, body["refresh_token"]) == 400  # rotated away: the family ends
    assert outage.replay() == 3
    ended = session_of(body)
    assert ended.revoked_at is not None
    assert refresh(client, again.json()["refresh_token"]) == 400


@pytest.mark.redis
def test_a_session_whose_end_the_mirror_missed_never_refreshes_from_it(
    client, redis_cache, settings, monkeypatch
):
    """Redis away while a session ends: its copy may still say live. Once Redis is back the process
    starts a new generation of copies, and an outage refresh of any older copy is a 503."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ACCESS_TOKEN_LIFETIME": 1,
        "LEEWAY": 0,
        "REVOCATION_REFRESH_INTERVAL": 0.01,
    }
    make_user("alice")
    ended, live = login(client, "alice"), login(client, "alice")
    warm(client, live)
    real = journal._redis
    with monkeypatch.context() as patched:
        away = redis.Redis(port=1, socket_connect_timeout=0.2)  # nothing listens there
        patched.setattr(journal, "_redis", lambda: (away, real()[1]))
        assert post(client, "/auth/logout/", ended["access_token"]).status_code == 204
    time.sleep(2.1)  # its access tokens expired: the denylist lets its id go (whole seconds)
    # A request that follows the revocation state: it reads the logout, and starts a new generation.
    assert hello(client, login(client, "alice")["access_token"]) == 200

    with database_down():
        assert_503(refreshed(client, ended["refresh_token"]))
        assert_503(refreshed(client, live["refresh_token"]))  # until a rotation writes it again
    assert refresh(client, live["refresh_token"]) == 200


# -- replay and failing closed -----------------------------------------------------------------


@pytest.mark.redis
def test_replayers_side_by_side_write_each_entry_once_in_order(client, redis_cache):
    """The lease: of processes replaying at once, one writes; the entries go in the order made."""
    users = [make_user(f"user{n}") for n in range(6)]
    bodies = [login(client, user.username) for user in users]
    warm(client, bodies[0])
    with database_down():
        for body in bodies:
            assert post(client, "/auth/logout/", body["access_token"]).status_code == 204
    made = [entry["session"] for entry in journaled()]
    assert len(made) == 6
    shared_redis, shared = push.shared_redis()
    lease = shared.make_key(journal.LEASE)
    shared_redis.set(lease, "another process")
    assert outage.replay() == 0  # it holds the lease
    assert not AuditEvent.objects.filter(action="session_revoked").exists()
    shared_redis.delete(lease)  # (its lease ran out)

    done: list[int] = []
    racers = [threading.Thread(target=lambda: done.append(outage.replay())) for _ in range(4)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
    assert sum(done) == 6 and journaled() == []
    events = AuditEvent.objects.filter(action="session_revoked").order_by("pk")
    assert [event.detail["session"] for event in events] == [
        str(uuid.UUID(hex=sid)) for sid in made
    ]


@pytest.mark.redis
def test_with_the_database_and_redis_down_logout_and_refresh_are_503(client, settings, free_port):
    server = PrivateRedis(free_port)
    service_required("redis-server (a private one)", server.start, RedisMissing)
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": server.url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    try:
        make_user("alice")
        body = login(client, "alice")
        warm(client, body)
        server.stop()
        with database_down():
            assert_503(post(client, "/auth/logout/", body["access_token"]))
            assert_503(refreshed(client, body["refresh_token"]))
    finally:
        server.stop()
        revocation.state.reset()
    assert session_of(body).revoked_at is None


@pytest.mark.redis
def test_a_session_ended_during_the_outage_stays_ended_after_its_id_leaves_the_denylist(
    client, redis_cache, settings
):
    """The logout's entry and the session copy's end are one script: once the session's access
    tokens expired (and its id left the denylist), the copy still refuses the refresh token."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ACCESS_TOKEN_LIFETIME": 1, "LEEWAY": 0}
    make_user("alice")
    body = login(client, "alice")
    warm(client, body)
    with database_down():
        assert post(client, "/auth/logout/", body["access_token"]).status_code == 204
        time.sleep(2.1)  # the denylist holds whole seconds, rounded up
        assert not revocation.is_revoked(session_of_id(body))
        assert refresh(client, body["refresh_token"]) == 400


def session_of_id(body: dict[str, Any]) -> str:
    """The session id an access token names (no query: the database is down)."""
    import jwt

    return jwt.decode(body["access_token"], options={"verify_signature": False})["sid"]


@pytest.mark.redis
def test_what_needs_the_database_answers_503_during_an_outage(client, redis_cache):
    """Password login and the revoke API (its permission is the user's row) wait for the database:
    503 with Retry-After, nothing journaled."""
    admin = make_user("admin")
    admin.is_superuser = True
    admin.save()
    body = login(client, "admin")
    warm(client, body)
    with database_down():
        assert_503(
            client.post(
                "/auth/token/",
                {"username": "admin", "password": "pw"},
                content_type="application/json",
            )
        )
        response = client.post(
            "/auth/revoke/",
            {"all": True},
            content_type="application/json",
            **bearer(body["access_token"]),
        )
        assert_503(response)
    assert journaled() == []
    assert not Epoch.objects.exists()


@pytest.mark.redis
def test_a_community_session_refreshed_during_an_outage_stays_in_its_community(
    client, redis_cache, settings
):
    """The mirror keeps the session's community: a refresh from it mints the community's token
    (``vo``, its issuer), never the site's; leaving the community ends it there too."""
    from epochauth.models import CommunityMembership

    alice = make_user("alice")
    CommunityMembership.objects.create(user=alice, community="lhcb")
    body = login(client, "alice", scope="vo:lhcb")
    assert body["vo"] == "lhcb"
    warm(client, body)
    with database_down():
        answer = refreshed(client, body["refresh_token"])
        assert answer.status_code == 200, answer.content
        claims = jwt.decode(answer.json()["access_token"], options={"verify_signature": False})
        assert claims["vo"] == "lhcb" and answer.json()["vo"] == "lhcb"
        assert claims["iss"] == body_claims(body)["iss"] != settings.EPOCHAUTH["ISSUER"]
        assert hello(client, answer.json()["access_token"]) == 200
    # Leaving the community (a user epoch bump) ends the session, in the mirror too.
    CommunityMembership.objects.filter(user=alice).delete()
    with database_down():
        assert refreshed(client, answer.json()["refresh_token"]).status_code == 400


def body_claims(body: dict[str, Any]) -> dict[str, Any]:
    return jwt.decode(body["access_token"], options={"verify_signature": False})
