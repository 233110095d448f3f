"""The HTTP session every request of the client goes through: each answer is read whole within a time
limit, so a server that trickles its answer cannot hold a login node's shell for long."""

from __future__ import annotations

import time
from collections.abc import Mapping

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .. import downloads

TIMEOUT = 15.0


class NoAnswer(requests.Timeout):
    """No whole answer within the time limit; ``str()`` is the one-line message ``unreachable`` shows."""


class BoundedAdapter(HTTPAdapter):
    """Connects and reads the whole body within ``timeout`` seconds, whatever timeout the caller asked.

    The body is read here, before any response hook runs, so ``BearerAuth``'s retry (sent through
    this adapter too) and redirects are bounded one by one. The client never streams.
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        deadline = time.monotonic() + self.timeout
        try:
            response = super().send(
                request,
                stream=True,
                timeout=self.timeout,
                verify=verify,
                cert=cert,
                proxies=proxies,
            )
        except requests.Timeout:
            raise self.no_answer(request) from None
        try:
            body = downloads.read_within(response.raw, deadline)
        except (downloads.TooSlow, urllib3.exceptions.ReadTimeoutError):
            response.close()
            raise self.no_answer(request) from None
        except urllib3.exceptions.HTTPError as exc:
            response.close()
            raise requests.ConnectionError(exc, request=request) from None
        response.raw.release_conn()
        # What Response.content leaves behind once it has read the body.
        response._content = body
        response._content_consumed = True  # type: ignore[attr-defined]  # not in types-requests
        return response

    def no_answer(self, request: requests.PreparedRequest) -> NoAnswer:
        return NoAnswer(f"the server did not answer within {self.timeout:g} s", request=request)


def session(timeout: float = TIMEOUT) -> requests.Session:
    """A requests session whose every answer is read whole within ``timeout`` seconds."""
    http = requests.Session()
    adapter = BoundedAdapter(timeout)
    http.mount("http://", adapter)
    http.mount("https://", adapter)
    return http
