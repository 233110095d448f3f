"""Token endpoints (login, refresh, renew, logout), whoami, and the discovery documents."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, cast

from django.apps import apps
from django.contrib.auth import authenticate
from django.contrib.auth.models import Group
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.db import DatabaseError
from django.http import HttpRequest
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ParseError, UnsupportedMediaType, ValidationError
from rest_framework.permissions import AllowAny, BasePermission, IsAuthenticated
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from . import (
    authentication,
    claims,
    communities,
    conf,
    dpop,
    exceptions,
    journal,
    keys,
    migrating,
    models,
    outage,
    profiles,
    resources,
    revocation,
    sessions,
    snapshots,
    statuslist,
    throttling,
    tokens,
)
from .scopes import (
    group_name,
    issued_scopes,
    refused_user_scopes,
    split_scope,
    user_scopes,
    without_service_scopes,
)

logger = logging.getLogger(__name__)

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class ResourceField(serializers.ListField):
    """RFC 8707 ``resource``: repeated in a form, a string or a list of strings in JSON."""

    child = serializers.CharField(max_length=2048, allow_blank=True, trim_whitespace=False)

    def __init__(self) -> None:
        super().__init__(required=False, max_length=16)

    def to_internal_value(self, data: Any) -> list[Any]:
        return super().to_internal_value([data] if isinstance(data, str) else data)


class LoginSerializer(serializers.Serializer):
    username = serializers.CharField(max_length=150)
    password = serializers.CharField(max_length=4096, trim_whitespace=False)
    remember_me = serializers.BooleanField(default=False)
    scope = serializers.CharField(default="", allow_blank=True, max_length=1024)
    group = serializers.CharField(required=False, allow_null=True, max_length=150)
    resource = ResourceField()


class RefreshSerializer(serializers.Serializer):
    # Ours are 76 characters; a simplejwt refresh token being exchanged is a JWT (RS256: about 600).
    refresh_token = serializers.CharField(max_length=2048)
    resource = ResourceField()


def _checked_scope(requested: list[str], community: communities.Community | None = None) -> str:
    """The scopes a login asked for, each one a user may ask for or a group selection (in either
    spelling, issued in ours: :func:`~epochauth.scopes.issued_scopes`), and the selection of the
    login's ``community`` (``vo:<slug>``, whether it was asked for or is the default)."""
    asked = [name for name in requested if communities.community_name(name) is None]
    problem = refused_user_scopes(name for name in asked if group_name(name) is None)
    if problem:
        raise exceptions.OAuthError("invalid_scope", problem)
    return " ".join(issued_scopes(asked + ([community.scope] if community is not None else [])))


def _selects_group(requested: list[str], data: dict[str, Any]) -> bool:
    """Whether a login names a group (``group``, or one in ``scope``)."""
    return bool(data.get("group")) or any(group_name(name) for name in requested)


def _selected_group(
    requested: list[str],
    group: str | None,
    found: tokens.Standing,
    community: communities.Community | None = None,
) -> Any:
    """The group a login selects: by ``group`` or a group selection in ``scope`` (``g:<group>``,
    ``wlcg.groups:/<group>``), one of the user's groups (``found``) in the login's ``community`` (or
    the site's), at most one."""
    names = {name for name in map(group_name, requested) if name} | ({group} if group else set())
    if len(names) > 1:
        raise exceptions.OAuthError("invalid_scope", _("Select at most one group"))
    if not names:
        return None
    name = names.pop()
    if name not in found.groups:
        raise exceptions.OAuthError("invalid_scope", _("You are not a member of that group"))
    if communities.foreign_groups(community, [found.groups[name]]):
        raise exceptions.OAuthError(
            "invalid_scope", _("That group is not in the selected community")
        )
    return Group(pk=found.groups[name], name=name)


