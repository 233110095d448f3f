"""Model events that must revoke tokens or drop cached state.

A user deactivated or deleted, a group or an external identity deleted: their tokens stop. Issuer
rows and identity mappings are cached in every process: a change is announced so caches reload.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete, pre_save
from django.dispatch import receiver

from .issuers import db_issuers
from .middleware import stamp_login
from .models import Epoch, Identity, Issuer, identity_digest
from .provisioning import forget
from .revocation import bump_epoch

User = get_user_model()


@receiver(pre_save, sender=User, dispatch_uid="tokenauth_user_pre_save")
def remember_active_flag(sender: Any, instance: Any, **kwargs: Any) -> None:
    """Keep what the row said before the save: (is_active, username), or None for a new user."""
    if instance.pk is not None and hasattr(instance, "is_active"):
        instance._tokenauth_was = (
            sender._default_manager.filter(pk=instance.pk)
            .values_list("is_active", sender.USERNAME_FIELD)
            .first()
        )


@receiver(post_save, sender=User, dispatch_uid="tokenauth_user_post_save")
def revoke_deactivated_user(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    was = getattr(instance, "_tokenauth_was", None)
    if created or was is None or was == (instance.is_active, instance.get_username()):
        return
    if was[0] and not instance.is_active:
        bump_epoch(Epoch.Kind.USER, str(instance.pk), reason="user deactivated")
    forget_identities_of(instance)  # external identities answer from a cached copy of the user


@receiver(m2m_changed, sender=User.groups.through, dispatch_uid="tokenauth_user_groups_changed")
def groups_changed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    if action.startswith("post_") and isinstance(instance, User):
        forget_identities_of(instance)


def forget_identities_of(user: Any) -> None:
    """External identities answer from a cached copy of the user; drop it so the change shows."""
    for issuer, subject in Identity.objects.filter(user=user).values_list("issuer", "subject"):
        forget(issuer, subject)


@receiver(pre_delete, sender=User, dispatch_uid="tokenauth_user_pre_delete")
def revoke_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    bump_epoch(Epoch.Kind.USER, str(instance.pk), reason="user deleted")


@receiver(pre_delete, sender=Group, dispatch_uid="tokenauth_group_pre_delete")
def revoke_deleted_group(sender: Any, instance: Any, **kwargs: Any) -> None:
    bump_epoch(Epoch.Kind.GROUP, str(instance.pk), reason="group deleted")


@receiver(pre_delete, sender=Identity, dispatch_uid="tokenauth_identity_pre_delete")
def revoke_deleted_identity(sender: Any, instance: Identity, **kwargs: Any) -> None:
    """Tokens of a deleted identity stop, even if the issuer provisions it again later."""
    bump_epoch(
        Epoch.Kind.IDENTITY, identity_digest(instance.issuer, instance.subject), reason="identity deleted"
    )


@receiver(post_save, sender=Identity, dispatch_uid="tokenauth_identity_saved")
@receiver(post_delete, sender=Identity, dispatch_uid="tokenauth_identity_deleted")
def identity_changed(sender: Any, instance: Identity, **kwargs: Any) -> None:
    forget(instance.issuer, instance.subject)


@receiver(post_save, sender=Issuer, dispatch_uid="tokenauth_issuer_saved")
@receiver(post_delete, sender=Issuer, dispatch_uid="tokenauth_issuer_deleted")
@receiver(m2m_changed, sender=Issuer.default_groups.through, dispatch_uid="tokenauth_issuer_groups")
def issuers_changed(sender: Any, **kwargs: Any) -> None:
    db_issuers.changed()


@receiver(user_logged_in, dispatch_uid="tokenauth_stamp_login")
def stamp_session_login(sender: Any, request: Any, **kwargs: Any) -> None:
    """EpochSessionMiddleware ends sessions that began before the user's next epoch bump."""
    stamp_login(request)
