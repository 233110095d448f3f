"""How long a revocation made in one process takes to be refused by another (two OS processes, Redis).

Process A (this one) logs in over ``POST /auth/token/`` and hands the access token to process B, which
serves ``GET /api/epochauth/`` with it in a loop until it is accepted, says so, and goes on until it is
refused. A waits a random 0–1 s (so the revocation falls anywhere in B's refresh interval), then
revokes through the URL a client uses: ``POST /auth/logout/`` (the session's id on the denylist) or
``POST /auth/logout-all/`` (an epoch bump). The latency is from the start of A's revoking request to
B's first refusal, both read from ``time.monotonic()`` (one system-wide clock on Linux).
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from typing import Any

from django.contrib.auth import get_user_model

from . import fixtures
from .measure import summary
from .wsgi import Server, bearer

KINDS = {"logout": "/auth/logout/", "logout-all": "/auth/logout-all/"}
WAIT_LIMIT = 15.0  # seconds B waits for a change before it reports a timeout


def serve(server: Server) -> None:
    """Process B: one token per line on stdin; answers "accepted", then "refused <monotonic> <requests>"."""
    print("ready", flush=True)
    for line in sys.stdin:
        call = server.get("/api/epochauth/", bearer(line.strip()))
        print("accepted" if poll(call, 200) is not None else "timeout", flush=True)
        seen = poll(call, 401)
        print("timeout" if seen is None else f"refused {seen[0]} {seen[1]}", flush=True)


def poll(call: Any, status: int) -> tuple[float, int] | None:
    deadline, count = time.monotonic() + WAIT_LIMIT, 0
    while time.monotonic() < deadline:
        count += 1
        if call().status == status:
            return time.monotonic(), count
    return None


def measure(trials: int, child: list[str]) -> dict[str, Any]:
    """Process A: ``trials`` revocations of each kind, alternating; ``child`` starts process B."""
    server = Server()
    fixtures.migrate()
    user = get_user_model().objects.create_user("carol", password=fixtures.PASSWORD)
    credentials = {"username": user.get_username(), "password": fixtures.PASSWORD}
    other = subprocess.Popen(child, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    latencies: dict[str, list[float]] = {kind: [] for kind in KINDS}
    timeouts = dict.fromkeys(KINDS, 0)
    try:
        expect(other, "ready")
        for _ in range(trials):
            for kind, path in KINDS.items():
                token = server.post_for("/auth/token/", credentials, "access_token")
                other.stdin.write(token + "\n")
                other.stdin.flush()
                expect(other, "accepted")
                time.sleep(random.uniform(0, 1))
                started = time.monotonic()
                response = server.post_json(path, {}, bearer(token))
                if response.status != 204:
                    raise SystemExit(f"{path}: HTTP {response.status} {response.body[:300]!r}")
                answer = other.stdout.readline().split()
                if answer[:1] != ["refused"]:
                    timeouts[kind] += 1
                    continue
                latencies[kind].append((float(answer[1]) - started) * 1000)
    finally:
        other.stdin.close()
        other.wait(timeout=30)
    return {
        "latency_ms": latencies,
        "timeouts": timeouts,
        "summary": {k: summary(v) for k, v in latencies.items()},
    }


def expect(process: subprocess.Popen[str], word: str) -> None:
    line = process.stdout.readline().strip()
    if line != word:
        raise SystemExit(f"revocation bench: process B said {line!r}, expected {word!r}")
