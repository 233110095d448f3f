"""The Token Manager (epochauth.tokenmanager) end to end against the real provider (tests/idp): a browser
login keeps the provider's refresh token (offline_access), encrypted; a service with a
client-credentials token obtains the user's upstream access token and calls the provider's userinfo
with it; logout revokes the refresh token at the provider, which then refuses it (in the background:
a test waits with ``revoked()``)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.test import Client
from oauth2_provider.models import get_application_model

from epochauth import tokens
from epochauth.models import AuditEvent, Identity
from epochauth.oauth.models import AllowedScopes
from epochauth.oidc import providers
from epochauth.revocation import bump_epoch
from epochauth.tokenmanager.grants import decrypt, keep, revocations
from epochauth.tokenmanager.models import UpstreamGrant
from epochauth.urns import ACCESS_TOKEN_TYPE, TOKEN_EXCHANGE
from tests.helpers import make_user
from tests.idp import TestIdP, parse_forms, sign_in_at_provider
from tests.loopback_issuer import CraftedIssuer

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "svc-secret-" * 4


@pytest.fixture(autouse=True)
def no_revocation_left() -> Iterator[None]:
    """A test's background revocations end with it, before its database is emptied."""
    yield
    assert revocations.drain(30)


def revoked() -> None:
    """Wait for the revocations the logouts so far queued."""
    assert revocations.drain(10)


@pytest.fixture
def web_idp_env() -> dict[str, str]:
    """``web_idp`` rotates refresh tokens at each use, as many providers do."""
    return {"IDP_ROTATE_REFRESH_TOKENS": "1"}


def service_application(client_id: str = "jobs", marked: bool = True) -> Any:
    """A confidential client-credentials application; ``marked``: a Token Manager service (its
    allowed scopes list "tokenmanager")."""
    application = get_application_model().objects.create(
        name=client_id,
        client_id=client_id,
        client_secret=SECRET,
        client_type="confidential",
        authorization_grant_type="client-credentials",
        user=make_user(f"{client_id}-owner"),
    )
    if marked:
        AllowedScopes.objects.create(application=application, scopes="tokenmanager reports:read")
    return application


def client_credentials(
    site: str, client_id: str, scope: str = "tokenmanager"
) -> requests.Response:
    return requests.post(
        f"{site}/o/token/",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(client_id, SECRET),
        timeout=10,
    )


@pytest.fixture
def service(live_server) -> str:
    """The Token Manager service application "jobs"; returns its access token with the scope."""
    service_application()
    response = client_credentials(live_server.url, "jobs")
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def browser_login(site: str, username: str = "alice") -> requests.Session:
    browser = requests.Session()
    start = browser.get(f"{site}/oidc/login/test-idp/", allow_redirects=False, timeout=10)
    callback = sign_in_at_provider(
        start.headers["Location"], username, f"{site}/oidc/callback/", http=browser
    )
    assert f"Signed in as {username}" in browser.get(callback, timeout=10).text
    return browser


def browser_logout(site: str, browser: requests.Session) -> None:
    page = browser.get(f"{site}/oidc/logout/", timeout=10)
    form = parse_forms(page.text)[0]
    browser.post(
        urljoin(page.url, form["action"]), data=form["fields"], allow_redirects=False, timeout=10
    )


