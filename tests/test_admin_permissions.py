"""Every admin action and button needs the permission of what it changes, not just the right to look.

The actions are read from ``admin.site``, so a new action without a declared permission fails here.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.db.models import Model
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
)

from epochauth.models import CommunityGroup, CommunityMembership, Epoch, Issuer, Session
from epochauth.oauth.models import LogoutDelivery, SSFEvent, SSFStream
from epochauth.tokenmanager.models import UpstreamGrant
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()


def superuser_request() -> Any:
    """A request of an (unsaved) active superuser: enough for ``get_actions``, with no query."""
    request = RequestFactory().get("/admin/")
    request.user = get_user_model()(is_active=True, is_staff=True, is_superuser=True)
    return request


def every_action() -> list[tuple[type[Model], str]]:
    """(model, action name) of every registered admin, as a superuser is offered them."""
    return [
        (model, name)
        for model, model_admin in admin.site._registry.items()
        for name in model_admin.get_actions(superuser_request())
    ]


ACTIONS = every_action()
OURS = [(model, name) for model, name in ACTIONS if name != "delete_selected"]


def action_id(pair: tuple[type[Model], str]) -> str:
    return f"{pair[0]._meta.label_lower}.{pair[1]}"


# -- the world the actions work on, and what each one does to it --------------------------------


@pytest.fixture
def world(client: Any, settings: Any, free_port: int) -> None:
    """A row for each action to work on: a user in a group with a session, an enabled and a disabled
    issuer that cannot be reached, a DOT access and refresh token, a live and an ended upstream grant."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    alice = make_user("alice", groups=["operators"])
    login(client, "alice")
    Issuer.objects.create(issuer=f"http://127.0.0.1:{free_port}/on")
    Issuer.objects.create(issuer=f"http://127.0.0.1:{free_port}/off", enabled=False)
    app = get_application_model().objects.create(
        name="app",
        client_type="confidential",
        authorization_grant_type="client-credentials",
        user=alice,
    )
    expires = timezone.now() + timedelta(hours=1)
    access = AccessToken.objects.create(
        user=alice, application=app, token=uuid.uuid4().hex, expires=expires
    )
    RefreshToken.objects.create(
        user=alice, application=app, token=uuid.uuid4().hex, access_token=access
    )
    UpstreamGrant.objects.create(user=alice, issuer="https://live.example", encrypted_token="x")
    LogoutDelivery.objects.create(
        application=app, subject=str(alice.pk), jti="j1", state="failed", attempts=3
    )
    UpstreamGrant.objects.create(
        user=alice, issuer="https://ended.example", encrypted_token="x", ended_at=timezone.now()
    )
    stream = SSFStream.objects.create(
        application=app, audience="app", method=SSFStream.Method.PUSH
    )
    SSFEvent.objects.create(
        stream=stream, jti="e1", event_type="urn:example", claims={}, state="failed", attempts=3
    )
    # The test project's communities: a member of lhcb, and a group of belle2.
    CommunityMembership.objects.create(user=alice, community="lhcb")
    CommunityGroup.objects.create(group=Group.objects.get(name="operators"), community="belle2")


Effect = Callable[[str], bool]

#: What each of our actions needs, and how to see that it ran (from its page and the database).
#: The handbook's table of admin permissions (docs/handbook.md) says the same.
REQUIRED: dict[str, tuple[str, Effect]] = {
    "auth.user.revoke_all_tokens": (
        "epochauth.change_epoch",
        lambda html: Epoch.objects.filter(kind="user").exists(),
    ),
    "auth.group.revoke_all_tokens": (
        "epochauth.change_epoch",
        lambda html: Epoch.objects.filter(kind="group").exists(),
    ),
    "epochauth.communitymembership.revoke_communities": (
        "epochauth.change_epoch",
        lambda html: Epoch.objects.filter(kind="community", object_id="lhcb").exists(),
    ),
    "epochauth.communitygroup.revoke_communities": (
        "epochauth.change_epoch",
        lambda html: Epoch.objects.filter(kind="community", object_id="belle2").exists(),
    ),
    "epochauth.session.revoke_sessions": (
        "epochauth.delete_session",
        lambda html: Session.objects.filter(revoked_at__isnull=False).exists(),
    ),
    "epochauth.issuer.enable": (
        "epochauth.change_issuer",
        lambda html: Issuer.objects.filter(enabled=True).count() == 2,
    ),
    "epochauth.issuer.disable": (
        "epochauth.change_issuer",
        lambda html: not Issuer.objects.filter(enabled=True).exists(),
    ),
    "epochauth.issuer.refresh_keys": (
        "epochauth.change_issuer",
        lambda html: "Could not fetch the keys of" in html,
    ),
    "oauth2_provider.accesstoken.revoke_tokens": (
        "oauth2_provider.delete_accesstoken",
        lambda html: not AccessToken.objects.exists(),
    ),
    "oauth2_provider.refreshtoken.revoke_tokens": (
        "oauth2_provider.delete_refreshtoken",
        lambda html: RefreshToken.objects.filter(revoked__isnull=False).exists(),
    ),
    "epochauth_oauth.logoutdelivery.retry": (
        "epochauth_oauth.retry_logoutdelivery",
        lambda html: LogoutDelivery.objects.filter(state="pending", attempts=0).exists(),
    ),
    "epochauth_oauth.ssfevent.retry": (
        "epochauth_oauth.retry_ssfevent",
        lambda html: SSFEvent.objects.filter(state="pending", attempts=0).exists(),
    ),
    "epochauth_tokenmanager.upstreamgrant.revoke": (
        "epochauth_tokenmanager.delete_upstreamgrant",
        lambda html: not UpstreamGrant.objects.filter(ended_at__isnull=True).exists(),
    ),
    "epochauth_tokenmanager.upstreamgrant.retry": (
        "epochauth_tokenmanager.delete_upstreamgrant",
        lambda html: UpstreamGrant.objects.filter(revoke_attempts=1).exists(),
    ),
}


