from django.apps import AppConfig, apps
from django.utils.translation import gettext_lazy as _


class EpochAuthConfig(AppConfig):
    name = "epochauth"
    verbose_name = _("Token authentication")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers checks, signal receivers and the outage journal's replay.
        from . import checks, outage, receivers  # noqa: F401

        if apps.is_installed("drf_spectacular"):
            # Defining the extensions registers them: manage.py spectacular then knows our schemes.
            from . import openapi  # noqa: F401
