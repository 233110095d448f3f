"""The authorization matrix (issue 25, "Keep it closed"): every URL pattern of the test project and
every admin action, called by every kind of principal, against one declared policy
(tests/authorization_policy.py).

Routes come from the URLconf (``get_resolver()`` walked), actions from ``admin.site._registry``; one
without a row in the policy fails ``test_every_route_has_a_row`` / ``test_every_admin_action_has_a_row``,
and a row that matches nothing fails too. The principals are made once for the module, the way
their kind really gets its credential (our login, our OAuth server, the real test IdP, the loopback
issuer, Django's login), inside one transaction that each test's own transaction nests in and that
is rolled back at the end: a call that changes something is undone before the next.

Our site runs as it is deployed for the review: an OpenID provider (RS256) that keeps upstream grants
(the test IdP is its login provider) and accepts the loopback issuer's tokens.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve, reverse
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from epochauth import keys, tokens, verification
from epochauth.conf import clear_process_caches, epochauth_settings
from epochauth.models import (
    AuditEvent,
    CommunityGroup,
    CommunityMembership,
    Epoch,
    Identity,
    Issuer,
    RevokedToken,
    Session,
    SsfSubscription,
)
from epochauth.oauth.models import (
    AllowedScopes,
    LogoutDelivery,
    SSFEvent,
    SSFStream,
    SSFSubject,
    ensure_cli_application,
)
from epochauth.revocation import bump_epoch, revoke_id
from epochauth.tokenmanager import grants as upstream
from epochauth.tokenmanager.models import UpstreamGrant
from epochauth.urns import ACCESS_TOKEN_TYPE, DEVICE_CODE, TOKEN_EXCHANGE
from tests import authorization_policy as policy
from tests.helpers import rsa_pem
from tests.idp import DEFAULT_RESOURCE, TestIdP
from tests.loopback_issuer import CraftedIssuer
from tests.test_dpop import Holder

pytestmark = pytest.mark.django_db

Application = get_application_model()
User = get_user_model()
SECRET = "matrix-s3cret-" * 4
REDIRECT = "http://127.0.0.1:9/callback"
STORAGE = "https://storage.example.org"  # in RESOURCES (RFC 8707)
ELSEWHERE = "https://elsewhere.example.org"  # not
VERIFIER = "matrix-code-verifier-" * 3
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=")
CSRF = "matrixcsrftokenmatrixcsrftoken12"  # 32 characters: a CSRF secret Django accepts as is
WEB_SECRET_ENV = "EPOCHAUTH_TEST_MATRIX_WEB_SECRET"
EXT_SCOPES = {
    policy.EXT: "",
    policy.EXT_READ: "reports:read",
    policy.EXT_TM: "tokenmanager",
    policy.EXT_OPENID: "openid",
    policy.EXT_GROUP: "g:physics",
    policy.EXT_ALL: "reports:read tokenmanager openid profile email offline_access g:physics",
}
MODELS = {
    "auth.user": User,
    "auth.group": Group,
    "epochauth.session": Session,
    "epochauth.identity": Identity,
    "epochauth.epoch": Epoch,
    "epochauth.revokedtoken": RevokedToken,
    "epochauth.auditevent": AuditEvent,
    "epochauth.issuer": Issuer,
    "epochauth.ssfsubscription": SsfSubscription,
    "epochauth.communitymembership": CommunityMembership,
    "epochauth.communitygroup": CommunityGroup,
    "oauth2_provider.grant": get_grant_model(),
    "oauth2_provider.idtoken": get_id_token_model(),
    "oauth2_provider.application": Application,
    "oauth2_provider.accesstoken": get_access_token_model(),
    "oauth2_provider.refreshtoken": get_refresh_token_model(),
    "epochauth_tokenmanager.upstreamgrant": UpstreamGrant,
    "epochauth_oauth.logoutdelivery": LogoutDelivery,
    "epochauth_oauth.ssfstream": SSFStream,
    "epochauth_oauth.ssfevent": SSFEvent,
}


# ---------------------------------------------------------------------------------- discovery
@dataclass(frozen=True)
class Route:
    key: str  # the URL name (with its namespace), or the whole pattern of an unnamed one
    pattern: str  # the whole pattern, e.g. "o/device-confirm/<slug:client_id>/<slug:user_code>"

    def path(self, kwargs: dict[str, Any]) -> str:
        """The pattern with its converters (or a regex's named groups) filled with ``kwargs``."""
        filled = re.sub(r"\(\?P<(\w+)>[^)]*\)", lambda m: str(kwargs[m[1]]), self.pattern)
        filled = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: str(kwargs[m[1]]), filled)
        return "/" + filled.replace("^", "").replace("$", "")


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = entry.namespace or ""
            ns = f"{namespace}:{inner}" if namespace and inner else namespace or inner
            yield from walk(entry.url_patterns, prefix + str(entry.pattern), ns)
        elif isinstance(entry, URLPattern):
            pattern = prefix + str(entry.pattern)
            name = f"{namespace}:{entry.name}" if namespace and entry.name else entry.name
            yield Route(name or pattern, pattern)