def _token_response(session: models.Session, refresh_token: str | None, access: Any) -> Response:
    """RFC 6749 §5.1's members, and who the token is for: the user (``id`` is the token's ``sub``),
    their groups (those the token lists: a community's token only its community's and the site's)
    and the selected one, and the community (``vo``), from the mint (no query, nothing added to
    the token). Extra members are allowed (§5.1); a client that knows only §5.1 ignores them."""
    user = session.user
    body = {
        "access_token": access.token,
        # RFC 9449 section 5: a token bound to a key is of type DPoP.
        "token_type": dpop.SCHEME if dpop.confirmation(access.claims) else "Bearer",
        "expires_in": access.expires_in,
        "scope": access.claims.get("scope", ""),
        "user": {"id": str(user.pk), "username": user.get_username()},
        "groups": sorted(tokens.group_names(access.claims)),
        "group": session.group.name if session.group is not None else None,
        "vo": session.community or None,
    }
    if refresh_token is not None:
        body.update(
            refresh_token=refresh_token, refresh_expires_in=sessions.refresh_expires_in(session)
        )
    return Response(body, headers=NO_STORE)


def _session_claims(session: models.Session, bound_to: str | None) -> dict[str, Any]:
    """What a session's access token carries besides ours: its status-list entry, and the thumbprint
    of the DPoP key it is bound to (RFC 9449 section 6)."""
    claims = statuslist.reference(session)
    if bound_to:
        claims["cnf"] = {"jkt": bound_to}
    return claims


def _session_response(
    session: models.Session,
    refresh_token: str | None,
    request: Request,
    aud: Any = None,
    bound_to: str | None = None,
) -> Response:
    """A new access token for ``session`` (its scope, group, standing and resources) in a token
    response; ``aud``: what a refresh narrowed the session's resources to; ``bound_to``: the DPoP key
    thumbprint the new token is bound to (RFC 9449 section 6)."""
    standing = sessions.standing(session)
    access = tokens.mint_access_token(
        session.user,
        scope=without_service_scopes(session.scope),
        group=session.group,
        session_id=session.id.hex,
        standing=standing,
        session=session,
        request=request,
        aud=aud or resources.audience(session.resources),
        extra_claims=_session_claims(session, bound_to),
        community=communities.get(session.community),
    )
    return _token_response(session, refresh_token, access)


#: One serializer of each class per thread, its fields bound once: a new serializer deep-copies
#: every declared field (some 50 µs a login, more than the checks); validating keeps no state on a
#: serializer or its fields, so one can check every body of its thread.
class _Serializers(threading.local):
    def __init__(self) -> None:
        self.held: dict[type[serializers.Serializer], serializers.Serializer] = {}


_serializers = _Serializers()


def _serializer(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    held = _serializers.held
    serializer = held.get(serializer_class)
    if serializer is None:
        serializer = held[serializer_class] = serializer_class()
    return serializer


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    """The body's fields, checked by ``serializer_class``; anything else is ``400 invalid_request``."""
    try:
        data = request.data
    except (
        ParseError,
        UnsupportedMediaType,
        RecursionError,
        RequestDataTooBig,
        TooManyFieldsSent,
    ):
        # OAuth clients expect an RFC 6749 error body; deeply nested JSON must not become a 500, nor a
        # body Django refuses (DATA_UPLOAD_MAX_MEMORY_SIZE, DATA_UPLOAD_MAX_NUMBER_FIELDS) an HTML page.
        raise exceptions.OAuthError(
            "invalid_request", _("The request body could not be parsed")
        ) from None
    try:
        # What is_valid() runs, without the serializer it would need per body.
        return _serializer(serializer_class).run_validation(data)
    except ValidationError as exc:
        # A body that is no object at all: DRF's Serializer.errors names it non_field_errors.
        names = exc.detail if isinstance(exc.detail, dict) else [api_settings.NON_FIELD_ERRORS_KEY]
        fields = ", ".join(sorted(map(str, names)))
        message = _("Missing or invalid fields: %(fields)s") % {"fields": fields}
        raise exceptions.OAuthError("invalid_request", message) from None


class EpochAuthView(APIView):
    """Base of our views: a database outage is a 503 the client may retry, never a 500; a token
    request's refused DPoP proof is a 400 ``invalid_dpop_proof`` or ``use_dpop_nonce`` (RFC 9449
    section 5; ``epochauth.dpop.NonceMiddleware`` adds the nonce)."""

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, exceptions.InvalidProof):
            exc = exceptions.OAuthError(exc.error, exc.description)
        elif isinstance(exc, DatabaseError | snapshots.StateUnavailable):
            logger.error(
                "epochauth: revocation state unavailable in %s", type(self).__name__, exc_info=exc
            )
            exc = exceptions.ServiceUnavailable()
        return super().handle_exception(exc)


