"""A new password, on any path that saves the user, ends every token and session of that user."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordChangeForm, SetPasswordForm
from django.test import Client

from epochauth.models import AuditEvent, Epoch
from tests.helpers import login, make_user

pytestmark = pytest.mark.django_db


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def refresh(client: Any, refresh_token: str) -> int:
    body = {"refresh_token": refresh_token}
    return client.post("/auth/token/refresh/", body, content_type="application/json").status_code


def assert_revoked(client: Any, tokens: dict[str, Any]) -> None:
    assert hello(client, tokens["access_token"]) == 401
    assert refresh(client, tokens["refresh_token"]) == 400


def change_with_set_password(user: Any) -> None:
    user.set_password("new-pw")
    user.save()


def change_with_password_change_form(user: Any) -> None:
    data = {
        "old_password": "pw",
        "new_password1": "a-new-pw-2026!",
        "new_password2": "a-new-pw-2026!",
    }
    form = PasswordChangeForm(user, data)
    assert form.is_valid(), form.errors
    form.save()


def change_with_reset_form(user: Any) -> None:
    form = SetPasswordForm(
        user, {"new_password1": "a-new-pw-2026!", "new_password2": "a-new-pw-2026!"}
    )
    assert form.is_valid(), form.errors
    form.save()


@pytest.mark.parametrize(
    "change", [change_with_set_password, change_with_password_change_form, change_with_reset_form]
)
def test_a_new_password_ends_every_token_and_session(client, change):
    alice = make_user("alice")
    bob_tokens = login(client, make_user("bob").get_username())
    first, second = login(client, "alice"), login(client, "alice")

    change(get_user_model().objects.get(pk=alice.pk))

    assert_revoked(client, first)
    assert_revoked(client, second)
    assert hello(client, bob_tokens["access_token"]) == 200
    event = AuditEvent.objects.get(action="epoch_bumped")
    assert (event.user_id, event.detail["reason"]) == (alice.pk, "password change")
    # the login that follows works at once
    password = "new-pw" if change is change_with_set_password else "a-new-pw-2026!"
    assert hello(client, login(client, "alice", password)["access_token"]) == 200


def test_saving_without_a_new_password_revokes_nothing(client):
    alice = make_user("alice")
    tokens = login(client, "alice")
    alice = get_user_model().objects.get(pk=alice.pk)
    alice.first_name = "Alice"
    alice.save()
    alice.password = get_user_model().objects.get(pk=alice.pk).password  # the same hash again
    alice.save()
    get_user_model().objects.get(pk=alice.pk).save()
    assert hello(client, tokens["access_token"]) == 200
    assert refresh(client, tokens["refresh_token"]) == 200
    assert not Epoch.objects.exists()


def test_revoke_on_password_change_can_be_switched_off(client, settings):
    alice = make_user("alice")
    tokens = login(client, "alice")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "REVOKE_ON_PASSWORD_CHANGE": False}
    change_with_set_password(alice)
    assert hello(client, tokens["access_token"]) == 200
    assert not Epoch.objects.exists()


def test_the_admin_password_form_ends_the_users_tokens_and_keeps_the_admins_own_session(client):
    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    alice = make_user("alice")
    alices, roots = login(client, "alice"), login(client, "root")
    admin = Client()
    admin.force_login(root)
    elsewhere = Client()  # root's second browser
    elsewhere.force_login(root)
    new = {"password1": "a-new-pw-2026!", "password2": "a-new-pw-2026!"}

    response = admin.post(f"/admin/auth/user/{alice.pk}/password/", new)
    assert response.status_code == 302, response.content
    assert_revoked(client, alices)
    assert hello(client, roots["access_token"]) == 200

    response = admin.post(f"/admin/auth/user/{root.pk}/password/", new)
    assert response.status_code == 302, response.content
    assert_revoked(client, roots)
    # Django keeps the session the password was changed in (update_session_auth_hash); the other ends.
    assert admin.get("/admin/").status_code == 200
    assert elsewhere.get("/admin/").status_code == 302


def test_a_first_password_or_a_save_of_other_fields_revokes_nothing(
    client, django_assert_num_queries
):
    user = get_user_model().objects.create(username="carol")  # no password at all: ""
    user.set_password("pw")
    user.save()
    assert not Epoch.objects.exists()
    tokens = login(client, "carol")
    user.set_password("other-pw")
    with django_assert_num_queries(1):  # the UPDATE only: no look at the stored row
        user.save(update_fields=["last_login"])
    assert hello(client, tokens["access_token"]) == 200
    user.save()
    assert hello(client, tokens["access_token"]) == 401
