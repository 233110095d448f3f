"""Controller for the real OpenID provider in ``tests/idp`` (Node.js, the ``oidc-provider`` package).

Pytest-agnostic: usable from fixtures, scripts or a REPL::

    from tests.idp import TestIdP

    with TestIdP() as idp:                       # start() on a free loopback port, stop() on exit
        token = idp.client_credentials_token()   # RFC 9068 JWT, aud = https://api.example.test
        user = idp.user_token("alice")           # sub = "alice", via the device flow + devInteractions
        idp.rotate()                             # new signing keys (new kids), old ones stay in the JWKS
        idp.down(); idp.up()                     # discovery + JWKS answer 503 meanwhile
        idp.stats()["jwks"]                      # requests to the JWKS endpoint so far

Configuration goes through ``start(env={...})`` (see tests/idp/server.js for every variable), e.g.
``{"IDP_ACCESS_TOKEN_ALG": "ES256"}`` or ``{"IDP_REDIRECT_URIS": "http://127.0.0.1:8000/cb/"}``.
``node_modules`` is installed with ``npm ci`` on first use if missing.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urljoin, urlsplit

import requests

IDP_DIR = Path(__file__).resolve().parent / "idp"
DEFAULT_RESOURCE = "https://api.example.test"
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: Seconds to READY: about one on an idle machine, a few on a loaded one. Rarely a server hangs idle
#: before READY (seen in CI and in full local runs, never alone): it is started again after this.
START_TIMEOUT = 20.0
START_ATTEMPTS = (
    2  # a server not ready in time is started once more (one hung in CI, idle in node)
)


class IdPError(RuntimeError):
    """The test IdP could not be installed, started or driven."""


class IdPMissing(IdPError):
    """node or npm is not installed: the test IdP cannot run on this machine at all (not a failure of it)."""


def ensure_node_modules(idp_dir: Path = IDP_DIR) -> None:
    """Run ``npm ci`` in ``idp_dir`` unless ``node_modules/oidc-provider`` is there already."""
    if (idp_dir / "node_modules" / "oidc-provider" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise IdPMissing(f"npm is not on PATH; cannot install {idp_dir / 'node_modules'}")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=idp_dir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode:
        raise IdPError(
            f"npm ci failed in {idp_dir} ({result.returncode}):\n{result.stdout}\n{result.stderr}"
        )


class _Forms(HTMLParser):
    """Collects ``<form>``s: action, method and the name/value of their ``<input>``s."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._current: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = {
                "action": a.get("action", ""),
                "method": a.get("method", "get").lower(),
                "fields": {},
            }
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[dict[str, Any]]:
    parser = _Forms()
    parser.feed(html)
    return parser.forms


def sign_in_at_provider(
    url: str, username: str, callback: str, http: requests.Session | None = None
) -> str:
    """Be the user's browser at the provider from its authorization ``url``: log in (devInteractions
    takes any password), consent; return the redirect to ``callback`` without following it. ``http``
    is the browser (its cookies keep the provider's session, e.g. for a later logout there)."""
    http = http or requests.Session()
    response = http.get(url, allow_redirects=False, timeout=10)
    for _ in range(15):
        if response.is_redirect:
            location = urljoin(response.url, response.headers["Location"])
            if location.startswith(callback):
                return location
            response = http.get(location, allow_redirects=False, timeout=10)
            continue
        forms = [f for f in parse_forms(response.text) if f["method"] == "post"]
        if response.status_code != 200 or not forms:
            raise IdPError(
                f"at the provider: {response.status_code} {response.url}\n{response.text}"
            )
        fields = dict(forms[0]["fields"])
        if fields.get("prompt") == "login":
            fields.update(login=username, password="any-password")
        response = http.post(
            urljoin(response.url, forms[0]["action"]), data=fields, allow_redirects=False
        )
    raise IdPError("the provider never redirected back")