def discovered_routes() -> dict[str, Route]:
    return {route.key: route for route in walk(get_resolver().url_patterns)}


def discovered_actions() -> dict[str, tuple[type, str]]:
    """``"<app_label>.<model_name>:<action>"`` -> (model, action) for every action of every admin."""
    found = {}
    for model, model_admin in admin.site._registry.items():
        for _func, name, _description in model_admin._get_base_actions():
            found[f"{model._meta.label_lower}:{name}"] = (model, name)
    return found


# ---------------------------------------------------------------------------------- principals
@dataclass
class Principal:
    name: str
    token: str | None = None
    user: Any = None  # the local user behind the credential, if any
    session_key: str | None = None
    csrf: bool = False
    #: The key a DPoP-bound token is bound to (tests.test_dpop.Holder): each call sends a new proof.
    holder: Any = None

    def local_user(self) -> Any:
        return self.user

    def client(self, method: str, path: str) -> tuple[Client, dict[str, str]]:
        client = Client(enforce_csrf_checks=True)
        headers = {}
        if self.token and self.holder:
            headers["HTTP_AUTHORIZATION"] = f"DPoP {self.token}"
            htu = f"http://testserver{path}"
            headers["HTTP_DPOP"] = self.holder.proof(self.token, htm=method, htu=htu)
        elif self.token:
            headers["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        if self.session_key:
            client.cookies[settings.SESSION_COOKIE_NAME] = self.session_key
        if self.csrf:
            client.cookies[settings.CSRF_COOKIE_NAME] = CSRF
            headers["HTTP_X_CSRFTOKEN"] = CSRF
        return client, headers


FORM = "application/x-www-form-urlencoded"


def form_post(client: Client, path: str, data: dict[str, Any], **headers: str) -> Any:
    """A form POST as browsers and OAuth clients send it (DOT refuses Django's multipart)."""
    return client.post(path, urlencode(data, doseq=True), content_type=FORM, **headers)


def password_token(username: str, **extra: Any) -> tuple[int, str | None]:
    response = Client().post(
        "/auth/token/",
        {"username": username, "password": "pw", **extra},
        content_type="application/json",
    )
    body = response.json()
    return response.status_code, body.get("access_token")


def token_endpoint(**data: str) -> tuple[int, dict[str, Any]]:
    response = form_post(Client(), "/o/token/", data)
    return response.status_code, response.json()


def client_credentials(application: Any, scope: str, **extra: str) -> tuple[int, str | None]:
    status, body = token_endpoint(
        grant_type="client_credentials",
        client_id=application.client_id,
        client_secret=SECRET,
        scope=scope,
        **extra,
    )
    return status, body.get("access_token")


def signed_in(user: Any, provider: str | None = None) -> Client:
    """``user``'s browser session, signed in through the external ``provider`` (None: a password)."""
    from epochauth.oidc.recheck import PROVIDER_SESSION_KEY

    browser = Client()
    browser.force_login(user)
    if provider is not None:
        session = browser.session
        session[PROVIDER_SESSION_KEY] = provider
        session.save()
    return browser


def device_flow(
    user: Any,
    scope: str,
    client_id: str = "epochauth-cli",
    provider: str | None = None,
    **extra: str,
) -> tuple[int, str | None]:
    """The CLI's (or another public client's) device flow (RFC 8628), approved in ``user``'s browser
    (signed in through ``provider``: a refusal is a page, then the device's ``access_denied``)."""
    response = form_post(
        Client(), "/o/device-authorization/", {"client_id": client_id, "scope": scope}
    )
    if response.status_code != 200:
        return response.status_code, None
    device = response.json()
    browser = signed_in(user, provider)
    entered = browser.post("/o/device/", {"user_code": device["user_code"]})
    assert entered.status_code == 302, entered.content
    approved = browser.post(entered["Location"], {"action": "accept"})
    assert approved.status_code in ((302,) if provider is None else (302, 403)), approved.content
    get_device_grant_model().objects.filter(device_code=device["device_code"]).update(
        last_checked=timezone.now() - timezone.timedelta(seconds=60)
    )
    status, body = token_endpoint(
        grant_type=DEVICE_CODE, device_code=device["device_code"], client_id=client_id, **extra
    )
    return status, body.get("access_token")


def register(token: str | None, scope: str | None = None) -> tuple[int, dict[str, Any]]:
    """RFC 7591 registration of a device client, with ``token`` as the registrant's credential."""
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    body: dict[str, Any] = {"client_name": "matrix", "grant_types": [DEVICE_CODE]}
    if scope is not None:
        body["scope"] = scope
    response = Client().post(
        "/o/register/", json.dumps(body), content_type="application/json", **headers
    )
    return response.status_code, response.json()


def authorize_query(scope: str = "openid") -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": "portal",
        "redirect_uri": REDIRECT,
        "scope": scope,
        "code_challenge": CHALLENGE.decode(),
        "code_challenge_method": "S256",
        "nonce": "n-matrix",
    }


