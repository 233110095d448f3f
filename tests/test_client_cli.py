"""The ``epochauth`` CLI as a real subprocess, against the real test IdP and against our own OAuth server
on pytest-django's live server (device flows approved over HTTP like a browser would); plus the client's
building blocks in-process."""

import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin

import jwt
import pytest
import requests
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from epochauth.client import BearerAuth
from epochauth.client import oauth as client_oauth
from epochauth.client.dpop import ProofKey
from epochauth.client.errors import (
    AccessDenied,
    DeviceCodeExpired,
    InvalidToken,
    ServerError,
    TokenNotFound,
    UsageError,
    unreachable,
)
from epochauth.client.store import Session, SessionInfo, load_config, write_private
from tests.helpers import FakeServer, start_login, trickling_server
from tests.idp import TestIdP, parse_forms

SCOPE = "openid offline_access servicex"
UID = os.geteuid()


# ------------------------------------------------------------------------------ helpers


def token_path(env: dict[str, str], purpose: str = "") -> Path:
    return Path(env["XDG_RUNTIME_DIR"]) / (f"bt_u{UID}" + (f"-{purpose}" if purpose else ""))


def state_files(env: dict[str, str]) -> list[Path]:
    state = Path(env["HOME"]) / ".local/state/epochauth"
    return sorted(state.iterdir()) if state.exists() else []


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "epochauth.client.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *fragments: str
) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("epochauth: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def approve(verification_uri_complete: str, username: str, *, deny: bool = False) -> None:
    """Act as the user's browser on the IdP: confirm the code, log in, consent (or abort at the start)."""
    browser = requests.Session()
    page = browser.get(verification_uri_complete, timeout=10)
    for _ in range(10):
        page.raise_for_status()
        forms = [f for f in parse_forms(page.text) if f["method"] == "post"]
        if not forms:
            return
        fields = dict(forms[0]["fields"])
        if "user_code" in fields and not fields["user_code"]:
            raise AssertionError(
                f"the IdP asks for the code again at {page.url}:\n{page.text[-1500:]}"
            )
        if deny:
            fields["abort"] = "yes"
        if fields.get("prompt") == "login":
            fields.update(login=username, password="any-password")
        page = browser.post(urljoin(page.url, forms[0]["action"]), data=fields, timeout=10)
        if deny:
            return
    raise AssertionError(f"device approval did not finish at {page.url}")


def device_login(
    env: dict[str, str], *args: str, username: str = "alice", deny: bool = False
) -> subprocess.CompletedProcess[str]:
    """``epochauth login ...`` in a subprocess; approve the code it prints, then wait for it to finish."""
    process, lines = start_login(env, *args)
    if lines[1].startswith("or open "):
        approve(lines[1].removeprefix("or open ").strip(), username, deny=deny)
    stdout, stderr = process.communicate(timeout=60)
    result = subprocess.CompletedProcess(
        process.args, process.returncode, "".join(lines) + stdout, stderr
    )
    assert "Traceback" not in stderr, stderr
    return result


def fake_jwt(**claims) -> str:
    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'at+jwt'})}.{part(claims)}.c2lnbmF0dXJl"


