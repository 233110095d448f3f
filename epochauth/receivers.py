"""Model events that must revoke tokens or drop cached state.

A user deactivated, deleted or given a new password, a group or an external identity deleted: their
tokens stop. Issuer
rows and identity mappings are cached in every process: a change is announced so caches reload.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver
from django.utils import timezone

from . import conf, issuers, middleware, models, provisioning, revocation, sessions

User = get_user_model()


@receiver(pre_save, sender=User, dispatch_uid="epochauth_user_pre_save")
def revoke_on_lost_access(sender: Any, instance: Any, raw: bool = False, **kwargs: Any) -> None:
    """A user deactivated or given a new password loses every token and session.

    The bump comes before the row is saved: one that cannot be published stops the save, and a save
    that fails after it has only revoked more, so no half-applied change is left. Keeps what the row
    said (username, is_active) for :func:`user_saved`.
    """
    active = hasattr(instance, "is_active")
    fields = [sender.USERNAME_FIELD, "password", *(["is_active"] if active else [])]
    update_fields = kwargs.get("update_fields")
    if (
        raw
        or instance.pk is None
        or (update_fields is not None and not set(fields) & set(update_fields))
    ):
        return  # e.g. the login's own save of last_login: no query
    was = sender._default_manager.filter(pk=instance.pk).values(*fields).first()
    instance._epochauth_was = was
    if was is None:
        return
    if active and was["is_active"] and not instance.is_active:
        reason = "user deactivated"
    elif _password_changed(was["password"], instance.password):
        reason = "password change"
    else:
        return
    revocation.bump_epoch(models.Epoch.Kind.USER, str(instance.pk), reason=reason)


def _password_changed(old: str, new: str) -> bool:
    """A new hash that is or replaces a usable password: one unusable marker for another (a provisioned
    user's ``set_unusable_password()``), or a first password for a user who had none, takes no access away."""
    if old == new or not conf.epochauth_settings.REVOKE_ON_PASSWORD_CHANGE:
        return False
    return _has_password(old) or _has_password(new) and bool(old)


def _has_password(encoded: str) -> bool:
    return bool(encoded) and is_password_usable(encoded)


@receiver(post_save, sender=User, dispatch_uid="epochauth_user_post_save")
def user_saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    was = getattr(instance, "_epochauth_was", None)
    if created or was is None:
        return
    if was[sender.USERNAME_FIELD] != instance.get_username() or was.get("is_active") != getattr(
        instance, "is_active", None
    ):
        forget_identities_of(instance)  # external identities answer from a cached copy of the user


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="epochauth_user_groups_changed")
def user_groups_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: set[Any] | None, **kwargs: Any
) -> None:
    """Leaving a group (``remove``/``clear``, from the user's side or the group's) takes it from the
    tokens minted before; recorded before the rows go, so a failure leaves the membership as it was.
    External identities answer from a cached copy of the user's groups: it is dropped."""
    if action not in ("pre_remove", "pre_clear", "post_add"):
        return
    if not reverse:
        users, leaving = (
            [instance],
            Group.objects.filter(pk__in=pk_set) if pk_set is not None else None,
        )
    else:  # group.user_set.remove(...) / .clear()
        members = (
            instance.user_set.all()
            if pk_set is None
            else User._default_manager.filter(pk__in=pk_set)
        )
        users, leaving = list(members), Group.objects.filter(pk=instance.pk)
    for user in users:
        if action == "post_add":
            joined_groups(user)
        else:
            leave_groups(user, leaving)
        forget_identities_of(user)


def leave_groups(user: Any, leaving: Any) -> None:
    """Record the groups ``user`` keeps when it leaves ``leaving`` (a Group queryset; None: all)."""
    kept = (
        user.groups.exclude(pk__in=leaving.values("pk"))
        if leaving is not None
        else Group.objects.none()
    )
    revocation.record_groups(
        str(user.pk), kept.values_list("name", flat=True), reason="left a group"
    )


def joined_groups(user: Any) -> None:
    """A group joined after one was left: the record lists it again (or a token minted in the same
    second as the leaving, whose ``iat`` is no later, would not confer it)."""
    revocation.record_groups(
        str(user.pk),
        user.groups.values_list("name", flat=True),
        reason="joined a group",
        only_update=True,
    )


def forget_identities_of(user: Any) -> None:
    """External identities answer from a cached copy of the user; drop it so the change shows."""
    for issuer, subject in models.Identity.objects.filter(user=user).values_list(
        "issuer", "subject"
    ):
        provisioning.forget(issuer, subject)


