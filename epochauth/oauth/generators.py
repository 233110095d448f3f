"""DOT's access-token generator: every access token DOT issues is one of our RFC 9068 JWTs."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from .. import profiles, tokens, urns
from . import proofs, revocation
from .scopes import selected_group

# Grants whose token response starts a refresh-token family with a new id (client credentials and
# token exchange issue no refresh token; an authorization code's family is named by the code).
FAMILY_STARTING_GRANTS = frozenset({urns.DEVICE_CODE, "password"})


def token_family(request: Any) -> uuid.UUID | None:
    """The refresh-token family this access token belongs to: the refreshed token's, or a new one.

    The id goes into the token, so that revoking the family denies every access token it ever had
    with one denylist entry (DOT deletes an access token's row, and with it its ``jti``, at rotation).
    A new id is left on the request for the validator to give the family's first refresh token.
    """
    if request.grant_type == "refresh_token":
        return request.refresh_token_instance.token_family
    if request.grant_type == "authorization_code":
        family = revocation.code_family(request.code)
    elif request.grant_type in FAMILY_STARTING_GRANTS:
        family = uuid.uuid4()
    else:
        return None
    request.epochauth_family = family
    return family


def access_token(request: Any) -> str:
    """Mint for ``request.user`` with ``request.scopes``; oauthlib has set ``expires_in`` already.

    The group selection was checked by the validator before token creation; it selects the group here.
    """
    scopes = list(request.scopes or [])
    group, _ = selected_group(request.user, scopes)
    extra: dict[str, Any] = {"client_id": request.client.client_id}
    if request.grant_type == "client_credentials":
        # Its subject is the application's owner, who signed in nowhere: see get_userinfo_claims.
        extra[tokens.CLAIM_GRANT_TYPE] = request.grant_type
        if profiles.HOST_AUTH in scopes:
            # WLCG Common JWT Profile 1.3 section 2.2.4: the subject is the host's client id
            # (host:<fqdn>, checked by the validator); the owner's standing still ends the token.
            extra["sub"] = request.client.client_id
            extra[tokens.CLAIM_OWNER] = str(request.user.pk)
    jkt = proofs.key_of(request)
    if jkt is not None:
        # RFC 9449 section 6: bound to the key of the request's proof.
        extra["cnf"] = {"jkt": jkt}
    family = token_family(request)
    if family is not None:
        extra[tokens.CLAIM_TOKEN_FAMILY] = family.hex
    issued = tokens.mint_access_token(
        request.user,
        scope=" ".join(scopes),
        group=group,
        lifetime=timedelta(seconds=request.expires_in),
        extra_claims=extra,
        aud=getattr(request, "epochauth_aud", None),
        # The validator's choice (check_token_request): vo:<slug>, the default or the only one.
        community=getattr(request, "epochauth_community", None),
    )
    request.epochauth_claims = issued.claims
    return issued.token
