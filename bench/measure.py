"""Interleaved timing and its statistics: paired ratios against the no-auth request of the same round.

Variants run round-robin with a rotating start, ``n`` requests in a row each, so drift in CPU
frequency or load from other processes hits them all alike. Within a round every variant is divided
by the no-auth request of that same round (a *paired* ratio), and the table reports the median of
those ratios with their spread; "added µs" is the median over rounds of (variant - no auth).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from .counters import Counters

BASELINE = "no auth"


@dataclass(frozen=True)
class Sizes:
    rounds: int
    requests: int  # per variant per round
    users: int
    denylist: int
    endpoint_rounds: int
    endpoint_requests: int
    trials: int  # per kind of revocation
    load_rounds: int = 5  # the gunicorn scenario's rounds of wrk runs
    load_seconds: int = 3  # each wrk run's duration
    outbox: int = 1000  # back-channel logout deliveries drained by the endpoints scenario

    @property
    def warmup(self) -> int:
        return max(5, self.requests // 4)

    @property
    def timed(self) -> int:
        """Calls of one variant, warm-up included: the number of distinct tokens a cold row needs."""
        return self.warmup + self.rounds * self.requests


@dataclass(frozen=True)
class Variant:
    name: str
    call: Callable[[], Any]
    #: A floor is a bare function call (no request): it has no ratio to a request.
    floor: bool = False
    expect: int = 200
    #: Every request a token this process has not verified since the memo dropped it (distinct users,
    #: new tokens): :func:`measure` stops the bench if one of them hit the verified-token memo.
    distinct: bool = False
    #: The physical-limit row (a floor) that this row's *added µs* is also given as a multiple of.
    limit: str | None = None
    #: Operations per call: a floor too cheap to time one by one (a dict lookup) runs ``batch`` of
    #: them per call, and its µs are per operation.
    batch: int = 1


@dataclass(frozen=True)
class Row:
    name: str
    floor: bool
    median_us: float
    rounds_p25: float
    rounds_p75: float
    ratio: float | None  # median paired ratio to no auth
    ratio_p25: float | None
    ratio_p75: float | None
    ratio_min: float | None
    ratio_max: float | None
    added_us: float | None
    single_median_us: float
    single_p99_us: float
    single_max_us: float
    queries: float  # per request
    redis: float | None  # commands per request; None without Redis
    memo_hits: float  # per request: tokens validated without a signature check
    limit: str | None  # the physical-limit row of this row
    limit_multiple: float | None  # added µs ÷ that row's µs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def check(variant: Variant) -> None:
    """Each request must answer what it should, or the bench would time error pages."""
    result = variant.call()
    status = getattr(result, "status", 200)
    if status != variant.expect:
        body = getattr(result, "body", b"")[:300]
        raise SystemExit(f"{variant.name}: HTTP {status}, expected {variant.expect}: {body!r}")


Timings = dict[str, list[float]]


def measure(
    variants: list[Variant], rounds: int, n: int, redis: bool, warmup: int
) -> tuple[list[Row], Timings]:
    """Time ``rounds`` x ``n`` calls of every variant, interleaved (after ``warmup`` calls each); the
    rows, and every variant's µs per request of each round."""
    for variant in variants:
        for _ in range(warmup):
            check(variant)
    counters = Counters()
    per_round: Timings = {v.name: [] for v in variants}
    single: Timings = {v.name: [] for v in variants}
    costs = {v.name: [0, 0, 0] for v in variants}
    clock = time.perf_counter_ns
    gc.collect()
    gc.freeze()
    with counters.counting():
        for r in range(rounds):
            for variant in variants[r % len(variants) :] + variants[: r % len(variants)]:
                call, times = variant.call, []
                before = counters.snapshot()
                for _ in range(n):
                    start = clock()
                    call()
                    times.append((clock() - start) / 1000 / variant.batch)
                after = counters.snapshot()
                for i, cost in enumerate(costs[variant.name]):
                    costs[variant.name][i] = cost + after[i] - before[i]
                per_round[variant.name].append(sum(times) / n)
                single[variant.name] += times
    gc.unfreeze()
    total = rounds * n
    rows = [
        summarize(
            v,
            per_round,
            single[v.name],
            costs[v.name][0] / total,
            costs[v.name][1] / total if redis else None,
            costs[v.name][2] / total,
        )
        for v in variants
    ]
    for v in variants:
        if v.distinct and costs[v.name][2]:
            raise SystemExit(
                f"bench: {v.name!r} hit the verified-token memo {costs[v.name][2]} times in "
                f"{total} requests: it does not measure distinct tokens"
            )
    return with_limits(rows), per_round


