"""Discovery documents; mount at the server root with ``path("", include("tokenauth.well_known_urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path(".well-known/jwks.json", views.JWKSView.as_view(), name="tokenauth-jwks"),
    path(
        ".well-known/oauth-authorization-server",
        views.AuthorizationServerMetadataView.as_view(),
        name="tokenauth-authorization-server-metadata",
    ),
    path(
        ".well-known/openid-configuration",
        views.OpenIDConfigurationView.as_view(),
        name="tokenauth-openid-configuration",
    ),
]
