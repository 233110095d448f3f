"""System checks: misconfiguration is reported by ``manage.py check``, not at the first request."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import DEFAULT_DB_ALIAS, connections, router

from . import (
    claims,
    communities,
    conf,
    issuer_config,
    keys,
    models,
    profiles,
    resources,
    statuslist,
    throttling,
)
from .scopes import is_scope_token, service_scopes
from .ssf.config import transmitter_config


@checks.register(checks.Tags.security)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    unknown = sorted(set(conf.epochauth_settings.user_settings) - set(conf.DEFAULTS))
    if unknown:
        errors.append(
            checks.Error(f"Unknown EPOCHAUTH settings: {', '.join(unknown)}", id="epochauth.E001")
        )
    if not isinstance(conf.epochauth_settings.ISSUER, str) or not conf.epochauth_settings.ISSUER:
        errors.append(
            checks.Error(
                'EPOCHAUTH["ISSUER"] must be set to this service\'s issuer string.',
                hint='For example "https://api.example.org".',
                id="epochauth.E002",
            )
        )
    first_party = conf.epochauth_settings.FIRST_PARTY_CLIENT_ID
    if not isinstance(first_party, str) or not first_party.strip():
        errors.append(
            checks.Error(
                'EPOCHAUTH["FIRST_PARTY_CLIENT_ID"] must be a non-empty string.',
                hint="The client_id of the tokens of this site's own login (RFC 9068 section 2.2); "
                'the default is "epochauth".',
                id="epochauth.E020",
            )
        )
    errors.extend(_resource_messages(conf.epochauth_settings.RESOURCES))
    errors.extend(_status_list_messages(conf.epochauth_settings.STATUS_LIST))
    for name in conf.TIMEDELTA_SETTINGS:
        value = getattr(conf.epochauth_settings, name)
        if not isinstance(value, timedelta) or value < timedelta(0):
            errors.append(
                checks.Error(
                    f'EPOCHAUTH["{name}"] must be a non-negative timedelta.', id="epochauth.E003"
                )
            )
    try:
        keys.get_keyring.cache_clear()
        keyring = keys.get_keyring()
    except (ImproperlyConfigured, OSError, KeyError) as exc:
        errors.append(checks.Error(f"EPOCHAUTH signing keys: {exc}", id="epochauth.E004"))
        return errors
    if keyring.signing.algorithm in keys.HMAC_ALGORITHMS:
        secret = keyring.signing.signing_key
        if secret == settings.SECRET_KEY.encode() and not settings.DEBUG:
            errors.append(
                checks.Warning(
                    "Access tokens are signed with SECRET_KEY.",
                    hint='Set a dedicated EPOCHAUTH["SIGNING_KEY"]: rotating one leaves the other alone.',
                    id="epochauth.W001",
                )
            )
        if len(secret) < 32:
            errors.append(
                checks.Error(
                    "The HMAC signing key must be at least 32 bytes.", id="epochauth.E005"
                )
            )
    for name in ("SCOPES", "SERVICE_SCOPES"):
        value = getattr(conf.epochauth_settings, name)
        if not isinstance(value, dict) or not all(
            isinstance(n, str) and is_scope_token(n) for n in value
        ):
            errors.append(
                checks.Error(
                    f'EPOCHAUTH["{name}"] must map scope names to descriptions.',
                    hint='A scope name is printable ASCII without space, " and \\ (RFC 6749 section 3.3).',
                    id="epochauth.E011",
                )
            )
    scopes = conf.epochauth_settings.SCOPES
    if isinstance(scopes, dict) and isinstance(conf.epochauth_settings.SERVICE_SCOPES, dict):
        privileged = sorted(str(name) for name in scopes if name in service_scopes())
        if privileged:
            errors.append(
                checks.Error(
                    f'Service scopes in EPOCHAUTH["SCOPES"]: {", ".join(privileged)}.',
                    hint="SCOPES are what any user may ask for; a scope only a service application "
                    'may hold (TOKEN_MANAGER_SCOPE, SERVICE_SCOPES) goes in EPOCHAUTH["SERVICE_SCOPES"] '
                    "and in the allowed scopes of that application.",
                    id="epochauth.E019",
                )
            )
    for name in (
        "LOGIN_THROTTLE_RATE",
        "DEVICE_CODE_THROTTLE_RATE",
        "CLIENT_REGISTRATION_THROTTLE_RATE",
    ):
        rate = getattr(conf.epochauth_settings, name)
        if rate is not None and not _valid_rate(rate):
            errors.append(
                checks.Error(
                    f'EPOCHAUTH["{name}"] is not a rate: {rate!r}.',
                    hint='Attempts per period, e.g. "10/min" or "100/hour"; None = off.',
                    id="epochauth.E012",
                )
            )
    profile = conf.epochauth_settings.TOKEN_PROFILE
    if profile not in (None, profiles.WLCG):
        errors.append(
            checks.Error(
                f'EPOCHAUTH["TOKEN_PROFILE"] is not a profile we mint: {profile!r}.',
                hint='None, or "wlcg" for the WLCG Common JWT Profile (1.3).',
                id="epochauth.E018",
            )
        )
    elif profile == profiles.WLCG and isinstance(scopes, dict):
        misspelt = sorted(str(name) for name in scopes if not profiles.in_wlcg_grammar(str(name)))
        if misspelt:
            errors.append(
                checks.Warning(
                    f"SCOPES not in the WLCG profile's grammar: {', '.join(misspelt)}.",
                    hint="storage.read|create|modify|stage|poll:/path; compute.read|modify|create|cancel.",
                    id="epochauth.W006",
                )
            )
    limit = conf.epochauth_settings.MAX_SESSIONS_PER_USER
    if limit is not None and (type(limit) is not int or limit < 1):
        errors.append(
            checks.Error(
                'EPOCHAUTH["MAX_SESSIONS_PER_USER"] must be None or a positive integer.',
                id="epochauth.E013",
            )
        )
    size = conf.epochauth_settings.OUTAGE_JOURNAL_SIZE
    if size is not None and (type(size) is not int or size < 0):
        errors.append(
            checks.Error(
                'EPOCHAUTH["OUTAGE_JOURNAL_SIZE"] must be None or a non-negative integer.',
                hint="How many changes made during a database outage Redis keeps; 0 or None: none.",
                id="epochauth.E032",
            )
        )
    if conf.epochauth_settings.BACKCHANNEL_LOGOUT_MAX_AGE == timedelta(
        0
    ):  # a negative one is E003
        errors.append(
            checks.Error(
                'EPOCHAUTH["BACKCHANNEL_LOGOUT_MAX_AGE"] must be more than zero.',
                hint="Logout tokens are delivered within seconds of their iat; the default is 5 minutes.",
                id="epochauth.E014",
            )
        )
    interval = conf.epochauth_settings.OIDC_SESSION_CHECK_INTERVAL
    if interval is not None and (not isinstance(interval, timedelta) or interval <= timedelta(0)):
        errors.append(
            checks.Error(
                'EPOCHAUTH["OIDC_SESSION_CHECK_INTERVAL"] must be None or a positive timedelta.',
                id="epochauth.E023",
            )
        )
    attempts = conf.epochauth_settings.LOGOUT_DELIVERY_ATTEMPTS
    if (
        type(attempts) is not int
        or attempts < 1
        or conf.epochauth_settings.LOGOUT_TOKEN_LIFETIME == timedelta(0)
    ):
        errors.append(
            checks.Error(
                'EPOCHAUTH["LOGOUT_DELIVERY_ATTEMPTS"] must be a positive integer and '
                '"LOGOUT_TOKEN_LIFETIME" more than zero.',
                hint="Logout tokens sent to relying parties; the defaults are 8 and 2 minutes.",
                id="epochauth.E024",
            )
        )
    errors.extend(_dpop_messages())
    errors.extend(_push_messages())
    errors.extend(_ssf_messages(conf.epochauth_settings.SSF_TRANSMITTERS))
    if conf.epochauth_settings.SSF_MAX_AGE <= timedelta(0):
        errors.append(
            checks.Error(
                'EPOCHAUTH["SSF_MAX_AGE"] must be more than zero.',
                hint="Security event tokens older than this are refused; the default is one day.",
                id="epochauth.E036",
            )
        )
    if not settings.CACHES.get(conf.epochauth_settings.CACHE_ALIAS, {}).get("BACKEND"):
        errors.append(
            checks.Error('EPOCHAUTH["CACHE_ALIAS"] names no cache.', id="epochauth.E006")
        )
    if conf.epochauth_settings.ACCESS_TOKEN_LIFETIME > conf.epochauth_settings.REVOCATION_WINDOW:
        errors.append(
            checks.Warning(
                "ACCESS_TOKEN_LIFETIME is longer than REVOCATION_WINDOW.",
                hint="Tokens older than the window read their epochs from the shared cache on each request.",
                id="epochauth.W005",
            )
        )
    return errors


def _dpop_messages() -> list[checks.CheckMessage]:
    errors: list[checks.CheckMessage] = []
    algorithms = conf.epochauth_settings.DPOP_ALGORITHMS
    if (
        not isinstance(algorithms, list | tuple)
        or not algorithms
        or not all(name in keys.ASYMMETRIC_ALGORITHMS for name in algorithms)
        or conf.epochauth_settings.DPOP_PROOF_LIFETIME == timedelta(0)  # a negative one is E003
    ):
        errors.append(
            checks.Error(
                'EPOCHAUTH["DPOP_ALGORITHMS"] must list asymmetric algorithms and '
                '"DPOP_PROOF_LIFETIME" be more than zero.',
                hint="ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA, Ed25519; "
                "never none nor HMAC. The default lifetime is 60 seconds.",
                id="epochauth.E025",
            )
        )
    nonce = conf.epochauth_settings.DPOP_NONCE
    if nonce is not None and (
        not isinstance(nonce, timedelta)
        or nonce <= timedelta(0)
        or "epochauth.dpop.NonceMiddleware" not in settings.MIDDLEWARE
    ):
        errors.append(
            checks.Error(
                'EPOCHAUTH["DPOP_NONCE"] must be None or a positive timedelta, with '
                '"epochauth.dpop.NonceMiddleware" in MIDDLEWARE.',
                hint="The middleware hands clients the nonce (DPoP-Nonce) their proofs must carry.",
                id="epochauth.E026",
            )
        )
    return errors


def _resource_messages(value: Any) -> list[checks.CheckMessage]:
    """``RESOURCES``: a list of absolute URIs without fragment (RFC 8707 section 2), or no client
    could ever name one."""
    if isinstance(value, list | tuple) and all(
        isinstance(name, str) and resources.is_absolute(name) for name in value
    ):
        return []
    return [
        checks.Error(
            'EPOCHAUTH["RESOURCES"] must be a list of absolute URIs without fragment.',
            hint='For example ["https://storage.example.org"] (RFC 8707 section 2).',
            id="epochauth.E022",
        )
    ]


SSF_KEYS = frozenset({"issuer", "token_env", "delivery", "audience", "push_url", "events"})


def _ssf_entry_valid(entry: Any) -> bool:
    """One ``SSF_TRANSMITTERS`` entry: its issuer URL, a token variable, a delivery method, strings."""
    if not (isinstance(entry, dict) and isinstance(entry.get("issuer"), str)):
        return False
    try:
        issuer_config.validate_issuer_url(entry["issuer"])
    except ValidationError:
        return False
    audience = entry.get("audience", conf.epochauth_settings.ISSUER)
    return (
        not set(entry) - SSF_KEYS
        and isinstance(entry.get("token_env"), str)
        and bool(entry["token_env"])
        and entry.get("delivery", "push") in ("push", "poll")
        and isinstance(audience, str)
        and bool(audience)
        and isinstance(entry.get("push_url", ""), str)
        and _strings(entry.get("events", ()))
    )


def _ssf_messages(value: Any) -> list[checks.CheckMessage]:
    """``SSF_TRANSMITTERS``: a list of well-formed entries, one per issuer."""
    entries = value if isinstance(value, list | tuple) else [value]
    bad = [entry for entry in entries if not _ssf_entry_valid(entry)]
    issuers = [entry["issuer"] for entry in entries if isinstance(entry, dict)]
    if not bad and len(set(issuers)) == len(issuers):
        return []
    return [
        checks.Error(
            'EPOCHAUTH["SSF_TRANSMITTERS"] must be a list of dicts, one per issuer, each with '
            '"issuer" (an https URL), "token_env" (an environment variable name) and optionally '
            '"delivery" ("push" or "poll"), "audience", "push_url" (strings) and "events" (a list '
            "of event type URIs); an audience is needed when ISSUER is not set.",
            id="epochauth.E035",
        )
    ]


def _status_list_messages(value: Any) -> list[checks.CheckMessage]:
    """``STATUS_LIST``: off, ``True`` or ``{"size": ..., "ttl": ...}``; and an issuer URL for the
    lists' URIs, which verifiers accept only on the issuer's origin."""
    if not value:
        return []
    given = value if isinstance(value, dict) else {}
    size = given.get("size", statuslist.DEFAULT_SIZE)
    ttl = given.get("ttl", statuslist.DEFAULT_TTL)
    if (
        not (value is True or isinstance(value, dict))
        or set(given) - {"size", "ttl"}
        or type(size) is not int
        or size < 8
        or size % 8
        or not isinstance(ttl, timedelta)
        or ttl.total_seconds() < 1
    ):
        return [
            checks.Error(
                'EPOCHAUTH["STATUS_LIST"] must be None, True or a dict of "size" (a positive '
                'multiple of 8) and "ttl" (a timedelta of a second or more).',
                id="epochauth.E027",
            )
        ]
    if not str(conf.epochauth_settings.ISSUER or "").startswith(("https://", "http://")):
        return [
            checks.Error(
                'EPOCHAUTH["STATUS_LIST"] needs an http(s) URL as EPOCHAUTH["ISSUER"]: the lists are '
                "served under it.",
                id="epochauth.E027",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_ssf_transmitter(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``SSF_TRANSMITTER``: its shape (E037); what the transmitter needs (E038): the authorization
    server (receivers authenticate with its tokens), an http(s) issuer (its endpoints are published
    under it) and a key receivers can verify SETs with (asymmetric: an HMAC secret is never
    published)."""
    try:
        config = transmitter_config()
    except (ValueError, TypeError):
        return [
            checks.Error(
                'EPOCHAUTH["SSF_TRANSMITTER"] must be None, True or a dict of "default_subjects" '
                '("NONE" or "ALL"), "attempts" (a positive int), "retry_delay" and '
                '"min_verification_interval" (non-negative timedeltas).',
                id="epochauth.E037",
            )
        ]
    if config is None:
        return []
    needs = []
    if not apps.is_installed("epochauth.oauth"):
        needs.append("epochauth.oauth in INSTALLED_APPS")
    if not str(conf.epochauth_settings.ISSUER or "").startswith(("https://", "http://")):
        needs.append('an http(s) URL as EPOCHAUTH["ISSUER"]')
    try:
        keyring = keys.get_keyring()
    except (ImproperlyConfigured, OSError, KeyError):
        keyring = None  # epochauth.E004 says why
    if keyring is not None and keyring.signing.is_symmetric and keyring.id_token is None:
        needs.append("an asymmetric signing key or an ID-token key (ID_TOKEN_SIGNING_KEY)")
    return [
        checks.Error(
            f'EPOCHAUTH["SSF_TRANSMITTER"] needs {need}.',
            hint="Receivers verify SETs with our JWKS, and manage streams with a client-credentials "
            "token of our authorization server.",
            id="epochauth.E038",
        )
        for need in needs
    ]


