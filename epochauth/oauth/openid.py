"""OpenID Provider mode (DOT's ``OIDC_ENABLED``): whether this site is one, how its ID tokens are
signed, and what ``prompt=none`` and ``max_age`` ask of a browser's sign-in (OpenID Connect Core 1.0
sections 3.1.2.1 and 15.1)."""

from __future__ import annotations

import re
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.translation import gettext as _
from jwcrypto.jwt import JWT
from oauth2_provider.models import get_access_token_model
from oauth2_provider.settings import oauth2_settings
from oauthlib.oauth2.rfc6749 import errors

from .. import keys

#: ``id_token_signing_alg_values_supported``: RS256 with our ID-token key, which every relying party
#: supports, and HS256 with its own client secret for an application that chose it (DOT's *algorithm*).
ID_TOKEN_ALGORITHMS = (keys.ID_TOKEN_ALGORITHM, "HS256")

#: ``max_age``: a number of seconds (OpenID Connect Core 1.0 section 3.1.2.1).
MAX_AGE = re.compile(r"[0-9]{1,10}")


def is_openid_provider() -> bool:
    """DOT's ``OIDC_ENABLED`` with an RS256 key for ID tokens (check ``epochauth.oauth.E004``):
    without one, no ID token is issued and no OpenID configuration published."""
    return bool(oauth2_settings.OIDC_ENABLED) and keys.get_keyring().id_token is not None


def sign_id_token(claims: dict[str, Any], application: Any, typ: str = "JWT") -> str:
    """An ID token for ``application``: HS256 with its client secret when it chose HS256 (section
    10.1; DOT's key, refused when the secret is empty or stored hashed), else RS256 with our ID-token
    key, named by ``kid`` in our JWKS. A logout token is signed the same way, with its own ``typ``."""
    if application.algorithm != application.HS256_ALGORITHM:
        key = keys.get_keyring().id_token
        if key is None:  # check epochauth.oauth.E004; the openid scope is refused then
            raise errors.InvalidScopeError(description=_("This service is no OpenID provider"))
        return key.sign(claims, typ)
    try:
        key = application.jwk_key
    except ImproperlyConfigured:
        raise errors.UnauthorizedClientError(
            description=_(
                "This application's ID tokens are HS256, signed with its client secret, which is "
                "empty or stored hashed: store it unhashed, or choose RS256"
            )
        ) from None
    token = JWT(header={"alg": "HS256", "typ": typ}, claims=claims)
    token.make_signed_token(key)
    return str(token.serialize())


def signed_in_too_long_ago(user: Any, max_age: str | None) -> bool:
    """Whether ``max_age`` asks for a sign-in more recent than the user's last one (``last_login``,
    the ID token's ``auth_time``). None or a malformed value asks nothing here: the request's
    validation refuses a malformed one (:func:`check_max_age`)."""
    if not max_age or not MAX_AGE.fullmatch(max_age):
        return False
    if user.last_login is None:
        return True
    return (timezone.now() - user.last_login).total_seconds() > int(max_age)


def check_max_age(request: Any) -> dict[str, Any]:
    """oauthlib ``post_auth`` hook of OpenID authorization requests: a ``max_age`` that is no number
    of seconds is an ``invalid_request``."""
    if request.max_age is not None and not MAX_AGE.fullmatch(str(request.max_age)):
        raise errors.InvalidRequestError(
            description=_("max_age must be a number of seconds"), request=request
        )
    return {}


def consented(user: Any, application: Any, scopes: list[str]) -> bool:
    """Whether ``user`` consented to ``scopes`` for ``application`` already, so that ``prompt=none``
    need not ask: DOT's *skip authorization*, or an earlier OpenID sign-in at it whose tokens still
    stand (a logout, the admin, the Token Manager and DOT's cleanup delete their rows) and cover them."""
    if application.skip_authorization:
        return True
    earlier = get_access_token_model().objects.filter(
        user=user, application=application, id_token__isnull=False
    )
    return any(token.allow_scopes(scopes) for token in earlier.only("scope").iterator())
