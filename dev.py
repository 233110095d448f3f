#!/usr/bin/env python3
"""Developer entry point; needs only Python 3.11+ (standard library).

    python3 dev.py demo [--port 8000]     run the demo project (testproject) on http://127.0.0.1:PORT/
    python3 dev.py portal                 run the demo's relying party on http://localhost:8001/ (the
                                          demo prints its RP_CLIENT_SECRET)
    python3 dev.py test [pytest args...]  run the test suite; exits with pytest's exit code

Each first bootstrap ``.venv`` (see ``SETUP_STEPS``): create it if missing, then
``pip install -e .[test]`` unless the stamp file ``.venv/.dev-py-stamp`` holds the SHA-256 of the
current ``pyproject.toml`` (plus the extras), i.e. the install is redone only when pyproject.toml changes.
Delete the stamp (or ``.venv``) to force a reinstall.
Then ``npm ci`` in tests/idp (the test OpenID provider) when node_modules is missing or older than
package-lock.json (skipped with a message if npm is not on PATH).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import shutil
import subprocess
import sys
import venv
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-py-stamp"
EXTRAS = "test"
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
IDP = ROOT / "tests" / "idp"  # the test OpenID provider (Node.js), see tests/idp.py
# The demo signs with RS256 (a JWKS with a key other services can verify against); kept out of git.
DEMO_KEY = ROOT / ".demo" / "rs256.pem"

ADMIN_SCRIPT = """
import os
from django.contrib.auth import get_user_model

user, _ = get_user_model().objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
user.is_active = user.is_staff = user.is_superuser = True
user.set_password(os.environ["DEV_ADMIN_PASSWORD"])
user.save()
# A user without a password for the README's revoke example.
bob, created = get_user_model().objects.get_or_create(username="bob", defaults={"email": "bob@example.com"})
if created:
    bob.set_unusable_password()
    bob.save()
# The admin is in both communities: a login naming none gets lhcb (DEFAULT_COMMUNITY), vo:belle2 the other.
from epochauth.models import CommunityMembership

for slug in ("lhcb", "belle2"):
    CommunityMembership.objects.get_or_create(user=user, community=slug)

# A relying party for OpenID Provider mode (README: "Run an authorization server for a CLI").
from oauth2_provider.models import get_application_model

