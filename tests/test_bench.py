"""The benchmark runs end to end (``bench/run.py --quick``), so it cannot rot: every scenario produces its
rows and facts. Nothing here looks at a timing; only at what the bench counts and reports."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory, session_redis_url: str) -> dict:
    """One quick run for the whole module (tiny sizes, no test IdP), on the tests' Redis."""
    out = tmp_path_factory.mktemp("bench") / "latest.md"
    command = [
        sys.executable,
        "bench/run.py",
        "--quick",
        "--no-idp",
        "--redis-url",
        session_redis_url,
        "--out",
        str(out),
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-3000:]
    return {"report": out.read_text(), "results": json.loads(out.with_suffix(".json").read_text())}


def rows(results: dict, scenario: str) -> dict[str, dict]:
    return {row["name"]: row for row in results[scenario]["rows"]}


def test_every_scenario_reports(bench_run: dict) -> None:
    results = bench_run["results"]
    assert set(results) == {
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
    }
    for name, outcome in results.items():
        # PostgreSQL beside SQLite when the suite runs on it (DATABASE_URL, CI's second leg)
        if name.endswith("-postgresql") and not POSTGRES:
            assert "--postgres-url" in outcome["skipped"]
            continue
        assert "skipped" not in outcome, name
    assert bench_run["report"].count("\n### ") == len(results) + 1  # and the goals
    for row in (row for outcome in results.values() for row in outcome.get("rows", [])):
        assert row["median_us"] > 0 and row["single_max_us"] >= row["single_median_us"]
        assert row["floor"] or row["ratio_min"] <= row["ratio"] <= row["ratio_max"]


def test_peers_and_floors_are_in_the_same_run(bench_run: dict) -> None:
    names = rows(bench_run["results"], "requests")
    for peer in (
        "simplejwt JWTAuthentication",
        "simplejwt JWTStatelessUserAuthentication",
        "knox TokenAuthentication",
    ):
        assert peer in names
    assert any(name.startswith("django-oauth-toolkit") for name in names)
    floors = {n for n in names if n.startswith("floor:")}
    assert {n for n in floors if n.endswith("(function call)")} == {
        "floor: jwt.decode HS256 (function call)",
        "floor: jwt.decode RS256 (function call)",
    }
    # Raw PyJWT in the request path, the cold token's floor, and DRF's plumbing, a memo hit's: requests,
    # which the bare calls are not.
    plumbing, pyjwt = sorted(floors - {n for n in floors if n.endswith("(function call)")})
    assert pyjwt.startswith("floor: jwt.decode HS256 in the request path")
    assert plumbing.startswith("floor: DRF plumbing")
    for in_path in (pyjwt, plumbing):
        assert names[in_path]["ratio"] > 0 and names[in_path]["queries"] == 0
    # The cold path as a function call, a multiple of the minimal verifier's time.
    (call,) = (n for n in names if n.startswith("epochauth HS256, cold, as a function call"))
    assert names[call]["limit_multiple"] > 0 and names[call]["added_us"] is None
    assert names["simplejwt JWTAuthentication"]["queries"] == 1  # the user row: counting works
    assert names["epochauth HS256, memo hit (the same token again)"]["queries"] == 0


def test_redis_commands_are_counted(bench_run: dict) -> None:
    local, shared = (
        rows(bench_run["results"], "users-locmem"),
        rows(bench_run["results"], "users-redis"),
    )
    assert all(row["redis"] is None for row in local.values())
    assert all(row["redis"] is not None for row in shared.values())
    assert shared["no auth"]["redis"] == 0


