"""OpenID Connect Back-Channel Logout 1.0: ``POST /oidc/backchannel-logout/`` with a provider's logout token.

Logout tokens are crafted and signed with the keys of :class:`~tests.loopback_issuer.CraftedIssuer`, a
real issuer on loopback that is our login provider "loop"; browsers sign in through it with crafted ID
tokens naming a provider session (``sid``). The last test runs the whole thing against the real OpenID
provider (tests/idp): a sign-in, then a logout confirmed at the provider, which POSTs its logout token
to the live server.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from io import StringIO
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import SESSION_KEY
from django.contrib.sessions.models import Session as DjangoSession
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from joserfc import jwt as joserfc_jwt
from joserfc.jwk import RSAKey

from epochauth import signals
from epochauth.models import AuditEvent, BrowserLogin, Epoch, Identity, Session
from epochauth.oidc.backchannel import BACKCHANNEL_LOGOUT_EVENT
from epochauth.tokenmanager import grants
from tests.helpers import database_down, received
from tests.idp import parse_forms, sign_in_at_provider
from tests.loopback_issuer import AUDIENCE, CraftedIssuer, compact, compact_bytes, key, public_jwk

URL = "/oidc/backchannel-logout/"
HOST = "127.0.0.1:8000"
CLIENT_ID = "loop-client"
SECRET_ENV = "EPOCHAUTH_TEST_BACKCHANNEL_SECRET"
SUBJECT = "loop-sub-1"
FORM = "application/x-www-form-urlencoded"


# -- fixtures and helpers ----------------------------------------------------------------------


def provider_entry(issuer: str, **overrides: Any) -> dict[str, Any]:
    """A login provider whose access tokens are accepted too (``CraftedIssuer.token()``)."""
    return {
        "issuer": issuer,
        "slug": "loop",
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "audiences": [AUDIENCE],
        "required_scopes": ["servicex"],
        **overrides,
    }


@pytest.fixture
def loop(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[CraftedIssuer]:
    issuer = CraftedIssuer(oidc=True)
    monkeypatch.setenv(SECRET_ENV, "loop-secret")
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "LEEWAY": 30,
        "ISSUERS": [provider_entry(issuer.issuer)],
    }
    yield issuer
    issuer.stop()


def logout_claims(loop: CraftedIssuer, **overrides: Any) -> dict[str, Any]:
    """A good logout token's claims naming ``SUBJECT`` (``None`` drops a claim)."""
    now = int(time.time())
    base = {
        "iss": loop.issuer,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        "sub": SUBJECT,
        "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
    }
    return {k: v for k, v in {**base, **overrides}.items() if v is not None}


def logout_token(
    loop: CraftedIssuer, kid: str = "rsa-1", header: dict[str, Any] | None = None, **claims: Any
) -> str:
    """Signed with the issuer's published key ``kid``; ``header`` merged into the JOSE header."""
    private_key, alg = loop.keys[kid]
    full_header = {"alg": alg, "typ": "logout+jwt", "kid": kid, **(header or {})}
    return compact(
        {k: v for k, v in full_header.items() if v is not None},
        logout_claims(loop, **claims),
        private_key,
    )


def deliver(token: str, client: Client | None = None) -> Any:
    """POST the token as the provider does: a form, no cookies, no CSRF token."""
    client = client or Client(enforce_csrf_checks=True)
    return client.post(
        URL, urlencode({"logout_token": token}), content_type="application/x-www-form-urlencoded"
    )


def assert_refused(response: Any) -> str:
    assert response.status_code == 400, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["error"] == "invalid_request"
    return body["error_description"]


