"""The authorization policy of the test project: for every route and admin action, what each kind of
principal gets (tests/test_authorization_matrix.py calls them all and holds the answers to this).

A row says, per principal kind or group of kinds, which class of answer is required, and how the
route is called: a realistic request (a valid body where one is needed) and, for a route that changes
something, ``watch``: what it changes, so that ``ALLOW`` means it happened and any refusal means it did
not. A route or action without a row fails the matrix, and so does a row that matches nothing: the next
endpoint ships with a decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"

# ---------------------------------------------------------------------------------- outcome classes
#: 2xx, or a redirect that is not to a sign-in page; with ``watch``, the change happened.
ALLOW = "allow"
#: A redirect to a sign-in page (the admin's or LOGIN_URL); nothing changed.
LOGIN = "login"
#: 401 or 403: refused, whichever layer refused first; nothing changed.
REFUSED = "refused"
#: Any answer below 500, and nothing changed (an admin action not offered answers 302 "No action
#: selected"; what matters is that it was not done).
DENIED = "denied"
#: Or an exact status: 400, 401, 403, 404, 405.

# ---------------------------------------------------------------------------------- principal kinds
ANONYMOUS = "anonymous"  # a browser without a session (it has a CSRF cookie, as after any page)
PASSWORD = "password"  # POST /auth/token/ of an ordinary user (member of "physics"), no scope
PASSWORD_READ = "password[reports:read]"
PASSWORD_GROUP = "password[g:physics]"
PASSWORD_SUPERUSER = "password-superuser"  # a superuser's password token (has every permission)
#: The ordinary user's token bound to a key (``cnf.jkt``, RFC 9449), sent as ``DPoP`` with a fresh
#: proof per request: it may do what the same user's password token may (:data:`AS_IF`).
DPOP = "dpop"
IDP_USER = "idp-user"  # the real test IdP (tests/idp): a user's access token
IDP_CLIENT = "idp-client"  # the real test IdP: a client-credentials token
EXT = "ext"  # the loopback issuer (tests/loopback_issuer.py), allow-listed: no scope
EXT_READ = "ext[reports:read]"
EXT_TM = "ext[tokenmanager]"
EXT_OPENID = "ext[openid]"
EXT_GROUP = "ext[g:physics]"
EXT_ALL = "ext[every scope]"
#: Its group claim names "tm-operators", a local group that holds the Token Manager permission.
EXT_GROUPS = "ext[groups: tm-operators]"
CLIENT = "client-credentials"  # an ordinary confidential application: openid reports:read
SERVICE = "tokenmanager-service"  # confidential, client credentials, AllowedScopes "tokenmanager"
#: A Shared Signals receiver: confidential, client credentials, AllowedScopes "ssf:manage".
SSF_RX = "ssf-receiver"
CLI = "cli-device"  # the public client epochauth-cli, device flow: openid reports:read
STAFF = "staff"  # browser session (with CSRF) of staff without any permission
STAFF_VIEW = "staff-view"  # staff with every view_* permission and nothing else
SUPERUSER = "superuser"
BROWSER = "browser"  # the ordinary user's browser session, with its CSRF token
BROWSER_NO_CSRF = "browser-no-csrf"  # the same session, a request without the CSRF token

PRINCIPALS = [
    ANONYMOUS,
    PASSWORD,
    PASSWORD_READ,
    PASSWORD_GROUP,
    PASSWORD_SUPERUSER,
    DPOP,
    IDP_USER,
    IDP_CLIENT,
    EXT,
    EXT_READ,
    EXT_TM,
    EXT_OPENID,
    EXT_GROUP,
    EXT_ALL,
    EXT_GROUPS,
    CLIENT,
    SERVICE,
    SSF_RX,
    CLI,
    STAFF,
    STAFF_VIEW,
    SUPERUSER,
    BROWSER,
    BROWSER_NO_CSRF,
]

#: Groups of kinds a row may name instead of each kind (a kind's own name wins over its group's).
GROUPS: dict[str, frozenset[str]] = {
    "own-login": frozenset({PASSWORD, PASSWORD_READ, PASSWORD_GROUP, PASSWORD_SUPERUSER}),
    "oauth-client": frozenset({CLIENT, SERVICE, SSF_RX}),
    "external": frozenset(
        {IDP_USER, IDP_CLIENT, EXT, EXT_READ, EXT_TM, EXT_OPENID, EXT_GROUP, EXT_ALL, EXT_GROUPS}
    ),
    "staff-session": frozenset({STAFF, STAFF_VIEW, SUPERUSER}),
    "session": frozenset({STAFF, STAFF_VIEW, SUPERUSER, BROWSER}),
}
GROUPS["bearer"] = GROUPS["own-login"] | GROUPS["oauth-client"] | GROUPS["external"] | {CLI}
#: Kinds whose every answer is another kind's: sender-constraining a token changes who may use it,
#: never what it grants.
AS_IF = {DPOP: PASSWORD}
#: Every kind that sends no CSRF token: an unsafe request to a CSRF-protected view is refused.
GROUPS["no-csrf"] = GROUPS["bearer"] | {BROWSER_NO_CSRF}

#: Which principals the token endpoints must refuse to issue (their token is then None: the kind
#: calls every route as a caller without a token would). Finding 1: "tokenmanager" is a service
#: scope, never granted to a user's login, device or code flow, nor to an ordinary application.
ISSUANCE: dict[str, Any] = {
    PASSWORD: ALLOW,
    PASSWORD_READ: ALLOW,
    PASSWORD_GROUP: ALLOW,
    PASSWORD_SUPERUSER: ALLOW,
    CLIENT: ALLOW,
    SERVICE: ALLOW,
    CLI: ALLOW,
    # Not principals, the ways a user or an application could ask for the service scope:
    "password[tokenmanager]": 400,  # finding 1: a user's password login
    "device[tokenmanager]": 400,  # finding 1: the public CLI client's device flow
    "code[tokenmanager]": 400,  # finding 1: the code flow of a confidential web application
    "client-credentials[tokenmanager]": 400,  # finding 1: an application not made a service
    "exchange[tokenmanager]": 400,  # finding 1: exchanging ext[tokenmanager]
    # Dynamic client registration (issue 27): a registered client never holds a service scope.
    "registration[tokenmanager]": 400,  # registering a client with the scope
    "registered-device[tokenmanager]": 400,  # a registered client's device flow asking for it
    # WLCG host-based authorization (profile 1.3 section 2.2.4): "host.auth" is a service scope too,
    # whose token's sub is the application's client id; that must name a host (host:<fqdn>).
    "host-service[host.auth]": ALLOW,  # marked for it, client id host:xfer.example.org
    "service-without-host-id[host.auth]": 400,  # marked for it, client id "xfer"
    "password[host.auth]": 400,
    "device[host.auth]": 400,
    "code[host.auth]": 400,
    "client-credentials[host.auth]": 400,  # an application not marked for it
    "service[host.auth]": 400,  # marked for "tokenmanager" only
    "exchange[host.auth]": 400,
    "registration[host.auth]": 400,
    "registered-device[host.auth]": 400,
    # RFC 8707 (issue 29): a resource narrows aud to a service of RESOURCES; it grants nothing, and
    # one not served is invalid_target. Code and device grants keep no audience (a refresh could
    # widen it): a resource there is refused too.
    "password[resource]": ALLOW,
    "password[resource not served]": 400,
    "client-credentials[resource]": ALLOW,
    "client-credentials[resource not served]": 400,
    "client-credentials[resource, tokenmanager]": 400,  # still no service scope
    "exchange[resource]": ALLOW,
    "exchange[resource not served]": 400,
    "device[resource]": 400,
    "code[resource]": 400,
    # Shared Signals (issue 28): "ssf:manage" learns about other users' revocations, a service
    # scope: only an application the admin listed it for obtains it, by client credentials.
    SSF_RX: ALLOW,
    "password[ssf:manage]": 400,
    "device[ssf:manage]": 400,
    "code[ssf:manage]": 400,
    "client-credentials[ssf:manage]": 400,  # an application not listed for it
    "service[ssf:manage]": 400,  # listed for "tokenmanager" only
    "exchange[ssf:manage]": 400,
    "registration[ssf:manage]": 400,
    # Communities (issue 29): a login selects one of the user's communities with vo:<slug>; another
    # community's, or one the site does not have, is invalid_scope.
    "password[vo:lhcb, a member]": ALLOW,
    "password[vo:belle2, not a member]": 400,
    "password[vo:cta, no such community]": 400,
    "device[vo:lhcb, a member]": ALLOW,
    "device[vo:belle2, not a member]": 400,
    "exchange[vo:cta, no such community]": 400,
    # A community's identity_providers: a browser session signed in through another provider does
    # not approve a grant of it (device: access_denied after a page; code: invalid_scope to the
    # client). A password sign-in comes through no provider: membership alone decides.
    "device[vo:lhcb, through a provider lhcb does not take]": 400,
    "code[vo:lhcb, through a provider lhcb does not take]": 400,
    "device[vo:lhcb, a password sign-in]": ALLOW,
}


@dataclass(frozen=True)
class Row:
    """How one route (or admin action) is called, and what each principal must get.

    ``expect`` maps a kind, a group of :data:`GROUPS` or ``"*"`` to an outcome class; the kind's own
    entry wins, then the first group (in the row's order) it belongs to, then ``"*"``. ``data`` builds
    the body (form-encoded, or JSON with ``json=True``) and ``query`` the query string, from the
    matrix's context and the principal; ``kwargs`` fills the pattern's converters; ``watch`` reads
    the state the call may change.
    """

    expect: dict[str, Any]
    method: str = "GET"
    data: Callable[[Any, Any], dict[str, Any]] | None = None
    query: Callable[[Any, Any], dict[str, Any]] | None = None
    json: bool = False
    kwargs: Callable[[Any], dict[str, Any]] | None = None
    watch: Callable[[Any, Any], Any] | None = None
    #: Which finding of issue 25 the row encodes, if any (for the report of a failure).
    finding: str = ""
    #: Prepares the state the call needs for this principal (rolled back with the test).
    before: Callable[[Any, Any], None] | None = None

    def expected(self, principal: str) -> Any:
        if principal in self.expect:
            return self.expect[principal]
        principal = AS_IF.get(principal, principal)
        if principal in self.expect:
            return self.expect[principal]
        for key, outcome in self.expect.items():
            if principal in GROUPS.get(key, ()):
                return outcome
        return self.expect["*"]


def everyone(outcome: Any) -> dict[str, Any]:
    return {"*": outcome}


def authenticated(outcome: Any = ALLOW, anonymous: Any = 401) -> dict[str, Any]:
    """A DRF view with bearer and session authentication: anyone who proves who they are."""
    return {ANONYMOUS: anonymous, BROWSER_NO_CSRF: outcome, "*": outcome}


def csrf_form(outcome: dict[str, Any]) -> dict[str, Any]:
    """A Django form view (CSRF-protected): an unsafe request without the token is a 403 first."""
    return {BROWSER_NO_CSRF: 403, "no-csrf": 403, **outcome}


# ---------------------------------------------------------------------------------- what changes
def _epoch(kind: str, object_id: Any) -> int:
    from epochauth.models import Epoch

    row = Epoch.objects.filter(kind=kind, object_id=str(object_id)).first()
    return row.value if row else 0


def caller_epoch(ctx: Any, principal: Any) -> Any:
    """The epoch of the caller's user (None without one): logout-all bumps it."""
    user = principal.local_user()
    return None if user is None else _epoch("user", user.pk)


def victim_epoch(ctx: Any, principal: Any) -> int:
    return _epoch("user", ctx.victim.pk)


def callers_sessions(ctx: Any, principal: Any) -> Any:
    """The caller's live sessions (/oidc/tokens/ starts one; logout ends one)."""
    from epochauth.models import Session

    user = principal.local_user()
    return None if user is None else Session.objects.filter(user=user, revoked_at=None).count()


def token_state(ctx: Any, principal: Any) -> Any:
    """What logout changes for a bearer token: its session, or its id on the denylist."""
    from epochauth.models import RevokedToken

    return callers_sessions(ctx, principal), RevokedToken.objects.count()


def browser_session(ctx: Any, principal: Any) -> Any:
    """Whether the principal's browser session still exists (a logout deletes it)."""
    from django.contrib.sessions.models import Session as DjangoSession

    key = principal.session_key
    return key is not None and DjangoSession.objects.filter(session_key=key).exists()


def grants(ctx: Any, principal: Any) -> int:
    from oauth2_provider.models import get_grant_model

    return get_grant_model().objects.count()


def device_grant(ctx: Any, principal: Any) -> Any:
    from oauth2_provider.models import get_device_grant_model

    grant = get_device_grant_model().objects.get(user_code=ctx.device["user_code"])
    return grant.status, grant.user_id


def device_grants(ctx: Any, principal: Any) -> int:
    from oauth2_provider.models import get_device_grant_model

    return get_device_grant_model().objects.count()


def victims_oauth_tokens(ctx: Any, principal: Any) -> int:
    """The victim's grants at the portal (RP-initiated logout deletes them)."""
    from oauth2_provider.models import get_access_token_model

    return get_access_token_model().objects.filter(user=ctx.victim).count()


def revocable_token(ctx: Any, principal: Any) -> bool:
    from oauth2_provider.models import get_access_token_model

    return get_access_token_model().objects.filter(pk=ctx.revocable_pk).exists()


def issued(ctx: Any, principal: Any) -> Any:
    """Tokens handed out: sessions started and OAuth access tokens (a token endpoint adds one)."""
    from oauth2_provider.models import get_access_token_model

    from epochauth.models import Session

    return Session.objects.count(), get_access_token_model().objects.count()


def handed_upstream(ctx: Any, principal: Any) -> int:
    from epochauth.models import AuditEvent

    return AuditEvent.objects.filter(action="upstream_token_issued").count()


def registered_clients(ctx: Any, principal: Any) -> Any:
    """The dynamically registered applications, with their owners and grants."""
    from oauth2_provider.models import get_application_model

    registered = get_application_model().objects.filter(registration_source="dcr")
    return sorted(registered.values_list("client_id", "user_id", "authorization_grant_type"))


def accepted_simplejwt_access(ctx: Any, principal: Any) -> bool:
    """Set by the simplejwt refresh row's call: whether the access token it got is accepted."""
    return ctx.simplejwt_access_accepted()


# ---------------------------------------------------------------------------------- the API routes
def ssf_stream(ctx: Any, principal: Any) -> None:
    """A push stream of the loopback issuer as a Shared Signals transmitter, whose secret no
    principal holds."""
    from epochauth.models import SsfSubscription
    from epochauth.ssf.receiver import secret_hash

    SsfSubscription.objects.get_or_create(
        issuer=ctx.crafted.issuer,
        defaults={"stream_id": "s", "delivery": "push", "push_secret_hash": secret_hash("x" * 43)},
    )


def ssf_effects(ctx: Any, principal: Any) -> Any:
    """What a security event could change: epochs, active users."""
    from django.contrib.auth import get_user_model

    from epochauth.models import Epoch

    return (
        sorted(Epoch.objects.values_list("kind", "object_id", "value")),
        get_user_model().objects.filter(is_active=False).count(),
    )


def _login_body(ctx: Any, p: Any) -> dict[str, Any]:
    return {"username": ctx.member.username, "password": "pw"}


ROUTES: dict[str, Row] = {
    # /auth/: credentials in the body, not the caller's: anyone may log in or refresh.
    "epochauth-token": Row(everyone(ALLOW), "POST", _login_body, json=True, watch=issued),
    "epochauth-refresh": Row(
        everyone(ALLOW),
        "POST",
        lambda ctx, p: {"refresh_token": ctx.refresh_token},
        json=True,
    ),
    # A session of our own login is renewed; any other bearer token has none (400), no bearer 401.
    "epochauth-renew": Row(
        {ANONYMOUS: 401, "session": 401, BROWSER_NO_CSRF: 401, "own-login": ALLOW, "*": 400},
        "POST",
    ),
    # Any bearer token may end itself: its session, or its id on the denylist.
    "epochauth-logout": Row(
        {ANONYMOUS: 401, "session": 401, BROWSER_NO_CSRF: 401, "*": ALLOW},
        "POST",
        watch=token_state,
    ),
    # Any bearer token of a user may end every token of its own user; a client-credentials token of
    # ours stands for its application, which may not log its owner out everywhere.
    "epochauth-logout-all": Row(
        {ANONYMOUS: 401, "session": 401, BROWSER_NO_CSRF: 401, "oauth-client": 403, "*": ALLOW},
        "POST",
        watch=caller_epoch,
    ),
    # Revoking someone else: the permission epochauth.change_epoch, with our own login or a session.
    "epochauth-revoke": Row(
        {
            PASSWORD_SUPERUSER: ALLOW,
            SUPERUSER: ALLOW,
            ANONYMOUS: 401,
            BROWSER_NO_CSRF: 403,
            "*": 403,
        },
        "POST",
        lambda ctx, p: {"user": ctx.victim.username, "reason": "matrix"},
        json=True,
        watch=victim_epoch,
    ),
    "epochauth-whoami": Row(authenticated()),
    # The demo API: any caller who proves who they are; reports need the scope in a token.
    "api-hello": Row(authenticated()),
    "api-reports": Row(
        {
            ANONYMOUS: 401,
            PASSWORD_READ: ALLOW,
            IDP_USER: ALLOW,
            IDP_CLIENT: ALLOW,
            EXT_READ: ALLOW,
            EXT_ALL: ALLOW,
            CLIENT: ALLOW,
            CLI: ALLOW,
            "*": 403,
        }
    ),
    # Nobody here is in "operators".
    "api-staff-area": Row({ANONYMOUS: 401, "*": 403}),
    "api-schema": Row(everyone(ALLOW)),
    "api-docs": Row(everyone(ALLOW)),
    "demo-index": Row(everyone(ALLOW)),
    # Discovery documents are public; the OAuth server's RFC 8414 document is served by the first
    # pattern for that path (epochauth.well_known_urls), so the second can never answer.
    "epochauth-jwks": Row(everyone(ALLOW)),
    # A Token Status List is for anyone holding one of our tokens (the matrix's sessions have
    # indices in list 0).
    "epochauth-statuslist": Row(everyone(ALLOW), kwargs=lambda ctx: {"number": 0}),
    "epochauth-authorization-server-metadata": Row(everyone(ALLOW)),
    "epochauth-openid-configuration": Row(everyone(ALLOW)),
    # A community's (VO's) keys and metadata, under its issuer: public like the site's.
    "epochauth-community-jwks": Row(everyone(ALLOW), kwargs=lambda ctx: {"community": "lhcb"}),
    "epochauth-community-authorization-server-metadata": Row(
        everyone(ALLOW), kwargs=lambda ctx: {"community": "lhcb"}
    ),
    "epochauth-community-openid-configuration": Row(
        everyone(ALLOW), kwargs=lambda ctx: {"community": "lhcb"}
    ),
    # Moving from simplejwt: its login is anyone's; its refresh must never turn a revoked refresh
    # token into an access token that epochauth accepts.
    "simplejwt-token": Row(everyone(ALLOW), "POST", _login_body, json=True),
    "simplejwt-refresh": Row(
        everyone(DENIED),
        "POST",
        lambda ctx, p: {"refresh": ctx.simplejwt_refresh},
        json=True,
        watch=accepted_simplejwt_access,
        finding="2",
    ),
    # The Token Manager: a service capability, never a scope a user or another issuer may hold.
    "epochauth-tokenmanager-token": Row(
        {
            SERVICE: ALLOW,
            PASSWORD_SUPERUSER: ALLOW,  # a user with the permission
            ANONYMOUS: 401,
            "session": 401,
            BROWSER_NO_CSRF: 401,
            EXT_TM: 403,  # finding 1
            EXT_ALL: 403,  # finding 1
            EXT_GROUPS: 403,  # finding 4: a claim never joins a group that holds a permission
            "*": 403,
        },
        "POST",
        lambda ctx, p: {"username": ctx.victim.username},
        watch=handed_upstream,
        finding="1",
    ),
}

# ---------------------------------------------------------------------------------- shared signals
#: A stream is its receiver's alone: no bearer token is a 401, any other token a 403 (another
#: receiver's token would be a 404: tests/test_ssf_transmitter.py).
RECEIVER_ONLY = {SSF_RX: ALLOW, ANONYMOUS: 401, "session": 401, BROWSER_NO_CSRF: 401, "*": 403}


def _stream(ctx: Any, p: Any) -> dict[str, Any]:
    return {"stream_id": str(ctx.ssf_stream.stream_id)}


ROUTES.update(
    {
        "epochauth-ssf-configuration": Row(everyone(ALLOW)),
        # Creating a stream (the configuration endpoint's other methods share its checks).
        "epochauth-ssf-streams": Row(
            RECEIVER_ONLY,
            "POST",
            lambda ctx, p: {"delivery": {"method": "urn:ietf:rfc:8936"}},
            json=True,
            watch=lambda ctx, p: ctx.ssf_counts()["streams"],
        ),
        "epochauth-ssf-status": Row(
            RECEIVER_ONLY,
            "POST",
            lambda ctx, p: {**_stream(ctx, p), "status": "disabled"},
            json=True,
            watch=lambda ctx, p: ctx.ssf_counts()["status"],
        ),
        # Learning about the victim's revocations from now on.
        "epochauth-ssf-add-subject": Row(
            RECEIVER_ONLY,
            "POST",
            lambda ctx, p: {**_stream(ctx, p), "subject": ctx.victim_subject()},
            json=True,
            watch=lambda ctx, p: ctx.ssf_counts()["subjects"],
        ),
        "epochauth-ssf-remove-subject": Row(
            RECEIVER_ONLY,
            "POST",
            lambda ctx, p: {**_stream(ctx, p), "subject": ctx.victim_subject()},
            json=True,
            watch=lambda ctx, p: ctx.ssf_counts()["subjects"],
            before=lambda ctx, p: ctx.ssf_add_victim(),
        ),
        "epochauth-ssf-verify": Row(
            RECEIVER_ONLY,
            "POST",
            _stream,
            json=True,
            watch=lambda ctx, p: ctx.ssf_counts()["events"],
        ),
        # Acknowledging (so deleting) the stream's pending event.
        "epochauth-ssf-poll": Row(
            RECEIVER_ONLY,
            "POST",
            lambda ctx, p: {"ack": ["matrix-ssf-pending"]},
            json=True,
            kwargs=lambda ctx: {"stream_id": ctx.ssf_stream.stream_id},
            watch=lambda ctx, p: ctx.ssf_counts()["events"],
        ),
    }
)

# ---------------------------------------------------------------------------------- browser login
ROUTES.update(
    {
        "epochauth-oidc-login": Row(everyone(ALLOW)),
        # To the provider's authorization endpoint.
        "epochauth-oidc-login-provider": Row(
            everyone(ALLOW), kwargs=lambda ctx: {"slug": "test-idp"}
        ),
        # Without a re-check the middleware marked in the session: back to the tokens page (anonymous:
        # its sign-in), never to the provider; a request cannot start a re-check on its own say.
        "epochauth-oidc-recheck": Row(everyone(ALLOW)),
        # A callback without the state of a login started here: the failure page.
        "epochauth-oidc-callback": Row(
            everyone(400), query=lambda ctx, p: {"code": "x", "state": "y"}
        ),
        # POST ends the browser's session (then the sign-in page): CSRF-protected, only its own.
        "epochauth-oidc-logout": Row(
            csrf_form({ANONYMOUS: LOGIN, "*": ALLOW}), "POST", watch=browser_session
        ),
        # POST starts an API session of the signed-in user.
        "epochauth-oidc-tokens": Row(
            csrf_form({ANONYMOUS: LOGIN, "*": ALLOW}), "POST", watch=callers_sessions
        ),
        # The provider's back-channel logout: the credential is the logout token (here a bad one).
        "epochauth-oidc-backchannel-logout": Row(
            everyone(400), "POST", lambda ctx, p: {"logout_token": "not-a-jwt"}
        ),
        # Shared Signals push (RFC 8935): only a transmitter of SSF_TRANSMITTERS holding its stream's
        # secret may push (tests/test_ssf_receiver.py), and only about its own issuer's identities.
        # No principal's credential is a stream secret: 401 before the body is read.
        "epochauth-ssf-push": Row(
            everyone(401),
            "POST",
            lambda ctx, p: {"set": ctx.crafted.token()},
            before=ssf_stream,
            watch=ssf_effects,
        ),
    }
)

# ---------------------------------------------------------------------------------- the OAuth server
ROUTES.update(
    {
        # The portal's code flow (skip_authorization): a signed-in browser gets a code.
        "oauth2_provider:authorize": Row(
            {"session": ALLOW, BROWSER_NO_CSRF: ALLOW, "*": LOGIN},
            query=lambda ctx, p: ctx.authorize_query(),
            watch=grants,
        ),
        # Client authentication in the body (client_secret_post): the caller's own header aside.
        "oauth2_provider:token": Row(
            everyone(ALLOW),
            "POST",
            lambda ctx, p: {
                "grant_type": "client_credentials",
                "client_id": ctx.client_app.client_id,
                "client_secret": ctx.SECRET,
                "scope": "reports:read",
            },
            watch=issued,
        ),
        # RFC 7009: whoever holds a token may revoke it (the public client names itself).
        "oauth2_provider:revoke-token": Row(
            everyone(ALLOW),
            "POST",
            lambda ctx, p: {"token": ctx.revocable, "client_id": "epochauth-cli"},
            watch=revocable_token,
        ),
        # RFC 7662: a confidential client authenticates; the caller's own header aside.
        "oauth2_provider:introspect": Row(
            everyone(ALLOW),
            "POST",
            lambda ctx, p: {
                "token": ctx.revocable,
                "client_id": ctx.client_app.client_id,
                "client_secret": ctx.SECRET,
            },
        ),
        # Userinfo: an end user's token of ours with openid; a client-credentials token has no end
        # user (finding 7); one of ours without openid is 403 insufficient_scope; others 401.
        "oauth2_provider:user-info": Row(
            # DPOP: a bound login of ours with its proof is taken (RFC 9449 section 7) and, like
            # own-login, has no openid (tests/test_dpop_oauth.py: 200 with openid).
            {CLI: ALLOW, "oauth-client": 403, "own-login": 403, DPOP: 403, "*": 401},
            finding="7",
        ),
        # An id_token_hint selects, it never logs anyone out by itself (finding 5): the victim's
        # grants stay, whoever sends it.
        "oauth2_provider:rp-initiated-logout": Row(
            everyone(DENIED),
            query=lambda ctx, p: {"id_token_hint": ctx.id_token_hint},
            watch=victims_oauth_tokens,
            finding="5",
        ),
        # RFC 8628: any device may start; the client authenticates (public: names itself).
        "oauth2_provider:device-authorization": Row(
            everyone(ALLOW),
            "POST",
            lambda ctx, p: {"client_id": "epochauth-cli", "scope": "reports:read"},
            watch=device_grants,
        ),
        # Entering the code: a signed-in browser.
        "oauth2_provider:device": Row(
            csrf_form({ANONYMOUS: LOGIN, "*": ALLOW}),
            "POST",
            lambda ctx, p: {"user_code": ctx.device["user_code"]},
            watch=device_grant,
        ),
        # Approving the code: the browser whose user entered it.
        "oauth2_provider:device-confirm": Row(
            csrf_form({ANONYMOUS: LOGIN, "*": ALLOW}),
            "POST",
            lambda ctx, p: {"action": "accept"},
            kwargs=lambda ctx: {
                "client_id": "epochauth-cli",
                "user_code": ctx.device["user_code"],
            },
            before=lambda ctx, p: ctx.device_entered_by(p),
            watch=device_grant,
        ),
        # Dynamic client registration (RFC 7591), on here as "authenticated": an access token of
        # ours of a user; a client-credentials token stands for an application (403); a session,
        # another issuer's token or none is no credential for it (401).
        "oauth2_provider:dcr-register": Row(
            {
                ANONYMOUS: 401,
                DPOP: ALLOW,  # a bound login of ours with its proof (RFC 9449 section 7)
                "own-login": ALLOW,
                CLI: ALLOW,
                "oauth-client": 403,
                "external": 401,
                "session": 401,
                BROWSER_NO_CSRF: 401,
            },
            "POST",
            lambda ctx, p: {"client_name": p.name, "grant_types": [DEVICE_GRANT]},
            json=True,
            watch=registered_clients,
        ),
        # RFC 7592: only the registration access token reads, replaces or deletes a registration;
        # no caller's own credential is one.
        "oauth2_provider:dcr-register-management": Row(
            everyone(401),
            "DELETE",
            kwargs=lambda ctx: {"client_id": ctx.registered["client_id"]},
            watch=registered_clients,
        ),
        "oauth2_provider:device-grant-status": Row(
            {"session": ALLOW, BROWSER_NO_CSRF: ALLOW, "*": LOGIN},
            kwargs=lambda ctx: {
                "client_id": "epochauth-cli",
                "user_code": ctx.device["user_code"],
            },
            before=lambda ctx, p: ctx.device_entered_by(p),
        ),
    }
)

# ---------------------------------------------------------------------------------- the admin site
#: Who is no staff: a GET is sent to the admin's sign-in page; an unsafe request without a CSRF
#: token is a 403 first.
NOT_STAFF_GET = {"staff-session": ALLOW, "*": LOGIN}


def admin_form(staff: dict[str, Any]) -> dict[str, Any]:
    """An unsafe request to an admin view: staff kinds as given, everyone else to the sign-in page."""
    return csrf_form({**staff, "*": LOGIN})


ROUTES.update(
    {
        "admin:index": Row(NOT_STAFF_GET),
        "admin:login": Row(everyone(ALLOW)),
        # POST signs a staff browser out (its own session only); anyone else goes to the index.
        "admin:logout": Row(
            csrf_form({"staff-session": ALLOW, "*": DENIED}), "POST", watch=browser_session
        ),
        "admin:password_change": Row(NOT_STAFF_GET),
        "admin:password_change_done": Row(NOT_STAFF_GET),
        # Without the field it completes: 403 for everyone who gets that far.
        "admin:autocomplete": Row({"staff-session": 403, "*": LOGIN}),
        "admin:jsi18n": Row(NOT_STAFF_GET),
        # A user has no page on the site.
        "admin:view_on_site": Row(
            {"staff-session": 404, "*": LOGIN},
            kwargs=lambda ctx: {"content_type_id": ctx.user_type, "object_id": ctx.member.pk},
        ),
        "admin:app_list": Row(
            {SUPERUSER: ALLOW, STAFF_VIEW: ALLOW, STAFF: 404, "*": LOGIN},
            kwargs=lambda ctx: {"app_label": "epochauth"},
        ),
        "admin/(?P<url>.*)$": Row(
            {"staff-session": 404, "*": LOGIN}, kwargs=lambda ctx: {"url": "no-such-page/"}
        ),
        # Per-object buttons: revoking needs epochauth.change_epoch, ending a session the delete
        # permission; a view-only staff member gets nothing done.
        "admin:auth_user_revoke_tokens": Row(
            admin_form({SUPERUSER: ALLOW, "staff-session": 403}),
            "POST",
            lambda ctx, p: {"reason": "matrix"},
            kwargs=lambda ctx: {"object_id": ctx.victim.pk},
            watch=victim_epoch,
        ),
        "admin:auth_group_revoke_tokens": Row(
            admin_form({SUPERUSER: ALLOW, "staff-session": 403}),
            "POST",
            lambda ctx, p: {"reason": "matrix"},
            kwargs=lambda ctx: {"object_id": ctx.sample("auth.group")},
            watch=lambda ctx, p: _epoch("group", ctx.sample("auth.group")),
        ),
        "admin:epochauth_session_end": Row(
            admin_form({SUPERUSER: ALLOW, "staff-session": 403}),
            "POST",
            kwargs=lambda ctx: {"object_id": ctx.sample("epochauth.session")},
            watch=lambda ctx, p: ctx.exists("epochauth.session", revoked_at=None),
        ),
        # Setting someone's password: the change permission on users.
        "admin:auth_user_password_change": Row(
            admin_form({SUPERUSER: ALLOW, "staff-session": 403}),
            "POST",
            lambda ctx, p: {"password1": "n3w-pa55-word", "password2": "n3w-pa55-word"},
            kwargs=lambda ctx: {"id": ctx.victim.pk},
            watch=lambda ctx, p: ctx.victim_password(),
        ),
    }
)


@dataclass(frozen=True)
class ModelPolicy:
    """What a superuser may do with one registered model's standard admin views (staff with only
    view permissions may look, never change; staff without permissions get 403)."""

    add: bool = True
    change: bool = True
    delete: bool = True


#: Every model registered in the admin; the matrix expands each into its six standard routes.
ADMIN_MODELS: dict[str, ModelPolicy] = {
    "auth.user": ModelPolicy(),
    "auth.group": ModelPolicy(),
    # Written by epochauth only: sessions are ended (never deleted), epochs, denylist and audit
    # trail are permanent.
    "epochauth.session": ModelPolicy(add=False, change=False, delete=False),
    "epochauth.identity": ModelPolicy(),
    "epochauth.epoch": ModelPolicy(add=False, change=False, delete=False),
    "epochauth.revokedtoken": ModelPolicy(add=False, change=False, delete=False),
    "epochauth.auditevent": ModelPolicy(add=False, change=False, delete=False),
    "epochauth.issuer": ModelPolicy(),
    # Shared Signals streams: set up by epochauth_ssf_subscribe; deleting one ends its pushes.
    "epochauth.ssfsubscription": ModelPolicy(add=False, change=False),
    # Who is in which community, and which community a group lives in: the admin's to edit.
    "epochauth.communitymembership": ModelPolicy(),
    "epochauth.communitygroup": ModelPolicy(),
    # DOT's: grants and tokens are issued, never added by hand; access token rows are read-only
    # (the JWT carries its own claims); a token row behind a live JWT is never deleted (it would
    # leave the JWT valid): the samples are live, so deleting them is refused.
    "oauth2_provider.grant": ModelPolicy(add=False),
    "oauth2_provider.idtoken": ModelPolicy(add=False, delete=False),
    "oauth2_provider.application": ModelPolicy(),
    "oauth2_provider.accesstoken": ModelPolicy(add=False, change=False, delete=False),
    "oauth2_provider.refreshtoken": ModelPolicy(add=False, delete=False),
    # Upstream grants are never added or edited by hand.
    "epochauth_tokenmanager.upstreamgrant": ModelPolicy(add=False, change=False),
    # The outbox of logout tokens: written by revocations, only retried by hand.
    "epochauth_oauth.logoutdelivery": ModelPolicy(add=False, change=False, delete=False),
    # Shared Signals streams are made by their receivers; the admin may pause, disable or delete
    # one. Their events are an outbox like the logout tokens' (deleted with their stream, or by
    # hand: a receiver that is not told is no worse than one that never subscribed).
    "epochauth_oauth.ssfstream": ModelPolicy(add=False),
    "epochauth_oauth.ssfevent": ModelPolicy(add=False, change=False),
}


def _gone(label: str) -> Callable[[Any, Any], Any]:
    return lambda ctx, p: ctx.exists(label)


def model_routes(label: str, policy: ModelPolicy) -> dict[str, Row]:
    """The six standard admin routes of a model. Add and change post an empty form: a superuser who
    may gets the form back with its errors (200), anyone else a 403; delete confirms for real."""
    app, model = label.split(".")
    prefix = f"admin:{app}_{model}"
    obj = {"kwargs": lambda ctx: {"object_id": ctx.sample(label)}}
    can = {True: ALLOW, False: 403}
    looking = {SUPERUSER: ALLOW, STAFF_VIEW: ALLOW, STAFF: 403, "*": LOGIN}
    return {
        f"{prefix}_changelist": Row(looking),
        f"{prefix}_add": Row(
            admin_form({SUPERUSER: can[policy.add], "staff-session": 403}),
            "POST",
            lambda ctx, p: {},
        ),
        f"{prefix}_history": Row(looking, **obj),
        f"{prefix}_delete": Row(
            admin_form({SUPERUSER: can[policy.delete], "staff-session": 403}),
            "POST",
            lambda ctx, p: {"post": "yes"},
            watch=_gone(label),
            **obj,
        ),
        f"{prefix}_change": Row(
            admin_form({SUPERUSER: can[policy.change], "staff-session": 403}),
            "POST",
            lambda ctx, p: {},
            **obj,
        ),
        # The old-style URL of an object: a redirect to its change page, for any staff.
        f"admin/{app}/{model}/<path:object_id>/": Row({"staff-session": ALLOW, "*": LOGIN}, **obj),
    }


for _label, _policy in ADMIN_MODELS.items():
    ROUTES.update(model_routes(_label, _policy))

# ---------------------------------------------------------------------------------- admin actions
#: Key: "<app_label>.<model_name>:<action>". Every action is posted for one sample row of its
#: model; ``watch`` sees whether it was done. A view-only staff member never gets one done
#: (finding 3); a superuser gets every action the model's admin offers.
ACTION_EXPECT = admin_form({SUPERUSER: ALLOW, STAFF_VIEW: DENIED, STAFF: 403})
NOT_OFFERED = admin_form({SUPERUSER: DENIED, STAFF_VIEW: DENIED, STAFF: 403})


def action(
    watch: Callable[[Any, Any], Any],
    finding: str = "",
    offered: bool = True,
    before: Callable[[Any, Any], None] | None = None,
) -> Row:
    expect = ACTION_EXPECT if offered else NOT_OFFERED
    return Row(expect, "POST", watch=watch, finding=finding, before=before)


def _sample_changed(label: str, *fields: str) -> Callable[[Any, Any], Any]:
    return lambda ctx, p: ctx.values(label, *fields)


ACTIONS: dict[str, Row] = {
    "auth.user:revoke_all_tokens": action(
        lambda ctx, p: _epoch("user", ctx.sample("auth.user")), "3"
    ),
    "auth.group:revoke_all_tokens": action(
        lambda ctx, p: _epoch("group", ctx.sample("auth.group")), "3"
    ),
    # A community epoch: every token of the rows' communities (epochauth.change_epoch, as the API).
    "epochauth.communitymembership:revoke_communities": action(
        lambda ctx, p: _epoch("community", "lhcb"), "3"
    ),
    "epochauth.communitygroup:revoke_communities": action(
        lambda ctx, p: _epoch("community", "lhcb"), "3"
    ),
    "epochauth.session:revoke_sessions": action(
        _sample_changed("epochauth.session", "revoked_at")
    ),
    "epochauth.issuer:enable": action(
        _sample_changed("epochauth.issuer", "enabled"),
        "3",
        before=lambda ctx, p: ctx.update("epochauth.issuer", enabled=False),
    ),
    "epochauth.issuer:disable": action(_sample_changed("epochauth.issuer", "enabled"), "3"),
    # Fetching an issuer's keys changes nothing stored: what it does is the fetch.
    "epochauth.issuer:refresh_keys": action(lambda ctx, p: ctx.crafted_fetches(), "3"),
    "oauth2_provider.accesstoken:revoke_tokens": action(_gone("oauth2_provider.accesstoken"), "3"),
    "oauth2_provider.refreshtoken:revoke_tokens": action(
        _sample_changed("oauth2_provider.refreshtoken", "revoked"), "3"
    ),
    "epochauth_tokenmanager.upstreamgrant:revoke": action(
        _sample_changed("epochauth_tokenmanager.upstreamgrant", "ended_at")
    ),
    # Attempting a logout delivery that was given up again (its count starts over).
    "epochauth_oauth.logoutdelivery:retry": action(
        _sample_changed("epochauth_oauth.logoutdelivery", "attempts"),
        before=lambda ctx, p: ctx.update(
            "epochauth_oauth.logoutdelivery", state="failed", attempts=3
        ),
    ),
    "epochauth_oauth.ssfevent:retry": action(
        _sample_changed("epochauth_oauth.ssfevent", "attempts"),
        before=lambda ctx, p: ctx.update("epochauth_oauth.ssfevent", state="failed", attempts=3),
    ),
    # Retrying the revocation of an ended grant at its provider (which confirms: the row goes).
    "epochauth_tokenmanager.upstreamgrant:retry": action(
        _sample_changed("epochauth_tokenmanager.upstreamgrant", "revoke_attempts"),
        before=lambda ctx, p: ctx.update(
            "epochauth_tokenmanager.upstreamgrant", ended_at=ctx.now(), end_reason="logout"
        ),
    ),
}
for _label, _policy in ADMIN_MODELS.items():
    ACTIONS[f"{_label}:delete_selected"] = action(_gone(_label), offered=_policy.delete)
