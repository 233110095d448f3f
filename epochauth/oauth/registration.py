"""Dynamic client registration (RFC 7591) and its management (RFC 7592) with epochauth's policy, on
DOT's Application; ``EPOCHAUTH["CLIENT_REGISTRATION"]`` switches it on (``None``, off, by default).

DOT 3.4 ships views for both, but they register what a request asks for (a confidential client with
the client-credentials grant, any redirect URI DOT accepts) and keep the registration access token as
a DOT access token, which DOT's own resource checks would take as a bearer token. Here a registered
client is always public, with the device grant or the authorization-code grant (PKCE, check
``epochauth.oauth.E007``), user scopes only (its :class:`~epochauth.oauth.models.AllowedScopes` row),
https or loopback redirect URIs, never ``skip_authorization``; the registration access token exists only
in the answer to its client, the server keeps its SHA-256 (:class:`~.models.ClientRegistration`).
RFC 7591 section 2 lets the server replace requested metadata: the token endpoint authentication method
is always ``none`` and scopes not offered here are left out; a grant, a redirect URI or a value that
cannot be honoured is refused with the RFC's error instead. ``dpop_bound_access_tokens`` (RFC 9449
section 5.2) is the application's :class:`~.models.DPoPPolicy`: true, every token request needs a proof.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.decorators import method_decorator
from django.utils.functional import Promise
from django.utils.translation import gettext_lazy as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from oauth2_provider.models import (
    AbstractApplication,
    get_access_token_model,
    get_application_model,
    get_refresh_token_model,
)
from rest_framework.exceptions import Throttled

from .. import authentication, conf, exceptions, jwks, snapshots, throttling, urns, views
from ..scopes import service_scopes, split_scope
from . import revocation, validators
from .models import (
    AllowedScopes,
    BackchannelLogout,
    ClientRegistration,
    DPoPPolicy,
    is_allowed_uri,
)
from .parameters import CONTROL_CHARACTER
from .scopes import known, requestable_scopes
from .views import _bearer_error, _error, _unavailable

OPEN = "open"
AUTHENTICATED = "authenticated"
MODES = (None, OPEN, AUTHENTICATED)

#: The grants a registered client may have (RFC 7591 name -> DOT's), one of them; refresh_token goes
#: with either.
GRANTS = {
    "authorization_code": AbstractApplication.GRANT_AUTHORIZATION_CODE,
    urns.DEVICE_CODE: AbstractApplication.GRANT_DEVICE_CODE,
}
RFC_GRANTS = {dot: rfc for rfc, dot in GRANTS.items()}
#: RFC 7592 section 2.2: what the server assigned, never part of an update request.
SERVER_FIELDS = (
    "registration_access_token",
    "registration_client_uri",
    "client_secret_expires_at",
    "client_id_issued_at",
)


def enabled() -> bool:
    return conf.epochauth_settings.CLIENT_REGISTRATION in (OPEN, AUTHENTICATED)


def registration_metadata(request: HttpRequest) -> dict[str, str]:
    """RFC 8414 section 2 / OpenID Connect Discovery section 3: the endpoint, only when it is on."""
    if not enabled():
        return {}
    return {"registration_endpoint": views.issuer_url(request, "oauth2_provider:dcr-register")}


def digest(token: str) -> str:
    """How a registration access token is kept: 256 random bits need no slow hash."""
    return hashlib.sha256(token.encode()).hexdigest()


#: Compared with when no registration matches, so that an unknown client takes as long as a wrong token.
NO_DIGEST = digest("")


class Refusal(Exception):
    """A request refused with an OAuth error (RFC 7591 section 3.2.2, RFC 6750 section 3)."""

    def __init__(
        self,
        error: str,
        description: str | Promise,
        status: int = 400,
        challenge: bool = False,
    ) -> None:
        super().__init__(error)
        self.error = error
        self.description = description
        self.status = status
        self.challenge = challenge

    def response(self, request: HttpRequest) -> JsonResponse:
        if self.challenge and self.error != "access_denied":
            return _bearer_error(self.error, self.description, self.status, request)
        response = _error(self.error, self.description, self.status)
        if self.challenge:
            # RFC 6750 section 3.1: a request without a token gets a challenge without an error.
            response["WWW-Authenticate"] = "Bearer"
        return response


def invalid(description: str | Promise) -> Refusal:
    return Refusal("invalid_client_metadata", description)


# ---------------------------------------------------------------------------------- the metadata
@dataclass(frozen=True)
class Metadata:
    """What a registration (or an update) registers, in DOT's terms."""

    grant: str
    redirect_uris: list[str]
    scopes: list[str]
    name: str
    #: OpenID Connect Back-Channel Logout 1.0 section 2.2 (empty: none).
    backchannel_logout_uri: str = ""
    backchannel_logout_session_required: bool = False
    #: RFC 9449 section 5.2: every token request must carry a proof (a required DPoPPolicy).
    dpop_bound_access_tokens: bool = False


