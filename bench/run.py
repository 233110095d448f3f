"""The whole Django request path under bearer authentication: epochauth against its peers, at scale.

Every timed request goes through Django's WSGIHandler with a hand-built environ: middleware, URL
routing, a DRF view, JSONRenderer, the body read and the response closed. Each scenario runs in its
own process (its own settings, an honest RSS); see bench/README.md for what each row measures.

Run: ``.venv/bin/python bench/run.py [--quick] [--users 100000] [--denylist 1000000] [--only NAME]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import report  # noqa: E402  (needs ROOT on sys.path)
from bench.child import RESULT_MARK  # noqa: E402
from bench.measure import Sizes  # noqa: E402

SCENARIOS = [
    "requests",
    "users-locmem",
    "users-redis",
    "denylist",
    "denylist-postgresql",
    "epochs",
    "endpoints",
    "endpoints-postgresql",
    "outage",
    "revocation",
    "revocation-polling",
    "revocation-sqlite",
    "revocation-postgresql",
    "revocation-ssf",
    "gunicorn",
]
REDIS_SCENARIOS = {"users-redis", "outage", "revocation", "revocation-polling"}
DEFAULT_REDIS = "redis://127.0.0.1:6379/15"

PACKAGES = (
    "Django djangorestframework PyJWT cryptography djangorestframework-simplejwt django-oauth-toolkit "
    "django-rest-knox redis"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    p.add_argument(
        "--requests", type=int, default=200, help="requests per variant per round (default 200)"
    )
    p.add_argument(
        "--users",
        type=int,
        default=100_000,
        help="distinct users, each with a token (default 100000)",
    )
    p.add_argument(
        "--denylist", type=int, default=1_000_000, help="live denylist rows (default 1000000)"
    )
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="cross-process revocations of each kind (default 20)",
    )
    p.add_argument(
        "--endpoint-rounds", type=int, default=10, help="rounds of the token-endpoint bench"
    )
    p.add_argument(
        "--endpoint-requests", type=int, default=50, help="logins/refreshes per variant per round"
    )
    p.add_argument(
        "--load-rounds", type=int, default=5, help="rounds of wrk runs under gunicorn (default 5)"
    )
    p.add_argument(
        "--load-seconds", type=int, default=3, help="seconds of each wrk run (default 3)"
    )
    p.add_argument(
        "--quick", action="store_true", help="a smoke run with tiny sizes (seconds, not minutes)"
    )
    p.add_argument(
        "--only", action="append", choices=SCENARIOS, help="run only this scenario (repeatable)"
    )
    p.add_argument(
        "--no-idp", action="store_true", help="skip the external-issuer rows (test IdP)"
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help=f"Redis database for the shared cache (env REDIS_URL, else {DEFAULT_REDIS}; keys get a "
        "per-run prefix, deleted after). The gunicorn scenario uses Redis only when one is given",
    )
    p.add_argument(
        "--postgres-url",
        default=os.environ.get("DATABASE_URL", "")
        if os.environ.get("DATABASE_URL", "").startswith("postgres")
        else "",
        help="PostgreSQL server of the *-postgresql scenarios and of gunicorn, "
        "postgres://user@host:port/db "
        "(default $DATABASE_URL if it is one; the bench creates a scratch database there and drops it)",
    )
    p.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "latest.md", help="report file"
    )
    p.add_argument(
        "--scenario", help=argparse.SUPPRESS
    )  # internal: run one scenario in this process
    p.add_argument("--context", help=argparse.SUPPRESS)
    return p


def sizes(args: argparse.Namespace) -> Sizes:
    if args.quick:
        return Sizes(
            rounds=3,
            requests=10,
            # more than VERIFIED_TOKEN_CACHE_SIZE: the distinct-users rows must miss the memo
            users=10_100,
            denylist=2000,
            endpoint_rounds=2,
            endpoint_requests=5,
            trials=2,
            load_rounds=1,
            load_seconds=1,
            outbox=50,
        )
    return Sizes(
        args.rounds,
        args.requests,
        args.users,
        args.denylist,
        args.endpoint_rounds,
        args.endpoint_requests,
        args.trials,
        args.load_rounds,
        args.load_seconds,
    )


def redis_reachable(url: str) -> str:
    """Empty when Redis answers, else why not."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except redis.RedisError as exc:
        return f"Redis at {url} is not reachable: {exc}"
    return ""


def delete_keys(url: str, prefix: str) -> None:
    import redis

    with redis.Redis.from_url(url) as client:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)


@contextmanager
def scratch_database(url: str, name: str) -> Iterator[str]:
    """A new empty database on the server of ``url``, dropped afterwards: its URL."""
    import psycopg

    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run_scenario(name: str, context: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario in a child process; its result is the line after RESULT_MARK on stdout."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--scenario",
        name,
        "--context",
        json.dumps(context),
    ]
    print(f"bench: {name} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if done.returncode or not lines:
        raise SystemExit(
            f"bench: scenario {name} failed (exit {done.returncode})\n{done.stdout[-2000:]}"
        )
    outcome = json.loads(lines[-1][len(RESULT_MARK) :])
    outcome["seconds"] = time.perf_counter() - started
    return outcome


def wrk_missing() -> str:
    """Empty when wrk is on PATH, else why the gunicorn scenario cannot run."""
    return "" if shutil.which("wrk") else "no wrk on PATH (Debian: apt-get install wrk)"


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    if args.scenario:
        from bench.child import run

        run(args.scenario, json.loads(args.context))
        return
    chosen = args.only or SCENARIOS
    prefix = f"epochauth-bench-{uuid.uuid4().hex[:8]}"
    redis_scenarios = REDIS_SCENARIOS | ({"gunicorn"} if args.redis_url else set())
    context = {
        "sizes": asdict(sizes(args)),
        "redis_url": args.redis_url or DEFAULT_REDIS,
        "key_prefix": prefix,
        "idp": not args.no_idp,
        "gunicorn_redis": bool(args.redis_url),
    }
    uses_redis = bool(redis_scenarios & set(chosen))
    redis_missing = redis_reachable(context["redis_url"]) if uses_redis else ""
    results: dict[str, Any] = {}
    load_before = os.getloadavg()
    try:
        for name in chosen:
            if name in redis_scenarios and redis_missing:
                results[name] = {"skipped": redis_missing}
            elif name.endswith("-postgresql") and not args.postgres_url:
                results[name] = {"skipped": "no PostgreSQL: give --postgres-url (or DATABASE_URL)"}
            elif name == "gunicorn" and wrk_missing():
                results[name] = {"skipped": wrk_missing()}
            elif name.endswith("-postgresql") or (name == "gunicorn" and args.postgres_url):
                with scratch_database(args.postgres_url, prefix.replace("-", "_")) as url:
                    results[name] = run_scenario(name, {**context, "postgres_url": url})
            else:
                results[name] = run_scenario(name, context)
    finally:
        if uses_redis and not redis_missing:
            delete_keys(context["redis_url"], prefix)
    header = (
        f"{date.today()} · Python {platform.python_version()} · {platform.machine()}, "
        f"{os.cpu_count()} CPUs · "
        + ", ".join(f"{p} {version(p)}" for p in PACKAGES.split())
        + f" · load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    text = report.render(header, context["sizes"], results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nwritten to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
