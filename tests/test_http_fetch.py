"""Fetching discovery documents and JWKS: bounded in time and size against a real loopback server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tokenauth.issuers import FetchError, fetch_json


class TrickleHandler(BaseHTTPRequestHandler):
    """Answers a valid JSON object one byte every 50 ms: each read is quick, the whole is slow."""

    def do_GET(self) -> None:
        body = b'{"keys": []}' + b" " * 200
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            self.wfile.write(bytes([byte]))
            self.wfile.flush()
            time.sleep(0.05)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def trickle_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/jwks"
    server.shutdown()
    server.server_close()


def test_a_trickling_server_is_cut_off_at_the_timeout(settings, trickle_url):
    settings.TOKENAUTH = {**settings.TOKENAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True, "HTTP_TIMEOUT": 0.5}
    started = time.monotonic()
    with pytest.raises(FetchError, match="took longer"):
        fetch_json(trickle_url)
    assert time.monotonic() - started < 2  # the body alone would take over 10 s


def test_the_same_server_within_the_timeout_is_read(settings, trickle_url):
    settings.TOKENAUTH = {**settings.TOKENAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True, "HTTP_TIMEOUT": 30}
    data, max_age = fetch_json(trickle_url)
    assert data == {"keys": []}
    assert max_age is None
