"""Fetching JSON from issuers over HTTP, within limits: https (or allowed loopback) URLs only, no
redirects, a deadline for the whole download and a size cap, so a slow or hostile issuer cannot hold
a request or fill memory.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from django.core.exceptions import ValidationError

from . import conf, downloads, issuer_config

MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*(\d+)", re.IGNORECASE)
NO_CACHE = re.compile(r"(?:^|,)\s*no-(?:store|cache)\b", re.IGNORECASE)


class FetchError(Exception):
    """A document could not be fetched or is no JSON object; callers word it for their own use."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status of an answer that was not 200.
        self.status = status


def fetch(
    url: str,
    headers: dict[str, str],
    *,
    method: str = "GET",
    body: Any = None,
    accepted: frozenset[int] = frozenset({200}),
) -> tuple[bytes, int | None]:
    """GET ``url`` with a short timeout and a size cap; returns the body with its max-age, if any.

    ``no-store``/``no-cache`` read as max-age 0, so the configured minimum lifetime applies. Another
    ``method`` sends ``body`` as JSON (a Shared Signals transmitter's stream management and poll
    endpoints) and takes any status in ``accepted``.
    """
    try:
        issuer_config.validate_issuer_url(url)
    except ValidationError as exc:
        raise FetchError(str(exc)) from None
    limit = conf.epochauth_settings.HTTP_MAX_BYTES
    timeout = conf.epochauth_settings.HTTP_TIMEOUT.total_seconds()
    # For the whole download: a trickle must not hold a request.
    deadline = time.monotonic() + timeout
    try:
        with requests.request(
            method,
            url,
            timeout=timeout,
            stream=True,
            allow_redirects=False,
            headers=headers,
            json=body,
        ) as response:
            if response.status_code not in accepted:
                raise FetchError(f"{url} answered {response.status_code}", response.status_code)
            try:
                body = downloads.read_within(response.raw, deadline, limit)
            except downloads.TooLarge:
                raise FetchError(f"{url}: response larger than {limit} bytes") from None
            except downloads.TooSlow:
                raise FetchError(f"{url}: took longer than {timeout:g} s") from None
            cache_control = response.headers.get("Cache-Control", "")
    except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
        raise FetchError(f"{url}: {type(exc).__name__}") from None
    if NO_CACHE.search(cache_control):
        return body, 0
    match = MAX_AGE.search(cache_control)
    return body, int(match.group(1)) if match else None


def fetch_json(
    url: str, headers: dict[str, str] | None = None
) -> tuple[dict[str, Any], int | None]:
    """GET a JSON object (:func:`fetch`); returns it with its max-age, if any."""
    body, max_age = fetch(url, {"Accept": "application/json", **(headers or {})})
    try:
        data = json.loads(body)
    except ValueError:
        raise FetchError(f"{url}: not JSON") from None
    if not isinstance(data, dict):
        raise FetchError(f"{url}: not a JSON object")
    return data, max_age


def send_json(method: str, url: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    """``method`` ``url`` with a JSON ``body`` (None: no body); the JSON object of a 2xx answer
    (empty for an empty one, 204). Within :func:`fetch`'s limits."""
    body_bytes, _ = fetch(
        url,
        {"Accept": "application/json", **headers},
        method=method,
        body=body,
        accepted=frozenset(range(200, 300)),
    )
    if not body_bytes.strip():
        return {}
    try:
        data = json.loads(body_bytes)
    except ValueError:
        raise FetchError(f"{url}: not JSON") from None
    if not isinstance(data, dict):
        raise FetchError(f"{url}: not a JSON object")
    return data


class NoMetadata(FetchError):
    """The issuer answered 404 (or 410) for both its OpenID discovery and its RFC 8414 metadata: not an
    outage, so its tokens get a 401 saying why, not a 503."""


#: Answers that say a metadata document does not exist (as opposed to an issuer that is down).
ABSENT = frozenset({404, 410})


def oauth_metadata_url(issuer: str) -> str:
    """RFC 8414 section 3.1: the well-known segment goes between host and path, so the metadata of
    ``https://as.example/tenant1`` is ``https://as.example/.well-known/oauth-authorization-server/tenant1``."""
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    return urlunsplit(
        (parts.scheme, parts.netloc, f"/.well-known/oauth-authorization-server{path}", "", "")
    )


def _checked(issuer: str, url: str) -> tuple[dict[str, Any], int | None]:
    document, max_age = fetch_json(url)
    # OpenID Connect Discovery section 4.3, RFC 8414 section 3.3: else it could point us at another
    # issuer's keys.
    if document.get("issuer") != issuer:
        raise FetchError(f"metadata of {issuer} names another issuer")
    return document, max_age


def fetch_discovery(
    issuer: str, *, oauth_metadata: bool = False
) -> tuple[dict[str, Any], int | None]:
    """The issuer's OpenID discovery document and its max-age: the one fetcher behind both the JWKS
    (``jwks_uri``) and browser login (its endpoints). The document's ``issuer`` must be exactly
    ``issuer``. With ``oauth_metadata`` (for keys: an OAuth authorization server need not be an
    OpenID provider), RFC 8414 metadata where there is no OpenID document; raises :class:`NoMetadata`
    when there is neither.
    """
    try:
        return _checked(issuer, issuer.rstrip("/") + "/.well-known/openid-configuration")
    except FetchError as exc:
        if not oauth_metadata or exc.status not in ABSENT:
            raise
    try:
        return _checked(issuer, oauth_metadata_url(issuer))
    except FetchError as exc:
        if exc.status in ABSENT:
            raise NoMetadata(
                f"{issuer} publishes neither OpenID nor RFC 8414 metadata", exc.status
            ) from None
        raise
