"""Back-Channel Logout as the OpenID provider: the outbox of logout tokens (epochauth.oauth.backchannel).

A relying party is a loopback HTTP server that answers what each test tells it to and keeps what it
was POSTed; the token is verified with our JWKS as a relying party would.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_id_token_model,
    get_refresh_token_model,
)

from epochauth import keys
from epochauth.models import Epoch
from epochauth.oauth import backchannel, revocation
from epochauth.oauth.models import BackchannelLogout, LogoutDelivery
from epochauth.oidc.backchannel import BACKCHANNEL_LOGOUT_EVENT
from epochauth.revocation import bump_epoch
from epochauth.tokenmanager import grants
from tests.helpers import make_user, openid_provider

pytestmark = pytest.mark.django_db(transaction=True)

ISSUER = "https://op.example"
Application = get_application_model()
AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()


class RelyingParty(ThreadingHTTPServer):
    """Answers each POST with the next of ``statuses`` (then the last one again); keeps the forms."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses = [200]
        self.forms: list[dict[str, list[str]]] = []
        self.content_types: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/backchannel-logout/"

    def tokens(self) -> list[str]:
        return [form["logout_token"][0] for form in self.forms]


class Handler(BaseHTTPRequestHandler):
    server: RelyingParty

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.forms.append(parse_qs(body.decode()))
        self.server.content_types.append(self.headers["Content-Type"])
        statuses = self.server.statuses
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def rp() -> Iterator[RelyingParty]:
    server = RelyingParty()
    yield server
    server.shutdown()
    server.server_close()


class InlineWorker:
    """The outbox drained in the thread that committed: the tests' in-memory SQLite database takes
    one writer at a time (a test that writes on while the background thread drains would meet a
    locked table). ``real_worker`` keeps the background thread."""

    def submit(self, job: Any) -> None:
        job()

    def drain(self, timeout: float) -> bool:
        return True


@pytest.fixture
def real_worker() -> None:
    pass


