"""System checks: each misconfiguration is reported by ``manage.py check`` with its own id."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.checks import run_checks

from epochauth.checks import check_cache, check_issuers, check_settings
from epochauth.keys import generate_private_key_pem

ISSUER = "https://api.example.org"
GOOD_SECRET = "a-dedicated-signing-key-" + "s" * 40
LOCMEM = {
    "default": {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "OPTIONS": {"MAX_ENTRIES": 100_000},
    }
}
SHARED = {
    "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://x"}
}


def ids(settings, debug: bool = True, caches: dict | None = None, **epochauth: object) -> set[str]:
    settings.DEBUG = debug
    settings.CACHES = caches or LOCMEM
    settings.EPOCHAUTH = epochauth
    return {message.id for message in check_settings()}


def test_good_configuration_has_no_messages(settings):
    assert ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET) == set()
    assert (
        ids(settings, debug=False, caches=SHARED, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET) == set()
    )
    es256 = generate_private_key_pem("ES256")
    assert ids(settings, ISSUER=ISSUER, ALGORITHM="ES256", SIGNING_KEY=es256) == set()


def test_run_checks_reports_ours(settings):
    settings.EPOCHAUTH = {"SIGNING_KEY": GOOD_SECRET}
    assert "epochauth.E002" in {m.id for m in run_checks(tags=["security"])}


def test_e001_unknown_setting(settings):
    found = ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, SIGNING_KEYS=[], AUDIANCE="x")
    assert found == {"epochauth.E001"}
    message = next(m for m in check_settings() if m.id == "epochauth.E001")
    assert "AUDIANCE" in message.msg and "SIGNING_KEYS" in message.msg


@pytest.mark.parametrize("issuer", [None, "", 42])
def test_e002_issuer_missing(settings, issuer):
    extra = {} if issuer is None else {"ISSUER": issuer}
    assert "epochauth.E002" in ids(settings, SIGNING_KEY=GOOD_SECRET, **extra)


@pytest.mark.parametrize(
    "change",
    [
        {"LEEWAY": "30"},
        {"ACCESS_TOKEN_LIFETIME": timedelta(seconds=-1)},
        {"EPOCH_CACHE_TIMEOUT": None},
    ],
)
def test_e003_bad_durations(settings, change):
    assert "epochauth.E003" in ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, **change)


def test_durations_may_be_seconds(settings):
    assert (
        ids(
            settings,
            ISSUER=ISSUER,
            SIGNING_KEY=GOOD_SECRET,
            LEEWAY=10,
            ACCESS_TOKEN_LIFETIME=300.0,
        )
        == set()
    )


def p384_pem() -> str:
    return (
        ec.generate_private_key(ec.SECP384R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


@pytest.mark.parametrize(
    "config",
    [
        {"ALGORITHM": "RS256", "SIGNING_KEY": "not a pem"},
        {"ALGORITHM": "RS256"},  # asymmetric without a key
        {"ALGORITHM": "ES256", "SIGNING_KEY": "P-384"},  # replaced below by a P-384 key
        {"ALGORITHM": "ES256", "SIGNING_KEY_FILE": "/nonexistent/key.pem"},
        {"ALGORITHM": "none", "SIGNING_KEY": GOOD_SECRET},
        {"ALGORITHM": "HS256", "SIGNING_KEY": 1234567890},
        {"SIGNING_KEY": GOOD_SECRET, "VERIFICATION_KEYS": [{"key": GOOD_SECRET}]},
        {"SIGNING_KEY": GOOD_SECRET, "VERIFICATION_KEYS": ["a bare secret"]},
        {"SIGNING_KEY": GOOD_SECRET, "VERIFICATION_KEYS": [{"algorithm": "ES256", "key": "junk"}]},
        {
            "SIGNING_KEY": GOOD_SECRET,
            "VERIFICATION_KEYS": [{"algorithm": "HS256", "key": GOOD_SECRET}],
        },  # same kid
        {"SIGNING_KEY": GOOD_SECRET, "ID_TOKEN_SIGNING_KEY": "not a pem"},
        {"SIGNING_KEY": GOOD_SECRET, "ID_TOKEN_SIGNING_KEY_FILE": "/nonexistent/id-token.pem"},
    ],
    ids=repr,
)
def test_e004_broken_keys(settings, config):
    if config.get("SIGNING_KEY") == "P-384":
        config = {**config, "SIGNING_KEY": p384_pem()}
    assert "epochauth.E004" in ids(settings, ISSUER=ISSUER, **config)


def test_e004_message_does_not_leak_the_key(settings):
    pem = p384_pem()
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "ALGORITHM": "ES256", "SIGNING_KEY": pem}
    message = next(m for m in check_settings() if m.id == "epochauth.E004")
    assert "PRIVATE KEY" not in message.msg
    assert pem.splitlines()[1] not in message.msg


def test_w001_signing_with_secret_key_in_production(settings):
    settings.SECRET_KEY = "production-secret-key-" + "p" * 40
    assert "epochauth.W001" in ids(settings, debug=False, caches=SHARED, ISSUER=ISSUER)
    assert "epochauth.W001" in ids(
        settings, debug=False, caches=SHARED, ISSUER=ISSUER, SIGNING_KEY=settings.SECRET_KEY
    )
    assert "epochauth.W001" not in ids(settings, debug=True, ISSUER=ISSUER)
    assert "epochauth.W001" not in ids(
        settings, debug=False, caches=SHARED, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET
    )


@pytest.mark.parametrize("secret", ["short", "x" * 31])
def test_e005_short_hmac_key(settings, secret):
    assert "epochauth.E005" in ids(settings, ISSUER=ISSUER, SIGNING_KEY=secret)


def test_e005_counts_bytes(settings):
    assert "epochauth.E005" not in ids(settings, ISSUER=ISSUER, SIGNING_KEY="x" * 32)


def test_e006_cache_alias_missing(settings):
    assert "epochauth.E006" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, CACHE_ALIAS="nope"
    )


def deploy_ids(settings, caches: dict, **epochauth: object) -> set[str]:
    settings.CACHES = caches
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET, **epochauth}
    return {message.id for message in check_cache()}


def test_w002_process_memory_cache_under_check_deploy(settings):
    dummy = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    for caches in (LOCMEM, dummy):
        assert "epochauth.W002" in deploy_ids(settings, caches)
    assert "epochauth.W002" not in deploy_ids(settings, SHARED)
    settings.CACHES = LOCMEM
    (warning,) = [m for m in check_cache() if m.id == "epochauth.W002"]
    # the bound it states is the one that holds without a shared cache
    assert "within 60 s (REVOCATION_RELOAD_INTERVAL)" in warning.msg


def test_w002_not_when_the_database_pushes(settings):
    assert "epochauth.W002" not in deploy_ids(settings, LOCMEM, REVOCATION_PUSH="database")


@pytest.mark.parametrize("push", ["redis", "postgres", 1, None])
def test_e021_revocation_push_is_true_false_or_database(settings, push):
    assert "epochauth.E021" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, REVOCATION_PUSH=push
    )
    for good in (True, False, "database"):  # the suite's database is SQLite or PostgreSQL
        assert "epochauth.E021" not in ids(
            settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, REVOCATION_PUSH=good
        )


def test_e021_no_database_channel_on_another_vendor(settings, monkeypatch):
    from django.db import connections

    monkeypatch.setattr(connections["default"], "vendor", "mysql")
    assert "epochauth.E021" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, REVOCATION_PUSH="database"
    )


def test_cache_warnings_only_under_check_deploy(settings):
    """Every management command runs the checks: these two belong to ``check --deploy`` alone."""
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET}
    everyday = {m.id for m in run_checks()}
    deploy = {m.id for m in run_checks(include_deployment_checks=True)}
    assert not {"epochauth.W002", "epochauth.W004"} & everyday
    assert {"epochauth.W002", "epochauth.W004"} <= deploy


@pytest.mark.parametrize(
    "scopes", [{"two words": "x"}, {"caf\u00e9": "x"}, {"": "x"}, ["reports:read"]]
)
def test_e011_scope_names_must_be_scope_tokens(settings, scopes):
    assert "epochauth.E011" in ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, SCOPES=scopes)
    assert "epochauth.E011" not in ids(
        settings,
        ISSUER=ISSUER,
        SIGNING_KEY=GOOD_SECRET,
        SCOPES={"reports:read": "Read the reports"},
    )


def test_e011_service_scope_names_must_be_scope_tokens(settings):
    base = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET}
    assert "epochauth.E011" in ids(settings, **base, SERVICE_SCOPES={"two words": "x"})
    assert "epochauth.E011" in ids(settings, **base, SERVICE_SCOPES=["jobs:admin"])
    assert "epochauth.E011" not in ids(settings, **base, SERVICE_SCOPES={"jobs:admin": "x"})


@pytest.mark.parametrize(
    "change",
    [
        # the Token Manager's scope is a service scope, listed or not
        {"SCOPES": {"tokenmanager": "Obtain users' upstream tokens"}},
        {"SCOPES": {"tm": "x"}, "TOKEN_MANAGER_SCOPE": "tm"},
        {"SCOPES": {"jobs:admin": "x"}, "SERVICE_SCOPES": {"jobs:admin": "x"}},
        {"SCOPES": {"tokenmanager": "x"}, "SERVICE_SCOPES": {"tokenmanager": "x"}},
        # WLCG host-based authorization: a token that speaks for a host (profile 1.3 section 2.2.4)
        {"SCOPES": {"host.auth": "x"}},
    ],
)
def test_e019_a_service_scope_is_no_user_scope(settings, change):
    base = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET}
    assert "epochauth.E019" in ids(settings, **base, **change)
    apart = {**change, "SCOPES": {"reports:read": "x"}}
    assert "epochauth.E019" not in ids(settings, **base, **apart)


@pytest.mark.parametrize("client_id", ["", "  ", None, 42, ["epochauth"]])
def test_e020_the_first_party_client_id_is_a_string(settings, client_id):
    base = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET}
    assert "epochauth.E020" in ids(settings, **base, FIRST_PARTY_CLIENT_ID=client_id)
    assert "epochauth.E020" not in ids(settings, **base, FIRST_PARTY_CLIENT_ID="portal-login")
    assert "epochauth.E020" not in ids(settings, **base)


THROTTLE_RATES = [
    "LOGIN_THROTTLE_RATE",
    "DEVICE_CODE_THROTTLE_RATE",
    "CLIENT_REGISTRATION_THROTTLE_RATE",
]


@pytest.mark.parametrize("setting", THROTTLE_RATES)
@pytest.mark.parametrize(
    "rate", ["10", "ten/min", "10/", "10/fortnight", "0/min", "-1/min", 10, ["10/min"]]
)
def test_e012_throttle_rates_must_be_rates(settings, setting, rate):
    assert "epochauth.E012" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, **{setting: rate}
    )


@pytest.mark.parametrize("setting", THROTTLE_RATES)
@pytest.mark.parametrize("rate", ["10/min", "1/s", "100/hour", "5/d", None])
def test_e012_accepts_drf_rate_strings_and_none(settings, setting, rate):
    assert "epochauth.E012" not in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, **{setting: rate}
    )


@pytest.mark.parametrize("size", [-1, 1.5, "2", True])
def test_e032_outage_journal_size(settings, size):
    assert "epochauth.E032" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, OUTAGE_JOURNAL_SIZE=size
    )
    for fine in (None, 0, 10):
        assert "epochauth.E032" not in ids(
            settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, OUTAGE_JOURNAL_SIZE=fine
        )


@pytest.mark.parametrize("limit", [0, -1, 1.5, "2", True])
def test_e013_max_sessions_per_user(settings, limit):
    assert "epochauth.E013" in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, MAX_SESSIONS_PER_USER=limit
    )
    assert "epochauth.E013" not in ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, MAX_SESSIONS_PER_USER=1
    )


@pytest.mark.parametrize(
    ("max_age", "expected"), [(0, "E014"), (timedelta(0), "E014"), (-1, "E003")]
)
def test_e014_backchannel_logout_max_age(settings, max_age, expected):
    duration_errors = {"epochauth.E003", "epochauth.E014"}
    found = ids(
        settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, BACKCHANNEL_LOGOUT_MAX_AGE=max_age
    )
    assert found & duration_errors == {f"epochauth.{expected}"}
    good = ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, BACKCHANNEL_LOGOUT_MAX_AGE=1)
    assert not good & duration_errors


@pytest.mark.parametrize(
    "bad",
    [
        {"LOGOUT_DELIVERY_ATTEMPTS": 0},
        {"LOGOUT_DELIVERY_ATTEMPTS": "8"},
        {"LOGOUT_DELIVERY_ATTEMPTS": True},
        {"LOGOUT_TOKEN_LIFETIME": 0},
    ],
)
def test_e022_logout_delivery(settings, bad):
    assert "epochauth.E024" in ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, **bad)
    good = ids(
        settings,
        ISSUER=ISSUER,
        SIGNING_KEY=GOOD_SECRET,
        LOGOUT_DELIVERY_ATTEMPTS=1,
        LOGOUT_TOKEN_LIFETIME=30,
    )
    assert "epochauth.E024" not in good


@pytest.mark.parametrize(
    "value, issuer",
    [
        ("yes", ISSUER),
        ({"size": 100}, ISSUER),
        ({"size": 0}, ISSUER),
        ({"ttl": 300}, ISSUER),
        ({"ttl": timedelta(0)}, ISSUER),
        ({"bits": 2}, ISSUER),
        (True, "api.example.org"),
    ],
)
def test_e027_status_list(settings, value, issuer):
    assert "epochauth.E027" in ids(
        settings, ISSUER=issuer, SIGNING_KEY=GOOD_SECRET, STATUS_LIST=value
    )
    for good in (None, True, {"size": 1024, "ttl": timedelta(minutes=1)}):
        found = ids(settings, ISSUER=ISSUER, SIGNING_KEY=GOOD_SECRET, STATUS_LIST=good)
        assert "epochauth.E027" not in found


@pytest.mark.parametrize(
    "value, expected", [("closed", False), ("open", False), (None, False), ("yes", True)]
)
def test_e028_an_issuers_status_list_option(settings, value, expected):
    entry = {"issuer": "https://iam.example.org/", "audiences": ["a"], "status_list": value}
    settings.EPOCHAUTH = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET, "ISSUERS": [entry]}
    assert ("epochauth.E028" in {m.id for m in check_issuers()}) is expected


def test_w004_a_local_memory_cache_too_small_for_its_job(settings):
    small = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    }  # 300 entries
    assert "epochauth.W004" in deploy_ids(settings, small)
    assert "epochauth.W004" not in deploy_ids(settings, small, VERIFIED_TOKEN_CACHE_SIZE=300)
    assert "epochauth.W004" not in deploy_ids(settings, SHARED)


def test_w005_access_tokens_that_outlive_the_revocation_window(settings):
    assert "epochauth.W005" in ids(
        settings,
        ISSUER=ISSUER,
        SIGNING_KEY=GOOD_SECRET,
        ACCESS_TOKEN_LIFETIME=7200,
        REVOCATION_WINDOW=3600,
    )
    assert "epochauth.W005" not in ids(
        settings,
        ISSUER=ISSUER,
        SIGNING_KEY=GOOD_SECRET,
        ACCESS_TOKEN_LIFETIME=3600,
        REVOCATION_WINDOW=3600,
    )


def test_e018_w006_the_token_profile_we_mint(settings):
    base = {"ISSUER": ISSUER, "SIGNING_KEY": GOOD_SECRET}
    assert "epochauth.E018" in ids(settings, **base, TOKEN_PROFILE="WLCG 1.0")
    assert ids(settings, **base, TOKEN_PROFILE="wlcg") == set()
    good = {
        "storage.read:/": "",
        "storage.modify:/data": "",
        "storage.poll:/tape": "",  # profile 1.3
        "compute.read": "",
        "reports": "",
    }
    assert ids(settings, **base, TOKEN_PROFILE="wlcg", SCOPES=good) == set()
    for bad in (
        "storage.read",
        "storage.write:/data",
        "storage.read:data",
        "storage.read:/a/../b",
        "storage.stat:/data",  # an operation, never a scope
        "compute.run",
    ):
        assert ids(settings, **base, TOKEN_PROFILE="wlcg", SCOPES={bad: ""}) == {
            "epochauth.W006"
        }, bad
    assert ids(settings, **base, SCOPES={"storage.read": ""}) == set()