#: The metadata read here; any other is ignored, as RFC 7591 section 2 asks.
FIELDS = (
    "client_name",
    "grant_types",
    "redirect_uris",
    "scope",
    "client_id",
    "client_secret",
    "backchannel_logout_uri",
    "backchannel_logout_session_required",
    "dpop_bound_access_tokens",
)


def storable(text: Any) -> bool:
    """No control character (none of the fields' syntaxes admits one, and PostgreSQL refuses a NUL)
    and no lone surrogate (a JSON escape can name one; no database stores it)."""
    if not isinstance(text, str):
        return True
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return not CONTROL_CHARACTER.search(text)


def parse(body: bytes) -> dict[str, Any]:
    """The request's JSON object, each field read here :func:`storable`."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise invalid(_("The request body must be a JSON object"))
    for name in FIELDS:
        value = data.get(name)
        if not all(map(storable, value if isinstance(value, list) else [value])):
            raise invalid(
                _("%(name)s holds a control character or is no valid Unicode") % {"name": name}
            )
    return data


def strings(data: dict[str, Any], name: str, default: list[str]) -> list[str]:
    value = data.get(name, default)
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise invalid(_("%(name)s must be an array of strings") % {"name": name})
    return value


def grant(data: dict[str, Any]) -> str:
    """One of :data:`GRANTS` (``authorization_code`` when none is named, RFC 7591 section 2)."""
    wanted = set(strings(data, "grant_types", ["authorization_code"])) - {"refresh_token"}
    refused = sorted(wanted - set(GRANTS))
    if refused:
        raise invalid(
            _("A registered client cannot have these grant types: %(grants)s")
            % {"grants": ", ".join(refused)}
        )
    if len(wanted) != 1:
        raise invalid(
            _("Register one grant type besides refresh_token: %(grants)s")
            % {"grants": " or ".join(GRANTS)}
        )
    return GRANTS[wanted.pop()]


def redirect_uris(data: dict[str, Any], dot_grant: str) -> list[str]:
    """The code grant's redirect URIs; the device grant redirects nowhere and registers none (its
    client may still send some, oidc-agent does)."""
    if dot_grant != AbstractApplication.GRANT_AUTHORIZATION_CODE:
        return []
    uris = strings(data, "redirect_uris", [])
    if not uris:
        raise Refusal(
            "invalid_redirect_uri", _("The authorization_code grant needs redirect_uris")
        )
    refused = [uri for uri in uris if not is_allowed_uri(uri)]
    if refused:
        raise Refusal(
            "invalid_redirect_uri",
            _("Redirect URIs must be https, or http to a loopback address: %(uris)s")
            % {"uris": " ".join(refused)},
        )
    return uris


def scopes(data: dict[str, Any]) -> list[str]:
    """The user scopes asked for that exist here (every one when none is asked for); never a
    service scope."""
    value = data.get("scope")
    if value is None or value == "":
        return sorted(requestable_scopes())
    if not isinstance(value, str):
        raise invalid(_("scope must be a string"))
    offered = [
        s for s in dict.fromkeys(split_scope(value)) if known(s) and s not in service_scopes()
    ]
    if not offered:
        raise invalid(_("None of these scopes is offered here: %(scope)s") % {"scope": value})
    return offered


def metadata(data: dict[str, Any]) -> Metadata:
    name = data.get("client_name", "")
    if not isinstance(name, str) or len(name) > 255:
        raise invalid(_("client_name must be a string of at most 255 characters"))
    dot_grant = grant(data)
    dpop_bound = data.get("dpop_bound_access_tokens", False)
    if not isinstance(dpop_bound, bool):
        raise invalid(_("dpop_bound_access_tokens must be true or false"))
    return Metadata(
        dot_grant,
        redirect_uris(data, dot_grant),
        scopes(data),
        name,
        *backchannel_logout(data),
        dpop_bound_access_tokens=dpop_bound,
    )


def backchannel_logout(data: dict[str, Any]) -> tuple[str, bool]:
    """``backchannel_logout_uri`` (https to a host that is no loopback, private or link-local
    address: this server POSTs there, and the registering party is anyone; its absence: none) and
    ``backchannel_logout_session_required``, which needs it. Each delivery checks again what the
    host resolves to (:func:`~epochauth.oauth.backchannel.resolves_to_public_addresses`)."""
    uri = data.get("backchannel_logout_uri", "")
    required = data.get("backchannel_logout_session_required", False)
    if not isinstance(uri, str) or len(uri) > 2000:
        raise invalid(_("backchannel_logout_uri must be a string"))
    if uri and not (is_allowed_uri(uri) and urlsplit(uri).scheme == "https" and _public_host(uri)):
        raise invalid(_("backchannel_logout_uri must be https to a public host"))
    if not isinstance(required, bool):
        raise invalid(_("backchannel_logout_session_required must be true or false"))
    if required and not uri:
        raise invalid(_("backchannel_logout_session_required needs a backchannel_logout_uri"))
    return uri, required


def _public_host(uri: str) -> bool:
    """No ``localhost`` and no address literal outside the global ranges."""
    host = (urlsplit(uri).hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return True  # a name: what it resolves to is checked at each delivery


def save(application: Any, fields: Metadata) -> None:
    """Write ``fields`` into a public application that always asks for consent, and its scopes."""
    application.name = fields.name
    application.authorization_grant_type = fields.grant
    application.redirect_uris = " ".join(fields.redirect_uris)
    application.client_type = AbstractApplication.CLIENT_PUBLIC
    # Empty and unhashed, as for epochauth-cli: DOT then takes "client_id:" in HTTP Basic
    # authentication (oidc-agent's way) as the public client naming itself.
    application.client_secret = ""
    application.hash_client_secret = False
    application.skip_authorization = False
    try:
        application.full_clean()
    except ValidationError as exc:
        if "redirect_uris" in exc.message_dict:
            raise Refusal(
                "invalid_redirect_uri", " ".join(exc.message_dict["redirect_uris"])
            ) from None
        raise invalid("; ".join(exc.messages)) from None
    application.save()
    AllowedScopes.objects.update_or_create(
        application=application, defaults={"scopes": " ".join(fields.scopes)}
    )
    if fields.backchannel_logout_uri:
        BackchannelLogout.objects.update_or_create(
            application=application,
            defaults={
                "uri": fields.backchannel_logout_uri,
                "session_required": fields.backchannel_logout_session_required,
            },
        )
    else:
        BackchannelLogout.objects.filter(application=application).delete()
    if fields.dpop_bound_access_tokens:
        DPoPPolicy.objects.update_or_create(application=application, defaults={"required": True})
    else:
        DPoPPolicy.objects.filter(application=application).delete()


def describe(request: HttpRequest, application: Any, token: str) -> dict[str, Any]:
    """RFC 7591 section 3.2.1 / RFC 7592 section 3: everything registered, as it is now (an admin
    may have changed it)."""
    allowed = AllowedScopes.objects.filter(application=application).first()
    scope = allowed.scopes if allowed else " ".join(sorted(requestable_scopes()))
    dot_grant = application.authorization_grant_type
    code = dot_grant == AbstractApplication.GRANT_AUTHORIZATION_CODE
    answer = {
        "client_id": application.client_id,
        "client_id_issued_at": int(application.created.timestamp()),
        "grant_types": [RFC_GRANTS.get(dot_grant, dot_grant), "refresh_token"],
        "response_types": ["code"] if code else [],
        "redirect_uris": application.redirect_uris.split(),
        "token_endpoint_auth_method": (
            "none"
            if application.client_type == AbstractApplication.CLIENT_PUBLIC
            else "client_secret_basic"
        ),
        "scope": scope,
        "registration_access_token": token,
        "registration_client_uri": views.issuer_url(
            request, "oauth2_provider:dcr-register-management", client_id=application.client_id
        ),
    }
    if application.name:
        answer["client_name"] = application.name
    logout = BackchannelLogout.objects.filter(application=application).first()
    if logout is not None:
        answer["backchannel_logout_uri"] = logout.uri
        answer["backchannel_logout_session_required"] = logout.session_required
    # Only when true, its default being false (RFC 9449 section 5.2): oidc-agent 4.2.6 fails to
    # delete a client whose registration answer carried it as false (tests/test_oidc_agent.py).
    if DPoPPolicy.objects.filter(application=application, required=True).exists():
        answer["dpop_bound_access_tokens"] = True
    return answer


# ---------------------------------------------------------------------------------- credentials
def bearer(request: HttpRequest) -> str | None:
    scheme, _sep, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def registrant(request: HttpRequest) -> Any:
    """Who registers: nobody in ``"open"`` mode (credentials are not read); in ``"authenticated"``
    mode the user of an access token of ours, which a client-credentials token has not: as
    ``Bearer``, or a DPoP-bound one as ``DPoP`` with its proof (RFC 9449 section 7)."""
    if conf.epochauth_settings.CLIENT_REGISTRATION == OPEN:
        return None
    header = request.META.get("HTTP_AUTHORIZATION", "")
    bound = authentication.is_dpop_scheme(header)
    token = (header[5:].strip() or None) if bound else bearer(request)
    if token is None:
        raise Refusal(
            "access_denied",
            _("Registering a client needs an access token of a user of this site"),
            401,
            challenge=True,
        )
    try:
        user, access = validators.verify_own_token(token, request if bound else None)
    except exceptions.InvalidToken as exc:
        description = (
            exc.description
            if validators.is_own_token(token)
            else _("Only an access token issued by this site registers a client")
        )
        raise Refusal(exc.error, description, 401, challenge=True) from None
    if access.is_client_credentials:
        raise Refusal(
            "access_denied",
            _(
                "A client-credentials token stands for an application: only a user registers a client"
            ),
            403,
        )
    # The token's user is lazy; the application's owner must be the row, and an active one.
    owner = get_user_model()._default_manager.filter(pk=user.pk, is_active=True).first()
    if owner is None:
        raise Refusal("invalid_token", _("The user is inactive or deleted"), 401, challenge=True)
    return owner


def registration(request: HttpRequest, client_id: str) -> Any:
    """The registration of ``client_id`` if the request presents its registration access token
    (compared in constant time); otherwise a 401, whether or not the client exists (RFC 7592 section 2)."""
    token = bearer(request)
    if token is None:
        raise Refusal(
            "access_denied", _("The registration access token is missing"), 401, challenge=True
        )
    found = (
        ClientRegistration.objects.select_related("application")
        .filter(application__client_id=client_id)
        .first()
    )
    matches = hmac.compare_digest(digest(token), found.token_digest if found else NO_DIGEST)
    if found is None or not matches:
        raise Refusal(
            "invalid_token",
            _("This is not the registration access token of this client"),
            401,
            challenge=True,
        )
    return found


# ---------------------------------------------------------------------------------- the views
class RegistrationEndpoint(View):
    """What both endpoints share: 404 while registration is off, OAuth errors, 503 when the database
    or the revocation state cannot be read."""

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not enabled():
            raise Http404()
        try:
            with transaction.atomic():
                return super().dispatch(request, *args, **kwargs)
        except Refusal as refusal:
            return refusal.response(request)
        except Throttled as exc:
            response = _error(
                "temporarily_unavailable",
                _("Too many clients were registered from this address; try again later"),
                429,
            )
            response["Retry-After"] = throttling.retry_after(exc)
            return response
        except (snapshots.StateUnavailable, jwks.IssuerUnavailable, DatabaseError):
            return _unavailable()


@method_decorator(csrf_exempt, name="dispatch")
class RegistrationView(RegistrationEndpoint):
    """``POST /o/register/`` (RFC 7591 section 3): a new public client, and its registration access
    token, shown this once."""

    def post(self, request: HttpRequest) -> HttpResponse:
        user = registrant(request)
        fields = metadata(parse(request.body))
        application = get_application_model()(
            user=user, registration_source=AbstractApplication.RegistrationSource.DCR
        )
        save(application, fields)
        token = secrets.token_urlsafe(32)
        ClientRegistration.objects.create(application=application, token_digest=digest(token))
        # Counted once it would be made: a refused request counts nothing, a throttled one rolls back.
        throttling.RegistrationAttempt(request).start()
        return JsonResponse(
            describe(request, application, token), status=201, headers=views.NO_STORE
        )


@method_decorator(csrf_exempt, name="dispatch")
class RegistrationManagementView(RegistrationEndpoint):
    """``/o/register/<client_id>/`` (RFC 7592 section 2): read, replace or delete one registration,
    with its registration access token as the bearer token."""

    def get(self, request: HttpRequest, client_id: str) -> HttpResponse:
        found = registration(request, client_id)
        token = bearer(request) or ""
        return JsonResponse(describe(request, found.application, token), headers=views.NO_STORE)

    def put(self, request: HttpRequest, client_id: str) -> HttpResponse:
        """The request replaces every field it may hold (section 2.2): what it omits is dropped, or
        the default registered again (scopes, grant)."""
        found = registration(request, client_id)
        data = parse(request.body)
        assigned = [name for name in SERVER_FIELDS if name in data]
        if assigned:
            raise invalid(
                _("An update must not hold what the server assigned: %(fields)s")
                % {"fields": ", ".join(assigned)}
            )
        if data.get("client_id") != client_id:
            raise invalid(_("An update must hold the client's client_id"))
        if data.get("client_secret"):
            raise invalid(_("A registered client has no client secret"))
        save(found.application, metadata(data))
        token = bearer(request) or ""
        return JsonResponse(describe(request, found.application, token), headers=views.NO_STORE)

    def delete(self, request: HttpRequest, client_id: str) -> HttpResponse:
        """The client and everything it was given end now (section 2.3): its JWTs are denied."""
        application = registration(request, client_id).application
        access_tokens = get_access_token_model().objects.filter(application=application)
        refresh_tokens = get_refresh_token_model().objects.filter(application=application)
        with revocation.ending(access_tokens, refresh_tokens):
            application.delete()
        return HttpResponse(status=204, headers=views.NO_STORE)