@checks.register(checks.Tags.caches, deploy=True)
def check_cache(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``check --deploy`` only: a per-process cache is fine while developing (every management
    command would otherwise print these), not behind several workers."""
    cache: dict[str, Any] = settings.CACHES.get(conf.epochauth_settings.CACHE_ALIAS, {})
    backend = cache.get("BACKEND", "")
    warnings: list[checks.CheckMessage] = []
    database_push = conf.epochauth_settings.REVOCATION_PUSH == "database"
    if backend.endswith(("LocMemCache", "DummyCache")) and not database_push:
        reload = conf.epochauth_settings.REVOCATION_RELOAD_INTERVAL.total_seconds()
        warnings.append(
            checks.Warning(
                "Revocation state is cached in process memory only: a revocation made in one process "
                f"reaches the others only when they next read the database, within {reload:g} s "
                "(REVOCATION_RELOAD_INTERVAL).",
                hint="Use a shared cache (Redis) as CACHE_ALIAS: then every process sees a revocation "
                "at once (pushed) and within REVOCATION_REFRESH_INTERVAL at worst; or REVOCATION_PUSH = "
                '"database" (PostgreSQL LISTEN/NOTIFY, or SQLite on one machine).',
                id="epochauth.W002",
            )
        )
    max_entries = cache.get("OPTIONS", {}).get("MAX_ENTRIES", 300)
    if (
        backend.endswith("LocMemCache")
        and max_entries < conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
    ):
        warnings.append(
            checks.Warning(
                f"The cache epochauth uses keeps only {max_entries} entries.",
                hint="It holds each external identity's user, older tokens' epochs and the login throttle's "
                "counters: culled, they are read from the database again. Set OPTIONS MAX_ENTRIES to at "
                "least VERIFIED_TOKEN_CACHE_SIZE, or use Redis.",
                id="epochauth.W004",
            )
        )
    return warnings


@checks.register(checks.Tags.security)
def check_custom_claims(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``CUSTOM_CLAIMS`` names a callable, and the claim names it declares are not reserved ones."""
    try:
        claims.get_claims_callable.cache_clear()
        reserved = claims.reserved_in(claims.declared_claim_names())
    except (ImportError, ImproperlyConfigured, TypeError) as exc:
        return [checks.Error(f'EPOCHAUTH["CUSTOM_CLAIMS"]: {exc}', id="epochauth.E015")]
    if reserved:
        return [
            checks.Error(
                f'EPOCHAUTH["CUSTOM_CLAIMS"] declares reserved claims: {", ".join(reserved)}.',
                hint="Registered claims and epochauth's own are set by epochauth; give yours other names.",
                id="epochauth.E015",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_issuers(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Issuers configured in code: exact URLs, asymmetric algorithms, known options."""
    errors: list[checks.CheckMessage] = []
    entries = conf.epochauth_settings.ISSUERS
    if not isinstance(entries, list | tuple):
        return [checks.Error('EPOCHAUTH["ISSUERS"] must be a list of dicts.', id="epochauth.E007")]
    known = set(issuer_config.IssuerConfig.__dataclass_fields__) | {"enabled"}
    seen: set[str] = set()
    login_slugs: dict[str, str] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("issuer"), str):
            errors.append(
                checks.Error(
                    f"Issuer entry without an issuer string: {entry!r}", id="epochauth.E007"
                )
            )
            continue
        iss = entry["issuer"]
        if iss in seen:
            errors.append(checks.Error(f"{iss}: configured more than once.", id="epochauth.E007"))
        seen.add(iss)
        if entry.get("client_id"):
            slug = issuer_config.login_slug(iss, entry.get("slug") or "")
            if slug in login_slugs:
                errors.append(
                    checks.Error(
                        f"{iss}: its login slug {slug!r} is also that of {login_slugs[slug]}.",
                        hint="Give one of them its own slug.",
                        id="epochauth.E010",
                    )
                )
            login_slugs.setdefault(slug, iss)
        try:
            issuer_config.validate_issuer_url(iss)
        except ValidationError as exc:
            errors.append(
                checks.Error(
                    exc.messages[0],
                    hint='Loopback http issuers need EPOCHAUTH["ALLOW_LOOPBACK_HTTP_ISSUERS"] = True.',
                    id="epochauth.E008",
                )
            )
        if entry.get("status_list") not in (None, statuslist.CLOSED, statuslist.OPEN):
            errors.append(
                checks.Error(
                    f'{iss}: status_list must be "closed", "open" or None.', id="epochauth.E028"
                )
            )
        unknown = sorted(set(entry) - known)
        if unknown:
            errors.append(
                checks.Error(f"{iss}: unknown options {', '.join(unknown)}", id="epochauth.E007")
            )
        algorithms = entry.get("algorithms", ["RS256"])
        if (
            not _strings(algorithms)
            or not algorithms
            or not set(algorithms) <= keys.ASYMMETRIC_ALGORITHMS
        ):
            errors.append(
                checks.Error(
                    f"{iss}: only asymmetric algorithms may be accepted.", id="epochauth.E009"
                )
            )
        for name in ("audiences", "required_scopes", "default_groups", "group_claims"):
            if not _strings(entry.get(name, [])):
                errors.append(
                    checks.Error(f"{iss}: {name} must be a list of strings.", id="epochauth.E007")
                )
        if not issuer_config.valid_group_map(entry.get("group_map", {})) or not isinstance(
            entry.get("group_prefix", ""), str
        ):
            errors.append(
                checks.Error(
                    f"{iss}: group_map must map claim values to group names, and group_prefix be a "
                    "string.",
                    id="epochauth.E007",
                )
            )
        if not issuer_config.valid_group_scopes(entry.get("group_scopes", {})):
            errors.append(
                checks.Error(
                    f"{iss}: group_scopes must map group names to scope strings.",
                    id="epochauth.E007",
                )
            )
        errors.extend(_group_messages(iss, entry))
        required = entry.get("required_scopes", [])
        if _strings(required) and not all(is_scope_token(name) for name in required):
            errors.append(
                checks.Error(
                    f"{iss}: required_scopes holds a name that is not a scope-token.",
                    hint='Printable ASCII without space, " and \\ (RFC 6749 section 3.3).',
                    id="epochauth.E011",
                )
            )
        errors.extend(_profile_messages(iss, entry))
        if not (
            entry.get("audiences")
            or entry.get("accept_any_audience")
            or entry.get("required_scopes")
        ):
            errors.append(
                checks.Warning(
                    f"{iss}: any token this issuer signs is accepted, even one meant for another service.",
                    hint="Set audiences or required_scopes for it.",
                    id="epochauth.W003",
                )
            )
    errors.extend(_shared_namespaces(_settings_prefixes(), set()))
    return errors


def _push_messages() -> list[checks.CheckMessage]:
    """REVOCATION_PUSH: True (Redis when the shared cache is Redis), False, or "database" on a
    database that has a channel (PostgreSQL, or SQLite on one machine)."""
    push = conf.epochauth_settings.REVOCATION_PUSH
    hint = 'True (over Redis when the shared cache is Redis), False, or "database".'
    if not (isinstance(push, bool) or push == "database"):
        return [
            checks.Error(
                f'EPOCHAUTH["REVOCATION_PUSH"] is not a push channel: {push!r}.',
                hint=hint,
                id="epochauth.E021",
            )
        ]
    vendor = connections[router.db_for_write(models.Epoch) or DEFAULT_DB_ALIAS].vendor
    if push == "database" and vendor not in ("postgresql", "sqlite"):
        return [
            checks.Error(
                f'EPOCHAUTH["REVOCATION_PUSH"] = "database" has no channel on {vendor}.',
                hint="PostgreSQL (LISTEN/NOTIFY) or SQLite; or Redis as the shared cache and True.",
                id="epochauth.E021",
            )
        ]
    return []


def _settings_prefixes() -> dict[str, Any]:
    return {
        entry["issuer"]: entry.get("group_prefix")
        for entry in conf.epochauth_settings.ISSUERS
        if isinstance(entry, dict) and isinstance(entry.get("issuer"), str)
    }


def _group_messages(iss: str, entry: dict[str, Any]) -> list[checks.CheckMessage]:
    """Group claims that can join no group: their values are ignored without a mapping or namespace."""
    if entry.get("group_claims") and not entry.get("group_map") and not entry.get("group_prefix"):
        return [
            checks.Warning(
                f"{iss}: its group claims join no group (no group_map, no group_prefix).",
                hint="Map the values to local groups (group_map) or give the issuer a namespace "
                '(group_prefix, e.g. "cms:"), or drop group_claims.',
                id="epochauth.W007",
            )
        ]
    return []


def _shared_namespaces(prefixes: dict[str, Any], reported: set[str]) -> list[checks.CheckMessage]:
    """One issuer's namespace inside another's (``cms:`` and ``cms:x``) lets its claims name the
    other's groups. ``reported``: issuers whose pairs were reported already."""
    named = sorted((iss, p) for iss, p in prefixes.items() if isinstance(p, str) and p)
    return [
        checks.Warning(
            f"{iss}: its group_prefix {prefix!r} overlaps {other}'s {theirs!r}: claims of one issuer "
            "name groups of the other.",
            hint="Give each issuer a prefix that does not start with another's.",
            id="epochauth.W008",
        )
        for i, (iss, prefix) in enumerate(named)
        for other, theirs in named[i + 1 :]
        if (prefix.startswith(theirs) or theirs.startswith(prefix))
        and not {iss, other} <= reported
    ]


@checks.register(checks.Tags.database)
def check_issuer_rows(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Issuer rows written around the admin and ``epochauth_issuer`` (which validate them): the same
    profile rules as for ``ISSUERS``. Runs with ``check --database``, like Django's database checks."""
    # Imported here: checks load before the app registry is ready.
    from .models import Issuer

    errors: list[checks.CheckMessage] = []
    for alias in databases or ():
        # ``migrate`` runs database checks too, before the table exists.
        if Issuer._meta.db_table not in connections[alias].introspection.table_names():
            continue
        fields = ("profile", "accept_any_audience", "group_claims", "group_map", "group_prefix")
        prefixes = _settings_prefixes()
        for row in Issuer.objects.using(alias).only("issuer", *fields):
            entry = {name: getattr(row, name) for name in fields}
            errors.extend(_profile_messages(row.issuer, entry))
            errors.extend(_group_messages(row.issuer, entry))
            prefixes.setdefault(row.issuer, row.group_prefix)
        errors.extend(_shared_namespaces(prefixes, set(_settings_prefixes())))
    return errors


def _profile_messages(iss: str, entry: dict[str, Any]) -> list[checks.CheckMessage]:
    """A token profile we know, and an any-audience only with one (the value is the profile's)."""
    profile = entry.get("profile", "")
    if profile and profile not in profiles.PROFILES:
        return [
            checks.Error(
                f"{iss}: unknown token profile {profile!r}.",
                hint=f"One of {', '.join(sorted(profiles.PROFILES))}, or leave it out.",
                id="epochauth.E016",
            )
        ]
    if entry.get("accept_any_audience") and not profile:
        return [
            checks.Error(
                f"{iss}: accept_any_audience without a token profile accepts no any-audience value.",
                hint='Set "profile": "wlcg" (https://wlcg.cern.ch/jwt/v1/any) or "scitokens" (ANY).',
                id="epochauth.E017",
            )
        ]
    return []


def _valid_rate(rate: Any) -> bool:
    try:
        return throttling.parse_rate(rate)[0] > 0
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def _strings(value: Any) -> bool:
    """A list (or tuple) of strings; a bare string would be read letter by letter."""
    return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)


@checks.register(checks.Tags.security)
def check_communities(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """``COMMUNITIES`` (epochauth.communities): the shape and names (E029), one issuer each that no
    one else has (E030), and keys that load (E031)."""
    configured = conf.epochauth_settings.COMMUNITIES
    if not isinstance(configured, dict):
        return [checks.Error('EPOCHAUTH["COMMUNITIES"] must be a dict.', id="epochauth.E029")]
    errors = _community_names(configured)
    entries = conf.epochauth_settings.ISSUERS
    entries = entries if isinstance(entries, list | tuple) else []  # else E007
    external = {entry.get("issuer") for entry in entries if isinstance(entry, dict)}
    taken = {conf.epochauth_settings.ISSUER: "the site"}
    for slug, options in configured.items():
        if not isinstance(options, dict) or not communities.SLUG.fullmatch(str(slug)):
            continue  # E029 above
        errors += _community(slug, options, taken, external)
    return errors


def _community(
    slug: str, options: dict[str, Any], taken: dict[str, str], external: set[Any]
) -> list[checks.CheckMessage]:
    """One community's checks; records its issuer in ``taken``."""
    providers = options.get("identity_providers")
    if providers is not None and (
        not isinstance(providers, list | tuple) or not all(isinstance(p, str) for p in providers)
    ):
        message = f"Community {slug}: identity_providers must be None or a list of issuers."
        return [checks.Error(message, id="epochauth.E029")]
    issuer = options.get("issuer")
    if issuer is not None and not str(issuer).startswith(("https://", "http://")):
        message = f"Community {slug}: its issuer must be an http(s) URL, not {issuer!r}."
        return [checks.Error(message, id="epochauth.E030")]
    try:
        community = communities.load(slug, options)
    except (ImproperlyConfigured, OSError, TypeError, ValueError) as exc:
        return [checks.Error(f"Community {slug}: {exc}", id="epochauth.E031")]
    errors: list[checks.CheckMessage] = []
    signing = community.keyring.signing
    if signing.is_symmetric and len(signing.signing_key) < 32:
        message = f"Community {slug}: the HMAC signing key must be at least 32 bytes."
        errors.append(checks.Error(message, id="epochauth.E031"))
    if community.issuer in taken or community.issuer in external:
        other = taken.get(community.issuer, "an external issuer")
        message = f"Community {slug}: its issuer {community.issuer} is also {other}'s."
        errors.append(checks.Error(message, id="epochauth.E030"))
    taken[community.issuer] = f"community {slug}"
    unknown = sorted((community.identity_providers or frozenset()) - external)
    if unknown:
        message = f"Community {slug}: identity_providers not in ISSUERS: {', '.join(unknown)}"
        errors.append(checks.Error(message, id="epochauth.E029"))
    return errors


def _community_names(configured: dict[Any, Any]) -> list[checks.CheckMessage]:
    """E029: slugs, options, ``DEFAULT_COMMUNITY`` and ``ACCEPTED_COMMUNITIES`` name communities."""
    errors: list[checks.CheckMessage] = []
    for slug, options in configured.items():
        if not isinstance(slug, str) or not communities.SLUG.fullmatch(slug):
            errors.append(
                checks.Error(
                    f"Community {slug!r}: a slug is letters, digits, - and _.", id="epochauth.E029"
                )
            )
        elif not isinstance(options, dict):
            errors.append(
                checks.Error(f"Community {slug}: its options must be a dict.", id="epochauth.E029")
            )
        elif set(options) - communities.OPTIONS:
            unknown = ", ".join(sorted(map(str, set(options) - communities.OPTIONS)))
            errors.append(
                checks.Error(f"Community {slug}: unknown options {unknown}", id="epochauth.E029")
            )
    default = conf.epochauth_settings.DEFAULT_COMMUNITY
    if default is not None and default not in configured:
        errors.append(
            checks.Error(
                f'EPOCHAUTH["DEFAULT_COMMUNITY"] {default!r} is not in COMMUNITIES.',
                id="epochauth.E029",
            )
        )
    accepted = conf.epochauth_settings.ACCEPTED_COMMUNITIES
    if accepted is not None and (
        not isinstance(accepted, list | tuple | set | frozenset)
        or not all(name in configured for name in accepted)
    ):
        errors.append(
            checks.Error(
                'EPOCHAUTH["ACCEPTED_COMMUNITIES"] must be None or a list of COMMUNITIES slugs.',
                id="epochauth.E029",
            )
        )
    return errors