@pytest.fixture
def idp_api(settings, idp):
    """Our live server accepting tokens from the test IdP."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [{"issuer": idp.issuer}],
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
    }
    return idp


# ------------------------------------------------------------------------------ opening a browser


@pytest.fixture
def browsers(tmp_path) -> tuple[Path, Path]:
    """A ``bin`` directory with a graphical ``firefox`` and a console ``lynx`` that only write down the
    URLs they are given (to the returned file), for a PATH of nothing else: no real browser starts."""
    bin_dir, opened = tmp_path / "bin", tmp_path / "opened"
    bin_dir.mkdir()
    for name in ("firefox", "lynx"):
        script = bin_dir / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {opened}\n')
        script.chmod(0o755)
    return bin_dir, opened


def open_browser_in(env: dict[str, str], bin_dir: Path, *names: str) -> None:
    """``open_browser`` in a fresh process (webbrowser remembers the browsers it found) whose PATH has
    only ``names`` of ``bin_dir``."""
    path = bin_dir.parent / "path"
    path.mkdir(exist_ok=True)
    for name in names:
        (path / name).symlink_to(bin_dir / name)
    code = "from epochauth.client.cli import open_browser; open_browser('https://as.example/o/device/?user_code=X')"
    run = subprocess.run([sys.executable, "-c", code], env={**env, "PATH": str(path)}, timeout=30)
    assert run.returncode == 0


@pytest.mark.parametrize(
    ("display", "names", "expected"),
    [
        ({"DISPLAY": ":99"}, ["firefox"], "firefox"),
        ({"WAYLAND_DISPLAY": "wayland-0"}, ["firefox"], "firefox"),
        # a headless box: no display, or only a console browser, or none at all
        ({}, ["firefox"], None),
        ({"DISPLAY": ":99"}, ["lynx"], None),
        ({"DISPLAY": ":99"}, [], None),
    ],
)
def test_a_browser_opens_only_on_a_graphical_display(cli_env, browsers, display, names, expected):
    bin_dir, opened = browsers
    open_browser_in({**cli_env, **display}, bin_dir, *names)
    if expected is None:
        assert not opened.exists()
    else:
        command, _, url = opened.read_text().strip().partition(" ")
        assert command == expected and url.endswith("https://as.example/o/device/?user_code=X")


@pytest.mark.parametrize("no_browser", [False, True])
def test_login_opens_the_complete_verification_uri_and_still_prints_the_code(
    idp_api, live_server, cli_env, browsers, no_browser
):
    bin_dir, opened = browsers
    env = {
        **cli_env,
        "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET,
        "DISPLAY": ":99",
        "PATH": str(bin_dir),
    }
    args = [
        idp_api.issuer,
        "--client-id",
        "test-client",
        "--scope",
        SCOPE,
        *(["--no-browser"] * no_browser),
    ]
    process, lines = start_login(env, *args)
    try:
        assert lines[0].startswith("To log in, open ") and " and enter the code " in lines[0]
        complete = lines[1].removeprefix("or open ").strip()
        if no_browser:
            time.sleep(1)
            assert not opened.exists()
        else:
            deadline = time.monotonic() + 10
            # the browser may still be writing: wait for its whole line
            while (
                not (opened.exists() and opened.read_text().endswith("\n"))
                and time.monotonic() < deadline
            ):
                time.sleep(0.1)
            assert opened.read_text().split()[-1] == complete
        approve(complete, "alice")
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "Logged in: token saved to" in stdout and "waiting for approval" in stderr


# ------------------------------------------------------------------------------ end to end with the real IdP


def test_device_login_token_whoami_refresh_logout(idp_api, live_server, cli_env):
    """A bearer token (the IdP offers DPoP, tests/test_client_dpop.py takes it up on that)."""
    idp = idp_api
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}

    login = device_login(
        env,
        idp.issuer,
        "--client-id",
        "test-client",
        "--scope",
        SCOPE,
        "--no-browser",
        "--no-dpop",
    )
    assert login.returncode == 0, login.stderr
    assert "enter the code " in login.stdout
    assert f"Logged in: token saved to {token_path(env)} (expires in " in login.stdout
    assert "waiting for approval" in login.stderr

    # The access token is where WLCG discovery looks; the refresh token and endpoints are private files.
    access = token_path(env).read_text().strip()
    assert mode(token_path(env)) == 0o600
    files = state_files(env)
    assert [p.suffix for p in files] == [".json", ".refresh"]
    assert all(mode(p) == 0o600 for p in files)
    assert mode(files[0].parent) == 0o700
    refresh_token = files[1].read_text().strip()
    assert refresh_token and refresh_token != access
    info = json.loads(files[0].read_text())
    assert info["issuer"] == idp.issuer and info["client_id"] == "test-client"
    assert access not in files[0].read_text() and refresh_token not in files[0].read_text()
    assert not (Path(env["HOME"]) / ".config").exists()  # no config file is ever written

    shown = run_cli(env, "token")
    assert shown.returncode == 0, shown.stderr
    assert f"source:    {token_path(env)}" in shown.stdout
    assert f"issuer:    {idp.issuer}" in shown.stdout
    assert "subject:   alice" in shown.stdout
    assert "scope:     openid servicex" in shown.stdout
    assert "left)" in shown.stdout and "without verifying the signature" in shown.stdout
    raw = run_cli(env, "token", "--raw")
    assert raw.returncode == 0 and raw.stdout == access + "\n"

    # The login's server is the provider, which has no /auth/whoami/: said, with what to do.
    assert_one_line_error(
        run_cli(env, "whoami"),
        2,
        f"{idp.issuer} is not an epochauth server ({idp.issuer}/auth/whoami/ answered HTTP 40",
        "pass --server with the URL of the epochauth site",
    )
    whoami = run_cli(env, "whoami", "--server", live_server.url)
    assert whoami.returncode == 0, whoami.stderr
    assert f"issuer:    {idp.issuer}" in whoami.stdout
    assert "subject:   alice" in whoami.stdout

    refreshed = run_cli(env, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert refreshed.stdout.startswith(f"Token refreshed: {token_path(env)} (expires in ")
    new_access = token_path(env).read_text().strip()
    new_refresh = files[1].read_text().strip()
    assert (
        new_access != access and new_refresh
    )  # oidc-provider rotates refresh tokens only sometimes
    assert mode(token_path(env)) == 0o600 and mode(files[1]) == 0o600

    logout = run_cli(env, "logout")
    assert logout.returncode == 0, logout.stderr
    # oidc-provider cannot revoke its JWT access tokens (RFC 7009 unsupported_token_type): said, not hidden.
    assert "did not revoke the access token (it stays valid until it expires)" in logout.stderr
    assert logout.stdout.startswith(
        "Logged out (only the refresh token was revoked at the server): removed "
    )
    assert not token_path(env).exists() and state_files(env) == []

    # The server now rejects the refresh token the client held.
    answer = requests.post(
        idp.token_endpoint,
        data={"grant_type": "refresh_token", "refresh_token": new_refresh},
        auth=(TestIdP.CLIENT_ID, TestIdP.CLIENT_SECRET),
        timeout=10,
    )
    assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"

    assert_one_line_error(run_cli(env, "token"), 4, "no bearer token found", str(token_path(env)))
    assert run_cli(env, "logout").stdout.startswith("Not logged in: nothing stored for ")


def test_bearer_auth_refreshes_once_on_invalid_token_and_retries(
    idp_api, live_server, cli_env, monkeypatch
):
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}
    login = device_login(
        env,
        idp_api.issuer,
        *("--client-id", "test-client", "--scope", SCOPE, "--no-browser", "--no-dpop"),
    )
    assert login.returncode == 0, login.stderr
    token_path(env).write_text(
        fake_jwt(iss=idp_api.issuer, sub="alice", exp=1) + "\n"
    )  # the server says no

    for key in ("HOME", "XDG_RUNTIME_DIR", "EPOCHAUTH_CLIENT_SECRET"):
        monkeypatch.setenv(key, env[key])
    for key in ("BEARER_TOKEN", "BEARER_TOKEN_FILE", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    response = requests.get(f"{live_server.url}/auth/whoami/", auth=BearerAuth(), timeout=20)

    assert response.status_code == 200, response.text
    assert response.json()["subject"] == "alice"
    assert [r.status_code for r in response.history] == [401]
    fresh = token_path(env).read_text().strip()
    assert response.request.headers["Authorization"] == f"Bearer {fresh}"
    assert mode(token_path(env)) == 0o600


def test_login_with_a_purpose_and_the_server_from_the_config_file(idp, cli_env):
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}
    config = Path(env["HOME"]) / ".config/epochauth/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'server = "{idp.issuer}"\nclient_id = "test-client"\nscope = "{SCOPE}"\n')

    login = device_login(env, "--purpose", "cms", "--no-browser", username="bob")
    assert login.returncode == 0, login.stderr
    path = token_path(env, "cms")
    assert f"token saved to {path}" in login.stdout
    assert f"Other tools find it with: export BEARER_TOKEN_FILE={path}" in login.stdout
    assert mode(path) == 0o600 and not token_path(env).exists()

    assert "subject:   bob" in run_cli(env, "token", "--purpose", "cms").stdout
    assert_one_line_error(run_cli(env, "token"), 4, str(token_path(env)))
    with_file = run_cli(
        {**env, "BEARER_TOKEN_FILE": str(path)}, "token"
    )  # what a lower-level tool sees
    assert "subject:   bob" in with_file.stdout
    assert run_cli(env, "refresh", "--purpose", "cms").returncode == 0
    assert run_cli(env, "logout", "--purpose", "cms").returncode == 0
    assert not path.exists() and state_files(env) == []


def test_login_to_an_explicit_token_file(idp, cli_env, tmp_path):
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}
    target = tmp_path / "tokens" / "mine"
    login = device_login(
        env,
        idp.issuer,
        "--client-id",
        "test-client",
        "--scope",
        "openid servicex",
        "--token-file",
        str(target),
    )
    assert login.returncode == 0, login.stderr
    assert mode(target) == 0o600 and not token_path(env).exists()
    assert "no refresh token" in login.stderr  # no offline_access requested
    assert "subject:   alice" in run_cli(env, "token", "--token-file", str(target)).stdout
    assert_one_line_error(
        run_cli(env, "refresh", "--token-file", str(target)), 10, "no refresh token stored"
    )


def test_access_denied_at_the_device_page(idp, cli_env):
    env = {**cli_env, "EPOCHAUTH_CLIENT_SECRET": TestIdP.CLIENT_SECRET}
    result = device_login(env, idp.issuer, "--client-id", "test-client", "--no-browser", deny=True)
    assert result.returncode == 7
    assert (
        result.stderr.strip().splitlines()[-1]
        == "epochauth: error: the login was denied at the server"
    )
    assert not token_path(env).exists() and state_files(env) == []


def test_whoami_with_a_token_from_our_token_endpoint(live_server, django_user_model, cli_env):
    django_user_model.objects.create_user("carol", password="pw")
    answer = requests.post(
        f"{live_server.url}/auth/token/", json={"username": "carol", "password": "pw"}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    token_path(cli_env).write_text(answer.json()["access_token"] + "\n")

    result = run_cli(cli_env, "whoami", "--server", live_server.url)
    assert result.returncode == 0, result.stderr
    assert "username:  carol" in result.stdout
    assert "issuer:    " in result.stdout

    token_path(cli_env).write_text(fake_jwt(sub="carol", exp=int(time.time()) + 60) + "\n")
    assert_one_line_error(
        run_cli(cli_env, "whoami", "--server", live_server.url), 10, "rejected the token"
    )


def logged_in_at(env: dict[str, str], server: FakeServer) -> None:
    """A session of a login at ``server`` (a provider that is not epochauth)."""
    target = token_path(env)
    info = SessionInfo(
        server.url, server.url, f"{server.url}/token", f"{server.url}/revoke", "cli", str(target)
    )
    Session(target, env).save(fake_jwt(sub="ann"), "a-refresh-token", info)


@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ((404, {"error": "not_found"}, {}), "answered HTTP 404"),
        ((400, {"error": "invalid_request"}, {}), "answered HTTP 400"),
        ((200, {"message": "hello"}, {}), "answered not as epochauth does"),
    ],
)
def test_whoami_at_a_server_that_is_not_epochauth(cli_env, fake_server, answer, said):
    """After a login at a provider, the session names the provider: whoami says it is not ours."""
    logged_in_at(cli_env, fake_server)
    fake_server.routes["/auth/whoami/"] = lambda form: answer
    assert_one_line_error(
        run_cli(cli_env, "whoami"),
        2,
        f"{fake_server.url} is not an epochauth server ({fake_server.url}/auth/whoami/ {said}): "
        "pass --server with the URL of the epochauth site that accepts this token",
    )


def test_whoami_reports_a_server_error_as_one(cli_env, fake_server):
    logged_in_at(cli_env, fake_server)
    fake_server.routes["/auth/whoami/"] = lambda form: (503, {}, {})
    assert_one_line_error(run_cli(cli_env, "whoami"), 9, "/auth/whoami/ answered HTTP 503")


def revoking(*refused: str) -> Callable[[dict[str, str]], tuple[int, dict, dict[str, str]]]:
    """A revocation endpoint that refuses the token types in ``refused``, as RFC 7009 allows."""

    def answer(form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        if form["token_type_hint"] in refused:
            return 400, {"error": "unsupported_token_type"}, {}
        return 200, {}, {}

    return answer


@pytest.mark.parametrize(
    ("refused", "stdout", "stderr"),
    [
        ((), "Logged out (revoked at the server): removed ", ""),
        (
            ("access_token",),
            "Logged out (only the refresh token was revoked at the server): removed ",
            "epochauth: the server did not revoke the access token (it stays valid until it "
            "expires): unsupported_token_type\n",
        ),
        (
            ("refresh_token", "access_token"),
            "Logged out: removed ",
            "epochauth: the server did not revoke the refresh token: unsupported_token_type\n"
            "epochauth: the server did not revoke the access token (it stays valid until it "
            "expires): unsupported_token_type\n",
        ),
    ],
)
def test_logout_says_only_what_the_server_revoked(cli_env, fake_server, refused, stdout, stderr):
    logged_in_at(cli_env, fake_server)
    fake_server.routes["/revoke"] = revoking(*refused)
    result = run_cli(cli_env, "logout")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(stdout) and result.stderr == stderr
    assert not token_path(cli_env).exists() and state_files(cli_env) == []


def test_logout_cut_short_says_which_token_was_revoked(cli_env, fake_server):
    """The refresh token was revoked, then the server went silent: the error says so, not "the
    tokens were not revoked"."""
    logged_in_at(cli_env, fake_server)

    def revoke(form: dict[str, str]) -> tuple[int, dict, dict[str, str]]:
        if form["token_type_hint"] == "access_token":
            time.sleep(3)
        return 200, {}, {}

    fake_server.routes["/revoke"] = revoke
    assert_one_line_error(
        run_cli(cli_env, "logout", "--timeout", "1"),
        3,
        "the server did not answer within 1 s; local token files removed, but only the refresh "
        "token was revoked",
    )
    assert not token_path(cli_env).exists()


