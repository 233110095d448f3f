"""Example API protected by tokenauth: views and their URL patterns (``include("testproject.api")``)."""

from django.urls import path
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from tokenauth.permissions import HasScope, InGroup


class HelloView(APIView):
    """Any authenticated caller (bearer token or session)."""

    def get(self, request: Request) -> Response:
        return Response({"hello": request.user.username})


class ReportsView(APIView):
    """Needs the scope ``reports:read`` in the token."""

    permission_classes = [IsAuthenticated, HasScope]
    required_scopes = ["reports:read"]

    def get(self, request: Request) -> Response:
        return Response({"reports": []})


class StaffAreaView(APIView):
    """Needs membership of the group ``operators``."""

    permission_classes = [IsAuthenticated, InGroup]
    required_groups = ["operators"]

    def get(self, request: Request) -> Response:
        return Response({"group": "operators"})


urlpatterns = [
    path("hello/", HelloView.as_view(), name="api-hello"),
    path("reports/", ReportsView.as_view(), name="api-reports"),
    path("staff-area/", StaffAreaView.as_view(), name="api-staff-area"),
]