def test_denylist_and_revocation_facts(bench_run: dict) -> None:
    results = bench_run["results"]
    denylist = results["denylist"]["facts"]
    assert denylist["denylist"] == 2000 and len(denylist["reload_request_ms"]) == 3
    # 2000 rows: a thread reads them while requests come; each of those makes one query at most
    assert denylist["loading_requests"] >= 0 and denylist["load_s"] >= 0
    assert denylist["loading_max_queries"] <= 1
    assert denylist["rss_loaded_mb"] >= denylist["rss_before_mb"] > 0
    assert results["epochs"]["facts"]["epochs"] == 10_100
    assert "a new process with that denylist: all of it held" in bench_run["report"]
    # Every channel that tells another process, each with its own keys in the shared cache.
    channels = ["revocation", "revocation-polling", "revocation-sqlite"]
    for name in [*channels, "revocation-postgresql"] if POSTGRES else channels:
        revocation = results[name]
        assert revocation["timeouts"] == {"logout": 0, "logout-all": 0}, name
        assert all(s["trials"] == 2 for s in revocation["summary"].values()), name
    # Another deployment, told by Shared Signals: pushed, and polled.
    ssf = results["revocation-ssf"]
    assert ssf["timeouts"] == {"push": 0, "poll": 0}
    assert all(s["trials"] == 2 for s in ssf["summary"].values())
    assert "| SSF poll (B's `epochauth_ssf_poll --loop`, every 5 s) | 2 |" in bench_run["report"]
    outbox = results["endpoints"]["facts"]["outbox"]
    assert outbox["delivered"] == outbox["received"] == outbox["deliveries"] == 50
    status = "epochauth HS256 as STATUS_LIST issues it (a status claim in the token), memo hit"
    assert rows(results, "requests")[status]["queries"] == 0
    for scenario in ("endpoints", "endpoints-postgresql") if POSTGRES else ("endpoints",):
        endpoints = rows(results, scenario)
        assert all(row["queries"] >= 1 for name, row in endpoints.items() if name != "no auth")


def test_refresh_and_renew_are_measured_with_the_database_down(bench_run: dict) -> None:
    outage = rows(bench_run["results"], "outage")
    for kind in ("refresh (rotation)", "renew"):
        up, down = outage[f"{kind}, database up"], outage[f"{kind}, database down"]
        assert up["queries"] >= 1 and up["redis"] is not None
        # Down: every statement tried is refused; the mirror and the journal are in Redis.
        assert down["redis"] > up["redis"]
    assert set(bench_run["results"]["outage"]["facts"]["outage_vs_normal"]) == {"refresh", "renew"}


