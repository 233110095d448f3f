"""The vocabulary both sides of the Shared Signals Framework speak: event types (CAEP 1.0, RISC 1.0,
SSF 1.0), the delivery methods, and subject identifiers (RFC 9493, SSF 1.0 section 3). No models, no
network: what a subject names is decided by the side that reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: RFC 8417 section 2.3: the ``typ`` of a Security Event Token; also the push media type (RFC 8935).
SECEVENT_JWT = "secevent+jwt"
SECEVENT_MEDIA_TYPE = f"application/{SECEVENT_JWT}"

#: SSF 1.0 section 7.2: where a transmitter publishes its configuration (before the issuer's path).
WELL_KNOWN_CONFIGURATION = "/.well-known/ssf-configuration"

#: SSF 1.0 section 6.1.1: the delivery methods, as a stream's ``delivery.method``.
PUSH = "urn:ietf:rfc:8935"
POLL = "urn:ietf:rfc:8936"

CAEP = "https://schemas.openid.net/secevent/caep/event-type/"
RISC = "https://schemas.openid.net/secevent/risc/event-type/"
SSF = "https://schemas.openid.net/secevent/ssf/event-type/"

SESSION_REVOKED = f"{CAEP}session-revoked"
CREDENTIAL_CHANGE = f"{CAEP}credential-change"
TOKEN_CLAIMS_CHANGE = f"{CAEP}token-claims-change"
ACCOUNT_DISABLED = f"{RISC}account-disabled"
ACCOUNT_PURGED = f"{RISC}account-purged"
CREDENTIAL_COMPROMISE = f"{RISC}credential-compromise"
SESSIONS_REVOKED = f"{RISC}sessions-revoked"
#: SSF 1.0 section 8.1.4 and 8.1.5: stream events, about no principal.
VERIFICATION = f"{SSF}verification"
STREAM_UPDATED = f"{SSF}stream-updated"

#: RFC 9493 section 3.2 (and SSF 1.0 section 3.3 ``complex``): the subject formats a receiver reads.
FORMATS = frozenset({"iss_sub", "email", "opaque", "complex"})


@dataclass(frozen=True)
class Subject:
    """Whom an event is about: a principal at an issuer (``iss_sub``, or ``opaque``: a ``sub`` at the
    stream's issuer), or an ``email``; a complex subject may name a session (``sid``) as well."""

    issuer: str | None = None
    subject: str | None = None
    email: str | None = None
    session: str | None = None


def _string(value: Any) -> str | None:
    return value if isinstance(value, str) and value and len(value) <= 255 else None


def simple_subject(value: Any, stream_issuer: str) -> Subject | None:
    """A simple subject identifier (RFC 9493 section 3.2) naming a principal; None for a format we
    do not read or a malformed one."""
    if not isinstance(value, dict):
        return None
    kind = value.get("format")
    if kind == "iss_sub" and _string(value.get("iss")) and _string(value.get("sub")):
        return Subject(issuer=value["iss"], subject=value["sub"])
    if kind == "opaque" and _string(value.get("id")):
        return Subject(issuer=stream_issuer, subject=value["id"])
    if kind == "email" and _string(value.get("email")):
        return Subject(email=value["email"])
    return None


def parse_subject(value: Any, stream_issuer: str) -> Subject | None:
    """The principal (and session) an SSF subject names: a simple one, or ``complex`` with ``user``
    and optionally a ``session`` (an ``opaque`` session id). None when it names no principal."""
    if isinstance(value, dict) and value.get("format") == "complex":
        user = simple_subject(value.get("user"), stream_issuer)
        session = value.get("session")
        sid = (
            _string(session.get("id"))
            if isinstance(session, dict) and session.get("format") == "opaque"
            else None
        )
        if user is None:
            return None
        return Subject(user.issuer, user.subject, user.email, sid)
    return simple_subject(value, stream_issuer)


def iss_sub(iss: str, sub: str) -> dict[str, Any]:
    """RFC 9493 section 3.2.5, as a transmitter writes it."""
    return {"format": "iss_sub", "iss": iss, "sub": sub}


def opaque(identifier: str) -> dict[str, Any]:
    """RFC 9493 section 3.2.4."""
    return {"format": "opaque", "id": identifier}


def complex_subject(**members: dict[str, Any]) -> dict[str, Any]:
    """SSF 1.0 section 3.3: a subject of several members (``user``, ``session``...)."""
    return {"format": "complex", **members}
