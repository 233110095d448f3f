from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class OAuthConfig(AppConfig):
    name = "tokenauth.oauth"
    label = "tokenauth_oauth"
    verbose_name = _("OAuth authorization server")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, receivers  # noqa: F401  (register the checks and the signal receivers)
        from .redaction import install

        install()
