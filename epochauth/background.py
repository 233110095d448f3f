"""Work that must not keep a request waiting (a call to a provider that may hang), done by one daemon
thread per process after the request's transaction committed.

The database stays the truth: whatever a job was to do is recorded before it is queued, so a job lost
with its process (a crash, an exit before :meth:`Worker.drain`) is picked up by the housekeeping that
reads the database (``epochauth_upstream_grants``). Fork-safe: a queue belongs to the process that
filled it; a forked child (gunicorn's pre-fork workers) starts empty, with a thread of its own on its
first job.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable

from django.db import connections

logger = logging.getLogger(__name__)


class Worker:
    """A queue of jobs run in order by one thread, started on the first :meth:`submit`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._reset()
        # The parent's jobs are the parent's; its thread does not exist in the child.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._jobs: collections.deque[Callable[[], object]] = collections.deque()
        self._unfinished = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, job: Callable[[], object]) -> None:
        with self._changed:
            self._jobs.append(job)
            self._unfinished += 1
            self._changed.notify_all()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()

    def drain(self, timeout: float) -> bool:
        """Wait until every job submitted so far is done; False when ``timeout`` (seconds) passed
        first. For tests and for a server's orderly shutdown."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._unfinished:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._jobs:
                    self._changed.wait()
                job = self._jobs.popleft()
            try:
                job()
            except Exception:  # the job's record stays in the database for the next try
                logger.exception("epochauth: background job of %s failed", self.name)
            finally:
                # This thread's own connections: a thread that idles must not hold one open.
                connections.close_all()
                with self._changed:
                    self._unfinished -= 1
                    self._changed.notify_all()