def _proof_key(request: Request) -> str | None:
    """The thumbprint of the key the token request's DPoP proof is of, None without a proof."""
    proof = dpop.token_request_proof(
        request.META, request.method or "", request.build_absolute_uri()
    )
    return proof.jkt if proof is not None else None


class TokenView(EpochAuthView):
    """``POST /auth/token/``: username and password for an access and a refresh token."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    def get_authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{exceptions.REALM}"'

    def post(self, request: Request) -> Response:
        data = validated(LoginSerializer, request)
        # Before the password: a refused proof is no guess.
        jkt = _proof_key(request) or ""
        attempt = throttling.LoginAttempt(request, data["username"])
        attempt.start()
        try:
            user = authenticate(
                request._request, username=data["username"], password=data["password"]
            )
        except DatabaseError:
            attempt.take_back()  # an outage (503) is no failed guess
            raise
        if user is None:
            models.AuditEvent.objects.create(
                action="login_failed", detail={"username": data["username"][:150]}
            )
            raise exceptions.OAuthError(
                "invalid_grant", _("Invalid username or password"), status_code=401
            )
        attempt.succeeded()
        requested = split_scope(data["scope"])
        try:
            community = communities.choose(user.pk, requested)
        except communities.Refused as exc:
            raise exceptions.OAuthError("invalid_scope", exc.description) from None
        slug = community.slug if community is not None else ""
        # Choosing a group needs the user's groups first; else they are read with the inserts.
        found = (
            tokens.read_standing(user.pk, community=slug)
            if _selects_group(requested, data)
            else None
        )
        group = (
            None
            if found is None
            else _selected_group(requested, data.get("group"), found, community)
        )
        scope = _checked_scope(requested, community)
        aud = resources.audience(data.get("resource", ()))
        session, refresh_token = sessions.start_session(
            user,
            remember_me=data["remember_me"],
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            scope=scope,
            group=group,
            resources=list(resources.names(aud)),
            login={},
            standing=found,
            dpop_jkt=jkt,
            community=slug,
        )
        found = sessions.standing(session)
        access = tokens.mint_access_token(
            user,
            scope=scope,
            group=group,
            session_id=session.id.hex,
            standing=found,
            session=session,
            request=request,
            aud=aud,
            extra_claims=_session_claims(session, jkt),
            community=community,
        )
        return _token_response(session, refresh_token, access)


class RefreshView(EpochAuthView):
    """``POST /auth/token/refresh/``: rotate the refresh token; claims are re-read from the database."""

    authentication_classes = ()
    permission_classes = (AllowAny,)

    def post(self, request: Request) -> Response:
        data = validated(RefreshSerializer, request)
        requested = data.get("resource", ())
        resources.audience(requested)  # malformed or not served: refused before anything changes
        jkt = _proof_key(request)
        # A refresh token of the system the site is moving from starts a session (epochauth.migrating).
        session, refresh_token = self.rotate(data["refresh_token"], request, requested, jkt)
        # RFC 8707 section 2.2: fewer of the session's resources, or any served one if it named none.
        aud = resources.audience(requested, session.resources or None)
        return _session_response(session, refresh_token, request, aud, bound_to=jkt)

    def rotate(
        self, refresh_token: str, request: Request, requested: Any, jkt: str | None
    ) -> tuple[models.Session, str]:
        """The session and its next refresh token: from the database, or while it is unreachable
        or the outage journal is not replayed yet, from the mirror (:mod:`epochauth.outage`), so
        that rotations reach the database in the order they were made."""
        if journal.is_empty():
            try:
                started = migrating.exchanged(refresh_token, request)
                if started is not None and jkt is not None:
                    # RFC 9449 section 5: the session it starts is bound like a login's.
                    started[0].dpop_jkt = jkt
                    started[0].save(update_fields=["dpop_jkt"])
                return started or sessions.rotate(refresh_token, requested, dpop_jkt=jkt)
            except journal.OUTAGE:
                pass
        return outage.rotate(refresh_token, requested, jkt)


class OAuthServer(Protocol):
    """What the optional ``epochauth.oauth`` app's config hands over; this module does not import the
    app that builds on it."""

    def server_metadata(self, request: HttpRequest, openid: bool = True) -> dict[str, Any]: ...

    def is_openid_provider(self) -> bool: ...

    def end_family(self, family: str) -> None: ...


def _oauth_server() -> OAuthServer:
    """Only when ``apps.is_installed("epochauth.oauth")``."""
    return cast(OAuthServer, apps.get_app_config("epochauth_oauth"))


class BearerView(EpochAuthView):
    """A view that needs one of our own bearer tokens."""

    authentication_classes = (authentication.BearerAuthentication,)
    permission_classes: tuple[type[BasePermission], ...] = (IsAuthenticated,)

    def token(self, request: Request) -> tokens.AccessToken:
        """``request.auth``: what ``BearerAuthentication`` (the only one here) verified."""
        return cast(tokens.AccessToken, request.auth)

    def session(self, request: Request) -> models.Session:
        sid = self.token(request).session_id
        session = (
            models.Session.objects.select_related("user", "group", "status_slot")
            .filter(pk=sid)
            .first()
            if sid
            else None
        )
        if session is None:
            raise exceptions.OAuthError(
                "invalid_request", _("This access token does not belong to a session")
            )
        return session


class RenewView(BearerView):
    """``POST /auth/token/renew/``: a fresh access token for the same session; the old one stays valid."""

    def post(self, request: Request) -> Response:
        try:
            session = self.session(request)
            sessions.check_session(session)
        except journal.OUTAGE:
            # The database is unreachable: the session as the mirror holds it (epochauth.outage).
            sid = self.token(request).session_id
            if not sid:
                raise
            session = outage.mirrored_session(session_id=sid)
        # A token bound to a key renews bound to it: a renewal is no way out of the binding.
        return _session_response(session, None, request, bound_to=self.token(request).dpop_jkt)


class LogoutView(BearerView):
    """``POST /auth/logout/``: end this session (its refresh and access tokens); others keep working.
    While the database is unreachable, through the outage journal (:mod:`epochauth.outage`)."""

    def post(self, request: Request) -> Response:
        token = self.token(request)
        if token.session_id:
            try:
                sessions.end_session(self.session(request), reason="logout", actor=request.user)
            except journal.OUTAGE:
                outage.end_session(token.session_id, request.user, "logout")
            return Response(status=204)
        token_id = revocation.denylist_id(token.claims)
        if token_id is None:
            raise exceptions.OAuthError(
                "invalid_request", _("This token has no id to revoke; use /auth/logout-all/")
            )
        # Expiry is checked with leeway: deny the id for as long as the token is accepted.
        until = token.expires_at + conf.epochauth_settings.LEEWAY
        named = token.claims.get(tokens.CLAIM_TOKEN_FAMILY)
        family = named if isinstance(named, str) and apps.is_installed("epochauth.oauth") else None
        try:
            revocation.revoke_id(token_id, until, reason="logout")
            if family is not None:
                # A login at the authorization server (a refresh-token family): logout ends all of
                # it, or its refresh token would go on minting.
                _oauth_server().end_family(family)
        except journal.OUTAGE:
            denied = [(token_id, until.timestamp())]
            if family is not None:
                # Its other access tokens until the replay ends the family's rows.
                margin = sessions.access_token_margin().total_seconds()
                denied.append((family, time.time() + margin))
            outage.deny(denied, "logout", family)
        return Response(status=204)


class IsEndUser(BasePermission):
    """A token an end user holds: a client-credentials token stands for its application (its ``sub``
    is the application's owner only so that the owner's standing ends it), not for the owner."""

    message = _("A client-credentials token stands for its application, not for a user.")

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        return not (isinstance(token, tokens.AccessToken) and token.is_client_credentials)


class LogoutAllView(BearerView):
    """``POST /auth/logout-all/``: bump the caller's epoch; every token of the user stops working.
    Only the user's own tokens may: an application's client-credentials token cannot log its owner
    out everywhere."""

    permission_classes = (IsAuthenticated, IsEndUser)

    def post(self, request: Request) -> Response:
        user_id = str(request.user.pk)
        try:
            revocation.bump_epoch(
                models.Epoch.Kind.USER, user_id, actor=request.user, reason="logout-all"
            )
        except journal.OUTAGE:
            # The caller's token passed with its epoch: the user's is at least that.
            floor = int(self.token(request).claims.get(tokens.CLAIM_EPOCH, 0))
            outage.bump_epoch(models.Epoch.Kind.USER, user_id, floor, request.user, "logout-all")
        return Response(status=204)


class RevokeSerializer(serializers.Serializer):
    user = serializers.CharField(required=False, max_length=150)
    group = serializers.CharField(required=False, max_length=150)
    issuer = serializers.CharField(required=False, max_length=255)
    subject = serializers.CharField(required=False, max_length=255)
    community = serializers.CharField(required=False, max_length=64)
    all = serializers.BooleanField(required=False, default=False)
    reason = serializers.CharField(required=False, default="api", allow_blank=True, max_length=255)


class CanRevoke(BasePermission):
    """Holders of ``epochauth.change_epoch`` (superusers, or an account given it for automation), with
    a Django session or a token of our own login: not with a token issued to an OAuth client, whatever
    its scope, nor with another issuer's."""

    message = (
        "Revoking needs the permission epochauth.change_epoch and a token of this service's login."
    )

    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if isinstance(token, tokens.AccessToken) and not token.is_first_party:
            return False
        return request.user.has_perm("epochauth.change_epoch")


