"""DRF authentication: ``Authorization: Bearer <JWT>`` verified without a database query."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from .conf import tokenauth_settings
from .exceptions import InvalidToken, ServiceUnavailable
from .revocation import RevocationUnavailable, check_local_claims
from .tokens import CLAIM_GROUPS, CLAIM_USERNAME, AccessToken, decode_local
from .users import TokenUser

ERROR_ATTRIBUTE = "_tokenauth_error"


def authenticate_token(token: str) -> tuple[Any, AccessToken]:
    """Verify a bearer token and return ``(user, AccessToken)``; raises :class:`InvalidToken`."""
    if len(token) > tokenauth_settings.MAX_TOKEN_BYTES:
        raise InvalidToken("The access token is too large")
    if not token.isascii():  # a JWT is base64url and dots; PyJWT would fail encoding anything else
        raise InvalidToken("The access token is malformed")
    if not tokenauth_settings.LOCAL_TOKENS:
        raise InvalidToken("The access token's issuer is not accepted")
    claims = decode_local(token)
    user_id = claims["sub"]
    check_local_claims(claims, user_id)
    try:
        pk = get_user_model()._meta.pk.to_python(user_id)
    except ValidationError:
        raise InvalidToken("The access token's subject is invalid") from None
    if tokenauth_settings.LOAD_USER:
        user = get_user_model()._default_manager.filter(pk=pk, is_active=True).first()
        if user is None:
            raise InvalidToken("The user is inactive or deleted")
    else:
        user = TokenUser(pk, claims.get(CLAIM_USERNAME, ""), claims.get(CLAIM_GROUPS, ()))
    return user, AccessToken(claims)


class BearerAuthentication(BaseAuthentication):
    """RFC 6750 bearer tokens: optional unless the view's permissions require a user.

    A bad token is a 401 whose ``WWW-Authenticate`` says why; when revocation state cannot be read
    at all, the request fails closed with 503.
    """

    keyword = "Bearer"
    realm = "api"

    def authenticate(self, request: Request) -> tuple[Any, AccessToken] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        try:
            return authenticate_token(token.strip())
        except InvalidToken as exc:
            setattr(request._request, ERROR_ATTRIBUTE, exc.description)
            raise exceptions.AuthenticationFailed(exc.description, code="invalid_token") from None
        except RevocationUnavailable:
            raise ServiceUnavailable() from None

    def authenticate_header(self, request: Request) -> str:
        error = getattr(request._request, ERROR_ATTRIBUTE, None)
        if error:
            return f'{self.keyword} realm="{self.realm}", error="invalid_token", error_description="{error}"'
        return f'{self.keyword} realm="{self.realm}"'
