"""DOT's access-token generator: every access token DOT issues is one of our RFC 9068 JWTs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tokenauth.conf import tokenauth_settings
from tokenauth.tokens import mint_access_token

from .scopes import selected_group


def access_token(request: Any) -> str:
    """Mint for ``request.user`` with ``request.scopes``; oauthlib has set ``expires_in`` already.

    The ``g:`` scope was checked by the validator before token creation; it selects the group here.
    """
    scopes = list(request.scopes or [])
    group, _ = selected_group(request.user, scopes)
    extra: dict[str, Any] = {"client_id": request.client.client_id}
    if not tokenauth_settings.AUDIENCE:
        extra["aud"] = tokenauth_settings.ISSUER  # RFC 9068 requires aud; we are the resource server
    issued = mint_access_token(
        request.user,
        scope=" ".join(scopes),
        group=group,
        lifetime=timedelta(seconds=request.expires_in),
        extra_claims=extra,
    )
    request.tokenauth_claims = issued.claims
    return issued.token
