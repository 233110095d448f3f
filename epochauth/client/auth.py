"""``BearerAuth`` for requests, and the one refresh routine the CLI shares with it."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import requests
from requests.auth import AuthBase

from . import discovery, errors, oauth, store, transport
from .transport import session

CLIENT_SECRET_ENV = "EPOCHAUTH_CLIENT_SECRET"
_INVALID_TOKEN = re.compile(r'^\s*Bearer\b.*\berror\s*=\s*"?invalid_token"?', re.IGNORECASE)


def client_for(client_id: str) -> oauth.Client:
    """The OAuth client; a confidential client's secret comes from the environment only, never a file."""
    return oauth.Client(client_id, os.environ.get(CLIENT_SECRET_ENV) or None)


def find_token(token_file: Path | None = None, purpose: str | None = None) -> discovery.FoundToken:
    """``--token-file`` if given, else WLCG discovery (with the optional purpose)."""
    if token_file is None:
        return discovery.discover(purpose)
    found = discovery.read_token_file(token_file)
    if found is None:
        raise errors.TokenNotFound(
            [f"{token_file} ({'empty' if token_file.exists() else 'missing'})"]
        )
    return found


def refresh_session(
    session: store.Session, http: requests.Session, failed_token: str | None = None
) -> str:
    """Exchange the stored refresh token for new tokens, store them and return the new access token.

    Runs under the session's lock. If another process refreshed meanwhile (the file no longer holds
    ``failed_token``), its token is used instead of presenting the rotated-away refresh token again.
    """
    with session.locked():
        if failed_token is not None:
            current = discovery.read_token_file(session.token_file)
            if current is not None and current.token != failed_token:
                return current.token
        info = session.load_info()
        refresh_token = session.load_refresh_token()
        if info is None or refresh_token is None:
            raise errors.TokenRejected(
                f"no refresh token stored for {session.token_file}; run 'epochauth login'"
            )
        body = oauth.refresh(info.token_endpoint, client_for(info.client_id), http, refresh_token)
        session.save(body["access_token"], body.get("refresh_token"), None)
        return body["access_token"]


def is_invalid_token(response: requests.Response) -> bool:
    """RFC 6750 §3.1: a 401 whose challenge says the token (not the request) is the problem."""
    challenge = response.headers.get("WWW-Authenticate", "")
    return response.status_code == 401 and bool(_INVALID_TOKEN.search(challenge))


class BearerAuth(AuthBase):
    """``requests.get(url, auth=BearerAuth())``: sends ``Authorization: Bearer <token>``.

    Without an explicit ``token`` the token is discovered on every request (WLCG discovery, or
    ``token_file``), so a token renewed by another process or tool is picked up. When the token came
    from a file that ``epochauth login`` wrote, a refresh token is stored for it: a 401 ``invalid_token``
    then triggers one refresh (its answer read within ``timeout`` seconds) and one retry.

    ``optional=True`` is for a service where a token only adds rights (a public API that shows more to a
    signed-in user): when discovery finds no token, the request goes out without ``Authorization``
    instead of raising ``TokenNotFound``. A token that is there but unusable (``InvalidToken``) still
    raises: a broken token file is a mistake to report, not an anonymous request to make.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        token_file: str | Path | None = None,
        purpose: str | None = None,
        timeout: float = transport.TIMEOUT,
        optional: bool = False,
    ) -> None:
        self.token = token
        self.optional = optional
        self.token_file = Path(token_file) if token_file is not None else None
        self.purpose = purpose
        self.http = session(timeout)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        try:
            found = (
                discovery.FoundToken(self.token, "argument")
                if self.token
                else find_token(self.token_file, self.purpose)
            )
        except errors.TokenNotFound:
            if not self.optional:
                raise
            return request
        request.headers["Authorization"] = f"Bearer {found.token}"
        if found.path is not None:
            session = store.Session(found.path)
            if session.refresh_path.exists():
                request.register_hook("response", self._retry_hook(session, found.token))
        return request

    def _retry_hook(self, session: store.Session, sent_token: str) -> Any:
        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            if not is_invalid_token(response):
                return response
            try:
                token = refresh_session(session, self.http, failed_token=sent_token)
            except errors.TokenRejected:
                return response  # the caller sees the original 401
            response.content  # noqa: B018 (drain, so the connection can be reused)
            response.close()
            retry = response.request.copy()
            retry.headers["Authorization"] = f"Bearer {token}"
            # The adapter's send() runs no hooks, so this retry cannot trigger another refresh.
            new = response.connection.send(retry, **kwargs)
            new.history.append(response)
            new.request = retry
            return new

        return hook
