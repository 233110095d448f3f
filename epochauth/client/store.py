"""Where the client keeps files, and how it writes them: atomically, mode 0600, never a token in config.

* the access token goes where WLCG discovery finds it (see ``discovery.default_path``) or to
  ``--token-file``; other tools read it from there;
* the refresh token and the session's endpoints go to a private state directory
  (``$XDG_STATE_HOME/epochauth``, default ``~/.local/state/epochauth``, mode 0700), one pair of files per
  access-token file, so no discovery step and no other tool ever reads the refresh token; a login with
  a DPoP-bound token (RFC 9449) keeps its private key there too, and logout deletes it;
* the optional config file (``$XDG_CONFIG_HOME/epochauth/config.toml``) is read, never written.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import dpop, errors

CONFIG_KEYS = {"server", "token_file", "client_id", "scope"}


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file: readers never see a partial or world-readable token.

    ``mkstemp`` creates the file 0600 with O_EXCL next to the target; ``os.replace`` swaps it in
    (replacing a symlink rather than following it).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.replace(tmp, path)
        except PermissionError:  # e.g. another user's file in the sticky /tmp
            raise errors.InvalidToken(
                f"cannot replace {path}: it is not ours to replace (use --token-file, or set XDG_RUNTIME_DIR)"
            ) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def remove(path: Path) -> bool:
    """Delete ``path`` if it exists; True if something was removed."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _xdg_dir(variable: str, default: str, environ: Mapping[str, str]) -> Path:
    value = environ.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    return Path(environ.get("HOME") or Path.home()) / default


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    return (
        _xdg_dir("XDG_STATE_HOME", ".local/state", os.environ if environ is None else environ)
        / "epochauth"
    )


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return _xdg_dir("XDG_CONFIG_HOME", ".config", env) / "epochauth" / "config.toml"


def load_config(
    path: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The config file's settings ({} if there is none). Unknown keys are refused, which keeps tokens out."""
    explicit = path is not None
    path = path or config_path(environ)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        if explicit:
            raise errors.UsageError(f"config file {path} does not exist") from None
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise errors.UsageError(f"cannot read config file {path}: {exc}") from None
    unknown = sorted(set(data) - CONFIG_KEYS)
    if unknown:
        allowed = ", ".join(sorted(CONFIG_KEYS))
        raise errors.UsageError(
            f"config file {path}: unknown key(s) {', '.join(unknown)} (allowed: {allowed})"
        )
    bad = [key for key, value in data.items() if not isinstance(value, str)]
    if bad:
        raise errors.UsageError(f"config file {path}: {', '.join(bad)} must be string(s)")
    return data


@dataclass
class SessionInfo:
    """What ``refresh``, ``logout`` and ``whoami`` need to know about a login; holds no token."""

    server: str
    issuer: str
    token_endpoint: str
    revocation_endpoint: str | None
    client_id: str
    token_file: str
    #: The access token's ``token_type``: "DPoP" when it is bound to the session's key.
    token_type: str = "Bearer"

    @property
    def bound(self) -> bool:
        return self.token_type.lower() == "dpop"


class Session:
    """The private state belonging to one access-token file: its refresh token, ``SessionInfo`` and, for
    a DPoP-bound token, the key."""

    def __init__(self, token_file: Path, environ: Mapping[str, str] | None = None) -> None:
        self.token_file = Path(os.path.abspath(token_file))
        digest = hashlib.sha256(str(self.token_file).encode()).hexdigest()[:12]
        base = state_dir(environ) / f"{self.token_file.name}-{digest}"
        # Suffixes are appended: a name with dots ("bt_u1-cms.prod") must keep all of them.
        self.refresh_path, self.info_path, self.lock_path, self.key_path = (
            base.with_name(f"{base.name}{suffix}")
            for suffix in (".refresh", ".json", ".lock", ".dpop")
        )

    def load_info(self) -> SessionInfo | None:
        try:
            data: dict[str, Any] = json.loads(self.info_path.read_text())
            return SessionInfo(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise errors.InvalidToken(
                f"session file {self.info_path} is unusable ({exc}); run 'epochauth login'"
            ) from None

    def load_refresh_token(self) -> str | None:
        try:
            token = self.refresh_path.read_text().strip()
        except FileNotFoundError:
            return None
        return token or None

    def load_key(self) -> dpop.ProofKey | None:
        """The login's DPoP key, or None for a login without one."""
        try:
            text = self.key_path.read_text()
        except FileNotFoundError:
            return None
        return dpop.ProofKey.from_pem(text, str(self.key_path))

    def save(
        self,
        access_token: str,
        refresh_token: str | None,
        info: SessionInfo | None,
        key: dpop.ProofKey | None = None,
    ) -> None:
        """Write the access token (where tools find it) and the private state; a missing refresh token
        in a response keeps the stored one (RFC 6749 §6 lets servers not rotate). The token is written
        last, so a reader that finds it finds its key and its ``token_type`` too."""
        if info is not None:
            write_private(self.info_path, json.dumps(asdict(info), indent=2) + "\n")
        if refresh_token:
            write_private(self.refresh_path, refresh_token + "\n")
        if key is not None:
            write_private(self.key_path, key.to_pem())
        write_private(self.token_file, access_token + "\n")

    def clear(self) -> list[Path]:
        """Remove the access token and the private state; the token files that were removed."""
        remove(self.lock_path)
        files = (self.token_file, self.refresh_path, self.info_path, self.key_path)
        return [path for path in files if remove(path)]

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise refreshes across processes: with rotating refresh tokens, two concurrent refreshes
        would present the same token twice, which a server treats as reuse and revokes the family."""
        self.lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)
