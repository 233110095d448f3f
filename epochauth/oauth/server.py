"""``OAUTH2_SERVER_CLASS``: oauthlib's server with our token generator, lifetimes and grants.

OpenID Connect's server: its grants fall back to plain OAuth 2.0 without the ``openid`` scope, and
add ID tokens and userinfo with it when DOT's ``OIDC_ENABLED`` is on (OpenID Provider mode).
"""

from __future__ import annotations

import time
from typing import Any

from django.db import router, transaction
from oauth2_provider.models import get_refresh_token_model
from oauthlib.oauth2.rfc6749.tokens import random_token_generator
from oauthlib.openid import Server as OAuthlibServer

from .. import conf, urns
from . import exchange, generators, openid, proofs


def access_token_lifetime(request: Any) -> int:
    """``ACCESS_TOKEN_LIFETIME``; a token from a token exchange ends no later than the one it replaced."""
    lifetime = int(conf.epochauth_settings.ACCESS_TOKEN_LIFETIME.total_seconds())
    subject_expires = getattr(request, "epochauth_subject_expires", None)
    if subject_expires is not None:
        lifetime = max(1, min(lifetime, int(subject_expires - time.time())))
    return lifetime


#: The OAuth 2.0 and the OpenID grant of oauthlib's OpenID dispatchers (a plain grant is its own).
GRANTS = ("default_grant", "oidc_grant")


class Server(OAuthlibServer):
    """Access tokens are our JWTs living ``EPOCHAUTH["ACCESS_TOKEN_LIFETIME"]``; refresh tokens stay
    DOT's random strings. DOT's generator settings and pre-token hook are ignored on purpose: the
    validator reads the device grant itself (``validate_device_code``)."""

    def __init__(self, request_validator: Any, *args: Any, **kwargs: Any) -> None:
        for name in (
            "token_expires_in",
            "token_generator",
            "refresh_token_generator",
            "pre_token",
        ):
            kwargs.pop(name, None)
        super().__init__(
            request_validator,
            token_expires_in=access_token_lifetime,
            token_generator=generators.access_token,
            refresh_token_generator=random_token_generator,
            **kwargs,
        )
        self._grant_types[urns.TOKEN_EXCHANGE] = exchange.TokenExchangeGrant(request_validator)
        # The OpenID server dispatches a code to an OAuth 2.0 or an OpenID grant; both share nothing.
        grants = [
            getattr(choice, attribute, choice)
            for choice in self._grant_types.values()
            for attribute in GRANTS
        ]
        for hooks in {id(g.custom_validators): g.custom_validators for g in grants}.values():
            hooks.pre_token.append(request_validator.refuse_resource)
            hooks.pre_token.append(proofs.verify)
            hooks.post_token.append(request_validator.check_token_request)
            hooks.post_token.append(proofs.check)
        code = self._response_types["code"]  # the grants that issue codes (OAuth 2.0, OpenID)
        for grant in {id(g): g for g in (getattr(code, a, code) for a in GRANTS)}.values():
            grant.custom_validators.post_auth.append(proofs.check_requested_key)
        # Before oauthlib's own OpenID checks, which read max_age for prompt=none.
        self.openid_connect_auth.custom_validators.post_auth.insert(0, openid.check_max_age)

    def create_token_response(self, *args: Any, **kwargs: Any) -> tuple[dict[str, str], str, int]:
        """One transaction per token request: the row locks the validator takes (the refresh token
        being rotated) hold until the new tokens are saved, whichever token view calls this."""
        with transaction.atomic(using=router.db_for_write(get_refresh_token_model())):
            return super().create_token_response(*args, **kwargs)
