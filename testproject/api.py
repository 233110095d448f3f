"""Example API protected by epochauth: views and their URL patterns (``include("testproject.api")``)."""

from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from epochauth.permissions import HasScope, InGroup


class HelloView(APIView):
    """Any authenticated caller (bearer token or session)."""

    @extend_schema(responses=inline_serializer("Hello", {"hello": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"hello": request.user.username})


class ReportsView(APIView):
    """Needs the scope ``reports:read`` in the token."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = ["reports:read"]

    @extend_schema(responses=inline_serializer("Reports", {"reports": serializers.ListField()}))
    def get(self, request: Request) -> Response:
        return Response({"reports": []})


class StaffAreaView(APIView):
    """Needs membership of the group ``operators``."""

    permission_classes = [IsAuthenticated, InGroup]
    required_groups = ["operators"]

    @extend_schema(responses=inline_serializer("StaffArea", {"group": serializers.CharField()}))
    def get(self, request: Request) -> Response:
        return Response({"group": "operators"})


urlpatterns = [
    path("hello/", HelloView.as_view(), name="api-hello"),
    path("reports/", ReportsView.as_view(), name="api-reports"),
    path("staff-area/", StaffAreaView.as_view(), name="api-staff-area"),
    # The OpenAPI document and Swagger UI (drf-spectacular), public like the discovery documents.
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]
