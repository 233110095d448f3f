"""Errors with texts that are safe to show a client: they never contain the token."""

from __future__ import annotations

from django.utils import translation
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions, status

from . import scopes

#: The ``realm`` of our ``WWW-Authenticate`` challenges (RFC 6750 section 3), the 401's and the 403's.
REALM = "api"


class InvalidToken(Exception):
    """A bearer token that must be refused.

    ``description`` is lazy: the response body shows it in the request's language, while
    :attr:`header_description` stays English for ``WWW-Authenticate``, whose values are ASCII
    (RFC 6750 section 3).
    """

    #: The ``error`` of the challenge (RFC 6750 section 3.1, RFC 9449 section 7.1).
    error = "invalid_token"

    def __init__(self, description: str | Promise | None = None) -> None:
        if description is None:
            description = _("The access token is invalid")
        super().__init__(description)
        self.description = description

    @property
    def header_description(self) -> str:
        # No active translation: the msgid, which is the English text.
        with translation.override(None):
            return str(self.description)


class ProofRequired(InvalidToken):
    """A token sent as ``Bearer`` that must come with a DPoP proof: it is bound to a key (RFC 9449
    section 7.2), or the site takes no bearer tokens (``DPOP_REQUIRED``); the challenge is DPoP's."""

    def __init__(self) -> None:
        super().__init__(_("The access token must be sent with a DPoP proof"))


class InvalidProof(InvalidToken):
    """A DPoP proof that must be refused (RFC 9449 section 4.3): a 401 at a resource server, a 400 at
    a token endpoint, both with ``invalid_dpop_proof``."""

    error = "invalid_dpop_proof"


class NonceRequired(InvalidProof):
    """A DPoP proof without the server's current nonce (RFC 9449 sections 8 and 9); the response
    carries the nonce to use (``epochauth.dpop.NonceMiddleware``, or the token endpoint itself)."""

    error = "use_dpop_nonce"

    def __init__(self) -> None:
        super().__init__(_("The DPoP proof must carry the server's nonce"))


class ServiceUnavailable(exceptions.APIException):
    """Revocation state could not be read: fail closed."""

    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("Authentication is temporarily unavailable, try again later.")
    default_code = "temporarily_unavailable"
    #: Seconds for ``Retry-After`` (DRF's exception handler sends it for any exception with ``wait``).
    wait = 5


class InsufficientScope(exceptions.PermissionDenied):
    """403 with the RFC 6750 ``insufficient_scope`` challenge."""

    default_code = "insufficient_scope"

    def __init__(self, names: list[str] | tuple[str, ...]) -> None:
        wanted = " ".join(names)
        super().__init__(_("This request requires the scope: %(scope)s") % {"scope": wanted})
        self.auth_header = f'Bearer realm="{REALM}", error="insufficient_scope"'
        # A name that is no scope-token (a path a storage system passed, with a quote or a line
        # break) would break the header, or make it a 500: the challenge then names no scope.
        if all(scopes.is_scope_token(name) for name in names):
            self.auth_header += f', scope="{wanted}"'


class OAuthError(exceptions.APIException):
    """An RFC 6749 section 5.2 error body: ``{"error": ..., "error_description": ...}``."""

    status_code: int = status.HTTP_400_BAD_REQUEST

    def __init__(
        self, error: str, description: str | Promise, status_code: int | None = None
    ) -> None:
        super().__init__({"error": error, "error_description": str(description)}, code=error)
        if status_code is not None:
            self.status_code = status_code
