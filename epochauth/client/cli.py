"""The ``epochauth`` console script: log in with the device flow, then use the token from anywhere.

Every failure a user can cause or meet ends in one line on stderr and a distinct exit code (see
``EXIT_CODES``); set ``EPOCHAUTH_DEBUG=1`` to get a traceback for an unexpected error instead.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import math
import os
import sys
import time
import webbrowser
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from . import discovery, dpop, errors, oauth, store, transport
from .auth import BearerAuth, client_for, find_token, refresh_session, session_signer
from .transport import session

DEFAULT_CLIENT_ID = "epochauth-cli"
EXIT_CODES = """exit codes:
  0 success            1 unexpected error       2 usage or config error
  3 server unreachable 4 no token found         5 invalid token or token file
  6 token expired      7 access denied          8 device code expired
  9 server error       10 token rejected by the server"""


# ---------------------------------------------------------------------------------------- helpers


def jwt_claims(token: str) -> dict[str, Any] | None:
    """The payload of a JWT, decoded WITHOUT verifying the signature: for display only, never trust."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return payload if isinstance(payload, dict) else None


def duration(seconds: float) -> str:
    seconds = int(abs(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def say_field(label: str, value: Any) -> None:
    """One ``label: value`` line; ``token`` and ``whoami`` print theirs in one column."""
    say(f"{label + ':':<10} {'-' if value in (None, '') else value}")


def expiry(moment: datetime) -> str:
    """``2026-01-01T12:00:00+00:00 (14 min 5 s left)``, or how long ago it expired."""
    left = moment.timestamp() - time.time()
    when = f"{duration(left)} left" if left > 0 else f"expired {duration(left)} ago"
    return f"{moment.astimezone(UTC).isoformat(timespec='seconds')} ({when})"


def expiry_text(claims: dict[str, Any] | None, expires_in: Any = None) -> str:
    if claims and isinstance(claims.get("exp"), int | float):
        expires_in = claims["exp"] - time.time()
    return (
        f" (expires in {duration(float(expires_in))})"
        if isinstance(expires_in, int | float)
        else ""
    )


def seconds(value: str) -> float:
    """argparse type: a positive, finite number of seconds."""
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {value!r}")
    return number


def say(message: str) -> None:
    print(message, flush=True)


def note(message: str) -> None:
    print(f"epochauth: {message}", file=sys.stderr, flush=True)


def configured_file(args: argparse.Namespace, config: dict[str, str]) -> Path | None:
    """An explicit token file (``--token-file``, else the config file's ``token_file``) or None."""
    value = args.token_file or config.get("token_file")
    return Path(value).expanduser() if value else None


def login_target(args: argparse.Namespace, config: dict[str, str]) -> Path:
    """Where ``login`` writes the access token: the file discovery (with this purpose) reads first."""
    explicit = configured_file(args, config)
    if explicit is not None:
        return explicit
    if args.purpose is not None:
        return discovery.default_path(args.purpose)
    if os.environ.get("BEARER_TOKEN_FILE"):
        return Path(os.environ["BEARER_TOKEN_FILE"])
    return discovery.default_path()


def open_browser(url: str) -> None:
    """Only a graphical browser: on a login node webbrowser would start lynx inside this terminal."""
    if not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"
    ):
        return
    try:
        browser = webbrowser.get()
        # Console browsers are GenericBrowser.
        if not isinstance(browser, webbrowser.GenericBrowser):
            browser.open(url)
    except webbrowser.Error:
        pass


class Countdown:
    """A one-line countdown on a terminal; a single line elsewhere (logs should not fill up with it)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.started = False

    def __call__(self, remaining: float) -> None:
        if self.tty:
            minutes, seconds = divmod(int(remaining), 60)
            sys.stderr.write(f"\rWaiting for approval... {minutes}:{seconds:02d} left ")
            sys.stderr.flush()
        elif not self.started:
            note(f"waiting for approval (the code expires in {duration(remaining)})")
        self.started = True

    def done(self) -> None:
        if self.tty and self.started:
            sys.stderr.write("\r" + " " * 40 + "\r")
            sys.stderr.flush()


# ---------------------------------------------------------------------------------------- commands


def cmd_login(args: argparse.Namespace, config: dict[str, str], http: requests.Session) -> int:
    server = args.url or config.get("server")
    if not server:
        raise errors.UsageError(
            "no server URL: pass it ('epochauth login URL') or set 'server' in the config file"
        )
    target = login_target(args, config)
    client = client_for(args.client_id or config.get("client_id") or DEFAULT_CLIENT_ID)
    metadata = oauth.fetch_metadata(server, http)
    scope = " ".join(
        filter(
            None,
            [
                args.scope or config.get("scope"),
                args.group and f"g:{args.group}",
                args.vo and f"vo:{args.vo}",
            ],
        )
    )
    device = oauth.start_device_flow(metadata, client, http, scope or None)
    say(f"To log in, open {device.verification_uri} and enter the code {device.user_code}")
    if device.verification_uri_complete:
        say(f"or open {device.verification_uri_complete}")
    if not args.no_browser:
        open_browser(device.verification_uri_complete or device.verification_uri)
    # A key of this login only, when the server binds tokens to keys with an algorithm of ours.
    algorithm = None if args.no_dpop else dpop.chosen_algorithm(metadata)
    signer = dpop.Signer(dpop.ProofKey.generate(algorithm)) if algorithm else None
    countdown = Countdown()
    try:
        body = oauth.poll_device_token(
            metadata, client, http, device, on_wait=countdown, signer=signer
        )
    finally:
        countdown.done()
    bound = signer is not None and oauth.is_bound(body)
    info = store.SessionInfo(
        server=server,
        issuer=metadata.get("issuer", server),
        token_endpoint=metadata["token_endpoint"],
        revocation_endpoint=metadata.get("revocation_endpoint"),
        client_id=client.client_id,
        token_file=str(target),
        token_type="DPoP" if bound else "Bearer",
    )
    session = store.Session(target)
    session.clear()  # a previous login's refresh token and key must not outlive it
    key = signer.key if signer is not None and bound else None
    session.save(body["access_token"], body.get("refresh_token"), info, key)
    token = body["access_token"]
    say(
        f"Logged in: token saved to {target}{expiry_text(jwt_claims(token), body.get('expires_in'))}"
    )
    if key is not None:
        say(
            f"The token is DPoP-bound to a key stored with the login (thumbprint {key.thumbprint})"
        )
        note(
            "tools that send it as a bearer token (curl, gfal, XRootD) cannot use it: "
            "'epochauth login --no-dpop' gets a token for them"
        )
    elif signer is not None:
        note("the server advertises DPoP but issued a bearer token: it is sent as one")
    if not body.get("refresh_token"):
        note(
            "the server issued no refresh token: 'epochauth refresh' will not work for this login"
        )
    if os.environ.get("BEARER_TOKEN"):
        note("BEARER_TOKEN is set: tools will use it, not this token")
    elif args.purpose is not None or configured_file(args, config):
        if Path(os.environ.get("BEARER_TOKEN_FILE", "")) != target:
            say(f"Other tools find it with: export BEARER_TOKEN_FILE={target}")
    return 0


def cmd_logout(args: argparse.Namespace, config: dict[str, str], http: requests.Session) -> int:
    session = store.Session(login_target(args, config))
    info = session.load_info()
    refresh_token = session.load_refresh_token()
    access = None
    try:
        access = find_token(session.token_file)
    except errors.ClientError:
        pass  # an unreadable token file is still removed below
    problems: list[str] = []
    revoked: list[str] = []  # what the server confirmed it revoked, in the order tried
    failure: errors.ClientError | None = None
    if info is not None and info.revocation_endpoint:
        client = client_for(info.client_id)
        held = [(refresh_token, "refresh_token"), (access and access.token, "access_token")]
        try:
            for token, hint in held:
                if token:
                    problem = oauth.revoke(info.revocation_endpoint, client, http, token, hint)
                    if problem is None:
                        revoked.append(hint.replace("_", " "))
                    else:
                        problems.append(problem)
        except errors.ClientError as exc:
            failure = exc
    elif info is not None:
        problems.append(
            "the server offers no revocation endpoint; tokens stay valid until they expire"
        )
    removed = session.clear()
    for problem in problems:
        note(problem)
    if failure is not None:
        done = f"only the {revoked[0]} was revoked" if revoked else "the tokens were not revoked"
        raise type(failure)(f"{failure}; local token files removed, but {done}")
    if not removed:
        say(f"Not logged in: nothing stored for {session.token_file}")
        return 0
    # Say only what the server confirmed: a token it refused to revoke was named on stderr above.
    if revoked and not problems:
        outcome = " (revoked at the server)"
    elif revoked:
        outcome = f" (only the {revoked[0]} was revoked at the server)"
    else:
        outcome = ""
    say(f"Logged out{outcome}: removed {', '.join(str(path) for path in removed)}")
    return 0


def cmd_token(args: argparse.Namespace, config: dict[str, str], http: requests.Session) -> int:
    found = find_token(configured_file(args, config), args.purpose)
    claims = jwt_claims(found.token)
    expired = bool(
        claims and isinstance(claims.get("exp"), int | float) and claims["exp"] <= time.time()
    )
    if args.raw:
        if expired:
            raise errors.TokenExpired(f"the token from {found.source} has expired")
        say(found.token)
        return 0
    say_field("source", found.source)
    say_field("binding", binding(found, claims))
    if claims is None:
        say_field("format", "opaque (not a JWT): no claims to show")
        return 0
    groups = claims.get("group") or " ".join(
        claims.get("wlcg.groups") or claims.get("groups") or []
    )
    say_field("issuer", claims.get("iss"))
    say_field("subject", claims.get("sub"))
    say_field("scope", claims.get("scope"))
    say_field("group", groups)
    if claims.get("vo"):
        say_field("vo", claims["vo"])
    if isinstance(claims.get("exp"), int | float):
        say_field("expires", expiry(datetime.fromtimestamp(claims["exp"], UTC)))
    say("(decoded without verifying the signature: for display only)")
    if expired:
        raise errors.TokenExpired(
            f"the token from {found.source} has expired; run 'epochauth refresh' or 'login'"
        )
    return 0


def binding(found: discovery.FoundToken, claims: dict[str, Any] | None) -> str:
    """How the token is sent: bound to the login's DPoP key (RFC 7638 thumbprint), or as a bearer token."""
    signer = session_signer(store.Session(found.path)) if found.path is not None else None
    if signer is not None:
        return (
            f"DPoP-bound (key thumbprint {signer.key.thumbprint}, sent with a proof per request)"
        )
    confirmation = claims.get("cnf") if claims else None
    if isinstance(confirmation, dict) and confirmation.get("jkt"):
        # A bound token without its key (``$BEARER_TOKEN``, another tool's file): unusable from here.
        return f"DPoP-bound to key {confirmation['jkt']}, which this login does not hold"
    return "bearer (not bound to a key)"


def whoami_answer(response: requests.Response) -> dict[str, Any] | None:
    """The body of an epochauth ``/auth/whoami/`` answer, or None when it is not one."""
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "subject" in body else None


def cmd_whoami(args: argparse.Namespace, config: dict[str, str], http: requests.Session) -> int:
    token_file = configured_file(args, config)
    found = find_token(token_file, args.purpose)
    info = store.Session(found.path).load_info() if found.path else None
    server = args.server or (info.server if info else None) or config.get("server")
    if not server:
        raise errors.UsageError(
            "no server known for this token: pass --server URL or set 'server' in the config file"
        )
    url = server.rstrip("/") + "/auth/whoami/"
    auth = BearerAuth(token_file=token_file, purpose=args.purpose, timeout=args.timeout)
    try:
        response = http.get(url, auth=auth, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise errors.unreachable(server, exc) from None
    if response.status_code == 401:
        challenge = response.headers.get("WWW-Authenticate", "")
        raise errors.TokenRejected(
            f"the server rejected the token from {found.source}: {challenge or 'HTTP 401'}"
        )
    if response.status_code >= 500:
        raise errors.ServerError(f"{url} answered HTTP {response.status_code}")
    body = whoami_answer(response)
    if body is None:
        # A provider's token names the provider as its server: it has no /auth/whoami/.
        status = response.status_code
        answer = "not as epochauth does" if status == 200 else f"HTTP {status}"
        raise errors.UsageError(
            f"{server} is not an epochauth server ({url} answered {answer}): pass --server "
            "with the URL of the epochauth site that accepts this token"
        )
    for key, value in body.items():
        if key == "expires_at" and isinstance(value, str):
            try:
                key, value = "expires", expiry(datetime.fromisoformat(value))
            except ValueError:
                pass
        say_field(key, " ".join(map(str, value)) if isinstance(value, list) else value)
    return 0


def cmd_refresh(args: argparse.Namespace, config: dict[str, str], http: requests.Session) -> int:
    session = store.Session(login_target(args, config))
    token = refresh_session(session, http)
    say(f"Token refreshed: {session.token_file}{expiry_text(jwt_claims(token))}")
    return 0


# ---------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--token-file", metavar="PATH", help="use this file instead of WLCG token discovery"
    )
    common.add_argument(
        "--purpose", metavar="NAME", help="one of several tokens side by side: bt_u$ID-NAME"
    )
    common.add_argument(
        "--config",
        metavar="PATH",
        type=Path,
        help="config file (default ~/.config/epochauth/config.toml)",
    )
    common.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds,
        default=transport.TIMEOUT,
        help=(
            "time limit of each request: to connect and for the whole answer body "
            f"(default {transport.TIMEOUT:g})"
        ),
    )

    parser = argparse.ArgumentParser(
        prog="epochauth",
        description="Get a bearer token and keep it where WLCG tools find it.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    login = commands.add_parser("login", parents=[common], help="log in with the device flow")
    login.add_argument(
        "url", nargs="?", metavar="URL", help="the server (default: 'server' from the config file)"
    )
    login.add_argument(
        "--group", help="act as a member of this group (requests the scope g:GROUP)"
    )
    login.add_argument(
        "--vo", help="the community (VO) the token is for (requests the scope vo:VO)"
    )
    login.add_argument("--scope", help="space-separated scopes to request")
    login.add_argument(
        "--client-id",
        help=f"OAuth client id (default {DEFAULT_CLIENT_ID}); a confidential "
        "client's secret comes from $EPOCHAUTH_CLIENT_SECRET",
    )
    login.add_argument("--no-browser", action="store_true", help="do not open a web browser")
    login.add_argument(
        "--no-dpop",
        action="store_true",
        help="ask for a bearer token even when the server can bind tokens to a key (DPoP, RFC 9449)",
    )
    login.set_defaults(handler=cmd_login)

    commands.add_parser(
        "logout", parents=[common], help="revoke the tokens and remove the files"
    ).set_defaults(handler=cmd_logout)
    token = commands.add_parser(
        "token", parents=[common], help="show the token's issuer, subject, scope, expiry"
    )
    token.add_argument("--raw", action="store_true", help="print just the token")
    token.set_defaults(handler=cmd_token)
    whoami = commands.add_parser(
        "whoami", parents=[common], help="ask the server who the token says you are"
    )
    whoami.add_argument(
        "--server", metavar="URL", help="default: the server of the login, or the config file's"
    )
    whoami.set_defaults(handler=cmd_whoami)
    commands.add_parser(
        "refresh", parents=[common], help="get a new access token now"
    ).set_defaults(handler=cmd_refresh)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = store.load_config(args.config)
        with session(args.timeout) as http:
            return args.handler(args, config, http)
    except errors.ClientError as exc:
        note(f"error: {exc}")
        return exc.exit_code
    except BrokenPipeError:
        # The reader went away (``epochauth token --raw | head -c 10``): stop quietly, as Unix tools do.
        # Python flushes stdout at exit; /dev/null keeps that flush from failing again ("Note on SIGPIPE"
        # in the signal module's documentation).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        note("interrupted")
        return 130
    except Exception as exc:
        if os.environ.get("EPOCHAUTH_DEBUG"):
            raise
        note(f"unexpected error: {type(exc).__name__}: {exc} (set EPOCHAUTH_DEBUG=1 for details)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
