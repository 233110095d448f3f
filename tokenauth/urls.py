"""Token endpoints; mount with ``path("auth/", include("tokenauth.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("token/", views.TokenView.as_view(), name="tokenauth-token"),
    path("token/refresh/", views.RefreshView.as_view(), name="tokenauth-refresh"),
    path("token/renew/", views.RenewView.as_view(), name="tokenauth-renew"),
    path("logout/", views.LogoutView.as_view(), name="tokenauth-logout"),
    path("logout-all/", views.LogoutAllView.as_view(), name="tokenauth-logout-all"),
    path("revoke/", views.RevokeView.as_view(), name="tokenauth-revoke"),
    path("whoami/", views.WhoAmIView.as_view(), name="tokenauth-whoami"),
]
