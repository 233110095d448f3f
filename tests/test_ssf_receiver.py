"""The Shared Signals receiver (epochauth.ssf): SETs pushed to ``/auth/ssf/events/`` (RFC 8935) or
polled (RFC 8936) from an allow-listed transmitter end access here.

The transmitter is :class:`~tests.ssf_transmitter.TestTransmitter`, a real one on loopback whose
issuer is allow-listed: the API accepts its access tokens, which is how each test sees an event take
access away (a token that worked before answers 401 after). Pushes go through Django's test client
with the stream's secret; the end-to-end tests run the commands against the transmitter, which pushes
to the live server.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from epochauth import checks
from epochauth.models import BrowserLogin, Epoch, Identity, SsfSubscription
from epochauth.ssf import events, receiver
from tests.helpers import database_down
from tests.loopback_issuer import (
    AUDIENCE,
    CraftedIssuer,
    compact,
    compact_bytes,
    key,
    public_jwk,
)
from tests.ssf_transmitter import MANAGEMENT_TOKEN, TestTransmitter
from tests.test_oauth_parameters import HOSTILE

URL = "/auth/ssf/events/"
US = "http://127.0.0.1:8000"  # the test project's ISSUER: the audience of our SETs
TOKEN_ENV = "EPOCHAUTH_TEST_SSF_TOKEN"
SECRET = "push-secret-" * 3

pytestmark = pytest.mark.django_db


# -- fixtures and helpers ----------------------------------------------------------------------


def entry(issuer: str, **overrides: Any) -> dict[str, Any]:
    return {"issuer": issuer, "token_env": TOKEN_ENV, **overrides}


@pytest.fixture
def transmitter(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestTransmitter]:
    sender = TestTransmitter(audience=US)
    monkeypatch.setenv(TOKEN_ENV, MANAGEMENT_TOKEN)
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [{"issuer": sender.issuer, "audiences": [AUDIENCE]}],
        "SSF_TRANSMITTERS": [entry(sender.issuer)],
    }
    yield sender
    sender.stop()


@pytest.fixture
def stream(transmitter: TestTransmitter) -> SsfSubscription:
    return SsfSubscription.objects.create(
        issuer=transmitter.issuer,
        stream_id="stream-1",
        delivery="push",
        push_secret_hash=receiver.secret_hash(SECRET),
    )


def push(
    token: str, secret: str | None = SECRET, content_type: str = events.SECEVENT_MEDIA_TYPE
) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Bearer {secret}"} if secret is not None else {}
    return Client(enforce_csrf_checks=True).post(URL, token, content_type=content_type, **headers)


def refused(response: Any, err: str, status: int = 400) -> str:
    assert response.status_code == status, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["err"] == err, body
    return body["description"]


def iss_sub(issuer: str, subject: str) -> dict[str, str]:
    return {"format": "iss_sub", "iss": issuer, "sub": subject}


def whoami(issuer: CraftedIssuer, subject: str) -> int:
    """The API's answer to an access token of ``subject`` issued a little while ago."""
    token = issuer.token(sub=subject, iat=int(time.time()) - 5)
    return Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def signed_in(issuer: CraftedIssuer, subject: str, email: str = "") -> Any:
    """The user of ``subject`` at ``issuer``, provisioned by a first request with its token."""
    assert whoami(issuer, subject) == 200
    user = Identity.objects.get(issuer=issuer.issuer, subject=subject).user
    if email:
        user.email = email
        user.save(update_fields=["email"])
    return user


def user_epoch(user: Any) -> int:
    row = Epoch.objects.filter(kind=Epoch.Kind.USER, object_id=str(user.pk)).first()
    return row.value if row is not None else 0


# -- the events ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_type",
    [
        events.SESSION_REVOKED,
        events.CREDENTIAL_CHANGE,
        events.TOKEN_CLAIMS_CHANGE,
        events.CREDENTIAL_COMPROMISE,
        events.SESSIONS_REVOKED,
    ],
)
def test_an_event_about_a_user_ends_its_tokens(
    transmitter: TestTransmitter, stream: SsfSubscription, event_type: str
) -> None:
    user = signed_in(transmitter, "alice")
    other = signed_in(transmitter, "bob")
    token = transmitter.event_token(event_type, {}, iss_sub(transmitter.issuer, "alice"))
    response = push(token)
    assert response.status_code == 202, response.content
    assert whoami(transmitter, "alice") == 401
    assert whoami(transmitter, "bob") == 200
    assert user_epoch(user) == 1 and user_epoch(other) == 0


