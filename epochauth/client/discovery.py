"""WLCG Bearer Token Discovery (https://github.com/WLCG-AuthZ-WG/bearer-token-discovery).

Other WLCG tools (gfal, xrootd, htgettoken, condor) find tokens the same way, so a token put where
discovery looks is usable by all of them with no extra setup. The steps, in order:

1. ``$BEARER_TOKEN`` is the token;
2. ``$BEARER_TOKEN_FILE`` names a file holding it;
3. ``$XDG_RUNTIME_DIR/bt_u$ID`` when ``XDG_RUNTIME_DIR`` is set,
4. otherwise ``/tmp/bt_u$ID`` ($ID = effective uid).

A value is stripped of C ``isspace`` characters on both sides; an empty value (or a missing file)
continues with the next step; anything else that is not an RFC 6750 b64token stops with an error that
says where it came from. With a *purpose* (the spec's "high-level tools" clause) only the purpose file
``bt_u$ID-<purpose>`` in the directory of step 3/4 is read: the environment names the default token,
and a tool that picks a purpose has its own knowledge of which token to use.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import errors

#: C99 isspace() in the "C" locale; Python's str.strip() would also remove \x1c-\x1f and Unicode spaces.
C_WHITESPACE = " \t\n\v\f\r"
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_PURPOSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class FoundToken:
    """A discovered token and where it came from (``path`` is None for ``$BEARER_TOKEN``)."""

    token: str
    source: str
    path: Path | None = None


def is_b64token(value: str) -> bool:
    """RFC 6750 §2.1: ``1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="``."""
    return _B64TOKEN.fullmatch(value) is not None


def check_purpose(purpose: str) -> str:
    """A purpose becomes part of a file name: no separators, no leading dot or dash."""
    if not _PURPOSE.fullmatch(purpose):
        raise errors.UsageError(
            f"invalid purpose name {purpose!r} (letters, digits, '.', '_', '-')"
        )
    return purpose


def default_path(purpose: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The file of step 3 or 4 (with ``-<purpose>`` appended when given)."""
    env = os.environ if environ is None else environ
    name = f"bt_u{os.geteuid()}" + (f"-{check_purpose(purpose)}" if purpose is not None else "")
    runtime_dir = env.get("XDG_RUNTIME_DIR")
    return Path(runtime_dir or "/tmp") / name


def _checked(value: str, source: str, path: Path | None) -> FoundToken | None:
    token = value.strip(C_WHITESPACE)
    if not token:
        return None
    if not is_b64token(token):
        raise errors.InvalidToken(
            f"{source} does not hold a valid bearer token (RFC 6750 b64token)"
        )
    return FoundToken(token, source, path)


def read_token_file(
    path: Path, source: str | None = None, *, own: bool = False
) -> FoundToken | None:
    """The token in ``path``; None if the file is missing or blank; InvalidToken if unusable.

    ``own``: the file must belong to us. Anyone may create ``/tmp/bt_u$ID`` before its user does, and
    that user's tools would then send the stranger's token.
    """
    source = source or str(path)
    try:
        with path.open("rb") as handle:
            if own and not _belongs_to_us(handle.fileno()):
                raise errors.InvalidToken(
                    f"{source} belongs to another user: not used (remove it)"
                )
            data = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise errors.InvalidToken(
            f"cannot read token file {source}: {exc.strerror or exc}"
        ) from None
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise errors.InvalidToken(
            f"{source} does not hold a valid bearer token (not ASCII)"
        ) from None
    return _checked(text, source, path)


def discover(purpose: str | None = None, environ: Mapping[str, str] | None = None) -> FoundToken:
    """Run discovery; raise TokenNotFound (listing every place looked at) or InvalidToken."""
    env = os.environ if environ is None else environ
    looked: list[str] = []
    if purpose is None:
        if "BEARER_TOKEN" in env:
            found = _checked(env["BEARER_TOKEN"], "$BEARER_TOKEN", None)
            if found:
                return found
            looked.append("$BEARER_TOKEN (empty)")
        else:
            looked.append("$BEARER_TOKEN (unset)")
        if env.get("BEARER_TOKEN_FILE"):
            path = Path(env["BEARER_TOKEN_FILE"])
            found = read_token_file(path, f"$BEARER_TOKEN_FILE ({path})")
            if found:
                return found
            looked.append(f"$BEARER_TOKEN_FILE ({path}: {_absent(path)})")
        else:
            looked.append("$BEARER_TOKEN_FILE (unset)")
    path = default_path(purpose, env)
    found = read_token_file(path, own=True)
    if found:
        return found
    looked.append(f"{path} ({_absent(path)})")
    raise errors.TokenNotFound(looked)


def discover_token(purpose: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The bearer token WLCG discovery finds (see the module docstring for the rules)."""
    return discover(purpose, environ).token


def _belongs_to_us(fd: int) -> bool:
    return os.fstat(fd).st_uid == os.geteuid()


def _absent(path: Path) -> str:
    return "empty" if path.exists() else "missing"
