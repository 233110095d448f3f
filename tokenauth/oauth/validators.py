"""DOT's request validator with our rules: scopes, token subjects, epochs, revocation, device polling."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Q
from django.utils import timezone

# oauthlib writes descriptions with json.dumps: plain str, in the request's language.
from django.utils.translation import gettext as _
from oauth2_provider.models import (
    AbstractAccessToken,
    get_access_token_model,
    get_device_grant_model,
    get_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc8628.grant_types import DeviceCodeGrant

from tokenauth.models import Epoch
from tokenauth.scopes import split_scope
from tokenauth.verification import parse

from .exchange import GRANT_TYPE as TOKEN_EXCHANGE
from .revocation import code_family, deny_ended_families, end_family, ending, families
from .scopes import application_allows, known, selected_group


def epochs_bumped_since(user_id: Any, group_id: Any, since: datetime) -> bool:
    """Whether the user's, the group's or the global epoch was bumped after ``since``."""
    wanted = Q(kind=Epoch.Kind.USER, object_id=str(user_id)) | Q(kind=Epoch.Kind.GLOBAL, object_id="")
    if group_id is not None:
        wanted |= Q(kind=Epoch.Kind.GROUP, object_id=str(group_id))
    return Epoch.objects.filter(wanted, not_before__gt=since).exists()


def checksum(token: str) -> str:
    """How DOT finds a token's row: the SHA-256 of the token as the client holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthValidator(OAuth2Validator):
    """``OAUTH2_VALIDATOR_CLASS``.

    Client-credentials tokens act as the application's owner (``Application.user``): the owner's
    epoch revokes them and the owner's groups are what ``g:`` may select. An application without
    an active owner cannot use that grant.
    """

    def validate_grant_type(self, client_id: str, grant_type: str, client: Any, request: Any, *args, **kw):
        # Not in DOT's mapping: any confidential client may exchange.
        if grant_type == TOKEN_EXCHANGE:
            return client.client_type == client.CLIENT_CONFIDENTIAL
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kw)

    def validate_scopes(self, client_id: str, scopes: list[str], client: Any, request: Any, *args, **kw):
        return all(known(s) and application_allows(client, s) for s in scopes)

    def check_token_request(self, request: Any) -> None:
        """oauthlib ``post_token`` hook of every grant: who the token is for and its group scope."""
        if request.grant_type == "client_credentials":
            request.user = request.client.user
            if request.user is None or not request.user.is_active:
                raise errors.UnauthorizedClientError(
                    description=_("This application has no active owner to act as"), request=request
                )
        if request.user is None or not request.user.is_active:
            raise errors.InvalidGrantError(description=_("The user is inactive"), request=request)
        problem = selected_group(request.user, list(request.scopes or []))[1]
        if problem:
            raise errors.InvalidScopeError(description=problem, request=request)

    def validate_refresh_token(self, refresh_token: str, client: Any, request: Any, *args, **kwargs):
        """DOT's checks (rotation, reuse protection), then: no epoch bump since this token was issued.

        The token's rows stay locked until the request ends (see ``Server.create_token_response``):
        a concurrent refresh of the same token waits, then finds it rotated, a reuse. Unlocked, it
        would pass these checks and reach DOT's grace-period answer, which hands back the stored
        ``jti`` as the access token (and DOT's token view a 500 looking it up).
        When DOT's reuse protection has just revoked the token's family, its access tokens are denied.
        """
        rows = get_refresh_token_model().objects.filter(token_checksum=checksum(refresh_token))
        list(rows.select_for_update())
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            deny_ended_families(families(rows))
            return False
        rt = request.refresh_token_instance
        group, _ = selected_group(rt.user, split_scope(rt.access_token.scope))
        return not epochs_bumped_since(rt.user_id, group.pk if group else None, rt.created)

    def validate_code(self, client_id: str, code: str, client: Any, request: Any, *args, **kwargs) -> bool:
        """DOT's check; a code refused after an exchange was used before, and RFC 6749 section 4.1.2
        wants the tokens it gave revoked: DOT deleted its grant, but the code names their family.

        The grant stays locked until the request ends: a concurrent exchange of the same code waits,
        then finds it used, a replay (unlocked, both would pass and neither family end).
        """
        list(get_grant_model().objects.filter(code=code).select_for_update())
        if super().validate_code(client_id, code, client, request, *args, **kwargs):
            return True
        end_family(code_family(code), client)
        return False

    def validate_device_code(self, client_id: str, code: str, request: Any, *args, **kwargs) -> str | None:
        """RFC 8628 section 3.5 polling answers; an approved code is redeemed exactly once."""
        model = get_device_grant_model()
        device = model.objects.filter(device_code=code, client_id=client_id).first()
        if device is None:
            return None
        if device.is_expired():
            return DeviceCodeGrant.DEVICE_CODE_EXPIRED
        if device.status == device.DENIED:
            return DeviceCodeGrant.DEVICE_CODE_DENIED
        if device.status == device.AUTHORIZATION_PENDING:
            too_fast = timezone.now() - device.last_checked < timedelta(seconds=device.interval)
            device.save(update_fields=["last_checked"])
            return DeviceCodeGrant.DEVICE_CODE_SLOW_DOWN if too_fast else DeviceCodeGrant.DEVICE_CODE_PENDING
        redeemed = model.objects.filter(pk=device.pk, status=device.AUTHORIZED).update(status=device.EXPIRED)
        if not redeemed:
            return DeviceCodeGrant.DEVICE_CODE_EXPIRED
        request.user = device.user
        request.scopes = split_scope(device.scope)
        return DeviceCodeGrant.DEVICE_CODE_AUTHORIZED

    def _set_token_value(self, token_instance: Any, raw_token: str) -> None:
        """Access-token rows keep the JWT's ``jti`` (to deny it later) and the checksum, never the JWT.

        DOT derives the checksum from ``_raw_token`` once, then from ``token``: Django 6 asks a field
        twice on insert, so :func:`~tokenauth.oauth.receivers.keep_jwt_checksum` puts it right after.
        """
        super()._set_token_value(token_instance, raw_token)
        if isinstance(token_instance, AbstractAccessToken):
            token_instance._raw_token = raw_token
            token_instance.token = parse(raw_token).claims["jti"]
            token_instance.jwt_checksum = checksum(raw_token)

    def _create_refresh_token(
        self, request: Any, refresh_token_code: str, access_token: Any, previous_refresh_token: Any
    ) -> Any:
        """A new family takes the id that its first access token already carries (see generators)."""
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        family = getattr(request, "tokenauth_family", None)
        if previous_refresh_token is None and family is not None:
            refresh_token.token_family = family
            refresh_token.save(update_fields=["token_family"])
        return refresh_token

    def revoke_token(self, token: str, token_type_hint: str | None, request: Any, *args, **kwargs) -> None:
        """RFC 7009: besides DOT's rows, deny the JWT ids at once (a JWT would stay valid otherwise).

        DOT also revokes the refresh token bound to a revoked access token; a family left without a
        usable refresh token loses all its access tokens, the ones of earlier rotations included.
        """
        application = getattr(request.client, "pk", None)
        if application is None:  # DOT revokes nothing either
            return
        digest = checksum(token)
        access_tokens = get_access_token_model().objects.filter(
            Q(token_checksum=digest) | Q(refresh_token__token_checksum=digest), application_id=application
        )
        refresh_tokens = get_refresh_token_model().objects.filter(
            Q(token_checksum=digest) | Q(access_token__token_checksum=digest), application_id=application
        )
        with ending(access_tokens, refresh_tokens):
            super().revoke_token(token, token_type_hint, request, *args, **kwargs)