class RevokeView(EpochAuthView):
    """``POST /auth/revoke/``: end the tokens of a user, of a group (those that selected it), of an
    external identity, of a community (every token of it), or everyone's."""

    authentication_classes = (
        authentication.BearerAuthentication,
        authentication.SessionAuthentication,
    )
    permission_classes = (IsAuthenticated, CanRevoke)

    def post(self, request: Request) -> Response:
        data = validated(RevokeSerializer, request)
        named = [key for key in ("user", "group", "issuer", "community", "all") if data.get(key)]
        if len(named) != 1 or ("issuer" in data) != ("subject" in data):
            raise exceptions.OAuthError(
                "invalid_request",
                _(
                    'Name exactly one of "user", "group", "issuer" with "subject", "community", '
                    '"all": true'
                ),
            )
        try:
            target = revocation.find_target(
                **{k: data.get(k) for k in ("user", "group", "issuer", "subject", "community")}
            )
        except revocation.NoSuchTarget as exc:
            raise exceptions.OAuthError("invalid_target", str(exc), status_code=404) from None
        value = revocation.bump_epoch(
            target.kind, target.object_id, actor=request.user, reason=data["reason"] or "api"
        )
        return Response({"revoked": target.label, "epoch": value.value})


class WhoAmIView(EpochAuthView):
    """``GET /auth/whoami/``: who the bearer token (or the Django session) says the caller is."""

    permission_classes = (IsAuthenticated,)

    authentication_classes = (
        authentication.BearerAuthentication,
        authentication.SessionAuthentication,
    )

    def get(self, request: Request) -> Response:
        token = request.auth
        if isinstance(token, tokens.AccessToken):
            return Response(
                {
                    "issuer": token.issuer,
                    "subject": token.subject,
                    "username": request.user.get_username(),
                    "groups": list(token.groups),
                    "scope": token.scope,
                    "group": token.group,
                    "vo": token.vo,
                    "expires_at": token.expires_at.isoformat(),
                }
            )
        user = request.user
        return Response(
            {
                "issuer": conf.epochauth_settings.ISSUER,
                "subject": str(user.pk),
                "username": user.get_username(),
                "groups": sorted(user.groups.values_list("name", flat=True)),
                "scope": "",
                "group": None,
                "vo": None,
                "expires_at": request.session.get_expiry_date().isoformat(),
            }
        )


