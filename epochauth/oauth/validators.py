"""DOT's request validator with our rules: scopes, token subjects, epochs, revocation, device polling,
and in OpenID Provider mode ID tokens signed with our keys and userinfo for our access tokens."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import jwt
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.db import router, transaction
from django.db.models import F, Q
from django.http import HttpRequest
from django.utils import timezone

# oauthlib writes descriptions with json.dumps: plain str, in the request's language.
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy as _lazy
from jwcrypto.common import JWException
from jwcrypto.jwk import JWK
from jwcrypto.jwt import JWT
from oauth2_provider.models import (
    AbstractAccessToken,
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
    revoke_access_token,
)
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc8628.grant_types import DeviceCodeGrant

from epochauth.scopes import issued_scopes, service_scope_refusal, service_scopes, split_scope

from .. import (
    authentication,
    clock,
    communities,
    conf,
    dpop,
    exceptions,
    keys,
    models,
    profiles,
    resources,
    tokens,
    urns,
    verification,
)
from . import exchange, openid, proofs, revocation
from .scopes import grantable, selected_group


def epochs_bumped_since(user_id: Any, group_id: Any, since: datetime, community: str = "") -> bool:
    """Whether the user's, the group's, the community's or the global epoch was bumped after
    ``since``."""
    wanted = Q(kind=models.Epoch.Kind.USER, object_id=str(user_id)) | Q(
        kind=models.Epoch.Kind.GLOBAL, object_id=""
    )
    if group_id is not None:
        wanted |= Q(kind=models.Epoch.Kind.GROUP, object_id=str(group_id))
    if community:
        wanted |= Q(kind=models.Epoch.Kind.COMMUNITY, object_id=community)
    return models.Epoch.objects.filter(wanted, not_before__gt=since).exists()


#: RFC 8628 section 3.5: what each ``slow_down`` adds to the polling interval.
SLOW_DOWN_SECONDS = 5


def poll_time() -> datetime:
    """Now, for the device flow's polling interval: through :mod:`epochauth.clock`, so that tests
    step through intervals instead of sleeping."""
    return datetime.fromtimestamp(clock.wall(), tz=UTC)


def checksum(token: str) -> str:
    """How DOT finds a token's row: the SHA-256 of the token as the client holds it."""
    return hashlib.sha256(token.encode()).hexdigest()


#: The OpenID Connect standard claims of a user (section 5.1), each with DOT's scope for it.
USER_CLAIMS: dict[str, Callable[[Any], str]] = {
    "preferred_username": lambda user: user.get_username(),
    "name": lambda user: user.get_full_name(),
    "given_name": attrgetter("first_name"),
    "family_name": attrgetter("last_name"),
    "email": attrgetter("email"),
}


def is_own_token(token: str) -> bool:
    """Whether ``token`` is a JWT that names us as its issuer (not yet whether it is valid)."""
    try:
        return len(token) <= conf.epochauth_settings.MAX_TOKEN_BYTES and (
            communities.is_ours(verification.parse(token).claims.get("iss"))
        )
    except exceptions.InvalidToken:
        return False


def validate_own_token(token: str) -> tokens.AccessToken:
    """One of our access tokens, bound to a DPoP key or not, checked like any bearer token (for
    introspection, which describes a binding and checks no proof); :class:`InvalidToken` for any
    other token."""
    if not is_own_token(token):
        raise exceptions.InvalidToken()
    return authentication.validate_token(token)


def verify_own_token(
    token: str, request: HttpRequest | None = None
) -> tuple[Any, tokens.AccessToken]:
    """``(user, access)`` for one of our access tokens, checked like any bearer token (signature,
    epochs, denylist); raises :class:`InvalidToken` for any other token. An external token is neither
    verified nor provisioned here: it is not ours to describe. With ``request``, the token was sent
    as ``Authorization: DPoP``: bound, with the request's proof of its key (RFC 9449 section 7);
    without, a bound token is refused (section 7.2)."""
    if not is_own_token(token):
        raise exceptions.InvalidToken()
    if request is not None:
        return authentication.authenticate_bound_token(request, token)
    return authentication.authenticate_token(token)


#: Where ``views.UserInfoCore`` hands the validator ``(user, access)`` of a DPoP-bound token the
#: view verified with its proof (a proof is used up once: oauthlib must not verify it again).
BOUND_KEY = "epochauth.bound"


