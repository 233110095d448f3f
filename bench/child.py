"""One bench scenario in this process: configure Django for it, run it, print its result as JSON."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from .settings import Setup, configure

RESULT_MARK = "BENCH-RESULT "


def run(name: str, context: dict[str, Any]) -> None:
    from .measure import Sizes

    sizes = Sizes(**context["sizes"])
    redis = {"redis_url": context["redis_url"], "key_prefix": context["key_prefix"]}
    if name == "requests":
        outcome = requests(sizes, context["idp"])
    elif name in ("users-locmem", "users-redis"):
        configure(Setup(**(redis if name == "users-redis" else {})))
        from . import scenarios

        outcome = scenarios.users(sizes, redis=name == "users-redis")
    elif name == "endpoints":
        configure(Setup())
        from . import scenarios

        outcome = scenarios.endpoints(sizes)
    elif name == "outage":
        configure(Setup(**redis))
        from . import scenarios

        outcome = scenarios.outage(sizes)
    elif name in ("denylist", "epochs"):
        # A file: the thread that reads the revocation state has a connection of its own.
        with tempfile.TemporaryDirectory(prefix="epochauth-bench-") as directory:
            configure(Setup(sqlite_path=str(Path(directory) / "db.sqlite3")))
            from . import scenarios

            outcome = getattr(scenarios, name)(sizes)
    elif name in ("endpoints-postgresql", "denylist-postgresql"):
        configure(Setup(postgres_url=context["postgres_url"]))
        from . import scenarios

        outcome = getattr(scenarios, name.removesuffix("-postgresql"))(sizes)
    elif name == "gunicorn":
        outcome = gunicorn(sizes, context, redis)
    elif name == "revocation-ssf":
        from .ssf_latency import measure

        outcome = measure(sizes.trials)
    elif name.startswith("revocation"):
        outcome = revocation(name, sizes, context, redis)
    else:
        raise SystemExit(f"unknown scenario {name}")
    if outcome is not None:
        print(RESULT_MARK + json.dumps(outcome), flush=True)


def requests(sizes: Any, with_idp: bool) -> dict[str, Any]:
    """The peers' scenario; it starts the test IdP before Django is configured with it as an issuer."""
    from epochauth.keys import generate_private_key_pem  # imports no models: fine before setup

    rsa_pem = generate_private_key_pem("RS256")
    idp, skipped = start_idp(with_idp)
    try:
        configure(Setup(rsa_pem=rsa_pem, idp_issuer=idp.issuer if idp else None))
        from . import scenarios

        outcome = scenarios.requests(sizes, rsa_pem, idp)
        outcome["facts"]["idp_versions"] = idp_versions() if idp else None
    finally:
        if idp is not None:
            idp.stop()
    outcome["facts"]["idp_skipped"] = skipped
    return outcome


def start_idp(wanted: bool) -> tuple[Any, str]:
    """The test OpenID provider of tests/idp, or None and why not (the external rows are then left out)."""
    if not wanted:
        return None, "--no-idp"
    from tests.idp import IdPError, TestIdP

    try:  # a long token lifetime: no token expires during a long run
        return TestIdP().start(env={"IDP_ACCESS_TOKEN_TTL": "86400"}), ""
    except (IdPError, OSError) as exc:
        return (
            None,
            f"cannot start the test IdP: {(str(exc) or type(exc).__name__).splitlines()[0]}",
        )


def idp_versions() -> str:
    import subprocess

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    package = (
        Path(__file__).resolve().parent.parent
        / "tests/idp/node_modules/oidc-provider/package.json"
    )
    return f"node {node}, oidc-provider {json.loads(package.read_text())['version']}"


#: The revocation scenarios: the channel that tells process B, as ``Setup`` arguments (the cache
#: and the push) and whether the database is the scratch PostgreSQL one.
CHANNELS: dict[str, tuple[bool, bool | str, bool]] = {
    "revocation": (True, True, False),  # Redis pub/sub
    "revocation-polling": (True, False, False),  # the net: the version key, once per interval
    "revocation-sqlite": (False, "database", False),  # no Redis: PRAGMA data_version
    "revocation-postgresql": (False, "database", True),  # no Redis: LISTEN/NOTIFY
}


def revocation(
    name: str, sizes: Any, context: dict[str, Any], redis: dict[str, str]
) -> dict[str, Any] | None:
    """Process A makes the database (an SQLite file, or uses the scratch PostgreSQL one) and starts
    process B (this same entry point, ``--context`` naming the channel) on it."""
    serving = name == "revocation-server"
    channel = context["channel"] if serving else name
    with_redis, push, postgres = CHANNELS[channel]
    # Keys of its own: user 1 of another revocation scenario (its epoch bumped) is not this one's.
    cache = {**redis, "key_prefix": f"{redis['key_prefix']}:{channel}"}
    arguments: dict[str, Any] = {"revocation_push": push, **(cache if with_redis else {})}
    if serving:
        database = {"postgres_url": context["postgres_url"]} if postgres else {}
        configure(Setup(sqlite_path=context.get("sqlite_path"), **database, **arguments))
        from . import revocation_latency
        from .wsgi import Server

        revocation_latency.serve(Server())
        return None
    with tempfile.TemporaryDirectory(prefix="epochauth-bench-") as directory:
        context = {**context, "channel": name}
        if postgres:
            configure(Setup(postgres_url=context["postgres_url"], **arguments))
        else:
            context["sqlite_path"] = str(Path(directory) / "db.sqlite3")
            configure(Setup(sqlite_path=context["sqlite_path"], **arguments))
        from . import revocation_latency

        child = [
            sys.executable,
            sys.argv[0],
            "--scenario",
            "revocation-server",
            "--context",
            json.dumps(context),
        ]
        return revocation_latency.measure(sizes.trials, child)


def gunicorn(sizes: Any, context: dict[str, Any], redis: dict[str, str]) -> dict[str, Any]:
    """The servers' database: the scratch PostgreSQL database when there is one, else a SQLite file;
    Redis as the cache when the run was given one."""
    with tempfile.TemporaryDirectory(prefix="epochauth-bench-") as directory:
        database = {"sqlite_path": str(Path(directory) / "db.sqlite3")}
        if context.get("postgres_url"):
            database = {"postgres_url": context["postgres_url"]}
        # Keys of their own: another scenario's user 1 (revoked by the revocation scenario) is not ours.
        cache = {**redis, "key_prefix": f"{redis['key_prefix']}:gunicorn"}
        setup = Setup(**database, **(cache if context["gunicorn_redis"] else {}))
        configure(setup)
        from . import under_gunicorn

        return under_gunicorn.measure(sizes, setup, Path(directory))