class TestIdP:
    """Start, drive and stop ``node tests/idp/server.js`` (one process per instance)."""

    __test__ = False  # not a pytest test class

    CLIENT_ID = "test-client"
    CLIENT_SECRET = "test-secret"
    WEB_CLIENT_ID = "web-client"
    WEB_CLIENT_SECRET = "web-secret"

    def __init__(self, idp_dir: Path = IDP_DIR) -> None:
        self.idp_dir = idp_dir
        self.issuer: str | None = None
        self.metadata: dict[str, Any] = {}
        self.env: dict[str, str] = {}
        self.log_path: Path | None = None
        self._process: subprocess.Popen[str] | None = None
        self._log_file: Any = None
        self.http = requests.Session()

    # ------------------------------------------------------------------ lifecycle

    def start(
        self,
        port: int | None = None,
        env: dict[str, str] | None = None,
        *,
        issuer: str | None = None,
        keys_dir: str | Path | None = None,
        timeout: float = START_TIMEOUT,
    ) -> TestIdP:
        """Start the server (``port=None``: a free one); wait for ``READY <issuer>``; fetch discovery.

        ``issuer`` may contain ``{port}``; it defaults to ``http://127.0.0.1:<port>``. Stats are reset
        after the discovery fetch, so they start at zero. Raises :class:`IdPMissing` without node or
        npm, :class:`IdPError` when the server exits or is not ready within ``timeout`` seconds.
        """
        if self._process is not None:
            raise IdPError("already started")
        node = shutil.which("node")
        if node is None:
            raise IdPMissing("node is not on PATH")
        ensure_node_modules(self.idp_dir)

        self.env = dict(env or {})
        args = [node, "server.js", "--port", str(port or 0), "--exit-on-stdin-close"]
        if issuer:
            args += ["--issuer", issuer]
        if keys_dir:
            args += ["--keys-dir", str(keys_dir)]
        hung: list[str] = []
        for _attempt in range(START_ATTEMPTS):
            line = self._launch(args, timeout)
            if line is not None:
                break
            hung.append(self._state())
            print(f"test IdP not ready in {timeout:g} s ({hung[-1]})", file=sys.stderr)
            if len(hung) < START_ATTEMPTS:
                self.stop()
        if line is None or not line.startswith("READY "):
            self._failed_start(line, timeout, hung)
        self.issuer = line.split(" ", 1)[1].strip()
        try:
            # An RFC-8414-only or metadata-less provider (IDP_METADATA) still tells the harness its endpoints.
            published = self.env.get("IDP_METADATA", "openid") == "openid"
            where = "/.well-known/openid-configuration" if published else "/__test__/metadata"
            base = self.issuer if published else self._origin()
            response = self.http.get(f"{base}{where}", timeout=10)
            response.raise_for_status()
            self.metadata = response.json()
            self.reset_stats()
        except Exception:
            self.stop()
            raise
        return self

    def _origin(self) -> str:
        """Scheme, host and port of the issuer: where the admin routes are, whatever its path."""
        parts = urlsplit(self.issuer or "")
        return f"{parts.scheme}://{parts.netloc}"

    def _launch(self, args: list[str], timeout: float) -> str | None:
        """Start one server process; its first line (see :meth:`_first_line`)."""
        fd, log_name = tempfile.mkstemp(prefix="test-idp-", suffix=".log")
        os.close(fd)
        self.log_path = Path(log_name)
        self._log_file = open(self.log_path, "w")  # noqa: SIM115 (closed in stop())
        self._process = subprocess.Popen(
            args,
            cwd=self.idp_dir,
            env={**os.environ, "NODE_NO_WARNINGS": "1", **self.env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            text=True,
        )
        assert self._process.stdout is not None
        return self._first_line(self._process.stdout, timeout)

    def _state(self) -> str:
        """What a server that is not ready is doing (Linux /proc), for the failure message."""
        assert self._process is not None
        proc = Path(f"/proc/{self._process.pid}")
        try:
            state = next(
                x for x in (proc / "status").read_text().splitlines() if x.startswith("State:")
            )
            waiting = (proc / "wchan").read_text()
            return f"pid {self._process.pid} {state.split(':', 1)[1].strip()}, in {waiting}"
        except (OSError, StopIteration):
            return f"pid {self._process.pid}"

    @staticmethod
    def _first_line(stdout: IO[str], timeout: float) -> str | None:
        """The server's first line: ``""`` if it closed stdout first (it exited), ``None`` after ``timeout``.

        Its stdout is read to the end in a thread, so a chatty server never blocks on a full pipe.
        """
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            for line in stdout:
                lines.put(line)
            lines.put("")  # end of output: the process is gone, no need to wait out the timeout

        threading.Thread(target=read, daemon=True).start()
        try:
            return lines.get(timeout=timeout)
        except queue.Empty:
            return None

    def _failed_start(self, line: str | None, timeout: float, hung: list[str]) -> NoReturn:
        """Stop a server that did not become ready; raise saying whether it exited, with its stderr tail."""
        assert self._process is not None
        try:  # stdout closed: the process is exiting, give it a moment to report its exit code
            exited = self._process.wait(timeout=5) if line == "" else self._process.poll()
        except subprocess.TimeoutExpired:
            exited = None
        if exited is not None:
            how = f"exited with {exited} before it was ready"
        elif line is None:
            how = f"still running but not ready within {timeout:g} s ({len(hung)} tries: {'; '.join(hung)})"
        else:
            how = f"still running but printed {line.strip()!r} instead of READY"
        self.stop()
        raise IdPError(f"test IdP did not start: {how}; stderr tail:\n{self.log_tail()}")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s). Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.stdin:
                process.stdin.close()
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            if process.stdout:
                process.stdout.close()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines the server wrote to stderr."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> TestIdP:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ endpoints

    def _url(self, key: str) -> str:
        if not self.metadata:
            raise IdPError("not started")
        return self.metadata[key]

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def jwks_uri(self) -> str:
        return self._url("jwks_uri")

    @property
    def token_endpoint(self) -> str:
        return self._url("token_endpoint")

    def jwks(self) -> dict[str, Any]:
        """The public JWKS as served at ``jwks_uri`` (counts as a JWKS request in ``stats()``)."""
        response = self.http.get(self.jwks_uri, timeout=10)
        response.raise_for_status()
        return response.json()

    def keys(self) -> dict[str, Any]:
        """``{"keys": [public JWKs], "signing": {alg: kid}, "access_token_alg": ...}`` (not counted)."""
        return self._admin("GET", "keys")

    # ------------------------------------------------------------------ tokens

    def token_response(
        self, data: dict[str, str], auth: tuple[str, str] | None = None
    ) -> dict[str, Any]:
        """POST ``data`` to the token endpoint with client_secret_basic; the JSON body (raises on errors)."""
        response = self.http.post(
            self.token_endpoint,
            data=data,
            auth=auth or (self.CLIENT_ID, self.CLIENT_SECRET),
            timeout=10,
        )
        if response.status_code != 200:
            raise IdPError(f"token endpoint answered {response.status_code}: {response.text}")
        return response.json()

    def client_credentials_token(
        self,
        scope: str = "servicex reports:read",
        resource: str | None = None,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> str:
        """A JWT access token for ``test-client`` (``sub`` = ``client_id`` = "test-client").

        ``resource`` defaults (server side) to IDP_RESOURCE, which becomes ``aud``; ``scope`` is
        narrowed to the scopes that resource accepts.
        """
        data = {"grant_type": "client_credentials", "scope": scope}
        if resource:
            data["resource"] = resource
        auth = (client_id or self.CLIENT_ID, client_secret or self.CLIENT_SECRET)
        return self.token_response(data, auth)["access_token"]

    def user_token_response(
        self,
        username: str,
        scope: str = "openid profile servicex reports:read",
        resource: str | None = None,
        *,
        password: str = "any-password",
        timeout: float = 20.0,
    ) -> dict[str, Any]:
        """Token response for user ``username`` via the device flow, driven over HTTP like a browser would.

        Device authorization -> the user-code confirm page -> devInteractions' login form (any
        password works) -> its consent form -> poll the token endpoint. The access token is a JWT
        with ``sub`` = ``username``; with ``openid`` in ``scope`` there is an ``id_token`` too.
        """
        auth = (self.CLIENT_ID, self.CLIENT_SECRET)
        data = {"scope": scope}
        if resource:
            data["resource"] = resource
        response = self.http.post(
            self._url("device_authorization_endpoint"), data=data, auth=auth, timeout=10
        )
        if response.status_code != 200:
            raise IdPError(
                f"device authorization answered {response.status_code}: {response.text}"
            )
        device = response.json()

        browser = requests.Session()  # the "user's browser": its own cookies
        page = browser.get(device["verification_uri_complete"], timeout=10)
        deadline = time.monotonic() + timeout
        for _ in range(10):
            page.raise_for_status()
            forms = [f for f in parse_forms(page.text) if f["method"] == "post"]
            if not forms:
                break  # the success page
            form = forms[0]
            fields = dict(form["fields"])
            if fields.get("prompt") == "login":
                fields.update(login=username, password=password)
            page = browser.post(urljoin(page.url, form["action"]), data=fields, timeout=10)
        else:
            raise IdPError(
                f"device flow did not finish; last page {page.url}:\n{page.text[:2000]}"
            )

        interval = 0.1
        while True:
            response = self.http.post(
                self.token_endpoint,
                data={"grant_type": DEVICE_CODE_GRANT, "device_code": device["device_code"]},
                auth=auth,
                timeout=10,
            )
            body = response.json()
            if response.status_code == 200:
                return body
            if (
                body.get("error") not in ("authorization_pending", "slow_down")
                or time.monotonic() > deadline
            ):
                raise IdPError(
                    f"device flow token request failed: {body}; last page {page.url}:\n{page.text[:500]}"
                )
            interval = (
                float(device.get("interval", 5)) if body["error"] == "slow_down" else interval
            )
            time.sleep(interval)

    def user_token(
        self,
        username: str,
        scope: str = "openid profile servicex reports:read",
        resource: str | None = None,
    ) -> str:
        """A JWT access token whose ``sub`` is ``username`` (see ``user_token_response``)."""
        return self.user_token_response(username, scope, resource)["access_token"]

    # ------------------------------------------------------------------ test controls

    def _admin(self, method: str, route: str, **params: Any) -> dict[str, Any]:
        if self.issuer is None:
            raise IdPError("not started")
        base = self._origin()
        query = {k: str(v) for k, v in params.items() if v is not None}
        response = self.http.request(method, f"{base}/__test__/{route}", params=query, timeout=10)
        response.raise_for_status()
        return response.json()

    def rotate(self, drop_old: bool = False, alg: str | None = None) -> dict[str, Any]:
        """New signing key(s) (both algs, or only ``alg``) with new kids; ``drop_old`` removes the old ones
        of those algs from the JWKS. Returns ``keys()`` plus ``added``/``dropped`` kids."""
        return self._admin("POST", "rotate", drop_old=1 if drop_old else None, alg=alg)

    def stats(self) -> dict[str, Any]:
        """``{"requests": {path: n}, "discovery": n, "jwks": n, "total": n, "down": [..], "delay_ms": n}``"""
        return self._admin("GET", "stats")

    def reset_stats(self) -> dict[str, Any]:
        return self._admin("POST", "reset-stats")

    def down(
        self, seconds: float | None = None, targets: str = "discovery,jwks"
    ) -> dict[str, Any]:
        """Make ``targets`` (discovery, jwks, token, revocation) answer 503 for ``seconds`` (``None``: until
        ``up()``)."""
        return self._admin("POST", "down", seconds=seconds, targets=targets)

    def up(self) -> dict[str, Any]:
        return self._admin("POST", "up")

    def delay(self, ms: int, targets: str | None = None) -> dict[str, Any]:
        """Delay the answers of ``targets`` (discovery, jwks, token, revocation; default all) by ``ms``
        milliseconds (0 = none)."""
        return self._admin("POST", "delay", ms=ms, targets=targets)