def sign_in(
    loop: CraftedIssuer, sid: str | None, subject: str = SUBJECT, browser: Client | None = None
) -> Client:
    """A browser (a new one by default) signed in through "loop" with an ID token naming provider
    session ``sid``."""
    browser = browser or Client(HTTP_HOST=HOST)
    location = browser.get("/oidc/login/loop/")["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    now = int(time.time())
    claims = {
        "iss": loop.issuer,
        "sub": subject,
        "aud": CLIENT_ID,
        "iat": now,
        "exp": now + 300,
        "sid": sid,
    }
    claims = {"nonce": query["nonce"], **{k: v for k, v in claims.items() if v is not None}}
    code = secrets.token_urlsafe(16)
    loop.codes[code] = compact(
        {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}, claims, key("rsa-a")
    )
    response = browser.get("/oidc/callback/", {"code": code, "state": query["state"]})
    assert response.status_code == 302, response.content
    return browser


def api_tokens(browser: Client) -> dict[str, str]:
    """The signed-in page's API token pair (a session started on that browser login's page)."""
    response = browser.post("/oidc/tokens/")
    assert response.status_code == 200
    return {name: response.context[name] for name in ("access_token", "refresh_token")}


def signed_in(browser: Client) -> bool:
    return browser.get("/auth/whoami/").status_code == 200


def works(access_token: str) -> bool:
    return (
        Client().get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {access_token}").status_code == 200
    )


def refreshes(refresh_token: str) -> bool:
    body = {"refresh_token": refresh_token}
    return (
        Client().post("/auth/token/refresh/", body, content_type="application/json").status_code
        == 200
    )


# -- the endpoint -----------------------------------------------------------------------------


def test_the_endpoint_is_published_under_its_name():
    assert reverse("epochauth-oidc-backchannel-logout") == URL


@pytest.mark.django_db
def test_get_is_405(loop):
    assert Client().get(URL).status_code == 405


# -- success --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_logout_by_sub_ends_every_token_and_session_of_the_user(loop):
    first, second = sign_in(loop, "provider-session-1"), sign_in(loop, "provider-session-2")
    api = api_tokens(first)
    external = loop.token(sub=SUBJECT)
    assert (
        signed_in(first) and signed_in(second) and works(api["access_token"]) and works(external)
    )
    user = Identity.objects.get(issuer=loop.issuer, subject=SUBJECT).user

    with received(signals.epoch_bumped) as bumped:
        response = deliver(logout_token(loop))
    assert response.status_code == 200, response.content
    assert response.content == b""
    assert response["Cache-Control"] == "no-store"

    # The epoch bump ends the browser sessions (EpochSessionMiddleware), local and external tokens.
    assert not signed_in(first) and not signed_in(second)
    assert SESSION_KEY not in first.session
    assert not works(api["access_token"]) and not refreshes(api["refresh_token"])
    assert not works(external)
    epoch = Epoch.objects.get(kind=Epoch.Kind.USER, object_id=str(user.pk))
    assert (epoch.value, epoch.reason) == (1, "backchannel logout")
    assert [(call["object_id"], call["reason"]) for call in bumped] == [
        (str(user.pk), "backchannel logout")
    ]
    event = AuditEvent.objects.get(action="backchannel_logout")
    assert event.user == user
    assert event.detail == {
        "issuer": loop.issuer,
        "subject": SUBJECT,
        "sid": None,
        "browser_sessions": 0,
    }
    # A new sign-in works again.
    assert signed_in(sign_in(loop, "provider-session-3"))


@pytest.mark.django_db
def test_a_logout_by_sub_ends_the_users_dpop_bound_tokens_too(loop):
    """A bound token carries the user's epoch like any other: the provider's logout ends it, with its
    proof as without (RFC 9449 changes how a token is presented, not how it is revoked)."""
    from epochauth.tokens import mint_access_token
    from tests.test_dpop import Holder, call

    sign_in(loop, "provider-session-1")
    user = Identity.objects.get(issuer=loop.issuer, subject=SUBJECT).user
    holder, api = Holder(), Client()
    token = mint_access_token(user, extra_claims={"cnf": {"jkt": holder.jkt}}).token
    assert call(api, token, holder.proof(token)).status_code == 200
    assert deliver(logout_token(loop)).status_code == 200
    refused = call(api, token, holder.proof(token))
    assert refused.status_code == 401 and "revoked" in refused["WWW-Authenticate"]


@pytest.mark.django_db
def test_a_logout_by_sid_ends_only_that_browser_login(loop):
    ending, staying = sign_in(loop, "provider-session-1"), sign_in(loop, "provider-session-2")
    ending_api, staying_api = api_tokens(ending), api_tokens(staying)
    ended_session = Session.objects.get(browser_login__sid="provider-session-1")
    external = loop.token(sub=SUBJECT)

    with received(signals.session_revoked) as revoked, received(signals.epoch_bumped) as bumped:
        response = deliver(logout_token(loop, sub=None, sid="provider-session-1"))
    assert response.status_code == 200, response.content

    assert not signed_in(ending)
    assert not DjangoSession.objects.filter(session_key=ending.session.session_key).exists()
    assert not works(ending_api["access_token"]) and not refreshes(ending_api["refresh_token"])
    assert (
        signed_in(staying)
        and works(staying_api["access_token"])
        and refreshes(staying_api["refresh_token"])
    )
    assert works(external)
    assert not Epoch.objects.exists()
    assert list(BrowserLogin.objects.values_list("sid", flat=True)) == ["provider-session-2"]
    assert [(call["session"].pk, call["reason"]) for call in revoked] == [
        (ended_session.pk, "backchannel_logout")
    ]
    assert not bumped
    audit = AuditEvent.objects.get(action="session_revoked")
    assert audit.detail == {"session": str(ended_session.pk), "reason": "backchannel_logout"}
    event = AuditEvent.objects.get(action="backchannel_logout")
    assert event.detail["browser_sessions"] == 1 and event.detail["sid"] == "provider-session-1"


@pytest.mark.django_db
def test_a_logout_by_sub_and_sid_ends_that_browser_login_and_bumps_the_user(loop):
    browser = sign_in(loop, "provider-session-1")
    key = browser.session.session_key
    assert deliver(logout_token(loop, sid="provider-session-1")).status_code == 200
    assert not DjangoSession.objects.filter(
        session_key=key
    ).exists()  # not only at its next request
    assert not BrowserLogin.objects.exists()
    assert Epoch.objects.get(kind=Epoch.Kind.USER).reason == "backchannel logout"


@pytest.mark.django_db
def test_a_sid_of_another_subject_is_not_ended(loop):
    browser = sign_in(loop, "provider-session-1")
    assert (
        deliver(logout_token(loop, sub="someone-else", sid="provider-session-1")).status_code
        == 200
    )
    assert signed_in(browser)
    assert BrowserLogin.objects.count() == 1 and not Epoch.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("claims", [{"sub": "nobody"}, {"sub": None, "sid": "no-such-session"}])
def test_an_unknown_sub_or_sid_is_200_and_changes_nothing(loop, claims):
    browser = sign_in(loop, "provider-session-1")
    assert deliver(logout_token(loop, **claims)).status_code == 200
    assert signed_in(browser)
    assert not Epoch.objects.exists()
    assert AuditEvent.objects.get(action="backchannel_logout").user is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    "typ",
    [
        "logout+jwt",
        "LOGOUT+JWT",
        "application/logout+jwt",
        "Application/Logout+JWT",
        None,
        # Explicit typing is a recommendation (section 2.4): JWT libraries and Keycloak before 25
        # type logout tokens JWT; events and no nonce tell them apart from other JWTs.
        "JWT",
        "jwt",
        "application/jwt",
    ],
)
def test_accepted_types(loop, typ):
    assert deliver(logout_token(loop, header={"typ": typ})).status_code == 200


