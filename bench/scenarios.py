"""The bench processes. Each function runs in a fresh process whose settings it was configured with
(``bench.settings.configure``), and returns a JSON-able result: timed rows and measured facts."""

from __future__ import annotations

import gc
import itertools
import resource
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection
from django.test import override_settings
from django.utils import timezone

from epochauth import authentication
from epochauth.authentication import authenticate_token
from epochauth.conf import epochauth_settings
from epochauth.revocation import is_loaded, revoke_id
from epochauth.tokens import mint_access_token

from . import fixtures, limits, urls
from .counters import Counters
from .measure import BASELINE, Sizes, Variant, measure, paired
from .settings import HS_SECRET, IDP_AUDIENCE, IDP_SCOPE, ISSUER, RS_KID
from .wsgi import HOST, Server, bearer

NONE, EPOCHAUTH = "/api/none/", "/api/epochauth/"
PYJWT_HS256, PYJWT_IDP = "/api/pyjwt-hs256/", "/api/pyjwt-idp/"
DRF_FLOOR = "/api/drf-floor/"
#: What ``request.build_absolute_uri()`` gives for EPOCHAUTH under ``wsgi.BASE_ENVIRON``: a proof's htu.
EPOCHAUTH_URL = f"https://{HOST}{EPOCHAUTH}"
CLIENT_SECRET = "bench-client-secret-0123456789abcdef"


