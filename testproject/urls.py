"""URLs of the demo project: admin, the tokenauth endpoints and a small example API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/", include("tokenauth.urls")),
    path("oidc/", include("tokenauth.oidc.urls")),
    path("", include("tokenauth.well_known_urls")),
    path("o/", include("tokenauth.oauth.urls")),
    path("tokenmanager/", include("tokenauth.tokenmanager.urls")),
    path("", include("tokenauth.oauth.well_known_urls")),
    path("api/", include("testproject.api")),
    path("", RedirectView.as_view(pattern_name="admin:index")),  # the demo's front door
]