def pyjwt_logout_token(loop: CraftedIssuer, **claims: Any) -> str:
    """A logout token as PyJWT makes it, with its default header."""
    return jwt.encode(
        logout_claims(loop, **claims), key("rsa-a"), algorithm="RS256", headers={"kid": "rsa-1"}
    )


def joserfc_logout_token(loop: CraftedIssuer, **claims: Any) -> str:
    """A logout token as joserfc makes it, with its default header."""
    pem = key("rsa-a").private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return joserfc_jwt.encode(
        {"alg": "RS256", "kid": "rsa-1"}, logout_claims(loop, **claims), RSAKey.import_key(pem)
    )


@pytest.mark.django_db
@pytest.mark.parametrize("make", [pyjwt_logout_token, joserfc_logout_token])
def test_logout_tokens_of_jwt_libraries_end_the_sessions(loop, make):
    browser = sign_in(loop, "provider-session-1")
    api = api_tokens(browser)
    token = make(loop, sub=None, sid="provider-session-1")
    assert jwt.get_unverified_header(token)["typ"] == "JWT"  # the library's default
    assert deliver(token).status_code == 200
    assert not signed_in(browser) and not works(api["access_token"])


@pytest.mark.django_db
@pytest.mark.parametrize(
    "claims", [{"aud": [CLIENT_ID]}, {"aud": [CLIENT_ID, CLIENT_ID]}, {"azp": CLIENT_ID}]
)
def test_an_es256_token_and_an_aud_list_or_azp_naming_only_us(loop, claims):
    assert deliver(logout_token(loop, kid="ec-1", **claims)).status_code == 200


