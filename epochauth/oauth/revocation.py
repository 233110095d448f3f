"""DOT revokes by deleting rows; our access tokens are JWTs, so their ids go on the denylist too.

An access token is denied by its ``jti`` (the ``token`` column of its DOT row) and, when it belongs
to a refresh-token family, by the family id it carries: DOT deletes an access token's row when its
refresh token rotates, so once a family is revoked (reuse protection, RFC 7009, the admin) only the
family id still names the family's earlier access tokens.

The family an authorization code starts is named by the code, so that a replay of the code can end it
(RFC 6749 section 4.1.2) although DOT deleted the code's grant at the first exchange.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from django.utils.crypto import salted_hmac
from oauth2_provider.models import get_access_token_model, get_refresh_token_model

from epochauth import conf, revocation

from ..ssf import transmitter
from . import backchannel


def deny(access_tokens: QuerySet) -> None:
    """Deny the JWT of each DOT access-token row (its ``token`` column holds the ``jti``)."""
    for jti, expires in access_tokens.values_list("token", "expires"):
        if jti:
            revocation.revoke_id(
                jti, expires + conf.epochauth_settings.LEEWAY, reason="oauth revocation"
            )


def issued_with(refresh_tokens: QuerySet) -> QuerySet:
    """The access-token rows currently bound to these refresh tokens."""
    return get_access_token_model().objects.filter(Q(refresh_token__in=refresh_tokens))


def families(refresh_tokens: QuerySet) -> set[uuid.UUID]:
    """The families of these refresh-token rows; read them before DOT revokes the rows."""
    return set(refresh_tokens.exclude(token_family=None).values_list("token_family", flat=True))


def deny_ended_families(candidates: Iterable[uuid.UUID]) -> None:
    """Deny the access tokens of each family that has no usable refresh token left, and queue a
    back-channel logout for the relying party that held it and Shared Signals events.

    A family whose refresh token merely rotated keeps a live member and is left alone; a live member
    without an access token is an orphan that DOT refuses, so it does not count. Nothing of an ended
    family can mint again, so the denial lasts one access-token lifetime.
    """
    candidates = set(candidates)
    if not candidates:
        return
    live = get_refresh_token_model().objects.filter(
        token_family__in=candidates, revoked__isnull=True, access_token__isnull=False
    )
    until = (
        timezone.now()
        + conf.epochauth_settings.ACCESS_TOKEN_LIFETIME
        + conf.epochauth_settings.LEEWAY
    )
    ended = candidates - set(live.values_list("token_family", flat=True))
    for family in ended:
        revocation.revoke_id(family.hex, until, reason="oauth token family revoked")
    backchannel.tell_families(ended)
    transmitter.families_ended(ended)


@contextmanager
def ending(access_tokens: QuerySet, refresh_tokens: QuerySet) -> Iterator[None]:
    """Around DOT revoking these rows, in one transaction: deny the access tokens' JWTs before, and
    after, the families that the block left without a usable refresh token (and tell their relying
    parties)."""
    with transaction.atomic():
        affected = families(refresh_tokens)
        deny(access_tokens)
        yield
        deny_ended_families(affected)


def code_family(code: str) -> uuid.UUID:
    """The id of the family an authorization code starts; keyed by ``SECRET_KEY``, so that neither a
    family id seen in a token's claims nor a code tells anything of the other."""
    return uuid.UUID(
        bytes=salted_hmac("epochauth.oauth.code_family", code, algorithm="sha256").digest()[:16]
    )


def end_family(family: uuid.UUID, application: Any = None) -> None:
    """Revoke what one application (any, by default) holds of a family: its live refresh token and
    every access token."""
    refresh_tokens = get_refresh_token_model().objects.filter(token_family=family)
    if application is not None:
        refresh_tokens = refresh_tokens.filter(application=application)
    with ending(issued_with(refresh_tokens), refresh_tokens):
        for refresh_token in refresh_tokens.filter(revoked__isnull=True):
            refresh_token.revoke()