def code_flow(
    user: Any, scope: str, provider: str | None = None, **extra: str
) -> tuple[int, dict[str, Any]]:
    """The portal's code flow with PKCE in ``user``'s browser (the portal skips consent), signed
    in through ``provider`` (None: a password)."""
    browser = signed_in(user, provider)
    response = browser.get("/o/authorize/", authorize_query(scope))
    query = parse_qs(urlsplit(response.get("Location", "")).query)
    if "code" not in query:
        return 400, {"error": query.get("error", [response.status_code])[0]}
    return token_endpoint(
        grant_type="authorization_code",
        code=query["code"][0],
        redirect_uri=REDIRECT,
        client_id="portal",
        client_secret=SECRET,
        code_verifier=VERIFIER,
        **extra,
    )


def exchange(
    application: Any, subject_token: str, scope: str, **extra: str
) -> tuple[int, str | None]:
    status, body = token_endpoint(
        grant_type=TOKEN_EXCHANGE,
        subject_token=subject_token,
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope=scope,
        client_id=application.client_id,
        client_secret=SECRET,
        **extra,
    )
    return status, body.get("access_token")


def make_user(username: str, **fields: Any) -> Any:
    user = User.objects.create_user(username=username, password="pw", **fields)
    return user


#: An external provider the community lhcb does not take, in :func:`lhcb_from_elsewhere`.
PROVIDER_X = "https://x.example.org"


def lhcb_from_elsewhere(call: Any) -> Any:
    """``call()`` while lhcb takes users of one provider only, not :data:`PROVIDER_X`."""
    communities = {
        **settings.EPOCHAUTH["COMMUNITIES"],
        "lhcb": {
            **settings.EPOCHAUTH["COMMUNITIES"]["lhcb"],
            "identity_providers": ["https://y.example.org"],
        },
    }
    with override_settings(EPOCHAUTH={**settings.EPOCHAUTH, "COMMUNITIES": communities}):
        return call()


def vo_member() -> str:
    """A user of the community lhcb only (of the test project's two)."""
    user, created = User.objects.get_or_create(username="vo-member")
    if created:
        user.set_password("pw")
        user.save()
        CommunityMembership.objects.create(user=user, community="lhcb")
    return user.username


