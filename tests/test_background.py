"""epochauth.background: jobs after the request, one thread per process, drained on demand."""

from __future__ import annotations

import os
import threading

from epochauth.background import Worker


def test_jobs_run_in_order_off_the_caller_and_a_failing_one_does_not_stop_the_rest():
    worker, done, gate = Worker("test-worker"), [], threading.Event()
    worker.submit(lambda: gate.wait(5) and done.append(threading.current_thread().name))
    worker.submit(lambda: 1 / 0)
    worker.submit(lambda: done.append("last"))
    assert worker.drain(0.2) is False  # the first job still waits
    gate.set()
    assert worker.drain(5) is True
    assert done == ["test-worker", "last"]


def test_a_forked_child_starts_empty():
    worker, gate = Worker("test-worker"), threading.Event()
    worker.submit(lambda: gate.wait(5))
    pid = os.fork()
    if pid == 0:  # the child: the parent's job is not its own, and its own jobs run
        ran: list[int] = []
        worker.submit(lambda: ran.append(1))
        os._exit(0 if worker.drain(5) and ran == [1] else 1)
    gate.set()
    assert os.waitpid(pid, 0)[1] == 0
    assert worker.drain(5)
