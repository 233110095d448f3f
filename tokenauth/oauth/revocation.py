"""DOT revokes by deleting rows; our access tokens are JWTs, so their ids go on the denylist too."""

from __future__ import annotations

from django.db.models import Q, QuerySet
from oauth2_provider.models import get_access_token_model

from tokenauth.conf import tokenauth_settings
from tokenauth.revocation import revoke_id


def deny(access_tokens: QuerySet) -> None:
    """Deny the JWT of each DOT access-token row (its ``token`` column holds the ``jti``)."""
    for jti, expires in access_tokens.values_list("token", "expires"):
        if jti:
            revoke_id(jti, expires + tokenauth_settings.LEEWAY, reason="oauth revocation")


def issued_with(refresh_tokens: QuerySet) -> QuerySet:
    """The access-token rows currently bound to these refresh tokens."""
    return get_access_token_model().objects.filter(Q(refresh_token__in=refresh_tokens))