# ---------------------------------------------------------------------------------- the world
class Matrix:
    """The principals and the rows they act on, made once for the module (see ``build``)."""

    SECRET = SECRET

    def __init__(self, idp: TestIdP, crafted: CraftedIssuer, spare: CraftedIssuer) -> None:
        self.idp, self.crafted, self.spare = idp, crafted, spare
        self.principals: dict[str, Principal] = {}
        self.issuance: dict[str, int] = {}
        self.samples: dict[str, Any] = {}
        self.routes = discovered_routes()
        self.actions = discovered_actions()
        self.last_response: Any = None

    # -- helpers the policy's rows call
    def sample(self, label: str) -> Any:
        return self.samples[label]

    def exists(self, label: str, **lookup: Any) -> bool:
        return MODELS[label].objects.filter(pk=self.sample(label), **lookup).exists()

    def values(self, label: str, *fields: str) -> Any:
        return MODELS[label].objects.filter(pk=self.sample(label)).values_list(*fields).first()

    def update(self, label: str, **fields: Any) -> None:
        for obj in MODELS[label].objects.filter(pk=self.sample(label)):
            for name, value in fields.items():
                setattr(obj, name, value)
            obj.save()

    def now(self) -> Any:
        return timezone.now()

    def crafted_fetches(self) -> int:
        return self.spare.counts.total()

    def victim_password(self) -> str:
        return User.objects.get(pk=self.victim.pk).password

    def ssf_counts(self) -> dict[str, Any]:
        """What the Shared Signals rows may change, of the receiver's stream."""
        stream = SSFStream.objects.get(pk=self.ssf_stream.pk)
        return {
            "streams": SSFStream.objects.count(),
            "status": stream.status,
            "subjects": SSFSubject.objects.filter(stream=stream).count(),
            "events": SSFEvent.objects.filter(stream=stream).count(),
        }

    def victim_subject(self) -> dict[str, str]:
        return {"format": "iss_sub", "iss": epochauth_settings.ISSUER, "sub": str(self.victim.pk)}

    def ssf_add_victim(self) -> None:
        SSFSubject.objects.get_or_create(
            stream=self.ssf_stream, user_id=str(self.victim.pk), defaults={"subject": {}}
        )

    def authorize_query(self) -> dict[str, str]:
        return authorize_query()

    def device_entered_by(self, principal: Principal) -> None:
        get_device_grant_model().objects.filter(user_code=self.device["user_code"]).update(
            user=principal.local_user() or self.member
        )

    def simplejwt_access_accepted(self) -> bool:
        response = self.last_response
        if response is None or response.status_code != 200:
            return False
        access = response.json().get("access")
        whoami = Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {access}")
        return whoami.status_code == 200

    # -- building
    def build(self) -> None:
        self.build_simplejwt_window()
        self.build_users()
        self.build_applications()
        self.build_principals()
        self.build_route_state()
        self.build_samples()

    def build_simplejwt_window(self) -> None:
        """A simplejwt refresh token of a user whose tokens were all revoked since (first: the
        revocation is then seconds older than any token the matrix asks for)."""
        user = make_user("sj-user")
        response = Client().post(
            "/simplejwt/token/", {"username": "sj-user", "password": "pw"}, "application/json"
        )
        assert response.status_code == 200, response.content
        self.simplejwt_refresh = response.json()["refresh"]
        bump_epoch(Epoch.Kind.USER, str(user.pk), reason="matrix: logout-all")

    def build_users(self) -> None:
        physics = Group.objects.create(name="physics")
        Group.objects.create(name="tm-operators").permissions.add(
            Permission.objects.get(codename="obtain_upstream_token")
        )
        self.member = make_user("member")
        self.member.groups.add(physics)
        self.victim = make_user("victim")
        self.bystander = make_user("bystander")
        self.root = make_user("root", is_staff=True, is_superuser=True)
        self.staff = make_user("staff", is_staff=True)
        self.staff_view = make_user("staff-view", is_staff=True)
        self.staff_view.user_permissions.set(
            Permission.objects.filter(codename__startswith="view_")
        )
        self.user_type = ContentType.objects.get_for_model(User).pk

    def build_applications(self) -> None:
        ensure_cli_application(Application)
        self.portal = Application.objects.create(
            name="portal",
            client_id="portal",
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
            redirect_uris=REDIRECT,
            post_logout_redirect_uris=REDIRECT,
            skip_authorization=True,
            algorithm=Application.RS256_ALGORITHM,
        )
        self.client_app = Application.objects.create(
            name="reports",
            client_id="reports",
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            user=make_user("reports-owner"),
        )
        self.service_app = Application.objects.create(
            name="jobs",
            client_id="jobs",
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            user=make_user("jobs-owner"),
        )
        AllowedScopes.objects.create(application=self.service_app, scopes="tokenmanager")
        self.host_apps = {}
        for client_id in ("host:xfer.example.org", "xfer"):
            self.host_apps[client_id] = Application.objects.create(
                name=client_id,
                client_id=client_id,
                client_secret=SECRET,
                client_type=Application.CLIENT_CONFIDENTIAL,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
                user=make_user(f"{client_id}-owner"),
            )
            AllowedScopes.objects.create(application=self.host_apps[client_id], scopes="host.auth")
        self.ssf_app = Application.objects.create(
            name="ssf-receiver",
            client_id="ssf-receiver",
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            user=make_user("ssf-receiver-owner"),
        )
        AllowedScopes.objects.create(application=self.ssf_app, scopes="ssf:manage")
        self.ssf_stream = SSFStream.objects.create(
            application=self.ssf_app, audience="ssf-receiver", method=SSFStream.Method.POLL
        )
        SSFEvent.objects.create(
            stream=self.ssf_stream, jti="matrix-ssf-pending", event_type="urn:example", claims={}
        )

    def add(self, name: str, issued: tuple[int, str | None] | None = None, **fields: Any) -> None:
        if issued is not None:
            self.issuance[name] = issued[0]
            fields["token"] = issued[1] if issued[0] == 200 else None
        principal = Principal(name, **fields)
        if principal.token and principal.user is None:
            whoami = Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {principal.token}")
            assert whoami.status_code == 200, (name, whoami.content)
            principal.user = User.objects.get(username=whoami.json()["username"])
        self.principals[name] = principal

    def session(self, user: Any) -> str:
        browser = Client()
        browser.force_login(user)
        return browser.cookies[settings.SESSION_COOKIE_NAME].value

    def build_principals(self) -> None:
        p = policy
        self.add(p.ANONYMOUS, csrf=True)
        self.add(p.PASSWORD, password_token("member"), user=self.member)
        self.add(p.PASSWORD_READ, password_token("member", scope="reports:read"), user=self.member)
        self.add(p.PASSWORD_GROUP, password_token("member", group="physics"), user=self.member)
        self.add(p.PASSWORD_SUPERUSER, password_token("root"), user=self.root)
        # A login of its own, as the token endpoint will issue it once it binds tokens (issue 31).
        holder, (_, login) = Holder(), password_token("member")
        session_id = verification.parse(login or "").claims[tokens.CLAIM_SESSION]
        bound = tokens.mint_access_token(
            self.member, session_id=session_id, extra_claims={"cnf": {"jkt": holder.jkt}}
        )
        self.add(p.DPOP, token=bound.token, user=self.member, holder=holder)
        self.add(p.IDP_USER, (200, self.idp.user_token("ext-user")))
        self.add(p.IDP_CLIENT, (200, self.idp.client_credentials_token()))
        for name, scope in EXT_SCOPES.items():
            self.add(name, (200, self.crafted.token(sub="ext-user", scope=scope or None)))
        grouped = self.crafted.token(sub="ext-grouped", groups=["tm-operators", "staff-admins"])
        self.add(p.EXT_GROUPS, (200, grouped))
        self.add(p.CLIENT, client_credentials(self.client_app, "openid reports:read"))
        self.add(p.SERVICE, client_credentials(self.service_app, "tokenmanager"))
        self.add(p.SSF_RX, client_credentials(self.ssf_app, "ssf:manage"))
        self.add(p.CLI, device_flow(self.member, "openid reports:read"), user=self.member)
        browser = self.session(self.member)
        self.add(p.STAFF, user=self.staff, session_key=self.session(self.staff), csrf=True)
        self.add(
            p.STAFF_VIEW,
            user=self.staff_view,
            session_key=self.session(self.staff_view),
            csrf=True,
        )
        self.add(p.SUPERUSER, user=self.root, session_key=self.session(self.root), csrf=True)
        self.add(p.BROWSER, user=self.member, session_key=browser, csrf=True)
        self.add(p.BROWSER_NO_CSRF, user=self.member, session_key=browser)
        assert list(self.principals) == p.PRINCIPALS

    def build_route_state(self) -> None:
        """What the routes' realistic requests need: a refresh token, a pending device code, the
        victim's ID token (issued to the portal) and stored upstream grant, a token to revoke."""
        login = Client().post(
            "/auth/token/", {"username": "member", "password": "pw"}, "application/json"
        )
        self.refresh_token = login.json()["refresh_token"]
        started = form_post(
            Client(),
            "/o/device-authorization/",
            {"client_id": "epochauth-cli", "scope": "reports:read"},
        )
        self.device = started.json()
        status, body = code_flow(self.victim, "openid")
        assert status == 200, body
        self.id_token_hint = body["id_token"]
        grant = upstream.keep_from_exchange(
            self.victim, self.idp.issuer, self.idp.user_token("victim")
        )
        assert grant is not None, "the test IdP gave no grant for the Token Manager"
        status, self.revocable = device_flow(self.bystander, "reports:read")
        assert status == 200
        cli = get_access_token_model().objects.filter(
            user=self.bystander, application__client_id="epochauth-cli"
        )
        self.revocable_pk = cli.get().pk
        status, self.registered = register(self.principals[policy.PASSWORD].token)
        assert status == 201, self.registered

    def build_samples(self) -> None:
        """One row of each model the admin shows, for its object pages and actions."""
        status, body = code_flow(self.bystander, "openid")
        assert status == 200, body
        browser = Client()
        browser.force_login(self.bystander)
        browser.get("/o/authorize/", authorize_query())  # a code never exchanged: a Grant row
        password_token("bystander")
        revoke_id("matrix-jti", timezone.now() + timezone.timedelta(hours=1), reason="matrix")
        access = get_access_token_model().objects.filter(
            user=self.bystander, application=self.portal
        )
        self.ssf_sample = SSFStream.objects.create(
            application=self.ssf_app, audience="ssf-receiver", method=SSFStream.Method.POLL
        )
        self.samples = {
            "auth.user": make_user("plain").pk,
            "auth.group": Group.objects.get(name="physics").pk,
            "epochauth.session": Session.objects.filter(user=self.bystander).get().pk,
            "epochauth.identity": Identity.objects.get(
                issuer=self.crafted.issuer, subject="ext-user"
            ).pk,
            "epochauth.epoch": Epoch.objects.filter(kind=Epoch.Kind.USER).first().pk,
            "epochauth.revokedtoken": RevokedToken.objects.get(jti="matrix-jti").pk,
            "epochauth.auditevent": AuditEvent.objects.first().pk,
            "epochauth.communitymembership": CommunityMembership.objects.create(
                user=make_user("community-member"), community="lhcb"
            ).pk,
            "epochauth.communitygroup": CommunityGroup.objects.create(
                group=Group.objects.create(name="lhcb-production"), community="lhcb"
            ).pk,
            "epochauth.issuer": Issuer.objects.create(
                issuer=self.spare.issuer, audiences=[DEFAULT_RESOURCE]
            ).pk,
            "epochauth.ssfsubscription": SsfSubscription.objects.create(
                issuer=self.spare.issuer, stream_id="matrix-stream", delivery="poll"
            ).pk,
            "oauth2_provider.grant": get_grant_model().objects.get(user=self.bystander).pk,
            "oauth2_provider.idtoken": get_id_token_model()
            .objects.filter(user=self.bystander)
            .get()
            .pk,
            "oauth2_provider.application": Application.objects.create(
                name="spare",
                client_type=Application.CLIENT_PUBLIC,
                authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            ).pk,
            "oauth2_provider.accesstoken": access.get().pk,
            "oauth2_provider.refreshtoken": get_refresh_token_model()
            .objects.get(access_token__in=access)
            .pk,
            "epochauth_tokenmanager.upstreamgrant": upstream.keep(
                make_user("grant-holder"), self.idp.issuer, "not-a-refresh-token-any-more"
            ).pk,
            "epochauth_oauth.logoutdelivery": LogoutDelivery.objects.create(
                application=self.portal, subject="matrix", jti="matrix-logout", attempts=3
            ).pk,
            "epochauth_oauth.ssfstream": self.ssf_sample.pk,
            "epochauth_oauth.ssfevent": SSFEvent.objects.create(
                stream=self.ssf_sample,
                jti="matrix-ssf",
                event_type="urn:example",
                claims={},
                attempts=3,
            ).pk,
        }


