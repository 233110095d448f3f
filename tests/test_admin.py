"""Admin screens: one-click revocation for users, groups and sessions; tokens never shown."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from epochauth.models import AuditEvent, Epoch, Identity, RevokedToken, Session
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser() -> Any:
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def admin_client(client: Any, superuser: Any) -> Any:
    """A second test client logged in to the admin (the ``client`` fixture stays anonymous)."""
    from django.test import Client

    other = Client()
    other.force_login(superuser)
    return other


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


def run_action(admin_client: Any, url: str, action: str, pks: list[Any]) -> Any:
    response = admin_client.post(
        url, {"action": action, "_selected_action": [str(pk) for pk in pks]}, follow=True
    )
    assert response.status_code == 200
    return response


def test_user_admin_action_bumps_the_epoch(client, admin_client, superuser):
    alice = make_user("alice")
    make_user("bob")
    alices = login(client, "alice")
    bobs = login(client, "bob")
    response = run_action(admin_client, "/admin/auth/user/", "revoke_all_tokens", [alice.pk])
    assert "Revoked the tokens of 1 entry." in response.content.decode()
    assert hello(client, alices["access_token"]) == 401
    assert hello(client, bobs["access_token"]) == 200
    epoch = Epoch.objects.get(kind="user", object_id=str(alice.pk))
    assert epoch.value == 1
    assert epoch.bumped_by == superuser
    assert AuditEvent.objects.get(action="epoch_bumped").actor == superuser


def test_user_admin_shows_the_epoch_column(client, admin_client):
    alice = make_user("alice")
    run_action(admin_client, "/admin/auth/user/", "revoke_all_tokens", [alice.pk])
    run_action(admin_client, "/admin/auth/user/", "revoke_all_tokens", [alice.pk])
    html = admin_client.get("/admin/auth/user/").content.decode()
    assert "column-token_epoch" in html
    assert '<td class="field-token_epoch">2</td>' in html
    assert "Revoke all tokens (bump epoch)" in html
    change = admin_client.get(f"/admin/auth/user/{alice.pk}/change/")
    assert change.status_code == 200
    assert "token epoch" in change.content.decode().lower()


def test_group_admin_action_bumps_the_group_epoch(client, admin_client):
    make_user("alice", groups=["operators", "users"])
    selected = login(client, "alice", group="operators")
    other = login(client, "alice", group="users")
    plain = login(client, "alice")
    operators = Group.objects.get(name="operators")
    response = run_action(admin_client, "/admin/auth/group/", "revoke_all_tokens", [operators.pk])
    assert "Revoked the tokens of 1 entry." in response.content.decode()
    assert hello(client, selected["access_token"]) == 401
    assert hello(client, other["access_token"]) == 200
    assert hello(client, plain["access_token"]) == 200
    html = admin_client.get("/admin/auth/group/").content.decode()
    assert "column-token_epoch" in html
    assert admin_client.get(f"/admin/auth/group/{operators.pk}/change/").status_code == 200


def test_action_on_several_users(client, admin_client):
    users = [make_user(name) for name in ("a", "b", "c")]
    bodies = [login(client, u.username) for u in users]
    response = run_action(
        admin_client, "/admin/auth/user/", "revoke_all_tokens", [u.pk for u in users[:2]]
    )
    assert "Revoked the tokens of 2 entries." in response.content.decode()
    assert [hello(client, b["access_token"]) for b in bodies] == [401, 401, 200]


def test_session_admin_lists_and_revokes(client, admin_client):
    make_user("alice")
    one = login(client, "alice")
    two = login(client, "alice")
    html = admin_client.get("/admin/epochauth/session/").content.decode()
    assert "revoke_sessions" in html
    assert html.count("alice") >= 2
    first = Session.objects.get(family=one["refresh_token"].partition(".")[0])
    run_action(admin_client, "/admin/epochauth/session/", "revoke_sessions", [first.pk])
    assert hello(client, one["access_token"]) == 401
    assert hello(client, two["access_token"]) == 200
    assert (
        client.post(
            "/auth/token/refresh/",
            {"refresh_token": one["refresh_token"]},
            content_type="application/json",
        ).status_code
        == 400
    )
    event = AuditEvent.objects.get(action="session_revoked")
    assert event.detail["reason"] == "admin"
    assert event.actor.username == "root"


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/epochauth/identity/",
        "/admin/epochauth/revokedtoken/",
        "/admin/epochauth/auditevent/",
        "/admin/epochauth/epoch/",
        "/admin/epochauth/session/",
        "/admin/auth/user/",
        "/admin/auth/group/",
    ],
)
def test_changelists_load_and_never_show_tokens(client, admin_client, url):
    user = make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    refreshed = client.post(
        "/auth/token/refresh/",
        {"refresh_token": body["refresh_token"]},
        content_type="application/json",
    ).json()
    client.post(
        "/auth/token/", {"username": "alice", "password": "wrong"}, content_type="application/json"
    )
    client.post("/auth/logout/", **bearer(refreshed["access_token"]))
    Identity.objects.create(issuer="https://idp.example", subject="abc", user=user)
    html = admin_client.get(url).content.decode()
    assert admin_client.get(url).status_code == 200
    for secret in (
        body["access_token"],
        refreshed["access_token"],
        body["refresh_token"].partition(".")[2],
        refreshed["refresh_token"].partition(".")[2],
        Session.objects.get().refresh_hash,
    ):
        assert secret not in html


def test_detail_pages_never_show_tokens(client, admin_client):
    make_user("alice")
    body = login(client, "alice")
    session = Session.objects.get()
    client.post("/auth/logout/", **bearer(body["access_token"]))
    pages = [
        f"/admin/epochauth/session/{session.pk}/change/",
        f"/admin/epochauth/revokedtoken/{RevokedToken.objects.get().pk}/change/",
        f"/admin/epochauth/auditevent/{AuditEvent.objects.first().pk}/change/",
        f"/admin/epochauth/epoch/{Epoch.objects.create(kind='global').pk}/change/",
    ]
    for page in pages:
        response = admin_client.get(page)
        assert response.status_code == 200, page
        html = response.content.decode()
        assert body["access_token"] not in html
        assert body["refresh_token"].partition(".")[2] not in html
        assert session.refresh_hash not in html


@pytest.mark.parametrize("model", ["epoch", "revokedtoken", "auditevent"])
def test_revocation_state_and_audit_log_cannot_be_deleted_in_the_admin(admin_client, model):
    """Deleting an epoch or denylist row would make revoked tokens valid again."""
    from datetime import timedelta

    from django.utils import timezone

    rows = {
        "epoch": lambda: Epoch.objects.create(kind="global", value=3),
        "revokedtoken": lambda: RevokedToken.objects.create(
            jti="x", expires_at=timezone.now() + timedelta(hours=1)
        ),
        "auditevent": lambda: AuditEvent.objects.create(action="login"),
    }
    row = rows[model]()
    response = admin_client.post(f"/admin/epochauth/{model}/{row.pk}/delete/", {"post": "yes"})
    assert response.status_code == 403
    response = admin_client.post(
        f"/admin/epochauth/{model}/",
        {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"},
    )
    assert type(row).objects.filter(pk=row.pk).exists()


def test_users_with_sessions_can_still_be_deleted_in_the_admin(client, admin_client):
    user = make_user("alice")
    body = login(client, "alice")
    response = admin_client.post(f"/admin/auth/user/{user.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not get_user_model().objects.filter(pk=user.pk).exists()
    assert hello(client, body["access_token"]) == 401


def test_admin_needs_staff(client):
    make_user("alice")
    client.login(username="alice", password="pw")
    response = client.post(
        "/admin/auth/user/", {"action": "revoke_all_tokens", "_selected_action": ["1"]}
    )
    assert response.status_code == 302
    assert not Epoch.objects.exists()


# -- sessions are ended, not deleted ---------------------------------------------------------------


def session_of(tokens: dict[str, Any]) -> Session:
    return Session.objects.get(family=tokens["refresh_token"].partition(".")[0])


def refresh_status(client: Any, tokens: dict[str, Any]) -> int:
    body = {"refresh_token": tokens["refresh_token"]}
    return client.post("/auth/token/refresh/", body, content_type="application/json").status_code


def test_session_page_ends_the_session_and_keeps_it_listed(client, admin_client):
    from epochauth import signals

    make_user("alice")
    one, two = login(client, "alice"), login(client, "alice")
    session = session_of(one)
    page = admin_client.get(f"/admin/epochauth/session/{session.pk}/change/").content.decode()
    assert "End session" in page
    assert "deletelink" not in page
    ended = []

    def record(**kwargs: Any) -> None:
        ended.append(kwargs)

    signals.session_revoked.connect(record)
    try:
        response = admin_client.post(f"/admin/epochauth/session/{session.pk}/end/")
    finally:
        signals.session_revoked.disconnect(record)
    assert response.status_code == 302
    assert hello(client, one["access_token"]) == 401
    assert refresh_status(client, one) == 400
    assert hello(client, two["access_token"]) == 200
    assert [(kw["session"].pk, kw["reason"], kw["actor"].username) for kw in ended] == [
        (session.pk, "admin", "root")
    ]
    event = AuditEvent.objects.get(action="session_revoked")
    assert (event.actor.username, event.detail["reason"]) == ("root", "admin")
    session.refresh_from_db()
    assert session.revoked_at is not None  # history: listed as ended
    assert str(session.pk) in admin_client.get("/admin/epochauth/session/").content.decode()
    page = admin_client.get(f"/admin/epochauth/session/{session.pk}/change/").content.decode()
    assert "End session" not in page


def test_sessions_cannot_be_deleted_in_the_admin(client, admin_client):
    make_user("alice")
    session = session_of(login(client, "alice"))
    assert admin_client.get(f"/admin/epochauth/session/{session.pk}/delete/").status_code == 403
    assert "delete_selected" not in admin_client.get("/admin/epochauth/session/").content.decode()
    assert (
        admin_client.get(f"/admin/epochauth/session/{session.pk}/end/").status_code == 403
    )  # POST only
    assert Session.objects.filter(pk=session.pk, revoked_at__isnull=True).exists()


def test_ending_a_session_needs_the_delete_permission(client):
    from django.contrib.auth.models import Permission
    from django.test import Client

    staff = make_user("staff")
    staff.is_staff = True
    staff.save()
    staff.user_permissions.add(
        Permission.objects.get(codename="view_session", content_type__app_label="epochauth")
    )
    make_user("alice")
    tokens = login(client, "alice")
    session = session_of(tokens)
    browser = Client()
    browser.force_login(staff)
    assert (
        "End session"
        not in browser.get(f"/admin/epochauth/session/{session.pk}/change/").content.decode()
    )
    assert "revoke_sessions" not in browser.get("/admin/epochauth/session/").content.decode()
    assert browser.post(f"/admin/epochauth/session/{session.pk}/end/").status_code == 403
    assert hello(client, tokens["access_token"]) == 200
    staff.user_permissions.add(
        Permission.objects.get(codename="delete_session", content_type__app_label="epochauth")
    )
    browser.force_login(get_user_model().objects.get(pk=staff.pk))
    assert browser.post(f"/admin/epochauth/session/{session.pk}/end/").status_code == 302
    assert hello(client, tokens["access_token"]) == 401


def test_a_session_row_deleted_in_code_ends_like_a_logout(client):
    make_user("alice")
    one, two = login(client, "alice"), login(client, "alice")
    Session.objects.filter(pk=session_of(one).pk).delete()
    assert hello(client, one["access_token"]) == 401
    assert refresh_status(client, one) == 400
    logout = client.post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {one['access_token']}")
    assert logout.status_code == 401  # not "does not belong to a session", and not working
    assert hello(client, two["access_token"]) == 200
    event = AuditEvent.objects.get(action="session_revoked")
    assert event.detail["reason"] == "deleted"


def test_deleting_a_user_ends_each_of_their_sessions(client):
    alice = make_user("alice")
    tokens = [login(client, "alice") for _ in range(2)]
    alice.delete()
    for one in tokens:
        assert hello(client, one["access_token"]) == 401
    assert (
        AuditEvent.objects.filter(action="session_revoked", detail__reason="deleted").count() == 2
    )
    assert not Session.objects.exists()


# -- the change pages of users and groups ---------------------------------------------------------


def revoke_button(admin_client: Any, url: str, reason: str) -> Any:
    return admin_client.post(url, {"reason": reason}, follow=True)


def test_user_page_revokes_every_token_and_session_with_a_reason(client, admin_client, superuser):
    alice = make_user("alice")
    make_user("bob")
    alices, bobs = login(client, "alice"), login(client, "bob")
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "Revoke all tokens and sessions" in page
    assert f'action="/admin/auth/user/{alice.pk}/revoke-tokens/"' in page

    response = revoke_button(
        admin_client, f"/admin/auth/user/{alice.pk}/revoke-tokens/", "laptop stolen"
    )
    assert (
        "Revoked every token and session of alice (reason: laptop stolen)."
        in response.content.decode()
    )
    assert response.redirect_chain[-1][0] == f"/admin/auth/user/{alice.pk}/change/"
    assert hello(client, alices["access_token"]) == 401
    assert hello(client, bobs["access_token"]) == 200
    refresh = {"refresh_token": alices["refresh_token"]}
    assert (
        client.post("/auth/token/refresh/", refresh, content_type="application/json").status_code
        == 400
    )
    assert Session.objects.get(user=alice).revoked_at is not None
    epoch = Epoch.objects.get(kind="user", object_id=str(alice.pk))
    assert (epoch.value, epoch.reason, epoch.bumped_by) == (1, "laptop stolen", superuser)


def test_the_revoke_button_is_one_of_the_object_tools_drawn_like_them(admin_client):
    """A POST form with its CSRF token and reason among Django's object-tools links, styled as they are."""
    alice = make_user("alice")
    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    tools = page[page.index('<ul class="object-tools">') :]
    tools = tools[: tools.index("</ul>")]
    form = tools[tools.index('<form method="post"') :]
    assert 'id="epochauth-revoke" class="epochauth-tool"' in form
    assert 'name="csrfmiddlewaretoken"' in form and 'name="reason"' in form and "required" in form
    assert "Revoke all tokens and sessions</button>" in form
    assert tools.index("epochauth-revoke") < tools.index('class="historylink"')  # beside History
    assert ".object-tools .epochauth-tool button {" in page
    assert "background: var(--object-tools-bg)" in page  # the admin's colours, dark mode too


