"""oidc-agent, how WLCG users get tokens (Debian's ``oidc-agent-cli``, 4.2.6 here), against our server on
pytest-django's live server: ``oidc-gen`` registers itself by dynamic client registration (RFC 7591) and
logs in with the device flow, approved in a browser over HTTP; ``oidc-token`` then hands out an access
token our API accepts; ``oidc-gen -d`` deletes the registration again (RFC 7592).

oidc-agent does not refuse a plain-http loopback issuer (its requests go through libcurl, whatever the
scheme), so no pre-registered client (``oidc-gen -m``) is needed. It insists on the scopes ``openid``
and ``offline_access``: our site runs as an OpenID provider.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_application_model

from tests.conftest import service_required
from tests.helpers import rsa_pem
from tests.test_client_cli import browser_approve

pytestmark = pytest.mark.django_db(transaction=True)

PROGRAMS = ("oidc-agent", "oidc-gen", "oidc-token")
ACCOUNT = "epochauth-test"
SCOPE = "openid offline_access reports:read"


def programs() -> None:
    for program in PROGRAMS:
        if shutil.which(program) is None:
            raise FileNotFoundError(program)


@pytest.fixture
def agent(cli_env, tmp_path) -> Iterator[dict[str, str]]:
    """A running ``oidc-agent`` of a user of our own (HOME, TMPDIR under tmp_path): the environment
    that ``oidc-gen`` and ``oidc-token`` need to reach it."""
    service_required("oidc-agent (Debian package oidc-agent-cli)", programs, FileNotFoundError)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    socket = tmp / "oidc-agent.sock"
    env = {**cli_env, "TMPDIR": str(tmp), "OIDC_SOCK": str(socket), "OIDC_ENCRYPTION_PW": "pw"}
    daemon = subprocess.Popen(
        ["oidc-agent", "--console", "--socket-path", str(socket)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(100):
            if socket.exists() or daemon.poll() is not None:
                break
            time.sleep(0.1)
        assert socket.exists(), daemon.stderr.read() if daemon.poll() is not None else "no socket"
        yield env
    finally:
        daemon.terminate()
        daemon.communicate(timeout=10)


@pytest.fixture
def site(oauth_live_server, settings):
    """Our site as deployed for oidc-agent: an OpenID provider (RS256) with open registration, and
    alice, who approves device codes in her browser."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem(),
        "CLIENT_REGISTRATION": "open",
    }
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OIDC_ENABLED": True}
    get_user_model().objects.create_user("alice", password="alice-pw", is_staff=True)
    return oauth_live_server.url


def oidc_gen(env: dict[str, str], server: str) -> subprocess.CompletedProcess[str]:
    """``oidc-gen`` with dynamic registration and the device flow, non-interactive; alice approves the
    code it prints."""
    process = subprocess.Popen(
        [
            "oidc-gen",
            ACCOUNT,
            f"--issuer={server}/",
            "--flow=device",
            f"--scope={SCOPE}",
            "--pw-env",
            "--confirm-default",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    seen = []
    try:
        for line in process.stdout:
            seen.append(line)
            if line.startswith("And enter the code: "):
                code = line.removeprefix("And enter the code: ").strip()
                browser_approve(server, code, "alice", "alice-pw")
                break
        output, _ = process.communicate(timeout=60)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, "".join(seen) + output)


def test_oidc_gen_registers_and_oidc_token_gets_a_token_our_api_accepts(site, agent):
    generated = oidc_gen(agent, site)
    assert generated.returncode == 0, generated.stdout
    assert f"{site}/o/device/" in generated.stdout
    assert "Everything setup correctly!" in generated.stdout

    # Registered by itself: a public device client of ours, with the scopes oidc-agent needs.
    application = get_application_model().objects.get(registration_source="dcr")
    assert application.client_type == "public" and application.name.startswith("oidc-agent:")
    assert application.epochauth_scopes.scopes == SCOPE

    token = subprocess.run(
        ["oidc-token", ACCOUNT], env=agent, capture_output=True, text=True, timeout=60
    )
    assert token.returncode == 0, token.stderr
    access = token.stdout.strip()
    reports = requests.get(
        f"{site}/api/reports/", headers={"Authorization": f"Bearer {access}"}, timeout=10
    )
    assert reports.status_code == 200, reports.text
    whoami = requests.get(
        f"{site}/auth/whoami/", headers={"Authorization": f"Bearer {access}"}, timeout=10
    ).json()
    assert whoami["username"] == "alice" and whoami["scope"] == SCOPE

    # A new token by its refresh token (HTTP Basic "client_id:", the public client naming itself).
    renewed = subprocess.run(
        ["oidc-token", "--force-new", ACCOUNT],
        env=agent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert renewed.returncode == 0 and renewed.stdout.strip() != access, renewed.stderr

    # oidc-gen -d deletes the registration with its registration access token (RFC 7592): the
    # client is gone, and so is what it was given.
    deleted = subprocess.run(
        ["oidc-gen", "-d", ACCOUNT, "--pw-env", "--confirm-yes"],
        env=agent,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert "Deleted oidc client." in deleted.stderr
    assert not get_application_model().objects.filter(registration_source="dcr").exists()
    refused = requests.get(
        f"{site}/api/reports/",
        headers={"Authorization": f"Bearer {renewed.stdout.strip()}"},
        timeout=10,
    )
    assert refused.status_code == 401
    assert not any(Path(agent["HOME"]).glob(f"**/{ACCOUNT}")), "the account file stays behind"
