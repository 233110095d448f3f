"""Mount with ``path("tokenmanager/", include("epochauth.tokenmanager.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("token/", views.UpstreamTokenView.as_view(), name="epochauth-tokenmanager-token")
]
