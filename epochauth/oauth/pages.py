"""The pages a person sees at the authorization server: the device code, its approval and the consent
of ``/o/authorize/``, in epochauth's templates (``epochauth/oauth/*.html``, the look of the sign-in
pages; a project overrides them by name), and RP-initiated logout's confirmation in OpenID Provider mode.

A code that is unknown, expired or already used gets a page that says so, never DOT's bare 404.
Device approvals are always asked for, also for first-party applications: the code may come from
someone else's device (RFC 8628 section 5.4); ``/o/authorize/`` skips the consent page for an
application with DOT's ``skip_authorization`` flag, whose redirect URIs are registered.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render, resolve_url
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider import views as dot
from oauth2_provider.exceptions import InvalidOIDCClientError, OAuthToolkitError
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_device_grant_model,
    get_refresh_token_model,
)
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors
from rest_framework.exceptions import Throttled

from epochauth.scopes import split_scope

from .. import communities, snapshots, throttling
from ..oidc.recheck import PROVIDER_SESSION_KEY
from . import openid, revocation

#: The page of each reason a code cannot be approved: (status, title, message).
CODE_PROBLEMS: dict[str, tuple[int, Any, Any]] = {
    "incorrect_user_code": (
        404,
        _("Unknown code"),
        _(
            "There is no sign-in waiting for this code. Check the code your device shows and try again."
        ),
    ),
    "expired_user_code": (
        410,
        _("Code expired"),
        _("This code has expired. Start the sign-in on your device again for a new code."),
    ),
    "user_code_already_used": (
        409,
        _("Code already used"),
        _(
            "This code was approved or denied already. Start the sign-in on your device again if needed."
        ),
    ),
}


def error_page(request: HttpRequest, status: int, title: Any, message: Any) -> HttpResponse:
    return render(
        request, "epochauth/oidc/error.html", {"title": title, "message": message}, status=status
    )


def code_problem(request: HttpRequest, code: str) -> HttpResponse:
    status, title, message = CODE_PROBLEMS[code]
    context = {"title": title, "message": message}
    return render(request, "epochauth/oauth/device_problem.html", context, status=status)


def grant_problem(grant: Any) -> str | None:
    """Why a device grant cannot be approved any more, as a key of :data:`CODE_PROBLEMS`, or None."""
    if grant is None:
        return "incorrect_user_code"
    if grant.is_expired():
        return "expired_user_code"
    if grant.status != grant.AUTHORIZATION_PENDING:
        return "user_code_already_used"
    return None


def provider_refusal(request: HttpRequest, scope: str | list[str]) -> Any:
    """Why the signed-in user may not approve a grant of ``scope`` here: its community does not
    take the identity provider this browser session signed in through (its ``identity_providers``);
    None when it may. A password sign-in names no provider: membership alone decides."""
    names = split_scope(scope) if isinstance(scope, str) else scope
    issuer = request.session.get(PROVIDER_SESSION_KEY)
    return communities.provider_refusal(request.user.pk, names, issuer)


def scope_items(scope: str | list[str]) -> list[tuple[str, str]]:
    """Each scope with its description (``g:<group>``: "Act as member of <group>")."""
    scopes = split_scope(scope) if isinstance(scope, str) else scope
    described = get_scopes_backend().get_all_scopes()
    return [(name, described.get(name, name)) for name in scopes]


class DeviceUserCodeView(dot.DeviceUserCodeView):
    """``/o/device/``: enter the code the device shows (``?user_code=`` from ``verification_uri_complete``
    fills it in). Signing in first: the sign-in page learns the code's scope, so a ``g:<group>`` of one
    provider goes straight to it.

    Every code looked up, linked or entered, signed in or not, goes through :meth:`grant`: wrong ones
    count against ``DEVICE_CODE_THROTTLE_RATE`` (RFC 8628 section 5.1), then a ``429`` page.
    """

    template_name = "epochauth/oauth/device.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        self.found: dict[str, Any] = {}
        try:
            return super().dispatch(request, *args, **kwargs)
        except Throttled as exc:
            response = error_page(
                request,
                429,
                _("Too many codes"),
                _(
                    "Too many wrong codes were entered. Wait a little, then enter the code your "
                    "device shows."
                ),
            )
            response["Retry-After"] = throttling.retry_after(exc)
            return response
        except snapshots.StateUnavailable:
            return error_page(
                request,
                503,
                _("Service unavailable"),
                _("The service is unavailable right now. Please try again."),
            )

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        # Counted before DOT's form looks the code up (again).
        self.grant(request.POST.get("user_code", "").strip())
        return super().post(request, *args, **kwargs)

    def handle_no_permission(self) -> HttpResponse:
        grant = self.grant(self.request.GET.get("user_code", ""))
        login_url = resolve_url(self.get_login_url())
        if grant is not None and grant.scope:
            login_url = (
                f"{login_url}{'&' if '?' in login_url else '?'}{urlencode({'scope': grant.scope})}"
            )
        return redirect_to_login(
            self.request.get_full_path(), login_url, self.get_redirect_field_name()
        )

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user_code = request.GET.get("user_code")
        problem = grant_problem(self.grant(user_code)) if user_code else None
        if problem is not None:
            return code_problem(request, problem)
        return super().get(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        grant = self.grant(self.request.GET.get("user_code", ""))
        if grant is not None:
            context["application"] = (
                get_application_model().objects.filter(client_id=grant.client_id).first()
            )
            context["scope_items"] = scope_items(grant.scope)
        return context

    def grant(self, user_code: str) -> Any:
        """The device grant of ``user_code``, or None; a code that names none is a wrong guess.

        Raises Throttled over the limit, StateUnavailable when the counters cannot be read."""
        if not user_code:
            return None
        if user_code not in self.found:
            attempt = throttling.DeviceCodeAttempt(self.request)
            attempt.start()
            grant = get_device_grant_model().objects.filter(user_code=user_code).first()
            if grant is not None:
                attempt.succeeded()
            self.found[user_code] = grant
        return self.found[user_code]

    def form_invalid(self, form: Any) -> HttpResponse:
        for code in CODE_PROBLEMS:
            if form.has_error("user_code", code):
                return code_problem(self.request, code)
        return super().form_invalid(form)


class DeviceConfirmView(dot.DeviceConfirmView):
    """``/o/device-confirm/<client>/<code>``: the client's name and each scope, approve or deny."""

    template_name = "epochauth/oauth/device_confirm.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.user.is_authenticated:
            model = get_device_grant_model()
            grant = model.objects.filter(
                client_id=kwargs["client_id"], user_code=kwargs["user_code"], user=request.user
            ).first()
            problem = grant_problem(grant)
            if problem is not None:
                return code_problem(request, problem)
            refusal = provider_refusal(request, grant.scope or "")
            if refusal is not None:
                # Denied, not left pending: the device learns it at its next poll (access_denied).
                model.objects.filter(pk=grant.pk, status=grant.AUTHORIZATION_PENDING).update(
                    status=grant.DENIED
                )
                return error_page(request, 403, _("Not with this sign-in"), refusal)
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["scope_items"] = scope_items(context["scopes"])
        return context