def keep_keyring(env: pytest.MonkeyPatch) -> None:
    """Our keys stay loaded for the module: each test empties epochauth's process caches
    (tests/conftest.py's ``fresh_token_state``), and loading the RSA key again for each of the
    matrix's thousands of calls would take minutes."""
    held = keys.get_keyring()

    def kept() -> keys.KeyRing:
        return held

    kept.cache_clear = lambda: None  # type: ignore[attr-defined]
    env.setattr(keys, "get_keyring", kept)
    env.setattr(verification, "get_keyring", kept)


@pytest.fixture(scope="module")
def matrix(django_db_setup, django_db_blocker, idp) -> Iterator[Matrix]:
    """The world of the matrix, in one transaction rolled back after the module."""
    crafted, spare = CraftedIssuer(), CraftedIssuer()
    epochauth = {
        **settings.EPOCHAUTH,
        "ALGORITHM": "RS256",
        "SIGNING_KEY": rsa_pem(),
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        # Dynamic client registration for users of ours (tests/authorization_policy.py says who).
        "CLIENT_REGISTRATION": "authenticated",
        "RESOURCES": [STORAGE],
        "STATUS_LIST": True,
        # A Shared Signals transmitter (the loopback issuer) with a push stream (the policy's row).
        "SSF_TRANSMITTERS": [{"issuer": crafted.issuer, "token_env": "EPOCHAUTH_TEST_MATRIX_SSF"}],
        "SSF_TRANSMITTER": True,
        "ISSUERS": [
            {
                "issuer": idp.issuer,
                "slug": "test-idp",
                "display_name": "Test IdP",
                "client_id": idp.WEB_CLIENT_ID,
                "client_secret_env": WEB_SECRET_ENV,
                "audiences": [DEFAULT_RESOURCE],
            },
            {
                "issuer": crafted.issuer,
                "audiences": [DEFAULT_RESOURCE],
                "group_claims": ["groups"],
                "group_prefix": "ext:",
            },
        ],
    }
    oauth = {
        **settings.OAUTH2_PROVIDER,
        "OIDC_ENABLED": True,
        "OIDC_RP_INITIATED_LOGOUT_ENABLED": True,
        # DOT caches each view's oauthlib server from the settings of its first request.
        "ALWAYS_RELOAD_OAUTHLIB_CORE": True,
    }
    hashers = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    with (
        pytest.MonkeyPatch.context() as env,
        override_settings(EPOCHAUTH=epochauth, OAUTH2_PROVIDER=oauth, PASSWORD_HASHERS=hashers),
        django_db_blocker.unblock(),
        transaction.atomic(),
    ):
        env.setenv(WEB_SECRET_ENV, idp.WEB_CLIENT_SECRET)
        clear_process_caches()
        keep_keyring(env)
        world = Matrix(idp, crafted, spare)
        world.build()
        yield world
        transaction.set_rollback(True)
    clear_process_caches()
    crafted.stop()
    spare.stop()