class PublicView(EpochAuthView):
    authentication_classes = ()
    permission_classes = (AllowAny,)


def public_document(document: Any) -> Response:
    """A discovery document or key set, which clients and caches may keep for five minutes."""
    return Response(document, headers={"Cache-Control": "public, max-age=300"})


class JWKSView(PublicView):
    """``GET /.well-known/jwks.json``: our public verification keys (never an HMAC secret)."""

    def get(self, request: Request) -> Response:
        return public_document(keys.get_keyring().jwks())


def community_or_404(slug: str) -> communities.Community:
    """The community of a URL, 404 for one the site does not have."""
    community = communities.get(slug)
    if community is None:
        raise NotFound(_("No such community"))
    return community


class CommunityJWKSView(PublicView):
    """``GET /<vo>/.well-known/jwks.json``: a community's public verification keys."""

    def get(self, request: Request, community: str) -> Response:
        keyring = community_or_404(community).keyring
        return public_document(keyring.jwks())


class StatusListRenderer(BaseRenderer):
    """A Status List Token as it is; an error (404, 406) says it by its status, without a body."""

    media_type = statuslist.MEDIA_TYPE
    format = "statuslist-jwt"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        return data.encode() if isinstance(data, str) else b""


class StatusListView(PublicView):
    """``GET /auth/statuslists/<n>``: our Status List Token ``n`` (draft-ietf-oauth-status-list
    section 8), for anyone holding one of our tokens; 404 while ``STATUS_LIST`` is off or for a list
    no session has an index in, 406 to an ``Accept`` without ``application/statuslist+jwt``."""

    renderer_classes = (StatusListRenderer,)

    def get(self, request: Request, number: int) -> Response:
        found = statuslist.list_token(number)
        if found is None:
            raise NotFound()
        token, ttl = found
        return Response(token, headers={"Cache-Control": f"public, max-age={ttl}"})


