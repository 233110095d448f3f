"""Signal receivers of the authorization server."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver
from oauth2_provider.models import get_access_token_model


@receiver(post_save, sender=get_access_token_model(), dispatch_uid="epochauth_oauth_jwt_checksum")
def keep_jwt_checksum(sender: Any, instance: Any, **kwargs: Any) -> None:
    """An access-token row must be found by the checksum of its JWT (RFC 7009 revocation, DOT's
    token view), not of the ``jti`` its ``token`` column holds; a save that derived it again from
    the ``jti`` is put right."""
    checksum = instance.__dict__.pop("jwt_checksum", None)
    if checksum is not None and instance.token_checksum != checksum:
        sender._default_manager.filter(pk=instance.pk).update(token_checksum=checksum)
        instance.token_checksum = checksum
