"""RFC 8693 token exchange: a token of a trusted external issuer for one of ours, for the same person."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.utils.translation import gettext as _
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase
from rest_framework.exceptions import PermissionDenied

from .. import (
    authentication,
    communities,
    conf,
    exceptions,
    jwks,
    resources,
    scopes,
    signals,
    snapshots,
    tokens,
    urns,
)
from .scopes import grantable

SUBJECT_TOKEN_TYPES = frozenset({urns.ACCESS_TOKEN_TYPE, urns.JWT_TOKEN_TYPE})

#: The parameters a client may repeat (RFC 8693 section 2.1): each value must name us.
TARGET_PARAMETERS = ("audience", "resource")


class InvalidTarget(errors.OAuth2Error):
    error = "invalid_target"
    status_code = 400


def invalid_subject(reason: object) -> str:
    # oauthlib writes the description with json.dumps: a plain str, in the request's language.
    return _("Invalid subject_token: %(reason)s") % {"reason": reason}


def our_audience() -> Any:
    """The ``aud`` of every token we issue here (:func:`epochauth.tokens.audience`)."""
    return tokens.audience()


def is_our_resource(resource: str) -> bool:
    """An absolute URI without fragment (RFC 8707 section 2) at or under ``ISSUER``, or under
    ``AUDIENCE`` when that is a URL: a resource of this site, which takes our tokens."""
    parts = urlsplit(resource)
    if not parts.scheme or not parts.netloc or "#" in resource:
        return False
    origin = (parts.scheme.lower(), parts.netloc.lower())
    for base in (conf.epochauth_settings.ISSUER, conf.epochauth_settings.AUDIENCE):
        site = urlsplit(base or "")
        prefix = site.path.rstrip("/")
        if origin == (site.scheme.lower(), site.netloc.lower()) and (
            parts.path == prefix or parts.path.startswith(f"{prefix}/")
        ):
            return True
    return False


def check_targets(request: Any) -> None:
    """RFC 8693 section 2.2.2: ``invalid_target`` unless every ``audience`` and ``resource`` names
    a service we issue for: one of :func:`epochauth.resources.served` (which narrows the token's
    ``aud`` to the ones named, RFC 8707), or a resource of this site (:func:`is_our_resource`, the
    default audience). Each may be repeated (the token view keeps repeated values, see
    ``views.TokenEndpointCore``); the narrowed audience is left on the request for the generator."""
    served = resources.served()
    named: list[str] = []
    for name, value in [*request.uri_query_params, *(request.decoded_body or [])]:
        if name not in TARGET_PARAMETERS:
            continue
        if value in served and (name == "audience" or resources.is_absolute(value)):
            named.append(value)
        elif name == "resource" and is_our_resource(value):
            named.extend(resources.names(our_audience()))
        elif name == "audience":
            raise InvalidTarget(
                description=_("This server issues tokens for %(audience)s only")
                % {"audience": " ".join(served)},
                request=request,
            )
        else:
            raise InvalidTarget(
                description=_(
                    "The resource must be an absolute URI of this site, without fragment"
                ),
                request=request,
            )
    request.epochauth_aud = resources.audience(named) if named else None


def _param(request: Any, name: str) -> str | None:
    value = request._params.get(name)
    return value if isinstance(value, str) and value else None


class TokenExchangeGrant(GrantTypeBase):
    """Registered on the token endpoint by :class:`epochauth.oauth.server.Server`.

    The subject token is verified exactly like a bearer token of that issuer (allow-list, keys,
    revocation, provisioning). Delegation (``actor_token``) is not supported. The issued token's
    scope is the requested one (default: the subject token's) narrowed to what the subject token
    carried and the client may have, never a service scope; a group selection (``g:<group>``,
    ``wlcg.groups:/<group>``) needs membership here, of a group the subject token itself grants
    (for an issuer with group claims, one it may name: ``group_map``, ``group_prefix``, default
    groups), whatever other groups the user is in. Not asked for, the subject token's selection of
    a group it does not grant here is dropped, not refused. A community selection (``vo:<slug>``)
    needs membership here and the subject token's issuer among the community's
    ``identity_providers`` (the validator's ``check_token_request``), and a subject token issued
    before the last bump of the selected group's or community's epoch is refused as a token of that
    group or community would be: the newest applicable epoch wins here too.
    """

    def create_token_response(
        self, request: Any, token_handler: Any
    ) -> tuple[dict[str, str], str, int]:
        headers = self._get_default_headers()
        try:
            self.validate_token_request(request)
        except errors.OAuth2Error as exc:
            headers.update(exc.headers)
            return headers, exc.json, exc.status_code
        token = token_handler.create_token(request, refresh_token=False)
        token["scope"] = " ".join(request.scopes)
        token["issued_token_type"] = urns.ACCESS_TOKEN_TYPE
        self.request_validator.save_token(token, request)
        # Robust (Django logs a receiver's error): no receiver can undo the token already issued.
        signals.token_exchanged.send_robust(
            sender=TokenExchangeGrant,
            user=request.user,
            issuer=request.epochauth_subject_issuer,
            client_id=request.client.client_id,
            subject_token=_param(request, "subject_token"),
        )
        return headers, json.dumps(token), 200

    def validate_token_request(self, request: Any) -> None:
        for validator in self.custom_validators.pre_token:
            validator(request)
        if not self.request_validator.authenticate_client(request):
            raise errors.InvalidClientError(request=request)
        self.validate_grant_type(request)
        subject_token = _param(request, "subject_token")
        subject_type = _param(request, "subject_token_type")
        if subject_token is None or subject_type is None:
            raise errors.InvalidRequestError(
                _("subject_token and subject_token_type are required"), request=request
            )
        # RFC 8693 section 2.2.2: invalid_request, which names an unsupported subject_token_type
        # (unsupported_token_type is RFC 7009's, for revocation).
        if subject_type not in SUBJECT_TOKEN_TYPES:
            raise errors.InvalidRequestError(
                _("Only access tokens can be exchanged"), request=request
            )
        if _param(request, "actor_token"):
            raise errors.InvalidRequestError(
                _("Delegation (actor_token) is not supported"), request=request
            )
        if _param(request, "requested_token_type") not in (None, urns.ACCESS_TOKEN_TYPE):
            raise errors.InvalidRequestError(
                _("Only access tokens can be issued"), request=request
            )
        check_targets(request)
        access = self._verify(subject_token, request)
        granted = sorted(access.scopes)
        requested = scopes.split_scope(request.scope) if request.scope else granted
        # Asked for, a service scope is refused; carried by the subject token, it is the external
        # issuer's word, which never grants one here: dropped below like any scope not ours.
        problem = scopes.service_scope_refusal(requested) if request.scope else None
        if problem:
            raise errors.InvalidScopeError(description=problem, request=request)
        request.scopes = [
            s
            for s in dict.fromkeys(requested)
            if grantable(s, request.client, request.grant_type)
            and (
                scopes.group_name(s) is not None
                or communities.community_name(s) is not None
                or s in granted
            )
            # Not asked for, the subject token's own selection (IAM's ``wlcg.groups:/<group>``, a
            # group of its namespace) carries over only for a group it grants here.
            and (request.scope or scopes.group_name(s) in (None, *access.groups))
        ]
        if any(
            name not in access.groups for name in map(scopes.group_name, request.scopes) if name
        ):
            raise errors.InvalidScopeError(
                description=_("The subject_token does not grant that group"), request=request
            )
        for validator in self.custom_validators.post_token:
            validator(request)

    @staticmethod
    def _verify(subject_token: str, request: Any) -> tokens.AccessToken:
        """Set ``request.user`` from an external token; returns that token, verified."""
        try:
            principal, access = authentication.authenticate_token(subject_token)
        except exceptions.InvalidToken as exc:
            raise errors.InvalidRequestError(
                invalid_subject(exc.description), request=request
            ) from None
        except (exceptions.InsufficientScope, PermissionDenied) as exc:
            raise errors.InvalidRequestError(
                invalid_subject(exc.detail), request=request
            ) from None
        except (snapshots.StateUnavailable, jwks.IssuerUnavailable):
            raise errors.TemporarilyUnavailableError(request=request) from None
        if access.is_local:
            raise errors.InvalidRequestError(
                _("The subject_token must come from an external issuer"), request=request
            )
        user_model = get_user_model()
        request.user = user_model._default_manager.filter(pk=principal.pk).first()
        request.epochauth_subject_expires = access.claims["exp"]
        request.epochauth_subject_issued = access.claims["iat"]
        request.epochauth_subject_issuer = access.issuer
        return access
