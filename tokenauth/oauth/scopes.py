"""Which scopes exist and who may have them: service scopes from ``TOKENAUTH["SCOPES"]`` and
``g:<group>``, which selects one of the user's groups for the token."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from oauth2_provider.scopes import BaseScopes
from oauth2_provider.settings import oauth2_settings

from tokenauth import conf
from tokenauth.scopes import group_name


def application_allows(application: Any, scope: str) -> bool:
    """An application's :class:`~tokenauth.oauth.models.AllowedScopes` row, when it has one, limits it."""
    from .models import AllowedScopes

    try:
        allowed = application.tokenauth_scopes.scope_set
    except AllowedScopes.DoesNotExist:
        return True
    return scope in allowed or (group_name(scope) is not None and "g:*" in allowed)


#: OpenID Connect's scopes (Core 1.0 section 5.4), in OpenID Provider mode (DOT's ``OIDC_ENABLED``).
OPENID_SCOPES = {
    "openid": gettext_lazy("Sign you in with your account here"),
    "profile": gettext_lazy("See your name and username"),
    "email": gettext_lazy("See your email address"),
}


def service_scopes() -> dict[str, str]:
    """``TOKENAUTH["SCOPES"]``, and OpenID Connect's in OpenID Provider mode."""
    if oauth2_settings.OIDC_ENABLED:
        return {**OPENID_SCOPES, **conf.tokenauth_settings.SCOPES}
    return conf.tokenauth_settings.SCOPES


def known(scope: str) -> bool:
    return scope in service_scopes() or group_name(scope) is not None


def selected_group(user: Any, scopes: list[str]) -> tuple[Group | None, str | None]:
    """The group a ``g:`` scope selects and, if the selection is not allowed, why."""
    names = [name for name in map(group_name, scopes) if name]
    if not names:
        return None, None
    if len(names) > 1:
        return None, _("Select at most one group")
    group = Group.objects.filter(name=names[0], user=user).first() if user is not None else None
    if group is None:
        return None, _("You are not a member of that group")
    return group, None


class ScopeDescriptions(dict[str, str]):
    """The service scopes, and a description of any ``g:<group>`` on demand (groups are not listed up
    front): DOT's consent page looks up the description of every requested scope."""

    def __missing__(self, scope: str) -> str:
        name = group_name(scope)
        if name is None:
            raise KeyError(scope)
        return _("Act as member of %(name)s") % {"name": name}

    def get(self, scope: str, default: Any = None) -> Any:
        """``dict.get`` bypasses ``__missing__``: DOT's device page looks scopes up with it."""
        try:
            return self[scope]
        except KeyError:
            return default


class TokenAuthScopes(BaseScopes):
    """DOT's scopes backend (``SCOPES_BACKEND_CLASS``): our service scopes, no default scope."""

    def get_all_scopes(self) -> dict[str, str]:
        return ScopeDescriptions(service_scopes())

    def get_available_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        scopes = list(service_scopes())
        return [s for s in scopes if application is None or application_allows(application, s)]

    def get_default_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        return []
