"""Credentials out of the log records of oauthlib and DOT: oauthlib logs whole token responses and the
refresh token being validated at DEBUG ("Issuing new token to client id ...").

:func:`install` (called by ``OAuthConfig.ready()``) attaches :class:`RedactSecrets` to the ``oauthlib``
and ``oauth2_provider`` loggers and to every child logger that exists then. A logger's filters do not
see the records of its children, hence each one; a handler's would, but only on the handlers there are,
and the project's, the server's or pytest's may come later. A record factory would be process-wide and
would have to chain with others. By ``ready()`` the modules the server runs have made their loggers
(our server, validator and DOT's import them); ones imported later are of the client side or OAuth 1.
"""

from __future__ import annotations

import logging
import re

MASK = "[redacted]"

# Parameters and fields whose values are credentials (RFC 6749, 7009, 7636, 7662, 8628, 8693).
SECRET_NAMES = (
    "access_token",
    "refresh_token",
    "id_token",
    "code",
    "device_code",
    "user_code",
    "code_verifier",
    "client_secret",
    "password",
    "token",
    "subject_token",
    "actor_token",
    "assertion",
)
# name=value (query strings, form bodies) and 'name': 'value' (reprs, JSON).
NAMED = re.compile(
    r"(\b(?:" + "|".join(SECRET_NAMES) + r""")\b['"]?\s*[:=]\s*['"]?)[^\s'"&,;}]+""", re.I
)
JWS = re.compile(r"\beyJ[\w-]*\.[\w-]*\.[\w-]*")
# An Authorization header's credentials (not the words "basic auth" of a message).
AUTHORIZATION = re.compile(r"\b(Basic|Bearer) +[\w.~+/-]{16,}=*")
# A whole argument in the RFC 6750 token alphabet: oauthlib passes a bare refresh token so.
CREDENTIAL = re.compile(r"[\w.~+/-]{20,}=*")


def redact(text: str) -> str:
    text = JWS.sub(MASK, text)
    text = AUTHORIZATION.sub(rf"\1 {MASK}", text)
    return NAMED.sub(rf"\1{MASK}", text)


class RedactSecrets(logging.Filter):
    """Masks credentials in a record's message, arguments and traceback; never drops a record.

    The message is formatted here, so that a handler further on cannot put a token back into it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                MASK if isinstance(arg, str) and CREDENTIAL.fullmatch(arg) else arg
                for arg in record.args
            )
        try:
            message = record.getMessage()
        # A bad format string: logging would report it, with the args.
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message), ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


redact_secrets = RedactSecrets()


def install(roots: tuple[str, ...] = ("oauthlib", "oauth2_provider")) -> None:
    """Attach the filter to each logger under ``roots`` (again is harmless: a logger keeps it once)."""
    for name in [*roots, *logging.root.manager.loggerDict]:
        if name.split(".")[0] in roots:
            logging.getLogger(name).addFilter(redact_secrets)
