"""simplejwt's refresh view for the migration window: mount it at the site's simplejwt refresh URL instead
of simplejwt's own, so that clients not yet switched keep refreshing there, with epochauth's revocation."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework_simplejwt import serializers, views
from rest_framework_simplejwt.exceptions import TokenError

from epochauth import exceptions

from .tokens import header_types, refreshed_access_token


class TokenRefreshSerializer(serializers.TokenRefreshSerializer):
    """``{"refresh"}`` → ``{"access"}``, refusing a refresh token that was revoked or exchanged; the
    refresh token does not rotate (its one exchange, at ``/auth/token/refresh/``, ends it)."""

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        try:
            return {"access": refreshed_access_token(attrs["refresh"])}
        except exceptions.InvalidToken as exc:
            # simplejwt's view answers it as simplejwt would: 401, code "token_not_valid".
            raise TokenError(exc.description) from None


class TokenRefreshView(views.TokenRefreshView):
    """simplejwt's ``TokenRefreshView`` held to epochauth's revocation: the access tokens it mints name
    their refresh token, and end with it (logout-all, an admin bump, a password change, its exchange)."""

    serializer_class = TokenRefreshSerializer

    def get_authenticate_header(self, request: Request) -> str:
        """simplejwt's challenge, its first ``AUTH_HEADER_TYPES`` read now, not copied at import."""
        return f'{header_types()[0]} realm="{self.www_authenticate_realm}"'