def obtain(site: str, token: str, **fields: str) -> requests.Response:
    return requests.post(
        f"{site}/tokenmanager/token/",
        data=fields,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def refresh_at(idp: TestIdP, refresh_token: str) -> requests.Response:
    return requests.post(
        idp.metadata["token_endpoint"],
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=(idp.WEB_CLIENT_ID, idp.WEB_CLIENT_SECRET),
        timeout=10,
    )


def userinfo(idp: TestIdP, access_token: str) -> requests.Response:
    return requests.get(
        idp.metadata["userinfo_endpoint"],
        headers={"Authorization": f"Bearer {access_token}"},
        timeout=10,
    )


def test_login_keeps_a_grant_a_service_uses_it_and_logout_revokes_it(
    web_idp, live_server, service
):
    site = live_server.url
    browser = browser_login(site)
    grant = UpstreamGrant.objects.get()
    alice = get_user_model().objects.get(pk=grant.user_id)
    refresh_token = decrypt(grant.encrypted_token)
    assert grant.issuer == web_idp.issuer and "offline_access" in grant.scope
    assert refresh_token not in grant.encrypted_token

    first = obtain(site, service, username=alice.username)
    assert first.status_code == 200, first.text
    assert first.headers["Cache-Control"] == "no-store"
    body = first.json()
    assert body["issuer"] == web_idp.issuer and body["expires_in"] > 60
    assert userinfo(web_idp, body["access_token"]).json()["sub"] == "alice"
    rotated = decrypt(UpstreamGrant.objects.get().encrypted_token)
    # the provider rotates refresh tokens: the stored one follows (presenting the old one again now
    # would make the provider end the whole grant, as reuse detection should)
    assert rotated != refresh_token

    again = obtain(site, service, username=alice.username).json()
    assert again["access_token"] == body["access_token"]  # cached until shortly before it expires
    narrow = obtain(site, service, username=alice.username, scope="openid profile").json()
    assert narrow["access_token"] != body["access_token"] and narrow["scope"] == "openid profile"
    assert userinfo(web_idp, narrow["access_token"]).json()["sub"] == "alice"
    assert UpstreamGrant.objects.get().last_used is not None
    handed = AuditEvent.objects.filter(action="upstream_token_issued", user=alice)
    assert handed.count() == 3 and handed.first().detail["client_id"] == "jobs"

    browser_logout(site, browser)
    gone = obtain(site, service, username=alice.username)
    revoked()
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, rotated).json()["error"] == "invalid_grant"
    assert gone.status_code == 400 and gone.json()["error"] == "invalid_grant"


def exchange(site: str, subject_token: str) -> requests.Response:
    """Our token exchange (RFC 8693) of a provider's access token, by the ``service`` application."""
    return requests.post(
        f"{site}/o/token/",
        data={
            "grant_type": TOKEN_EXCHANGE,
            "subject_token": subject_token,
            "subject_token_type": ACCESS_TOKEN_TYPE,
            "scope": "reports:read",
        },
        auth=("jobs", SECRET),
        timeout=10,
    )


def exchange_env(mode: str) -> dict[str, str]:
    return {"IDP_ROTATE_REFRESH_TOKENS": "1", "IDP_TOKEN_EXCHANGE": mode}


@pytest.mark.parametrize(
    "web_idp_env",
    # rfc: the refresh token as RFC 8693 issues it; iam: beside an access token, as INDIGO IAM does
    [exchange_env("rfc"), exchange_env("iam")],
    ids=["rfc", "iam"],
)
def test_an_exchange_keeps_a_grant_a_service_uses_it_and_logout_all_revokes_it(
    web_idp, live_server, service
):
    site = live_server.url
    answer = exchange(site, web_idp.user_token("carol"))
    assert answer.status_code == 200, answer.text
    grant = UpstreamGrant.objects.get()
    carol = get_user_model().objects.get(pk=grant.user_id)
    assert grant.issuer == web_idp.issuer and "offline_access" in grant.scope
    assert decrypt(grant.encrypted_token) not in grant.encrypted_token
    event = AuditEvent.objects.get(action="upstream_grant_stored")
    assert event.detail == {"issuer": web_idp.issuer, "replaced": 0, "via": "token_exchange"}

    upstream = obtain(site, service, username=carol.username)
    assert upstream.status_code == 200, upstream.text
    assert userinfo(web_idp, upstream.json()["access_token"]).json()["sub"] == "carol"
    # exchanging again while the grant lives keeps it: a busy service piles up no grants upstream
    assert exchange(site, web_idp.user_token("carol")).status_code == 200
    assert UpstreamGrant.objects.get().pk == grant.pk
    assert AuditEvent.objects.filter(action="upstream_grant_stored").count() == 1

    refresh_token = decrypt(UpstreamGrant.objects.get().encrypted_token)  # rotated at the refresh
    logout = requests.post(
        f"{site}/auth/logout-all/",
        headers={"Authorization": f"Bearer {answer.json()['access_token']}"},
        timeout=10,
    )
    assert logout.status_code == 204
    revoked()
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"
    assert obtain(site, service, username=carol.username).json()["error"] == "invalid_grant"


