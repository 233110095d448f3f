"""The authorization server; mount with ``path("o/", include("epochauth.oauth.urls"))``. Its RFC 8414
metadata is ``epochauth.well_known_urls``' (mounted at the root for our own login anyway).

DOT's views under DOT's namespace (its templates reverse ``oauth2_provider:...``): ours for the
token and introspection endpoints, and the pages of :mod:`.pages` in epochauth's templates. Each is
wrapped by :mod:`.parameters`, which refuses control characters before DOT sees them.
"""

from django.urls import path
from oauth2_provider import views as dot

from . import pages, registration, views
from .parameters import endpoint, page

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", page(pages.AuthorizationView.as_view()), name="authorize"),
    path("token/", endpoint(views.TokenView.as_view()), name="token"),
    path("revoke_token/", endpoint(dot.RevokeTokenView.as_view()), name="revoke-token"),
    path("introspect/", endpoint(views.IntrospectView.as_view()), name="introspect"),
    # OpenID Provider mode (DOT's OIDC_ENABLED; DOT's views answer 404 without it).
    path("userinfo/", endpoint(views.UserInfoView.as_view()), name="user-info"),
    path("logout/", page(pages.RPInitiatedLogoutView.as_view()), name="rp-initiated-logout"),
    path(
        "device-authorization/",
        endpoint(views.DeviceAuthorizationView.as_view()),
        name="device-authorization",
    ),
    path("device/", page(pages.DeviceUserCodeView.as_view()), name="device"),
    # Dynamic client registration (RFC 7591/7592), EPOCHAUTH["CLIENT_REGISTRATION"]; 404 when off.
    path("register/", endpoint(registration.RegistrationView.as_view()), name="dcr-register"),
    path(
        "register/<slug:client_id>/",
        endpoint(registration.RegistrationManagementView.as_view()),
        name="dcr-register-management",
    ),
    path(
        "device-confirm/<slug:client_id>/<slug:user_code>",
        page(pages.DeviceConfirmView.as_view()),
        name="device-confirm",
    ),
    path(
        "device-grant-status/<slug:client_id>/<slug:user_code>",
        page(pages.DeviceGrantStatusView.as_view()),
        name="device-grant-status",
    ),
]
