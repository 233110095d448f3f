"""Errors with texts that are safe to show a client: they never contain the token."""

from __future__ import annotations

from rest_framework import exceptions, status

#: The ``realm`` of our ``WWW-Authenticate`` challenges (RFC 6750 section 3), the 401's and the 403's.
REALM = "api"


class InvalidToken(Exception):
    """A bearer token that must be refused; ``description`` goes into ``WWW-Authenticate``."""

    def __init__(self, description: str = "The access token is invalid") -> None:
        super().__init__(description)
        self.description = description


class ServiceUnavailable(exceptions.APIException):
    """Revocation state could not be read: fail closed."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Authentication is temporarily unavailable, try again later."
    default_code = "temporarily_unavailable"
    #: Seconds for ``Retry-After`` (DRF's exception handler sends it for any exception with ``wait``).
    wait = 5


class InsufficientScope(exceptions.PermissionDenied):
    """403 with the RFC 6750 ``insufficient_scope`` challenge."""

    default_code = "insufficient_scope"

    def __init__(self, scopes: list[str] | tuple[str, ...]) -> None:
        wanted = " ".join(scopes)
        super().__init__(f"This request requires the scope: {wanted}")
        self.auth_header = f'Bearer realm="{REALM}", error="insufficient_scope", scope="{wanted}"'


class OAuthError(exceptions.APIException):
    """An RFC 6749 section 5.2 error body: ``{"error": ..., "error_description": ...}``."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(self, error: str, description: str, status_code: int | None = None) -> None:
        super().__init__({"error": error, "error_description": description}, code=error)
        if status_code is not None:
            self.status_code = status_code