def issuer_url(request: Any, name: str, **kwargs: Any) -> str:
    """Absolute URL of a named view, under our issuer URL so metadata and ``iss`` agree."""
    path = reverse(name, kwargs=kwargs or None)
    issuer = conf.epochauth_settings.ISSUER
    if issuer.startswith(("https://", "http://")):
        return issuer.rstrip("/") + path
    return request.build_absolute_uri(path)


#: The ``epochauth_endpoints`` of our metadata: key -> URL name (epochauth/urls.py).
EPOCHAUTH_ENDPOINTS = {
    "token": "token",
    "refresh": "refresh",
    "renew": "renew",
    "logout": "logout",
    "logout_all": "logout-all",
    "revoke": "revoke",
    "whoami": "whoami",
}


#: What a community's metadata keeps of its own over the OAuth server's (the site's).
COMMUNITY_OWN_METADATA = frozenset({"issuer", "jwks_uri", "scopes_supported"})


def authorization_server_metadata(
    request: Any, community: communities.Community | None = None
) -> dict[str, Any]:
    """RFC 8414 metadata: our keys and token endpoint, and the OAuth server's endpoints and grants
    when ``epochauth.oauth`` is installed. A ``community``'s: its issuer, its keys and scopes, our
    login and the OAuth server's endpoints, whose grants select it with ``vo:<slug>``; not OpenID
    Provider mode's additions: its ID tokens carry the site's issuer."""
    if community is not None:
        issuer = community.issuer
        jwks_uri = issuer_url(request, "epochauth-community-jwks", community=community.slug)
        scopes = sorted([*user_scopes(), community.scope])
    else:
        issuer = conf.epochauth_settings.ISSUER
        jwks_uri = issuer_url(request, "epochauth-jwks")
        scopes = sorted(user_scopes())
    document = {
        "issuer": issuer,
        "jwks_uri": jwks_uri,
        "token_endpoint": issuer_url(request, "epochauth-token"),
        "grant_types_supported": ["password", "refresh_token"],
        "token_endpoint_auth_methods_supported": ["none"],
        "scopes_supported": scopes,
        # RFC 9449 section 5.1: every token endpoint takes DPoP proofs, the OAuth server's too.
        "dpop_signing_alg_values_supported": list(conf.epochauth_settings.DPOP_ALGORITHMS),
        # No authorization endpoint without epochauth.oauth: no response type.
        "response_types_supported": [],
        # Our own endpoints by name: with the OAuth server, its metadata takes over token_endpoint.
        "epochauth_endpoints": {
            key: issuer_url(request, f"epochauth-{name}")
            for key, name in EPOCHAUTH_ENDPOINTS.items()
        },
    }
    # The authorization server's endpoints and grants, from its app config.
    if apps.is_installed("epochauth.oauth"):
        server = _oauth_server().server_metadata(request, openid=community is None)
        if community is not None:
            server = {k: v for k, v in server.items() if k not in COMMUNITY_OWN_METADATA}
        document.update(server)
    return document


