"""Discovery documents; mount at the server root with ``path("", include("epochauth.well_known_urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path(".well-known/jwks.json", views.JWKSView.as_view(), name="epochauth-jwks"),
    path(
        ".well-known/oauth-authorization-server",
        views.AuthorizationServerMetadataView.as_view(),
        name="epochauth-authorization-server-metadata",
    ),
    path(
        ".well-known/openid-configuration",
        views.OpenIDConfigurationView.as_view(),
        name="epochauth-openid-configuration",
    ),
]