def test_whoami_needs_a_server(cli_env):
    token_path(cli_env).write_text("abc\n")
    assert_one_line_error(run_cli(cli_env, "whoami"), 2, "no server known")


# ------------------------------------------------------------------------------ end to end with our server


@pytest.fixture
def our_server(oauth_live_server):
    """:func:`tests.conftest.oauth_live_server` and alice, who logs in on the admin login page with her
    password (staff, so the admin would let her in too)."""
    alice = get_user_model().objects.create_user("alice", password="alice-pw", is_staff=True)
    for name in ("physics", "operators"):
        alice.groups.add(Group.objects.get_or_create(name=name)[0])
    return oauth_live_server, alice


def browser_approve(server_url: str, user_code: str, username: str, password: str) -> None:
    """A browser over HTTP: log in at /admin/login/, enter the code on /o/device/, press Accept."""
    browser = requests.Session()

    def submit(url: str, **fields: str) -> requests.Response:
        page = browser.get(url, timeout=10)
        page.raise_for_status()
        form = next(f for f in parse_forms(page.text) if f["method"] == "post")
        data = {**form["fields"], **fields}
        assert data.get("csrfmiddlewaretoken"), page.text
        return browser.post(urljoin(page.url, form["action"] or page.url), data=data, timeout=10)

    logged_in = submit(
        f"{server_url}/admin/login/?next=/admin/", username=username, password=password
    )
    assert logged_in.ok and "sessionid" in browser.cookies, logged_in.text[-800:]
    confirm = submit(f"{server_url}/o/device/", user_code=user_code)
    assert confirm.ok and "/o/device-confirm/" in confirm.url, confirm.text[-800:]
    done = browser.post(
        confirm.url,
        data={"csrfmiddlewaretoken": browser.cookies["csrftoken"], "action": "accept"},
        headers={"Referer": confirm.url},
        timeout=10,
    )
    assert done.ok and "/o/device-grant-status/" in done.url, done.text[-800:]