@pytest.mark.parametrize("event_type", [events.ACCOUNT_DISABLED, events.ACCOUNT_PURGED])
def test_account_disabled_or_purged_deactivates_the_user(
    transmitter: TestTransmitter, stream: SsfSubscription, event_type: str
) -> None:
    user = signed_in(transmitter, "alice")
    response = push(transmitter.event_token(event_type, {}, iss_sub(transmitter.issuer, "alice")))
    assert response.status_code == 202
    user.refresh_from_db()
    assert not user.is_active
    assert user_epoch(user) == 1  # the deactivation's bump
    assert whoami(transmitter, "alice") == 401


def test_the_subject_inside_an_event_defined_before_ssf(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    """CAEP events before SSF's ``sub_id`` carry the subject in the event."""
    signed_in(transmitter, "alice")
    payload = {"subject": iss_sub(transmitter.issuer, "alice")}
    assert push(transmitter.event_token(events.CREDENTIAL_CHANGE, payload)).status_code == 202
    assert whoami(transmitter, "alice") == 401


def test_an_opaque_subject_is_a_sub_of_the_transmitters_issuer(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    signed_in(transmitter, "alice")
    sub_id = {"format": "opaque", "id": "alice"}
    assert push(transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id)).status_code == 202
    assert whoami(transmitter, "alice") == 401


def test_an_email_subject_reaches_only_users_of_the_transmitters_issuer(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    """The same address on a local user, or on a user of another issuer, is not the transmitter's."""
    other_issuer = CraftedIssuer()
    try:
        with_identity = signed_in(transmitter, "alice", email="Alice@Example.org")
        local = get_user_model().objects.create_user("local-alice", email="alice@example.org")
        foreign = get_user_model().objects.create_user("foreign-alice", email="alice@example.org")
        Identity.objects.create(issuer=other_issuer.issuer, subject="alice", user=foreign)
        sub_id = {"format": "email", "email": "alice@example.org"}
        assert (
            push(transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id)).status_code == 202
        )
        assert user_epoch(with_identity) == 1
        assert user_epoch(local) == 0 and user_epoch(foreign) == 0
    finally:
        other_issuer.stop()


def test_an_iss_sub_of_another_issuer_is_ignored(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    """A transmitter never affects another issuer's identity, even one with the same sub."""
    other_issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {
            **settings.EPOCHAUTH,
            "ISSUERS": [
                *settings.EPOCHAUTH["ISSUERS"],
                {"issuer": other_issuer.issuer, "audiences": [AUDIENCE]},
            ],
        }
        mine = signed_in(transmitter, "alice")
        theirs = signed_in(other_issuer, "alice")
        sub_id = iss_sub(other_issuer.issuer, "alice")
        assert (
            push(transmitter.event_token(events.ACCOUNT_DISABLED, {}, sub_id)).status_code == 202
        )
        theirs.refresh_from_db()
        assert theirs.is_active and user_epoch(theirs) == 0 and user_epoch(mine) == 0
        assert whoami(other_issuer, "alice") == 200
    finally:
        other_issuer.stop()


@pytest.mark.parametrize(
    "sub_id",
    [
        {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": "x"},
        {"format": "email", "email": "nobody@example.org"},
        {"format": "opaque", "id": "nobody"},
        {"format": "phone_number", "phone_number": "+1 555 0100"},
        {"format": "iss_sub", "iss": 1, "sub": ["x"]},
        "alice",
    ],
    ids=[
        "other-issuer",
        "unknown-email",
        "unknown-opaque",
        "unread-format",
        "malformed",
        "string",
    ],
)
def test_an_unknown_subject_is_accepted_and_ignored(
    transmitter: TestTransmitter, stream: SsfSubscription, sub_id: Any
) -> None:
    """202 whether or not the subject exists here: the answer tells the transmitter nothing."""
    user = signed_in(transmitter, "alice")
    assert push(transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id)).status_code == 202
    assert user_epoch(user) == 0


def test_an_event_type_we_do_not_act_on_is_accepted_and_ignored(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    user = signed_in(transmitter, "alice")
    sub_id = iss_sub(transmitter.issuer, "alice")
    token = transmitter.event_token(f"{events.CAEP}assurance-level-change", {}, sub_id)
    assert push(token).status_code == 202
    assert user_epoch(user) == 0


def test_a_session_subject_ends_only_that_provider_sessions_browser_logins(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    user = signed_in(transmitter, "alice")
    ended = BrowserLogin.objects.create(
        issuer=transmitter.issuer, subject="alice", sid="sid-1", user=user, session_key="a" * 40
    )
    kept = BrowserLogin.objects.create(
        issuer=transmitter.issuer, subject="alice", sid="sid-2", user=user, session_key="b" * 40
    )
    sub_id = {
        "format": "complex",
        "user": iss_sub(transmitter.issuer, "alice"),
        "session": {"format": "opaque", "id": "sid-1"},
    }
    assert push(transmitter.event_token(events.SESSION_REVOKED, {}, sub_id)).status_code == 202
    remaining = set(BrowserLogin.objects.values_list("pk", flat=True))
    assert ended.pk not in remaining and kept.pk in remaining
    assert user_epoch(user) == 0  # the user's other access stays


def test_the_verification_event_verifies_the_stream_with_its_state_only(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    stream.verification_hash = receiver.secret_hash("the-state")
    stream.save()
    wrong = transmitter.event_token(events.VERIFICATION, {"state": "another"})
    assert push(wrong).status_code == 202
    stream.refresh_from_db()
    assert stream.verified_at is None
    assert (
        push(transmitter.event_token(events.VERIFICATION, {"state": "the-state"})).status_code
        == 202
    )
    stream.refresh_from_db()
    assert stream.verified_at is not None


# -- who may push ----------------------------------------------------------------------------------


def test_a_push_without_the_streams_secret_is_unauthenticated(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    user = signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    for secret in (None, "", "wrong-secret", SECRET + "x"):
        response = push(token, secret=secret)
        refused(response, "authentication_failed", 401)
        assert response["WWW-Authenticate"].startswith("Bearer")
    basic = Client().post(
        URL, token, content_type=events.SECEVENT_MEDIA_TYPE, HTTP_AUTHORIZATION=f"Basic {SECRET}"
    )
    refused(basic, "authentication_failed", 401)
    assert user_epoch(user) == 0


def test_a_poll_stream_takes_no_pushes(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    stream.delivery = "poll"
    stream.save()
    token = transmitter.event_token(events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "a"))
    refused(push(token), "authentication_failed", 401)


def test_a_transmitter_no_longer_configured_is_denied(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTERS": []}
    token = transmitter.event_token(events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "a"))
    refused(push(token), "access_denied", 403)


def test_another_allow_listed_issuers_set_on_this_streams_secret_is_refused(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    """The stream's secret authenticates its transmitter only: another issuer's well-signed SET
    about its own identity is refused."""
    other = TestTransmitter(audience=US)
    try:
        settings.EPOCHAUTH = {
            **settings.EPOCHAUTH,
            "ISSUERS": [
                *settings.EPOCHAUTH["ISSUERS"],
                {"issuer": other.issuer, "audiences": [AUDIENCE]},
            ],
            "SSF_TRANSMITTERS": [entry(transmitter.issuer), entry(other.issuer)],
        }
        user = signed_in(other, "alice")
        token = other.event_token(events.CREDENTIAL_CHANGE, {}, iss_sub(other.issuer, "alice"))
        refused(push(token), "invalid_issuer")
        assert user_epoch(user) == 0
    finally:
        other.stop()


# -- hostile SETs ----------------------------------------------------------------------------------


def test_wrong_content_type_and_oversized_bodies_are_refused(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    token = transmitter.event_token(events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "a"))
    refused(push(token, content_type="application/jwt"), "invalid_request")
    refused(push(token, content_type="application/x-www-form-urlencoded"), "invalid_request")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "MAX_TOKEN_BYTES": len(token) - 1}
    assert "too long" in refused(push(token), "invalid_request")
    refused(push("x" * 100_000), "invalid_request")
    refused(push("not a jwt"), "invalid_request")
    assert Client().get(URL).status_code == 405


@pytest.mark.parametrize(
    ("header", "err"),
    [
        ({"typ": "JWT"}, "invalid_request"),
        ({"typ": "at+jwt"}, "invalid_request"),
        ({"typ": "logout+jwt"}, "invalid_request"),
        ({"typ": None}, "invalid_request"),
        ({"crit": ["exp"]}, "invalid_request"),
    ],
    ids=["jwt", "at+jwt", "logout+jwt", "untyped", "crit"],
)
def test_a_token_of_another_type_is_refused(
    transmitter: TestTransmitter, stream: SsfSubscription, header: dict[str, Any], err: str
) -> None:
    user = signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice"), header=header
    )
    refused(push(token), err)
    assert user_epoch(user) == 0


def test_application_secevent_jwt_is_the_same_type(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE,
        {},
        iss_sub(transmitter.issuer, "alice"),
        header={"typ": "Application/SecEvent+JWT"},
    )
    assert push(token).status_code == 202


@pytest.mark.parametrize(
    ("claims", "err"),
    [
        ({"aud": "https://another-receiver.example"}, "invalid_audience"),
        ({"aud": None}, "invalid_request"),
        ({"iss": "https://elsewhere.example"}, "invalid_issuer"),
        ({"iat": None}, "invalid_request"),
        ({"iat": int(time.time()) + 3600}, "invalid_request"),
        ({"iat": "now"}, "invalid_request"),
        ({"jti": None}, "invalid_request"),
        ({"jti": ""}, "invalid_request"),
        ({"jti": 7}, "invalid_request"),
        ({"exp": int(time.time()) - 3600}, "invalid_request"),
        ({"events": None}, "invalid_request"),
        ({"events": "credential-change"}, "invalid_request"),
        ({"events": {}}, "invalid_request"),
        (
            {"events": {events.CREDENTIAL_CHANGE: {}, events.SESSION_REVOKED: {}}},
            "invalid_request",
        ),
        ({"events": {events.CREDENTIAL_CHANGE: "yes"}}, "invalid_request"),
    ],
    ids=lambda value: json.dumps(value) if isinstance(value, dict) else value,
)
def test_a_set_with_bad_claims_is_refused(
    transmitter: TestTransmitter, stream: SsfSubscription, claims: dict[str, Any], err: str
) -> None:
    user = signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice"), **claims
    )
    refused(push(token), err)
    assert user_epoch(user) == 0


@pytest.mark.parametrize("label", list(HOSTILE))
def test_hostile_bodies_and_authorizations_are_never_a_server_error(
    transmitter: TestTransmitter, stream: SsfSubscription, label: str
) -> None:
    value = HOSTILE[label]
    client = Client()
    body = client.post(
        URL,
        value,
        content_type=events.SECEVENT_MEDIA_TYPE,
        HTTP_AUTHORIZATION=f"Bearer {SECRET}",
    )
    assert body.status_code == 400 and body.json()["err"] == "invalid_request"
    header = client.post(
        URL,
        b"x.y.z",
        content_type=events.SECEVENT_MEDIA_TYPE,
        HTTP_AUTHORIZATION=f"Bearer {value.decode('latin-1')}",
    )
    assert header.status_code == 401


def test_duplicate_claim_names_are_refused(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    """The one parser's rules: a claim named twice (the second could name another audience)."""
    user = signed_in(transmitter, "alice")
    claims = json.dumps(
        transmitter.set_claims(events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice"))
    )
    doubled = claims[:-1] + ', "aud": "https://another.example"}'
    private_key, alg = transmitter.keys["rsa-1"]
    header = json.dumps({"alg": alg, "typ": "secevent+jwt", "kid": "rsa-1"}).encode()
    token = compact_bytes(header, doubled.encode(), private_key, alg)
    assert "malformed" in refused(push(token), "invalid_request")
    assert user_epoch(user) == 0


def test_a_set_older_than_ssf_max_age_is_refused(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_MAX_AGE": 600, "LEEWAY": 30}
    sub_id = iss_sub(transmitter.issuer, "alice")
    old = transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id, iat=int(time.time()) - 700)
    assert "too old" in refused(push(old), "invalid_request")
    recent = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, sub_id, iat=int(time.time()) - 500
    )
    assert push(recent).status_code == 202


def test_a_replayed_set_is_refused(transmitter: TestTransmitter, stream: SsfSubscription) -> None:
    user = signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    assert push(token).status_code == 202
    assert "already" in refused(push(token), "invalid_request")
    assert user_epoch(user) == 1


def test_alg_none_and_hmac_are_refused(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    """``none`` and an HMAC keyed with the issuer's public key (the RS256/HS256 confusion)."""
    user = signed_in(transmitter, "alice")
    claims = transmitter.set_claims(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    unsigned = compact({"alg": "none", "typ": "secevent+jwt", "kid": "rsa-1"}, claims)
    refused(push(unsigned), "invalid_request")  # an empty signature segment is no compact JWS
    refused(push(unsigned + "c2lnbmF0dXJl"), "invalid_key")
    public_pem = json.dumps(transmitter.jwks()["keys"][0]).encode()
    hmac_token = compact(
        {"alg": "HS256", "typ": "secevent+jwt", "kid": "rsa-1"}, claims, public_pem, "HS256"
    )
    refused(push(hmac_token), "invalid_key")
    assert user_epoch(user) == 0


@pytest.mark.parametrize("name", ["jku", "x5u", "jwk"])
def test_keys_named_in_the_header_are_never_used(
    transmitter: TestTransmitter, stream: SsfSubscription, name: str
) -> None:
    """A SET signed by an attacker's key, naming that key in ``jku``/``x5u``/``jwk``: refused, and
    the attacker's URL is never fetched."""
    attacker = CraftedIssuer(keys={"evil": (key("rsa-evil"), "RS256")})
    try:
        user = signed_in(transmitter, "alice")
        value: Any = {
            "jku": f"{attacker.issuer}/jwks",
            "x5u": f"{attacker.issuer}/cert.pem",
            "jwk": public_jwk(key("rsa-evil"), "rsa-1", "RS256"),
        }[name]
        claims = transmitter.set_claims(
            events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
        )
        token = compact(
            {"alg": "RS256", "typ": "secevent+jwt", "kid": "rsa-1", name: value},
            claims,
            key("rsa-evil"),
        )
        refused(push(token), "invalid_request")
        assert sum(attacker.counts.values()) == 0
        assert user_epoch(user) == 0
    finally:
        attacker.stop()


def test_a_set_signed_with_an_unknown_key_is_refused(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    claims = transmitter.set_claims(events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "a"))
    token = compact(
        {"alg": "RS256", "typ": "secevent+jwt", "kid": "nope"}, claims, key("rsa-evil")
    )
    refused(push(token), "invalid_key")


def test_the_transmitters_keys_unavailable_is_a_503_and_the_set_may_come_again(
    transmitter: TestTransmitter, stream: SsfSubscription, settings: Any
) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "JWKS_REFETCH_COOLDOWN": 0}
    user = get_user_model().objects.create_user("alice")
    Identity.objects.create(issuer=transmitter.issuer, subject="alice", user=user)
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    transmitter.status = 503
    try:
        response = push(token)
    finally:
        transmitter.status = None
    assert response.status_code == 503 and response["Retry-After"]
    assert user_epoch(user) == 0
    assert push(token).status_code == 202
    assert user_epoch(user) == 1


def test_the_database_down_is_a_503_and_the_set_may_come_again(
    transmitter: TestTransmitter, stream: SsfSubscription
) -> None:
    user = signed_in(transmitter, "alice")
    token = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    with database_down():
        response = push(token)
    assert response.status_code == 503 and response["Retry-After"]
    assert user_epoch(user) == 0
    assert push(token).status_code == 202
    assert user_epoch(user) == 1


# -- subscribing and polling, end to end -----------------------------------------------------------


@pytest.fixture
def live_transmitter(
    transmitter: TestTransmitter, live_server: Any, settings: Any
) -> TestTransmitter:
    """The transmitter pushes to the live server (a transaction the server's thread can see)."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTERS": [entry(transmitter.issuer, push_url=f"{live_server.url}{URL}")],
    }
    return transmitter


@pytest.mark.django_db(transaction=True)
def test_subscribe_by_push_is_verified_and_events_arrive(
    live_transmitter: TestTransmitter,
) -> None:
    transmitter = live_transmitter
    out = StringIO()
    call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "5", stdout=out)
    assert "Verified" in out.getvalue(), out.getvalue()
    stream = SsfSubscription.objects.get(issuer=transmitter.issuer)
    assert stream.delivery == "push" and stream.stream_id in transmitter.streams
    delivery = transmitter.streams[stream.stream_id]["delivery"]
    assert delivery["method"] == events.PUSH and delivery["endpoint_url"].endswith(URL)
    assert transmitter.pushes == [(202, b"")]
    secret = delivery["authorization_header"].removeprefix("Bearer ")
    assert stream.push_secret_hash == receiver.secret_hash(secret)
    assert secret not in json.dumps(list(SsfSubscription.objects.values()), default=str)

    user = signed_in(transmitter, "alice")
    sub_id = iss_sub(transmitter.issuer, "alice")
    transmitter.deliver(
        stream.stream_id, transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id)
    )
    assert transmitter.pushes[-1][0] == 202
    assert whoami(transmitter, "alice") == 401 and user_epoch(user) == 1

    # Subscribing again updates the same stream with a new secret: the old one no longer works.
    call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "5", stdout=StringIO())
    assert SsfSubscription.objects.get().stream_id == stream.stream_id
    assert transmitter.counts["PATCH /ssf/streams"] == 1
    refused(
        push(transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id), secret),
        "authentication_failed",
        401,
    )


@pytest.mark.django_db(transaction=True)
def test_subscribe_by_poll_and_the_poller_acknowledges(
    transmitter: TestTransmitter, settings: Any
) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTERS": [entry(transmitter.issuer, delivery="poll")],
    }
    out = StringIO()
    call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0", stdout=out)
    assert "Verified" in out.getvalue(), out.getvalue()
    stream = SsfSubscription.objects.get()
    assert stream.delivery == "poll" and stream.poll_url == f"{transmitter.issuer}/ssf/poll"
    assert stream.push_secret_hash == ""
    assert len(transmitter.acks) == 1 and not transmitter.queue

    alice, bob = signed_in(transmitter, "alice"), signed_in(transmitter, "bob")
    good = transmitter.event_token(
        events.CREDENTIAL_CHANGE, {}, iss_sub(transmitter.issuer, "alice")
    )
    bad = transmitter.event_token(
        events.CREDENTIAL_CHANGE,
        {},
        iss_sub(transmitter.issuer, "bob"),
        aud="https://other.example",
    )
    transmitter.deliver(stream.stream_id, good)
    transmitter.deliver(stream.stream_id, bad)
    call_command("epochauth_ssf_poll", stdout=StringIO())
    assert whoami(transmitter, "alice") == 401 and user_epoch(alice) == 1
    assert user_epoch(bob) == 0
    assert len(transmitter.acks) == 2 and not transmitter.queue
    assert [error["err"] for error in transmitter.set_errors.values()] == ["invalid_audience"]


@pytest.mark.django_db(transaction=True)
def test_a_polled_set_that_cannot_be_checked_now_is_left_for_the_next_poll(
    transmitter: TestTransmitter, settings: Any, free_port: int
) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTERS": [entry(transmitter.issuer, delivery="poll")],
    }
    call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0", stdout=StringIO())
    stream = SsfSubscription.objects.get()
    user = signed_in(transmitter, "alice")
    sub_id = iss_sub(transmitter.issuer, "alice")
    transmitter.deliver(
        stream.stream_id, transmitter.event_token(events.CREDENTIAL_CHANGE, {}, sub_id)
    )
    working = settings.CACHES
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port}/0",  # nothing listens there
            "OPTIONS": {"socket_connect_timeout": 0.2, "socket_timeout": 0.2},
        }
    }
    transmitter.more_available = True  # it would hand out the same SET again at once
    polls = transmitter.counts["POST /ssf/poll"]
    out = StringIO()
    call_command("epochauth_ssf_poll", stdout=out)
    assert "0 event(s)" in out.getvalue()
    assert transmitter.counts["POST /ssf/poll"] == polls + 1  # then no more until the next poll
    assert len(transmitter.queue) == 1 and not transmitter.set_errors
    assert user_epoch(user) == 0
    settings.CACHES = working
    call_command("epochauth_ssf_poll", stdout=StringIO())
    assert not transmitter.queue and not transmitter.set_errors
    assert user_epoch(user) == 1


@pytest.mark.django_db(transaction=True)
def test_the_poller_reports_a_transmitter_it_cannot_reach(
    transmitter: TestTransmitter, settings: Any
) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTERS": [entry(transmitter.issuer, delivery="poll")],
    }
    call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0", stdout=StringIO())
    transmitter.status = 500
    with pytest.raises(CommandError, match="1 transmitter"):
        call_command("epochauth_ssf_poll", stdout=StringIO(), stderr=StringIO())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"issuer": "https://elsewhere.example"}, "names another issuer"),
        ({"configuration_endpoint": "https://elsewhere.example/streams"}, "origin"),
        ({"verification_endpoint": "https://elsewhere.example/verify"}, "origin"),
        ({"jwks_uri": "https://elsewhere.example/jwks"}, "other keys"),
        ({"delivery_methods_supported": [events.POLL]}, "does not deliver"),
    ],
    ids=["issuer", "configuration-endpoint", "verification-endpoint", "jwks", "delivery"],
)
def test_subscribe_refuses_a_configuration_it_cannot_trust(
    transmitter: TestTransmitter, change: dict[str, Any], message: str
) -> None:
    transmitter.publish_configuration(**change)
    with pytest.raises(CommandError, match=message):
        call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0")
    assert transmitter.counts["POST /ssf/streams"] == 0
    assert not SsfSubscription.objects.exists()


def test_subscribe_needs_a_configured_allow_listed_transmitter(
    transmitter: TestTransmitter, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(CommandError, match="SSF_TRANSMITTERS"):
        call_command("epochauth_ssf_subscribe", "https://unknown.example")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": []}
    with pytest.raises(CommandError, match="allow-listed"):
        call_command("epochauth_ssf_subscribe", transmitter.issuer)
    assert sum(transmitter.counts.values()) == 0


def test_subscribe_with_a_wrong_management_token_fails_readably(
    transmitter: TestTransmitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "wrong")
    with pytest.raises(CommandError, match="401"):
        call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0")
    assert not SsfSubscription.objects.exists()


def test_subscribe_without_the_management_token_says_so(
    transmitter: TestTransmitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    with pytest.raises(CommandError, match=f"{TOKEN_ENV} holds no token"):
        call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0")
    assert transmitter.counts["POST /ssf/streams"] == 0


def test_subscribe_refuses_a_stream_for_another_audience(transmitter: TestTransmitter) -> None:
    transmitter.audience = "https://another-receiver.example"
    with pytest.raises(CommandError, match="audience"):
        call_command("epochauth_ssf_subscribe", transmitter.issuer, "--wait", "0")
    assert not SsfSubscription.objects.exists()


# -- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"issuer": "https://t.example"},  # no token_env
        [{"issuer": "https://t.example", "token_env": "X", "delivery": "email"}],
        [{"issuer": "http://t.example", "token_env": "X"}],
        [{"issuer": "https://t.example", "token_env": "X", "events": "all"}],
        [{"issuer": "https://t.example", "token_env": "X", "colour": "blue"}],
        [{"issuer": "https://t.example", "token_env": "X"}] * 2,
        ["https://t.example"],
    ],
)
def test_check_e035_reports_a_bad_transmitter_entry(settings: Any, value: Any) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTERS": value}
    assert "epochauth.E035" in {message.id for message in checks.check_settings()}


def test_check_e035_passes_a_good_entry_and_e036_wants_a_positive_max_age(settings: Any) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTERS": [
            {"issuer": "https://t.example", "token_env": "X", "delivery": "poll", "events": []}
        ],
    }
    ids = {message.id for message in checks.check_settings()}
    assert "epochauth.E035" not in ids and "epochauth.E036" not in ids
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_MAX_AGE": 0}
    assert "epochauth.E036" in {message.id for message in checks.check_settings()}


def test_the_configuration_url_goes_before_the_issuers_path() -> None:
    from epochauth.ssf.subscription import configuration_url

    assert (
        configuration_url("https://t.example") == "https://t.example/.well-known/ssf-configuration"
    )
    assert (
        configuration_url("https://t.example/tenant/1/")
        == "https://t.example/.well-known/ssf-configuration/tenant/1"
    )


def test_default_push_url_and_audience_come_from_issuer(transmitter: TestTransmitter) -> None:
    configured = receiver.transmitters()[transmitter.issuer]
    assert configured.push_url == f"{US}{URL}" and configured.audience == US
    assert configured.events == receiver.SUPPORTED_EVENTS