@pytest.mark.django_db
def test_a_token_without_exp_is_accepted_while_fresh(loop):
    """The final spec requires exp; earlier drafts (and some providers) leave it out: iat bounds the age."""
    assert deliver(logout_token(loop, exp=None)).status_code == 200


@pytest.mark.django_db
def test_max_age_is_a_setting(loop, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "BACKCHANNEL_LOGOUT_MAX_AGE": 60}
    now = int(time.time())
    assert deliver(logout_token(loop, iat=now - 80)).status_code == 200  # within max age + leeway
    assert "too old" in assert_refused(deliver(logout_token(loop, iat=now - 100)))


@pytest.mark.django_db
def test_a_browser_login_records_the_provider_session_and_its_api_sessions(loop):
    browser = sign_in(loop, "provider-session-1")
    login = BrowserLogin.objects.get()
    assert (login.issuer, login.subject, login.sid) == (loop.issuer, SUBJECT, "provider-session-1")
    assert login.session_key == browser.session.session_key
    assert login.user == Identity.objects.get(subject=SUBJECT).user
    api_tokens(browser)
    assert Session.objects.get().browser_login == login

    without_sid = sign_in(loop, None)
    assert BrowserLogin.objects.count() == 1
    api_tokens(without_sid)
    assert Session.objects.filter(browser_login=None).count() == 1


@pytest.mark.django_db
def test_signing_in_again_in_the_same_browser_hands_the_session_to_the_new_login(loop):
    browser = sign_in(loop, "first")
    first_api = api_tokens(browser)
    key = browser.session.session_key
    sign_in(loop, "second", browser=browser)
    assert browser.session.session_key == key  # Django keeps it for the same user
    second_api = api_tokens(browser)

    assert deliver(logout_token(loop, sub=None, sid="first")).status_code == 200
    assert signed_in(browser) and works(second_api["access_token"])
    assert not works(first_api["access_token"])  # started on the first login's page
    assert deliver(logout_token(loop, sub=None, sid="second")).status_code == 200
    assert not signed_in(browser) and not works(second_api["access_token"])


@pytest.mark.django_db
def test_purge_forgets_browser_logins_whose_sessions_are_over(loop):
    logged_out = sign_in(loop, "logged-out")
    logged_out.post("/oidc/logout/")  # the Django session goes, the login has no API session
    with_api = sign_in(loop, "with-api")
    api_tokens(with_api)
    with_api.post("/oidc/logout/")  # the API session started on its page lives on
    live = sign_in(loop, "live")
    out = StringIO()
    call_command("epochauth_purge", stdout=out)
    assert "Deleted 1 browser logins" in out.getvalue()
    assert sorted(BrowserLogin.objects.values_list("sid", flat=True)) == ["live", "with-api"]
    # The provider's logout still reaches the API session of the logged-out browser.
    assert deliver(logout_token(loop, sub=None, sid="with-api")).status_code == 200
    assert Session.objects.get(browser_login=None).revoked_at is not None
    assert signed_in(live)


# -- refusals ---------------------------------------------------------------------------------


def public_key_pem() -> bytes:
    public = key("rsa-a").public_key()
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spliced(loop: CraftedIssuer, jti: str) -> str:
    """The claims of one token with the (valid) signature of another."""
    good = logout_token(loop, jti=jti)
    other = logout_token(loop, jti=jti, sub="someone-else")
    return good.rsplit(".", 1)[0] + "." + other.rsplit(".", 1)[1]


def raw(loop: CraftedIssuer, payload: bytes) -> str:
    header = json.dumps({"alg": "RS256", "typ": "logout+jwt", "kid": "rsa-1"}).encode()
    return compact_bytes(header, payload, key("rsa-a"), "RS256")


def now() -> int:
    return int(time.time())


