"""The WLCG system JWKS cache (version 1.0, January 2026): issuers' keys kept on disk for every token
library of a machine. :mod:`epochauth.jwks` reads it only when an issuer cannot be reached;
``epochauth_jwks_cache`` writes it.

A cache is one or more JSON objects ``{"<issuer>": {"expiration": <Unix time>, "jwks": {...}}}`` in a
file, later entries winning; a cache directory holds one such file per issuer, named by the hex SHA-256
of the issuer. The places searched, in this order, are ``$JWKS_CACHE_DIR``, ``$JWKS_CACHE_FILE``,
``/etc/jwks``, ``/etc/jwks/cache.json``, ``/var/cache/jwks`` and ``/var/cache/jwks/cache.json``; the
first entry of the issuer that has not expired wins.

Keys come only from a file no other user can have written, as ssh's ``StrictModes`` asks of
``authorized_keys``: the file and every directory above it belong to root or to us, and no one else may
write them (a sticky directory such as ``/tmp`` aside: no one else can replace what we own in it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

logger = logging.getLogger(__name__)

#: The spec's places: (path or environment variable, whether it is a directory).
PLACES = (
    ("$JWKS_CACHE_DIR", True),
    ("$JWKS_CACHE_FILE", False),
    ("/etc/jwks", True),
    ("/etc/jwks/cache.json", False),
    ("/var/cache/jwks", True),
    ("/var/cache/jwks/cache.json", False),
)

#: Larger files are refused unread: an entry is a few kilobytes per issuer.
MAX_FILE_BYTES = 4 * 1024 * 1024

#: What may stand between two caches of one file (C's ``isspace``, as scitokens-cpp reads it).
WHITESPACE = " \t\n\r\v\f"


class Untrusted(Exception):
    """A cache file, or a directory above it, that another user could have written."""


class Entry(NamedTuple):
    jwks: dict[str, Any]
    #: Unix time after which the entry must be ignored.
    expiration: float
    path: Path


def file_name(issuer: str) -> str:
    """The name of the issuer's file in a cache directory: the hex SHA-256 of the issuer."""
    return hashlib.sha256(issuer.encode()).hexdigest()


def candidates(issuer: str) -> list[Path]:
    """The files that may hold the issuer's entry, in the order the spec searches them."""
    paths = []
    for place, is_directory in PLACES:
        where = os.environ.get(place[1:], "") if place.startswith("$") else place
        if where:
            paths.append(Path(where) / file_name(issuer) if is_directory else Path(where))
    return paths


def _written_by_others(info: os.stat_result) -> str | None:
    """Why another user could have written this file or directory; None when no one could."""
    if info.st_uid not in (0, os.geteuid()):
        return f"it belongs to user id {info.st_uid}"
    sticky = stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
        return "its group or other users may write it"
    return None


def check_directories(directory: Path) -> None:
    """Raise :class:`Untrusted` unless ``directory`` (already resolved) and each one above it are safe."""
    for each in (directory, *directory.parents):
        info = os.lstat(each)
        reason = _written_by_others(info) if stat.S_ISDIR(info.st_mode) else "it is no directory"
        if reason:
            raise Untrusted(f"{each}: {reason}")


def parse(text: str) -> dict[str, Any]:
    """A cache file's entries: its JSON objects merged, later keys winning (section 4). Reading stops
    at anything but whitespace between objects; raises ValueError for a broken object."""
    decoder = json.JSONDecoder(parse_constant=_no_constant)
    entries: dict[str, Any] = {}
    index = 0
    while True:
        while index < len(text) and text[index] in WHITESPACE:
            index += 1
        if index == len(text) or text[index] != "{":
            return entries
        found, index = decoder.raw_decode(text, index)
        entries.update(found)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is no JSON number")


def read_file(path: Path) -> dict[str, Any]:
    """The entries of one cache file; raises OSError, :class:`Untrusted` or ValueError."""
    real = Path(os.path.realpath(path))
    fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise Untrusted(f"{real}: it is no regular file")
        reason = _written_by_others(info)
        if reason:
            raise Untrusted(f"{real}: {reason}")
        check_directories(real.parent)
        data = file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
    return parse(data.decode())


def _entry(value: Any, now: float) -> tuple[dict[str, Any], float] | None:
    """The JWKS and expiration of an issuer's entry; None once it expired; ValueError if malformed."""
    expiration = value.get("expiration") if isinstance(value, dict) else None
    jwks = value.get("jwks") if isinstance(value, dict) else None
    if isinstance(expiration, bool) or not isinstance(expiration, int | float):
        raise ValueError("no numeric expiration")
    if not isinstance(jwks, dict):
        raise ValueError("no jwks object")
    return None if now > expiration else (jwks, float(expiration))


def read(issuer: str, now: float) -> Entry | None:
    """The issuer's first unexpired entry in the system cache, or None. Files that are missing pass
    silently; unreadable, untrusted or malformed ones are skipped with a warning."""
    for path in candidates(issuer):
        try:
            value = read_file(path).get(issuer)
            found = None if value is None else _entry(value, now)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except Untrusted as exc:
            logger.warning("epochauth: refusing the system JWKS cache file %s: %s", path, exc)
            continue
        except (OSError, ValueError) as exc:
            logger.warning("epochauth: cannot read the system JWKS cache file %s: %s", path, exc)
            continue
        if found is not None:
            return Entry(*found, path)
    return None


def entry(jwks: dict[str, Any], expiration: float) -> dict[str, Any]:
    """An issuer's entry: the spec's two fields (others, such as ``next_update``, are tools' hints)."""
    return {"expiration": int(expiration), "jwks": jwks}


def write(path: Path, entries: dict[str, Any]) -> None:
    """Replace ``path`` by a cache of ``entries`` at once: a temporary file beside it, written in full,
    readable by all and writable by its owner only (the keys are public), then renamed over it."""
    directory = Path(os.path.realpath(path.parent))
    check_directories(directory)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            os.fchmod(file.fileno(), 0o644)
            json.dump(entries, file, indent=2, sort_keys=True)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / path.name)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
