"""Browser login; mount with ``path("oidc/", include("epochauth.oidc.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("login/", views.LoginView.as_view(), name="epochauth-oidc-login"),
    path(
        "login/<slug:slug>/",
        views.ProviderLoginView.as_view(),
        name="epochauth-oidc-login-provider",
    ),
    path(
        "recheck/",
        views.ProviderLoginView.as_view(recheck=True),
        name="epochauth-oidc-recheck",
    ),
    path("callback/", views.CallbackView.as_view(), name="epochauth-oidc-callback"),
    path("logout/", views.LogoutView.as_view(), name="epochauth-oidc-logout"),
    path("tokens/", views.TokensView.as_view(), name="epochauth-oidc-tokens"),
    path(
        "backchannel-logout/",
        views.BackchannelLogoutView.as_view(),
        name="epochauth-oidc-backchannel-logout",
    ),
]
