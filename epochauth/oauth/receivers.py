"""Signal receivers of the authorization server."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver
from oauth2_provider.models import get_access_token_model

from epochauth import signals
from epochauth.models import Epoch

from ..ssf import transmitter
from . import backchannel


@receiver(post_save, sender=get_access_token_model(), dispatch_uid="epochauth_oauth_jwt_checksum")
def keep_jwt_checksum(sender: Any, instance: Any, **kwargs: Any) -> None:
    """An access-token row must be found by the checksum of its JWT (RFC 7009 revocation, DOT's
    token view), not of the ``jti`` its ``token`` column holds; a save that derived it again from
    the ``jti`` is put right."""
    checksum = instance.__dict__.pop("jwt_checksum", None)
    if checksum is not None and instance.token_checksum != checksum:
        sender._default_manager.filter(pk=instance.pk).update(token_checksum=checksum)
        instance.token_checksum = checksum


@receiver(signals.epoch_bumping, dispatch_uid="epochauth_oauth_backchannel_logout")
def tell_relying_parties(sender: Any, kind: str, object_id: str, **kwargs: Any) -> None:
    """A user's epoch bump ends their sessions at our relying parties too: a logout token for each
    application holding one is queued in the bump's transaction, delivered after its commit."""
    if kind == Epoch.Kind.USER:
        backchannel.tell_user(object_id)


@receiver(signals.epoch_bumping, dispatch_uid="epochauth_ssf_user_epoch")
def tell_receivers_of_bump(
    sender: Any, kind: str, object_id: str, reason: str = "", **kwargs: Any
) -> None:
    """A user's epoch bump becomes Shared Signals events (``epochauth.ssf.transmitter``), queued
    in the bump's transaction."""
    if kind == Epoch.Kind.USER:
        transmitter.user_epoch_bumped(object_id, reason)


@receiver(signals.session_ending, dispatch_uid="epochauth_ssf_session_ending")
def tell_receivers_of_session(sender: Any, session: Any, reason: str, **kwargs: Any) -> None:
    """A session of our login that ends becomes a CAEP ``session-revoked``, queued in the
    transaction that ends it."""
    transmitter.session_ended(str(session.user_id), session.id.hex, reason)
