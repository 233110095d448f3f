"""Browser login pages: the sign-in page (providers, a password form), start, callback (one redirect
URI for all), logout, API tokens; and the endpoint where providers deliver back-channel logouts.

The chosen provider is remembered with the login's ``state`` in the session, so the callback knows
which issuer, client and keys to use; a callback whose state this browser did not start is refused.
Every failure is a readable page with a 4xx status, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from django.apps import apps
from django.contrib import auth
from django.contrib.auth import views as auth_views
from django.contrib.auth.mixins import LoginRequiredMixin
from django.db import DatabaseError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.shortcuts import render
from django.urls import reverse, reverse_lazy
from django.utils.translation import gettext_lazy as _
from django.views import View
from mozilla_django_oidc.utils import import_from_settings
from mozilla_django_oidc.views import (
    OIDCAuthenticationCallbackView,
    OIDCAuthenticationRequestView,
    OIDCLogoutView,
)
from rest_framework import serializers
from rest_framework.exceptions import Throttled
from rest_framework.parsers import FormParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from .. import (
    communities,
    conf,
    models,
    scopes,
    sessions,
    signals,
    snapshots,
    statuslist,
    throttling,
    views,
)
from ..tokens import mint_access_token
from . import backchannel, backend, providers, recheck

logger = logging.getLogger(__name__)

PROVIDER_SESSION_KEY = recheck.PROVIDER_SESSION_KEY


#: The sign-in page while the database or the shared cache cannot be reached.
UNAVAILABLE = backend.LoginFailed(
    _("The service is unavailable right now. Please try again."), status=503
)


def failure_page(request: HttpRequest, exc: backend.LoginFailed) -> HttpResponse:
    context = {
        "title": exc.title,
        "message": exc.message,
        "provider": getattr(exc, "provider", None),
    }
    return render(request, exc.template, context, status=exc.status)


def mozilla_setting(attr: str, *default: Any) -> Any:
    """mozilla-django-oidc's settings, except those that are ours to decide (for every provider)."""
    ours = {
        "OIDC_USE_PKCE": True,
        "OIDC_USE_NONCE": True,
        "OIDC_PKCE_CODE_CHALLENGE_METHOD": "S256",
        "OIDC_RP_SCOPES": conf.epochauth_settings.OIDC_SCOPES,
        "OIDC_AUTHENTICATION_CALLBACK_URL": "epochauth-oidc-callback",
        # OpenID Connect Core 1.0 section 11: offline_access needs prompt=consent (else it is dropped).
        "OIDC_AUTH_REQUEST_EXTRA_PARAMS": (
            {"prompt": "consent"}
            if "offline_access" in scopes.split_scope(conf.epochauth_settings.OIDC_SCOPES)
            else {}
        ),
    }
    return ours[attr] if attr in ours else import_from_settings(attr, *default)