def token_requests(idp: TestIdP) -> int:
    return idp.stats()["requests"].get(urlsplit(idp.metadata["token_endpoint"]).path, 0)


@pytest.mark.parametrize("web_idp_env", [exchange_env("off")], ids=["off"])
def test_a_provider_without_the_exchange_is_not_asked(web_idp, live_server, service):
    subject_token = web_idp.user_token("carol")
    web_idp.reset_stats()
    assert exchange(live_server.url, subject_token).status_code == 200
    assert token_requests(web_idp) == 0 and not UpstreamGrant.objects.exists()


def test_without_offline_access_the_provider_is_not_asked(web_idp, live_server, service, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "OIDC_SCOPES": "openid profile"}
    subject_token = web_idp.user_token("carol")
    web_idp.reset_stats()
    assert exchange(live_server.url, subject_token).status_code == 200
    assert token_requests(web_idp) == 0 and not UpstreamGrant.objects.exists()


def test_a_provider_that_fails_the_exchange_leaves_ours_standing(
    web_idp, live_server, service, caplog
):
    """Down (503) or answering garbage: our exchange answers 200 all the same, no grant is stored,
    and the warning names the provider, never the token."""
    site = live_server.url
    subject_token = web_idp.user_token("carol")
    web_idp.down(targets="token")
    try:
        assert exchange(site, subject_token).status_code == 200
    finally:
        web_idp.up()
    document, expires = providers.metadata_cache[web_idp.issuer]
    # a page of ours where the provider's token endpoint should be: HTML, not JSON
    providers.metadata_cache[web_idp.issuer] = (
        {**document, "token_endpoint": f"{site}/oidc/login/"},
        expires,
    )
    assert exchange(site, subject_token).status_code == 200
    assert not UpstreamGrant.objects.exists()
    warnings = [r.getMessage() for r in caplog.records if "from the exchange" in r.getMessage()]
    assert len(warnings) == 2 and all(web_idp.issuer in w for w in warnings)
    assert "answered 503" in warnings[0] and "answered garbage" in warnings[1]
    assert subject_token not in caplog.text


def test_a_newer_login_replaces_and_revokes_the_older_grant(web_idp, live_server):
    browser_login(live_server.url)
    older = decrypt(UpstreamGrant.objects.get().encrypted_token)
    browser_login(live_server.url)
    revoked()
    assert UpstreamGrant.objects.count() == 1
    assert refresh_at(web_idp, older).json()["error"] == "invalid_grant"
    event = AuditEvent.objects.filter(action="upstream_grant_stored").first()
    assert event.detail == {"issuer": web_idp.issuer, "replaced": 1, "via": "browser_login"}


def test_an_epoch_bump_ends_the_grant_and_a_provider_that_is_down_is_retried(web_idp, live_server):
    browser_login(live_server.url)
    grant = UpstreamGrant.objects.get()
    refresh_token = decrypt(grant.encrypted_token)
    web_idp.down(targets="revocation")
    try:
        bump_epoch("user", str(grant.user_id), reason="test")
        revoked()
        waiting = UpstreamGrant.objects.get()
        assert waiting.ended_at is not None and waiting.revoke_attempts == 1
        assert "503" in waiting.revoke_error
    finally:
        web_idp.up()
    out = io.StringIO()
    call_command("epochauth_upstream_grants", stdout=out)
    assert "0 ended grant(s) still wait" in out.getvalue()
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"


def password_login(site: str, username: str, scope: str = "") -> requests.Response:
    return requests.post(
        f"{site}/auth/token/",
        json={"username": username, "password": "pw", "scope": scope},
        timeout=10,
    )


