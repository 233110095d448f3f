"""Token endpoints; mount with ``path("auth/", include("epochauth.urls"))``."""

from django.urls import path

from . import views
from .ssf import receiver_views

urlpatterns = [
    path("token/", views.TokenView.as_view(), name="epochauth-token"),
    path("token/refresh/", views.RefreshView.as_view(), name="epochauth-refresh"),
    path("token/renew/", views.RenewView.as_view(), name="epochauth-renew"),
    path("logout/", views.LogoutView.as_view(), name="epochauth-logout"),
    path("logout-all/", views.LogoutAllView.as_view(), name="epochauth-logout-all"),
    path("revoke/", views.RevokeView.as_view(), name="epochauth-revoke"),
    path("whoami/", views.WhoAmIView.as_view(), name="epochauth-whoami"),
    path("statuslists/<int:number>", views.StatusListView.as_view(), name="epochauth-statuslist"),
    path("ssf/events/", receiver_views.PushView.as_view(), name="epochauth-ssf-push"),
]