def acts_as_openid_provider() -> bool:
    """OpenID Provider mode of the OAuth server (``epochauth.oauth``), with a key for RS256 ID tokens:
    otherwise RFC 8414 metadata is all we publish (an OpenID document would promise ID tokens)."""
    return apps.is_installed("epochauth.oauth") and _oauth_server().is_openid_provider()


class AuthorizationServerMetadataView(PublicView):
    """``GET /.well-known/oauth-authorization-server``: RFC 8414 metadata."""

    def get(self, request: Request) -> Response:
        document = authorization_server_metadata(request._request)
        return public_document(document)


class CommunityMetadataView(PublicView):
    """``GET /.well-known/oauth-authorization-server/<vo>``: a community's RFC 8414 metadata (path
    insertion, section 3.1)."""

    def get(self, request: Request, community: str) -> Response:
        document = authorization_server_metadata(request._request, community_or_404(community))
        return public_document(document)


class CommunityOpenIDConfigurationView(CommunityMetadataView):
    """``GET /<vo>/.well-known/openid-configuration``: the same document, for clients that read only
    this path under an issuer (the WLCG profile's SciTokens); it promises no ID token."""


class OpenIDConfigurationView(PublicView):
    """``GET /.well-known/openid-configuration``: OpenID Connect Discovery 1.0 metadata, only when we
    act as an OpenID provider (404 otherwise: an invalid OpenID document misleads clients). A WLCG
    issuer (``TOKEN_PROFILE = "wlcg"``) that is none publishes its RFC 8414 metadata there: the WLCG
    Common JWT Profile 1.3 (section 4.2.1) requires the metadata with ``jwks_uri`` at this path, the
    only one the SciTokens library reads, and that document promises no ID token."""

    def get(self, request: Request) -> Response:
        if not acts_as_openid_provider():
            if conf.epochauth_settings.TOKEN_PROFILE == profiles.WLCG:
                document = authorization_server_metadata(request._request)
                return public_document(document)
            raise NotFound(
                _(
                    "This service is no OpenID provider; see /.well-known/oauth-authorization-server"
                )
            )
        metadata = authorization_server_metadata(request._request)
        document = {
            **metadata,
            "subject_types_supported": ["public"],
            "claims_supported": [
                "iss",
                "sub",
                "aud",
                "exp",
                "iat",
                "jti",
                "scope",
                "preferred_username",
                "groups",
                *claims.declared_claim_names(),
            ],
        }
        # OpenID Provider mode adds its ID-token and userinfo claims and algorithms (epochauth.oauth).
        extra = [
            c
            for c in metadata.get("claims_supported", [])
            if c not in document["claims_supported"]
        ]
        document["claims_supported"] += extra
        return public_document(document)
