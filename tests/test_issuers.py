"""External issuers end to end: allow-list, discovery, the JWKS cache and the checks on their tokens.

Two kinds of real issuers on loopback serve the keys: the test OpenID provider (``idp``, Node.js
oidc-provider; RS256 and, started a second time, ES256) and :class:`~tests.loopback_issuer.CraftedIssuer`,
a small ``http.server`` issuer for tokens no real provider would sign (odd headers, odd claims, odd answers).
No test reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.core.cache import cache
from django.core.exceptions import ValidationError
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import OKPKey
from jwt.utils import base64url_encode

from epochauth.authentication import verify_token
from epochauth.exceptions import InvalidToken
from epochauth.issuers import IssuerUnavailable, jwks_cache, validate_issuer_url
from epochauth.models import Identity, Issuer
from epochauth.tokens import verified_tokens
from tests.conftest import start_idp
from tests.idp import TestIdP
from tests.loopback_issuer import AUDIENCE, CraftedIssuer, compact, key, public_jwk

HELLO = "/api/hello/"


# -- helpers -------------------------------------------------------------------------------------


def allow(settings: Any, *entries: str | dict[str, Any], **extra: Any) -> None:
    """Allow-list issuers (a URL, or a dict overriding the defaults); ``extra`` sets other EPOCHAUTH keys."""
    issuers = []
    for entry in entries:
        base = {"audiences": [AUDIENCE], "required_scopes": ["servicex"]}
        issuers.append({**base, "issuer": entry} if isinstance(entry, str) else {**base, **entry})
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, **extra, "ISSUERS": issuers}


def get(client: Any, token: str, path: str = HELLO) -> Any:
    return client.get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


def assert_invalid(response: Any) -> None:
    assert response.status_code == 401, response.content
    assert 'error="invalid_token"' in response["WWW-Authenticate"]


@pytest.fixture
def crafted() -> Iterator[CraftedIssuer]:
    issuer = CraftedIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture
def own_idp() -> Iterator[TestIdP]:
    """A private provider for tests that rotate keys."""
    provider = start_idp()
    yield provider
    provider.stop()


def cold() -> None:
    """Forget every copy of every JWKS, as a fresh deployment would."""
    cache.clear()
    jwks_cache.reset()
    verified_tokens.clear()


# -- the real provider ---------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("alg", ["RS256", "ES256"])
def test_tokens_of_the_real_provider_are_accepted(client, settings, request, alg):
    provider = request.getfixturevalue("idp" if alg == "RS256" else "es_idp")
    allow(settings, provider.issuer)
    provider.reset_stats()
    token = provider.client_credentials_token()
    assert jwt.get_unverified_header(token)["alg"] == alg

    assert get(client, token).json() == {"hello": "test-client"}
    whoami = get(client, provider.user_token("alice"), "/auth/whoami/")
    assert whoami.status_code == 200 and "alice" in json.dumps(whoami.json())
    stats = provider.stats()
    assert (stats["discovery"], stats["jwks"]) == (1, 1)


@pytest.mark.django_db
def test_warm_request_makes_no_query_and_no_fetch(
    client, settings, idp_stats_reset, django_assert_num_queries
):
    idp = idp_stats_reset
    allow(settings, idp.issuer)
    token, other = idp.client_credentials_token(), idp.client_credentials_token()
    assert get(client, token).status_code == 200
    assert get(client, other).status_code == 200
    with django_assert_num_queries(0):
        assert get(client, token).json() == {"hello": "test-client"}  # memoised
        assert get(client, other).json() == {"hello": "test-client"}
    with django_assert_num_queries(0):
        verified_tokens.clear()  # signature checked again, with the cached keys
        assert get(client, idp.client_credentials_token()).status_code == 200
    assert (idp.stats()["discovery"], idp.stats()["jwks"]) == (1, 1)  # no fetch after the first


@pytest.mark.django_db
def test_disabling_the_issuer_in_settings_rejects_its_tokens_at_once(client, settings, idp):
    allow(settings, idp.issuer)
    token = idp.client_credentials_token()
    assert get(client, token).status_code == 200
    allow(settings, {"issuer": idp.issuer, "enabled": False})
    assert_invalid(get(client, token))
    allow(settings)
    assert_invalid(get(client, token))


@pytest.mark.django_db
def test_disabling_an_issuer_row_rejects_a_memoised_token(
    client, idp, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        row = Issuer.objects.create(
            issuer=idp.issuer, audiences=[AUDIENCE], required_scopes=["servicex"]
        )
    token = idp.client_credentials_token()
    assert get(client, token).json() == {"hello": "test-client"}
    assert verified_tokens.get(token) is not None

    with django_capture_on_commit_callbacks(execute=True):
        row.enabled = False
        row.save()
    assert verified_tokens.get(token) is not None  # the memo is still there, the issuer is not
    assert_invalid(get(client, token))


@pytest.mark.django_db
def test_unknown_issuer_is_refused_without_network(
    client, settings, idp_stats_reset, es_idp, attacker
):
    idp = idp_stats_reset
    allow(settings, es_idp.issuer)
    es_idp.reset_stats()
    token = idp.client_credentials_token()
    response = get(client, token)
    assert_invalid(response)
    assert "issuer is not accepted" in response["WWW-Authenticate"]
    # Near misses of an allowed issuer are other issuers.
    for iss in (
        es_idp.issuer + "/",
        es_idp.issuer.upper(),
        es_idp.issuer.replace("127.0.0.1", "localhost"),
    ):
        assert_invalid(
            get(
                client,
                compact({"alg": "RS256", "kid": "x"}, {"iss": iss, "sub": "a"}, key("rsa-a")),
            )
        )
    assert_invalid(get(client, attacker.token()))
    assert idp.stats()["discovery"] == idp.stats()["jwks"] == 0
    assert es_idp.stats()["total"] == 0


@pytest.mark.django_db
def test_audience_scope_and_issuer_mismatches(client, settings, idp, es_idp):
    token = idp.client_credentials_token(scope="servicex reports:read")

    allow(settings, {"issuer": idp.issuer, "audiences": ["https://other.example.test"]})
    assert_invalid(get(client, token))
    allow(settings, idp.issuer)
    assert_invalid(
        get(client, idp.client_credentials_token(resource="https://other.example.test"))
    )

    for required in (["ServiceX"], ["service"], ["servicex", "reports:write"]):
        allow(settings, {"issuer": idp.issuer, "required_scopes": required})
        response = get(client, token)
        assert response.status_code == 403, required
        assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    allow(settings, {"issuer": idp.issuer, "required_scopes": ["reports:read", "servicex"]})
    assert get(client, token).status_code == 200

    allow(settings, es_idp.issuer)  # a token from the other provider, which is not allowed now
    assert_invalid(get(client, token))


@pytest.mark.django_db
def test_an_id_token_is_not_an_access_token(client, settings, idp):
    allow(settings, {"issuer": idp.issuer, "required_scopes": []})
    body = idp.user_token_response("alice")
    assert get(client, body["access_token"]).status_code == 200
    assert_invalid(get(client, body["id_token"]))  # aud is the client, not this service


# -- keys: rotation, outages, floods -------------------------------------------------------------


@pytest.mark.django_db
def test_rotation_new_kid_is_picked_up_and_removed_key_stops(client, settings, own_idp, clock):
    allow(settings, own_idp.issuer, JWKS_CACHE_MAX=3600, JWKS_REFETCH_COOLDOWN=60)
    first = own_idp.client_credentials_token()
    old_unseen = own_idp.client_credentials_token()
    assert get(client, first).status_code == 200

    own_idp.rotate()
    own_idp.reset_stats()
    rotated = own_idp.client_credentials_token()
    assert jwt.get_unverified_header(rotated)["kid"] != jwt.get_unverified_header(first)["kid"]
    clock.advance(59)
    assert_invalid(get(client, rotated))  # within the cool-down: the new kid waits
    assert own_idp.stats()["jwks"] == 0
    clock.advance(1)  # the cool-down is over: the new kid triggers a refetch
    assert get(client, rotated).status_code == 200
    assert own_idp.stats()["jwks"] == 1

    own_idp.rotate(drop_old=True)
    clock.advance(3599)
    assert get(client, old_unseen).status_code == 200  # the cached JWKS still has the old key
    clock.advance(1)  # JWKS_CACHE_MAX after the refetch: the keys are fetched again
    response = get(client, old_unseen)
    assert_invalid(response)
    assert "does not publish" in response["WWW-Authenticate"]
    assert get(client, own_idp.client_credentials_token()).status_code == 200


@pytest.mark.django_db
def test_cache_control_is_honoured_within_bounds(client, settings, crafted):
    allow(settings, crafted.issuer, JWKS_CACHE_MIN=20, JWKS_CACHE_MAX=100)
    for cache_control, lifetime in [
        ("public, max-age=50", 50),
        ("max-age=5", 20),
        ("max-age=100000", 100),
        (None, 100),
        ("no-store", 20),
        ("no-cache, max-age=60", 20),
    ]:
        cold()
        crafted.cache_control = cache_control
        assert get(client, crafted.token()).status_code == 200
        keyset = jwks_cache._sets[crafted.issuer]
        assert keyset.fresh_until - keyset.fetched_at == lifetime, cache_control


@pytest.mark.django_db
def test_logout_with_an_external_token_needs_its_jti(client, settings, crafted):
    allow(settings, crafted.issuer)
    without_jti = crafted.token(jti=None)
    response = client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {without_jti}")
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
    assert "logout-all" in response.json()["error_description"]
    assert get(client, without_jti).status_code == 200
    with_jti = crafted.token()
    assert client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {with_jti}").status_code == 204
    assert_invalid(get(client, with_jti))


@pytest.mark.django_db
def test_keys_moved_to_another_jwks_uri_are_found_through_discovery(client, settings, crafted):
    allow(settings, crafted.issuer, JWKS_REFETCH_COOLDOWN=0)
    assert get(client, crafted.token()).status_code == 200
    crafted.jwks_path = "/keys/v2"  # the old place answers 404 from now on
    crafted.keys["rsa-2"] = (key("rsa-b"), "RS256")
    assert get(client, crafted.token("rsa-2", sub="svc-2")).json() == {"hello": "svc-2"}
    assert crafted.counts == {"/.well-known/openid-configuration": 2, "/jwks": 2, "/keys/v2": 1}
    assert get(client, crafted.token("rsa-1", sub="svc-3")).json() == {"hello": "svc-3"}
    assert crafted.counts.total() == 5  # the keys from the new place are cached


@pytest.mark.django_db
def test_a_jwks_uri_that_fails_without_moving_is_not_fetched_twice(client, settings, crafted):
    allow(settings, crafted.issuer, JWKS_REFETCH_COOLDOWN=0)
    assert get(client, crafted.token()).status_code == 200
    crafted.jwks_body = b"not json"
    crafted.keys["rsa-2"] = (key("rsa-b"), "RS256")
    assert_invalid(get(client, crafted.token("rsa-2")))
    assert crafted.counts == {"/.well-known/openid-configuration": 2, "/jwks": 2}
    assert get(client, crafted.token()).status_code == 200  # the last good keys still serve


@pytest.mark.django_db
def test_issuer_down_cached_keys_serve_and_cold_cache_is_503(
    client, settings, idp_stats_reset, clock
):
    idp = idp_stats_reset
    allow(
        settings, idp.issuer, JWKS_CACHE_MAX=600, JWKS_MAX_STALENESS=3600, JWKS_REFETCH_COOLDOWN=60
    )
    assert get(client, idp.client_credentials_token()).status_code == 200
    idp.down()
    clock.advance(600)  # the keys are stale now
    for _ in range(3):  # the first refresh fails; the next requests come within its cool-down
        assert get(client, idp.client_credentials_token()).status_code == 200
        clock.advance(19)
    assert idp.stats()["jwks"] == 2  # one attempt while down, then the cool-down holds
    clock.advance(3)  # the cool-down is over: one more attempt, the stale keys still serve
    assert get(client, idp.client_credentials_token()).status_code == 200
    assert idp.stats()["jwks"] == 3

    jwks_cache.reset()  # a new process: the shared cache still has the last good keys
    assert get(client, idp.client_credentials_token()).status_code == 200

    cold()
    idp.reset_stats()
    for _ in range(3):
        response = get(client, idp.client_credentials_token())
        assert response.status_code == 503, response.content
    assert idp.stats()["discovery"] == 1  # a failed fetch is not repeated on every request

    idp.up()
    cold()
    assert get(client, idp.client_credentials_token()).status_code == 200
    idp.down()
    clock.advance(3600)  # the last good keys are as old as JWKS_MAX_STALENESS allows, not older
    assert get(client, idp.client_credentials_token()).status_code == 200
    clock.advance(61)  # past JWKS_MAX_STALENESS, and past the cool-down of the failed refresh
    assert get(client, idp.client_credentials_token()).status_code == 503


def random_kid_token(iss: str) -> str:
    """Claims an allowed issuer with a kid it never published (signed by a key of ours)."""
    now = int(time.time())
    payload = {"iss": iss, "sub": "x", "aud": AUDIENCE, "iat": now, "exp": now + 60}
    return compact(
        {"alg": "RS256", "typ": "at+jwt", "kid": uuid.uuid4().hex}, payload, key("rsa-evil")
    )


@pytest.mark.django_db
def test_a_flood_of_random_kids_costs_one_fetch_per_cooldown(
    client, settings, idp_stats_reset, clock
):
    idp = idp_stats_reset
    allow(settings, idp.issuer, JWKS_REFETCH_COOLDOWN=60)
    assert_invalid(
        get(client, random_kid_token(idp.issuer))
    )  # the cool-down counts from this fetch
    for _ in range(29):
        clock.advance(2)
        assert_invalid(get(client, random_kid_token(idp.issuer)))
    assert (idp.stats()["discovery"], idp.stats()["jwks"]) == (1, 1)
    clock.advance(2)  # the cool-down is over: one refetch, and the next cool-down starts
    for _ in range(30):
        assert_invalid(get(client, random_kid_token(idp.issuer)))
        clock.advance(1)
    assert idp.stats()["jwks"] == 2
    assert get(client, idp.client_credentials_token()).status_code == 200


def run_threads(count: int, target: Any) -> list[Any]:
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = target()
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


@pytest.mark.django_db
def test_random_kids_from_many_threads_share_one_fetch(settings, idp_stats_reset, clock):
    idp = idp_stats_reset
    allow(settings, idp.issuer, JWKS_REFETCH_COOLDOWN=60)
    idp.delay(300)  # every thread arrives while the one fetch is under way
    results = run_threads(16, lambda: verify_token(random_kid_token(idp.issuer)))
    assert all(isinstance(r, InvalidToken) for r in results), results
    assert (idp.stats()["discovery"], idp.stats()["jwks"]) == (1, 1)

    clock.advance(60)  # past the cool-down: all threads bring unknown kids, one of them refetches
    results = run_threads(16, lambda: verify_token(random_kid_token(idp.issuer)))
    assert all(isinstance(r, InvalidToken) for r in results), results
    assert idp.stats()["jwks"] == 2

    token = idp.client_credentials_token()
    verified_tokens.clear()
    assert all(r["sub"] == "test-client" for r in run_threads(8, lambda: verify_token(token)))
    assert idp.stats()["jwks"] == 2


@pytest.mark.django_db
def test_cold_threads_with_the_issuer_down_wait_for_one_fetch(settings, idp_stats_reset):
    idp = idp_stats_reset
    allow(settings, idp.issuer)
    idp.down()
    idp.delay(300)
    token = idp.client_credentials_token()
    started = time.monotonic()
    results = run_threads(8, lambda: verify_token(token))
    assert all(isinstance(r, IssuerUnavailable) for r in results), results
    assert idp.stats()["discovery"] == 1
    assert time.monotonic() - started < 2


# -- kids that collide between issuers -----------------------------------------------------------


@pytest.mark.django_db
def test_kids_are_looked_up_within_the_tokens_issuer_only(client, settings, idp):
    """Two issuers publish the same kid for different keys: each token verifies with its own only."""
    first = CraftedIssuer({"shared": (key("rsa-a"), "RS256")})
    second = CraftedIssuer({"shared": (key("rsa-b"), "RS256")})
    real_kid = jwt.get_unverified_header(idp.client_credentials_token())["kid"]
    twin = CraftedIssuer(
        {real_kid: (key("rsa-c"), "RS256")}
    )  # the real provider's kid, another key
    try:
        allow(settings, first.issuer, second.issuer, idp.issuer, twin.issuer)
        assert get(client, first.token("shared")).status_code == 200
        assert get(client, second.token("shared")).status_code == 200
        # first's key, claiming second: verified with second's "shared" key, so refused.
        assert_invalid(get(client, first.token("shared", iss=second.issuer)))
        assert_invalid(get(client, second.token("shared", iss=first.issuer)))

        assert get(client, idp.client_credentials_token()).status_code == 200
        assert get(client, twin.token(real_kid)).status_code == 200
        assert_invalid(get(client, twin.token(real_kid, iss=idp.issuer)))
    finally:
        for server in (first, second, twin):
            server.stop()


# -- crafted tokens ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_well_formed_crafted_token_is_accepted(client, settings, crafted):
    allow(settings, crafted.issuer)
    assert get(client, crafted.token()).json() == {"hello": "svc-1"}
    assert get(client, crafted.token("ec-1", sub="svc-2")).json() == {"hello": "svc-2"}
    keycloak_style = crafted.token(header={"typ": "JWT"}, sub="svc-3", typ="Bearer")
    assert get(client, keycloak_style).status_code == 200
    no_typ = compact({"alg": "RS256", "kid": "rsa-1"}, crafted.claims(sub="svc-4"), key("rsa-a"))
    assert get(client, no_typ).status_code == 200
    scp = crafted.token(sub="svc-5", scope=None, scp=["reports:read", "servicex"])
    assert get(client, scp).status_code == 200
    azure_style = crafted.token(sub="svc-6", scope=None, scp="reports:read servicex")
    assert get(client, azure_style).status_code == 200
    assert crafted.counts["/jwks"] == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "scope", ["servicex\u00a0admin", "admin\u2028servicex", "servicex\tadmin"]
)
def test_required_scope_is_split_on_the_ascii_space_only(client, settings, crafted, scope):
    """RFC 6749 section 3.3: one invalid scope-token never counts as the required scope."""
    allow(settings, crafted.issuer)
    response = get(client, crafted.token(scope=scope))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in response["WWW-Authenticate"]
    assert get(client, crafted.token(scope="admin  servicex")).status_code == 200


def crafted_cases(crafted: CraftedIssuer) -> dict[str, str]:
    rsa_public_pem = (
        key("rsa-a")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    claims = crafted.claims()
    now = int(time.time())
    return {
        "string exp": crafted.token(exp=str(now + 300)),
        "string iat": crafted.token(iat=str(now)),
        "bool exp": crafted.token(exp=True),
        "expired": crafted.token(exp=now - 120, iat=now - 400),
        "not yet valid": crafted.token(nbf=now + 120),
        "issued in the future": crafted.token(iat=now + 120),
        "no exp": crafted.token(exp=None),
        "no sub": crafted.token(sub=None),
        "sub not a string": crafted.token(sub=42),
        "wrong aud": crafted.token(aud="https://other.example.test"),
        "no aud": crafted.token(aud=None),
        "RS256 naming an EC key": compact({"alg": "RS256", "kid": "ec-1"}, claims, key("rsa-a")),
        "ES256 naming an RSA key": compact({"alg": "ES256", "kid": "rsa-1"}, claims, key("ec-a")),
        "PS256 not allowed": compact({"alg": "PS256", "kid": "rsa-1"}, claims, key("rsa-a")),
        "ES384 on a P-256 key": compact({"alg": "ES384", "kid": "ec-1"}, claims, key("ec-384")),
        "HS256 with the public key as secret": compact(
            {"alg": "HS256", "kid": "rsa-1"}, claims, rsa_public_pem
        ),
        "alg none": compact({"alg": "none", "kid": "rsa-1"}, claims),
        "alg None": compact({"alg": "None", "kid": "rsa-1"}, claims),
        "alg a list": compact({"alg": ["RS256"], "kid": "rsa-1"}, claims, key("rsa-a"), "RS256"),
        "kid a list": compact({"alg": "RS256", "kid": ["rsa-1"]}, claims, key("rsa-a")),
        "no kid, not its key": compact({"alg": "RS256"}, claims, key("rsa-evil")),
        "crit": crafted.token(header={"crit": ["exp"], "exp": 1}),
        "crit unknown": crafted.token(header={"crit": ["urn:example:x"], "urn:example:x": True}),
        "typ JWT with claim typ ID": crafted.token(header={"typ": "JWT"}, typ="ID"),
        "typ id_token": crafted.token(header={"typ": "id_token+jwt"}),
        "typ not a string": crafted.token(header={"typ": ["at+jwt"]}),
        "bad signature": crafted.token().rsplit(".", 1)[0]
        + "."
        + crafted.token(sub="other").rsplit(".", 1)[1],
        "wrong iss in payload only": crafted.token(iss=crafted.issuer + "/x"),
        # RFC 7519 section 4.1.2 / OIDC Core section 2: a non-empty string of at most 255 characters (no NUL).
        "empty sub": crafted.token(sub=""),
        "whitespace-only sub": crafted.token(sub=" \t\u00a0"),
        "sub over 255 characters": crafted.token(sub="s" * 256),
        "sub with a NUL": crafted.token(sub="svc\x001"),
        "scope a list": crafted.token(scope=["servicex"]),
        # RFC 7519 section 7.2 step 8, RFC 8259 sections 6 and 8.1: UTF-8 JSON, one value per name.
        "UTF-16 claims": crafted.raw_token(json.dumps(claims).encode("utf-16")),
        "UTF-8 BOM claims": crafted.raw_token(b"\xef\xbb\xbf" + json.dumps(claims).encode()),
        "duplicate sub": crafted.raw_token(
            json.dumps(claims)[:-1].encode() + b', "sub": "svc-2"}'
        ),
        "exp Infinity": crafted.raw_token(json.dumps({**claims, "exp": float("inf")}).encode()),
        "exp 1e400": crafted.raw_token(
            json.dumps(claims).replace(str(claims["exp"]), "1e400").encode()
        ),
        # RFC 8259 section 8.2: an escaped lone surrogate is no Unicode text.
        "sub a lone surrogate": crafted.token(sub="svc-\ud800"),
    }


@pytest.mark.django_db
def test_crafted_tokens_are_refused(client, settings, crafted):
    allow(settings, crafted.issuer, LEEWAY=30)
    for name, token in crafted_cases(crafted).items():
        response = get(client, token)
        assert response.status_code == 401, (name, response.status_code, response.content)
    assert crafted.counts["/jwks"] == 1
    assert not Identity.objects.exists()  # none of them provisioned a user


@pytest.mark.django_db
def test_leeway_applies_to_exp_and_nbf(client, settings, crafted):
    now = int(time.time())
    allow(settings, crafted.issuer, LEEWAY=60)
    assert get(client, crafted.token(exp=now - 30, iat=now - 300)).status_code == 200
    assert get(client, crafted.token(nbf=now + 30, sub="b")).status_code == 200
    assert_invalid(get(client, crafted.token(exp=now - 90, iat=now - 300, sub="c")))


@pytest.mark.django_db
def test_keys_are_never_taken_from_token_headers(client, settings, crafted, attacker):
    allow(settings, crafted.issuer)
    evil = key("rsa-evil")
    evil_jwk = public_jwk(evil, "rsa-1", "RS256")
    pem = evil.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for header in (
        {"jku": f"{attacker.issuer}/jwks"},
        {"x5u": f"{attacker.issuer}/cert.pem"},
        {"jwk": evil_jwk},
        {"x5c": [base64url_encode(pem).decode()]},
    ):
        for kid in ("rsa-1", "evil-kid", None):
            fields = {"alg": "RS256", "typ": "at+jwt", **header, **({"kid": kid} if kid else {})}
            assert_invalid(get(client, compact(fields, crafted.claims(), evil)))
    assert crafted.counts["/jwks"] == 1  # the unknown kids fell in the cool-down
    # (the ``attacker`` fixture asserts it was never asked for anything)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "misbehaviour",
    [
        "status 503",
        "status 500",
        "huge jwks",
        "not json",
        "jwks a list",
        "discovery names another issuer",
        "redirect",
    ],
)
def test_bad_issuer_answers_are_503_and_nothing_is_followed(
    client, settings, crafted, attacker, misbehaviour
):
    allow(settings, crafted.issuer, HTTP_MAX_BYTES=4096)
    if misbehaviour.startswith("status"):
        crafted.status = int(misbehaviour.split()[1])
    elif misbehaviour == "huge jwks":
        crafted.jwks_body = json.dumps(
            {"keys": crafted.jwks()["keys"] * 10, "pad": "x" * 5000}
        ).encode()
    elif misbehaviour == "not json":
        crafted.jwks_body = b"<html>"
    elif misbehaviour == "jwks a list":
        crafted.jwks_body = b"[]"
    elif misbehaviour == "discovery names another issuer":
        crafted.discovery_issuer = attacker.issuer
    else:
        crafted.redirect = f"{attacker.issuer}/jwks"
    response = get(client, crafted.token())
    assert response.status_code == 503, response.content
    assert get(client, crafted.token()).status_code == 503
    assert crafted.counts.total() <= 2  # one try (discovery + jwks), then the cool-down


@pytest.mark.django_db
@pytest.mark.parametrize("status", [404, 410])
def test_an_issuer_without_any_metadata_is_a_401_saying_so(client, settings, crafted, status):
    """A permanent 404 for both documents is no outage: a 401 with the reason, not a 503 to retry."""
    allow(settings, crafted.issuer)
    crafted.metadata = "neither"
    crafted.status = status
    for _ in range(3):
        response = get(client, crafted.token())
        assert response.status_code == 401, response.content
        assert "publishes no OpenID or OAuth metadata" in response["WWW-Authenticate"]
    # Both documents asked for once, then the cool-down answers without the network.
    assert crafted.counts == {
        "/.well-known/openid-configuration": 1,
        "/.well-known/oauth-authorization-server": 1,
    }
    # Metadata published again: after the cool-down its tokens pass.
    crafted.metadata, crafted.status = "oauth", None
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "JWKS_REFETCH_COOLDOWN": 0}
    assert get(client, crafted.token()).status_code == 200


@pytest.mark.django_db
def test_rfc_8414_metadata_when_there_is_no_openid_discovery(client, settings, crafted):
    allow(settings, crafted.issuer)
    crafted.metadata = "oauth"
    # RFC 8414 section 3.3: the metadata's issuer must be the token's, as for OpenID discovery.
    crafted.discovery_issuer = "https://elsewhere.example.org"
    assert get(client, crafted.token()).status_code == 503
    crafted.discovery_issuer = None
    jwks_cache.reset()
    assert get(client, crafted.token()).status_code == 200
    assert crafted.counts["/.well-known/oauth-authorization-server"] == 2
    assert crafted.counts["/jwks"] == 1


@pytest.mark.django_db
def test_a_jwks_within_the_size_cap_is_fine(client, settings, crafted):
    body = json.dumps(crafted.jwks()).encode()
    allow(settings, crafted.issuer, HTTP_MAX_BYTES=len(body))
    crafted.jwks_body = body
    assert get(client, crafted.token()).status_code == 200


@pytest.mark.django_db
def test_unusable_keys_in_a_jwks_are_ignored(client, settings, crafted):
    good = crafted.jwks()["keys"]
    crafted.jwks_body = json.dumps(
        {
            "keys": [
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {**good[0], "kid": "enc", "use": "enc"},
                {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                "not a key",
                {**good[0], "kid": 7},
                *good,
            ]
        }
    ).encode()
    allow(settings, crafted.issuer)
    assert get(client, crafted.token()).status_code == 200
    assert set(jwks_cache._sets[crafted.issuer].keys) == {"rsa-1", "ec-1"}
    hmac = compact({"alg": "HS256", "kid": "hmac"}, crafted.claims(), b"secret")
    assert_invalid(get(client, hmac))


# -- plain http ----------------------------------------------------------------------------------


def test_validate_issuer_url(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    for ok in (
        "https://iam.example.org/",
        "http://127.0.0.1:8080",
        "http://127.0.0.5/x",
        "http://[::1]:9/",
        "http://localhost",
    ):
        validate_issuer_url(ok)
    for bad in (
        "http://iam.example.org",
        "http://10.0.0.1",
        "ftp://127.0.0.1",
        "https://",
        "127.0.0.1",
        "http://127.0.0.1.nip.io",
    ):
        with pytest.raises(ValidationError):
            validate_issuer_url(bad)
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": False}
    with pytest.raises(ValidationError):
        validate_issuer_url("http://127.0.0.1:8080")


@pytest.mark.django_db
def test_plain_http_issuers_are_refused_without_network(client, settings, crafted):
    allow(settings, crafted.issuer, ALLOW_LOOPBACK_HTTP_ISSUERS=False)
    response = get(client, crafted.token())
    assert_invalid(response)
    assert "issuer is not accepted" in response["WWW-Authenticate"]
    assert crafted.counts.total() == 0

    # Nor may a discovery document send us to a plain-http host elsewhere.
    allow(settings, crafted.issuer, ALLOW_LOOPBACK_HTTP_ISSUERS=True)
    crafted.jwks_uri = (
        "http://0.0.0.0:1/jwks"  # not loopback by name, and it never leaves this host
    )
    assert get(client, crafted.token()).status_code == 503
    assert crafted.counts == {"/.well-known/openid-configuration": 1}


@pytest.mark.django_db
def test_configured_algorithms_es384_and_eddsa(client, settings):
    issuer = CraftedIssuer({"p384": (key("ec-384"), "ES384"), "ed": (key("ed-a"), "EdDSA")})
    try:
        allow(settings, {"issuer": issuer.issuer, "algorithms": ["ES384", "EdDSA"]})
        assert get(client, issuer.token("p384")).status_code == 200
        assert get(client, issuer.token("ed", sub="svc-ed")).status_code == 200
        assert_invalid(
            get(client, compact({"alg": "ES256", "kid": "p384"}, issuer.claims(), key("ec-a")))
        )
        allow(settings, issuer.issuer)  # default algorithms: RS256 and ES256 only
        assert_invalid(get(client, issuer.token("p384", sub="svc-x")))
    finally:
        issuer.stop()


def joserfc_token(issuer: CraftedIssuer, kid: str, alg: str, **claims: Any) -> str:
    """An access token of ``issuer`` as joserfc signs it, labelled ``alg``."""
    pem = issuer.keys[kid][0].private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    header = {"alg": alg, "kid": kid, "typ": "at+jwt"}
    return joserfc_jwt.encode(
        header, issuer.claims(**claims), OKPKey.import_key(pem), algorithms=[alg]
    )


@pytest.mark.django_db
# joserfc signs under the old name, with a warning.
@pytest.mark.filterwarnings("ignore:EdDSA is deprecated via RFC 9864")
@pytest.mark.parametrize("allowed", ["Ed25519", "EdDSA"])
def test_ed25519_and_eddsa_name_one_algorithm_of_an_issuers_ed25519_keys(
    client, settings, allowed
):
    """RFC 9864: ``Ed25519`` is what ``EdDSA`` named with an Ed25519 key. Whichever name the
    allow-list has, the issuer's Ed25519 tokens pass under both, its JWKS naming either; an Ed448
    key never passes for Ed25519, and other algorithms stay refused."""
    issuer = CraftedIssuer(
        {
            "new": (key("ed-a"), "Ed25519"),
            "old": (key("ed-b"), "EdDSA"),
            "ed448": (key("ed448-a"), "EdDSA"),
            "rsa-1": (key("rsa-a"), "RS256"),
        }
    )
    try:
        allow(settings, {"issuer": issuer.issuer, "algorithms": [allowed]})
        for n, (kid, label) in enumerate(
            [("new", "Ed25519"), ("old", "EdDSA"), ("new", "EdDSA"), ("old", "Ed25519")]
        ):
            token = joserfc_token(issuer, kid, label, sub=f"svc-{n}")
            assert get(client, token).status_code == 200, (kid, label)
        ed448_as_ed25519 = compact(
            {"alg": "Ed25519", "kid": "ed448", "typ": "at+jwt"},
            issuer.claims(sub="svc-ed448"),
            key("ed448-a"),
            "EdDSA",
        )
        assert_invalid(get(client, ed448_as_ed25519))
        ed448 = issuer.token("ed448", sub="svc-ed448")  # EdDSA on Ed448 (RFC 8037)
        assert get(client, ed448).status_code == (200 if allowed == "EdDSA" else 401)
        assert_invalid(get(client, issuer.token("rsa-1", sub="svc-rsa")))
    finally:
        issuer.stop()


@pytest.mark.django_db
def test_external_issuers_switched_off(client, settings, crafted):
    allow(settings, crafted.issuer, EXTERNAL_ISSUERS=False)
    assert_invalid(get(client, crafted.token()))
    assert crafted.counts.total() == 0


@pytest.mark.django_db
def test_an_unreachable_issuer_is_503_never_500(client, settings, crafted):
    allow(settings, crafted.issuer)
    token = crafted.token()
    crafted.stop()  # connection refused
    assert get(client, token).status_code == 503


@pytest.mark.django_db
def test_two_issuers_with_the_same_sub_are_two_users(client, settings):
    """The identity is the pair (issuer, sub): the same sub at another issuer is somebody else."""
    first, second = CraftedIssuer(), CraftedIssuer()
    try:
        allow(settings, first.issuer, second.issuer)
        for issuer in (first, second, first):
            assert (
                get(client, issuer.token(sub="alice", preferred_username="alice")).status_code
                == 200
            )
        identities = {i.issuer: i.user_id for i in Identity.objects.filter(subject="alice")}
        assert set(identities) == {first.issuer, second.issuer}
        assert identities[first.issuer] != identities[second.issuer]
        whoami = [
            get(client, issuer.token(sub="alice"), "/auth/whoami/").json()["username"]
            for issuer in (first, second)
        ]
        assert whoami[0] != whoami[1]
    finally:
        first.stop()
        second.stop()


# -- external groups come from each token ---------------------------------------------------------


def user_groups(subject: str) -> list[str]:
    user = Identity.objects.get(subject=subject).user
    return sorted(user.groups.values_list("name", flat=True))


@pytest.mark.django_db
def test_an_external_principals_groups_are_its_tokens(
    client, settings, crafted, django_assert_num_queries
):
    allow(
        settings,
        {
            "issuer": crafted.issuer,
            "group_claims": ["groups"],
            "group_map": {"ops": "operators"},
            "group_prefix": "cms:",
            "default_groups": ["users"],
        },
    )
    now = int(time.time())
    first = crafted.token(sub="cms-1", groups=["ops", "higgs"], iat=now - 20)
    expected = ["cms:higgs", "operators", "users"]
    assert get(client, first, "/auth/whoami/").json()["groups"] == expected
    assert get(client, first, "/api/staff-area/").status_code == 200
    assert user_groups("cms-1") == expected

    later = crafted.token(sub="cms-1", groups=["top"], iat=now - 10)
    assert get(client, later, "/auth/whoami/").json()["groups"] == ["cms:top", "users"]
    assert get(client, later, "/api/staff-area/").status_code == 403
    # Mirrored: the admin shows what the IdP says.
    assert user_groups("cms-1") == ["cms:top", "users"]

    # An older token still speaks for itself, but does not turn the user's groups back.
    assert get(client, first, "/api/staff-area/").status_code == 200
    assert user_groups("cms-1") == ["cms:top", "users"]

    get(client, later)  # warm
    with django_assert_num_queries(0):
        assert get(client, later, "/auth/whoami/").json()["groups"] == ["cms:top", "users"]
        assert get(client, first, "/auth/whoami/").json()["groups"] == expected


@pytest.mark.django_db
def test_mirroring_external_groups_can_be_switched_off(client, settings, crafted):
    issuer = {
        "issuer": crafted.issuer,
        "group_claims": ["groups"],
        "group_prefix": "cms:",
        "mirror_groups": False,
    }
    allow(settings, issuer)
    now = int(time.time())
    assert get(client, crafted.token(sub="cms-2", groups=["a"], iat=now - 20)).status_code == 200
    later = crafted.token(sub="cms-2", groups=["b"], iat=now - 10)
    assert get(client, later, "/auth/whoami/").json()["groups"] == ["cms:b"]
    assert user_groups("cms-2") == ["cms:a"]  # as first provisioned


# -- RFC 8414 metadata of the real IdP -----------------------------------------------------------


@pytest.mark.django_db
def test_an_rfc_8414_only_issuer_with_a_path_is_found_by_path_insertion(client, settings):
    """Under /realms/test, metadata only at /.well-known/oauth-authorization-server/realms/test."""
    provider = start_idp(
        issuer="http://127.0.0.1:{port}/realms/test", env={"IDP_METADATA": "oauth"}
    )
    try:
        allow(settings, provider.issuer)
        parts = provider.issuer.split("/realms/")
        assert (
            requests.get(
                f"{provider.issuer}/.well-known/openid-configuration", timeout=5
            ).status_code
            == 404
        )
        inserted = f"{parts[0]}/.well-known/oauth-authorization-server/realms/{parts[1]}"
        assert requests.get(inserted, timeout=5).json()["issuer"] == provider.issuer
        response = get(client, provider.client_credentials_token())
        assert response.status_code == 200, response.content
        assert provider.stats()["requests"].get("/realms/test/jwks") == 1
    finally:
        provider.stop()


@pytest.mark.django_db
def test_an_issuer_publishing_no_metadata_is_a_401_not_an_outage(client, settings):
    provider = start_idp(env={"IDP_METADATA": "none"})
    try:
        allow(settings, provider.issuer)
        response = get(client, provider.client_credentials_token())
        assert_invalid(response)
        assert "publishes no OpenID or OAuth metadata" in response["WWW-Authenticate"]
    finally:
        provider.stop()
