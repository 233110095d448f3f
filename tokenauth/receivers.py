"""Model events that must revoke tokens: a user deactivated or deleted, a group deleted."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models.signals import post_save, pre_delete, pre_save
from django.dispatch import receiver

from .models import Epoch
from .revocation import bump_epoch

User = get_user_model()


@receiver(pre_save, sender=User, dispatch_uid="tokenauth_user_pre_save")
def remember_active_flag(sender: Any, instance: Any, **kwargs: Any) -> None:
    if instance.pk is not None and hasattr(instance, "is_active"):
        was = sender._default_manager.filter(pk=instance.pk).values_list("is_active", flat=True).first()
        instance._tokenauth_was_active = was


@receiver(post_save, sender=User, dispatch_uid="tokenauth_user_post_save")
def revoke_deactivated_user(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and getattr(instance, "_tokenauth_was_active", False) and not instance.is_active:
        bump_epoch(Epoch.Kind.USER, str(instance.pk), reason="user deactivated")


@receiver(pre_delete, sender=User, dispatch_uid="tokenauth_user_pre_delete")
def revoke_deleted_user(sender: Any, instance: Any, **kwargs: Any) -> None:
    bump_epoch(Epoch.Kind.USER, str(instance.pk), reason="user deleted")


@receiver(pre_delete, sender=Group, dispatch_uid="tokenauth_group_pre_delete")
def revoke_deleted_group(sender: Any, instance: Any, **kwargs: Any) -> None:
    bump_epoch(Epoch.Kind.GROUP, str(instance.pk), reason="group deleted")
