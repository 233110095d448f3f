"""The transmitter's HTTP side: ``/.well-known/ssf-configuration`` (SSF 1.0 section 7), the stream
management API (section 8) and the RFC 8936 poll endpoint. Each answers 404 while
``SSF_TRANSMITTER`` is off.

Only a receiver may manage streams: a client-credentials token of our authorization server with the
service scope ``ssf:manage``, of a confidential application whose allowed scopes (the admin's
decision) still list it; a user's token never stands for one, whatever its scope. Each receiver sees
its own streams only: another's is 404, as one that does not exist.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.http import Http404
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from oauth2_provider.models import get_application_model
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from .. import authentication, conf, exceptions, tokens
from ..oauth.models import SSFStream
from ..oauth.scopes import is_service_application
from ..views import NO_STORE, EpochAuthView, PublicView, issuer_url, public_document, validated
from . import events, transmitter
from .config import SCOPE

#: A receiver's streams at most (each push is a request to it; each stream a row per event).
MAX_STREAMS = 10


def receiver_application(request: Request) -> Any:
    """The application a request's token stands for as an SSF receiver, or None."""
    access = request.auth
    if (
        not isinstance(access, tokens.AccessToken)
        or not access.is_local
        or not access.is_client_credentials
        or SCOPE not in access.scopes
        or not isinstance(access.claims.get("client_id"), str)
    ):
        return None
    application = (
        get_application_model()
        .objects.select_related("epochauth_scopes")
        .filter(client_id=access.claims["client_id"])
        .first()
    )
    return (
        application
        if application is not None and is_service_application(application, SCOPE)
        else None
    )


class IsReceiver(BasePermission):
    message = _("Managing a shared signals stream needs a receiver's client-credentials token.")

    def has_permission(self, request: Request, view: Any) -> bool:
        view.receiver = receiver_application(request)
        return view.receiver is not None


def _enabled() -> None:
    if transmitter.config() is None:
        raise Http404()


class ConfigurationView(PublicView):
    """``GET /.well-known/ssf-configuration``: SSF 1.0 section 7.1 metadata."""

    def get(self, request: Request) -> Response:
        _enabled()
        settings = transmitter.config()
        assert settings is not None
        django_request = request._request
        document = {
            "spec_version": "1_0",
            "issuer": conf.epochauth_settings.ISSUER,
            "jwks_uri": issuer_url(django_request, "epochauth-jwks"),
            "delivery_methods_supported": [events.PUSH, events.POLL],
            "configuration_endpoint": issuer_url(django_request, "epochauth-ssf-streams"),
            "status_endpoint": issuer_url(django_request, "epochauth-ssf-status"),
            "add_subject_endpoint": issuer_url(django_request, "epochauth-ssf-add-subject"),
            "remove_subject_endpoint": issuer_url(django_request, "epochauth-ssf-remove-subject"),
            "verification_endpoint": issuer_url(django_request, "epochauth-ssf-verify"),
            # RFC 6749: a client-credentials token of our authorization server.
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6749"}],
            "default_subjects": settings.default_subjects,
        }
        return public_document(document)


class ReceiverView(EpochAuthView):
    """Base of the endpoints a receiver calls with its token."""

    authentication_classes = (authentication.BearerAuthentication,)
    permission_classes = (IsReceiver,)
    receiver: Any = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        _enabled()
        super().initial(request, *args, **kwargs)

    def stream(self, stream_id: Any) -> SSFStream:
        """The receiver's own stream by id; any other (or none) is 404."""
        found = (
            SSFStream.objects.filter(application=self.receiver, stream_id=stream_id).first()
            if stream_id
            else None
        )
        if found is None:
            raise exceptions.OAuthError("not_found", _("No such stream"), 404)
        return found

    def query_stream(self, request: Request) -> SSFStream:
        data = validated_query(StreamIdSerializer, request)
        return self.stream(data["stream_id"])

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        response = super().finalize_response(request, response, *args, **kwargs)
        for name, value in NO_STORE.items():
            response[name] = value
        return response


class StreamIdSerializer(serializers.Serializer):
    stream_id = serializers.UUIDField()


def validated_query(
    serializer_class: type[serializers.Serializer], request: Request
) -> dict[str, Any]:
    serializer = serializer_class(data=request.query_params)
    if not serializer.is_valid():
        raise exceptions.OAuthError("invalid_request", _("stream_id is missing or malformed"))
    return dict(serializer.validated_data)