def test_who_may_obtain_upstream_tokens(web_idp, live_server, service):
    site = live_server.url
    browser = browser_login(site)
    alice = get_user_model().objects.get(pk=UpstreamGrant.objects.get().user_id)
    # the browser's own session never gets one, nor does a token without the scope or the permission
    assert browser.post(
        f"{site}/tokenmanager/token/", data={"username": alice.username}
    ).status_code in (
        401,
        403,
    )
    carol = make_user("carol")
    plain = password_login(site, "carol").json()["access_token"]
    assert obtain(site, plain, username=alice.username).status_code == 403
    assert obtain(site, "not-a-token", username=alice.username).status_code == 401
    assert not AuditEvent.objects.filter(action="upstream_token_issued").exists()
    # a user with the permission, with any token of ours
    carol.user_permissions.add(Permission.objects.get(codename="obtain_upstream_token"))
    allowed = obtain(site, plain, username=alice.username)
    assert allowed.status_code == 200, allowed.text
    assert userinfo(web_idp, allowed.json()["access_token"]).json()["sub"] == "alice"
    # bad input: readable OAuth errors
    assert obtain(site, service).json()["error"] == "invalid_request"
    assert obtain(site, service, username="nobody").json()["error"] == "invalid_grant"
    # RFC 8707: a resource the login did not ask for is the provider's invalid_target
    refused = obtain(site, service, username=alice.username, resource="https://elsewhere.example/")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
    assert UpstreamGrant.objects.filter(ended_at__isnull=True).exists()


def test_the_scope_comes_from_the_group_the_service_names(web_idp, live_server, service, settings):
    """DIRAC: "Token Manager forms a scope that corresponds to the selected group": the issuer's
    ``group_scopes`` gives the upstream scope; never a group the user is not in, never wider."""
    (entry,) = settings.EPOCHAUTH["ISSUERS"]
    group_scopes = {"cms-operators": "openid profile", "atlas": "openid email"}
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [{**entry, "group_scopes": group_scopes}],
    }
    site = live_server.url
    browser_login(site)
    alice = get_user_model().objects.get(pk=UpstreamGrant.objects.get().user_id)
    alice.groups.add(Group.objects.create(name="cms-operators"))
    Group.objects.create(name="atlas")

    mapped = obtain(site, service, username=alice.username, group="cms-operators")
    assert mapped.status_code == 200, mapped.text
    assert mapped.json()["scope"] == "openid profile"
    assert userinfo(web_idp, mapped.json()["access_token"]).json()["sub"] == "alice"
    within = obtain(site, service, username=alice.username, group="cms-operators", scope="openid")
    assert within.status_code == 200, within.text
    assert within.json()["scope"] == "openid"
    for fields in (
        {"group": "atlas"},  # mapped, but alice is not in it: never someone else's scope
        {"group": "cms-operators", "scope": "openid profile email"},  # wider than the group's
        {"group": "nobody-maps-this"},
    ):
        refused = obtain(site, service, username=alice.username, **fields)
        assert refused.status_code == 400, fields
        assert refused.json()["error"] == "invalid_scope", refused.text
    issued = AuditEvent.objects.filter(action="upstream_token_issued")
    assert [event.detail["group"] for event in issued] == ["cms-operators", "cms-operators"]


def test_group_scopes_must_be_scope_strings(settings):
    from epochauth.checks import check_issuers

    entry = {"issuer": "https://iam.example.org/", "group_scopes": {"cms": "bad\\scope"}}
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [entry]}
    errors = [error for error in check_issuers(None) if error.id == "epochauth.E007"]
    assert [error.msg for error in errors] == [
        "https://iam.example.org/: group_scopes must map group names to scope strings."
    ]


def test_a_user_cannot_ask_for_the_token_manager_scope(live_server):
    """Issue 25: a user logged in with scope "tokenmanager" and got any user's upstream token."""
    make_user("mallory")
    for scope in ("tokenmanager", "reports:read tokenmanager"):
        refused = password_login(live_server.url, "mallory", scope)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
        assert "service application" in refused.json()["error_description"]


