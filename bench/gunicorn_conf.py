"""gunicorn's configuration in the gunicorn scenario (``-c python:bench.gunicorn_conf``): each worker
writes what it counted (``bench/gunicorn_app.py``) when it exits."""

from __future__ import annotations

import sys
from typing import Any


def worker_exit(server: Any, worker: Any) -> None:
    app = sys.modules.get("bench.gunicorn_app")
    if app is not None:  # a worker that never loaded the app has nothing to say
        app.dump()
