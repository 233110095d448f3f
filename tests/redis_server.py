"""A private ``redis-server`` for the tests, so they never touch (or flush) a Redis somebody else uses.

Pytest-agnostic like ``tests.idp``::

    from tests.redis_server import PrivateRedis

    with PrivateRedis(port) as server:   # start() on 127.0.0.1:port, stop() on exit
        server.url                       # redis://127.0.0.1:<port>/0

It listens on loopback only, keeps its working directory in a temporary folder and saves nothing
(``--save "" --appendonly no``). A stopped server can be started again on the same port.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

START_TIMEOUT = 30.0  # seconds to the first PONG: milliseconds on an idle machine


class RedisMissing(FileNotFoundError):
    """``redis-server`` is not installed: a private Redis cannot run here at all (not a failure of it)."""


class PrivateRedis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait for its first PONG; raise ``RedisMissing`` without the program,
        ``redis.ConnectionError`` (with its log tail) when it exits or is not ready in time."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisMissing(
                "redis-server is not on PATH (Debian: apt-get install redis-server)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix="epochauth-redis-"))
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self._dir),
                "--logfile",
                "redis.log",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=0.5) as client:
                    client.ping()
                return
            except redis.ConnectionError as exc:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_tail()
                    self.stop()
                    raise redis.ConnectionError(
                        f"private redis-server on port {self.port} did not start; log tail:\n{tail}"
                    ) from exc
                time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        log = self._dir / "redis.log" if self._dir else None
        if log is None or not log.exists():
            return ""
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
