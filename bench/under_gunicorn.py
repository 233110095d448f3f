"""The bench project under a real gunicorn (sync workers, with and without ``--preload``), loaded by wrk.

The in-process scenarios time one request at a time through a ``WSGIHandler``; this one adds what a
deployment adds: an HTTP parser, a socket per request (sync workers close the connection), several
worker processes on one database file (SQLite in WAL) or PostgreSQL, each with its own epochauth state
(verified-token memo, revocation state) that it builds after the fork. Two servers run side by side,
one per mode; in each round every (mode, variant) pair gets a wrk run of a few seconds, in a rotating
order, and each variant's time per request is divided by the no-auth one of the same mode and round.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from django.db import connection

from epochauth.conf import epochauth_settings
from epochauth.tokens import mint_access_token

from . import fixtures, scenarios
from .measure import BASELINE, Sizes
from .settings import Setup
from .wsgi import HOST, bearer

ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2
#: Twice the workers: a worker always has a connection waiting when it finishes one.
CONNECTIONS = 2 * WORKERS
MODES = {"gunicorn": [], "gunicorn --preload": ["--preload"]}
SCRIPT = Path(__file__).resolve().parent / "wrk.lua"


@dataclass(frozen=True)
class Load:
    """One variant: a path and its Authorization header, or a file of them (one per request)."""

    name: str
    path: str
    authorization: str | None = None
    tokens: Path | None = None


@dataclass(frozen=True)
class Served:
    mode: str
    port: int
    counts: Path


def measure(sizes: Sizes, setup: Setup, directory: Path) -> dict[str, Any]:
    """Tokens in the database first, then the two servers, then the interleaved wrk runs."""
    user = scenarios.setup_user()
    tokens = scenarios.peer_tokens(user, scenarios.dot_application(user))
    cold = cold_tokens(user, directory / "tokens.txt")
    loads = [
        Load(BASELINE, scenarios.NONE),
        Load(
            "epochauth HS256, memo hit (the same token again)",
            scenarios.EPOCHAUTH,
            bearer(mint_access_token(user).token),
        ),
        Load(
            f"epochauth HS256, cold: the next of {cold} tokens each request",
            scenarios.EPOCHAUTH,
            tokens=directory / "tokens.txt",
        ),
        *(Load(name, path, tokens[path]) for name, path in scenarios.PEERS),
    ]
    connection.close()  # the workers open their own
    offset = 0  # the next cold token: a token comes back only after all the others
    timings: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with ExitStack() as stack:
        servers = [stack.enter_context(serving(setup, directory, mode)) for mode in MODES]
        for served in servers:
            for load in loads:
                offset = warm_up(served, load, sizes.warmup, offset)
        pairs = [(served, load) for served in servers for load in loads]
        for r in range(sizes.load_rounds):
            for served, load in pairs[r % len(pairs) :] + pairs[: r % len(pairs)]:
                run = wrk(served.port, load, sizes.load_seconds, offset)
                offset += run["requests"] + CONNECTIONS if load.tokens else 0
                timings.setdefault((served.mode, load.name), []).append(run)
    counts = {served.mode: worker_counts(served.counts) for served in servers}
    rows = [
        row(mode, load, timings, counts[mode].get(load.name), setup.redis_url is not None)
        for mode in MODES
        for load in loads
    ]
    return {
        "load_rows": rows,
        "facts": {
            "workers": WORKERS,
            "connections": CONNECTIONS,
            "seconds": sizes.load_seconds,
            "rounds": sizes.load_rounds,
            "database": "PostgreSQL" if setup.postgres_url else "one SQLite file (WAL)",
            "cache": "RedisCache" if setup.redis_url else "LocMemCache",
            "cold_tokens": cold,
            "versions": f"gunicorn {version('gunicorn')}, {wrk_version()}",
        },
    }


def cold_tokens(user: Any, path: Path) -> int:
    """A file of new tokens, one Authorization header a line. Each worker sees about 1/WORKERS of
    them, so there are twice ``WORKERS`` × the memo's size: a worker's share is more than it holds."""
    count = 2 * WORKERS * (epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE + 1)
    factory = fixtures.TokenFactory(user)
    tokens = [factory.token(user.pk, user.get_username()) for _ in range(count)]
    fixtures.verify(tokens)
    path.write_text("".join(f"{bearer(t)}\n" for t in tokens))
    return len(tokens)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serving(setup: Setup, directory: Path, mode: str) -> Iterator[Served]:
    """gunicorn in ``mode`` on a free port until the block ends (then a graceful stop, which makes
    every worker write its counts)."""
    port = free_port()
    counts = directory / f"counts-{port}"
    counts.mkdir()
    env = {
        **os.environ,
        "EPOCHAUTH_BENCH_SETUP": json.dumps(asdict(setup)),
        "EPOCHAUTH_BENCH_COUNTS": str(counts),
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:bench.gunicorn_conf",
        "--workers",
        str(WORKERS),
        "--worker-class",
        "sync",
        "--bind",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        *MODES[mode],
        "bench.gunicorn_app:application",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while get(port, scenarios.NONE, None) != 200:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gunicorn ({mode}) did not start (exit {process.poll()})")
            time.sleep(0.2)
        yield Served(mode, port, counts)
    finally:
        process.terminate()
        process.wait(timeout=60)


def get(port: int, path: str, authorization: str | None) -> int | None:
    """One untimed GET (no X-Bench-Timed: the workers do not count it): its status, None if refused."""
    headers = {"Host": HOST, **({"Authorization": authorization} if authorization else {})}
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        client.request("GET", path, headers=headers)
        return client.getresponse().status
    except ConnectionError:
        return None
    finally:
        client.close()


def warm_up(served: Served, load: Load, count: int, offset: int) -> int:
    """``count`` requests of ``load``, each answered 200 (or the bench stops); the next cold offset."""
    lines = load.tokens.read_text().splitlines() if load.tokens else []
    for i in range(count):
        authorization = lines[(offset + i) % len(lines)] if lines else load.authorization
        status = get(served.port, load.path, authorization)
        if status != 200:
            raise SystemExit(f"{served.mode}: {load.name}: HTTP {status}, expected 200")
    return offset + count if lines else offset


def wrk(port: int, load: Load, seconds: int, offset: int) -> dict[str, Any]:
    """One wrk run of ``seconds``: its requests, duration and latency percentiles (``bench/wrk.lua``)."""
    headers = [f"Host: {HOST}", f"X-Bench-Timed: {load.name}"]
    if load.authorization:
        headers.append(f"Authorization: {load.authorization}")
    env = {**os.environ, "BENCH_OFFSET": str(offset)}
    if load.tokens:
        env["BENCH_TOKENS"] = str(load.tokens)
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(SCRIPT)]
    for header in headers:
        command += ["-H", header]
    done = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{load.path}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=seconds + 60,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK-RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"wrk failed (exit {done.returncode}): {done.stderr[-1000:]}")
    run: dict[str, Any] = json.loads(lines[-1].split(" ", 1)[1])
    if run["status_errors"] or not run["requests"]:
        raise SystemExit(f"{load.name}: {run['status_errors']} answers other than 2xx/3xx")
    return run


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    return " ".join((done.stdout or done.stderr).split()[:2])


def worker_counts(directory: Path) -> dict[str, list[int]]:
    """The totals of every worker of one server, by variant (the X-Bench-Timed header)."""
    totals: dict[str, list[int]] = {}
    for file in directory.glob("*.json"):
        for name, counts in json.loads(file.read_text()).items():
            mine = totals.setdefault(name, [0] * len(counts))
            totals[name] = [a + b for a, b in zip(mine, counts, strict=True)]
    return totals


def row(
    mode: str,
    load: Load,
    timings: dict[tuple[str, str], list[dict[str, Any]]],
    counts: list[int] | None,
    redis: bool,
) -> dict[str, Any]:
    """Requests/s and latency (medians over rounds), the paired ratio of time per request to no auth
    of the same mode and round, and what the workers counted per timed request."""
    runs, base = timings[(mode, load.name)], timings[(mode, BASELINE)]
    rate = [r["requests"] * 1e6 / r["duration_us"] for r in runs]
    ratios = [
        (b["requests"] / b["duration_us"]) / (r["requests"] / r["duration_us"])
        for r, b in zip(runs, base, strict=True)
    ]
    if counts is None or not counts[0]:
        raise SystemExit(f"{mode}: {load.name}: the workers counted no timed request")
    served, errors, queries, commands, memo_hits = counts
    if errors:
        raise SystemExit(f"{mode}: {load.name}: {errors} answers other than 200")
    return {
        "server": mode,
        "name": load.name,
        "rps": statistics.median(rate),
        "rps_min": min(rate),
        "rps_max": max(rate),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "p50_ms": statistics.median(r["p50_us"] for r in runs) / 1000,
        "p99_ms": statistics.median(r["p99_us"] for r in runs) / 1000,
        "requests": served,
        "socket_errors": sum(r["socket_errors"] for r in runs),
        "queries": queries / served,
        "redis": commands / served if redis else None,
        "memo_hits": memo_hits / served,
    }
