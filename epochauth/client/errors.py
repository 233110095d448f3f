"""Client errors: each one is a one-line message for a person plus the exit code the CLI returns."""

from __future__ import annotations

import re

import requests

from . import transport


class ClientError(Exception):
    """Base of every error the client reports; ``str()`` is a complete one-line message."""

    exit_code = 1


class UsageError(ClientError):
    """Something the user must supply or fix on the command line or in the config file."""

    exit_code = 2


class ServerUnreachable(ClientError):
    exit_code = 3


class TokenNotFound(ClientError):
    """Discovery found nothing; the message lists every place it looked, so the user can see why."""

    exit_code = 4

    def __init__(self, looked: list[str]) -> None:
        self.looked = looked
        super().__init__("no bearer token found; looked at " + ", ".join(looked))


class InvalidToken(ClientError):
    """A token (or token file) that is not usable; the message names where it came from."""

    exit_code = 5


class TokenExpired(ClientError):
    exit_code = 6


class AccessDenied(ClientError):
    exit_code = 7


class DeviceCodeExpired(ClientError):
    exit_code = 8


class ServerError(ClientError):
    """The server answered, but not with what the protocol promises (or with an OAuth error)."""

    exit_code = 9


class TokenRejected(ClientError):
    """The server refused the bearer token (401) or the refresh token (invalid_grant)."""

    exit_code = 10


def unreachable(url: str, exc: requests.RequestException) -> ServerUnreachable:
    """A short message for a network failure: requests' own text is several nested reprs long."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")]+)", text)
    if match:
        reason = match.group(1).strip()
    elif isinstance(exc, transport.NoAnswer):
        reason = str(exc)
    else:
        reason = type(exc).__name__
    return ServerUnreachable(f"cannot reach {url}: {reason}")
