"""A small Shared Signals transmitter on loopback, for the receiver's tests (no real one is at hand).

:class:`TestTransmitter` is a :class:`~tests.loopback_issuer.CraftedIssuer` (discovery and a JWKS of
keys the test holds) that also serves ``/.well-known/ssf-configuration``, stream creation and update
(``/ssf/streams``), the verification endpoint (``/ssf/verify``) and a poll endpoint (``/ssf/poll``,
RFC 8936), each behind a bearer token. Its SETs are signed with its ``rsa-1`` key; :meth:`deliver`
pushes one to the stream's endpoint (RFC 8935) or queues it for polling.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import requests

from epochauth.ssf import events
from tests.loopback_issuer import CraftedIssuer, compact

#: The bearer token a receiver must present to the management and poll endpoints.
MANAGEMENT_TOKEN = "transmitter-management-token"


class TestTransmitter(CraftedIssuer):
    """Streams by id; ``pushes`` records (status, body) of each push; ``queue`` holds polled SETs;
    ``acks`` and ``set_errors`` what receivers reported; ``audience`` goes into streams and SETs."""

    __test__ = False  # not a test class, for pytest

    def __init__(self, audience: str) -> None:
        super().__init__()
        self.audience = audience
        self.streams: dict[str, dict[str, Any]] = {}
        self.pushes: list[tuple[int, Any]] = []
        self.queue: dict[str, str] = {}
        self.acks: list[str] = []
        self.set_errors: dict[str, Any] = {}
        #: What the poll endpoint says of ``moreAvailable`` while SETs are queued.
        self.more_available = False
        self.routes.update(
            {
                "POST /ssf/streams": self.create_stream,
                "PATCH /ssf/streams": self.update_stream,
                "POST /ssf/verify": self.verify,
                "POST /ssf/poll": self.poll,
            }
        )
        self.documents[events.WELL_KNOWN_CONFIGURATION] = (
            "application/json",
            json.dumps(self.configuration()).encode(),
        )

    def configuration(self) -> dict[str, Any]:
        return {
            "spec_version": "1_0",
            "issuer": self.issuer,
            "jwks_uri": f"{self.issuer}/jwks",
            "delivery_methods_supported": [events.PUSH, events.POLL],
            "configuration_endpoint": f"{self.issuer}/ssf/streams",
            "verification_endpoint": f"{self.issuer}/ssf/verify",
            "authorization_schemes": [{"spec_urn": "urn:ietf:rfc:6750"}],
        }

    def publish_configuration(self, **changes: Any) -> None:
        self.documents[events.WELL_KNOWN_CONFIGURATION] = (
            "application/json",
            json.dumps({**self.configuration(), **changes}).encode(),
        )

    # -- endpoints ------------------------------------------------------------------------------

    def _stream_answer(self, stream_id: str, body: dict[str, Any]) -> dict[str, Any]:
        delivery = dict(body.get("delivery") or {})
        if delivery.get("method") == events.POLL:
            delivery["endpoint_url"] = f"{self.issuer}/ssf/poll"
        stream = {
            "stream_id": stream_id,
            "iss": self.issuer,
            "aud": self.audience,
            "delivery": delivery,
            "events_requested": body.get("events_requested", []),
            "events_delivered": body.get("events_requested", []),
        }
        self.streams[stream_id] = stream
        return {k: v for k, v in stream.items() if k != "delivery"} | {
            "delivery": {k: v for k, v in delivery.items() if k != "authorization_header"}
        }

    def create_stream(self, body: Any, authorization: str | None) -> tuple[int, Any]:
        if authorization != f"Bearer {MANAGEMENT_TOKEN}":
            return 401, {"error": "invalid_token"}
        return 201, self._stream_answer(uuid.uuid4().hex, body)

    def update_stream(self, body: Any, authorization: str | None) -> tuple[int, Any]:
        if authorization != f"Bearer {MANAGEMENT_TOKEN}":
            return 401, {"error": "invalid_token"}
        if body.get("stream_id") not in self.streams:
            return 404, {"error": "not_found"}
        return 200, self._stream_answer(body["stream_id"], body)

    def verify(self, body: Any, authorization: str | None) -> tuple[int, Any]:
        if authorization != f"Bearer {MANAGEMENT_TOKEN}":
            return 401, {"error": "invalid_token"}
        stream = self.streams.get(body.get("stream_id"))
        if stream is None:
            return 404, {"error": "not_found"}
        self.deliver(
            stream["stream_id"],
            self.event_token(events.VERIFICATION, {"state": body.get("state")}, sub_id=None),
        )
        return 204, None

    def poll(self, body: Any, authorization: str | None) -> tuple[int, Any]:
        if authorization != f"Bearer {MANAGEMENT_TOKEN}":
            return 401, {"error": "invalid_token"}
        for jti in body.get("ack", []):
            self.acks.append(jti)
            self.queue.pop(jti, None)
        for jti, error in (body.get("setErrs") or {}).items():
            self.set_errors[jti] = error
            self.queue.pop(jti, None)
        if body.get("maxEvents") == 0:
            return 200, {"sets": {}}
        return 200, {"sets": dict(self.queue), "moreAvailable": self.more_available}

    # -- SETs -----------------------------------------------------------------------------------

    def set_claims(
        self, event_type: str, payload: dict[str, Any], sub_id: Any, **overrides: Any
    ) -> dict[str, Any]:
        """A SET's claims (``None`` in ``overrides`` drops one)."""
        base = {
            "iss": self.issuer,
            "aud": self.audience,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
            "events": {event_type: payload},
        }
        if sub_id is not None:
            base["sub_id"] = sub_id
        return {k: v for k, v in {**base, **overrides}.items() if v is not None}

    def event_token(
        self,
        event_type: str,
        payload: dict[str, Any] | None = None,
        sub_id: Any = None,
        *,
        kid: str = "rsa-1",
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A SET signed with our key ``kid``; ``header`` merged into the JOSE header."""
        private_key, alg = self.keys[kid]
        full_header = {"alg": alg, "typ": events.SECEVENT_JWT, "kid": kid, **(header or {})}
        return compact(
            {k: v for k, v in full_header.items() if v is not None},
            self.set_claims(event_type, payload or {}, sub_id, **claims),
            private_key,
        )

    def deliver(self, stream_id: str, token: str) -> None:
        """Push ``token`` to the stream's endpoint with its authorization, or queue it for a poll."""
        delivery = self.streams[stream_id]["delivery"]
        if delivery["method"] == events.POLL:
            jti = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["jti"]
            self.queue[jti] = token
            return
        response = requests.post(
            delivery["endpoint_url"],
            data=token,
            headers={
                "Content-Type": events.SECEVENT_MEDIA_TYPE,
                "Authorization": delivery["authorization_header"],
            },
            timeout=10,
        )
        self.pushes.append((response.status_code, response.content))
