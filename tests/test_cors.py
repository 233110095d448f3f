"""Browser apps on other origins (django-cors-headers, as in the test project's settings): a single-page
app served from a second loopback origin logs in, calls the API, refreshes and logs out with bearer
tokens in a real Chromium, preflights included; the token endpoints set no cookies."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from django.core.signals import request_started

from tests.browser import screenshot
from tests.helpers import login, make_user

SPA = """<!doctype html><html><head><meta charset="utf-8"><title>SPA</title></head>
<body><h1>An app on another origin</h1><pre id="log"></pre></body></html>"""

#: Run in the app's page: every step of a client's life, with what it saw.
SCRIPT = """
const [api, done] = [arguments[0], arguments[arguments.length - 1]];
const steps = [];
const post = (path, body, token) => fetch(api + path, {
  method: "POST",
  headers: {"Content-Type": "application/json", ...(token ? {"Authorization": "Bearer " + token} : {})},
  body: body ? JSON.stringify(body) : undefined,
});
const hello = (token) => fetch(api + "/api/hello/", {headers: {"Authorization": "Bearer " + token}});
(async () => {
  let r = await post("/auth/token/", {username: "alice", password: "pw"});
  const pair = await r.json();
  steps.push(["login", r.status]);
  r = await hello(pair.access_token);
  steps.push(["call", r.status, (await r.json()).hello]);
  r = await post("/auth/token/refresh/", {refresh_token: pair.refresh_token});
  const fresh = await r.json();
  steps.push(["refresh", r.status, fresh.access_token !== pair.access_token]);
  r = await hello(fresh.access_token);
  steps.push(["call", r.status]);
  r = await post("/auth/logout/", null, fresh.access_token);
  steps.push(["logout", r.status]);
  r = await hello(fresh.access_token);
  steps.push(["call", r.status, r.headers.get("WWW-Authenticate")]);
  document.getElementById("log").textContent = JSON.stringify(steps, null, 1);
  done(steps);
})().catch((error) => done([["error", String(error)]]));
"""


@pytest.fixture
def spa_origin(free_port: int) -> Iterator[str]:
    """A second loopback origin serving the app's page."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = SPA.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{free_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.django_db(transaction=True)
def test_an_app_on_another_origin_logs_in_refreshes_and_calls(
    chrome, live_server, spa_origin, settings
):
    settings.CORS_ALLOWED_ORIGINS = [spa_origin]
    assert spa_origin != live_server.url
    make_user("alice")
    seen: list[tuple[str, str]] = []

    def record(sender: Any, environ: dict[str, Any], **kwargs: Any) -> None:
        seen.append((environ["REQUEST_METHOD"], environ["PATH_INFO"]))

    request_started.connect(record, weak=False)
    chrome.set_script_timeout(30)
    chrome.get(spa_origin + "/")
    try:
        steps = chrome.execute_async_script(SCRIPT, live_server.url)
    finally:
        request_started.disconnect(record)
    screenshot(chrome, "cors/spa-on-another-origin.png")
    # The browser asked first (JSON bodies and the Authorization header are not "simple" requests).
    for path in ("/auth/token/", "/api/hello/", "/auth/token/refresh/", "/auth/logout/"):
        assert ("OPTIONS", path) in seen, path
    assert steps[:5] == [
        ["login", 200],
        ["call", 200, "alice"],
        ["refresh", 200, True],
        ["call", 200],
        ["logout", 204],
    ]
    assert steps[5][:2] == ["call", 401] and 'error="invalid_token"' in steps[5][2]
    # The API's origin holds no cookie: the tokens travelled in bodies and headers only (the JSON
    # renderer: the browsable API's HTML would set a CSRF cookie of its own).
    chrome.get(live_server.url + "/.well-known/jwks.json?format=json")
    assert chrome.get_cookies() == []


@pytest.mark.django_db(transaction=True)
def test_an_origin_not_allowed_cannot_read_the_answers(chrome, live_server, spa_origin, settings):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example.org"]
    make_user("alice")
    chrome.set_script_timeout(30)
    chrome.get(spa_origin + "/")
    steps = chrome.execute_async_script(SCRIPT, live_server.url)
    assert steps[0][0] == "error" and "Failed to fetch" in steps[0][1]


def preflight(client: Any, path: str, origin: str) -> Any:
    return client.options(
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type",
    )


@pytest.mark.django_db
def test_preflight_answers_only_the_allowed_origin(client, settings):
    settings.CORS_ALLOWED_ORIGINS = ["http://127.0.0.1:5173"]
    allowed = preflight(client, "/auth/token/", "http://127.0.0.1:5173")
    assert allowed.status_code == 200
    assert allowed["Access-Control-Allow-Origin"] == "http://127.0.0.1:5173"
    assert {"authorization", "content-type"} <= set(
        allowed["Access-Control-Allow-Headers"].split(", ")
    )
    assert "Access-Control-Allow-Credentials" not in allowed
    refused = preflight(client, "/auth/token/", "http://evil.example")
    assert "Access-Control-Allow-Origin" not in refused
    make_user("alice")
    token = login(client, "alice")["access_token"]
    answer = client.get(
        "/api/hello/", HTTP_ORIGIN="http://127.0.0.1:5173", HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert answer["Access-Control-Expose-Headers"] == "WWW-Authenticate, Retry-After"


@pytest.mark.django_db(transaction=True)
def test_the_token_endpoints_set_no_cookies(live_server):
    make_user("alice")
    api = live_server.url
    answers = [
        requests.post(
            f"{api}/auth/token/", json={"username": "alice", "password": "pw"}, timeout=10
        )
    ]
    pair = answers[0].json()
    answers.append(
        requests.post(f"{api}/auth/token/refresh/", json={"refresh_token": pair["refresh_token"]})
    )
    bearer = {"Authorization": f"Bearer {answers[-1].json()['access_token']}"}
    answers.append(requests.post(f"{api}/auth/token/renew/", headers=bearer, timeout=10))
    answers.append(requests.get(f"{api}/auth/whoami/", headers=bearer, timeout=10))
    answers.append(requests.post(f"{api}/auth/logout/", headers=bearer, timeout=10))
    answers.append(
        requests.post(f"{api}/auth/token/", data="{", headers={"Content-Type": "application/json"})
    )
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 204, 400]
    for answer in answers:
        assert "Set-Cookie" not in answer.headers, answer.url
    assert json.loads(answers[-1].content)["error"] == "invalid_request"