# ---------------------------------------------------------------------------------- the calls
def classify(response: Any) -> Any:
    status = response.status_code
    if 300 <= status < 400:
        target = urlsplit(response["Location"]).path
        if target in {reverse("admin:login"), reverse("epochauth-oidc-login")}:
            return policy.LOGIN
        return policy.ALLOW
    return policy.ALLOW if status < 300 else status


def call(world: Matrix, row: policy.Row, path: str, principal: Principal, data: Any = None) -> Any:
    client, headers = principal.client(row.method, path)
    query = row.query(world, principal) if row.query else {}
    if row.method == "GET":
        return client.get(path, query, **headers)
    body = data if data is not None else (row.data(world, principal) if row.data else {})
    if query:
        path = f"{path}?{'&'.join(f'{k}={v}' for k, v in query.items())}"
    if row.method != "POST":
        return client.generic(row.method, path, json.dumps(body), "application/json", **headers)
    if row.json:
        return client.post(path, body, content_type="application/json", **headers)
    return form_post(client, path, body, **headers)


def check(world: Matrix, row: policy.Row, name: str, run: Any) -> None:
    """Run the call; its answer's class and whether ``watch`` saw a change must be the row's."""
    principal = world.principals[name]
    expected = row.expected(name)
    if row.before:
        row.before(world, principal)
    world.last_response = None
    before = row.watch(world, principal) if row.watch else None
    response = world.last_response = run(principal)
    changed = row.watch is not None and row.watch(world, principal) != before
    got = classify(response)
    if changed and got == policy.LOGIN:
        got = policy.ALLOW  # done, then on to a sign-in page (a logout)
    finding = f" (finding {row.finding})" if row.finding else ""
    detail = f"{response.status_code} {response.get('Location', '')} {response.content[:300]!r}"
    assert response.status_code < 500, detail
    if expected == policy.DENIED:
        assert not changed, f"done, must not be{finding}: {detail}"
    elif expected == policy.REFUSED:
        assert got in (401, 403) and not changed, f"{got}, must be refused{finding}: {detail}"
    else:
        assert got == expected, f"{got}, must be {expected}{finding}: {detail}"
        if row.watch is not None:
            assert changed == (expected == policy.ALLOW), (
                f"{'done' if changed else 'not done'}, answered {got}{finding}: {detail}"
            )