#: Each builds a token with the given jti that must be refused: (loop, attacker, jti) -> token.
BAD_TOKENS: dict[str, Any] = {
    "wrong signature": lambda loop, evil, jti: spliced(loop, jti),
    "published kid, another key": lambda loop, evil, jti: compact(
        {"alg": "RS256", "typ": "logout+jwt", "kid": "rsa-1"},
        logout_claims(loop, jti=jti),
        key("rsa-evil"),
    ),
    "kid the issuer does not publish": lambda loop, evil, jti: compact(
        {"alg": "RS256", "typ": "logout+jwt", "kid": "unpublished"},
        logout_claims(loop, jti=jti),
        key("rsa-evil"),
    ),
    "unknown issuer": lambda loop, evil, jti: logout_token(evil, jti=jti, aud=CLIENT_ID),
    "our own issuer": lambda loop, evil, jti: logout_token(
        loop, jti=jti, iss="http://127.0.0.1:8000"
    ),
    "iss with a trailing slash": lambda loop, evil, jti: logout_token(
        loop, jti=jti, iss=loop.issuer + "/"
    ),
    "wrong aud": lambda loop, evil, jti: logout_token(loop, jti=jti, aud="another-client"),
    "the resource's aud": lambda loop, evil, jti: logout_token(loop, jti=jti, aud=AUDIENCE),
    "no aud": lambda loop, evil, jti: logout_token(loop, jti=jti, aud=None),
    # OIDC Core 3.1.3.7 step 3: an audience we do not trust refuses the token, ours among them or not.
    "ours and an untrusted aud": lambda loop, evil, jti: logout_token(
        loop, jti=jti, aud=[CLIENT_ID, "another-client"]
    ),
    "an untrusted aud and ours": lambda loop, evil, jti: logout_token(
        loop, jti=jti, aud=["another-client", CLIENT_ID]
    ),
    "ours and the resource's aud": lambda loop, evil, jti: logout_token(
        loop, jti=jti, aud=[CLIENT_ID, AUDIENCE]
    ),
    "azp another client": lambda loop, evil, jti: logout_token(
        loop, jti=jti, aud=[CLIENT_ID, "another-client"], azp="another-client"
    ),
    "azp another client, aud ours": lambda loop, evil, jti: logout_token(
        loop, jti=jti, azp="another-client"
    ),
    "typ at+jwt": lambda loop, evil, jti: logout_token(loop, jti=jti, header={"typ": "at+jwt"}),
    "typ application/at+jwt": lambda loop, evil, jti: logout_token(
        loop, jti=jti, header={"typ": "application/at+jwt"}
    ),
    "typ JOSE": lambda loop, evil, jti: logout_token(loop, jti=jti, header={"typ": "JOSE"}),
    "typ secevent+jwt": lambda loop, evil, jti: logout_token(
        loop, jti=jti, header={"typ": "secevent+jwt"}
    ),
    "typ empty": lambda loop, evil, jti: logout_token(loop, jti=jti, header={"typ": ""}),
    "typ not a string": lambda loop, evil, jti: logout_token(
        loop, jti=jti, header={"typ": ["logout+jwt"]}
    ),
    "no events": lambda loop, evil, jti: logout_token(loop, jti=jti, events=None),
    "a foreign event only": lambda loop, evil, jti: logout_token(
        loop, jti=jti, events={"http://schemas.openid.net/event/other": {}}
    ),
    "the event's value not an object": lambda loop, evil, jti: logout_token(
        loop, jti=jti, events={BACKCHANNEL_LOGOUT_EVENT: "yes"}
    ),
    "events a list": lambda loop, evil, jti: logout_token(
        loop, jti=jti, events=[BACKCHANNEL_LOGOUT_EVENT]
    ),
    "nonce present": lambda loop, evil, jti: logout_token(loop, jti=jti, nonce="n-0S6_WzA2Mj"),
    "no sub and no sid": lambda loop, evil, jti: logout_token(loop, jti=jti, sub=None),
    "blank sid": lambda loop, evil, jti: logout_token(loop, jti=jti, sid=" "),
    "sid not a string": lambda loop, evil, jti: logout_token(loop, jti=jti, sid=42),
    "sid with a NUL": lambda loop, evil, jti: logout_token(
        loop, jti=jti, sid="provider-session-1\x00"
    ),
    "sid a lone surrogate": lambda loop, evil, jti: logout_token(
        loop, jti=jti, sub=None, sid="\ud800"
    ),
    "jti a lone surrogate": lambda loop, evil, jti: logout_token(loop, jti=jti + "\udfff"),
    "empty sub": lambda loop, evil, jti: logout_token(loop, jti=jti, sub=""),
    "sub not a string": lambda loop, evil, jti: logout_token(loop, jti=jti, sub=["x"]),
    "stale iat": lambda loop, evil, jti: logout_token(
        loop, jti=jti, iat=now() - 400, exp=now() + 60
    ),
    "iat in the future": lambda loop, evil, jti: logout_token(loop, jti=jti, iat=now() + 120),
    "no iat": lambda loop, evil, jti: logout_token(loop, jti=jti, iat=None),
    "string iat": lambda loop, evil, jti: logout_token(loop, jti=jti, iat=str(now())),
    "boolean iat": lambda loop, evil, jti: logout_token(loop, jti=jti, iat=True),
    "expired": lambda loop, evil, jti: logout_token(
        loop, jti=jti, iat=now() - 100, exp=now() - 60
    ),
    "not UTF-8": lambda loop, evil, jti: raw(
        loop, json.dumps(logout_claims(loop, jti=jti)).encode("utf-16")
    ),
    "duplicate member names": lambda loop, evil, jti: raw(
        loop, json.dumps(logout_claims(loop, jti=jti))[:-1].encode() + b', "sub": "someone-else"}'
    ),
    "claims not an object": lambda loop, evil, jti: raw(loop, b'["a logout token"]'),
    "alg none": lambda loop, evil, jti: compact(
        {"alg": "none", "typ": "logout+jwt", "kid": "rsa-1"}, logout_claims(loop, jti=jti)
    ),
    "alg none with a signature": lambda loop, evil, jti: (
        compact({"alg": "none", "kid": "rsa-1"}, logout_claims(loop, jti=jti)) + "c2lnbmF0dXJl"
    ),
    "HS256 signed with the public key": lambda loop, evil, jti: compact(
        {"alg": "HS256", "kid": "rsa-1"}, logout_claims(loop, jti=jti), public_key_pem()
    ),
    "an algorithm the issuer does not use": lambda loop, evil, jti: compact(
        {"alg": "PS256", "kid": "rsa-1"}, logout_claims(loop, jti=jti), key("rsa-a")
    ),
    "RS256 naming the EC key": lambda loop, evil, jti: compact(
        {"alg": "RS256", "kid": "ec-1"}, logout_claims(loop, jti=jti), key("rsa-a")
    ),
    "no kid, not its key": lambda loop, evil, jti: compact(
        {"alg": "RS256", "typ": "logout+jwt"}, logout_claims(loop, jti=jti), key("rsa-evil")
    ),
    "crit header": lambda loop, evil, jti: logout_token(
        loop, jti=jti, header={"crit": ["exp"], "exp": 1}
    ),
    "jku pointing elsewhere": lambda loop, evil, jti: compact(
        {"alg": "RS256", "kid": "rsa-1", "jku": f"{evil.issuer}/jwks"},
        logout_claims(loop, jti=jti),
        key("rsa-evil"),
    ),
    "x5u pointing elsewhere": lambda loop, evil, jti: compact(
        {"alg": "RS256", "kid": "rsa-1", "x5u": f"{evil.issuer}/cert.pem"},
        logout_claims(loop, jti=jti),
        key("rsa-evil"),
    ),
    "an embedded jwk": lambda loop, evil, jti: compact(
        {"alg": "RS256", "kid": "rsa-1", "jwk": public_jwk(key("rsa-evil"), "rsa-1", "RS256")},
        logout_claims(loop, jti=jti),
        key("rsa-evil"),
    ),
    "an ID token": lambda loop, evil, jti: compact(
        {"alg": "RS256", "typ": "JWT", "kid": "rsa-1"},
        logout_claims(loop, jti=jti, events=None, nonce="n-0S6_WzA2Mj", exp=now() + 300),
        key("rsa-a"),
    ),
    "the issuer's access token": lambda loop, evil, jti: loop.token(jti=jti, aud=CLIENT_ID),
    "too long": lambda loop, evil, jti: logout_token(loop, jti=jti, padding="x" * 9000),
    "not a JWT": lambda loop, evil, jti: "not-a-jwt",
    "bad base64": lambda loop, evil, jti: "eyJhbGciOiJSUzI1NiJ9.*.c2ln",
    "padding": lambda loop, evil, jti: logout_token(loop, jti=jti) + "==",
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(BAD_TOKENS))
def test_bad_logout_tokens_are_refused_and_change_nothing(loop, attacker, caplog, case):
    browser = sign_in(loop, "provider-session-1")
    api = api_tokens(browser)
    jti = uuid.uuid4().hex
    token = BAD_TOKENS[case](loop, attacker, jti)

    caplog.set_level(logging.DEBUG)
    description = assert_refused(deliver(token))
    assert description in caplog.text  # for the operator, without the token
    assert not [part for part in token.split(".") if len(part) > 8 and part in caplog.text]
    assert signed_in(browser) and works(api["access_token"])
    assert not Epoch.objects.exists()
    assert BrowserLogin.objects.count() == 1
    assert not AuditEvent.objects.filter(
        action__in=["backchannel_logout", "session_revoked"]
    ).exists()
    # Only a valid token marks its jti used: the good one with the same jti is not a replay.
    assert (
        deliver(logout_token(loop, jti=jti, sub=None, sid="provider-session-1")).status_code == 200
    )
    assert not signed_in(browser)


