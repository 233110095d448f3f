"""The Shared Signals transmitter; mount at the server root with
``path("", include("epochauth.ssf.urls"))`` (its metadata is under ``/.well-known/``)."""

from django.urls import path

from . import views

urlpatterns = [
    path(
        ".well-known/ssf-configuration",
        views.ConfigurationView.as_view(),
        name="epochauth-ssf-configuration",
    ),
    path("ssf/streams/", views.StreamView.as_view(), name="epochauth-ssf-streams"),
    path("ssf/streams/status/", views.StatusView.as_view(), name="epochauth-ssf-status"),
    path(
        "ssf/streams/subjects/add/",
        views.AddSubjectView.as_view(),
        name="epochauth-ssf-add-subject",
    ),
    path(
        "ssf/streams/subjects/remove/",
        views.RemoveSubjectView.as_view(),
        name="epochauth-ssf-remove-subject",
    ),
    path("ssf/streams/verify/", views.VerificationView.as_view(), name="epochauth-ssf-verify"),
    path("ssf/poll/<uuid:stream_id>/", views.PollView.as_view(), name="epochauth-ssf-poll"),
]
