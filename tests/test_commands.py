"""Management commands: revoke (user, group, everyone), purge expired rows, issue a token."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import jwt
import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from epochauth.models import AuditEvent, Epoch, Identity, RevokedToken, Session, identity_digest
from epochauth.revocation import revoke_id
from epochauth.sessions import end_session, start_session
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


# -- epochauth_revoke --------------------------------------------------------------------------


def test_revoke_user(client):
    alice = make_user("alice")
    make_user("bob")
    alices = login(client, "alice")
    bobs = login(client, "bob")
    output = run("epochauth_revoke", "--user", "alice", "--reason", "stolen phone")
    assert "user alice" in output
    assert "epoch now 1" in output
    assert hello(client, alices["access_token"]) == 401
    assert hello(client, bobs["access_token"]) == 200
    epoch = Epoch.objects.get(kind="user", object_id=str(alice.pk))
    assert epoch.reason == "stolen phone"
    assert AuditEvent.objects.get(action="epoch_bumped").detail["reason"] == "stolen phone"


def test_revoke_group(client):
    make_user("alice", groups=["operators"])
    selected = login(client, "alice", group="operators")
    plain = login(client, "alice")
    assert "group operators" in run("epochauth_revoke", "--group", "operators")
    assert hello(client, selected["access_token"]) == 401
    assert hello(client, plain["access_token"]) == 200


def test_revoke_all(client):
    make_user("alice")
    make_user("bob")
    bodies = [login(client, "alice"), login(client, "bob")]
    assert "everyone" in run("epochauth_revoke", "--all")
    assert [hello(client, b["access_token"]) for b in bodies] == [401, 401]
    assert Epoch.objects.get(kind="global", object_id="").value == 1
    assert "epoch now 2" in run("epochauth_revoke", "--all")


def test_revoke_an_external_identity():
    alice = make_user("alice")
    Identity.objects.create(issuer="https://iam.example.org/", subject="s-1", user=alice)
    output = run("epochauth_revoke", "--identity", "https://iam.example.org/", "s-1")
    assert "identity s-1 of https://iam.example.org/" in output
    epoch = Epoch.objects.get()  # the identity's: its tokens end, not alice's local ones
    assert (epoch.kind, epoch.object_id) == (
        "identity",
        identity_digest("https://iam.example.org/", "s-1"),
    )


@pytest.mark.parametrize(
    "args",
    [
        ("--user", "nobody"),
        ("--group", "nobody"),
        ("--identity", "https://iam.example.org/", "nobody"),
        ("--identity", "https://nobody.example.org/", "s-1"),
    ],
)
def test_revoke_unknown_name_is_a_command_error(args):
    Identity.objects.create(
        issuer="https://iam.example.org/", subject="s-1", user=make_user("bob")
    )
    make_user("alice", groups=["operators"])
    with pytest.raises(CommandError, match="nobody"):
        run("epochauth_revoke", *args)
    assert not Epoch.objects.exists()


@pytest.mark.parametrize("args", [(), ("--user", "a", "--group", "b"), ("--all", "--user", "a")])
def test_revoke_needs_exactly_one_target(args):
    with pytest.raises(CommandError):
        run("epochauth_revoke", *args)


# -- epochauth_purge ---------------------------------------------------------------------------


def test_purge_deletes_expired_and_ended_rows_only():
    user = make_user("alice")
    now = timezone.now()
    live, _ = start_session(user)
    expired, _ = start_session(user)
    Session.objects.filter(pk=expired.pk).update(expires_at=now - timedelta(hours=1))
    # expired a moment ago: its last access token may still be alive, so it stays a while
    recent, _ = start_session(user)
    Session.objects.filter(pk=recent.pk).update(expires_at=now - timedelta(seconds=1))
    ended, _ = start_session(user)
    end_session(ended, reason="logout")
    revoke_id("old-jti", now - timedelta(minutes=1))
    revoke_id("live-jti", now + timedelta(minutes=10))
    output = run("epochauth_purge")
    assert "Deleted 2 sessions and 1 revoked-token rows." in output
    assert set(Session.objects.values_list("pk", flat=True)) == {live.pk, recent.pk}
    # The ended session's denylist entry stays until its access tokens expired.
    assert set(RevokedToken.objects.values_list("jti", flat=True)) == {"live-jti", ended.id.hex}


def test_purge_keeps_revoked_tokens_revoked(client, django_capture_on_commit_callbacks):
    make_user("alice")
    body = login(client, "alice")
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/auth/logout/", **bearer(body["access_token"]))
    run("epochauth_purge")
    from epochauth import revocation

    revocation.state.reset()
    assert hello(client, body["access_token"]) == 401


def test_purge_on_an_empty_database():
    assert "Deleted 0 sessions and 0 revoked-token rows." in run("epochauth_purge")


# -- epochauth_issue ---------------------------------------------------------------------------


def test_issue_prints_a_working_token(client):
    make_user("alice")
    token = run("epochauth_issue", "--user", "alice").strip()
    response = client.get("/api/hello/", **bearer(token))
    assert response.status_code == 200
    assert response.json() == {"hello": "alice"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 15 * 60
    assert "sid" not in claims


@pytest.mark.parametrize(
    ("lifetime", "seconds"),
    [
        ("3600", 3600),
        ("90m", 5400),
        ("12h", 43200),
        ("30d", 2592000),
        ("1 00:00:00", 86400),
        ("45s", 45),
        ("3650d", 3650 * 86400),
    ],
)
def test_issue_respects_the_lifetime(client, lifetime, seconds):
    make_user("alice")
    token = run("epochauth_issue", "--user", "alice", "--lifetime", lifetime).strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == seconds
    assert claims["exp"] == pytest.approx(time.time() + seconds, abs=5)
    assert hello(client, token) == 200


def test_issue_with_scope(client):
    make_user("alice")
    token = run("epochauth_issue", "--user", "alice", "--scope", " reports:read ").strip()
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == "reports:read"
    assert client.get("/api/reports/", **bearer(token)).status_code == 200
    plain = run("epochauth_issue", "--user", "alice").strip()
    assert client.get("/api/reports/", **bearer(plain)).status_code == 403


@pytest.mark.parametrize(
    "args",
    [
        ("--user", "nobody"),
        ("--user", "alice", "--scope", "admin"),
        ("--user", "alice", "--scope", "tokenmanager"),  # a service scope
        ("--user", "alice", "--lifetime", "soon"),
        ("--user", "alice", "--lifetime", "0"),
        ("--user", "alice", "--lifetime", "-5m"),
        ("--user", "alice", "--lifetime", "nan"),
        ("--user", "alice", "--lifetime", "inf"),
        ("--user", "alice", "--lifetime", "1e30"),
        ("--user", "alice", "--lifetime", "99999999999d"),
        ("--user", "alice", "--lifetime", "99999999 00:00:00"),
        ("--user", "alice", "--lifetime", "3651d"),
        ("--user", "alice", "--lifetime", "0.5"),
    ],
)
def test_issue_refuses_bad_arguments(args):
    make_user("alice")
    with pytest.raises(CommandError):
        run("epochauth_issue", *args)


def test_issue_refuses_an_inactive_user():
    user = make_user("alice")
    user.is_active = False
    user.save()
    with pytest.raises(CommandError, match="inactive"):
        run("epochauth_issue", "--user", "alice")


def test_issued_token_dies_with_the_users_epoch(client):
    make_user("alice")
    token = run("epochauth_issue", "--user", "alice", "--lifetime", "30d").strip()
    run("epochauth_revoke", "--user", "alice")
    assert hello(client, token) == 401


def test_keys_command_prints_no_secret():
    import json

    output = run("epochauth_keys")
    assert "dev-only-epochauth-signing-key" not in output
    json.loads(output)


# -- every command -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["epochauth_revoke", "--user", b"\x01\xff"], "Not valid UTF-8: '\\x01\\udcff'"),
        (
            ["epochauth_revoke", "--identity", b"https://iam.example.org/\xff", "s-1"],
            "Not valid UTF-8",
        ),
        (["epochauth_issue", "--user", b"bob\xe9"], "Not valid UTF-8: 'bob\\udce9'"),
        (["epochauth_issuer", "enable", b"https://\xff.example.org/"], "Not valid UTF-8"),
        (["epochauth_revoke", "--user", "\x01bob"], "Control character in '\\x01bob'"),
        (["epochauth_revoke", "--all", "--reason", "one\x1b[2Jtwo"], "Control character"),
    ],
)
def test_an_argument_that_is_not_text_is_a_command_error(tmp_path, args, message):
    """Through a real ``manage.py``: undecodable bytes arrive in sys.argv as surrogate escapes."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    stderr = result.stderr.decode(errors="replace")
    assert result.returncode == 1, stderr
    assert len(stderr.splitlines()) == 1 and stderr.startswith(f"CommandError: {message}"), stderr