def paired(per_round: Timings, name: str, other: str) -> dict[str, float]:
    """Per round ``name`` ÷ ``other``: median, p25, p75, min, max."""
    ratios = [a / b for a, b in zip(per_round[name], per_round[other], strict=True)]
    p25, p75 = quartiles(ratios)
    return {
        "median": statistics.median(ratios),
        "p25": p25,
        "p75": p75,
        "min": min(ratios),
        "max": max(ratios),
    }


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    p25, _, p75 = statistics.quantiles(values, n=4, method="inclusive")
    return p25, p75


def summarize(
    variant: Variant,
    per_round: Timings,
    single: list[float],
    queries: float,
    redis: float | None,
    memo_hits: float,
) -> Row:
    mine, base = per_round[variant.name], per_round[BASELINE]
    p25, p75 = quartiles(mine)
    ordered = sorted(single)
    ratio: dict[str, float | None] = dict.fromkeys(
        ("ratio", "ratio_p25", "ratio_p75", "ratio_min", "ratio_max")
    )
    added = None
    if not variant.floor:
        ratio = {
            f"ratio_{k}" if k != "median" else "ratio": v
            for k, v in paired(per_round, variant.name, BASELINE).items()
        }
        added = statistics.median(a - b for a, b in zip(mine, base, strict=True))
    return Row(
        name=variant.name,
        floor=variant.floor,
        median_us=statistics.median(mine),
        rounds_p25=p25,
        rounds_p75=p75,
        added_us=added,
        single_median_us=statistics.median(ordered),
        single_p99_us=ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
        single_max_us=ordered[-1],
        queries=queries,
        redis=redis,
        memo_hits=memo_hits,
        limit=variant.limit,
        limit_multiple=None,
        **ratio,
    )


def with_limits(rows: list[Row]) -> list[Row]:
    """Each row that names a physical-limit row, its *added µs* (a function-call row: its µs) also as
    a multiple of that row's µs."""
    by_name = {row.name: row for row in rows}

    def multiple(row: Row) -> float | None:
        # A function-call row is a multiple of its limit as a whole: it has no request around it.
        spent = row.median_us if row.floor else row.added_us
        if row.limit is None or spent is None:
            return None
        return spent / by_name[row.limit].median_us

    return [replace(row, limit_multiple=multiple(row)) for row in rows]


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :class:`Row` dicts."""
    lines = [
        "| variant | median µs/request | rounds p25–p75 | × no auth, paired: median (p25–p75; min–max) "
        "| added µs | × physical limit | single request µs: median / p99 / max | SQL queries/request "
        "| Redis commands/request | memo hits/request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["floor"]:
            ratio, added = "– (a function call)", "–"
        else:
            ratio = (
                f"{row['ratio']:.2f} ({row['ratio_p25']:.2f}–{row['ratio_p75']:.2f}; "
                f"{row['ratio_min']:.2f}–{row['ratio_max']:.2f})"
            )
            added = "–" if row["name"] == BASELINE else f"{row['added_us']:+.1f}"
        redis = "–" if row["redis"] is None else f"{row['redis']:.2f}"
        multiple = "–" if row["limit_multiple"] is None else f"{row['limit_multiple']:.1f}×"
        # A dict lookup takes hundredths of a µs: its row keeps three decimals.
        digits = 3 if row["median_us"] < 1 else 0
        median = f"{row['median_us']:.{max(1, digits)}f}"
        lines.append(
            f"| {row['name']} | {median} | {row['rounds_p25']:.{digits}f}–{row['rounds_p75']:.{digits}f} "
            f"| {ratio} | {added} | {multiple} | {row['single_median_us']:.{digits}f} / "
            f"{row['single_p99_us']:.{digits}f} / {row['single_max_us']:.{digits}f} "
            f"| {row['queries']:.2f} | {redis} | {row['memo_hits']:.2f} |"
        )
    return "\n".join(lines)


def summary(values: list[float]) -> dict[str, float] | None:
    """Median, p99 (nearest rank) and max of the latencies in ms."""
    if not values:
        return None
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, max(0, round(0.99 * len(ordered) + 0.5) - 1))]
    return {
        "median": statistics.median(ordered),
        "p99": p99,
        "max": ordered[-1],
        "trials": len(ordered),
    }
