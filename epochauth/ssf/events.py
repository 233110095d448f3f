"""The event types and subject identifiers of Security Event Tokens (RFC 8417): CAEP 1.0, RISC 1.0,
SSF 1.0's own, and RFC 9493 subjects."""

from __future__ import annotations

from typing import Any

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
SESSION_REVOKED = CAEP + "session-revoked"
CREDENTIAL_CHANGE = CAEP + "credential-change"
ACCOUNT_DISABLED = "https://schemas.openid.net/secevent/risc/event-type/account-disabled"
#: SSF 1.0 section 8.1.4: answers a receiver's verification request; never asked for.
VERIFICATION = "https://schemas.openid.net/secevent/ssf/event-type/verification"
#: SSF 1.0 section 8.1.5: the stream's status changed.
STREAM_UPDATED = "https://schemas.openid.net/secevent/ssf/event-type/stream-updated"

#: The delivery methods: RFC 8935 push, RFC 8936 poll.
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"
#: The media type of a pushed SET (RFC 8935 section 2) and the SET's ``typ`` (RFC 8417 section 2.3).
SET_MEDIA_TYPE = "application/secevent+jwt"
SET_TYP = "secevent+jwt"


def iss_sub(iss: str, sub: str) -> dict[str, Any]:
    """RFC 9493 section 3.2.5."""
    return {"format": "iss_sub", "iss": iss, "sub": sub}


def opaque(identifier: str) -> dict[str, Any]:
    """RFC 9493 section 3.2.4."""
    return {"format": "opaque", "id": identifier}


def complex_subject(**members: dict[str, Any]) -> dict[str, Any]:
    """SSF 1.0 section 3.3: a subject of several members (``user``, ``session``...)."""
    return {"format": "complex", **members}