ROUTE_CELLS = [(key, name) for key in policy.ROUTES for name in policy.PRINCIPALS]
ACTION_CELLS = [(key, name) for key in policy.ACTIONS for name in policy.PRINCIPALS]


@pytest.mark.parametrize(
    ("route", "principal"), ROUTE_CELLS, ids=[f"{r} x {p}" for r, p in ROUTE_CELLS]
)
def test_route(matrix: Matrix, route: str, principal: str) -> None:
    assert route in matrix.routes, f"stale row: no URL pattern {route!r}"
    row = policy.ROUTES[route]
    found = matrix.routes[route]
    path = found.path(row.kwargs(matrix) if row.kwargs else {})
    answering = resolve(path)
    answering_key = answering.view_name if answering.url_name else answering.route
    # A pattern that an earlier one shadows can never answer: a mistake, not a policy.
    assert answering_key == route, f"{path} is answered by {answering_key}"
    check(matrix, row, principal, lambda p: call(matrix, row, path, p))


@pytest.mark.parametrize(
    ("action", "principal"), ACTION_CELLS, ids=[f"{a} x {p}" for a, p in ACTION_CELLS]
)
def test_admin_action(matrix: Matrix, action: str, principal: str) -> None:
    assert action in matrix.actions, f"stale row: no admin action {action!r}"
    model, name = matrix.actions[action]
    row = policy.ACTIONS[action]
    label = model._meta.label_lower
    path = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    body = {"action": name, "_selected_action": [matrix.sample(label)], "index": 0, "post": "yes"}
    check(matrix, row, principal, lambda p: call(matrix, row, path, p, body))


def test_every_route_has_a_row_and_every_row_a_route(matrix: Matrix) -> None:
    missing = sorted(set(matrix.routes) - set(policy.ROUTES))
    stale = sorted(set(policy.ROUTES) - set(matrix.routes))
    assert not missing, f"URL patterns without a row in tests/authorization_policy.py: {missing}"
    assert not stale, f"rows of tests/authorization_policy.py without a URL pattern: {stale}"


def test_every_admin_action_has_a_row_and_every_row_an_action(matrix: Matrix) -> None:
    missing = sorted(set(matrix.actions) - set(policy.ACTIONS))
    stale = sorted(set(policy.ACTIONS) - set(matrix.actions))
    assert not missing, f"admin actions without a row in tests/authorization_policy.py: {missing}"
    assert not stale, f"rows of tests/authorization_policy.py without an admin action: {stale}"


def test_every_registered_model_has_a_policy(matrix: Matrix) -> None:
    registered = {model._meta.label_lower for model in admin.site._registry}
    assert registered == set(policy.ADMIN_MODELS) == set(MODELS)


