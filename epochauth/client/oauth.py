"""OAuth 2.0 over requests: server metadata (RFC 8414 / OIDC discovery), the device flow (RFC 8628),
refresh (RFC 6749 §6), revocation (RFC 7009), DPoP proofs at the token endpoint (RFC 9449 §5).
Generic on purpose: any server publishing these endpoints works, ours or an external identity provider.
``http`` is a ``transport.session()``, which bounds every answer in time."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

from . import dpop, errors

DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


@dataclass(frozen=True)
class Client:
    """A registered OAuth client; the secret (confidential clients only) never touches a file."""

    client_id: str
    client_secret: str | None = None

    def apply(self, data: dict[str, str]) -> tuple[str, str] | None:
        """Add public-client identification to ``data``, or return HTTP Basic credentials."""
        if self.client_secret:
            return (self.client_id, self.client_secret)
        data["client_id"] = self.client_id
        return None


@dataclass(frozen=True)
class DeviceAuthorization:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: int
    interval: int


def _json(response: requests.Response, what: str) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise errors.ServerError(
            f"{what} answered HTTP {response.status_code} without a JSON object"
        )
    return body


def _oauth_error(body: dict[str, Any], what: str) -> str:
    error = body.get("error", "unknown_error")
    description = body.get("error_description")
    return f"{what}: {error}" + (f" ({description})" if description else "")


def metadata_urls(server: str) -> list[str]:
    """RFC 8414 puts the well-known segment before the issuer's path, OIDC after it; try both."""
    parts = urlsplit(server.rstrip("/"))
    path = parts.path
    urls = [
        urlunsplit(
            (parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", "")
        )
    ]
    urls.append(
        urlunsplit(
            (parts.scheme, parts.netloc, f"{path}/.well-known/openid-configuration", "", "")
        )
    )
    return urls


def fetch_metadata(server: str, http: requests.Session) -> dict[str, Any]:
    """The first metadata document that answers; ServerUnreachable / ServerError otherwise."""
    if urlsplit(server).scheme not in ("http", "https"):
        raise errors.UsageError(f"not an http(s) URL: {server}")
    tried = []
    for url in metadata_urls(server):
        try:
            response = http.get(url, headers={"Accept": "application/json"})
        except requests.RequestException as exc:
            raise errors.unreachable(server, exc) from None
        if response.status_code == 200:
            body = _json(response, url)
            if "token_endpoint" not in body:
                raise errors.ServerError(f"{url} names no token_endpoint")
            return body
        tried.append(f"{url} (HTTP {response.status_code})")
    raise errors.ServerError("no OAuth server metadata at " + ", ".join(tried))


def _post(
    http: requests.Session,
    url: str,
    data: dict[str, str],
    client: Client,
    signer: dpop.Signer | None = None,
) -> requests.Response:
    """POST a form; with a ``signer``, with a DPoP proof, sent again once if the server asks for a nonce."""
    auth = client.apply(data)
    retried = False
    while True:
        headers = {"Accept": "application/json"}
        if signer is not None:
            headers["DPoP"] = signer.proof("POST", url)
        try:
            response = http.post(url, data=data, auth=auth, headers=headers)
        except requests.RequestException as exc:
            raise errors.unreachable(url, exc) from None
        if signer is None or not signer.retry_with_nonce(url, response) or retried:
            return response
        retried = True


def is_bound(body: dict[str, Any]) -> bool:
    """The token answer's ``token_type`` (case-insensitive, RFC 6749 §5.1) says whether the server bound
    the access token to our key (RFC 9449 §5): a server that does not support DPoP answers Bearer."""
    return str(body.get("token_type", "")).lower() == "dpop"


def start_device_flow(
    metadata: dict[str, Any], client: Client, http: requests.Session, scope: str | None
) -> DeviceAuthorization:
    """RFC 8628 §3.1."""
    endpoint = metadata.get("device_authorization_endpoint")
    if not endpoint:
        raise errors.ServerError(
            f"{metadata.get('issuer', 'the server')} does not offer the device flow"
        )
    data = {"scope": scope} if scope else {}
    response = _post(http, endpoint, data, client)
    body = _json(response, "device authorization")
    if response.status_code != 200:
        raise errors.ServerError(_oauth_error(body, "device authorization refused"))
    try:
        return DeviceAuthorization(
            device_code=body["device_code"],
            user_code=body["user_code"],
            verification_uri=body["verification_uri"],
            verification_uri_complete=body.get("verification_uri_complete"),
            expires_in=int(body["expires_in"]),
            interval=int(body.get("interval", 5)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise errors.ServerError(f"device authorization answer lacks {exc}") from None


def poll_device_token(
    metadata: dict[str, Any],
    client: Client,
    http: requests.Session,
    device: DeviceAuthorization,
    *,
    on_wait: Callable[[float], None] = lambda remaining: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    signer: dpop.Signer | None = None,
) -> dict[str, Any]:
    """RFC 8628 §3.4-3.5: wait ``interval`` between polls, add 5 s on ``slow_down``, stop on expiry.

    ``on_wait(seconds_left)`` is called about once a second while waiting, for a visible countdown.
    With a ``signer`` each poll carries a DPoP proof, asking for a token bound to its key.
    """
    deadline = clock() + device.expires_in
    interval = max(device.interval, 1)
    data = {"grant_type": DEVICE_CODE_GRANT, "device_code": device.device_code}
    while True:
        next_poll = clock() + interval
        while (now := clock()) < next_poll:
            if now >= deadline:
                raise errors.DeviceCodeExpired(
                    "the device code expired before the login was approved; run login again"
                )
            on_wait(deadline - now)
            sleep(min(1.0, next_poll - now))
        response = _post(http, metadata["token_endpoint"], dict(data), client, signer)
        body = _json(response, "token endpoint")
        if response.status_code == 200 and "access_token" in body:
            return body
        error = body.get("error")
        if error == "authorization_pending":
            continue
        if error == "slow_down":
            interval += 5
            continue
        if error == "access_denied":
            raise errors.AccessDenied("the login was denied at the server")
        if error == "expired_token":
            raise errors.DeviceCodeExpired(
                "the device code expired before the login was approved; run login again"
            )
        raise errors.ServerError(_oauth_error(body, "device login failed"))


def refresh(
    token_endpoint: str,
    client: Client,
    http: requests.Session,
    refresh_token: str,
    signer: dpop.Signer | None = None,
) -> dict[str, Any]:
    """RFC 6749 §6; an ``invalid_grant`` means the session is over (revoked, expired or reused).

    A login's key signs the refresh too: a public client's refresh token is bound to it (RFC 9449 §5).
    """
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    response = _post(http, token_endpoint, data, client, signer)
    body = _json(response, "token endpoint")
    if response.status_code == 200 and "access_token" in body:
        return body
    if body.get("error") == "invalid_grant":
        raise errors.TokenRejected("the server rejected the refresh token; run 'epochauth login'")
    raise errors.ServerError(_oauth_error(body, "refresh failed"))


def revoke(
    endpoint: str, client: Client, http: requests.Session, token: str, hint: str
) -> str | None:
    """RFC 7009. Returns None on success, else why not (``unsupported_token_type`` is common for JWT
    access tokens, which stay valid until they expire)."""
    response = _post(http, endpoint, {"token": token, "token_type_hint": hint}, client)
    if response.status_code == 200:
        return None
    what = f"the server did not revoke the {hint.replace('_', ' ')}"
    if hint == "access_token":
        what += " (it stays valid until it expires)"
    try:
        return _oauth_error(_json(response, "revocation endpoint"), what)
    except errors.ClientError as exc:
        return f"{what}: {exc}"
