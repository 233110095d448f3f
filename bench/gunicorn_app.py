"""The bench project as gunicorn serves it (``bench.gunicorn_app:application``), counting what each
timed request costs inside the worker.

gunicorn imports this module in each worker (or once in its master with ``--preload``), so Django is
configured here from ``EPOCHAUTH_BENCH_SETUP`` (the JSON of a :class:`bench.settings.Setup`). Counting
starts at import and never stops: a worker serves only the bench. Requests that carry
``X-Bench-Timed: <variant>`` (wrk's timed runs, not the warm-up) add their SQL queries, Redis
commands and memo hits to that variant's totals, which ``bench/gunicorn_conf.py`` writes to a file
when the worker exits.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .settings import Setup, configure

configure(Setup(**json.loads(os.environ["EPOCHAUTH_BENCH_SETUP"])))

from django.core.handlers.wsgi import WSGIHandler  # noqa: E402  (needs the settings)

from .counters import Counters  # noqa: E402

handler = WSGIHandler()
counters = Counters()
#: Held for the process's life: a context manager that is garbage-collected stops counting.
COUNTING = ExitStack()
COUNTING.enter_context(counters.counting())
#: variant -> [timed requests, answers other than 200, SQL queries, Redis commands, memo hits]
COUNTS: dict[str, list[int]] = {}


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if "HTTP_X_BENCH_TIMED" not in environ:
        return handler(environ, start_response)
    before = counters.snapshot()
    result = handler(environ, start_response)
    after = counters.snapshot()
    counts = COUNTS.setdefault(environ["HTTP_X_BENCH_TIMED"], [0, 0, 0, 0, 0])
    counts[0] += 1
    counts[1] += result.status_code != 200
    for i, (a, b) in enumerate(zip(after, before, strict=True)):
        counts[2 + i] += a - b
    return result


def dump() -> None:
    """This worker's totals, one JSON file per process in ``EPOCHAUTH_BENCH_COUNTS``."""
    directory = Path(os.environ["EPOCHAUTH_BENCH_COUNTS"])
    (directory / f"{os.getpid()}.json").write_text(json.dumps(COUNTS))
