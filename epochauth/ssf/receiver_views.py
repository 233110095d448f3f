"""The push endpoint of the Shared Signals receiver (RFC 8935): a transmitter POSTs one SET as
``application/secevent+jwt`` with the stream's ``Authorization`` secret; 202 when it was accepted,
else the section 2.4 JSON error. Authentication comes first, so a caller without the secret learns
nothing about what it sent; the body is read only up to ``MAX_TOKEN_BYTES``."""

from __future__ import annotations

import logging

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext_lazy as _
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from .. import conf, jwks, snapshots
from . import events, receiver

logger = logging.getLogger(__name__)

#: The answer's status by error code: a push without the stream's secret is unauthenticated.
STATUS = {"authentication_failed": 401, "access_denied": 403}
NO_STORE = {"Cache-Control": "no-store"}


def _token(request: HttpRequest) -> str:
    """The SET in the body: the right media type, no longer than ``MAX_TOKEN_BYTES``."""
    if (request.content_type or "").lower() != events.SECEVENT_MEDIA_TYPE:
        raise receiver.Refused("invalid_request", _("The body must be application/secevent+jwt"))
    limit = conf.epochauth_settings.MAX_TOKEN_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = limit + 1
    body = request.read(limit + 1) if declared <= limit else b""
    if declared > limit or len(body) > limit:
        raise receiver.Refused("invalid_request", _("The security event token is too long"))
    try:
        return body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise receiver.Refused(
            "invalid_request", _("The security event token is malformed")
        ) from None


def refusal(refused: receiver.Refused) -> HttpResponse:
    logger.warning("epochauth: security event refused: %s: %s", refused.err, refused.description)
    response = JsonResponse(
        {"err": refused.err, "description": str(refused.description)},
        status=STATUS.get(refused.err, 400),
        headers=NO_STORE,
    )
    if response.status_code == 401:
        response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response


@method_decorator(csrf_exempt, name="dispatch")
class PushView(View):
    """``POST /auth/ssf/events/`` (name ``epochauth-ssf-push``)."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        try:
            subscription = receiver.authenticate_push(request.headers.get("Authorization"))
            receiver.receive(_token(request), subscription)
        except receiver.Refused as refused:
            return refusal(refused)
        except (jwks.IssuerUnavailable, snapshots.StateUnavailable, DatabaseError):
            # Not the transmitter's fault: it delivers the SET again later.
            return HttpResponse(status=503, headers={**NO_STORE, "Retry-After": "30"})
        return HttpResponse(status=202, headers=NO_STORE)
