from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class SimpleJWTMigrationConfig(AppConfig):
    name = "epochauth.contrib.simplejwt"
    label = "epochauth_simplejwt"
    verbose_name = _("Token authentication: moving from simplejwt")

    def ready(self) -> None:
        from epochauth import migrating

        from . import checks  # noqa: F401  (registers the system checks)
        from .tokens import exchange_refresh_token, header_types, validate_access_token

        if validate_access_token not in migrating.access_token_validators:
            migrating.access_token_validators.append(validate_access_token)
        if exchange_refresh_token not in migrating.refresh_exchanges:
            migrating.refresh_exchanges.append(exchange_refresh_token)
        if header_types not in migrating.header_types:
            migrating.header_types.append(header_types)
