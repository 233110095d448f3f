from typing import Any

from django.apps import AppConfig
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _


class OAuthConfig(AppConfig):
    name = "epochauth.oauth"
    label = "epochauth_oauth"
    verbose_name = _("OAuth authorization server")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Register the checks and the signal receivers.
        from . import checks, receivers  # noqa: F401
        from .redaction import install

        install()

    def server_metadata(self, request: HttpRequest, openid: bool = True) -> dict[str, Any]:
        """RFC 8414 metadata for ``epochauth.views``' metadata documents to merge in; ``openid``:
        with OpenID Provider mode's additions (a community's documents have none: ID tokens carry
        the site's issuer)."""
        # Imported here: the app config loads before the models are ready.
        from .registration import registration_metadata
        from .views import openid_metadata, server_metadata

        return {
            **server_metadata(request),
            **(openid_metadata(request) if openid else {}),
            **registration_metadata(request),
        }

    def is_openid_provider(self) -> bool:
        from .openid import is_openid_provider

        return is_openid_provider()

    def end_family(self, family: str) -> None:
        """End the refresh-token family an access token names (``/auth/logout/`` with it)."""
        import uuid

        from .revocation import end_family

        end_family(uuid.UUID(hex=family))