def state() -> dict[str, list[dict[str, Any]]]:
    """Every row of every model with an admin: what a refused action must leave as it was."""
    return {
        model._meta.label: list(model._default_manager.order_by("pk").values())
        for model in admin.site._registry
    }


def staff_with(permissions: Any, username: str = "staff") -> Client:
    staff = get_user_model().objects.create_user(username, password="pw", is_staff=True)
    staff.user_permissions.set(permissions)
    browser = Client()
    browser.force_login(staff)
    return browser


def permission(dotted: str) -> Permission:
    app_label, codename = dotted.split(".")
    return Permission.objects.get(content_type__app_label=app_label, codename=codename)


def changelist(model: type[Model]) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def post_action(browser: Client, model: type[Model], name: str) -> str:
    """POST the action on every row (confirmed, for actions that ask first); the page it ends on."""
    rows = [str(pk) for pk in model._default_manager.values_list("pk", flat=True)]
    data = {"action": name, "_selected_action": rows, "post": "yes"}
    response = browser.post(changelist(model), data, follow=True)
    assert response.status_code in (200, 403)
    return response.content.decode()


def offered(browser: Client, model: type[Model]) -> set[str]:
    """The actions the changelist offers (none when the page is refused)."""
    response = browser.get(changelist(model))
    form = response.context["action_form"] if response.status_code == 200 else None
    return {name for name, _ in form.fields["action"].choices if name} if form else set()


# -- the declarations -----------------------------------------------------------------------------


@pytest.mark.parametrize("pair", OURS, ids=action_id)
def test_every_action_declares_the_permission_it_needs(pair):
    """Django's own delete_selected checks the delete permission; every other action says what it
    needs, with a ``has_<name>_permission`` method to ask."""
    model, name = pair
    model_admin = admin.site._registry[model]
    func = model_admin.get_actions(superuser_request())[name][0]
    needs = getattr(func, "allowed_permissions", ())
    assert needs, f"{action_id(pair)} declares no permissions"
    for needed in needs:
        assert callable(getattr(model_admin, f"has_{needed}_permission", None))


def test_every_action_has_a_row_in_the_table():
    assert sorted(map(action_id, OURS)) == sorted(REQUIRED)


# -- who may run them -----------------------------------------------------------------------------


def every_view_permission() -> Any:
    return Permission.objects.filter(codename__startswith="view_")


@pytest.mark.parametrize("pair", ACTIONS, ids=action_id)
def test_staff_with_view_permissions_only_cannot_run_any_action(world, pair):
    model, name = pair
    browser = staff_with(every_view_permission())
    before = state()
    html = post_action(browser, model, name)
    assert state() == before
    if action_id(pair) in REQUIRED:
        assert not REQUIRED[action_id(pair)][1](html)
    assert name not in offered(browser, model)


@pytest.mark.parametrize("pair", OURS, ids=action_id)
def test_every_other_permission_is_not_enough(world, pair):
    model, name = pair
    needed = permission(REQUIRED[action_id(pair)][0])
    browser = staff_with(Permission.objects.exclude(pk=needed.pk))
    before = state()
    post_action(browser, model, name)
    assert state() == before
    assert name not in offered(browser, model)


