from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class TokenManagerConfig(AppConfig):
    name = "epochauth.tokenmanager"
    label = "epochauth_tokenmanager"
    verbose_name = _("Token Manager")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (register the checks and the signal receivers)