def our_device_login(
    env: dict[str, str], server_url: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """``epochauth login URL ...`` in a subprocess; alice approves the code it prints on our device page."""
    process = subprocess.Popen(
        [sys.executable, "-m", "epochauth.client.cli", "login", server_url, "--no-browser", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()
    expected = f"To log in, open {server_url}/o/device/ and enter the code "
    if first.startswith(expected):
        try:
            browser_approve(server_url, first.removeprefix(expected).strip(), "alice", "alice-pw")
        except BaseException:
            process.kill()  # else it would poll until the device code expires
            process.communicate()
            raise
    stdout, stderr = process.communicate(timeout=60)
    assert first.startswith(expected), (first, stdout, stderr)
    assert "Traceback" not in stderr, stderr
    return subprocess.CompletedProcess(process.args, process.returncode, first + stdout, stderr)


def api_get(server_url: str, path: str, token: str) -> requests.Response:
    return requests.get(
        f"{server_url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )


def dpop_get(server_url: str, path: str, token: str, key: ProofKey) -> requests.Response:
    url = f"{server_url}{path}"
    headers = {"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token)}
    return requests.get(url, headers=headers, timeout=10)


def refresh_error(server_url: str, refresh_token: str, key: ProofKey | None = None) -> str | None:
    """Present a refresh token at our token endpoint as the CLI's public client (with a proof of
    ``key``); the OAuth error or None."""
    url = f"{server_url}/o/token/"
    answer = requests.post(
        url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "epochauth-cli",
        },
        headers={"DPoP": key.proof("POST", url)} if key is not None else {},
        timeout=10,
    )
    return None if answer.status_code == 200 else answer.json()["error"]


def test_cli_against_our_server_login_whoami_token_refresh_logout(our_server, cli_env):
    """Bound end to end: our metadata offers DPoP, so the CLI's token is bound to its login's key."""
    server, alice = our_server
    url = server.url

    login = our_device_login(cli_env, url, "--scope", "reports:read")
    assert login.returncode == 0, login.stderr
    assert f"Logged in: token saved to {token_path(cli_env)} (expires in 14 min 5" in login.stdout
    access = token_path(cli_env).read_text().strip()
    assert mode(token_path(cli_env)) == 0o600
    files = state_files(cli_env)
    assert [p.suffix for p in files] == [".dpop", ".json", ".refresh"]
    assert all(mode(p) == 0o600 for p in files) and mode(files[0].parent) == 0o700
    key = ProofKey.from_pem(files[0].read_text())
    assert jwt.decode(access, options={"verify_signature": False})["cnf"] == {
        "jkt": key.thumbprint
    }
    first_refresh = files[2].read_text().strip()
    info = json.loads(files[1].read_text())
    assert info == {
        "server": url,
        "issuer": url,
        "token_endpoint": f"{url}/o/token/",
        "revocation_endpoint": f"{url}/o/revoke_token/",
        "client_id": "epochauth-cli",
        "token_file": str(token_path(cli_env)),
        "token_type": "DPoP",
    }

    whoami = run_cli(cli_env, "whoami")  # the server of the login, from the session file
    assert whoami.returncode == 0, whoami.stderr
    assert "username:  alice" in whoami.stdout and f"issuer:    {url}" in whoami.stdout
    assert f"subject:   {alice.pk}" in whoami.stdout and "scope:     reports:read" in whoami.stdout
    # The same labels and column as ``epochauth token``, the expiry in the same words.
    assert "expires_at" not in whoami.stdout and "\nexpires:   20" in whoami.stdout
    assert "(14 min " in whoami.stdout and "group:     -" in whoami.stdout

    shown = run_cli(cli_env, "token")
    assert shown.returncode == 0, shown.stderr
    assert f"issuer:    {url}\nsubject:   {alice.pk}\nscope:     reports:read\n" in shown.stdout
    assert (
        "group:     physics operators" in shown.stdout
        or "group:     operators physics" in shown.stdout
    )
    assert "expires:   " in shown.stdout and "(14 min " in shown.stdout
    assert run_cli(cli_env, "token", "--raw").stdout == access + "\n"
    assert dpop_get(url, "/api/reports/", access, key).status_code == 200
    assert api_get(url, "/api/reports/", access).status_code == 401  # never as a bearer token
    assert refresh_error(url, first_refresh) == "invalid_dpop_proof"  # without the key

    refreshed = run_cli(cli_env, "refresh")
    assert refreshed.returncode == 0, refreshed.stderr
    assert refreshed.stdout.startswith(f"Token refreshed: {token_path(cli_env)} (expires in ")
    new_access = token_path(cli_env).read_text().strip()
    new_refresh = files[2].read_text().strip()
    assert new_access != access and new_refresh != first_refresh
    assert mode(token_path(cli_env)) == 0o600 and mode(files[2]) == 0o600
    assert dpop_get(url, "/api/hello/", new_access, key).status_code == 200

    logout = run_cli(cli_env, "logout")
    assert logout.returncode == 0, logout.stderr
    assert logout.stderr == ""  # both tokens revoked, nothing to report
    assert logout.stdout.startswith("Logged out (revoked at the server): removed ")
    assert not token_path(cli_env).exists() and state_files(cli_env) == []

    # The server rejects what the client held: the access token at once, both refresh tokens.
    # (the key, which logout deleted, read before).
    response = dpop_get(url, "/api/hello/", new_access, key)
    assert (
        response.status_code == 401
        and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    )
    assert refresh_error(url, new_refresh, key) == "invalid_grant"
    assert refresh_error(url, first_refresh, key) == "invalid_grant"
    assert_one_line_error(run_cli(cli_env, "token"), 4, "no bearer token found")
    assert run_cli(cli_env, "logout").stdout.startswith("Not logged in: nothing stored for ")


def test_cli_login_with_a_group_against_our_server(our_server, cli_env):
    server, alice = our_server
    url = server.url
    # A bearer login: a refresh token's reuse, which a thief without the key of a bound one cannot
    # commit (tests/test_dpop_endpoints.py), ends its family.
    login = our_device_login(
        cli_env, url, "--group", "operators", "--scope", "reports:read", "--no-dpop"
    )
    assert login.returncode == 0, login.stderr
    shown = run_cli(cli_env, "token")
    assert "scope:     reports:read g:operators\n" in shown.stdout
    assert "group:     operators\n" in shown.stdout
    access = token_path(cli_env).read_text().strip()
    assert api_get(url, "/api/staff-area/", access).status_code == 200
    assert "group:     operators" in run_cli(cli_env, "whoami").stdout

    # The old refresh token no longer works after a refresh; presenting it again is reuse, which ends
    # the whole family: the access token and the refresh token the client holds now are refused too.
    old_refresh = state_files(cli_env)[1].read_text().strip()
    assert run_cli(cli_env, "refresh").returncode == 0
    assert (
        "group:     operators\n" in run_cli(cli_env, "token").stdout
    )  # the group survives a refresh
    current = token_path(cli_env).read_text().strip()
    assert api_get(url, "/api/staff-area/", current).status_code == 200
    assert refresh_error(url, old_refresh) == "invalid_grant"
    assert api_get(url, "/api/staff-area/", current).status_code == 401
    assert_one_line_error(run_cli(cli_env, "refresh"), 10, "rejected the refresh token")

    # A group alice is not in is refused when the device code is redeemed.
    Group.objects.create(name="chemistry")
    refused = our_device_login(cli_env, url, "--group", "chemistry")
    assert refused.returncode == 9
    assert refused.stderr.splitlines()[-1] == (
        "epochauth: error: device login failed: invalid_scope (You are not a member of that group)"
    )


# ------------------------------------------------------------------------------ one-line errors, exit codes


def test_server_unreachable(cli_env, free_port):
    result = run_cli(cli_env, "login", f"http://127.0.0.1:{free_port}", "--no-browser")
    assert_one_line_error(
        result, 3, f"cannot reach http://127.0.0.1:{free_port}: Connection refused"
    )


@pytest.mark.parametrize("command", ["login", "whoami", "refresh", "logout"])
def test_a_trickling_server_is_cut_off_at_the_timeout(cli_env, command):
    """Each request's whole answer is bounded, not each read: this answer alone would take 100 s."""
    with trickling_server(interval=0.5) as url:
        target = token_path(cli_env)
        info = SessionInfo(url, url, f"{url}/token", f"{url}/revoke", "epochauth-cli", str(target))
        Session(target, cli_env).save(fake_jwt(sub="ann"), "a-refresh-token", info)
        args = {"login": [url, "--no-browser"], "whoami": ["--server", url]}.get(command, [])
        started = time.monotonic()
        result = run_cli(cli_env, command, *args, "--timeout", "1")
        assert time.monotonic() - started < 20
    assert_one_line_error(
        result, 3, f"cannot reach {url}", ": the server did not answer within 1 s"
    )


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_a_positive_number(cli_env, value):
    result = run_cli(cli_env, "token", "--timeout", value)
    assert result.returncode == 2 and "not a positive number of seconds" in result.stderr


def test_device_code_expired(cli_env, fake_server):
    fake_server.routes["/device"] = lambda form: (
        200,
        {
            "device_code": "dc",
            "user_code": "AB-CD",
            "verification_uri": "http://x/",
            "expires_in": 1,
            "interval": 1,
        },
        {},
    )
    fake_server.routes["/token"] = lambda form: (400, {"error": "authorization_pending"}, {})
    result = run_cli(cli_env, "login", fake_server.url, "--no-browser")
    assert result.returncode == 8
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("epochauth: error: the device code expired")
    )
    assert "enter the code AB-CD" in result.stdout
    device_request = next(r for r in fake_server.requests if r[0] == "/device")
    assert device_request[1] == {
        "client_id": "epochauth-cli"
    }  # the public client by default, no secret


def test_expired_token_error_from_the_server(cli_env, fake_server):
    fake_server.routes["/device"] = lambda form: (
        200,
        {
            "device_code": "dc",
            "user_code": "AB-CD",
            "verification_uri": "http://x/",
            "expires_in": 60,
            "interval": 1,
        },
        {},
    )
    fake_server.routes["/token"] = lambda form: (400, {"error": "expired_token"}, {})
    assert (
        run_cli(
            cli_env,
            "login",
            fake_server.url,
            "--scope",
            "read",
            "--group",
            "atlas",
            "--vo",
            "lhcb",
        ).returncode
        == 8
    )
    device_request = next(r for r in fake_server.requests if r[0] == "/device")
    assert device_request[1] == {
        "client_id": "epochauth-cli",
        "scope": "read g:atlas vo:lhcb",
    }  # our group and community (VO) scopes


def test_server_without_device_flow(cli_env, fake_server):
    fake_server.routes["/.well-known/oauth-authorization-server"] = lambda form: (404, {}, {})
    fake_server.routes["/.well-known/openid-configuration"] = lambda form: (
        200,
        {"issuer": fake_server.url, "token_endpoint": f"{fake_server.url}/token"},
        {},
    )
    assert_one_line_error(
        run_cli(cli_env, "login", fake_server.url), 9, "does not offer the device flow"
    )


def test_no_token_found_lists_where_it_looked(cli_env):
    result = run_cli(cli_env, "token")
    assert_one_line_error(
        result,
        4,
        "$BEARER_TOKEN (unset)",
        "$BEARER_TOKEN_FILE (unset)",
        f"{token_path(cli_env)} (missing)",
    )


def test_invalid_token_file(cli_env):
    token_path(cli_env).write_text("not a token\n")
    assert_one_line_error(
        run_cli(cli_env, "token"), 5, f"{token_path(cli_env)} does not hold a valid bearer token"
    )
    assert_one_line_error(run_cli(cli_env, "whoami", "--server", "http://127.0.0.1:1"), 5)


def test_expired_token(cli_env):
    token_path(cli_env).write_text(
        fake_jwt(iss="https://iss.example", sub="dave", exp=int(time.time()) - 90)
    )
    result = run_cli(cli_env, "token")
    assert "subject:   dave" in result.stdout and "(expired 1 min" in result.stdout
    assert_one_line_error(result, 6, "has expired")
    raw = run_cli(cli_env, "token", "--raw")
    assert raw.stdout == ""
    assert_one_line_error(raw, 6, "has expired")


def test_a_reader_that_stops_early_ends_the_cli_quietly(cli_env, tmp_path):
    """``epochauth token --raw | head -c 10``: far more than a pipe holds, and the reader goes away."""
    big = tmp_path / "big-token"
    big.write_text("a" * 1_000_000)
    process = subprocess.Popen(
        [sys.executable, "-m", "epochauth.client.cli", "token", "--raw", "--token-file", str(big)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10) == b"a" * 10
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert stderr == b""


def test_token_shows_group_and_opaque_tokens(cli_env):
    token = fake_jwt(
        iss="https://i", sub="eve", scope="a b", group="atlas", exp=int(time.time()) + 3600
    )
    result = run_cli({**cli_env, "BEARER_TOKEN": token}, "token")
    assert "source:    $BEARER_TOKEN" in result.stdout and "group:     atlas" in result.stdout
    assert "scope:     a b" in result.stdout and "59 min" in result.stdout
    opaque = run_cli({**cli_env, "BEARER_TOKEN": "opaque-token"}, "token")
    assert opaque.returncode == 0 and "opaque (not a JWT)" in opaque.stdout


def test_config_file_may_not_hold_a_token(cli_env):
    config = Path(cli_env["HOME"]) / ".config/epochauth/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('server = "https://x"\naccess_token = "eyJ..."\n')
    assert_one_line_error(run_cli(cli_env, "token"), 2, "unknown key(s) access_token")
    config.write_text("server = [\n")
    assert_one_line_error(run_cli(cli_env, "token"), 2, "cannot read config file")


def test_login_without_a_server(cli_env):
    assert_one_line_error(run_cli(cli_env, "login"), 2, "no server URL")


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "epochauth"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and "exit codes:" in result.stdout


# ------------------------------------------------------------------------------ building blocks in-process


class ScriptedHTTP:
    """Stands in for requests.Session in the poll loop: answers from a list, records the clock."""

    def __init__(self, answers: list[dict], clock: Callable[[], float]) -> None:
        self.answers = answers
        self.clock = clock
        self.times: list[float] = []

    def post(
        self, url: str, data: dict, auth=None, timeout=None, headers=None
    ) -> requests.Response:
        self.times.append(self.clock())
        response = requests.Response()
        body = self.answers.pop(0)
        response.status_code = 200 if "access_token" in body else 400
        response._content = json.dumps(body).encode()
        return response


def poll(answers: list[dict], interval: int = 2, expires_in: int = 600):
    now = [0.0]
    http = ScriptedHTTP(answers, lambda: now[0])
    device = client_oauth.DeviceAuthorization("dc", "UC", "http://v", None, expires_in, interval)
    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    result = client_oauth.poll_device_token(
        {"token_endpoint": "http://t"},
        client_oauth.Client("c"),
        http,
        device,
        on_wait=ticks.append,
        sleep=sleep,
        clock=lambda: now[0],
    )
    return result, http.times, ticks


def test_poll_honours_interval_and_slow_down():
    pending, slow = {"error": "authorization_pending"}, {"error": "slow_down"}
    result, times, ticks = poll([pending, slow, pending, {"access_token": "at"}], interval=2)
    assert result == {"access_token": "at"}
    assert times == [2, 4, 11, 18]  # +5 s after slow_down, and it stays
    assert ticks and ticks[0] == 600  # the countdown starts at the full lifetime


@pytest.mark.parametrize(
    ("answer", "error"),
    [({"error": "access_denied"}, AccessDenied), ({"error": "expired_token"}, DeviceCodeExpired)],
)
def test_poll_stops_on_terminal_errors(answer, error):
    with pytest.raises(error):
        poll([answer])


def test_poll_stops_at_the_device_code_lifetime():
    with pytest.raises(DeviceCodeExpired):
        poll([{"error": "authorization_pending"}] * 10, interval=5, expires_in=12)


def test_poll_reports_other_oauth_errors():
    with pytest.raises(ServerError, match="invalid_client"):
        poll([{"error": "invalid_client", "error_description": "who?"}])


def test_metadata_urls_for_issuers_with_a_path():
    assert client_oauth.metadata_urls("https://h.example/realms/x/") == [
        "https://h.example/.well-known/oauth-authorization-server/realms/x",
        "https://h.example/realms/x/.well-known/openid-configuration",
    ]
    assert client_oauth.metadata_urls("https://h.example") == [
        "https://h.example/.well-known/oauth-authorization-server",
        "https://h.example/.well-known/openid-configuration",
    ]


def test_unreachable_message_is_short(free_port):
    with pytest.raises(requests.ConnectionError) as info:
        requests.get(f"http://127.0.0.1:{free_port}/", timeout=5)
    message = str(unreachable(f"http://127.0.0.1:{free_port}", info.value))
    assert message == f"cannot reach http://127.0.0.1:{free_port}: Connection refused"


def test_write_private_is_0600_atomic_and_does_not_follow_symlinks(tmp_path):
    old_umask = os.umask(0)
    try:
        victim = tmp_path / "victim"
        victim.write_text("keep")
        target = tmp_path / "dir" / "token"
        target.parent.mkdir()
        target.symlink_to(victim)
        write_private(target, "secret\n")
    finally:
        os.umask(old_umask)
    assert victim.read_text() == "keep"
    assert not target.is_symlink() and target.read_text() == "secret\n" and mode(target) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["token"]  # no temporary file left


def test_a_token_file_we_may_not_replace_is_a_readable_error(tmp_path, monkeypatch):
    """Another user's /tmp/bt_u$ID in the sticky /tmp cannot be replaced: say so, leave nothing behind."""

    def refused(src: str, dst: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("epochauth.client.store.os.replace", refused)
    with pytest.raises(InvalidToken, match="not ours to replace"):
        write_private(tmp_path / "bt_u1", "secret")
    assert list(tmp_path.iterdir()) == []


def test_session_files_live_in_the_state_dir(tmp_path):
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")}
    session = Session(tmp_path / "run" / "bt_u1", env)
    assert session.refresh_path.parent == tmp_path / "state" / "epochauth"
    assert (
        session.refresh_path.name.startswith("bt_u1-")
        and session.refresh_path.suffix == ".refresh"
    )
    other = Session(tmp_path / "elsewhere" / "bt_u1", env)
    assert (
        other.refresh_path != session.refresh_path
    )  # same name, different file: different session
    prod, dev = Session(tmp_path / "bt_u1-cms.prod", env), Session(tmp_path / "bt_u1-cms.dev", env)
    assert prod.refresh_path.name.startswith("bt_u1-cms.prod-")  # dotted purposes stay apart
    assert (
        len({prod.refresh_path, prod.info_path, prod.lock_path, dev.refresh_path, dev.lock_path})
        == 5
    )


def test_load_config(tmp_path):
    assert load_config(environ={"HOME": str(tmp_path)}) == {}
    path = tmp_path / "c.toml"
    path.write_text('server = "https://x"\ntoken_file = "~/t"\n')
    assert load_config(path) == {"server": "https://x", "token_file": "~/t"}
    path.write_text("refresh_token = 'r'\n")
    with pytest.raises(UsageError, match="unknown key"):
        load_config(path)
    path.write_text("server = 1\n")
    with pytest.raises(UsageError, match="must be string"):
        load_config(path)
    with pytest.raises(UsageError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_bearer_auth_with_an_explicit_token_sends_it(fake_server):
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    assert (
        requests.get(f"{fake_server.url}/api", auth=BearerAuth("abc.def"), timeout=5).status_code
        == 200
    )
    assert fake_server.requests[-1][2]["Authorization"] == "Bearer abc.def"


def test_bearer_auth_without_a_stored_refresh_token_returns_the_401(fake_server, tmp_path):
    challenge = 'Bearer error="invalid_token", error_description="expired"'
    fake_server.routes["/api"] = lambda form: (401, {}, {"WWW-Authenticate": challenge})
    (tmp_path / "t").write_text("abc\n")
    response = requests.get(
        f"{fake_server.url}/api", auth=BearerAuth(token_file=tmp_path / "t"), timeout=5
    )
    assert response.status_code == 401 and response.history == []


@pytest.fixture
def no_token_anywhere(monkeypatch, tmp_path):
    """Discovery finds nothing: no environment token, an empty runtime directory."""
    for key in ("BEARER_TOKEN", "BEARER_TOKEN_FILE"):
        monkeypatch.delenv(key, raising=False)
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    return runtime


def test_bearer_auth_without_a_token_raises_token_not_found(fake_server, no_token_anywhere):
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    with pytest.raises(TokenNotFound, match=r"\$BEARER_TOKEN \(unset\)"):
        requests.get(f"{fake_server.url}/api", auth=BearerAuth(), timeout=5)
    assert fake_server.requests == []


def test_optional_bearer_auth_without_a_token_sends_no_header(fake_server, no_token_anywhere):
    """ServiceX: a frontend that treats the token as optional calls a public API anonymously."""
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    auth = BearerAuth(optional=True)
    assert requests.get(f"{fake_server.url}/api", auth=auth, timeout=5).status_code == 200
    assert "Authorization" not in fake_server.requests[-1][2]
    missing = BearerAuth(token_file=no_token_anywhere / "absent", optional=True)
    assert requests.get(f"{fake_server.url}/api", auth=missing, timeout=5).status_code == 200
    assert "Authorization" not in fake_server.requests[-1][2]

    (no_token_anywhere / f"bt_u{UID}").write_text("abc.def\n")  # a token appears: it is sent
    assert requests.get(f"{fake_server.url}/api", auth=auth, timeout=5).status_code == 200
    assert fake_server.requests[-1][2]["Authorization"] == "Bearer abc.def"


def test_optional_bearer_auth_still_reports_an_unusable_token(fake_server, no_token_anywhere):
    fake_server.routes["/api"] = lambda form: (200, {}, {})
    (no_token_anywhere / f"bt_u{UID}").write_text("not a token\n")
    with pytest.raises(InvalidToken, match="does not hold a valid bearer token"):
        requests.get(f"{fake_server.url}/api", auth=BearerAuth(optional=True), timeout=5)
    assert fake_server.requests == []