@pytest.mark.django_db
def test_an_allow_listed_issuer_without_a_client_id_is_refused_before_any_request(loop, settings):
    other = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {
            **settings.EPOCHAUTH,
            "ISSUERS": [{"issuer": other.issuer, "audiences": [AUDIENCE]}],
        }
        description = assert_refused(deliver(logout_token(other, aud="anything")))
        assert "not an identity provider" in description
        assert other.counts.total() == 0
    finally:
        other.stop()


@pytest.mark.django_db
def test_a_disabled_issuer_is_refused(loop, settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [provider_entry(loop.issuer, enabled=False)],
    }
    assert_refused(deliver(logout_token(loop)))


@pytest.mark.django_db
def test_a_replayed_jti_is_refused(loop):
    jti = uuid.uuid4().hex
    token = logout_token(loop, jti=jti, sub=None, sid="provider-session-1")
    assert deliver(token).status_code == 200
    browser = sign_in(loop, "provider-session-1")  # the same provider session signs in again
    assert "used already" in assert_refused(deliver(token))
    assert "used already" in assert_refused(
        deliver(logout_token(loop, jti=jti, sid="provider-session-1"))
    )
    assert signed_in(browser) and not Epoch.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("", FORM),
        ("logout_token=", FORM),
        ("other=1", FORM),
        ("logout_token=%00", FORM),
        ("logout_token=%ff%fe", FORM),
        (
            "logout_token=" + "a" * 3_000_000,
            "application/x-www-form-urlencoded",
        ),  # > DATA_UPLOAD_MAX_MEMORY_SIZE
        ("a=1&" * 1001, FORM),  # > DATA_UPLOAD_MAX_NUMBER_FIELDS
        ('{"logout_token": "a.b.c"}', "application/json"),
        ("logout_token=a.b.c", "text/plain"),
        ("\xff\xfe garbage", "application/octet-stream"),
    ],
)
def test_bad_requests_are_400_json(loop, body, content_type):
    assert_refused(Client().post(URL, body, content_type=content_type))


