"""The authorization server; mount with ``path("o/", include("tokenauth.oauth.urls"))`` and the
metadata at the root with ``path("", include("tokenauth.oauth.well_known_urls"))``.

DOT's views under DOT's namespace (its templates reverse ``oauth2_provider:...``): ours for the
token and introspection endpoints, and the pages of :mod:`.pages` in tokenauth's templates.
"""

from django.urls import path
from oauth2_provider import views as dot

from . import pages, views

app_name = "oauth2_provider"

urlpatterns = [
    path("authorize/", pages.AuthorizationView.as_view(), name="authorize"),
    path("token/", views.TokenView.as_view(), name="token"),
    path("revoke_token/", dot.RevokeTokenView.as_view(), name="revoke-token"),
    path("introspect/", views.IntrospectView.as_view(), name="introspect"),
    # OpenID Provider mode (DOT's OIDC_ENABLED; DOT's views answer 404 without it).
    path("userinfo/", views.UserInfoView.as_view(), name="user-info"),
    path("logout/", pages.RPInitiatedLogoutView.as_view(), name="rp-initiated-logout"),
    path(
        "device-authorization/",
        views.DeviceAuthorizationView.as_view(),
        name="device-authorization",
    ),
    path("device/", pages.DeviceUserCodeView.as_view(), name="device"),
    path(
        "device-confirm/<slug:client_id>/<slug:user_code>",
        pages.DeviceConfirmView.as_view(),
        name="device-confirm",
    ),
    path(
        "device-grant-status/<slug:client_id>/<slug:user_code>",
        pages.DeviceGrantStatusView.as_view(),
        name="device-grant-status",
    ),
]
