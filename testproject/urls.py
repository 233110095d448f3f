"""URLs of the demo project: admin, the epochauth endpoints and a small example API."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from rest_framework_simplejwt.views import TokenObtainPairView

from epochauth.contrib.simplejwt.views import TokenRefreshView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/", include("epochauth.urls")),
    path("oidc/", include("epochauth.oidc.urls")),
    path("", include("epochauth.well_known_urls")),
    # The Shared Signals transmitter (EPOCHAUTH["SSF_TRANSMITTER"]; 404 while it is off).
    path("", include("epochauth.ssf.urls")),
    path("o/", include("epochauth.oauth.urls")),
    path("tokenmanager/", include("epochauth.tokenmanager.urls")),
    path("api/", include("testproject.api")),
    # The site's simplejwt endpoints during the switch (the handbook's "Moving from simplejwt"): its
    # login, and our refresh view in place of simplejwt's.
    path("simplejwt/token/", TokenObtainPairView.as_view(), name="simplejwt-token"),
    path("simplejwt/token/refresh/", TokenRefreshView.as_view(), name="simplejwt-refresh"),
    # The demo's front door: a page of links to what there is to try.
    path("", TemplateView.as_view(template_name="testproject/index.html"), name="demo-index"),
]