def rss_mb() -> float:
    """Resident set size now (VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def result(rows: list[Any], **facts: Any) -> dict[str, Any]:
    return {
        "rows": [row.as_dict() for row in rows],
        "facts": {**facts, "max_rss_mb": max_rss_mb()},
    }


def no_auth(server: Server) -> Variant:
    return Variant(BASELINE, server.get(NONE))


def cold_tokens(factory: fixtures.TokenFactory, user: Any, count: int) -> list[str]:
    """Distinct tokens of one user, more than the verified-token memo holds (each a first request)."""
    size = max(count, epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE + 1)
    tokens = [factory.token(user.pk, user.get_username()) for _ in range(size + 20)]
    fixtures.verify(tokens)
    return [bearer(t) for t in tokens]


def each_call(authorizations: list[str]) -> Callable[[], Any]:
    """``validate_token`` of the next of ``authorizations`` each call (cycling): the cold path as a
    function call, to set beside the physical limit (module attribute: the memo-hit counter sees it)."""
    tokens = itertools.cycle([a.split(" ", 1)[1] for a in authorizations])
    return lambda: authentication.validate_token(next(tokens))


# -- the peers, memo hits and cold tokens ---------------------------------------------------------


def requests(sizes: Sizes, rsa_pem: str, idp: Any) -> dict[str, Any]:
    """Every authentication class on the same view, and the floors (bare ``jwt.decode`` calls)."""
    server, user = Server(), setup_user()
    hs = mint_access_token(user).token
    rs_signer = {
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem,
        "KEY_ID": RS_KID,
        "VERIFICATION_KEYS": [],
    }
    with override_settings(EPOCHAUTH={**settings.EPOCHAUTH, **rs_signer}):
        rs = mint_access_token(user).token
    started = time.perf_counter()
    factory = fixtures.TokenFactory(user)
    cold = cold_tokens(factory, user, sizes.timed)
    mint_s = time.perf_counter() - started
    # Tokens of their own: the request row's would be memo hits here, a round after it.
    cold_calls = cold_tokens(factory, user, sizes.timed)
    urls.PLUMBING_USERS[hs] = urls.ClaimsUser({"sub": user.get_username()})
    # Our tokens always carry aud (RFC 9068): a verifier with PyJWT names it.
    hs_decode: dict[str, Any] = {"algorithms": ["HS256"], "audience": ISSUER}
    urls.FLOOR_DECODES["hs256"] = (HS_SECRET, hs_decode)
    rs_public = load_pem_private_key(rsa_pem.encode(), None).public_key()
    app = dot_application(user)
    variants = [
        no_auth(server),
        Variant(
            "epochauth HS256, memo hit (the same token again)",
            server.get(EPOCHAUTH, bearer(hs)),
            limit=limits.DICT,
        ),
        Variant("epochauth RS256, memo hit", server.get(EPOCHAUTH, bearer(rs)), limit=limits.DICT),
        Variant(
            "epochauth HS256 as STATUS_LIST issues it (a status claim in the token), memo hit",
            server.get(EPOCHAUTH, bearer(status_listed(user))),
            limit=limits.DICT,
        ),
        *dpop_rows(server, user, sizes),
        Variant(
            f"epochauth HS256, cold: a new token each request ({len(cold)} distinct)",
            server.get_each(EPOCHAUTH, cold),
            distinct=True,
            limit=limits.HS256,
        ),
        Variant(
            f"epochauth HS256, cold, as a function call: validate_token, a new token each call "
            f"({len(cold_calls)} distinct)",
            each_call(cold_calls),
            floor=True,
            distinct=True,
            limit=limits.HS256,
        ),
        Variant(
            "floor: DRF plumbing (the header, a dict lookup, a user: what any token authentication does)",
            server.get(DRF_FLOOR, bearer(hs)),
        ),
        Variant(
            "epochauth on a DOT-issued JWT (client_credentials, HS256)",
            server.get(EPOCHAUTH, bearer(dot_jwt(server, app))),
            limit=limits.DICT,
        ),
        *peers(server, user, app),
        Variant(
            "floor: jwt.decode HS256 (function call)",
            lambda: jwt.decode(hs, HS_SECRET, **hs_decode),
            floor=True,
        ),
        Variant(
            f"floor: jwt.decode HS256 in the request path (a new token each request, {len(cold)} distinct)",
            server.get_each(PYJWT_HS256, cold),
        ),
        Variant(
            "floor: jwt.decode RS256 (function call)",
            lambda: jwt.decode(rs, rs_public, algorithms=["RS256"], audience=ISSUER),
            floor=True,
        ),
        *external(server, sizes, idp),
        *limits.hs256_rows(hs, HS_SECRET),
    ]
    rows, _ = measure(variants, sizes.rounds, sizes.requests, redis=False, warmup=sizes.warmup)
    facts: dict[str, Any] = {"cold_tokens": len(cold), "cold_mint_s": mint_s}
    if idp is not None:
        facts["idp"] = idp.stats()
    return result(rows, **facts)


def status_listed(user: Any) -> str:
    """A token as it is with ``STATUS_LIST`` on: ``status.status_list`` names its session's bit. Our own
    verifier does not read the list (epochs say more, sooner): the row shows the claim costs nothing."""
    reference = {"idx": 123_456, "uri": f"{ISSUER}/auth/statuslists/0"}
    return mint_access_token(user, extra_claims={"status": {"status_list": reference}}).token


def dpop_rows(
    server: Server,
    user: Any,
    sizes: Sizes,
    algorithms: tuple[str, ...] = tuple(fixtures.DPOP_KEYS),
) -> list[Variant]:
    """For each of ``algorithms``: a token bound to a key of it, sent as ``Authorization: DPoP`` with a new
    proof each request (a memo hit but for the proof's signature and its jti written to the shared
    cache), and the bare verification of its signature, the row's physical limit. The proofs are signed
    here, before timing (the client's cost), one for every request the row makes."""
    variants = []
    for name in algorithms:
        key = fixtures.ProofKey(name)
        token = mint_access_token(user, extra_claims={"cnf": {"jkt": key.jkt}}).token
        proofs = key.proofs(sizes.timed, EPOCHAUTH_URL, token)
        variants += [
            Variant(
                f"epochauth DPoP {name}: a memo-hit token and a new proof each request",
                server.get_proofs(EPOCHAUTH, f"DPoP {token}", proofs),
                limit=limits.DPOP[name],
            ),
            limits.dpop_row(name, proofs[0], key.public_key),
        ]
    return variants


def setup_user() -> Any:
    fixtures.migrate()
    return get_user_model().objects.create_user("alice", password=fixtures.PASSWORD)


#: The peers' views: ``(row name, path)``, the token each needs from :func:`peer_tokens`.
PEERS = [
    ("simplejwt JWTAuthentication", "/api/simplejwt/"),
    ("simplejwt JWTStatelessUserAuthentication", "/api/simplejwt-stateless/"),
    ("django-oauth-toolkit OAuth2Authentication (opaque token)", "/api/dot/"),
    ("knox TokenAuthentication", "/api/knox/"),
]


def peer_tokens(user: Any, app: Any) -> dict[str, str]:
    """The Authorization header of each peer's path, with the token its own code issues: simplejwt's
    ``AccessToken.for_user``, an opaque DOT ``AccessToken`` row of ``app``, a knox ``AuthToken``."""
    from knox.models import AuthToken
    from oauth2_provider.models import AccessToken as DotAccessToken
    from rest_framework_simplejwt.tokens import AccessToken as SimpleAccessToken

    simplejwt = bearer(str(SimpleAccessToken.for_user(user)))
    opaque = "bench-opaque-dot-token-0123456789abcdef"
    DotAccessToken.objects.create(
        user=user,
        application=app,
        token=opaque,
        scope="read",
        expires=timezone.now() + timedelta(days=1),
    )
    _, knox = AuthToken.objects.create(user)
    return {
        "/api/simplejwt/": simplejwt,
        "/api/simplejwt-stateless/": simplejwt,
        "/api/dot/": bearer(opaque),
        "/api/knox/": f"Token {knox}",
    }


def peers(server: Server, user: Any, app: Any) -> list[Variant]:
    """simplejwt (both classes), DOT's opaque tokens, knox: each with the token its own code issues."""
    tokens = peer_tokens(user, app)
    return [Variant(name, server.get(path, tokens[path])) for name, path in PEERS]


def dot_application(user: Any) -> Any:
    """The confidential client that owns the opaque DOT token and gets the DOT-issued JWT."""
    from oauth2_provider.models import Application

    return Application.objects.create(
        name="bench",
        user=user,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        client_secret=CLIENT_SECRET,
    )


def dot_jwt(server: Server, app: Any) -> str:
    """A client_credentials token from DOT's token endpoint (epochauth.oauth), over a client's URL."""
    import base64
    from urllib.parse import urlencode

    basic = base64.b64encode(f"{app.client_id}:{CLIENT_SECRET}".encode()).decode()
    body = urlencode({"grant_type": "client_credentials", "scope": "read"}).encode()
    response = server.request(
        "POST",
        "/o/token/",
        {"HTTP_AUTHORIZATION": f"Basic {basic}"},
        body,
        "application/x-www-form-urlencoded",
    )
    if response.status != 200:
        raise SystemExit(f"DOT token endpoint: HTTP {response.status} {response.body[:300]!r}")
    token = response.json()["access_token"]
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise SystemExit("DOT token endpoint issued no epochauth JWT")
    return token


def external(server: Server, sizes: Sizes, idp: Any) -> list[Variant]:
    """The test IdP's RS256 tokens: one repeated, and a new one for every request (each used once)."""
    if idp is None:
        return []
    from concurrent.futures import ThreadPoolExecutor

    token = idp.client_credentials_token(scope=IDP_SCOPE)
    with ThreadPoolExecutor(4) as pool:
        cold = list(
            pool.map(
                lambda _: idp.client_credentials_token(scope=IDP_SCOPE), range(sizes.timed + 1)
            )
        )
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(
        next(k for k in idp.keys()["keys"] if k["kid"] == kid)
    ).key  # admin route: no JWKS fetch
    idp_decode: dict[str, Any] = {"algorithms": ["RS256"], "audience": IDP_AUDIENCE}
    urls.FLOOR_DECODES["idp"] = (key, idp_decode)
    return [
        Variant(
            "epochauth external RS256 (allow-listed issuer), memo hit",
            server.get(EPOCHAUTH, bearer(token)),
            limit=limits.DICT,
        ),
        Variant(
            f"epochauth external RS256, cold: a new IdP token each request ({len(cold)} distinct)",
            server.get_each(EPOCHAUTH, [bearer(t) for t in cold]),
            distinct=True,
            limit=limits.RS256,
        ),
        Variant(
            "floor: jwt.decode RS256, IdP token (function call)",
            lambda: jwt.decode(token, key, **idp_decode),
            floor=True,
        ),
        Variant(
            f"floor: jwt.decode RS256, IdP token in the request path ({len(cold)} distinct)",
            server.get_each(PYJWT_IDP, [bearer(t) for t in cold]),
        ),
        limits.rs256_row(token, key),
    ]


# -- many users --------------------------------------------------------------------------------


def users(sizes: Sizes, redis: bool) -> dict[str, Any]:
    """``sizes.users`` users, each with a token of their own, in steady state: every user was seen once
    (as a long-running worker has seen them), then the distinct row cycles through all of them, so a
    user comes back only after all the others. There are more users than ``VERIFIED_TOKEN_CACHE_SIZE``,
    so no request of that row finds its token in the memo (``measure`` stops the bench if one did)."""
    memo_size = epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
    if sizes.users <= memo_size + fixtures.SAMPLE + 1:
        raise SystemExit(
            f"bench: --users {sizes.users}: a distinct-users row needs more users than "
            f"VERIFIED_TOKEN_CACHE_SIZE ({memo_size}) + {fixtures.SAMPLE + 1}, or its users would "
            "come back to the memo"
        )
    server = Server()
    fixtures.migrate()
    started = time.perf_counter()
    people = fixtures.create_users(sizes.users)
    create_s = time.perf_counter() - started
    first_user = get_user_model().objects.get(pk=people[0][0])
    factory = fixtures.TokenFactory(first_user)
    started = time.perf_counter()
    tokens = [factory.token(pk, name) for pk, name in people]
    mint_s = time.perf_counter() - started
    fixtures.verify(tokens)
    rss_before, started = rss_mb(), time.perf_counter()
    first = first_pass(tokens)  # every user, as a long-running worker has seen them
    fill_s, rss_after = time.perf_counter() - started, rss_mb()
    variants = [
        no_auth(server),
        Variant(
            "epochauth HS256, memo hit (one user's token again)",
            server.get(EPOCHAUTH, bearer(tokens[0])),
            limit=limits.DICT,
        ),
        Variant(
            f"epochauth HS256, {len(tokens) - 1} distinct users (the next user's token each request, "
            "all of them in turn)",
            server.get_each(EPOCHAUTH, [bearer(t) for t in tokens[1:]]),
            distinct=True,
            limit=limits.HS256,
        ),
        # DPoP's replay cache on Redis: the write a proof costs there (the requests scenario has
        # every algorithm on LocMemCache).
        *(dpop_rows(server, first_user, sizes, ("ES256",)) if redis else []),
        *limits.hs256_rows(tokens[0], HS_SECRET),
    ]
    rows, _ = measure(variants, sizes.rounds, sizes.requests, redis=redis, warmup=sizes.warmup)
    return result(
        rows,
        users=len(people),
        seen=len(tokens),
        create_s=create_s,
        mint_s=mint_s,
        fill_s=fill_s,
        rss_before_mb=rss_before,
        rss_after_mb=rss_after,
        first_pass=first,
    )


def first_pass(tokens: list[str], slowest: int = 3) -> dict[str, Any]:
    """Authenticate every token once, each call timed, with the garbage collector's passes
    (``gc.callbacks``) and the SQL, Redis and memo hits of each call: what its slowest calls waited on."""
    clock, collections, started_at = time.perf_counter_ns, [], {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started_at[info["generation"]] = clock()
        else:
            gen = info["generation"]
            collections.append((gen, started_at.pop(gen), clock()))

    counters, calls = Counters(), []
    gc.callbacks.append(on_gc)
    try:
        with counters.counting():
            for token in tokens:
                before, start = counters.snapshot(), clock()
                authenticate_token(token)
                end, after = clock(), counters.snapshot()
                calls.append((start, end, [b - a for a, b in zip(before, after, strict=True)]))
    finally:
        gc.callbacks.remove(on_gc)
    ms = sorted((end - start) / 1e6 for start, end, _ in calls)

    def during(start: int, end: int) -> list[list[float]]:
        return [[g, (e - s) / 1e6] for g, s, e in collections if s < end and e > start]

    worst = sorted(range(len(calls)), key=lambda i: calls[i][0] - calls[i][1])[:slowest]
    by_gen: dict[int, list[float]] = {}
    for gen, s, e in collections:
        by_gen.setdefault(gen, []).append((e - s) / 1e6)
    return {
        "calls": len(calls),
        "median_ms": ms[len(ms) // 2],
        "p99_ms": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
        "max_ms": ms[-1],
        "slowest": [
            {
                "index": i,
                "ms": (calls[i][1] - calls[i][0]) / 1e6,
                "gc": during(calls[i][0], calls[i][1]),
                "queries": calls[i][2][0],
                "redis": calls[i][2][1],
                "memo_hits": calls[i][2][2],
            }
            for i in worst
        ],
        "gc": {str(g): [len(t), max(t), sum(t)] for g, t in sorted(by_gen.items())},
    }


# -- a big denylist ----------------------------------------------------------------------------


def denylist(sizes: Sizes) -> dict[str, Any]:
    """``sizes.denylist`` live denylist rows: the insert, the first load, reloads after a revocation
    (``revoke_id``, then the next request), RSS, and requests in steady state."""
    server, user = Server(), setup_user()
    token = mint_access_token(user).token
    memo = server.get(EPOCHAUTH, bearer(token))
    first = first_requests(server, memo, lambda: fixtures.deny_random_ids(sizes.denylist))
    cold = cold_tokens(fixtures.TokenFactory(user), user, sizes.timed)
    reloads = []
    for _ in range(3):
        revoke_id(uuid.uuid4().hex, timezone.now() + timedelta(days=1), reason="bench")
        reloads.append(timed_ms(memo))
    variants = [
        no_auth(server),
        Variant("epochauth HS256, memo hit", memo, limit=limits.DICT),
        Variant(
            f"epochauth HS256, cold: a new token each request ({len(cold)} distinct)",
            server.get_each(EPOCHAUTH, cold),
            distinct=True,
            limit=limits.HS256,
        ),
        *limits.hs256_rows(token, HS_SECRET),
    ]
    rows, _ = measure(variants, sizes.rounds, sizes.requests, redis=False, warmup=sizes.warmup)
    return result(
        rows,
        denylist=sizes.denylist,
        **first,
        reload_request_ms=reloads,
        rss_end_mb=rss_mb(),
    )


# -- epoch rows of many users --------------------------------------------------------------------


def epochs(sizes: Sizes) -> dict[str, Any]:
    """``sizes.users`` user epochs bumped within the window (every user revoked today, the worst
    case): what a process holds for them, and what its first requests (which read them) cost."""
    server, user = Server(), setup_user()
    token = mint_access_token(user).token
    memo = server.get(EPOCHAUTH, bearer(token))
    first = first_requests(server, memo, lambda: fixtures.bump_many_users(sizes.users))
    rows, _ = measure(
        [
            no_auth(server),
            Variant("epochauth HS256, memo hit", memo, limit=limits.DICT),
            *limits.hs256_rows(token, HS_SECRET),
        ],
        sizes.rounds,
        sizes.requests,
        redis=False,
        warmup=sizes.warmup,
    )
    return result(rows, epochs=sizes.users, **first)


#: While the state is read, a request every this many seconds (a busy worker: about 500 a second).
LOADING_PACE = 0.002


def first_requests(server: Server, call: Any, insert: Any) -> dict[str, Any]:
    """Rows inserted by ``insert()``, then the first requests with ``call`` (a process that has read
    none of them), one every ``LOADING_PACE`` until the process holds its whole revocation state (a
    thread of its own reads it): their time and SQL queries, and the wall time from the first
    request to the state held."""
    timed_ms(server.get(NONE))  # Django's own first request (imports, URL resolver) is not ours
    started = time.perf_counter()
    insert()
    insert_s, rss_before = time.perf_counter() - started, rss_mb()
    counters = Counters()
    loading: list[tuple[float, int]] = []
    started = time.perf_counter()
    with counters.counting():
        first_ms = timed_ms(call)
        first_queries = counters.queries
        while not is_loaded():
            before = counters.queries
            loading.append((timed_ms(call), counters.queries - before))
            time.sleep(LOADING_PACE)
    load_s = time.perf_counter() - started
    ordered = sorted(ms for ms, _queries in loading) or [first_ms]
    return {
        "insert_s": insert_s,
        "first_request_ms": first_ms,
        "first_request_queries": first_queries,
        "loading_requests": len(loading),
        "loading_ms": {
            "median": ordered[len(ordered) // 2],
            "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
            "max": ordered[-1],
        },
        "loading_max_queries": max((queries for _ms, queries in loading), default=0),
        "load_s": load_s,
        "rss_before_mb": rss_before,
        "rss_loaded_mb": rss_mb(),
    }


def timed_ms(call: Any) -> float:
    started = time.perf_counter()
    response = call()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status}: {response.body[:300]!r}")
    return (time.perf_counter() - started) * 1000


# -- token endpoints ---------------------------------------------------------------------------


def endpoints(sizes: Sizes) -> dict[str, Any]:
    """Login and refresh of epochauth and of simplejwt (rotation + blacklist), over their URLs."""
    server, user = Server(), setup_user()
    credentials = {"username": user.get_username(), "password": fixtures.PASSWORD}
    variants = [
        no_auth(server),
        Variant(
            "epochauth login (POST /auth/token/)",
            lambda: server.post_json("/auth/token/", credentials),
        ),
        Variant(
            "simplejwt login (TokenObtainPairView)",
            lambda: server.post_json("/simplejwt/token/", credentials),
        ),
        Variant(
            "epochauth refresh (POST /auth/token/refresh/, rotation)",
            chain(
                server,
                "/auth/token/refresh/",
                "refresh_token",
                server.post_for("/auth/token/", credentials, "refresh_token"),
            ),
        ),
        Variant(
            "simplejwt refresh (TokenRefreshView, rotation + blacklist)",
            chain(
                server,
                "/simplejwt/token/refresh/",
                "refresh",
                server.post_for("/simplejwt/token/", credentials, "refresh"),
            ),
        ),
    ]
    rows, per_round = measure(
        variants,
        sizes.endpoint_rounds,
        sizes.endpoint_requests,
        redis=False,
        warmup=max(3, sizes.endpoint_requests // 4),
    )
    names = [v.name for v in variants]
    return result(
        rows,
        login_vs_simplejwt=paired(per_round, names[1], names[2]),
        refresh_vs_simplejwt=paired(per_round, names[3], names[4]),
        outbox=outbox_drain(user, sizes.outbox),
    )


class RelyingParty(ThreadingHTTPServer):
    """A back-channel logout receiver on loopback that reads each POST and answers 200."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.received = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class ReceiverHandler(BaseHTTPRequestHandler):
    server: RelyingParty
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def outbox_drain(user: Any, count: int) -> dict[str, Any]:
    """``count`` back-channel logout deliveries in the outbox, drained by one drainer to a relying party
    on loopback that answers 200: each is claimed, its logout token signed (RS256), POSTed, and the
    outcome recorded. The relying party runs in this process (its threads share the GIL)."""
    from oauth2_provider.models import get_application_model

    from epochauth.keys import generate_private_key_pem
    from epochauth.oauth import backchannel
    from epochauth.oauth.models import BackchannelLogout, LogoutDelivery

    receiver = RelyingParty()
    signer = {"ID_TOKEN_SIGNING_KEY": generate_private_key_pem("RS256")}
    try:
        with override_settings(EPOCHAUTH={**settings.EPOCHAUTH, **signer}):
            app = get_application_model().objects.create(
                name="portal",
                client_id="bench-portal",
                client_type="confidential",
                authorization_grant_type="authorization-code",
                redirect_uris="https://portal.example/cb",
                user=user,
            )
            BackchannelLogout.objects.create(
                application=app, uri=f"http://127.0.0.1:{receiver.server_address[1]}/logout/"
            )
            LogoutDelivery.objects.bulk_create(
                LogoutDelivery(
                    application=app,
                    subject=str(user.pk),
                    sid=uuid.uuid4().hex,
                    jti=uuid.uuid4().hex,
                )
                for _ in range(count)
            )
            started = time.perf_counter()
            attempted = backchannel.drain()
            elapsed = time.perf_counter() - started
            delivered = LogoutDelivery.objects.filter(state=LogoutDelivery.State.DELIVERED).count()
    finally:
        receiver.shutdown()
        receiver.server_close()
    return {
        "deliveries": count,
        "attempted": attempted,
        "delivered": delivered,
        "received": receiver.received,
        "per_s": attempted / elapsed,
    }


# -- a database outage (issue 30) -------------------------------------------------------------


def outage(sizes: Sizes) -> dict[str, Any]:
    """Refresh and renew with the database up, then with it unreachable (every statement refused, as
    by a server that is gone): from the session mirror in Redis, each rotation journaled there. Two
    measurements, each paired with no auth: the journal must stay empty while the first runs (a
    refresh goes through the mirror until it is replayed), and nothing is replayed during the second."""
    server, user = Server(), setup_user()
    credentials = {"username": user.get_username(), "password": fixtures.PASSWORD}

    def session() -> tuple[str, str]:
        response = server.post_json("/auth/token/", credentials)
        if response.status != 200:
            raise SystemExit(f"/auth/token/: HTTP {response.status}")
        return response.json()["refresh_token"], bearer(response.json()["access_token"])

    def variants(
        label: str, wrap: Callable[[Callable[[], Any]], Callable[[], Any]]
    ) -> list[Variant]:
        refresh_token, authorization = session()
        renew = wrap(lambda: server.post_json("/auth/token/renew/", {}, authorization))
        return [
            no_auth(server),
            Variant(
                f"refresh (rotation), {label}",
                wrap(chain(server, "/auth/token/refresh/", "refresh_token", refresh_token)),
            ),
            Variant(f"renew, {label}", renew),
        ]

    def refused(call: Callable[[], Any]) -> Callable[[], Any]:
        def down(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            raise OperationalError("the bench's database is down")

        def during_outage() -> Any:
            with connection.execute_wrapper(down):
                return call()

        return during_outage

    measured = {}
    for label, wrap in (("database up", lambda call: call), ("database down", refused)):
        chosen = variants(label, wrap)
        measured[label] = measure(
            chosen,
            sizes.endpoint_rounds,
            sizes.endpoint_requests,
            redis=True,
            warmup=max(3, sizes.endpoint_requests // 4),
        )
    rows = measured["database up"][0] + [
        row for row in measured["database down"][0] if row.name != BASELINE
    ]
    up, down = measured["database up"][0], measured["database down"][0]
    return result(
        rows,
        outage_vs_normal={
            kind: {
                "up_us": next(r.median_us for r in up if r.name.startswith(kind)),
                "down_us": next(r.median_us for r in down if r.name.startswith(kind)),
            }
            for kind in ("refresh", "renew")
        },
    )


def chain(server: Server, path: str, field: str, first: str) -> Any:
    """Each call presents the refresh token the previous call got back (rotation)."""
    current = [first]

    def call() -> Any:
        response = server.post_json(path, {field: current[0]})
        if response.status == 200:
            current[0] = response.json()[field]
        return response

    return call
