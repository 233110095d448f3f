"""Which scopes exist and who may have them: user scopes from ``EPOCHAUTH["SCOPES"]`` and
``g:<group>`` (or ``wlcg.groups:/<group>``), which selects one of the user's groups for the token,
for any grant; service scopes (``epochauth.scopes.service_scopes``) for the client-credentials grant
of a service application only."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from oauth2_provider.scopes import BaseScopes

from epochauth.communities import community_name
from epochauth.scopes import group_name, service_scopes, user_scopes

from .openid import is_openid_provider


def _allowed(application: Any) -> frozenset[str] | None:
    """The scopes of an application's :class:`~epochauth.oauth.models.AllowedScopes` row, if any."""
    from .models import AllowedScopes

    try:
        return application.epochauth_scopes.scope_set
    except AllowedScopes.DoesNotExist:
        return None


def application_allows(application: Any, scope: str) -> bool:
    """An application's :class:`~epochauth.oauth.models.AllowedScopes` row, when it has one, limits
    it; a group selection is allowed in either spelling by ``g:*`` or by one naming that group, a
    community selection by ``vo:*`` or by its own name."""
    allowed = _allowed(application)
    if allowed is None:
        return True
    if community_name(scope) is not None:
        return "vo:*" in allowed or scope in allowed
    name = group_name(scope)
    if name is None:
        return scope in allowed
    return "g:*" in allowed or any(group_name(entry) == name for entry in allowed)


def is_service_application(application: Any, scope: str) -> bool:
    """Whether ``application`` may hold the service scope ``scope``: it is confidential and its
    allowed scopes name ``scope`` (how the admin marks a Token Manager service, for one)."""
    allowed = _allowed(application)
    return (
        application.client_type == application.CLIENT_CONFIDENTIAL
        and allowed is not None
        and scope in allowed
    )


def grantable(scope: str, application: Any, grant_type: str | None) -> bool:
    """Whether a token request of ``application`` with ``grant_type`` (None at the authorization
    and device-authorization endpoints) may obtain ``scope``: a service scope only by the
    client-credentials grant of a service application, a user scope if the application may have it."""
    if scope in service_scopes():
        return grant_type == "client_credentials" and is_service_application(application, scope)
    return known(scope) and application_allows(application, scope)


#: OpenID Connect's scopes (Core 1.0 sections 5.4 and 11), in OpenID Provider mode
#: (:func:`is_openid_provider`). ``offline_access`` asks for a refresh token, which every grant of a user
#: here gives anyway: clients that ask for it (oidc-agent insists) get what they would get without it.
OPENID_SCOPES = {
    "openid": gettext_lazy("Sign you in with your account here"),
    "profile": gettext_lazy("See your name and username"),
    "email": gettext_lazy("See your email address"),
    "offline_access": gettext_lazy("Keep access while you are away"),
}


def requestable_scopes() -> dict[str, Any]:
    """The user scopes, and OpenID Connect's in OpenID Provider mode."""
    if is_openid_provider():
        return {**OPENID_SCOPES, **user_scopes()}
    return user_scopes()


def known(scope: str) -> bool:
    """A scope a user may ask for (never a service scope): a group or community selection is
    checked against the user when the token is made (``check_token_request``)."""
    return (
        scope in requestable_scopes()
        or group_name(scope) is not None
        or community_name(scope) is not None
    )


def selected_group(user: Any, scopes: list[str]) -> tuple[Group | None, str | None]:
    """The group a group selection (``g:``, ``wlcg.groups:/``) selects and, if the selection is not
    allowed, why."""
    names = list(dict.fromkeys(name for name in map(group_name, scopes) if name))
    if not names:
        return None, None
    if len(names) > 1:
        return None, _("Select at most one group")
    group = Group.objects.filter(name=names[0], user=user).first() if user is not None else None
    if group is None:
        return None, _("You are not a member of that group")
    return group, None


class ScopeDescriptions(dict[str, str]):
    """Every scope, and a description of any ``g:<group>`` on demand (groups are not listed up
    front): DOT's consent page looks up the description of every requested scope."""

    def __missing__(self, scope: str) -> str:
        vo = community_name(scope)
        if vo is not None:
            return _("Act in the community %(name)s") % {"name": vo}
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


class EpochAuthScopes(BaseScopes):
    """DOT's scopes backend (``SCOPES_BACKEND_CLASS``): our scopes, no default scope.

    Which scope a request may obtain is the validator's ``validate_scopes`` (:func:`grantable`)."""

    def get_all_scopes(self) -> dict[str, str]:
        return ScopeDescriptions({**requestable_scopes(), **service_scopes()})

    def get_available_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        """The user scopes (an application's limited by its allowed scopes); never a service scope."""
        scopes = list(requestable_scopes())
        return [s for s in scopes if application is None or application_allows(application, s)]

    def get_default_scopes(
        self, application: Any = None, request: Any = None, *args: Any, **kwargs: Any
    ) -> list[str]:
        return []
