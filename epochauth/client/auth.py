"""``BearerAuth`` for requests (DPoP-aware: the scheme follows the token), and the one refresh routine
the CLI shares with it."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from requests.auth import AuthBase

from . import discovery, dpop, errors, oauth, store, transport
from .transport import session

CLIENT_SECRET_ENV = "EPOCHAUTH_CLIENT_SECRET"
_INVALID_TOKEN = re.compile(r'^\s*(Bearer|DPoP)\b.*\berror\s*=\s*"?invalid_token"?', re.IGNORECASE)


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


def session_signer(session: store.Session) -> dpop.Signer | None:
    """The signer of a session whose token is DPoP-bound, None for a bearer token's session."""
    info = session.load_info()
    if info is None or not info.bound:
        return None
    key = session.load_key()
    if key is None:
        raise errors.InvalidToken(
            f"the token of {session.token_file} is DPoP-bound but its key {session.key_path} "
            "is missing; run 'epochauth login'"
        )
    return dpop.Signer(key)


def refresh_session(
    session: store.Session,
    http: requests.Session,
    failed_token: str | None = None,
    signer: dpop.Signer | None = None,
) -> str:
    """Exchange the stored refresh token for new tokens, store them and return the new access token.

    Runs under the session's lock. If another process refreshed meanwhile (the file no longer holds
    ``failed_token``), its token is used instead of presenting the rotated-away refresh token again.
    A login with a DPoP key signs the refresh with it (``signer``, else one made from the key file), and
    the answer's ``token_type`` is stored: it says how the new token is sent.
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
        if signer is None and (key := session.load_key()) is not None:
            signer = dpop.Signer(key)
        body = oauth.refresh(
            info.token_endpoint, client_for(info.client_id), http, refresh_token, signer
        )
        token_type = "DPoP" if signer is not None and oauth.is_bound(body) else "Bearer"
        session.save(
            body["access_token"], body.get("refresh_token"), replace(info, token_type=token_type)
        )
        return body["access_token"]


def is_invalid_token(response: requests.Response) -> bool:
    """RFC 6750 §3.1: a 401 whose challenge says the token (not the request) is the problem."""
    challenge = response.headers.get("WWW-Authenticate", "")
    return response.status_code == 401 and bool(_INVALID_TOKEN.search(challenge))


class BearerAuth(AuthBase):
    """``requests.get(url, auth=BearerAuth())``: sends the token as its type requires.

    Without an explicit ``token`` the token is discovered on every request (WLCG discovery, or
    ``token_file``), so a token renewed by another process or tool is picked up. When the token came
    from a file that ``epochauth login`` wrote, a refresh token is stored for it: a 401 ``invalid_token``
    then triggers one refresh (its answer read within ``timeout`` seconds) and one retry.

    A DPoP-bound token (RFC 9449) is never sent as a bearer token, which its server would refuse: when
    the login stored the token as bound, or an explicit ``token`` comes with its ``key`` (a
    ``dpop.ProofKey``), each request carries ``Authorization: DPoP <token>`` and a ``DPoP`` proof
    signed for its method and URL. A 401 ``use_dpop_nonce`` with a ``DPoP-Nonce`` is retried once with
    that nonce, which is then sent to that server until it names another. Any other token goes as
    ``Authorization: Bearer <token>``. ``DPoPAuth`` is this class under the name RFC 9449 users look
    for: one class, so code written for bearer tokens keeps working when the server starts binding them.

    ``optional=True`` is for a service where a token only adds rights (a public API that shows more to a
    signed-in user): when discovery finds no token, the request goes out without ``Authorization``
    instead of raising ``TokenNotFound``. A token that is there but unusable (``InvalidToken``) still
    raises: a broken token file is a mistake to report, not an anonymous request to make.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        key: dpop.ProofKey | None = None,
        token_file: str | Path | None = None,
        purpose: str | None = None,
        timeout: float = transport.TIMEOUT,
        optional: bool = False,
    ) -> None:
        if key is not None and not token:
            raise ValueError(
                "key binds an explicit token: a discovered token uses its login's key"
            )
        self.token = token
        self.signer = dpop.Signer(key) if key is not None else None
        self.optional = optional
        self.token_file = Path(token_file) if token_file is not None else None
        self.purpose = purpose
        self.http = session(timeout)
        #: One signer per stored key, so a server's nonce is remembered from request to request.
        self.signers: dict[str, dpop.Signer] = {}

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
        session = store.Session(found.path) if found.path is not None else None
        signer = self.signer if session is None else self.stored_signer(session)
        authorize(request, found.token, signer)
        if signer is not None or (session is not None and session.refresh_path.exists()):
            request.register_hook("response", self._retry_hook(session, found.token, signer))
        return request

    def stored_signer(self, session: store.Session) -> dpop.Signer | None:
        signer = session_signer(session)
        if signer is None:
            return None
        return self.signers.setdefault(signer.key.thumbprint, signer)

    def _retry_hook(
        self, session: store.Session | None, sent_token: str, signer: dpop.Signer | None
    ) -> Any:
        def hook(response: requests.Response, **kwargs: Any) -> requests.Response:
            token, nonce_retried, refreshed = sent_token, False, False
            bound = signer
            while True:
                url = response.request.url or ""
                # Read the nonce of every answer: the next request to that server needs it.
                wants_nonce = bound is not None and bound.retry_with_nonce(url, response)
                if wants_nonce and not nonce_retried:
                    nonce_retried = True
                elif (
                    session is not None
                    and not refreshed
                    and is_invalid_token(response)
                    and session.refresh_path.exists()
                ):
                    try:
                        token = refresh_session(session, self.http, token, bound)
                    except errors.TokenRejected:
                        return response  # the caller sees the original 401
                    # A new token, and the token endpoint may have set another nonce for this server.
                    refreshed, nonce_retried = True, False
                    bound = self.stored_signer(session)
                else:
                    return response
                response = resend(response, token, bound, kwargs)

        return hook


DPoPAuth = BearerAuth


def authorize(request: requests.PreparedRequest, token: str, signer: dpop.Signer | None) -> None:
    """Put the token (and, for a bound token, a fresh proof for this very request) in the headers."""
    if signer is None:
        request.headers["Authorization"] = f"Bearer {token}"
        request.headers.pop("DPoP", None)
        return
    request.headers["Authorization"] = f"DPoP {token}"
    request.headers["DPoP"] = signer.proof(request.method or "GET", request.url or "", token)


def resend(
    response: requests.Response, token: str, signer: dpop.Signer | None, kwargs: dict[str, Any]
) -> requests.Response:
    """Send the request of ``response`` again with new credentials; the new answer keeps the old ones
    in its ``history``. The adapter's send() runs no hooks, so a retry cannot trigger another one."""
    response.content  # noqa: B018 (drain, so the connection can be reused)
    response.close()
    retry = response.request.copy()
    authorize(retry, token, signer)
    new = response.connection.send(retry, **kwargs)
    new.history = [*response.history, response]
    new.request = retry
    return new