@pytest.mark.django_db
def test_multipart_is_refused_and_whitespace_is_not_trimmed(loop):
    assert_refused(
        Client().post(URL, {"logout_token": logout_token(loop)})
    )  # the test client's multipart
    assert_refused(deliver(f" {logout_token(loop)}\n"))


# -- outages: nothing half-done, the provider may deliver again -----------------------------------


@pytest.mark.django_db
def test_shared_cache_down_is_503_and_the_token_can_be_delivered_again(loop, settings, free_port):
    browser = sign_in(loop, "provider-session-1")
    token = logout_token(loop, sub=None, sid="provider-session-1")
    working = settings.CACHES
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    response = deliver(token)
    assert response.status_code == 503, response.content
    assert response["Retry-After"] and response["Cache-Control"] == "no-store"
    settings.CACHES = working
    assert signed_in(browser) and BrowserLogin.objects.count() == 1
    assert deliver(token).status_code == 200
    assert not signed_in(browser)


@pytest.mark.django_db
def test_database_down_is_503_and_the_token_can_be_delivered_again(loop):
    browser = sign_in(loop, "provider-session-1")
    api = api_tokens(browser)
    token = logout_token(loop, sid="provider-session-1")
    with database_down():
        response = deliver(token)
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert signed_in(browser) and works(api["access_token"]) and not Epoch.objects.exists()
    assert deliver(token).status_code == 200
    assert not signed_in(browser) and not works(api["access_token"])


