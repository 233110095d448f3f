"""Mount with ``path("tokenmanager/", include("tokenauth.tokenmanager.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("token/", views.UpstreamTokenView.as_view(), name="tokenauth-tokenmanager-token")
]