Application = get_application_model()
portal, _ = Application.objects.get_or_create(client_id="demo-portal", defaults={"user": user})
portal.name, portal.user = "Demo portal", user
portal.client_type, portal.authorization_grant_type = "confidential", "authorization-code"
portal.redirect_uris = os.environ["DEV_PORTAL_URL"] + "/oidc/callback/"
portal.post_logout_redirect_uris = os.environ["DEV_PORTAL_URL"] + "/"
portal.client_secret = os.environ["DEV_PORTAL_SECRET"]
portal.save()
"""

#: Where the demo's relying party (tests/rp_settings.py) runs: another host name than the demo's
#: 127.0.0.1, so that the two sites do not share cookies.
PORTAL_URL = "http://localhost:8001"


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
    """Run a command (in the repository root unless ``cwd``); stop dev.py if it fails."""
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env)
    if result.returncode:
        sys.exit(f"dev.py: command failed ({result.returncode}): {' '.join(map(str, args))}")


def ensure_venv() -> None:
    """Create ``.venv`` with the standard-library venv module (with pip) if it does not exist."""
    if PYTHON.exists():
        return
    print(f"dev.py: creating {VENV}", flush=True)
    try:
        venv.EnvBuilder(with_pip=True).create(VENV)
    except subprocess.CalledProcessError as exc:
        sys.exit(
            f"dev.py: could not create the venv ({exc}); on Debian/Ubuntu: apt-get install python3-venv"
        )


def install_fingerprint() -> str:
    """What the installed environment depends on: pyproject.toml and the extras we install."""
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes())
    digest.update(f"\nextras={EXTRAS}".encode())
    return digest.hexdigest()


def install_project() -> None:
    """``pip install -e .[test]`` into .venv, skipped while the stamp matches pyproject.toml."""
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return
    print(
        f"dev.py: installing the project into {VENV} (pyproject.toml changed or first run)",
        flush=True,
    )
    run(PYTHON, "-m", "pip", "install", "-e", f".[{EXTRAS}]")
    STAMP.write_text(fingerprint + "\n")


def install_idp() -> None:
    """``npm ci`` in tests/idp when its node_modules is missing or older than package-lock.json.

    Skipped with a message when npm is not on PATH (tests that need the IdP then skip, or fail when CI=true).
    """
    lock, installed = IDP / "package-lock.json", IDP / "node_modules" / ".package-lock.json"
    if not lock.exists() or (
        installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        print(
            "dev.py: npm is not on PATH: not installing tests/idp (the test OpenID provider)",
            flush=True,
        )
        return
    print(
        f"dev.py: npm ci in {IDP} (node_modules missing or package-lock.json changed)", flush=True
    )
    run(npm, "ci", "--no-audit", "--no-fund", cwd=IDP)


# Run in order before every command. Extra setup goes here as another step.
SETUP_STEPS: tuple[Callable[[], None], ...] = (ensure_venv, install_project, install_idp)


def bootstrap() -> None:
    """Make the development environment ready: run every step of ``SETUP_STEPS``."""
    for step in SETUP_STEPS:
        step()


def demo_signing_key() -> Path:
    """The demo's RS256 private key (PEM, mode 0600), generated with epochauth_keys on first use."""
    if not DEMO_KEY.exists():
        DEMO_KEY.parent.mkdir(exist_ok=True)
        # Generated under the project's own default key settings: not the ones being set up.
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("EPOCHAUTH_")
        }
        pem = subprocess.run(
            [str(PYTHON), "manage.py", "epochauth_keys", "--generate", "RS256"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        ).stdout
        fd = os.open(DEMO_KEY, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(pem)
    return DEMO_KEY


def demo(argv: list[str]) -> NoReturn:
    """Migrate the demo DB, (re)set the ``admin`` password, print how to try it, exec runserver."""
    parser = argparse.ArgumentParser(prog="dev.py demo", description=demo.__doc__)
    parser.add_argument(
        "--port", type=int, default=8000, help="port of the dev server (default 8000)"
    )
    port = parser.parse_args(argv).port
    bootstrap()

    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env.setdefault("EPOCHAUTH_ISSUER", base)
    env.setdefault("EPOCHAUTH_DEFAULT_COMMUNITY", "lhcb")
    if "EPOCHAUTH_SIGNING_KEY" not in env:
        env.setdefault("EPOCHAUTH_ALGORITHM", "RS256")
        env.setdefault("EPOCHAUTH_SIGNING_KEY_FILE", str(demo_signing_key()))
    run(PYTHON, "manage.py", "migrate", "--noinput", env=env)
    password, portal_secret = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
    admin_env = {
        **env,
        "DEV_ADMIN_PASSWORD": password,
        "DEV_PORTAL_URL": PORTAL_URL,
        "DEV_PORTAL_SECRET": portal_secret,
    }
    run(PYTHON, "manage.py", "shell", "--verbosity", "0", "-c", ADMIN_SCRIPT, env=admin_env)

    print(
        f"""
  Demo user:  admin / {password}   (a new password on every `dev.py demo`)

  Start here: {base}/            (links to everything below)
  API docs:   {base}/api/docs/   (Swagger UI)
  Admin:      {base}/admin/
  Get tokens: curl -s -X POST {base}/auth/token/ -H 'Content-Type: application/json' \\
                -d '{{"username": "admin", "password": "{password}"}}'
  Use one:    TOKEN=$(curl -s -X POST {base}/auth/token/ -H 'Content-Type: application/json' \\
                -d '{{"username": "admin", "password": "{password}"}}' \\
                | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
              curl -s -H "Authorization: Bearer $TOKEN" {base}/auth/whoami/
              curl -s -H "Authorization: Bearer $TOKEN" {base}/api/hello/
  Public:     {base}/.well-known/jwks.json
              {base}/.well-known/openid-configuration
  VOs:        tokens are of lhcb by default; "scope": "vo:belle2" in the login body for belle2
              {base}/.well-known/oauth-authorization-server/belle2
  CLI login:  .venv/bin/epochauth login {base}   (device flow, public client epochauth-cli)
  Relying party (OpenID Provider mode): client demo-portal, secret {portal_secret}
              (a new one on every `dev.py demo`), redirect URI {PORTAL_URL}/oidc/callback/;
              run it:  RP_OP_URL={base} RP_CLIENT_SECRET={portal_secret} python3 dev.py portal
              and open {PORTAL_URL}/
""",
        flush=True,
    )
    os.chdir(ROOT)
    os.execve(PYTHON, [str(PYTHON), "manage.py", "runserver", f"127.0.0.1:{port}"], env)


def portal(argv: list[str]) -> NoReturn:
    """Run the demo's relying party (mozilla-django-oidc, tests/rp_settings.py) on PORTAL_URL, signing
    in at RP_OP_URL (default http://127.0.0.1:8000) as demo-portal with RP_CLIENT_SECRET."""
    argparse.ArgumentParser(prog="dev.py portal", description=portal.__doc__).parse_args(argv)
    if not os.environ.get("RP_CLIENT_SECRET"):
        sys.exit("dev.py portal: set RP_CLIENT_SECRET to the secret `dev.py demo` printed")
    bootstrap()
    DEMO_KEY.parent.mkdir(exist_ok=True)
    env = {
        "RP_OP_URL": "http://127.0.0.1:8000",
        "RP_CLIENT_ID": "demo-portal",
        "RP_DATABASE": str(DEMO_KEY.parent / "portal.sqlite3"),
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.rp_settings",
    }
    run(PYTHON, "-m", "django", "migrate", "--noinput", "-v0", env=env)
    os.chdir(ROOT)
    port = urlsplit(PORTAL_URL).port
    os.execve(PYTHON, [str(PYTHON), "-m", "django", "runserver", f"127.0.0.1:{port}"], env)


def test(argv: list[str]) -> int:
    """Run ``python -m pytest`` in .venv with ``argv``; return pytest's exit code."""
    bootstrap()
    return subprocess.call([str(PYTHON), "-m", "pytest", *argv], cwd=ROOT)


COMMANDS: dict[str, Callable[[list[str]], int]] = {"demo": demo, "portal": portal, "test": test}


def main(argv: list[str]) -> int:
    """Dispatch ``argv[0]`` to a command; everything after it belongs to that command."""
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    if sys.version_info < (3, 11):  # noqa: UP036  (dev.py runs on whatever python3 is installed)
        sys.exit("dev.py needs Python 3.11 or newer")
    sys.exit(main(sys.argv[1:]))