@pytest.mark.django_db
def test_issuer_keys_unreachable_is_503(loop):
    loop.status = 503
    response = deliver(logout_token(loop))
    assert response.status_code == 503 and response["Retry-After"]


# -- end to end: the real provider logs the user out ------------------------------------------------


@pytest.fixture
def web_idp_env(live_server: Any) -> dict[str, str]:
    """``web_idp`` registers our back-channel logout URI for its web-client (with ``sid`` required)."""
    # Node may resolve "localhost" to ::1, where the live server does not listen.
    return {
        "IDP_BACKCHANNEL_LOGOUT_URI": f"http://127.0.0.1:{urlsplit(live_server.url).port}{URL}"
    }


@pytest.mark.django_db(transaction=True)
def test_a_logout_at_the_real_provider_ends_the_session_and_the_tokens_here(web_idp, live_server):
    assert web_idp.metadata["backchannel_logout_supported"] is True
    site = live_server.url
    browser = requests.Session()  # the user's browser, at the provider and here
    start = browser.get(f"{site}/oidc/login/test-idp/", allow_redirects=False, timeout=10)
    callback = sign_in_at_provider(
        start.headers["Location"], "alice", f"{site}/oidc/callback/", http=browser
    )
    page = browser.get(callback, timeout=10)
    assert "Signed in as alice" in page.text
    created = browser.post(
        f"{site}/oidc/tokens/", data=parse_forms(page.text)[0]["fields"], timeout=10
    )
    access_token = re.search(r'<pre id="access-token">([^<]+)</pre>', created.text).group(1)
    idp_token = web_idp.user_token("alice")  # the provider's own access token for our API

    def api(token: str) -> int:
        return requests.get(
            f"{site}/api/hello/", headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code

    assert browser.get(f"{site}/auth/whoami/", timeout=10).json()["username"] == "alice"
    assert api(access_token) == 200 and api(idp_token) == 200
    login = BrowserLogin.objects.get()
    assert (login.subject, login.issuer) == ("alice", web_idp.issuer) and login.sid

    # Sign out at the provider and confirm: it POSTs its logout token (sub and sid) to us before answering.
    question = browser.get(
        f"{web_idp.metadata['end_session_endpoint']}?client_id=web-client", timeout=10
    )
    form = next(f for f in parse_forms(question.text) if f["method"] == "post")
    browser.post(
        urljoin(question.url, form["action"]), data={**form["fields"], "logout": "yes"}, timeout=10
    )

    assert "backchannel.success web-client" in web_idp.log_tail()
    assert browser.get(f"{site}/auth/whoami/", timeout=10).status_code in (401, 403)
    assert api(access_token) == 401 and api(idp_token) == 401
    event = AuditEvent.objects.get(action="backchannel_logout")
    assert event.detail == {
        "issuer": web_idp.issuer,
        "subject": "alice",
        "sid": login.sid,
        "browser_sessions": 1,
    }
    assert not BrowserLogin.objects.exists()


@pytest.mark.django_db
def test_a_logout_by_sid_alone_ends_the_upstream_grants_of_that_provider(loop):
    """No API session started on the browser login: the Token Manager's grant at the provider ends
    with the provider session, and one at another provider stays."""
    sign_in(loop, "provider-session-1")
    user = Identity.objects.get(issuer=loop.issuer, subject=SUBJECT).user
    ending = grants.keep(user, loop.issuer, "upstream-refresh-token")
    staying = grants.keep(user, "https://other.example", "other-refresh-token")

    with received(signals.provider_logout) as sent:
        response = deliver(logout_token(loop, sub=None, sid="provider-session-1"))
    assert response.status_code == 200, response.content

    assert sent == [
        {**sent[0], "issuer": loop.issuer, "user_ids": [user.pk], "sid": "provider-session-1"}
    ]
    ending.refresh_from_db()
    staying.refresh_from_db()
    assert ending.ended_at is not None and ending.end_reason == "backchannel_logout"
    assert staying.ended_at is None
    with pytest.raises(grants.GrantUnavailable):
        grants.access_token(user, loop.issuer)