def test_an_application_not_marked_as_the_service_gets_no_access(live_server):
    service_application("batch", marked=False)
    refused = client_credentials(live_server.url, "batch")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    token = client_credentials(live_server.url, "batch", scope="reports:read").json()
    assert obtain(live_server.url, token["access_token"], username="nobody").status_code == 403


def test_unmarking_the_application_ends_its_access_at_once(live_server, service):
    assert obtain(live_server.url, service, username="nobody").json()["error"] == "invalid_grant"
    allowed = AllowedScopes.objects.get(application__client_id="jobs")
    allowed.scopes = "reports:read"
    allowed.save()
    assert obtain(live_server.url, service, username="nobody").status_code == 403
    allowed.scopes = "reports:read tokenmanager"
    allowed.save()
    assert obtain(live_server.url, service, username="nobody").status_code == 400
    # a public client is no service, whatever its allowed scopes say
    get_application_model().objects.filter(client_id="jobs").update(client_type="public")
    assert obtain(live_server.url, service, username="nobody").status_code == 403
    get_application_model().objects.filter(client_id="jobs").delete()
    assert obtain(live_server.url, service, username="nobody").status_code == 403


def test_only_the_client_credentials_grant_stands_for_the_service(live_server, service):
    """A user's token that names the service application and carries the scope (as a code flow could
    mint before the scope was a service scope) is not the application's own token."""
    owner = get_application_model().objects.get(client_id="jobs").user
    for user in (make_user("mallory"), owner):
        issued = tokens.mint_access_token(
            user, scope="tokenmanager", extra_claims={"client_id": "jobs"}
        )
        assert obtain(live_server.url, issued.token, username="nobody").status_code == 403
    assert obtain(live_server.url, service, username="nobody").status_code == 400


def test_an_external_issuers_scope_is_no_token_manager_access(live_server, settings):
    """Any allow-listed issuer's token with scope "tokenmanager", even of a user who holds the
    permission here: only tokens of ours reach the Token Manager."""
    issuer = CraftedIssuer()
    try:
        settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": issuer.issuer}]}
        token = issuer.token(sub="mallory", scope="tokenmanager", client_id="jobs")
        assert obtain(live_server.url, token, username="nobody").status_code == 403
        mallory = Identity.objects.get(issuer=issuer.issuer).user
        mallory.user_permissions.add(Permission.objects.get(codename="obtain_upstream_token"))
        assert obtain(live_server.url, token, username="nobody").status_code == 403
    finally:
        issuer.stop()


def test_a_tampered_or_foreign_key_grant_is_an_oauth_error(
    web_idp, live_server, service, settings
):
    site = live_server.url
    browser_login(site)
    grant = UpstreamGrant.objects.get()
    alice = get_user_model().objects.get(pk=grant.user_id)
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "TOKEN_MANAGER_KEYS": [Fernet.generate_key().decode()],
    }
    wrong_key = obtain(site, service, username=alice.username)
    assert (
        wrong_key.status_code == 400 and "configured keys" in wrong_key.json()["error_description"]
    )
    assert UpstreamGrant.objects.filter(ended_at__isnull=True).exists()


def test_keys_rotate(web_idp, live_server, settings):
    browser_login(live_server.url)
    refresh_token = decrypt(UpstreamGrant.objects.get().encrypted_token)
    old = settings.EPOCHAUTH["TOKEN_MANAGER_KEYS"]
    new = Fernet.generate_key().decode()
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_MANAGER_KEYS": [new, *old]}
    call_command("epochauth_upstream_grants", "--rotate", stdout=io.StringIO())
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_MANAGER_KEYS": [new]}
    assert decrypt(UpstreamGrant.objects.get().encrypted_token) == refresh_token