@pytest.fixture(autouse=True)
def inline_worker(request: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    if "real_worker" not in request.fixturenames:
        monkeypatch.setattr(backchannel, "worker", InlineWorker())


@pytest.fixture(autouse=True)
def provider(settings: Any) -> None:
    openid_provider(settings, ISSUER=ISSUER, LOGOUT_DELIVERY_ATTEMPTS=3, HTTP_TIMEOUT=2)


@pytest.fixture
def alice() -> Any:
    return make_user("alice")


def application(rp: RelyingParty | None, client_id: str = "portal", **backchannel: Any) -> Any:
    app = Application.objects.create(
        name=client_id,
        client_id=client_id,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://127.0.0.1:9/cb",
    )
    if rp is not None:
        BackchannelLogout.objects.create(application=app, uri=rp.url, **backchannel)
    return app


def grant(user: Any, app: Any, *, id_token: bool = True) -> uuid.UUID:
    """What a sign-in at ``app`` leaves: an ID token, an access token, a refresh token of a family."""
    expires = timezone.now() + timedelta(hours=1)
    family = uuid.uuid4()
    id_row = (
        IDToken.objects.create(user=user, application=app, jti=uuid.uuid4(), expires=expires)
        if id_token
        else None
    )
    access = AccessToken.objects.create(
        user=user, application=app, token=uuid.uuid4().hex, expires=expires, id_token=id_row
    )
    RefreshToken.objects.create(
        user=user,
        application=app,
        token=uuid.uuid4().hex,
        access_token=access,
        token_family=family,
    )
    return family


def delivered() -> None:
    assert backchannel.worker.drain(10)


def verified(token: str, client_id: str = "portal") -> dict[str, Any]:
    """As a relying party verifies it (section 2.6): our published key, the algorithm pinned."""
    jwk = keys.get_keyring().id_token.public_jwk()
    claims = jwt.decode(
        token, jwt.PyJWK(jwk), algorithms=["RS256"], audience=client_id, issuer=ISSUER
    )
    assert jwt.get_unverified_header(token)["typ"] == "logout+jwt"
    assert jwt.get_unverified_header(token)["kid"] == jwk["kid"]
    return claims


def due_now() -> None:
    LogoutDelivery.objects.update(next_attempt_at=timezone.now())


# -- what is sent, and to whom ---------------------------------------------------------------


def test_an_ended_family_sends_its_relying_party_a_logout_token_naming_it(rp, alice, real_worker):
    """Sent by the process's background thread after the commit."""
    portal = application(rp)
    family = grant(alice, portal)
    revocation.end_family(family)
    delivered()
    [token] = rp.tokens()
    claims = verified(token)
    assert claims["sid"] == family.hex and claims["sub"] == str(alice.pk)
    assert claims["events"] == {BACKCHANNEL_LOGOUT_EVENT: {}}
    assert "nonce" not in claims
    assert 0 < claims["exp"] - claims["iat"] <= 120
    assert rp.content_types == ["application/x-www-form-urlencoded"]
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.DELIVERED and row.attempts == 1
    assert row.jti == claims["jti"] and row.delivered_at is not None


def test_the_other_relying_parties_and_unregistered_ones_are_not_told(rp, alice):
    portal, wiki, silent = application(rp), application(rp, "wiki"), application(None, "silent")
    ended = grant(alice, portal)
    grant(alice, wiki)
    quiet = grant(alice, silent)
    revocation.end_family(ended)
    revocation.end_family(quiet)
    delivered()
    assert [verified(t)["sid"] for t in rp.tokens()] == [ended.hex]


def test_a_rotated_refresh_token_tells_no_one(rp, alice):
    """A family that keeps a live refresh token did not end."""
    portal = application(rp)
    family = grant(alice, portal)
    live = RefreshToken.objects.get()
    RefreshToken.objects.create(
        user=alice,
        application=portal,
        token="next",
        access_token=AccessToken.objects.create(
            user=alice, application=portal, token="a2", expires=timezone.now() + timedelta(hours=1)
        ),
        token_family=family,
    )
    live.revoke()
    revocation.deny_ended_families({family})
    delivered()
    assert rp.forms == [] and not LogoutDelivery.objects.exists()


def test_an_epoch_bump_tells_each_relying_party_by_sub_or_by_each_session(rp, alice):
    """logout-all, a password change, deactivation and the admin bump the user's epoch."""
    portal = application(rp)
    wiki = application(rp, "wiki", session_required=True)
    grant(alice, portal)
    first, second = grant(alice, wiki), grant(alice, wiki, id_token=False)
    other = make_user("bob")
    grant(other, portal)
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="logout-all")
    delivered()
    by_audience: dict[str, list[dict[str, Any]]] = {}
    for token in rp.tokens():
        aud = jwt.decode(token, options={"verify_signature": False})["aud"]
        by_audience.setdefault(aud, []).append(verified(token, aud))
    [to_portal] = by_audience["portal"]
    assert to_portal["sub"] == str(alice.pk) and "sid" not in to_portal
    assert {c["sid"] for c in by_audience["wiki"]} == {first.hex, second.hex}
    assert all(c["sub"] == str(alice.pk) for c in by_audience["wiki"])


@pytest.mark.parametrize(
    "change",
    [
        lambda user: setattr(user, "is_active", False),
        lambda user: user.set_password("a new one"),
    ],
    ids=["deactivation", "password change"],
)
def test_deactivation_and_a_new_password_tell_the_relying_parties(rp, alice, change):
    grant(alice, application(rp))
    change(alice)
    alice.save()
    delivered()
    [token] = rp.tokens()
    assert verified(token)["sub"] == str(alice.pk)


def test_a_user_without_sessions_at_relying_parties_tells_no_one(rp, alice):
    application(rp)
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    bump_epoch(Epoch.Kind.GLOBAL, "")
    delivered()
    assert rp.forms == [] and not LogoutDelivery.objects.exists()


# -- the outbox --------------------------------------------------------------------------------


def test_a_revocation_that_rolls_back_sends_nothing(rp, alice):
    portal = application(rp)
    family = grant(alice, portal)
    with pytest.raises(RuntimeError), transaction.atomic():
        revocation.end_family(family)
        bump_epoch(Epoch.Kind.USER, str(alice.pk))
        assert LogoutDelivery.objects.count() == 2  # written in the revocation's transaction
        raise RuntimeError
    delivered()
    backchannel.drain()
    assert rp.forms == [] and not LogoutDelivery.objects.exists()