def test_group_page_revokes_the_tokens_that_selected_it(client, admin_client):
    make_user("alice", groups=["operators"])
    selected = login(client, "alice", group="operators")
    other = login(client, "alice")
    group = Group.objects.get(name="operators")
    assert (
        "Revoke all tokens and sessions"
        in admin_client.get(f"/admin/auth/group/{group.pk}/change/").content.decode()
    )
    response = revoke_button(
        admin_client, f"/admin/auth/group/{group.pk}/revoke-tokens/", "incident 42"
    )
    assert "reason: incident 42" in response.content.decode()
    assert hello(client, selected["access_token"]) == 401
    assert hello(client, other["access_token"]) == 200
    assert Epoch.objects.get(kind="group", object_id=str(group.pk)).reason == "incident 42"


def test_revoking_needs_a_reason_post_and_the_permission(client, admin_client):
    alice = make_user("alice")
    token = login(client, "alice")["access_token"]
    url = f"/admin/auth/user/{alice.pk}/revoke-tokens/"
    response = revoke_button(admin_client, url, "   ")
    assert "Give a reason for the revocation." in response.content.decode()
    assert admin_client.get(url).status_code == 403
    assert admin_client.post(
        "/admin/auth/user/999999/revoke-tokens/", {"reason": "x"}
    ).status_code in (
        302,
        403,
    )
    assert hello(client, token) == 200

    staff = get_user_model().objects.create_user("staff", password="pw", is_staff=True)
    from django.contrib.auth.models import Permission

    staff.user_permissions.add(Permission.objects.get(codename="change_user"))
    from django.test import Client

    other = Client()
    other.force_login(staff)
    page = other.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "Revoke all tokens and sessions" not in page
    assert other.post(url, {"reason": "x"}).status_code == 403
    assert hello(client, token) == 200
    assert not Epoch.objects.filter(kind="user").exists()


