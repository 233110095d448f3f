"""The demo (``dev.py demo``): an RS256 key by default, so its JWKS has a key other services can use."""

from __future__ import annotations

import stat

import jwt
import pytest

import dev
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db


def test_the_demo_signs_with_a_generated_rs256_key(tmp_path, monkeypatch, settings, client):
    monkeypatch.setattr(dev, "DEMO_KEY", tmp_path / ".demo" / "rs256.pem")
    key = dev.demo_signing_key()
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    pem = key.read_bytes()
    assert dev.demo_signing_key() == key and key.read_bytes() == pem  # kept, not generated again

    settings.TOKENAUTH = {**settings.TOKENAUTH, "ALGORITHM": "RS256", "SIGNING_KEY_FILE": str(key)}
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert [(k["kty"], k["alg"]) for k in keys] == [("RSA", "RS256")]

    make_user("alice")
    token = login(client, "alice")["access_token"]
    public = jwt.PyJWK(keys[0]).key
    claims = jwt.decode(token, public, algorithms=["RS256"], options={"verify_aud": False})
    assert claims["preferred_username"] == "alice"
    assert client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
