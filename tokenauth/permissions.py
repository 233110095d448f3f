"""DRF permissions on what a bearer token grants: scopes (case-sensitive, whole words) and groups."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from .exceptions import InsufficientScope
from .tokens import AccessToken


def _view_attribute(view: Any, name: str) -> tuple[str, ...]:
    value = getattr(view, name, ())
    return (value,) if isinstance(value, str) else tuple(value)


class HasScope(BasePermission):
    """The token must carry every scope in the view's ``required_scopes``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        required = _view_attribute(view, "required_scopes")
        if not request.user or not request.user.is_authenticated:
            return False
        granted = request.auth.scopes if isinstance(request.auth, AccessToken) else frozenset()
        if self.satisfied(required, granted):
            return True
        raise InsufficientScope(required)

    @staticmethod
    def satisfied(required: tuple[str, ...], granted: frozenset[str]) -> bool:
        return all(scope in granted for scope in required)


class HasAnyScope(HasScope):
    """The token must carry at least one scope of the view's ``required_scopes``."""

    @staticmethod
    def satisfied(required: tuple[str, ...], granted: frozenset[str]) -> bool:
        return not required or any(scope in granted for scope in required)


class InGroup(BasePermission):
    """The user must be in one of the view's ``required_groups``.

    For a bearer token the groups are those the token was minted with, less any the user left since
    (re-read at each refresh); when the token selected a group, only that group counts.
    """

    message = _("You are not in a group this resource requires.")

    def has_permission(self, request: Request, view: Any) -> bool:
        required = set(_view_attribute(view, "required_groups"))
        user = request.user
        if not user or not user.is_authenticated:
            return False
        if isinstance(request.auth, AccessToken):
            groups = {request.auth.group} if request.auth.group else set(request.auth.groups)
        else:
            groups = set(user.groups.values_list("name", flat=True))
        return bool(required & groups)