def test_user_page_lists_sessions_identities_and_grants_and_ends_a_session(client, admin_client):
    from oauth2_provider.models import get_application_model, get_refresh_token_model

    alice = make_user("alice")
    one = client.post(
        "/auth/token/",
        {"username": "alice", "password": "pw"},
        content_type="application/json",
        HTTP_USER_AGENT="curl/8.5.0",
    ).json()
    two = login(client, "alice")
    Identity.objects.create(issuer="https://idp.example.org", subject="alice-at-idp", user=alice)
    app = get_application_model().objects.create(
        name="Reports app",
        client_type="public",
        authorization_grant_type="authorization-code",
        user=alice,
    )
    get_refresh_token_model().objects.create(
        user=alice, application=app, token="secret-refresh-value"
    )

    page = admin_client.get(f"/admin/auth/user/{alice.pk}/change/").content.decode()
    assert "curl/8.5.0" in page and "alice-at-idp" in page and "https://idp.example.org" in page
    assert "Reports app" in page and "OAuth grants" in page
    assert page.count(">End session</button>") == 2
    for secret in (one["refresh_token"], one["access_token"], "secret-refresh-value"):
        assert secret not in page

    first = Session.objects.get(family=one["refresh_token"].partition(".")[0])
    user_page = f"/admin/auth/user/{alice.pk}/change/"
    response = admin_client.post(
        f"/admin/epochauth/session/{first.pk}/end/?next={user_page}", follow=True
    )
    assert response.redirect_chain[-1][0] == user_page
    assert "The session was ended." in response.content.decode()
    assert hello(client, one["access_token"]) == 401
    assert hello(client, two["access_token"]) == 200
    assert response.content.decode().count(">End session</button>") == 1
    outside = admin_client.post(
        f"/admin/epochauth/session/{first.pk}/end/?next=https://evil.example/"
    )
    assert outside["Location"] == f"/admin/epochauth/session/{first.pk}/change/"


def test_epochs_show_names_and_audit_events_link_to_the_user(client, admin_client):
    alice = make_user("alice", groups=["operators"])
    token = login(client, "alice")["access_token"]
    client.post("/auth/logout-all/", **bearer(token))
    group = Group.objects.get(name="operators")
    revoke_button(admin_client, f"/admin/auth/group/{group.pk}/revoke-tokens/", "audit")
    epochs = admin_client.get("/admin/epochauth/epoch/").content.decode()
    assert f'<a href="/admin/auth/user/{alice.pk}/change/">alice</a>' in epochs
    assert f'<a href="/admin/auth/group/{group.pk}/change/">operators</a>' in epochs
    events = admin_client.get("/admin/epochauth/auditevent/").content.decode()
    assert f'<a href="/admin/auth/user/{alice.pk}/change/">alice</a>' in events