class DeviceGrantStatusView(dot.DeviceGrantStatusView):
    """``/o/device-grant-status/<client>/<code>``: approved or denied; back to the device."""

    template_name = "epochauth/oauth/device_status.html"

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if (
            request.user.is_authenticated
            and not self.get_queryset()
            .filter(
                client_id=kwargs["client_id"], user_code=kwargs["user_code"], user=request.user
            )
            .exists()
        ):
            return code_problem(request, "incorrect_user_code")
        return super().dispatch(request, *args, **kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        context["application"] = (
            get_application_model().objects.filter(client_id=self.object.client_id).first()
        )
        # The device may have fetched its tokens before this page loads: redeeming marks an approved
        # code expired before its deadline (``validate_device_code``), a code past it is expired.
        device = self.object
        context["approved"] = device.status == device.AUTHORIZED or (
            device.status == device.EXPIRED and device.expires > timezone.now()
        )
        return context


def prompt_values(request: HttpRequest) -> set[str]:
    """``prompt``: space-separated, case-sensitive values (OpenID Connect Core 1.0 section 3.1.2.1)."""
    return set(request.GET.get("prompt", "").split())


class AuthorizationView(dot.AuthorizationView):
    """``/o/authorize/``: the consent page, or none for an application with ``skip_authorization``.

    OpenID requests: ``prompt=none`` never shows a page, it redirects back with a code or an error
    (the validator's silent checks: ``login_required``, ``consent_required``); ``prompt=login`` and a
    ``max_age`` the user's last sign-in exceeds send the user to the sign-in page first.
    """

    template_name = "epochauth/oauth/authorize.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if "none" not in prompt_values(request) and openid.signed_in_too_long_ago(
            request.user, request.GET.get("max_age")
        ):
            try:
                self.validate_authorization_request(request)
            except OAuthToolkitError as error:
                return self.error_response(error, application=None)
            return self.handle_prompt_login()
        return super().get(request, *args, **kwargs)

    def handle_no_permission(self) -> HttpResponse:
        if "max_age" in self.request.GET and not prompt_values(self.request) & {"none", "create"}:
            return self.handle_prompt_login()
        return super().handle_no_permission()

    def handle_prompt_login(self) -> HttpResponse:
        """To the sign-in page, and back here without ``prompt`` and ``max_age``: the sign-in just
        made satisfies both (an unchanged ``max_age=0`` would send the user there again)."""
        query = self.request.GET.copy()
        for name in ("prompt", "max_age"):
            query.pop(name, None)
        back = self.request.build_absolute_uri(f"{self.request.path}?{query.urlencode()}")
        return redirect_to_login(back, self.get_login_url(), self.get_redirect_field_name())

    def render_to_response(self, context: dict[str, Any], **response_kwargs: Any) -> HttpResponse:
        """Where DOT would show the consent page to an OpenID request with ``prompt=none``, the
        request goes on as the page's "Allow" would: the validator's silent checks then answer
        ``consent_required`` unless the user consented before. (An OAuth 2.0 request without
        ``openid`` ignores ``prompt``, an unknown parameter to it, RFC 6749 section 3.1.)"""
        if (
            "form" in context
            and "openid" in context.get("scopes", [])
            and "none" in prompt_values(self.request)
        ):
            form = self.get_form_class()(data={**context["form"].initial, "allow": True})
            if form.is_valid():
                return self.form_valid(form)
        return super().render_to_response(context, **response_kwargs)

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        if "scopes" in context:
            context["scope_items"] = scope_items(context["scopes"])
        return context

    def create_authorization_response(
        self, request: HttpRequest, scopes: str, credentials: dict[str, Any], allow: bool
    ) -> Any:
        """Every approval (the consent page's, a skipped or remembered consent's) of a community
        whose ``identity_providers`` do not list the provider this session signed in through goes
        back to the client as ``invalid_scope``, with the reason."""
        refusal = provider_refusal(request, scopes) if allow else None
        if refusal is not None:
            raise OAuthToolkitError(
                error=errors.InvalidScopeError(
                    description=str(refusal), state=credentials.get("state")
                ),
                redirect_uri=credentials.get("redirect_uri"),
            )
        return super().create_authorization_response(request, scopes, credentials, allow)