def test_admin_lists_grants_without_the_token_and_revokes(web_idp, live_server):
    browser_login(live_server.url)
    grant = UpstreamGrant.objects.get()
    refresh_token = decrypt(grant.encrypted_token)
    # the same user's grant at another provider: not selected, so not ended
    elsewhere = keep(grant.user, "https://elsewhere.example", "their-refresh-token")
    admin = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    listing = client.get("/admin/epochauth_tokenmanager/upstreamgrant/")
    page = listing.content.decode()
    assert listing.status_code == 200 and web_idp.issuer in page
    assert grant.encrypted_token not in page and refresh_token not in page
    detail = client.get(
        f"/admin/epochauth_tokenmanager/upstreamgrant/{grant.pk}/change/"
    ).content.decode()
    assert grant.encrypted_token not in detail
    client.post(
        "/admin/epochauth_tokenmanager/upstreamgrant/",
        {"action": "revoke", "_selected_action": [grant.pk]},
    )
    revoked()
    assert list(UpstreamGrant.objects.all()) == [elsewhere]
    assert UpstreamGrant.objects.get().ended_at is None
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [([], "epochauth.tokenmanager.E001"), (["short"], "epochauth.tokenmanager.E002")],
)
def test_missing_or_bad_keys_are_system_check_errors(settings, keys, expected):
    from epochauth.tokenmanager.checks import check_keys

    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_MANAGER_KEYS": keys}
    assert [error.id for error in check_keys()] == [expected]
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "TOKEN_MANAGER_KEYS": [Fernet.generate_key().decode()],
    }
    assert check_keys() == []


def test_an_api_logout_ends_the_grant_too(web_idp, live_server):
    """``epochauth logout`` of a session started on the signed-in page: DIRAC's dirac-logout."""
    site = live_server.url
    browser = browser_login(site)
    refresh_token = decrypt(UpstreamGrant.objects.get().encrypted_token)
    page = browser.get(f"{site}/oidc/tokens/", timeout=10)
    created = browser.post(
        f"{site}/oidc/tokens/", data=parse_forms(page.text)[0]["fields"], timeout=10
    )
    access = created.text.split('<pre id="access-token">')[1].split("<")[0]
    logout = requests.post(
        f"{site}/auth/logout/", headers={"Authorization": f"Bearer {access}"}, timeout=10
    )
    assert logout.status_code == 204
    revoked()
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"


def logout_while_the_provider_is_slow(web_idp: TestIdP, site: str, delay_ms: int) -> str:
    """Log in, then log out while the provider's revocation endpoint answers after ``delay_ms``: the
    logout returns at once with the grant ended (never handed out again); the worker has finished
    when this returns. The grant's refresh token."""
    browser = browser_login(site)
    refresh_token = decrypt(UpstreamGrant.objects.get().encrypted_token)
    web_idp.delay(delay_ms, targets="revocation")
    try:
        started = time.monotonic()
        browser_logout(site, browser)
        assert time.monotonic() - started < 1
        assert UpstreamGrant.objects.get().ended_at is not None
        revoked()
    finally:
        web_idp.delay(0)
    return refresh_token


def test_a_slow_provider_does_not_delay_the_logout(web_idp, live_server, settings):
    """The grant ends in the logout's transaction; the call to the provider comes after the answer."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "HTTP_TIMEOUT": 5}
    refresh_token = logout_while_the_provider_is_slow(web_idp, live_server.url, 2000)
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"


def test_a_provider_that_hangs_past_the_timeout_is_retried_later(web_idp, live_server, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "HTTP_TIMEOUT": 1}
    refresh_token = logout_while_the_provider_is_slow(web_idp, live_server.url, 3000)
    waiting = UpstreamGrant.objects.get()
    assert waiting.revoke_attempts == 1 and "ReadTimeout" in waiting.revoke_error
    admin = get_user_model().objects.create_superuser("root", password="pw")
    client = Client()
    client.force_login(admin)
    page = client.get("/admin/epochauth_tokenmanager/upstreamgrant/").content.decode()
    assert "ReadTimeout" in page
    out = io.StringIO()
    call_command("epochauth_upstream_grants", stdout=out)
    assert "0 ended grant(s) still wait" in out.getvalue()
    assert not UpstreamGrant.objects.exists()
    assert refresh_at(web_idp, refresh_token).json()["error"] == "invalid_grant"
