"""DRF permissions on what a bearer token grants: scopes (case-sensitive, whole words; by path in a
token profile) and groups."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from . import conf, exceptions, issuers, profiles, scopes, tokens


def _view_attribute(view: Any, name: str) -> tuple[str, ...]:
    value = getattr(view, name, ())
    return (value,) if isinstance(value, str) else tuple(value)


def _grants(token: Any) -> Callable[[str], bool]:
    """``scope -> granted?`` for ``request.auth``: whole scope names, and for tokens of a token
    profile (an issuer following WLCG or SciTokens, ours with ``TOKEN_PROFILE``) its hierarchical
    storage scopes (``storage.read:/data`` grants ``storage.read:/data/file``); nothing for a Django
    session. A service scope only by its name in one of our tokens: an external issuer's scopes, and
    a storage scope above it, never grant one."""
    if not isinstance(token, tokens.AccessToken):
        return lambda scope: False
    granted = token.scopes
    user_grants = _user_grants(token, granted)
    service = scopes.service_scopes()
    held = granted if token.is_local else frozenset()
    return lambda scope: scope in held if scope in service else user_grants(scope)


def _user_grants(token: tokens.AccessToken, granted: frozenset[str]) -> Callable[[str], bool]:
    if token.is_local:
        if conf.epochauth_settings.TOKEN_PROFILE in profiles.PROFILES:
            return partial(profiles.grants, granted)
        return granted.__contains__
    # An in-memory lookup (the issuer tables are held per process): no query on the hot path.
    config = issuers.get_issuer(token.issuer)
    if config is None:
        return granted.__contains__
    return partial(config.scope_granted, granted)


class HasScope(BasePermission):
    """The token must carry every scope in the view's ``required_scopes``."""

    def has_permission(self, request: Request, view: Any) -> bool:
        required = _view_attribute(view, "required_scopes")
        if not request.user or not request.user.is_authenticated:
            return False
        if self.satisfied(required, _grants(request.auth)):
            return True
        raise exceptions.InsufficientScope(required)

    @staticmethod
    def satisfied(required: tuple[str, ...], grants: Callable[[str], bool]) -> bool:
        return all(grants(scope) for scope in required)


class HasAnyScope(HasScope):
    """The token must carry at least one scope of the view's ``required_scopes``."""

    @staticmethod
    def satisfied(required: tuple[str, ...], grants: Callable[[str], bool]) -> bool:
        return not required or any(grants(scope) for scope in required)


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
        if isinstance(request.auth, tokens.AccessToken):
            groups = {request.auth.group} if request.auth.group else set(request.auth.groups)
        else:
            groups = set(user.groups.values_list("name", flat=True))
        return bool(required & groups)


class DPoPBound(BasePermission):
    """The request must carry a DPoP-bound token with its proof (RFC 9449), not a bearer token nor a
    session: for a view that must not take a token that could be replayed by whoever copied it.
    ``DPOP_REQUIRED`` asks the same of every view."""

    message = _("This resource requires a DPoP-bound access token.")

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, tokens.AccessToken) and request.auth.is_dpop_bound


class InCommunity(BasePermission):
    """The token must belong to one of the view's ``required_communities`` (slugs; its ``vo``, in
    ``request.auth.vo``). A site token of no community, an external issuer's token and a Django
    session belong to none. ``InCommunity.of("lhcb")`` is the class for one view without the
    attribute."""

    message = _("Your token does not belong to a community this resource requires.")
    #: The communities of every view using this class, besides the view's ``required_communities``.
    communities: tuple[str, ...] = ()

    def has_permission(self, request: Request, view: Any) -> bool:
        required = set(self.communities) | set(_view_attribute(view, "required_communities"))
        token = request.auth
        return isinstance(token, tokens.AccessToken) and token.vo in required

    @classmethod
    def of(cls, *slugs: str) -> type[InCommunity]:
        """A subclass requiring one of ``slugs``: ``permission_classes = [InCommunity.of("lhcb")]``."""
        return type(f"InCommunity_{'_'.join(slugs)}", (cls,), {"communities": slugs})