class RPInitiatedLogoutView(dot.RPInitiatedLogoutView):
    """``/o/logout/`` (OpenID Connect RP-Initiated Logout 1.0) in our look.

    ``id_token_hint`` names the relying party and whom it believes signed in; it is no credential
    (ID tokens pass through URLs, logs and relying parties). Only the browser's own signed-in user is
    signed out, after the confirmation page's POST (DOT's ``OIDC_RP_INITIATED_LOGOUT_ALWAYS_PROMPT``,
    check ``epochauth.oauth.E005``); the page says so when the hint names someone else. A browser
    signed in as no one ends nothing: back to the ``post_logout_redirect_uri``, or a signed-out page.

    DOT deletes the signed-in user's token rows at the applications a browser signs in to; their JWTs
    and families are denied too, or they would stay valid until they expire.
    """

    template_name = "epochauth/oauth/logout.html"

    def validate_logout_request(
        self,
        id_token_hint: str | None,
        client_id: str | None,
        post_logout_redirect_uri: str | None,
    ) -> tuple[Any, Any]:
        application, self.hint_user = super().validate_logout_request(
            id_token_hint, client_id, post_logout_redirect_uri
        )
        return application, self.hint_user

    def get_request_application(self, id_token: Any, client_id: str | None) -> Any:
        """An unknown ``client_id`` is a bad request (DOT's lookup raises, a 500)."""
        if not client_id:
            return super().get_request_application(id_token, client_id)
        application = get_application_model().objects.filter(client_id=client_id).first()
        if application is None:
            raise InvalidOIDCClientError()
        return application

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        hint_user = getattr(self, "hint_user", None)
        context["other_account"] = hint_user is not None and hint_user != self.request.user
        return context

    def do_logout(
        self,
        application: Any = None,
        post_logout_redirect_uri: str | None = None,
        state: str | None = None,
        token_user: Any = None,
    ) -> HttpResponse:
        user = self.request.user
        # The rows DOT deletes (DOT's own filter).
        access_tokens = get_access_token_model().objects.none()
        if user.is_authenticated and oauth2_settings.OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS:
            access_tokens = get_access_token_model().objects.filter(
                user=user,
                application__client_type__in=self.token_deletion_client_types,
                application__authorization_grant_type__in=self.token_deletion_grant_types,
            )
        refresh_tokens = get_refresh_token_model().objects.filter(access_token__in=access_tokens)
        with revocation.ending(access_tokens, refresh_tokens):
            # Never the hint's user: DOT would sign out whoever the hint names.
            response = super().do_logout(application, post_logout_redirect_uri, state)
        if post_logout_redirect_uri:
            return response
        # DOT sends the browser to the site's root; say what happened instead.
        return render(self.request, self.template_name, {"signed_out": True})