def test_gunicorn_workers_count_every_variant(bench_run: dict) -> None:
    """Both servers (with and without --preload) answered every variant, and what the workers counted
    came back: each peer's own queries, none for epochauth, memo hits only on the memo-hit row."""
    outcome = bench_run["results"]["gunicorn"]
    facts = outcome["facts"]
    assert facts["database"] == ("PostgreSQL" if POSTGRES else "one SQLite file (WAL)")
    assert facts["cache"] == "RedisCache"  # the run was given --redis-url
    served = {(row["server"], row["name"]): row for row in outcome["load_rows"]}
    assert {server for server, _ in served} == {"gunicorn", "gunicorn --preload"}
    for (_, name), row in served.items():
        assert row["requests"] > 0 and row["rps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["redis"] is not None
        queries = {"simplejwt JWTAuthentication": 1, "knox TokenAuthentication": 2, "no auth": 0}
        if name in queries:
            assert row["queries"] == queries[name], name
        if name.startswith("epochauth"):
            # none per request; a worker's periodic read (once a minute) may fall in a timed run
            assert row["queries"] < 0.01, name
        if name.startswith("epochauth HS256, cold"):
            assert row["memo_hits"] == 0 and facts["cold_tokens"] > 20_000
        elif "memo hit" in name:
            assert (
                row["memo_hits"] > 0.9
            )  # a worker's first sight of the token may fall in a timed run
        else:
            assert row["memo_hits"] == 0, name
    assert "| gunicorn --preload | knox TokenAuthentication |" in bench_run["report"]


def test_distinct_rows_never_hit_the_memo(bench_run: dict) -> None:
    """Every user comes back only after all the others, more of them than the memo holds, on every
    cache: a "distinct" or "cold" row makes no memo hit, a memo-hit row nothing else."""
    for scenario in ("users-locmem", "users-redis", "requests", "denylist"):
        for name, row in rows(bench_run["results"], scenario).items():
            if "distinct" in name and name.startswith("epochauth"):
                assert row["memo_hits"] == 0, (scenario, name)
            if "memo hit" in name:
                assert row["memo_hits"] == 1, (scenario, name)
    for scenario in ("users-locmem", "users-redis"):
        facts = bench_run["results"][scenario]["facts"]
        assert facts["seen"] == facts["users"] - 20  # every user but the verified sample
        assert facts["first_pass"]["calls"] == facts["seen"]
    assert "first pass (10080 first sights" in bench_run["report"]


def test_every_epochauth_row_against_its_physical_limit(bench_run: dict) -> None:
    for scenario in ("requests", "users-locmem", "users-redis", "denylist", "epochs"):
        names = rows(bench_run["results"], scenario)
        limits = {n for n in names if n.startswith("physical limit:")}
        # A signature verification for each DPoP row: three in requests, ES256's on Redis.
        assert len(limits) == {"requests": 5, "users-redis": 3}.get(scenario, 2), scenario
        assert all(names[n]["floor"] for n in limits), scenario
        for name, row in names.items():
            if name.startswith("epochauth"):
                # A multiple, whatever its value: a quick run on a busy machine may time a row
                # below the baseline (never a timed assertion).
                multiple = row["limit_multiple"]
                assert row["limit"] in limits and isinstance(multiple, float), (scenario, name)
                assert math.isfinite(multiple), (scenario, name)


def test_dpop_rows_beside_the_bearer_memo_hit(bench_run: dict) -> None:
    """Each DPoP row is a memo-hit token with a new proof each request (all of them accepted, or the
    warm-up stops the bench), against its algorithm's bare signature verification; the report states
    what each adds."""
    names = rows(bench_run["results"], "requests")
    for algorithm, limit in (
        ("ES256", "ECDSA P-256"),
        ("Ed25519", "Ed25519"),
        ("RS256", "RSA-2048"),
    ):
        row = names[f"epochauth DPoP {algorithm}: a memo-hit token and a new proof each request"]
        assert row["memo_hits"] == 1 and row["queries"] == 0, algorithm
        assert (
            row["limit"].startswith(f"physical limit: {limit} ") and names[row["limit"]]["floor"]
        )
        assert f"- MEASURED epochauth DPoP {algorithm} (LocMemCache): adds " in bench_run["report"]
    # The bearer row's goal beside them.
    assert " epochauth HS256, memo hit: " in bench_run["report"]
    # On Redis, the proof's jti is the request's one command (SET NX), and the token a memo hit.
    redis = rows(bench_run["results"], "users-redis")
    row = redis["epochauth DPoP ES256: a memo-hit token and a new proof each request"]
    assert row["memo_hits"] == 1 and row["redis"] == 1 and row["queries"] == 0
    assert "- MEASURED epochauth DPoP ES256 (Redis): adds " in bench_run["report"]


@pytest.mark.django_db
def test_a_distinct_row_with_a_memo_hit_stops_the_bench() -> None:
    from django.contrib.auth import get_user_model

    from bench.measure import BASELINE, Variant, measure
    from epochauth.authentication import authenticate_token
    from epochauth.tokens import mint_access_token

    token = mint_access_token(get_user_model().objects.create_user("bench-memo")).token
    variants = [
        Variant(BASELINE, lambda: None),
        Variant("distinct, but the same token", lambda: authenticate_token(token), distinct=True),
    ]
    with pytest.raises(SystemExit, match="hit the verified-token memo"):
        measure(variants, rounds=1, n=3, redis=False, warmup=1)
