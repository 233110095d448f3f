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
    # A community's (epochauth.communities), under its default issuer <ISSUER>/<vo>.
    path(
        "<slug:community>/.well-known/jwks.json",
        views.CommunityJWKSView.as_view(),
        name="epochauth-community-jwks",
    ),
    path(
        ".well-known/oauth-authorization-server/<slug:community>",
        views.CommunityMetadataView.as_view(),
        name="epochauth-community-authorization-server-metadata",
    ),
    path(
        "<slug:community>/.well-known/openid-configuration",
        views.CommunityOpenIDConfigurationView.as_view(),
        name="epochauth-community-openid-configuration",
    ),
]