class LoginView(auth_views.LoginView):
    """``/oidc/login/``: the sign-in page of the site's user pages (``/o/authorize/``, ``/o/device/``),
    usable as ``LOGIN_URL``: a "Sign in with …" button per provider and, with ``PASSWORD_LOGIN``, a
    password form. Any active user may sign in here, staff or not.

    ``next`` goes along to the provider (mozilla-django-oidc keeps it through the round trip); one that
    leads off this site is refused. A ``g:<group>`` asked for (the ``scope`` of this page or of
    ``next``) that exactly one provider has sends the browser straight to that provider.
    """

    template_name = "epochauth/oidc/login.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not (conf.epochauth_settings.BROWSER_LOGIN or conf.epochauth_settings.PASSWORD_LOGIN):
            raise Http404()
        asked = request.POST.get(
            self.redirect_field_name, request.GET.get(self.redirect_field_name)
        )
        if asked and not self.get_redirect_url():
            refused = backend.LoginFailed(
                _("This sign-in link leads to another site; it was refused.")
            )
            return failure_page(request, refused)
        return super().dispatch(request, *args, **kwargs)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        links = self.provider_links()
        chosen = self.provider_for_scope()
        if chosen is not None:
            return HttpResponseRedirect(next(url for provider, url in links if provider == chosen))
        if len(links) == 1 and conf.epochauth_settings.OIDC_REDIRECT_SINGLE_PROVIDER:
            return HttpResponseRedirect(links[0][1])
        return super().get(request, *args, **kwargs)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        """The password form, throttled as ``POST /auth/token/`` is (``LOGIN_THROTTLE_RATE``, the
        same counters): one password guessed here or there counts once against the same limits."""
        if not conf.epochauth_settings.PASSWORD_LOGIN:
            return HttpResponseNotAllowed(["GET"])
        self.attempt = throttling.LoginAttempt(Request(request), request.POST.get("username", ""))
        try:
            self.attempt.start()
        except Throttled as exc:
            response = failure_page(
                request,
                backend.LoginFailed(
                    _("Too many failed sign-ins. Wait a little, then try again."),
                    status=429,
                    title=_("Too many attempts"),
                ),
            )
            response["Retry-After"] = throttling.retry_after(exc)
            return response
        except snapshots.StateUnavailable:
            return failure_page(request, UNAVAILABLE)
        try:
            return super().post(request, *args, **kwargs)
        except DatabaseError:
            self.attempt.take_back()  # an outage is no failed guess
            return failure_page(request, UNAVAILABLE)

    def form_valid(self, form: Any) -> HttpResponse:
        self.attempt.succeeded()
        return super().form_valid(form)

    def provider_links(self) -> list[tuple[providers.Provider, str]]:
        next_url = self.get_redirect_url()
        query = f"?{urlencode({self.redirect_field_name: next_url})}" if next_url else ""
        return [
            (p, reverse("epochauth-oidc-login-provider", args=[p.slug]) + query)
            for p in providers.login_providers()
        ]

    def provider_for_scope(self) -> providers.Provider | None:
        """The provider of the group the sign-in is for, when one provider alone has it."""
        scope = self.request.GET.get("scope")
        if scope is None:
            scope = parse_qs(urlsplit(self.get_redirect_url()).query).get("scope", [""])[0]
        groups = {name for name in map(scopes.group_name, scopes.split_scope(scope)) if name}
        chosen = {providers.provider_for_group(name) for name in groups}
        return chosen.pop() if len(chosen) == 1 else None

    def get_default_redirect_url(self) -> str:
        return reverse("epochauth-oidc-tokens")

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        # The password form sends next back under its name (LoginView's context has only its value).
        context.update(
            links=self.provider_links(),
            password_login=conf.epochauth_settings.PASSWORD_LOGIN,
            redirect_field_name=self.redirect_field_name,
        )
        return context


class ProviderLoginView(OIDCAuthenticationRequestView):
    """``/oidc/login/<slug>/``: redirect to the provider with state, nonce and a PKCE challenge.

    ``/oidc/recheck/`` (``recheck``): the same request with ``prompt=none`` for the provider of the
    session, when :mod:`.recheck` marked it for one (never on a request's say)."""

    get_settings = staticmethod(mozilla_setting)
    recheck = False

    def __init__(self, **kwargs: Any) -> None:
        # The endpoint and client id are the provider's, set in get().
        View.__init__(self, **kwargs)

    def get_extra_params(self, request: HttpRequest) -> dict[str, str]:
        return {"prompt": "none"} if self.recheck else super().get_extra_params(request)

    def get(self, request: HttpRequest, slug: str = "") -> HttpResponse:
        if self.recheck:
            issuer = request.session.pop(recheck.PENDING_SESSION_KEY, None)
            if issuer is None or issuer != request.session.get(PROVIDER_SESSION_KEY):
                return HttpResponseRedirect(reverse("epochauth-oidc-tokens"))
            provider = providers.provider_by_issuer(issuer)
            if provider is None:
                auth.logout(request)  # the provider is gone: nobody can confirm the session
                return HttpResponseRedirect(reverse("epochauth-oidc-login"))
        else:
            provider = providers.provider_by_slug(slug)
        if provider is None:
            return failure_page(
                request, backend.LoginFailed(_("There is no such sign-in provider."), status=404)
            )
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider.metadata()["authorization_endpoint"]
        except providers.ProviderUnavailable as exc:
            logger.warning("epochauth: login provider %s: %s", provider.slug, exc)
            return failure_page(request, backend.LoginFailed(backend.UNREACHABLE))
        self.OIDC_RP_CLIENT_ID = provider.client_id
        response = super().get(request)
        state = parse_qs(urlsplit(response["Location"]).query)["state"][0]
        # The callback must end at the provider the login started at.
        request.session["oidc_states"][state]["issuer"] = provider.issuer
        if self.recheck:
            request.session["oidc_states"][state]["recheck"] = True
        request.session.modified = True
        return response