def test_nothing_is_sent_before_the_commit(rp, alice):
    family = grant(alice, application(rp))
    with transaction.atomic():
        revocation.end_family(family)
        delivered()
        assert rp.forms == []
    delivered()
    assert len(rp.forms) == 1


def test_server_errors_are_retried_with_backoff_then_given_up(rp, alice, settings):
    rp.statuses = [503]
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.PENDING and row.attempts == 1
    assert row.last_error == "HTTP 503"
    wait = (row.next_attempt_at - timezone.now()).total_seconds()
    assert 25 < wait <= 30  # LOGOUT_DELIVERY_RETRY_DELAY
    assert backchannel.drain() == 0  # not due yet
    due_now()
    assert backchannel.drain() == 1
    row.refresh_from_db()
    wait = (row.next_attempt_at - timezone.now()).total_seconds()
    assert row.attempts == 2 and 55 < wait <= 60  # doubled
    due_now()
    backchannel.drain()
    row.refresh_from_db()
    assert row.state == LogoutDelivery.State.FAILED and row.attempts == 3
    due_now()
    assert backchannel.drain() == 0
    assert len(rp.forms) == 3
    # Each attempt signs a token (fresh iat and exp) with the same jti.
    assert {verified(t)["jti"] for t in rp.tokens()} == {row.jti}


def test_too_many_requests_is_retried_and_then_delivered(rp, alice):
    rp.statuses = [429, 204]
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    due_now()
    backchannel.drain()
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.DELIVERED and row.attempts == 2


def test_a_refusal_is_retried_once_then_given_up(rp, alice):
    rp.statuses = [400]
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    assert LogoutDelivery.objects.get().state == LogoutDelivery.State.PENDING
    due_now()
    backchannel.drain()
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.FAILED and row.attempts == 2
    assert row.last_error == "HTTP 400"


def test_an_unreachable_relying_party_is_retried(rp, alice, free_port):
    portal = application(rp)
    BackchannelLogout.objects.filter(application=portal).update(
        uri=f"http://127.0.0.1:{free_port}/gone"
    )
    revocation.end_family(grant(alice, portal))
    delivered()
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.PENDING and row.last_error == "ConnectionError"


def test_only_a_registered_uri_is_posted_to(rp, alice, monkeypatch):
    """The URI is read at each attempt: one removed (or no longer allowed) gives the delivery up."""
    monkeypatch.setattr(backchannel, "kick", lambda: None)
    portal = application(rp)
    revocation.end_family(grant(alice, portal))
    BackchannelLogout.objects.filter(application=portal).delete()
    assert backchannel.drain() == 1
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.FAILED and row.attempts == 1
    assert rp.forms == []


def test_a_self_registered_client_is_never_posted_to_inside_this_network(rp, alice, monkeypatch):
    """RFC 7591 lets anyone name where this server POSTs: a self-registered client's URI that
    resolves to a loopback, private or link-local address (here the relying party on 127.0.0.1,
    registered behind the registration's back, or a name that now resolves inside) is given up
    unsent; the same URI of an application the admin made is delivered to."""
    monkeypatch.setattr(backchannel, "kick", lambda: None)
    portal = application(rp)
    portal.registration_source = Application.RegistrationSource.DCR
    portal.save()
    revocation.end_family(grant(alice, portal))
    assert backchannel.drain() == 1
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.FAILED and "non-public" in row.last_error
    assert rp.forms == []
    portal.registration_source = Application.RegistrationSource.MANUAL
    portal.save()
    revocation.end_family(grant(alice, portal))
    assert backchannel.drain() == 1 and len(rp.tokens()) == 1


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        ("https://127.0.0.1/", False),
        ("https://[::1]/", False),
        ("https://10.1.2.3/", False),
        ("https://169.254.169.254/", False),
        ("https://[fe80::1%25eth0]/", False),
        ("https://localhost/", False),
        ("https://no-such-host.invalid/", False),
        ("https://8.8.8.8/", True),
    ],
)
def test_what_a_self_registered_uri_may_resolve_to(uri, public):
    assert backchannel.resolves_to_public_addresses(uri) is public


