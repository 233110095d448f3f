"""The Shared Signals transmitter (epochauth.ssf): metadata, stream management, push and poll delivery
of the SETs our revocations become.

The receiver is a loopback HTTP server that keeps what it is pushed; every SET is verified with
joserfc (and PyJWT) against our published JWKS, as a receiver that is not epochauth would.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from django.core.management import call_command
from django.db import DatabaseError, transaction
from django.test import Client
from django.utils import timezone
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry
from oauth2_provider.models import get_application_model

from epochauth.checks import check_ssf_transmitter
from epochauth.models import Epoch
from epochauth.oauth import outbox
from epochauth.oauth.models import AllowedScopes, SSFEvent, SSFStream, SSFSubject
from epochauth.revocation import bump_epoch
from epochauth.ssf import events, transmitter
from tests.helpers import login, make_user, openid_provider, rsa_pem

pytestmark = pytest.mark.django_db(transaction=True)

ISSUER = "https://op.example"
SECRET = "receiver-secret-0123456789abcdef"
Application = get_application_model()


class Receiver(ThreadingHTTPServer):
    """Answers each POST with the next of ``statuses`` (then the last one again); keeps the SETs
    and the Authorization headers it was sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = [202]
        self.sets: list[str] = []
        self.headers: list[dict[str, str]] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/events"


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.sets.append(body.decode())
        self.server.headers.append(dict(self.headers))
        statuses = self.server.statuses
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        payload = b'{"err":"invalid_request","description":"x"}' if status == 400 else b""
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.shutdown()
    server.server_close()


class InlineWorker:
    """The outbox drained in the thread that committed (SQLite's in-memory database: one writer)."""

    def submit(self, job: Any) -> None:
        job()


@pytest.fixture(autouse=True)
def inline_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox, "worker", InlineWorker())


@pytest.fixture(autouse=True)
def transmitter_on(settings: Any) -> None:
    openid_provider(
        settings,
        ISSUER=ISSUER,
        SSF_TRANSMITTER={"min_verification_interval": timedelta(minutes=5), "attempts": 3},
        ALLOW_LOOPBACK_HTTP_ISSUERS=True,
        HTTP_TIMEOUT=2,
    )


def receiver_app(client_id: str = "rx", scopes: str = "ssf:manage") -> Any:
    app = Application.objects.create(
        name=client_id,
        client_id=client_id,
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=make_user(f"{client_id}-owner"),
    )
    if scopes is not None:
        AllowedScopes.objects.create(application=app, scopes=scopes)
    return app


def client_token(client_id: str, scope: str = "ssf:manage") -> Any:
    basic = base64.b64encode(f"{client_id}:{SECRET}".encode()).decode()
    return Client().post(
        "/o/token/",
        {"grant_type": "client_credentials", "scope": scope},
        HTTP_AUTHORIZATION=f"Basic {basic}",
    )


class Api:
    """A receiver's calls to the management API with its token."""

    def __init__(self, token: str) -> None:
        self.client = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def call(self, method: str, path: str, body: Any = None, **query: Any) -> Any:
        if query:
            path += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        send = getattr(self.client, method)
        if body is None:
            return send(path)
        return send(path, json.dumps(body), content_type="application/json")

    def create(self, **body: Any) -> dict[str, Any]:
        response = self.call("post", "/ssf/streams/", body)
        assert response.status_code == 201, response.content
        return response.json()

    def add(self, stream: dict[str, Any], user: Any) -> None:
        subject = events.iss_sub(ISSUER, str(user.pk))
        body = {"stream_id": stream["stream_id"], "subject": subject}
        assert self.call("post", "/ssf/streams/subjects/add/", body).status_code == 200


@pytest.fixture
def api() -> Api:
    receiver_app()
    response = client_token("rx")
    assert response.status_code == 200, response.content
    return Api(response.json()["access_token"])


def push_stream(api: Api, receiver: Receiver, *requested: str) -> dict[str, Any]:
    return api.create(
        events_requested=list(requested or transmitter.SUPPORTED_EVENTS),
        delivery={
            "method": events.PUSH,
            "endpoint_url": receiver.url,
            "authorization_header": "Bearer rx-inbox",
        },
    )