class CallbackView(OIDCAuthenticationCallbackView):
    """``/oidc/callback/``: the one redirect URI of every provider."""

    get_settings = staticmethod(mozilla_setting)

    @property
    def success_url(self) -> str:
        return self.request.session.get("oidc_login_next") or reverse("epochauth-oidc-tokens")

    def get(self, request: HttpRequest) -> HttpResponse:
        try:
            return self.login(request)
        except backend.LoginFailed as exc:
            return failure_page(request, exc)

    def login(self, request: HttpRequest) -> HttpResponse:
        states = request.session.get("oidc_states")
        state = request.GET.get("state")
        entry = (
            states.pop(state, None)
            if isinstance(states, dict) and isinstance(state, str)
            else None
        )
        if entry is not None:
            request.session.modified = True  # a state is good for one callback: no replay
        if entry is not None and entry.get("recheck"):
            return self.rechecked(request, entry)
        error = request.GET.get("error")
        if error == "access_denied":
            raise backend.LoginFailed(
                _("Sign-in was cancelled or refused at the provider."), status=403
            )
        if error:
            raise backend.LoginFailed(
                _("The sign-in provider reported an error (%(error)s).") % {"error": error[:64]}
            )
        if entry is None or not request.GET.get("code"):
            raise backend.LoginFailed(
                _(
                    "This sign-in answer does not belong to a sign-in started in this browser, "
                    "or it was used already. Please start again."
                )
            )
        provider = self.provider(entry)
        self.user = self.authenticate(request, provider, entry)
        return self.login_success(provider)

    def provider(self, entry: dict[str, Any]) -> providers.Provider:
        provider = providers.provider_by_issuer(entry.get("issuer", ""))
        if provider is None:
            raise backend.LoginFailed(_("This sign-in provider is not available any more."))
        return provider

    def authenticate(
        self, request: HttpRequest, provider: providers.Provider, entry: dict[str, Any]
    ) -> Any:
        user = auth.authenticate(
            request,
            oidc_provider=provider,
            nonce=entry["nonce"],
            code_verifier=entry.get("code_verifier"),
        )
        if user is None:
            logger.error(
                "epochauth: epochauth.oidc.backend.OIDCBackend is not in AUTHENTICATION_BACKENDS"
            )
            raise backend.LoginFailed(_("Sign-in with this provider is not configured correctly."))
        return user

    def rechecked(self, request: HttpRequest, entry: dict[str, Any]) -> HttpResponse:
        """The provider's answer to a ``prompt=none`` re-check: a code for the user signed in here
        lets the page load go on; anything else (``login_required``, another user, a failure) ends
        our session as a logout does, and the page loads signed out."""
        next_url = self.success_url
        try:
            if request.GET.get("error") or not request.GET.get("code"):
                raise backend.LoginFailed(_("The provider session has ended."))
            user = self.authenticate(request, self.provider(entry), entry)
            if user.pk != request.user.pk:
                raise backend.LoginFailed(_("The provider session has ended."))
        except backend.LoginFailed:
            auth.logout(request)
        else:
            recheck.confirmed(request)
        return HttpResponseRedirect(next_url)

    def login_success(self, provider: providers.Provider) -> HttpResponse:
        auth.login(self.request, self.user)  # always: a new session key, a new login time
        self.request.session[PROVIDER_SESSION_KEY] = provider.issuer
        recheck.confirmed(self.request)
        backchannel.record_browser_login(
            self.request,
            self.user,
            provider.issuer,
            getattr(self.request, backend.ID_TOKEN_CLAIMS),
        )
        models.AuditEvent.objects.create(
            action="browser_login",
            user=self.user,
            detail={"issuer": provider.issuer, "provider": provider.slug},
        )
        tokens = getattr(self.request, backend.TOKEN_RESPONSE)
        signals.upstream_tokens.send(
            sender=providers.Provider, user=self.user, issuer=provider.issuer, tokens=tokens
        )
        return HttpResponseRedirect(self.success_url)