@receiver(pre_delete, sender=User, dispatch_uid="epochauth_user_pre_delete")
def revoke_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    revocation.bump_epoch(models.Epoch.Kind.USER, str(instance.pk), reason="user deleted")


@receiver(pre_delete, sender=models.Session, dispatch_uid="epochauth_session_pre_delete")
def end_deleted_session(sender: Any, instance: models.Session, **kwargs: Any) -> None:
    """A session row deleted by any means (a queryset, its user's deletion) ends like a logout: its
    access tokens are denied, ``session_revoked`` is sent and an audit event written. One expired so
    long ago that none of its tokens can be alive (``epochauth_purge``) just goes."""
    if (
        instance.revoked_at is None
        and instance.expires_at + sessions.access_token_margin() > timezone.now()
    ):
        sessions.end_session(instance, reason="deleted")


@receiver(pre_delete, sender=Group, dispatch_uid="epochauth_group_pre_delete")
def revoke_deleted_group(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Tokens that selected the group end; its members' other tokens no longer confer it."""
    revocation.bump_epoch(models.Epoch.Kind.GROUP, str(instance.pk), reason="group deleted")
    for user in instance.user_set.all():
        leave_groups(user, Group.objects.filter(pk=instance.pk))


@receiver(pre_delete, sender=models.Identity, dispatch_uid="epochauth_identity_pre_delete")
def revoke_deleted_identity(sender: Any, instance: models.Identity, **kwargs: Any) -> None:
    """Tokens of a deleted identity stop, even if the issuer provisions it again later."""
    revocation.bump_epoch(
        models.Epoch.Kind.IDENTITY,
        models.identity_digest(instance.issuer, instance.subject),
        reason="identity deleted",
    )


@receiver(post_save, sender=models.Identity, dispatch_uid="epochauth_identity_saved")
@receiver(post_delete, sender=models.Identity, dispatch_uid="epochauth_identity_deleted")
def identity_changed(sender: Any, instance: models.Identity, **kwargs: Any) -> None:
    provisioning.forget(instance.issuer, instance.subject)


@receiver(post_save, sender=models.Issuer, dispatch_uid="epochauth_issuer_saved")
@receiver(post_delete, sender=models.Issuer, dispatch_uid="epochauth_issuer_deleted")
@receiver(
    m2m_changed,
    sender=models.Issuer.default_groups.through,
    dispatch_uid="epochauth_issuer_groups",
)
def issuers_changed(sender: Any, **kwargs: Any) -> None:
    issuers.db_issuers.changed()


@receiver(user_logged_in, dispatch_uid="epochauth_stamp_login")
def stamp_session_login(sender: Any, request: Any, **kwargs: Any) -> None:
    """EpochSessionMiddleware ends sessions that began before the user's next epoch bump."""
    middleware.stamp_login(request)


@receiver(pre_delete, sender=models.CommunityMembership, dispatch_uid="epochauth_member_left")
def revoke_left_community(
    sender: Any, instance: models.CommunityMembership, **kwargs: Any
) -> None:
    """A user who leaves a community loses its tokens at once: the user's epoch (the user logs in
    again to the communities they kept)."""
    revocation.bump_epoch(
        models.Epoch.Kind.USER,
        str(instance.user_id),
        reason=f"left community {instance.community}",
    )


@receiver(pre_save, sender=models.CommunityMembership, dispatch_uid="epochauth_member_moved")
def revoke_moved_membership(
    sender: Any, instance: models.CommunityMembership, raw: bool = False, **kwargs: Any
) -> None:
    """A membership changed to another community is the old one left."""
    old = _old_community(sender, instance, raw)
    if old is not None:
        revoke_left_community(sender, sender(user_id=instance.user_id, community=old))


@receiver(pre_save, sender=models.CommunityGroup, dispatch_uid="epochauth_group_moved")
def revoke_moved_group(
    sender: Any, instance: models.CommunityGroup, raw: bool = False, **kwargs: Any
) -> None:
    """A group moved to another community: the tokens that selected it in the old one end."""
    if _old_community(sender, instance, raw) is not None:
        revoke_community_group(sender, instance)


@receiver(pre_delete, sender=models.CommunityGroup, dispatch_uid="epochauth_group_untied")
def revoke_community_group(sender: Any, instance: models.CommunityGroup, **kwargs: Any) -> None:
    revocation.bump_epoch(
        models.Epoch.Kind.GROUP, str(instance.group_id), reason="group's community changed"
    )


def _old_community(sender: Any, instance: Any, raw: bool) -> str | None:
    """The community a saved row had before, when this save changes it."""
    if raw or instance.pk is None:
        return None
    old = sender.objects.filter(pk=instance.pk).values_list("community", flat=True).first()
    return old if old is not None and old != instance.community else None