def verified(token: str, audience: str = "rx") -> dict[str, Any]:
    """The SET's claims, checked against our JWKS at /.well-known/jwks.json with joserfc (an
    implementation our signing does not share; it uses PyJWT's) and with PyJWT."""
    jwks = Client().get("/.well-known/jwks.json").json()
    found = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["RS256"])
    assert found.header["typ"] == "secevent+jwt" and found.header["kid"]
    JWTClaimsRegistry(
        iss={"essential": True, "value": ISSUER},
        aud={"essential": True, "value": audience},
        iat={"essential": True},
        jti={"essential": True},
    ).validate(found.claims)
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWKSet.from_dict(jwks)[header["kid"]]
    claims = jwt.decode(token, key=key.key, algorithms=["RS256"], audience=audience, issuer=ISSUER)
    assert claims == found.claims
    assert len(claims["events"]) == 1  # SSF 1.0: one event per SET
    return claims


def types_of(tokens: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for token in tokens:
        claims = verified(token)
        (uri,) = claims["events"]
        found[uri] = claims
    return found


# -- metadata ------------------------------------------------------------------------------------


def test_metadata(client):
    document = client.get("/.well-known/ssf-configuration").json()
    assert document["issuer"] == ISSUER and document["spec_version"] == "1_0"
    assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert document["delivery_methods_supported"] == [events.PUSH, events.POLL]
    assert document["configuration_endpoint"] == f"{ISSUER}/ssf/streams/"
    assert document["status_endpoint"] == f"{ISSUER}/ssf/streams/status/"
    assert document["add_subject_endpoint"] == f"{ISSUER}/ssf/streams/subjects/add/"
    assert document["remove_subject_endpoint"] == f"{ISSUER}/ssf/streams/subjects/remove/"
    assert document["verification_endpoint"] == f"{ISSUER}/ssf/streams/verify/"
    assert document["authorization_schemes"] == [{"spec_urn": "urn:ietf:rfc:6749"}]
    assert document["default_subjects"] == "NONE"


def test_off_until_configured(client, settings, api):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTER": None}
    assert client.get("/.well-known/ssf-configuration").status_code == 404
    assert api.call("get", "/ssf/streams/").status_code == 404


# -- stream management ---------------------------------------------------------------------------


def test_stream_lifecycle(api, receiver):
    created = push_stream(api, receiver, events.SESSION_REVOKED, "urn:example:unknown")
    stream_id = created["stream_id"]
    assert created["iss"] == ISSUER and created["aud"] == "rx"
    assert created["events_delivered"] == [events.SESSION_REVOKED]
    assert created["delivery"] == {"method": events.PUSH, "endpoint_url": receiver.url}
    assert "authorization_header" not in json.dumps(created)  # the receiver's secret stays here
    assert api.call("get", "/ssf/streams/", stream_id=stream_id).json() == created
    assert [s["stream_id"] for s in api.call("get", "/ssf/streams/").json()] == [stream_id]

    patched = api.call("patch", "/ssf/streams/", {"stream_id": stream_id, "description": "d"})
    assert patched.status_code == 200 and patched.json()["description"] == "d"
    assert patched.json()["events_requested"] == created["events_requested"]  # kept

    replaced = api.call(
        "put", "/ssf/streams/", {"stream_id": stream_id, "delivery": {"method": events.POLL}}
    ).json()
    assert replaced["events_requested"] == [] and "description" not in replaced
    assert replaced["delivery"] == {
        "method": events.POLL,
        "endpoint_url": f"{ISSUER}/ssf/poll/{stream_id}/",
    }
    assert SSFStream.objects.get().authorization_header == ""

    assert api.call("delete", "/ssf/streams/", stream_id=stream_id).status_code == 204
    assert api.call("get", "/ssf/streams/", stream_id=stream_id).status_code == 404
    assert not SSFStream.objects.exists()


def test_status(api, receiver, client):
    stream = push_stream(api, receiver)
    stream_id = stream["stream_id"]
    assert api.call("get", "/ssf/streams/status/", stream_id=stream_id).json() == {
        "stream_id": stream_id,
        "status": "enabled",
    }
    alice = make_user("alice")
    api.add(stream, alice)
    paused = {"stream_id": stream_id, "status": "paused", "reason": "maintenance"}
    assert api.call("post", "/ssf/streams/status/", paused).json() == paused
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert receiver.sets == [] and SSFEvent.objects.count() == 1  # held while paused
    api.call("post", "/ssf/streams/status/", {"stream_id": stream_id, "status": "enabled"})
    assert list(types_of(receiver.sets)) == [events.SESSION_REVOKED]  # delivered when enabled

    api.call("post", "/ssf/streams/status/", {"stream_id": stream_id, "status": "disabled"})
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert SSFEvent.objects.filter(state=SSFEvent.State.PENDING).count() == 0  # none for disabled
    bad = {"stream_id": stream_id, "status": "asleep"}
    assert api.call("post", "/ssf/streams/status/", bad).status_code == 400


# -- events from revocations ---------------------------------------------------------------------


def test_logout_pushes_session_revoked_for_a_known_subject(api, receiver, client):
    stream = push_stream(api, receiver)
    alice, bob = make_user("alice"), make_user("bob")
    api.add(stream, alice)
    for user in (alice, bob):
        access = login(client, user.username)["access_token"]
        assert (
            client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 204
        )
    (token,) = receiver.sets  # about alice only: the receiver does not know bob
    claims = verified(token)
    sid = jwt.decode(access, options={"verify_signature": False})["sid"]
    assert claims["sub_id"]["format"] == "complex"
    assert claims["sub_id"]["user"] == {"format": "iss_sub", "iss": ISSUER, "sub": str(alice.pk)}
    assert claims["sub_id"]["session"]["format"] == "opaque"
    assert claims["sub_id"]["session"]["id"] != sid  # alice's session, not bob's
    event = claims["events"][events.SESSION_REVOKED]
    assert event["initiating_entity"] == "user" and isinstance(event["event_timestamp"], int)
    assert "txn" in claims and "sub" not in claims and "exp" not in claims
    assert receiver.headers[0]["Content-Type"] == "application/secevent+jwt"
    assert receiver.headers[0]["Authorization"] == "Bearer rx-inbox"
    assert SSFEvent.objects.get().state == SSFEvent.State.DELIVERED


def test_epoch_bumps_map_to_caep_and_risc(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    user = {"format": "iss_sub", "iss": ISSUER, "sub": str(alice.pk)}

    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    found = types_of(receiver.sets)
    assert (
        list(found) == [events.SESSION_REVOKED] and found[events.SESSION_REVOKED]["sub_id"] == user
    )

    receiver.sets.clear()
    alice.set_password("new password")
    alice.save()
    found = types_of(receiver.sets)
    assert set(found) == {events.SESSION_REVOKED, events.CREDENTIAL_CHANGE}
    change = found[events.CREDENTIAL_CHANGE]["events"][events.CREDENTIAL_CHANGE]
    assert change["credential_type"] == "password" and change["change_type"] == "update"
    assert found[events.CREDENTIAL_CHANGE]["txn"] == found[events.SESSION_REVOKED]["txn"]

    receiver.sets.clear()
    alice.is_active = False
    alice.save()
    found = types_of(receiver.sets)
    assert set(found) == {events.SESSION_REVOKED, events.ACCOUNT_DISABLED}
    assert found[events.ACCOUNT_DISABLED]["sub_id"] == user


def test_only_requested_types_are_sent(api, receiver):
    stream = push_stream(api, receiver, events.ACCOUNT_DISABLED)
    alice = make_user("alice")
    api.add(stream, alice)
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert receiver.sets == []
    alice.is_active = False
    alice.save()
    assert list(types_of(receiver.sets)) == [events.ACCOUNT_DISABLED]


def test_default_subjects_all(settings, api, receiver):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTER": {"default_subjects": "ALL"}}
    push_stream(api, receiver)
    carol = make_user("carol")
    bump_epoch(Epoch.Kind.USER, str(carol.pk), reason="logout-all")
    assert len(receiver.sets) == 1


def test_remove_subject(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    body = {"stream_id": stream["stream_id"], "subject": events.iss_sub(ISSUER, str(alice.pk))}
    assert api.call("post", "/ssf/streams/subjects/remove/", body).status_code == 204
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert receiver.sets == [] and not SSFSubject.objects.exists()


def test_add_subject_by_email_and_unknown_subjects(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    alice.email = "alice@example.org"
    alice.save()
    for subject in (
        {"format": "email", "email": "ALICE@example.org"},
        {"format": "email", "email": "nobody@example.org"},  # 200 all the same: no enumeration
        {"format": "iss_sub", "iss": "https://elsewhere.example", "sub": str(alice.pk)},
        {"format": "iss_sub", "iss": ISSUER, "sub": "no-such-user"},
        {"format": "iss_sub", "iss": ISSUER, "sub": "9" * 30},  # no integer column holds it
        {"format": "iss_sub", "iss": ISSUER, "sub": 1},  # not a string
    ):
        body = {"stream_id": stream["stream_id"], "subject": subject}
        assert api.call("post", "/ssf/streams/subjects/add/", body).status_code == 200
    assert list(SSFSubject.objects.values_list("user_id", flat=True)) == [str(alice.pk)]
    bad = {"stream_id": stream["stream_id"], "subject": {"email": "x"}}
    assert api.call("post", "/ssf/streams/subjects/add/", bad).status_code == 400


def test_a_revocation_that_rolls_back_tells_no_one(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    with pytest.raises(RuntimeError), transaction.atomic():
        bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
        raise RuntimeError
    assert not SSFEvent.objects.exists() and receiver.sets == []


def test_a_failure_to_queue_never_fails_the_revocation(api, receiver, monkeypatch, client):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    access = login(client, "alice")["access_token"]

    def broken(*args: Any, **kwargs: Any) -> None:
        raise DatabaseError("outbox table gone")

    monkeypatch.setattr(SSFEvent.objects, "bulk_create", broken)
    assert client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 204
    assert client.get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {access}").status_code == 401
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert Epoch.objects.get(kind=Epoch.Kind.USER, object_id=str(alice.pk)).value >= 1


# -- push delivery -------------------------------------------------------------------------------


def test_push_retries_with_backoff_and_never_logs_the_set(api, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    receiver.statuses = [503, 202]
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    event = SSFEvent.objects.get()
    assert event.state == SSFEvent.State.PENDING and event.last_error == "HTTP 503"
    assert event.next_attempt_at > timezone.now() + timedelta(seconds=20)
    assert transmitter.drain() == 0  # not due yet
    SSFEvent.objects.update(next_attempt_at=timezone.now())
    assert transmitter.drain() == 1
    assert SSFEvent.objects.get().state == SSFEvent.State.DELIVERED
    assert len(receiver.sets) == 2 and verified(receiver.sets[1])["jti"] == event.jti
    for token in receiver.sets:
        assert token.split(".")[1] not in caplog.text
    assert "rx-inbox" not in caplog.text


def test_a_refusing_receiver_is_given_up(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    receiver.statuses = [400]
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    SSFEvent.objects.update(next_attempt_at=timezone.now())
    transmitter.drain()
    event = SSFEvent.objects.get()
    assert event.state == SSFEvent.State.FAILED and event.last_error == "HTTP 400 invalid_request"
    assert transmitter.retry(SSFEvent.objects.all()) == 1


def test_the_endpoint_is_checked_again_at_each_push(api, receiver, settings):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": False}
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert receiver.sets == []
    event = SSFEvent.objects.get()
    assert event.state == SSFEvent.State.FAILED and "refused" in event.last_error


def test_outbox_command_and_purge(api, receiver):
    stream = push_stream(api, receiver)
    alice = make_user("alice")
    api.add(stream, alice)
    receiver.statuses = [503, 202]
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    SSFEvent.objects.update(next_attempt_at=timezone.now())
    call_command("epochauth_outbox")
    assert SSFEvent.objects.get().state == SSFEvent.State.DELIVERED
    SSFEvent.objects.update(delivered_at=timezone.now() - timedelta(days=2))
    call_command("epochauth_purge")
    assert not SSFEvent.objects.exists()


# -- poll delivery -------------------------------------------------------------------------------


def test_poll_with_ack(api):
    stream = api.create(
        events_requested=[events.SESSION_REVOKED], delivery={"method": events.POLL}
    )
    alice = make_user("alice")
    api.add(stream, alice)
    for _ in range(3):
        bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    poll = f"/ssf/poll/{stream['stream_id']}/"
    first = api.call("post", poll, {"maxEvents": 2, "returnImmediately": True}).json()
    assert len(first["sets"]) == 2 and first["moreAvailable"] is True
    for jti, token in first["sets"].items():
        assert verified(token)["jti"] == jti
    second = api.call("post", poll, {"ack": list(first["sets"]), "maxEvents": 10}).json()
    assert len(second["sets"]) == 1 and second["moreAvailable"] is False
    assert SSFEvent.objects.count() == 1  # acknowledged ones are deleted
    (jti,) = second["sets"]
    errs = {jti: {"err": "invalid_key", "description": "x"}}
    assert api.call("post", poll, {"setErrs": errs}).json() == {"sets": {}, "moreAvailable": False}
    assert SSFEvent.objects.get().state == SSFEvent.State.FAILED
    assert api.call("post", poll, {"maxEvents": "many"}).status_code == 400


# -- verification --------------------------------------------------------------------------------


def test_verification_event(api, receiver):
    stream = push_stream(api, receiver, events.SESSION_REVOKED)
    body = {"stream_id": stream["stream_id"], "state": "VGhpcyBpcyBhbiBleGFtcGxl"}
    assert api.call("post", "/ssf/streams/verify/", body).status_code == 204
    claims = verified(receiver.sets[0])
    assert claims["events"] == {events.VERIFICATION: {"state": "VGhpcyBpcyBhbiBleGFtcGxl"}}
    assert claims["sub_id"] == {"format": "opaque", "id": stream["stream_id"]}
    again = api.call("post", "/ssf/streams/verify/", body)
    assert again.status_code == 429 and int(again["Retry-After"]) > 0
    assert len(receiver.sets) == 1


def test_an_admin_status_change_is_announced(api, receiver, admin_client):
    stream = push_stream(api, receiver)
    row = SSFStream.objects.get()
    response = admin_client.post(
        f"/admin/epochauth_oauth/ssfstream/{row.pk}/change/",
        {
            "status": "paused",
            "status_reason": "abuse",
            "subjects-TOTAL_FORMS": "0",
            "subjects-INITIAL_FORMS": "0",
        },
    )
    assert response.status_code == 302, response.content
    assert SSFStream.objects.get().status == "paused"
    # Pushed although the stream is paused: how its receiver learns of the pause.
    (token,) = receiver.sets
    claims = verified(token)
    assert claims["events"] == {events.STREAM_UPDATED: {"status": "paused", "reason": "abuse"}}
    assert claims["sub_id"] == {"format": "opaque", "id": stream["stream_id"]}
    # Nothing else goes out while it is paused.
    alice = make_user("alice")
    api.add(stream, alice)
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    assert len(receiver.sets) == 1 and SSFEvent.objects.filter(state="pending").count() == 1


# -- hostile callers -----------------------------------------------------------------------------


def test_a_token_is_needed(client):
    response = client.get("/ssf/streams/")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")


def test_a_client_without_the_scope_is_refused(api):
    receiver_app("reports", scopes="reports:read")
    token = client_token("reports", scope="reports:read").json()["access_token"]
    assert Api(token).call("get", "/ssf/streams/").status_code == 403
    # Nor may it obtain the scope: the admin did not list it in its allowed scopes.
    assert client_token("reports").status_code == 400


def test_an_unmarked_receiver_loses_access_at_once(api):
    AllowedScopes.objects.filter(application__client_id="rx").update(scopes="")
    assert api.call("get", "/ssf/streams/").status_code == 403


def test_a_client_sees_only_its_own_streams(api, receiver):
    stream = push_stream(api, receiver)
    receiver_app("other")
    other = Api(client_token("other").json()["access_token"])
    stream_id = stream["stream_id"]
    assert other.call("get", "/ssf/streams/").json() == []
    assert other.call("get", "/ssf/streams/", stream_id=stream_id).status_code == 404
    assert other.call("delete", "/ssf/streams/", stream_id=stream_id).status_code == 404
    update = {"stream_id": stream_id, "description": "mine now"}
    assert other.call("patch", "/ssf/streams/", update).status_code == 404
    status = {"stream_id": stream_id, "status": "disabled"}
    assert other.call("post", "/ssf/streams/status/", status).status_code == 404
    assert other.call("post", "/ssf/streams/verify/", {"stream_id": stream_id}).status_code == 404
    SSFStream.objects.update(method=events.POLL)
    assert other.call("post", f"/ssf/poll/{stream_id}/", {}).status_code == 404
    assert SSFStream.objects.get().status == "enabled" and receiver.sets == []


def test_a_user_cannot_be_a_receiver(api, client):
    make_user("alice")
    asked = client.post(
        "/auth/token/",
        {"username": "alice", "password": "pw", "scope": "ssf:manage"},
        content_type="application/json",
    )
    assert asked.status_code == 400  # a service scope is never a user's
    access = login(client, "alice")["access_token"]
    assert Api(access).call("get", "/ssf/streams/").status_code == 403


def test_bad_requests(api):
    raw = api.client.post("/ssf/streams/", "{not json", content_type="application/json")
    assert raw.status_code == 400 and raw.json()["error"] == "invalid_request"
    for delivery in (
        {"method": "urn:example:carrier-pigeon"},
        {"method": events.PUSH},  # no endpoint
        {"method": events.PUSH, "endpoint_url": "http://receiver.example/events"},  # not https
        {"method": events.PUSH, "endpoint_url": "https://10.0.0.7/events"},  # private address
        {"method": events.PUSH, "endpoint_url": "https://[::1]@127.0.0.1/events"},
    ):
        response = api.call("post", "/ssf/streams/", {"delivery": delivery})
        assert response.status_code == 400, delivery
        assert response.json()["error"] == "invalid_request"
    assert api.call("get", "/ssf/streams/", stream_id="not-a-uuid").status_code == 400
    assert api.call("post", "/ssf/streams/", ["a list"]).status_code == 400
    assert not SSFStream.objects.exists()


def test_loopback_endpoints_need_the_loopback_setting(api, receiver, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": False}
    body = {"delivery": {"method": events.PUSH, "endpoint_url": receiver.url}}
    assert api.call("post", "/ssf/streams/", body).status_code == 400


def test_stream_limit(api):
    for _ in range(10):
        api.create(delivery={"method": events.POLL})
    assert api.call("post", "/ssf/streams/", {}).status_code == 409


# -- checks --------------------------------------------------------------------------------------


def test_checks(settings):
    assert check_ssf_transmitter() == []
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTER": {"default_subjects": "SOME"}}
    assert [m.id for m in check_ssf_transmitter()] == ["epochauth.E037"]
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "SSF_TRANSMITTER": {"colour": "blue"}}
    assert [m.id for m in check_ssf_transmitter()] == ["epochauth.E037"]
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "SSF_TRANSMITTER": True,
        "ALGORITHM": "HS256",
        "SIGNING_KEY": "x" * 64,
        "ISSUER": "op",
    }
    assert [m.id for m in check_ssf_transmitter()] == ["epochauth.E038", "epochauth.E038"]


# -- across processes ----------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SETUP = """
import os
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_application_model
from epochauth.oauth.models import SSFStream, SSFSubject
alice = get_user_model().objects.create_user("alice", password="pw")
app = get_application_model().objects.create(
    name="rx", client_id="rx", client_type="confidential",
    authorization_grant_type="client-credentials", user=alice,
)
stream = SSFStream.objects.create(
    application=app, audience="rx", method=SSFStream.Method.PUSH,
    endpoint_url=os.environ["RX_URL"], events_requested=[os.environ["EVENT"]],
)
SSFSubject.objects.create(stream=stream, user_id=str(alice.pk), subject={})
print(alice.pk)
"""
DUE_NOW = (
    "from django.utils import timezone; from epochauth.oauth.models import SSFEvent; "
    "SSFEvent.objects.update(next_attempt_at=timezone.now())"
)


def test_a_revocation_in_one_process_is_pushed_by_another(tmp_path, receiver):
    """The outbox is the database: a bump made by ``epochauth_revoke`` (a process that may exit
    before its own thread pushes, or push to a receiver that is down) is delivered by the
    ``epochauth_outbox`` of another process."""
    (tmp_path / "key.pem").write_text(rsa_pem(1))
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
        "DJANGO_SETTINGS_MODULE": "testproject.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "EPOCHAUTH_ALGORITHM": "RS256",
        "EPOCHAUTH_SIGNING_KEY_FILE": str(tmp_path / "key.pem"),
        "EPOCHAUTH_ISSUER": ISSUER,
        "DJANGO_DEBUG": "1",  # ALLOW_LOOPBACK_HTTP_ISSUERS: the receiver is on 127.0.0.1
        "RX_URL": receiver.url,
        "EVENT": events.SESSION_REVOKED,
    }

    def manage(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    manage("migrate", "-v", "0")
    alice = manage("shell", "-c", SETUP).split()[-1]
    receiver.statuses = [503]  # down while the revoking process may try
    manage("epochauth_revoke", "--user", "alice")
    receiver.statuses = [202]
    manage("shell", "-c", DUE_NOW)
    assert manage("epochauth_outbox") == "Attempted 1 deliveries.\n"
    public = serialization.load_pem_private_key(rsa_pem(1).encode(), None).public_key()
    claims = jwt.decode(
        receiver.sets[-1], public, algorithms=["RS256"], audience="rx", issuer=ISSUER
    )
    assert claims["sub_id"] == {"format": "iss_sub", "iss": ISSUER, "sub": alice}
    assert list(claims["events"]) == [events.SESSION_REVOKED]
    assert manage("epochauth_outbox") == "Attempted 0 deliveries.\n"  # delivered once