def test_the_token_is_never_logged(rp, alice, caplog):
    rp.statuses = [500]
    caplog.set_level(logging.DEBUG)
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    [token] = rp.tokens()
    assert "HTTP 500" in caplog.text and "portal" in caplog.text
    assert token not in caplog.text and token.split(".")[1] not in caplog.text


def test_two_drainers_attempt_a_delivery_once(rp, alice):
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    LogoutDelivery.objects.update(state=LogoutDelivery.State.PENDING)
    due_now()
    stale = list(LogoutDelivery.objects.values_list("pk", "attempts"))
    assert backchannel.drain() == 1
    # A drainer that read the row before: its claim finds the count changed.
    assert not LogoutDelivery.objects.filter(pk=stale[0][0], attempts=stale[0][1]).exists()


def test_the_command_drains_what_is_due(rp, alice, monkeypatch):
    monkeypatch.setattr(backchannel, "kick", lambda: None)  # as if the process had died
    revocation.end_family(grant(alice, application(rp)))
    assert rp.forms == []
    out = call_command_output("epochauth_outbox")
    assert out == "Attempted 1 deliveries.\n"
    assert LogoutDelivery.objects.get().state == LogoutDelivery.State.DELIVERED


def test_the_command_refuses_a_bad_interval():
    with pytest.raises(CommandError, match="--interval"):
        call_command("epochauth_outbox", "--loop", "--interval", "soon")


def test_retry_starts_a_given_up_delivery_again(rp, alice):
    rp.statuses = [400, 400, 200]
    revocation.end_family(grant(alice, application(rp)))
    delivered()
    due_now()
    backchannel.drain()
    assert LogoutDelivery.objects.get().state == LogoutDelivery.State.FAILED
    assert backchannel.retry(LogoutDelivery.objects.all()) == 1
    delivered()
    row = LogoutDelivery.objects.get()
    assert row.state == LogoutDelivery.State.DELIVERED and row.attempts == 1


def test_purge_deletes_deliveries_that_are_over(alice):
    portal = application(None)
    now = timezone.now()
    for jti, state, age in [
        ("old-done", "delivered", timedelta(days=2)),
        ("new-done", "delivered", timedelta(hours=1)),
        ("old-failed", "failed", timedelta(days=31)),
        ("new-failed", "failed", timedelta(days=2)),
        ("old-pending", "pending", timedelta(days=60)),
    ]:
        row = LogoutDelivery.objects.create(
            application=portal, subject="1", jti=jti, state=state, delivered_at=now - age
        )
        LogoutDelivery.objects.filter(pk=row.pk).update(created_at=now - age)
    out = call_command_output("epochauth_purge")
    assert "Deleted 2 logout deliveries that are over." in out
    assert set(LogoutDelivery.objects.values_list("jti", flat=True)) == {
        "new-done",
        "new-failed",
        "old-pending",
    }


@pytest.mark.parametrize(
    "uri",
    ["http://portal.example/bcl", "https://portal.example/bcl#f", "https://u@portal.example/b"],
)
def test_the_admin_refuses_a_uri_that_is_not_https_or_loopback(uri):
    logout = BackchannelLogout(application=application(None), uri=uri)
    with pytest.raises(ValidationError, match="https, or http to a loopback"):
        logout.full_clean()


def test_the_admin_lists_deliveries_without_a_token(rp, alice, admin_client):
    rp.statuses = [400]
    revocation.end_family(grant(alice, application(rp)))
    [token] = rp.tokens()
    page = admin_client.get("/admin/epochauth_oauth/logoutdelivery/")
    assert page.status_code == 200 and "HTTP 400" in page.content.decode()
    assert token.split(".")[1] not in page.content.decode()
    row = LogoutDelivery.objects.get()
    detail = admin_client.get(f"/admin/epochauth_oauth/logoutdelivery/{row.pk}/change/")
    assert detail.status_code == 200 and token.split(".")[1] not in detail.content.decode()


