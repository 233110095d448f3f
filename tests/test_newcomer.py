"""The README's first ten minutes, done as a newcomer does them (issue 26).

The wheel built from this checkout goes into a fresh venv (its dependencies from the package index,
through pip's cache), ``django-admin startproject mysite`` makes a site, and the code blocks of the
README's "Use it in your project" section, read from README.md now, are pasted into it: the block
starting ``# settings.py`` at the end of settings.py, the one starting ``# urls.py`` at the end of
urls.py, the ``HasScope`` example (it imports ``epochauth.permissions``) as mysite/views.py with a
route. Then ``migrate``, ``check`` (silent), a superuser, ``runserver``, and the token endpoints over
HTTP. A README edit that breaks a snippet fails here.

A ``# ...`` line as an element of a top-level ``NAME = [...]`` (or ``{...}``) in a snippet stands for
what the file already holds there: it becomes ``*NAME,`` (``**NAME,``), so the pasted assignment
extends what startproject wrote (``INSTALLED_APPS`` keeps the admin, ``urlpatterns`` its route)
rather than replacing it, as a reader merging by hand would. See ``fill_placeholders``.

Needs the package index (for the build backend and the dependencies): without it the test is
skipped locally and fails when CI=true.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import tokenize
import urllib.error
import urllib.request
import venv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import service_required

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = "## Use it in your project"
PLACEHOLDER = "# ..."
#: What the build needs of the checkout: a copy without these builds the same wheel, and no build
#: directory or egg-info is left in the checkout.
NOT_BUILT = ("*.egg-info", "build", "dist", ".git", ".venv*", ".tox", "node_modules", "_build")
#: The newcomer's shell does not point at this checkout or the test project.
NOT_INHERITED = ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")
PIP = ("-m", "pip", "--disable-pip-version-check", "--no-input", "-q")


class IndexUnreachable(Exception):
    """pip cannot reach the package index."""


# --- the README's snippets -----------------------------------------------------------------------


def use_it_blocks(readme: str) -> list[str]:
    """The fenced code blocks of the "Use it in your project" section, in order."""
    match = re.search(rf"^{re.escape(SECTION)}[ \t]*$(.*?)(?=^## |\Z)", readme, re.M | re.S)
    if match is None:
        pytest.fail(f'README.md has no heading "{SECTION}"')
    return re.findall(r"^```[^\n]*\n(.*?)^```", match.group(1), re.M | re.S)


def find_block(blocks: list[str], marker: str, matches: Callable[[str], bool]) -> str:
    """The first block that ``matches``; fails naming the ``marker`` when there is none."""
    for block in blocks:
        if matches(block):
            return block
    pytest.fail(f'README.md "{SECTION}": no code block {marker}')


def fill_placeholders(code: str) -> str:
    """``code`` with each ``# ...`` element of a top-level ``NAME = [`` / ``NAME = {`` replaced by
    ``*NAME,`` / ``**NAME,``: pasted after what startproject wrote, the assignment extends it.

    A ``# ...`` at the top level stays a comment; one nested deeper has no meaning we could give it
    and fails, naming its line.
    """
    lines = code.splitlines()
    brackets: list[str] = []
    target = previous = None
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.OP and token.string in "([{":
            brackets.append(token.string)
        elif token.type == tokenize.OP and token.string in ")]}":
            brackets.pop()
        elif token.type == tokenize.OP and token.string == "=" and not brackets:
            target = previous
        elif token.type == tokenize.COMMENT and token.line.strip() == PLACEHOLDER and brackets:
            if len(brackets) > 1 or brackets[0] == "(" or target is None:
                pytest.fail(f"README.md snippet: no rule for {PLACEHOLDER!r} in {token.line!r}")
            star = "*" if brackets[0] == "[" else "**"
            lines[token.start[0] - 1] = " " * token.start[1] + f"{star}{target},"
        if token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT):
            previous = token.string if token.type == tokenize.NAME else None
    return "\n".join(lines) + "\n"


@dataclass
class Snippets:
    settings: str
    urls: str
    views: str
    #: the class in ``views`` whose permissions include ``HasScope``
    scoped_view: str


def readme_snippets() -> Snippets:
    blocks = use_it_blocks(README.read_text(encoding="utf-8"))
    settings = find_block(
        blocks, "starting with the line `# settings.py`", starts("# settings.py")
    )
    urls = find_block(blocks, "starting with the line `# urls.py`", starts("# urls.py"))
    views = find_block(
        blocks,
        "importing from `epochauth.permissions` (the HasScope example)",
        lambda b: (
            re.search(r"^from epochauth\.permissions import .*\bHasScope\b", b, re.M) is not None
        ),
    )
    scoped = [
        node.name
        for node in ast.walk(ast.parse(views))
        if isinstance(node, ast.ClassDef)
        and any(isinstance(n, ast.Name) and n.id == "HasScope" for n in ast.walk(node))
    ]
    if not scoped:
        pytest.fail(f'README.md "{SECTION}": the HasScope example defines no view using HasScope')
    return Snippets(fill_placeholders(settings), fill_placeholders(urls), views, scoped[0])


def starts(line: str) -> Callable[[str], bool]:
    return lambda block: block.splitlines()[:1] == [line]


def test_a_placeholder_keeps_what_startproject_wrote():
    assert (
        fill_placeholders('APPS = [\n    # ...\n    "a",\n]\n')
        == 'APPS = [\n    *APPS,\n    "a",\n]\n'
    )
    assert fill_placeholders("D = {\n    # ...\n}\n") == "D = {\n    **D,\n}\n"
    assert fill_placeholders("# ...\nX = 1\n") == "# ...\nX = 1\n"


# --- a newcomer's machine ------------------------------------------------------------------------


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, quiet: bool = False
) -> str:
    """Run a command; fail with its output unless it exits 0 (or, ``quiet``, if it printed anything
    to stderr: a newcomer's management commands warn only under ``check --deploy``); its stdout."""
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    command = " ".join(map(str, args))
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    assert not (quiet and done.stderr), f"{command} printed to stderr:\n{done.stderr}"
    return done.stdout


def reach_index() -> None:
    """Ask pip's package index for one project, failing fast when it does not answer."""
    done = subprocess.run(
        [sys.executable, *PIP, "--retries", "0", "--timeout", "10", "index", "versions", "pip"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise IndexUnreachable(done.stderr.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def newcomer_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel built from this checkout and its dependencies (once per session)."""
    service_required("the package index", reach_index, IndexUnreachable)
    work = tmp_path_factory.mktemp("newcomer")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_BUILT), symlinks=True)
    run(sys.executable, *PIP, "wheel", "--no-deps", "-w", work / "dist", source, cwd=work)
    (wheel,) = (work / "dist").glob("django_epochauth-*.whl")
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    run(env_dir / "bin" / "python", *PIP, "install", wheel, cwd=work, env=newcomer_env(env_dir))
    return env_dir


def newcomer_env(env_dir: Path, **more: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in NOT_INHERITED and not k.startswith("EPOCHAUTH")
    }
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return {**env, **more}


# --- the site, over HTTP -------------------------------------------------------------------------


class Site:
    """``runserver`` of the newcomer's project on a loopback port, and JSON requests to it."""

    def __init__(self, python: Path, project: Path, env: dict[str, str], log: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(
                [python, "manage.py", "runserver", "--noreload", f"127.0.0.1:{self.port}"],
                cwd=project,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def wait(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"runserver exited {self.process.returncode}:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"runserver did not listen within {seconds} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def call(
        self, method: str, path: str, token: str | None = None, body: dict | None = None
    ) -> tuple[int, Any, Any]:
        """``(status, headers, JSON body or None)``."""
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", data=data, headers=headers, method=method
        )
        try:
            with self.opener.open(request, timeout=30) as response:
                status, answer, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            status, answer, raw = error.code, error.headers, error.read()
        try:
            return status, answer, json.loads(raw) if raw else None
        except ValueError:
            return status, answer, raw.decode(errors="replace")


@pytest.fixture
def snippets() -> Snippets:
    return readme_snippets()


@pytest.fixture
def site(snippets: Snippets, newcomer_venv: Path, tmp_path: Path) -> Iterator[Site]:
    """startproject mysite, the README's snippets pasted in, migrate, check, a user; runserver.

    The snippets are read first: a README without them fails before anything is built."""
    python = newcomer_venv / "bin" / "python"
    env = newcomer_env(newcomer_venv, EPOCHAUTH_SIGNING_KEY=secrets.token_urlsafe(48))
    django_admin = newcomer_venv / "bin" / "django-admin"
    run(django_admin, "startproject", "mysite", cwd=tmp_path, env=env, quiet=True)
    project = tmp_path / "mysite"
    package = project / "mysite"
    with (package / "settings.py").open("a") as settings:
        settings.write("\n\n" + snippets.settings)
    (package / "views.py").write_text(snippets.views)
    with (package / "urls.py").open("a") as urls:
        urls.write(
            "\n\n" + snippets.urls + f"\nfrom mysite.views import {snippets.scoped_view}\n\n"
            f'urlpatterns += [path("api/reports/", {snippets.scoped_view}.as_view())]\n'
        )

    # the wheel's epochauth, not the checkout's
    where = run(python, "-c", "import epochauth; print(epochauth.__file__)", cwd=project, env=env)
    assert Path(where.strip()).is_relative_to(newcomer_venv), where

    run(python, "manage.py", "migrate", cwd=project, env=env, quiet=True)
    checked = run(python, "manage.py", "check", cwd=project, env=env, quiet=True)
    assert checked.strip() == "System check identified no issues (0 silenced).", checked
    superuser = {"DJANGO_SUPERUSER_PASSWORD": "first ten minutes"}
    run(
        *(python, "manage.py", "createsuperuser", "--noinput"),
        *("--username", "alice", "--email", "alice@example.org"),
        cwd=project,
        env={**env, **superuser},
        quiet=True,
    )

    server = Site(python, project, env, tmp_path / "runserver.log")
    try:
        server.wait()
        yield server
    finally:
        server.stop()


def test_the_first_ten_minutes_as_the_readme_writes_them(site: Site):
    def login(scope: str) -> dict:
        credentials = {"username": "alice", "password": "first ten minutes", "scope": scope}
        status, _, answer = site.call("POST", "/auth/token/", body=credentials)
        assert status == 200, (scope, answer)
        return answer

    assert site.call("GET", "/admin/login/")[0] == 200  # startproject's admin route is kept

    pair = login("reports:read")
    assert pair["token_type"] == "Bearer" and pair["scope"] == "reports:read"
    status, _, me = site.call("GET", "/auth/whoami/", pair["access_token"])
    assert status == 200 and me["username"] == "alice", me
    status, _, answer = site.call("GET", "/api/reports/", pair["access_token"])
    assert status == 200, answer

    unscoped = login("")["access_token"]
    status, headers, answer = site.call("GET", "/api/reports/", unscoped)
    assert status == 403, answer
    assert 'error="insufficient_scope"' in headers["WWW-Authenticate"]

    body = {"refresh_token": pair["refresh_token"]}
    status, _, renewed = site.call("POST", "/auth/token/refresh/", body=body)
    assert status == 200, renewed
    access = renewed["access_token"]
    assert access != pair["access_token"]
    assert site.call("GET", "/api/reports/", access)[0] == 200

    status, _, answer = site.call("POST", "/auth/logout/", access)
    assert status == 204, answer
    status, headers, answer = site.call("GET", "/auth/whoami/", access)
    assert status == 401, answer
    assert headers["WWW-Authenticate"].startswith("Bearer ")
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
