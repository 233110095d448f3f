"""One HTTP request through Django's WSGI handler, as a WSGI server would make it.

The environ is built by hand (``django.test.Client`` adds its own machinery: signals, a cookie jar,
response templates); the body is read to the end and the response closed, which sends
``request_finished`` as a server does.
"""

from __future__ import annotations

import io
import itertools
import json
import sys
from collections.abc import Callable
from typing import Any

from django.core.handlers.wsgi import WSGIHandler

HOST = "bench.example"
BASE_ENVIRON = {
    "SCRIPT_NAME": "",
    "QUERY_STRING": "",
    "SERVER_NAME": HOST,
    "SERVER_PORT": "443",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1",
    "HTTP_HOST": HOST,
    "HTTP_ACCEPT": "application/json",
    "HTTP_USER_AGENT": "epochauth-bench",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "https",
    "wsgi.errors": sys.stderr,
    "wsgi.multithread": False,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
}


class Response:
    __slots__ = ("status", "body")

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    def json(self) -> Any:
        return json.loads(self.body)


class Server:
    """Serves requests with one ``WSGIHandler`` (built once, as a server process does)."""

    def __init__(self) -> None:
        self.handler = WSGIHandler()

    def request(
        self,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
        content_type: str = "application/json",
    ) -> Response:
        environ = {**BASE_ENVIRON, "REQUEST_METHOD": method, "PATH_INFO": path, **(headers or {})}
        environ["wsgi.input"] = io.BytesIO(body)
        if body:
            environ["CONTENT_TYPE"] = content_type
            environ["CONTENT_LENGTH"] = str(len(body))
        status: list[str] = []

        def start_response(
            line: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> None:
            status.append(line)

        result = self.handler(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            result.close()
        return Response(int(status[0].split(" ", 1)[0]), content)

    def get(self, path: str, authorization: str | None = None) -> Callable[[], Response]:
        """A zero-argument GET of ``path`` with that Authorization header (the timed unit)."""
        headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        return lambda: self.request("GET", path, headers)

    def get_each(self, path: str, authorizations: list[str]) -> Callable[[], Response]:
        """GET ``path`` with the next of ``authorizations`` each time (cycling)."""
        headers = itertools.cycle([{"HTTP_AUTHORIZATION": a} for a in authorizations])
        return lambda: self.request("GET", path, next(headers))

    def get_proofs(
        self, path: str, authorization: str, proofs: list[str]
    ) -> Callable[[], Response]:
        """GET ``path`` with that Authorization header and the next of ``proofs`` as its ``DPoP`` header
        each time, each proof once: a proof sent again is refused, and the bench must not time 401s."""
        headers = iter([{"HTTP_AUTHORIZATION": authorization, "HTTP_DPOP": p} for p in proofs])

        def call() -> Response:
            proof = next(headers, None)
            if proof is None:
                raise SystemExit(f"bench: {path}: all {len(proofs)} DPoP proofs used")
            return self.request("GET", path, proof)

        return call

    def post_json(
        self, path: str, data: dict[str, Any], authorization: str | None = None
    ) -> Response:
        headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}
        return self.request("POST", path, headers, json.dumps(data).encode())

    def post_for(self, path: str, data: dict[str, Any], field: str) -> Any:
        """POST ``data`` as JSON; the answer's ``field`` (an answer other than 200 stops the bench)."""
        response = self.post_json(path, data)
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status} {response.body[:300]!r}")
        return response.json()[field]


def bearer(token: str) -> str:
    return f"Bearer {token}"