class DeliverySerializer(serializers.Serializer):
    method = serializers.CharField(max_length=64)
    endpoint_url = serializers.CharField(max_length=2000, required=False)
    authorization_header = serializers.CharField(max_length=2000, required=False)


class StreamSerializer(serializers.Serializer):
    """The receiver-supplied properties of SSF 1.0 section 8.1.1 (others are ignored)."""

    events_requested = serializers.ListField(
        child=serializers.CharField(max_length=255), required=False, max_length=50
    )
    delivery = DeliverySerializer(required=False)
    description = serializers.CharField(max_length=255, required=False, allow_blank=True)


class StreamUpdateSerializer(StreamSerializer):
    stream_id = serializers.UUIDField()


def stream_configuration(request: Request, stream: SSFStream) -> dict[str, Any]:
    """SSF 1.0 section 8.1.1: the stream as the receiver sees it (never its authorization header)."""
    settings = transmitter.config()
    interval = settings.min_verification_interval if settings else timedelta(0)
    if stream.method == SSFStream.Method.POLL:
        endpoint = issuer_url(request._request, "epochauth-ssf-poll", stream_id=stream.stream_id)
    else:
        endpoint = stream.endpoint_url
    document = {
        "stream_id": str(stream.stream_id),
        "iss": conf.epochauth_settings.ISSUER,
        "aud": stream.audience,
        "events_supported": list(transmitter.SUPPORTED_EVENTS),
        "events_requested": stream.events_requested,
        "events_delivered": transmitter.delivered(stream),
        "delivery": {"method": stream.method, "endpoint_url": endpoint},
        "min_verification_interval": int(interval.total_seconds()),
    }
    if stream.description:
        document["description"] = stream.description
    return document


def _apply(stream: SSFStream, data: dict[str, Any], *, replace: bool) -> None:
    """Set the receiver-supplied properties ``data`` gives (``replace``: all of them, as PUT does)."""
    if replace or "events_requested" in data:
        stream.events_requested = list(dict.fromkeys(data.get("events_requested", [])))
    if replace or "description" in data:
        stream.description = data.get("description", "")
    if not (replace or "delivery" in data):
        return
    delivery = data.get("delivery") or {"method": events.POLL}
    method = delivery["method"]
    if method == events.POLL:
        stream.method, stream.endpoint_url, stream.authorization_header = method, "", ""
    elif method == events.PUSH:
        url = delivery.get("endpoint_url", "")
        refusal = transmitter.endpoint_refusal(url)
        if refusal is not None:
            raise exceptions.OAuthError(
                "invalid_request", _("The push endpoint is refused: %(why)s") % {"why": refusal}
            )
        stream.method, stream.endpoint_url = method, url
        stream.authorization_header = delivery.get("authorization_header", "")
    else:
        raise exceptions.OAuthError("invalid_request", _("Unsupported delivery method"))


class StreamView(ReceiverView):
    """The configuration endpoint (SSF 1.0 section 8.1.1): create (POST), read (GET, one by
    ``stream_id`` or all), update (PATCH), replace (PUT) and delete (DELETE) streams."""

    def post(self, request: Request) -> Response:
        data = validated(StreamSerializer, request)
        if SSFStream.objects.filter(application=self.receiver).count() >= MAX_STREAMS:
            raise exceptions.OAuthError(
                "conflict", _("This receiver has as many streams as it may have"), 409
            )
        settings = transmitter.config()
        stream = SSFStream(
            application=self.receiver,
            audience=self.receiver.client_id,
            all_subjects=settings is not None and settings.default_subjects == "ALL",
        )
        _apply(stream, data, replace=True)
        stream.save()
        return Response(stream_configuration(request, stream), status=201)

    def get(self, request: Request) -> Response:
        if "stream_id" in request.query_params:
            return Response(stream_configuration(request, self.query_stream(request)))
        mine = SSFStream.objects.filter(application=self.receiver).order_by("created_at")
        return Response([stream_configuration(request, stream) for stream in mine])

    def patch(self, request: Request) -> Response:
        return self._update(request, replace=False)

    def put(self, request: Request) -> Response:
        return self._update(request, replace=True)

    def _update(self, request: Request, *, replace: bool) -> Response:
        data = validated(StreamUpdateSerializer, request)
        stream = self.stream(data["stream_id"])
        _apply(stream, data, replace=replace)
        stream.save()
        return Response(stream_configuration(request, stream))

    def delete(self, request: Request) -> Response:
        self.query_stream(request).delete()
        return Response(status=204)