@pytest.mark.parametrize("pair", OURS, ids=action_id)
def test_the_declared_permission_is_enough(world, pair):
    model, name = pair
    needed, ran = REQUIRED[action_id(pair)]
    browser = staff_with([*every_view_permission(), permission(needed)])
    assert name in offered(browser, model)
    assert ran(post_action(browser, model, name))


@pytest.mark.parametrize("pair", OURS, ids=action_id)
def test_a_superuser_runs_every_action(world, pair):
    model, name = pair
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    browser = Client()
    browser.force_login(root)
    _, ran = REQUIRED[action_id(pair)]
    assert ran(post_action(browser, model, name))


# -- the buttons of the change pages --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["user", "group"])
def test_the_revoke_button_needs_change_epoch_and_a_look_at_the_object(world, kind):
    """As POST /auth/revoke/: epochauth.change_epoch; and, as every admin page of an object, the
    permission to see it."""
    target = (
        get_user_model().objects.get(username="alice") if kind == "user" else Group.objects.get()
    )
    url = f"/admin/auth/{kind}/{target.pk}/revoke-tokens/"
    blind = staff_with([permission("epochauth.change_epoch")], "blind")
    assert blind.post(url, {"reason": "x"}).status_code == 403
    looking = staff_with([permission(f"auth.view_{kind}")], "looking")
    assert looking.post(url, {"reason": "x"}).status_code == 403
    assert not Epoch.objects.exists()
    staff = get_user_model().objects.get(username="looking")
    staff.user_permissions.add(permission("epochauth.change_epoch"))
    looking.force_login(get_user_model().objects.get(pk=staff.pk))
    assert looking.get(url).status_code == 403
    assert looking.post(url, {"reason": "x"}).status_code == 302
    assert Epoch.objects.filter(kind=kind, object_id=str(target.pk)).exists()


def test_the_buttons_refuse_a_post_without_the_csrf_token(world):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(root)
    alice = get_user_model().objects.get(username="alice")
    before = state()
    for url in (
        f"/admin/auth/user/{alice.pk}/revoke-tokens/",
        f"/admin/auth/group/{Group.objects.get().pk}/revoke-tokens/",
        f"/admin/epochauth/session/{Session.objects.get().pk}/end/",
    ):
        assert browser.post(url, {"reason": "x"}).status_code == 403, url
    rows = [str(pk) for pk in Issuer.objects.values_list("pk", flat=True)]
    data = {"action": "disable", "_selected_action": rows}
    assert browser.post(changelist(Issuer), data).status_code == 403
    assert state() == before


def test_view_only_staff_cannot_set_or_clear_an_applications_dpop_policy():
    """The DPoP policy inline of an application: view permissions show it, and a POST of the change
    form (with the inline's fields) is refused and changes nothing."""
    from oauth2_provider.models import get_application_model

    from epochauth.oauth.models import DPoPPolicy

    application = get_application_model().objects.create(
        name="portal",
        client_id="portal",
        client_type="public",
        authorization_grant_type="urn:ietf:params:oauth:grant-type:device_code",
    )
    browser = staff_with(every_view_permission())
    url = reverse("admin:oauth2_provider_application_change", args=[application.pk])
    assert browser.get(url).status_code == 200
    form = {
        "name": "portal",
        "client_id": "portal",
        "client_type": "public",
        "authorization_grant_type": "urn:ietf:params:oauth:grant-type:device_code",
        "epochauth_dpop-TOTAL_FORMS": "1",
        "epochauth_dpop-INITIAL_FORMS": "0",
        "epochauth_dpop-0-required": "on",
    }
    assert browser.post(url, form).status_code == 403
    assert not DPoPPolicy.objects.exists()


def test_view_only_staff_cannot_pause_or_widen_a_shared_signals_stream(world):
    """A stream's change form: view permissions show it; a POST that would disable it or widen it
    to every user is refused and changes nothing; the change permission is enough."""
    stream = SSFStream.objects.get()
    url = reverse("admin:epochauth_oauth_ssfstream_change", args=[stream.pk])
    form = {
        "status": "disabled",
        "status_reason": "x",
        "all_subjects": "on",
        "subjects-TOTAL_FORMS": "0",
        "subjects-INITIAL_FORMS": "0",
    }
    browser = staff_with(every_view_permission())
    assert browser.get(url).status_code == 200
    assert "rx-secret" not in browser.get(url).content.decode()  # the receiver's header
    assert browser.post(url, form).status_code == 403
    assert SSFStream.objects.filter(status="enabled", all_subjects=False).exists()
    editor = staff_with([permission("epochauth_oauth.change_ssfstream")], "editor")
    assert editor.post(url, form).status_code == 302
    assert SSFStream.objects.filter(status="disabled", all_subjects=True).exists()
