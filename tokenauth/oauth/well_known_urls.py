"""RFC 8414 metadata at the server root: ``path("", include("tokenauth.oauth.well_known_urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path(
        ".well-known/oauth-authorization-server",
        views.ServerMetadataView.as_view(),
        name="tokenauth-oauth-metadata",
    ),
]
