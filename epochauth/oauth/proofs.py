"""DPoP (RFC 9449) at the OAuth server's token endpoint, for every grant.

A token request with a proof gets an access token bound to the proof's key (``cnf.jkt``, type
``DPoP``, section 5); a public client's refresh tokens are bound to it too, by their family
(:class:`~epochauth.oauth.models.DPoPBinding`), and so is an authorization code whose authorization
request named ``dpop_jkt`` (section 10). An application with a :class:`~.models.DPoPPolicy` that
requires it, or the site (``DPOP_REQUIRED``), refuses a token request without a proof.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from django.db.models import Exists, OuterRef
from django.utils import timezone
from django.utils.crypto import constant_time_compare
from django.utils.translation import gettext as _
from oauth2_provider.models import get_refresh_token_model
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from .. import dpop, exceptions
from . import models
from .revocation import code_family

#: A SHA-256 JWK thumbprint (RFC 7638): 32 bytes in base64url without padding.
THUMBPRINT = re.compile(r"[A-Za-z0-9_-]{43}")

#: Where ``views.TokenEndpointCore`` puts the request's absolute URL among oauthlib's headers (a copy
#: of ``META``): no header a client sends gets a name with a dot.
URL_KEY = "epochauth.url"


class InvalidDPoPProof(errors.OAuth2Error):
    """A refused proof (section 5): ``invalid_dpop_proof``, or ``use_dpop_nonce`` (section 8,
    ``epochauth.dpop.NonceMiddleware`` adds the nonce to the answer)."""

    status_code = 400

    def __init__(self, error: str, description: str, request: Any = None) -> None:
        self.error = error
        super().__init__(description=description, request=request)


def _refused(exc: exceptions.InvalidProof, request: Any) -> InvalidDPoPProof:
    return InvalidDPoPProof(exc.error, str(exc.description), request)


def verify(request: Any) -> None:
    """oauthlib ``pre_token`` hook: the request's proof, before the grant is looked at (a code or
    a refresh token is not spent on a refused proof); its key's thumbprint is left on the request
    (``epochauth_dpop_jkt``, None without a proof) for the token and the bindings."""
    try:
        url = request.headers.get(URL_KEY, request.uri)  # a path only: refused as another URL
        proof = dpop.token_request_proof(request.headers, request.http_method, url)
    except exceptions.InvalidProof as exc:
        raise _refused(exc, request) from None
    request.epochauth_dpop_jkt = proof.jkt if proof is not None else None


def key_of(request: Any) -> str | None:
    return getattr(request, "epochauth_dpop_jkt", None)


def check_requested_key(request: Any) -> dict[str, Any]:
    """oauthlib ``post_auth`` hook of authorization requests: a ``dpop_jkt`` (section 10) that is no
    SHA-256 JWK thumbprint is an ``invalid_request``; no proof could ever redeem its code."""
    jkt = getattr(request, "dpop_jkt", None)
    # RFC 6749 section 3.1: a parameter without a value is as if it were left out.
    if jkt and not THUMBPRINT.fullmatch(str(jkt)):
        raise errors.InvalidRequestError(
            description=_("dpop_jkt must be the SHA-256 thumbprint of a JWK"), request=request
        )
    return {}


def check(request: Any) -> None:
    """oauthlib ``post_token`` hook, the client known: its policy, and the key its code is bound to."""
    jkt = key_of(request)
    policy = models.DPoPPolicy.objects.filter(application=request.client, required=True)
    if jkt is None and policy.exists():
        raise InvalidDPoPProof(
            "invalid_dpop_proof", _("The request must carry exactly one DPoP proof"), request
        )
    if request.grant_type == "authorization_code":
        check_binding(code_family(request.code), jkt, request)


def check_binding(family: uuid.UUID | None, jkt: str | None, request: Any) -> None:
    """Refuse a request whose proof is not of the key ``family`` is bound to, if it is bound."""
    if family is None:
        return
    bound = models.DPoPBinding.objects.filter(family=family).values_list("jkt", flat=True).first()
    if bound is not None and not (jkt and constant_time_compare(jkt, bound)):
        raise InvalidDPoPProof(
            "invalid_dpop_proof",
            _("The grant is bound to a DPoP key: send a proof of that key"),
            request,
        )


def bind(family: uuid.UUID, jkt: str) -> None:
    """Bind ``family`` to ``jkt``, unless it is bound already (then to that key, checked before)."""
    models.DPoPBinding.objects.get_or_create(family=family, defaults={"jkt": jkt})


def purge() -> int:
    """Delete the bindings of families that are over (``epochauth_purge``): no refresh token of the
    family is left, and no authorization code of it can still be exchanged; returns how many."""
    codes_expired = timezone.now() - timedelta(
        seconds=oauth2_settings.AUTHORIZATION_CODE_EXPIRE_SECONDS
    )
    live = get_refresh_token_model().objects.filter(token_family=OuterRef("family"))
    over = models.DPoPBinding.objects.filter(created_at__lt=codes_expired).exclude(Exists(live))
    return int(over.delete()[0])
