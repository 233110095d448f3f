"""Reading an HTTP body within a deadline, shared by the server (``fetching.fetch_json``) and the
client.

Pure Python on purpose: ``epochauth.client`` imports it and must not load Django.
"""

from __future__ import annotations

import time

import urllib3


class TooSlow(Exception):
    """The body was still arriving at the deadline; the caller words the message."""


class TooLarge(Exception):
    """The body grew past the size limit; the caller words the message."""


def read_within(raw: urllib3.BaseHTTPResponse, deadline: float, limit: int | None = None) -> bytes:
    """The whole body of a response opened with ``stream=True``, read by ``deadline`` (``time.monotonic``).

    A socket timeout bounds each read, not the whole: a server trickling one byte at a time would hold
    the caller for as long as it likes. ``read1`` returns whatever has arrived, so the deadline is
    checked while the body trickles in.
    """
    chunks: list[bytes] = []
    size = 0
    while chunk := raw.read1(16384, decode_content=True):
        size += len(chunk)
        if limit is not None and size > limit:
            raise TooLarge
        if time.monotonic() > deadline:
            raise TooSlow
        chunks.append(chunk)
    return b"".join(chunks)
