"""Per-request cost of bearer authentication in DRF: tokenauth against its peers, in one process.

What is measured: one DRF ``APIView`` (GET -> ``{"hello": request.user.username}``) served once per
authentication variant -- no auth (``AllowAny``, no authentication classes), tokenauth
``BearerAuthentication`` with an HS256 and an RS256 token, simplejwt ``JWTAuthentication`` and
``JWTStatelessUserAuthentication``, and django-oauth-toolkit ``OAuth2Authentication`` with an opaque
token. Each iteration builds the request with ``APIRequestFactory`` and calls ``view(request)``
(the response is not rendered), so request building and DRF dispatch are in every variant alike and
cancel out in "added cost" (= variant - no auth). Two extra tokenauth rows drop the token from
tokenauth's verified-token memo before every request, i.e. they pay the signature check every time
(the cost of a token's first request); the cached rows still check expiry and revocation each time.
The floors are plain ``jwt.decode`` calls of the same HS256 / RS256 tokens (a function call, no request):
no authentication that verifies a JWT per request can be cheaper than that.

Why this way: variants run round-robin (rotating start) in one process, so drift in CPU frequency or
load hits them all alike. Each request is timed alone (``perf_counter_ns``); the reported value is the
median over rounds of the round's mean per request (GC and periodic refreshes included), next to the
median of all single requests (robust when other processes steal the CPU).
SQL queries are counted over every timed request with a ``connection.execute_wrapper`` counter.

Both tokenauth variants share one configuration: the keyring signs with HS256 and also verifies an
RS256 key listed in ``VERIFICATION_KEYS``; the RS256 token is minted once under ``override_settings``
with that key as signer. Verification picks the key by ``kid`` and the algorithm from the key,
exactly as for a signing key, and no settings change (which would flush tokenauth's caches) happens
while timing.

DOT-issued JWT: with ``tokenauth.oauth`` installed, django-oauth-toolkit's own token endpoint
(``tokenauth.oauth.views.TokenView``, i.e. DOT's ``TokenView`` through oauthlib and tokenauth's server,
validator and generator) issues a client_credentials token for the same application that owns the
opaque token; ``BearerAuthentication`` is timed on that JWT against DOT's ``OAuth2Authentication`` on
the opaque token (target: at least 3x faster per request, 0 queries).

External issuer: the bench starts the test OpenID provider of the suite (``tests/idp``, the
``oidc-provider`` Node package, on loopback; ``TestIdP`` runs ``npm ci`` itself if needed), lists it in
``TOKENAUTH["ISSUERS"]`` (required scope ``servicex``, audience ``https://api.example.test``) and
times ``BearerAuthentication`` on one of its client_credentials RS256 tokens, interleaved with the
rest; its floor is a bare ``jwt.decode`` of that same token with the IdP's public key. The IdP's
request counter gives the number of JWKS fetches over the whole run (warm-up included). Without
``node`` (or with ``--no-idp``) these rows are skipped with a printed note.

Run: ``.venv/bin/python bench/run.py [--rounds 30] [--requests 200] [--profile] [--no-idp]``
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import platform
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

import django
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
HS_SECRET = "bench-hs256-secret-0123456789abcdef0123456789abcdef"
ISSUER = "https://bench.example"
IDP_AUDIENCE = "https://api.example.test"  # tests/idp's default resource: the "aud" of its tokens
IDP_SCOPE = "servicex"
EXTERNAL = "tokenauth external RS256 (allow-listed issuer)"
EXTERNAL_COLD = "tokenauth external RS256, signature checked every request"
EXTERNAL_FLOOR = "floor: jwt.decode RS256, IdP token (function call)"
DOT_OPAQUE = "django-oauth-toolkit OAuth2Authentication"
DOT_JWT = "tokenauth on a DOT-issued JWT (client_credentials, HS256)"
DOT_JWT_COLD = "tokenauth on a DOT-issued JWT, signature checked every request"
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"
# What tokenauth.oauth needs from DOT (see README, "OAuth2 authorization server").
OAUTH2_PROVIDER = {
    "OAUTH2_SERVER_CLASS": "tokenauth.oauth.server.Server",
    "OAUTH2_VALIDATOR_CLASS": "tokenauth.oauth.validators.TokenAuthValidator",
    "SCOPES_BACKEND_CLASS": "tokenauth.oauth.scopes.TokenAuthScopes",
    "ROTATE_REFRESH_TOKEN": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
}


def configure(rsa_pem: str, idp_issuer: str | None) -> None:
    from datetime import timedelta

    issuers = [{"issuer": idp_issuer, "audiences": [IDP_AUDIENCE], "required_scopes": [IDP_SCOPE]}]
    settings.configure(
        DEBUG=False,
        SECRET_KEY="bench-django-secret-key-0123456789abcdef0123456789abcdef",
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "rest_framework",
            "tokenauth",
            "oauth2_provider",
            "tokenauth.oauth",
        ],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        ALLOWED_HOSTS=["*"],
        TOKENAUTH={
            "ISSUER": ISSUER,
            "ALGORITHM": "HS256",
            "SIGNING_KEY": HS_SECRET,
            "VERIFICATION_KEYS": [{"algorithm": "RS256", "key": rsa_pem, "kid": "bench-rs256"}],
            "ISSUERS": issuers if idp_issuer else [],
            "ALLOW_LOOPBACK_HTTP_ISSUERS": True,  # the test IdP serves http on 127.0.0.1
            "SCOPES": {"read": "the scope of the opaque DOT token, requested for the DOT-issued JWT"},
            # Our tokens (the DOT-issued one too) must not expire during a long run with --rounds.
            "ACCESS_TOKEN_LIFETIME": timedelta(days=1),
        },
        OAUTH2_PROVIDER=OAUTH2_PROVIDER,
        SIMPLE_JWT={"ALGORITHM": "HS256", "SIGNING_KEY": HS_SECRET},
    )
    django.setup()


def build_variants(rsa_pem: str, idp: Any = None) -> dict[str, Callable[[], Any]]:
    """name -> one zero-argument call that performs one request (or one floor decode)."""
    from datetime import timedelta

    import jwt
    from django.core.management import call_command
    from django.test import override_settings
    from django.utils import timezone
    from oauth2_provider.contrib.rest_framework import OAuth2Authentication
    from oauth2_provider.models import AccessToken as DotAccessToken
    from oauth2_provider.models import Application
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView
    from rest_framework_simplejwt.authentication import (
        JWTAuthentication,
        JWTStatelessUserAuthentication,
    )
    from rest_framework_simplejwt.tokens import AccessToken as SimpleAccessToken

    from tokenauth.authentication import BearerAuthentication
    from tokenauth.keys import get_keyring
    from tokenauth.tokens import mint_access_token, verified_tokens

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("alice", password="unused")
    hs_token = mint_access_token(user).token
    rs_signer = {"ALGORITHM": "RS256", "SIGNING_KEY": rsa_pem, "KEY_ID": "bench-rs256"}
    rs_signer["VERIFICATION_KEYS"] = []  # the RS256 key signs; the HS256 key is not needed to mint
    with override_settings(TOKENAUTH={**settings.TOKENAUTH, **rs_signer}):
        rs_token = mint_access_token(user).token
    app = Application.objects.create(
        name="bench",
        user=user,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        client_secret=CLIENT_SECRET,
    )
    dot_token = "bench-opaque-dot-token-0123456789abcdef"
    DotAccessToken.objects.create(
        user=user, application=app, token=dot_token, scope="read", expires=timezone.now() + timedelta(hours=1)
    )
    sj_token = str(SimpleAccessToken.for_user(user))
    dot_jwt = dot_issued_token(app.client_id)
    keyring = get_keyring()
    hs_key, rs_key = keyring.signing.verifying_key, keyring.by_kid["bench-rs256"].verifying_key

    class Hello(APIView):
        def get(self, request: Any) -> Response:
            return Response({"hello": request.user.username})

    def view(auth: list[type], perm: type = IsAuthenticated) -> Callable[..., Any]:
        return Hello.as_view(authentication_classes=auth, permission_classes=[perm])

    factory = APIRequestFactory()

    def request_call(v: Callable[..., Any], token: str | None, forget: bool = False) -> Callable[[], Any]:
        extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}

        def call() -> Any:
            if forget:  # dropping just this token keeps the other rows' memo warm
                verified_tokens.discard(token)
            return v(factory.get("/hello/", **extra))

        return call

    tokenauth = view([BearerAuthentication])
    external: dict[str, Callable[[], Any]] = {}
    if idp is not None:
        # After the override_settings above: leaving it flushes tokenauth's caches (the JWKS cache too).
        ext_token = idp.client_credentials_token(scope=IDP_SCOPE)
        kid = jwt.get_unverified_header(ext_token)["kid"]
        jwk = next(k for k in idp.keys()["keys"] if k["kid"] == kid)  # admin route: no JWKS request
        ext_key = jwt.PyJWK(jwk).key
        external = {
            EXTERNAL: request_call(tokenauth, ext_token),
            EXTERNAL_COLD: request_call(tokenauth, ext_token, forget=True),
            EXTERNAL_FLOOR: lambda: jwt.decode(
                ext_token, ext_key, algorithms=["RS256"], audience=IDP_AUDIENCE
            ),
        }
    return {
        "no auth": request_call(view([], AllowAny), None),
        "tokenauth HS256": request_call(tokenauth, hs_token),
        "tokenauth RS256": request_call(tokenauth, rs_token),
        "tokenauth HS256, signature checked every request": request_call(tokenauth, hs_token, forget=True),
        "tokenauth RS256, signature checked every request": request_call(tokenauth, rs_token, forget=True),
        "simplejwt JWTAuthentication": request_call(view([JWTAuthentication]), sj_token),
        "simplejwt JWTStatelessUserAuthentication": request_call(
            view([JWTStatelessUserAuthentication]), sj_token
        ),
        DOT_OPAQUE: request_call(view([OAuth2Authentication]), dot_token),
        DOT_JWT: request_call(tokenauth, dot_jwt),
        DOT_JWT_COLD: request_call(tokenauth, dot_jwt, forget=True),
        "floor: jwt.decode HS256 (function call)": lambda: jwt.decode(hs_token, hs_key, algorithms=["HS256"]),
        "floor: jwt.decode RS256 (function call)": lambda: jwt.decode(rs_token, rs_key, algorithms=["RS256"]),
        **external,
    }


def dot_issued_token(client_id: str) -> str:
    """A client_credentials access token from DOT's token endpoint code path, as a client gets it."""
    import base64
    import json

    import jwt
    from django.test import RequestFactory

    from tokenauth.oauth.views import TokenView

    credentials = base64.b64encode(f"{client_id}:{CLIENT_SECRET}".encode()).decode()
    request = RequestFactory().post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": "read"},
        HTTP_AUTHORIZATION=f"Basic {credentials}",
    )
    response = TokenView.as_view()(request)
    body = json.loads(response.content)
    if response.status_code != 200:
        raise SystemExit(f"DOT token endpoint: HTTP {response.status_code} {body}")
    token = body["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    if jwt.get_unverified_header(token).get("typ") != "at+jwt" or claims.get("client_id") != client_id:
        raise SystemExit(f"DOT token endpoint issued no tokenauth JWT: {claims}")
    return token


Timings = dict[str, list[float]]


def measure(
    variants: dict[str, Callable[[], Any]], rounds: int, n: int
) -> tuple[Timings, Timings, dict[str, float]]:
    """Per variant: µs/call of each interleaved round, µs of every single call, SQL queries per call."""
    from django.db import connection

    for name, fn in variants.items():  # warm-up, and a sanity check that every request succeeds
        for _ in range(max(50, n // 4)):
            result = fn()
        status = getattr(result, "status_code", 200)
        if status != 200:
            raise SystemExit(f"{name}: HTTP {status} {getattr(result, 'data', '')}")
    queries = dict.fromkeys(variants, 0)
    current = [""]

    def count(execute: Callable[..., Any], *args: Any) -> Any:
        queries[current[0]] += 1
        return execute(*args)

    per_round: Timings = {name: [] for name in variants}
    single: Timings = {name: [] for name in variants}
    names, clock = list(variants), time.perf_counter_ns
    gc.collect()
    gc.freeze()
    with connection.execute_wrapper(count):
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                fn, current[0], times = variants[name], name, []
                for _ in range(n):
                    start = clock()
                    fn()
                    times.append((clock() - start) / 1000)
                per_round[name].append(sum(times) / n)
                single[name] += times
    return per_round, single, {name: q / (rounds * n) for name, q in queries.items()}


def table(per_round: Timings, single: Timings, queries: dict[str, float]) -> str:
    base = statistics.median(per_round["no auth"])
    rows = [
        "| variant | median µs/request | rounds p25–p75 | median single request µs | × no auth "
        "| added µs over no auth | SQL queries/request |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in per_round.items():
        us, (p25, _, p75) = statistics.median(s), statistics.quantiles(s, n=4)
        cells = f"| {name} | {us:.1f} | {p25:.0f}–{p75:.0f} | {statistics.median(single[name]):.1f} "
        if name.startswith("floor"):
            rows.append(cells + f"| – | {us:.1f} (the whole call) | 0 |")
        else:
            added = "–" if name == "no auth" else f"{us - base:+.1f}"
            rows.append(cells + f"| {us / base:.2f} | {added} | {queries[name]:g} |")
    return "\n".join(rows)


def verdicts(
    per_round: Timings, single: Timings, queries: dict[str, float], idp_stats: dict[str, Any] | None
) -> list[str]:
    med = {name: statistics.median(s) for name, s in per_round.items()}
    one = {name: statistics.median(s) for name, s in single.items()}
    base, sj = med["no auth"], med["simplejwt JWTAuthentication"]
    lines = []
    for alg in ("HS256", "RS256"):
        name, floor = f"tokenauth {alg}", f"floor: jwt.decode {alg} (function call)"
        added, total = med[name] - base, med[name]
        lines += [
            f"- {'PASS' if added <= med[floor] else 'FAIL'} {name}: added cost {added:.1f} µs "
            f"<= bare jwt.decode {alg} {med[floor]:.1f} µs (single-request medians: "
            f"{one[name] - one['no auth']:.1f} vs {one[floor]:.1f} µs)",
            f"- {'PASS' if sj / total >= 2 else 'FAIL'} {name}: {sj / total:.2f}x faster than simplejwt "
            f"JWTAuthentication per request (total {total:.1f} vs {sj:.1f} µs; target >= 2x; "
            f"added cost {added:.1f} vs {sj - base:.1f} µs)",
            f"- {'PASS' if queries[name] == 0 else 'FAIL'} {name}: {queries[name]:g} SQL queries/request",
        ]
    lines += dot_verdicts(med, queries)
    if idp_stats is not None:
        lines += external_verdicts(med, one, queries, idp_stats)
    return lines


def dot_verdicts(med: dict[str, float], queries: dict[str, float]) -> list[str]:
    """A DOT-issued JWT: at least 3x faster than DOT's own authentication of its opaque token, 0 queries."""
    base, dot, total, cold = med["no auth"], med[DOT_OPAQUE], med[DOT_JWT], med[DOT_JWT_COLD]
    return [
        f"- {'PASS' if dot / total >= 3 else 'FAIL'} {DOT_JWT}: {dot / total:.2f}x faster than DOT "
        f"OAuth2Authentication on its opaque token per request (total {total:.1f} vs {dot:.1f} µs; "
        f"target >= 3x; added cost {total - base:.1f} vs {dot - base:.1f} µs)",
        f"- {'PASS' if queries[DOT_JWT] == 0 else 'FAIL'} {DOT_JWT}: {queries[DOT_JWT]:g} SQL "
        f"queries/request (signature checked every request: {queries[DOT_JWT_COLD]:g}; "
        f"DOT opaque: {queries[DOT_OPAQUE]:g})",
        f"- info {DOT_JWT_COLD}: {dot / cold:.2f}x faster than DOT OAuth2Authentication "
        f"(total {cold:.1f} µs; a token's first request in a process; not the target)",
    ]


def external_verdicts(
    med: dict[str, float], one: dict[str, float], queries: dict[str, float], idp_stats: dict[str, Any]
) -> list[str]:
    """The external issuer's targets: within 1.1x of the bare RS256 floor, 0 queries, one JWKS fetch."""
    base, floor = med["no auth"], med[EXTERNAL_FLOOR]
    added, total, limit = med[EXTERNAL] - base, med[EXTERNAL], 1.1 * floor
    cold_added = med[EXTERNAL_COLD] - base
    jwks, discovery = idp_stats["jwks"], idp_stats["discovery"]
    return [
        f"- {'PASS' if added <= limit else 'FAIL'} {EXTERNAL}: added cost {added:.1f} µs over no auth "
        f"<= 1.1 x bare jwt.decode RS256 of the same IdP token {floor:.1f} µs = {limit:.1f} µs "
        f"(added/floor {added / floor:.2f}x; single-request medians: "
        f"{one[EXTERNAL] - one['no auth']:.1f} vs {one[EXTERNAL_FLOOR]:.1f} µs)",
        f"- info {EXTERNAL}: ratio of totals {total / floor:.2f}x (whole request {total:.1f} µs, "
        f"DRF dispatch included, vs the bare decode call {floor:.1f} µs)",
        f"- info {EXTERNAL_COLD}: added cost {cold_added:.1f} µs = {cold_added / floor:.2f}x the floor "
        "(a token's first request in a process; not the target)",
        f"- {'PASS' if queries[EXTERNAL] == 0 else 'FAIL'} {EXTERNAL}: {queries[EXTERNAL]:g} SQL "
        f"queries/request (signature checked every request: {queries[EXTERNAL_COLD]:g})",
        f"- {'PASS' if jwks == 1 else 'FAIL'} {EXTERNAL}: {jwks} JWKS fetch(es) and {discovery} "
        "discovery fetch(es) for the whole run, warm-up included (counted by the IdP; target 1 JWKS fetch)",
    ]


def start_idp(disabled: bool) -> tuple[Any, str]:
    """The test OpenID provider of tests/idp, or None and why not (the external rows are then skipped)."""
    if disabled:
        return None, "--no-idp"
    from tests.idp import IdPError, TestIdP

    idp = TestIdP()
    try:
        # A long token lifetime, so that a long run with --rounds never sees the token expire.
        return idp.start(env={"IDP_ACCESS_TOKEN_TTL": "86400"}), ""
    except (IdPError, OSError) as exc:
        return None, f"cannot start the test IdP: {(str(exc) or type(exc).__name__).splitlines()[0]}"


def idp_versions() -> str:
    """node and oidc-provider versions, for the report header."""
    import json
    import subprocess

    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    package = ROOT / "tests" / "idp" / "node_modules" / "oidc-provider" / "package.json"
    return f"node {node}, oidc-provider {json.loads(package.read_text())['version']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="requests per variant per round")
    parser.add_argument(
        "--profile", action="store_true", help="also cProfile tokenauth HS256 requests (its own functions)"
    )
    parser.add_argument("--no-idp", action="store_true", help="skip the external-issuer (test IdP) variant")
    args = parser.parse_args()

    from tokenauth.keys import generate_private_key_pem  # imports no models; fine before setup

    rsa_pem = generate_private_key_pem("RS256")
    idp, skipped = start_idp(args.no_idp)
    skip_line = f"- SKIPPED {EXTERNAL}: {skipped}"
    if idp is None:
        print(f"note: {skip_line[2:]}")
    try:
        configure(rsa_pem, idp.issuer if idp else None)
        variants = build_variants(rsa_pem, idp)
        per_round, single, queries = measure(variants, args.rounds, args.requests)
        idp_stats = idp.stats() if idp else None
        idp_env = f"; test IdP: {idp_versions()}, RS256 2048-bit keys" if idp else "; no test IdP (skipped)"
    finally:
        if idp is not None:
            idp.stop()
    pkgs = "Django djangorestframework PyJWT cryptography djangorestframework-simplejwt django-oauth-toolkit"
    env = ", ".join(f"{p} {version(p)}" for p in pkgs.split())
    report = "\n".join(
        [
            f"{date.today()} · Python {platform.python_version()} · {platform.machine()} · {env} · "
            f"{args.rounds} rounds × {args.requests} requests per variant, interleaved; "
            f"SQLite in memory, LocMemCache{idp_env}",
            "",
            table(per_round, single, queries),
            "",
            "Targets (x faster = total per-request time; floor comparison = added cost over no auth):",
            *verdicts(per_round, single, queries, idp_stats),
            *([] if idp_stats else [skip_line]),
        ]
    )
    print(report)
    out = Path(__file__).resolve().parent / "results" / "latest.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(report + "\n")
    print(f"\nwritten to {out.relative_to(ROOT)}")
    if args.profile:
        fn, profiler = variants["tokenauth HS256"], cProfile.Profile()
        profiler.runcall(lambda: [fn() for _ in range(20000)])
        print("\ncProfile, 20000 tokenauth HS256 requests: tokenauth's functions by cumulative time")
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(r"tokenauth[/\\]", 15)


if __name__ == "__main__":
    main()