def call_command_output(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# -- end to end: our own back-channel receiver as the relying party --------------------------------

SELF_SECRET = "self-rp-secret-" * 3
SELF_SECRET_ENV = "EPOCHAUTH_TEST_SELF_RP_SECRET"


@pytest.fixture
def site(live_server: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """This site as the OpenID provider and as a relying party of itself ("self", the application
    "portal"), whose back-channel logout endpoint (epochauth.oidc) is the portal's registered URI.
    The two browsers keep their cookies apart, as on two sites.

    The portal's receiver ends the user's sessions here too (one site), which queues more
    deliveries: no thread drains them (a request of the live server would POST to the live server
    while it handles another); the test does, one by one (:func:`settle`), so that nothing is in
    flight when the test ends. The live server's threads share SQLite's one in-memory connection,
    where the receiver meets a locked table: CI's PostgreSQL leg runs these tests."""
    if connection.vendor == "sqlite":
        pytest.skip(
            "The live server's threads share the one connection to SQLite's in-memory test database "
            "while the portal's receiver writes; CI's PostgreSQL leg runs this test"
        )
    monkeypatch.setattr(backchannel, "kick", lambda: None)
    monkeypatch.setenv(SELF_SECRET_ENV, SELF_SECRET)
    openid_provider(
        settings,
        ISSUER=live_server.url,
        ALLOW_LOOPBACK_HTTP_ISSUERS=True,
        ISSUERS=[
            {
                "issuer": live_server.url,
                "slug": "self",
                "client_id": "portal",
                "client_secret_env": SELF_SECRET_ENV,
                "audiences": ["portal"],
            }
        ],
    )
    portal = Application.objects.create(
        name="Portal",
        client_id="portal",
        client_secret=SELF_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris="http://testserver/oidc/callback/",
        skip_authorization=True,
    )
    BackchannelLogout.objects.create(
        application=portal,
        uri=f"{live_server.url}/oidc/backchannel-logout/",
        session_required=True,
    )
    yield live_server
    # The portal's logout revokes its upstream grants at this site in the background: done before
    # the test's database is emptied, which a live server's request still running would block.
    assert grants.revocations.drain(10)


def sign_in_at_the_portal(site: Any, user: Any) -> tuple[Client, Client]:
    """The user's browser at the portal (signed in through us) and here (signed in)."""

    here, portal = Client(), Client()
    here.force_login(user)
    start = portal.get("/oidc/login/self/")
    assert start.status_code == 302, start.content
    answer = here.get(start["Location"].removeprefix(site.url))
    assert answer.status_code == 302, answer.content
    callback = portal.get(answer["Location"].removeprefix("http://testserver"))
    assert callback.status_code == 302, callback.content
    assert portal.get("/oidc/tokens/").status_code == 200
    return here, portal


def settle() -> None:
    """Deliver what is due, and what those deliveries queued, from this thread."""
    while backchannel.drain():
        pass


def all_delivered(user: Any) -> bool:
    """Every logout token about ``user`` reached the portal (its receiver, ending the user's
    sessions on this one site, may have queued another one)."""
    states = set(
        LogoutDelivery.objects.filter(subject=str(user.pk)).values_list("state", flat=True)
    )
    return states == {LogoutDelivery.State.DELIVERED}


def signed_in_at_the_portal(portal: Any) -> bool:
    return portal.get("/oidc/tokens/").status_code == 200


def test_signing_out_here_ends_the_portals_session(site, alice):
    here, portal = sign_in_at_the_portal(site, alice)
    page = here.get("/o/logout/")
    assert page.status_code == 200
    here.post("/o/logout/", {"allow": "Logout"})
    settle()
    assert not signed_in_at_the_portal(portal)
    assert all_delivered(alice)


def test_an_admin_ending_the_grant_ends_the_portals_session(site, alice, admin_client):
    _, portal = sign_in_at_the_portal(site, alice)
    rows = [str(pk) for pk in RefreshToken.objects.values_list("pk", flat=True)]
    admin_client.post(
        "/admin/oauth2_provider/refreshtoken/",
        {"action": "revoke_tokens", "_selected_action": rows},
    )
    settle()
    assert not signed_in_at_the_portal(portal)
    assert all_delivered(alice)


def test_an_epoch_bump_ends_the_portals_session(site, alice):
    _, portal = sign_in_at_the_portal(site, alice)
    other_here, other_portal = sign_in_at_the_portal(site, make_user("bob"))
    bump_epoch(Epoch.Kind.USER, str(alice.pk), reason="admin")
    settle()
    assert not signed_in_at_the_portal(portal)
    assert all_delivered(alice)
    assert signed_in_at_the_portal(other_portal)