class LogoutView(OIDCLogoutView):
    """``/oidc/logout/``: GET asks, POST ends the session and then the provider's, if it has one."""

    get_settings = staticmethod(mozilla_setting)

    def get(self, request: HttpRequest) -> HttpResponse:
        return render(request, "epochauth/oidc/logout.html")

    def post(self, request: HttpRequest) -> HttpResponse:
        provider = providers.provider_by_issuer(request.session.get(PROVIDER_SESSION_KEY, ""))
        auth.logout(request)
        target = reverse("epochauth-oidc-login")
        if provider is not None:
            try:
                endpoint = provider.metadata().get("end_session_endpoint")
            except providers.ProviderUnavailable:
                endpoint = None  # our session is over; the provider's ends with its own lifetime
            if endpoint:
                query = urlencode({"client_id": provider.client_id})
                target = f"{endpoint}{'&' if '?' in endpoint else '?'}{query}"
        return HttpResponseRedirect(target)


class TokensView(LoginRequiredMixin, View):
    """``/oidc/tokens/``: the signed-in page; POST creates an API token pair for scripts, shown once."""

    login_url = reverse_lazy("epochauth-oidc-login")

    def get(self, request: HttpRequest) -> HttpResponse:
        return self.page(request, {})

    def post(self, request: HttpRequest) -> HttpResponse:
        user = request.user
        # The community (VO) chosen on the page, else the default or the user's only one; a
        # provider the community does not take is refused (its ``identity_providers``).
        wanted = request.POST.get("vo", "")
        try:
            community = communities.choose(user.pk, [f"vo:{wanted}"] if wanted else [])
            communities.check_provider(community, request.session.get(PROVIDER_SESSION_KEY))
        except communities.Refused as exc:
            return self.page(request, {"error": exc.description}, status=400)
        session, refresh_token = sessions.start_session(
            user,
            user_agent=request.META.get("HTTP_USER_AGENT", ""),
            browser_login=backchannel.browser_login_of(
                request
            ),  # the provider's logout of this login ends it
            login={"via": "browser"},
            community=community.slug if community is not None else "",
        )
        access = mint_access_token(
            user,
            session_id=session.id.hex,
            session=session,
            request=request,
            standing=sessions.standing(session),
            extra_claims=statuslist.reference(session),
            community=community,
        )
        return self.page(request, {"access_token": access.token, "refresh_token": refresh_token})

    def page(
        self, request: HttpRequest, context: dict[str, Any], status: int = 200
    ) -> HttpResponse:
        issuer = conf.epochauth_settings.ISSUER
        server = (
            issuer
            if issuer.startswith(("https://", "http://"))
            else request.build_absolute_uri("/")
        )
        provider = providers.provider_by_issuer(request.session.get(PROVIDER_SESSION_KEY, ""))
        context.update(
            server=server.rstrip("/"),
            provider=provider,
            # `epochauth login` is the device flow of the OAuth server: only a hint where it works.
            cli_login=apps.is_installed("epochauth.oauth"),
            communities=communities.selectable(request.user.pk),
        )
        response = render(request, "epochauth/oidc/tokens.html", context, status=status)
        for name, value in views.NO_STORE.items():  # the page may show tokens
            response[name] = value
        return response


class LogoutTokenSerializer(serializers.Serializer):
    logout_token = serializers.CharField(trim_whitespace=False)


class BackchannelLogoutView(views.EpochAuthView):
    """``POST /oidc/backchannel-logout/``: a provider's logout token (OpenID Connect Back-Channel
    Logout 1.0, see :mod:`.backchannel`). The provider calls it with no session and no CSRF token."""

    authentication_classes = ()
    permission_classes = (AllowAny,)
    parser_classes = (FormParser,)  # section 2.5: application/x-www-form-urlencoded
    renderer_classes = (JSONRenderer,)

    def post(self, request: Request) -> Response:
        data = views.validated(LogoutTokenSerializer, request)
        backchannel.log_out(backchannel.verify_logout_token(data["logout_token"]))
        return Response(status=200)  # section 2.8: an empty 200

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        for (
            name,
            value,
        ) in views.NO_STORE.items():  # every answer, refusals and 503s too (section 2.8)
            response[name] = value
        return response