@pytest.mark.parametrize("kind", sorted(policy.ISSUANCE))
def test_issuance(matrix: Matrix, kind: str) -> None:
    """Who may obtain which token: the principal kinds as built, the other ways to ask for the
    service scopes "tokenmanager" and "host.auth", and for a token narrowed to a resource."""
    others = {
        "password[tokenmanager]": lambda: password_token("member", scope="tokenmanager")[0],
        "device[tokenmanager]": lambda: device_flow(matrix.member, "tokenmanager")[0],
        "code[tokenmanager]": lambda: code_flow(matrix.member, "openid tokenmanager")[0],
        "client-credentials[tokenmanager]": lambda: client_credentials(
            matrix.client_app, "tokenmanager"
        )[0],
        "exchange[tokenmanager]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_TM].token, "tokenmanager"
        )[0],
        "registration[tokenmanager]": lambda: register(
            matrix.principals[policy.PASSWORD].token, "tokenmanager"
        )[0],
        "registered-device[tokenmanager]": lambda: device_flow(
            matrix.member, "tokenmanager", matrix.registered["client_id"]
        )[0],
        "host-service[host.auth]": lambda: client_credentials(
            matrix.host_apps["host:xfer.example.org"], "host.auth"
        )[0],
        "service-without-host-id[host.auth]": lambda: client_credentials(
            matrix.host_apps["xfer"], "host.auth"
        )[0],
        "password[host.auth]": lambda: password_token("member", scope="host.auth")[0],
        "device[host.auth]": lambda: device_flow(matrix.member, "host.auth")[0],
        "code[host.auth]": lambda: code_flow(matrix.member, "openid host.auth")[0],
        "client-credentials[host.auth]": lambda: client_credentials(
            matrix.client_app, "host.auth"
        )[0],
        "service[host.auth]": lambda: client_credentials(matrix.service_app, "host.auth")[0],
        "exchange[host.auth]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_ALL].token, "host.auth"
        )[0],
        "registration[host.auth]": lambda: register(
            matrix.principals[policy.PASSWORD].token, "host.auth"
        )[0],
        "registered-device[host.auth]": lambda: device_flow(
            matrix.member, "host.auth", matrix.registered["client_id"]
        )[0],
        "password[resource]": lambda: password_token("member", resource=STORAGE)[0],
        "password[resource not served]": lambda: password_token("member", resource=ELSEWHERE)[0],
        "client-credentials[resource]": lambda: client_credentials(
            matrix.client_app, "reports:read", resource=STORAGE
        )[0],
        "client-credentials[resource not served]": lambda: client_credentials(
            matrix.client_app, "reports:read", resource=ELSEWHERE
        )[0],
        "client-credentials[resource, tokenmanager]": lambda: client_credentials(
            matrix.client_app, "tokenmanager", resource=STORAGE
        )[0],
        "exchange[resource]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_READ].token, "", resource=STORAGE
        )[0],
        "exchange[resource not served]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_READ].token, "", resource=ELSEWHERE
        )[0],
        "device[resource]": lambda: device_flow(matrix.member, "reports:read", resource=STORAGE)[
            0
        ],
        "code[resource]": lambda: code_flow(matrix.member, "openid", resource=STORAGE)[0],
        "password[ssf:manage]": lambda: password_token("member", scope="ssf:manage")[0],
        "device[ssf:manage]": lambda: device_flow(matrix.member, "ssf:manage")[0],
        "code[ssf:manage]": lambda: code_flow(matrix.member, "openid ssf:manage")[0],
        "client-credentials[ssf:manage]": lambda: client_credentials(
            matrix.client_app, "ssf:manage"
        )[0],
        "service[ssf:manage]": lambda: client_credentials(matrix.service_app, "ssf:manage")[0],
        "exchange[ssf:manage]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_ALL].token, "ssf:manage"
        )[0],
        "registration[ssf:manage]": lambda: register(
            matrix.principals[policy.PASSWORD].token, "ssf:manage"
        )[0],
        "password[vo:lhcb, a member]": lambda: password_token(vo_member(), scope="vo:lhcb")[0],
        "password[vo:belle2, not a member]": lambda: password_token(
            vo_member(), scope="vo:belle2"
        )[0],
        "password[vo:cta, no such community]": lambda: password_token(vo_member(), scope="vo:cta")[
            0
        ],
        "device[vo:lhcb, a member]": lambda: device_flow(
            User.objects.get(username=vo_member()), "vo:lhcb"
        )[0],
        "device[vo:belle2, not a member]": lambda: device_flow(
            User.objects.get(username=vo_member()), "vo:belle2"
        )[0],
        "device[vo:lhcb, through a provider lhcb does not take]": lambda: lhcb_from_elsewhere(
            lambda: device_flow(
                User.objects.get(username=vo_member()), "vo:lhcb", provider=PROVIDER_X
            )
        )[0],
        "code[vo:lhcb, through a provider lhcb does not take]": lambda: lhcb_from_elsewhere(
            lambda: code_flow(User.objects.get(username=vo_member()), "vo:lhcb", PROVIDER_X)
        )[0],
        "device[vo:lhcb, a password sign-in]": lambda: lhcb_from_elsewhere(
            lambda: device_flow(User.objects.get(username=vo_member()), "vo:lhcb")
        )[0],
        "exchange[vo:cta, no such community]": lambda: exchange(
            matrix.client_app, matrix.principals[policy.EXT_READ].token, "vo:cta"
        )[0],
    }
    status = others[kind]() if kind in others else matrix.issuance[kind]
    expected = policy.ISSUANCE[kind]
    assert (policy.ALLOW if status == 200 else status) == expected, (kind, status)
