"""What starts a grant: a browser login with the provider's refresh token, or our token exchange
of the provider's access token (which asks the provider for a grant of our own). Where a user's
access ends, so do their upstream grants: logout (browser or API), logout-all, any epoch bump of
the user (back-channel logout with ``sub`` is one) or of everyone, and a back-channel logout of the
provider session (``sid``) a browser login came from."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from .. import signals
from . import grants

#: The ends of an API session that are the user's logout, not housekeeping (a session limit, expiry).
LOGOUT_REASONS = frozenset({"logout", "backchannel_logout"})


@receiver(signals.upstream_tokens, dispatch_uid="epochauth_tokenmanager_keep")
def keep_refresh_token(
    sender: Any, user: Any, issuer: str, tokens: dict[str, Any], **kwargs: Any
) -> None:
    refresh_token = tokens.get("refresh_token")
    if isinstance(refresh_token, str) and refresh_token:
        scope = tokens.get("scope")
        grants.keep(user, issuer, refresh_token, scope if isinstance(scope, str) else "")


@receiver(signals.token_exchanged, dispatch_uid="epochauth_tokenmanager_exchange")
def keep_exchanged_grant(
    sender: Any, user: Any, issuer: str, subject_token: str, **kwargs: Any
) -> None:
    grants.keep_from_exchange(user, issuer, subject_token)


@receiver(signals.epoch_bumped, dispatch_uid="epochauth_tokenmanager_epoch")
def end_on_epoch(sender: Any, kind: str, object_id: str, reason: str = "", **kwargs: Any) -> None:
    if kind == "user":
        grants.end_grants([object_id], f"epoch: {reason}")
    elif kind == "global":
        grants.end_grants(None, f"global epoch: {reason}")


@receiver(signals.session_revoked, dispatch_uid="epochauth_tokenmanager_session")
def end_on_logout(sender: Any, session: Any, reason: str, **kwargs: Any) -> None:
    if reason in LOGOUT_REASONS:
        grants.end_grants([session.user_id], reason)


@receiver(signals.provider_logout, dispatch_uid="epochauth_tokenmanager_provider_logout")
def end_on_provider_logout(sender: Any, issuer: str, user_ids: list[Any], **kwargs: Any) -> None:
    """A back-channel logout by ``sid`` alone: the provider session the grant came from is over."""
    grants.end_grants(user_ids, "backchannel_logout", issuer=issuer)


@receiver(user_logged_out, dispatch_uid="epochauth_tokenmanager_browser_logout")
def end_on_browser_logout(sender: Any, user: Any = None, **kwargs: Any) -> None:
    if user is not None:
        grants.end_grants([user.pk], "browser logout")
