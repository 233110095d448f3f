"""The demo (``dev.py demo``): an RS256 key by default, so its JWKS has a key other services can use;
what the README's walk-through needs is seeded."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys

import jwt
import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import check_password
from oauth2_provider.models import get_application_model

import dev
from epochauth.oauth.models import CLI_CLIENT_ID
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db


def test_the_demo_signs_with_a_generated_rs256_key(tmp_path, monkeypatch, settings, client):
    monkeypatch.setattr(dev, "DEMO_KEY", tmp_path / ".demo" / "rs256.pem")
    key = dev.demo_signing_key()
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = key.read_bytes()
    assert dev.demo_signing_key() == key and key.read_bytes() == pem  # kept, not generated again

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALGORITHM": "RS256", "SIGNING_KEY_FILE": str(key)}
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256")]

    make_user("alice")
    token = login(client, "alice")["access_token"]
    public = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_aud": False})
    assert claims["preferred_username"] == "alice"
    assert client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200


def test_the_demo_seeds_its_admin_and_a_relying_party(monkeypatch):
    for run in ("first", "second"):  # every `dev.py demo` sets new secrets on the same rows
        monkeypatch.setenv("DEV_ADMIN_PASSWORD", f"pw-{run}")
        monkeypatch.setenv("DEV_PORTAL_URL", dev.PORTAL_URL)
        monkeypatch.setenv("DEV_PORTAL_SECRET", f"portal-secret-{run}")
        exec(dev.ADMIN_SCRIPT, {})
    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser and admin.check_password("pw-second")
    # the README's revoke example names bob
    assert not get_user_model().objects.get(username="bob").has_usable_password()
    portal = get_application_model().objects.get(client_id="demo-portal")
    assert portal.redirect_uris == f"{dev.PORTAL_URL}/oidc/callback/"
    assert portal.client_type == "confidential" and portal.user == admin
    assert portal.authorization_grant_type == "authorization-code"
    # DOT keeps the secret hashed: the one printed last is the one that works
    assert portal.client_secret != "portal-secret-second"
    assert check_password("portal-secret-second", portal.client_secret)
    # the CLI's public client of the device flow comes with the migrations
    cli = get_application_model().objects.get(client_id=CLI_CLIENT_ID)
    assert cli.client_type == "public"


def test_the_demo_server_says_each_line_once(tmp_path, free_port):
    """``dev.py demo`` ends in ``manage.py runserver`` (autoreloader and all): its start-up lines and a
    404 warning come once, not through both Django's console handler and ours."""
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{free_port}"],
        cwd=dev.ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the reloader's child is in its group too
    )
    try:
        lines = []
        for line in server.stdout:
            lines.append(line)
            if line.startswith("Quit the server"):
                break
        assert (
            requests.get(f"http://127.0.0.1:{free_port}/no-such-page/", timeout=10).status_code
            == 404
        )
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        rest = server.communicate(timeout=10)[0]
    output = "".join(lines) + rest
    assert output.count("Watching for file changes with") == 1, output
    assert output.count("Not Found: /no-such-page/") == 1, output