class NoEndUser(Exception):
    """A client-credentials token at userinfo: good, but no one signed in to be described."""


class EpochAuthValidator(OAuth2Validator):
    """``OAUTH2_VALIDATOR_CLASS``.

    Client-credentials tokens act as the application's owner (``Application.user``): the owner's
    epoch revokes them and the owner's groups are what ``g:`` may select. An application without
    an active owner cannot use that grant.
    """

    def _load_application(self, client_id: str, request: Any) -> Any:
        """DOT's lookup of every client, but never one of ``FIRST_PARTY_CLIENT_ID``: that client id
        names the tokens of our own login, which may do what no OAuth client's token may."""
        if client_id == conf.epochauth_settings.FIRST_PARTY_CLIENT_ID:
            request.client = None
            return None
        return super()._load_application(client_id, request)

    def validate_grant_type(
        self, client_id: str, grant_type: str, client: Any, request: Any, *args: Any, **kw: Any
    ) -> bool:
        # Not in DOT's mapping: any confidential client may exchange.
        if grant_type == urns.TOKEN_EXCHANGE:
            return client.client_type == client.CLIENT_CONFIDENTIAL
        return super().validate_grant_type(client_id, grant_type, client, request, *args, **kw)

    def validate_scopes(
        self, client_id: str, scopes: list[str], client: Any, request: Any, *args: Any, **kw: Any
    ) -> bool:
        """Every scope grantable (the authorization and device-authorization endpoints ask with no
        grant type, the client-credentials and device grants with theirs)."""
        return all(grantable(s, client, request.grant_type) for s in scopes)

    def check_token_request(self, request: Any) -> None:
        """oauthlib ``post_token`` hook of every grant: who the token is for and its scopes.

        A service scope again, for the grants that take their scopes from an earlier step without
        ``validate_scopes`` (a code, a refresh token issued before the scope became one). A group
        selection, in either spelling, is issued in ours (:func:`~epochauth.scopes.issued_scopes`):
        the token, the response and the refresh token that follows say it alike.
        """
        request.scopes = issued_scopes(request.scopes or [])
        service = [s for s in request.scopes or [] if s in service_scopes()]
        if not all(grantable(s, request.client, request.grant_type) for s in service):
            raise errors.InvalidScopeError(
                description=service_scope_refusal(service), request=request
            )
        if profiles.HOST_AUTH in request.scopes and not profiles.HOST_CLIENT_ID.fullmatch(
            request.client.client_id
        ):
            raise errors.InvalidScopeError(
                description=_("host.auth needs a client id host:<fully qualified domain name>"),
                request=request,
            )
        if request.grant_type == "client_credentials":
            request.user = request.client.user
            if request.user is None or not request.user.is_active:
                raise errors.UnauthorizedClientError(
                    description=_("This application has no active owner to act as"),
                    request=request,
                )
        if request.user is None or not request.user.is_active:
            raise errors.InvalidGrantError(description=_("The user is inactive"), request=request)
        group, problem = selected_group(request.user, list(request.scopes or []))
        if problem:
            raise errors.InvalidScopeError(description=problem, request=request)
        self._select_community(request, group)
        if request.grant_type == urns.TOKEN_EXCHANGE:  # its targets are exchange.check_targets'
            self._subject_not_behind(request, group)
        else:
            request.epochauth_aud = self._narrowed_audience(request)

    @staticmethod
    def _select_community(request: Any, group: Any) -> None:
        """The community of the token (``vo:<slug>``, else the default or the user's only one,
        :func:`~epochauth.communities.choose`), written into its scopes so that its refresh keeps
        it; the selected group must be of it, and a token exchange's identity provider one it
        allows."""
        try:
            community = communities.choose(request.user.pk, list(request.scopes or []))
            communities.check_provider(
                community, getattr(request, "epochauth_subject_issuer", None)
            )
        except communities.Refused as exc:
            raise errors.InvalidScopeError(
                description=str(exc.description), request=request
            ) from None
        request.epochauth_community = community
        if community is None:
            return
        if group is not None and communities.foreign_groups(community, [group.pk]):
            raise errors.InvalidScopeError(
                description=_("That group is not in the selected community"), request=request
            )
        request.scopes = list(dict.fromkeys([*request.scopes, community.scope]))

    @staticmethod
    def _subject_not_behind(request: Any, group: Any) -> None:
        """A token exchange mints a token of the group and community it selects: a subject token
        issued before a bump of their epochs is refused, as a token of them issued then would be
        (verifying it checked the user's, the identity's and everyone's cutoffs already). The newest
        applicable epoch wins on this path too (Keycloak's 2026 not-before CVEs: epochs combined)."""
        since = datetime.fromtimestamp(request.epochauth_subject_issued, tz=UTC)
        community = request.epochauth_community
        if epochs_bumped_since(
            request.user.pk,
            group.pk if group is not None else None,
            since,
            community.slug if community is not None else "",
        ):
            raise errors.InvalidRequestError(
                description=exchange.invalid_subject(_("The access token was revoked")),
                request=request,
            )

    @staticmethod
    def refuse_resource(request: Any) -> None:
        """oauthlib ``pre_token`` hook: RFC 8707 ``resource`` narrows client credentials and token
        exchange only. DOT's code, device and refresh rows keep no audience, and a refresh must
        never widen one (section 2.2); refused before the grant is looked at, so a device code or
        refresh token is not spent on a request that fails."""
        if request.grant_type in ("client_credentials", urns.TOKEN_EXCHANGE):
            return
        if any(name == "resource" for name, _value in request.decoded_body or []):
            raise exchange.InvalidTarget(
                description=_("This grant takes no resource here"), request=request
            )

    @staticmethod
    def _narrowed_audience(request: Any) -> Any:
        """RFC 8707: the ``aud`` the token request's ``resource`` values narrow to (None: the
        default); only client credentials get here with one (:meth:`refuse_resource`)."""
        requested = [value for name, value in request.decoded_body or [] if name == "resource"]
        try:
            return resources.audience(requested)
        except resources.InvalidTarget as exc:
            raise exchange.InvalidTarget(description=exc.description, request=request) from None

    def is_within_original_scope(
        self, request_scopes: list[str], refresh_token: str, request: Any, *args: Any, **kw: Any
    ) -> bool:
        """A refresh asking again for its group selection in the other spelling (``g:cms`` for
        ``wlcg.groups:/cms``, or back) asks for what it has."""
        original = issued_scopes(split_scope(self.get_original_scopes(refresh_token, request)))
        return set(issued_scopes(request_scopes)) <= set(original)

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's checks (rotation, reuse protection), then: no epoch bump since this token was issued.

        The token's rows stay locked until the request ends (see ``Server.create_token_response``):
        a concurrent refresh of the same token waits, then finds it rotated, a reuse. Unlocked, it
        would pass these checks and reach DOT's grace-period answer, which hands back the stored
        ``jti`` as the access token (and DOT's token view a 500 looking it up).
        When DOT's reuse protection has just revoked the token's family, its access tokens are denied.

        ``EPOCHAUTH["REFRESH_TOKEN_GRACE_PERIOD"]`` is ours, not DOT's: see :meth:`_retried_in_grace`.
        """
        rows = get_refresh_token_model().objects.filter(token_checksum=checksum(refresh_token))
        found = list(rows.select_for_update())
        if found and client.client_type == client.CLIENT_PUBLIC:
            # RFC 9449 section 5: before DOT's reuse protection, so that a bound refresh token
            # stolen without its key cannot end its family either.
            proofs.check_binding(found[0].token_family, proofs.key_of(request), request)
        retried = self._retried_in_grace(rows, client)
        if retried is not None:
            rt, request.epochauth_retried = retried
            request.user = rt.user
            request.refresh_token = refresh_token
            request.refresh_token_instance = rt
            return self._no_bump_since(rt, request.epochauth_retried.scope)
        if not super().validate_refresh_token(refresh_token, client, request, *args, **kwargs):
            revocation.deny_ended_families(revocation.families(rows))
            return False
        rt = request.refresh_token_instance
        return self._no_bump_since(rt, rt.access_token.scope)

    @staticmethod
    def _no_bump_since(rt: Any, scope: str) -> bool:
        names = split_scope(scope)
        group, _ = selected_group(rt.user, names)
        vo = next(iter(communities.requested(names)), "")
        return not epochs_bumped_since(rt.user_id, group.pk if group else None, rt.created, vo)

    @staticmethod
    def _retried_in_grace(rows: Any, client: Any) -> tuple[Any, Any] | None:
        """The refresh token (and the access token its rotation gave) when it is the one a rotation
        replaced within ``REFRESH_TOKEN_GRACE_PERIOD``, retried by its client for the first time.

        As for login sessions (:func:`epochauth.sessions.rotate`), the retry rotates it once more: a
        new pair, and the first use's pair ends at the save, so the family keeps one live refresh
        token. The retry's access token names no source refresh token: that spends the one retry, and
        DOT's reuse protection then treats a second retry, like an older token, as a reuse.
        """
        grace = conf.epochauth_settings.REFRESH_TOKEN_GRACE_PERIOD
        if not grace:
            return None
        rt = rows.select_related("user").order_by(F("revoked").desc(nulls_first=True)).first()
        if (
            rt is None
            or rt.revoked is None
            or rt.revoked <= timezone.now() - grace
            or rt.application_id != client.pk
        ):
            return None
        successor = (
            get_access_token_model()
            .objects.select_for_update()
            .filter(source_refresh_token=rt)
            .first()
        )
        lifetime = refresh_token_expire_timedelta()
        if successor is None or (lifetime and successor.expires + lifetime <= timezone.now()):
            return None
        return rt, successor

    def _save_bearer_token(self, token: Any, request: Any, *args: Any, **kwargs: Any) -> None:
        """A retry within the grace period ends the pair the first use gave before its own is saved.
        A bound access token is of type DPoP (RFC 9449 section 5); oauthlib says Bearer."""
        if proofs.key_of(request) is not None:
            token["token_type"] = dpop.SCHEME
        retried = getattr(request, "epochauth_retried", None)
        if retried is not None:
            revoke_access_token(retried)
        super()._save_bearer_token(token, request, *args, **kwargs)

    def _create_access_token(
        self, expires: Any, request: Any, token: Any, source_refresh_token: Any = None
    ) -> Any:
        """A retry's access token names no source: the retried refresh token is spent."""
        if getattr(request, "epochauth_retried", None) is not None:
            source_refresh_token = None
        return super()._create_access_token(expires, request, token, source_refresh_token)

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Any, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's check; a code refused after an exchange was used before, and RFC 6749 section 4.1.2
        wants the tokens it gave revoked: DOT deleted its grant, but the code names their family.

        The grant stays locked until the request ends: a concurrent exchange of the same code waits,
        then finds it used, a replay (unlocked, both would pass and neither family end).
        """
        list(get_grant_model().objects.filter(code=code).select_for_update())
        if super().validate_code(client_id, code, client, request, *args, **kwargs):
            return True
        revocation.end_family(revocation.code_family(code), client)
        return False

    def validate_device_code(
        self, client_id: str, code: str, request: Any, *args: Any, **kwargs: Any
    ) -> str | None:
        """RFC 8628 section 3.5 polling answers; an approved code is redeemed exactly once.

        A pending code polled sooner than its interval after the previous poll gets ``slow_down``,
        and its interval grows by 5 s for every later poll, as the client's does. ``last_checked``
        is written with ``update()``: saving would stamp it with Django's clock (``auto_now``).
        """
        model = get_device_grant_model()
        device = model.objects.filter(device_code=code, client_id=client_id).first()
        if device is None:
            return None
        if device.is_expired():
            return DeviceCodeGrant.DEVICE_CODE_EXPIRED
        if device.status == device.DENIED:
            return DeviceCodeGrant.DEVICE_CODE_DENIED
        if device.status == device.AUTHORIZATION_PENDING:
            now = poll_time()
            polls = model.objects.filter(pk=device.pk)
            if now - device.last_checked < timedelta(seconds=device.interval):
                polls.update(last_checked=now, interval=F("interval") + SLOW_DOWN_SECONDS)
                return DeviceCodeGrant.DEVICE_CODE_SLOW_DOWN
            polls.update(last_checked=now)
            return DeviceCodeGrant.DEVICE_CODE_PENDING
        redeemed = model.objects.filter(pk=device.pk, status=device.AUTHORIZED).update(
            status=device.EXPIRED
        )
        if not redeemed:
            return DeviceCodeGrant.DEVICE_CODE_EXPIRED
        request.user = device.user
        request.scopes = split_scope(device.scope)
        return DeviceCodeGrant.DEVICE_CODE_AUTHORIZED

    def _set_token_value(self, token_instance: Any, raw_token: str) -> None:
        """Access-token rows keep the JWT's ``jti`` (to deny it later) and the checksum, never the JWT.

        DOT derives the checksum from ``_raw_token`` once, then from ``token``: Django 6 asks a field
        twice on insert, so :func:`~epochauth.oauth.receivers.keep_jwt_checksum` puts it right after.
        """
        super()._set_token_value(token_instance, raw_token)
        if isinstance(token_instance, AbstractAccessToken):
            token_instance._raw_token = raw_token
            token_instance.token = verification.parse(raw_token).claims["jti"]
            token_instance.jwt_checksum = checksum(raw_token)

    def _create_refresh_token(
        self, request: Any, refresh_token_code: str, access_token: Any, previous_refresh_token: Any
    ) -> Any:
        """A new family takes the id that its first access token already carries (see generators)."""
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        family = getattr(request, "epochauth_family", None)
        if previous_refresh_token is None and family is not None:
            refresh_token.token_family = family
            refresh_token.save(update_fields=["token_family"])
        jkt = proofs.key_of(request)
        if (
            jkt is not None
            and refresh_token.token_family
            and request.client.client_type == (request.client.CLIENT_PUBLIC)
        ):
            # RFC 9449 section 5: a public client's refresh tokens are bound to its key.
            proofs.bind(refresh_token.token_family, jkt)
        return refresh_token

    def save_authorization_code(
        self, client_id: str, code: dict[str, str], request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """RFC 9449 section 10: ``dpop_jkt`` (a thumbprint: :func:`.proofs.check_requested_key`)
        binds the code (its family) to that key."""
        super().save_authorization_code(client_id, code, request, *args, **kwargs)
        jkt = getattr(request, "dpop_jkt", None)
        if jkt:
            proofs.bind(revocation.code_family(code["code"]), str(jkt))

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Any, *args: Any, **kwargs: Any
    ) -> None:
        """RFC 7009: besides DOT's rows, deny the JWT ids at once (a JWT would stay valid otherwise).

        DOT also revokes the refresh token bound to a revoked access token; a family left without a
        usable refresh token loses all its access tokens, the ones of earlier rotations included.
        """
        application = getattr(request.client, "pk", None)
        if application is None:  # DOT revokes nothing either
            return
        digest = checksum(token)
        access_tokens = get_access_token_model().objects.filter(
            Q(token_checksum=digest) | Q(refresh_token__token_checksum=digest),
            application_id=application,
        )
        refresh_tokens = get_refresh_token_model().objects.filter(
            Q(token_checksum=digest) | Q(access_token__token_checksum=digest),
            application_id=application,
        )
        with revocation.ending(access_tokens, refresh_tokens):
            super().revoke_token(token, token_type_hint, request, *args, **kwargs)

    def validate_bearer_token(self, token: str, scopes: list[str], request: Any) -> bool:
        """Our access tokens are JWTs: checked by our revocation (an epoch bump or a logout ends
        them at once), not by DOT's row, which outlives neither but lags behind a denial. Any other
        token (DOT's own opaque ones, a resource server's introspected ones) is DOT's to check. A
        DPoP-bound token comes verified (:data:`BOUND_KEY`): oauthlib reads ``Bearer`` only."""
        bound = request.headers.get(BOUND_KEY)
        if bound is not None:
            user, access = bound
        elif not is_own_token(token or ""):
            return super().validate_bearer_token(token, scopes, request)
        else:
            try:
                user, access = authentication.authenticate_token(token)
            except exceptions.InvalidToken:
                return False
        granted = split_scope(access.claims.get("scope", ""))
        if not set(scopes) <= set(granted):
            return False
        request.user = user
        request.scopes = granted
        request.access_token = access
        request.client = (
            None
            if access.is_first_party
            else get_application_model()
            .objects.filter(client_id=access.claims.get("client_id"))
            .first()
        )
        return True

    def get_userinfo_claims(self, request: Any) -> dict[str, Any]:
        """The claims of the token's end user, read from the user row: a client-credentials token
        has none (:class:`NoEndUser`); a user gone without an epoch bump (a row deleted behind
        Django's back) makes the token no token (:class:`~epochauth.exceptions.InvalidToken`)."""
        access = request.access_token
        if isinstance(access, tokens.AccessToken) and access.is_client_credentials:
            raise NoEndUser()
        user = get_user_model()._default_manager.filter(pk=request.user.pk, is_active=True).first()
        if user is None:
            raise exceptions.InvalidToken(_lazy("The user is inactive or deleted"))
        request.user = user
        return super().get_userinfo_claims(request)

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        """The standard claims we know of a user; DOT hands out each one for its scope only."""
        return {claim: value(request.user) for claim, value in USER_CLAIMS.items()}

    def get_oidc_issuer_endpoint(self, request: Any) -> str:
        """ID tokens name the issuer our access tokens name."""
        return conf.epochauth_settings.ISSUER

    def finalize_id_token(
        self, id_token: dict[str, Any], token: Any, token_handler: Any, request: Any
    ) -> str:
        """DOT's ID token, signed as :func:`~epochauth.oauth.openid.sign_id_token` says (RS256 with
        our ID-token key, published in our JWKS, unless the application chose HS256); ``sid`` names
        the refresh-token family the login started, which logout, logout-all, epoch bumps and the
        admin end."""
        claims, expires = self.get_id_token_dictionary(token, token_handler, request)
        id_token.update(claims)
        # oauthlib bug #746, as in DOT: the nonce of a code grant is not always copied over.
        if "nonce" not in id_token and request.nonce:
            id_token["nonce"] = request.nonce
        family = getattr(request, "epochauth_claims", {}).get(tokens.CLAIM_TOKEN_FAMILY)
        if family:
            id_token["sid"] = family
        encoded = openid.sign_id_token(id_token, request.client)
        with transaction.atomic(using=router.db_for_write(get_id_token_model())):
            row = self._save_id_token(id_token["jti"], request, expires)
        request.access_token = request.id_token = row
        return encoded

    def _get_key_for_token(self, token: str) -> JWK | None:
        """The key of an ID token of ours (RP-initiated logout's ``id_token_hint``, DOT linking an
        ID token to its access token): a published key of ours by ``kid``, or without ``kid`` an
        HS256 application's own secret, by ``aud``; never a key the token brings along, and never
        our HMAC secret."""
        try:
            header = jwt.get_unverified_header(token)
            audience = jwt.decode(token, options={"verify_signature": False}).get("aud")
        except jwt.DecodeError:
            return None
        kid = header.get("kid")
        if kid is None and header.get("alg") == "HS256":
            if not isinstance(audience, str | list):
                return None
            application = self._get_client_by_audience(audience)
            if application is None or application.algorithm != application.HS256_ALGORITHM:
                return None
            try:
                return application.jwk_key
            except ImproperlyConfigured:
                return None
        key = next((k for k in keys.get_keyring().published() if k.kid == kid), None)
        return None if key is None else JWK.from_pyca(key.verifying_key)

    def validate_silent_login(self, request: Any) -> bool:
        """``prompt=none`` (OpenID Connect Core 1.0 section 3.1.2.1): the browser's user is signed
        in, and recently enough for ``max_age``; else ``login_required``.

        DOT validates the request once before it hands over the user (``request.user`` None): a
        browser signed in as no one gets ``login_required`` from DOT's view, and the answer is
        decided when the response is created for the signed-in user (``pages.AuthorizationView``).
        """
        user = request.user
        return user is None or (
            user.is_active and not openid.signed_in_too_long_ago(user, request.max_age)
        )

    def validate_user_match(
        self, id_token_hint: str | None, scopes: Any, claims: Any, request: Any
    ) -> bool:
        """``id_token_hint`` (OpenID Connect Core 1.0 section 3.1.2.1): once a user is signed in, the
        hint must be an ID token of ours for that user, expired or not (it names whom the relying
        party believes signed in; it is no credential); else ``login_required``, so that a relying
        party never gets a code for another user than the one it asked about (DOT accepts any)."""
        if not id_token_hint or request.user is None:
            return True
        key = self._get_key_for_token(id_token_hint)
        if key is None:
            return False
        try:
            hint = json.loads(JWT(key=key, jwt=id_token_hint, check_claims={}).claims)
        except (JWException, ValueError, TypeError):
            return False
        return (
            isinstance(hint, dict)
            and hint.get("iss") == self.get_oidc_issuer_endpoint(request)
            and hint.get("sub") == str(request.user.pk)
        )

    def validate_silent_authorization(self, request: Any) -> bool:
        """``prompt=none``: the user consented to these scopes for this client already
        (:func:`~epochauth.oauth.openid.consented`); else ``consent_required``."""
        user = request.user
        return user is None or openid.consented(user, request.client, request.scopes)