class StatusSerializer(serializers.Serializer):
    stream_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=SSFStream.Status.values)
    reason = serializers.CharField(max_length=255, required=False, allow_blank=True)


def _status(stream: SSFStream) -> dict[str, Any]:
    document = {"stream_id": str(stream.stream_id), "status": stream.status}
    if stream.status_reason:
        document["reason"] = stream.status_reason
    return document


class StatusView(ReceiverView):
    """The status endpoint (SSF 1.0 section 8.1.2): read (GET) and set (POST) a stream's status.
    A paused stream keeps its events for later; a disabled one gets none."""

    def get(self, request: Request) -> Response:
        return Response(_status(self.query_stream(request)))

    def post(self, request: Request) -> Response:
        data = validated(StatusSerializer, request)
        stream = self.stream(data["stream_id"])
        stream.status, stream.status_reason = data["status"], data.get("reason", "")
        stream.save(update_fields=["status", "status_reason"])
        if stream.status == SSFStream.Status.ENABLED:
            transaction.on_commit(transmitter.kick)  # what it held while paused
        return Response(_status(stream))


class SubjectSerializer(serializers.Serializer):
    stream_id = serializers.UUIDField()
    subject = serializers.DictField()
    verified = serializers.BooleanField(required=False)

    def validate_subject(self, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("format"), str) or len(str(value)) > 2000:
            raise serializers.ValidationError("an RFC 9493 subject identifier")
        return value


class AddSubjectView(ReceiverView):
    """SSF 1.0 section 8.1.3.2: 200 whether or not we have such a user (no receiver learns who
    has an account here); events about a user we have follow from now on."""

    def post(self, request: Request) -> Response:
        data = validated(SubjectSerializer, request)
        transmitter.add_subject(self.stream(data["stream_id"]), data["subject"])
        return Response(status=200)


class RemoveSubjectView(ReceiverView):
    """SSF 1.0 section 8.1.3.3."""

    def post(self, request: Request) -> Response:
        data = validated(SubjectSerializer, request)
        transmitter.remove_subject(self.stream(data["stream_id"]), data["subject"])
        return Response(status=204)


class VerificationSerializer(serializers.Serializer):
    stream_id = serializers.UUIDField()
    state = serializers.CharField(max_length=255, required=False)


class VerificationView(ReceiverView):
    """SSF 1.0 section 8.1.4.2: a verification event, at most one per
    ``min_verification_interval`` (429 with ``Retry-After`` sooner)."""

    def post(self, request: Request) -> Response:
        data = validated(VerificationSerializer, request)
        stream = self.stream(data["stream_id"])
        settings = transmitter.config()
        interval = settings.min_verification_interval if settings else timedelta(0)
        now = timezone.now()
        if stream.verified_at is not None and now < stream.verified_at + interval:
            wait = int((stream.verified_at + interval - now).total_seconds()) + 1
            return Response(
                {"error": "slow_down", "error_description": str(_("Verified too recently"))},
                status=429,
                headers={"Retry-After": str(wait)},
            )
        stream.verified_at = now
        stream.save(update_fields=["verified_at"])
        transmitter.verify(stream, data.get("state"))
        return Response(status=204)


class PollSerializer(serializers.Serializer):
    ack = serializers.ListField(
        child=serializers.CharField(max_length=64), required=False, max_length=1000
    )
    setErrs = serializers.DictField(child=serializers.DictField(), required=False)  # noqa: N815
    maxEvents = serializers.IntegerField(min_value=0, required=False)  # noqa: N815
    returnImmediately = serializers.BooleanField(required=False)  # noqa: N815


class PollView(ReceiverView):
    """RFC 8936 section 2.4: the stream's pending SETs, after deleting those acknowledged. Always
    answers at once (``returnImmediately`` or not): no request is held open waiting for events."""

    def post(self, request: Request, stream_id: Any) -> Response:
        stream = self.stream(stream_id)
        if stream.method != SSFStream.Method.POLL:
            raise exceptions.OAuthError("not_found", _("No such stream"), 404)
        data = validated(PollSerializer, request)
        sets, more = transmitter.poll(
            stream, data.get("ack", []), data.get("setErrs", {}), data.get("maxEvents")
        )
        return Response({"sets": sets, "moreAvailable": more})
