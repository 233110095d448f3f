"""The OAuth URNs (RFC 6755, ``urn:ietf:params:oauth:``) that the authorization server and the Token
Manager both speak, in one place: neither of those optional apps needs the other; and the event that
back-channel logout receives (epochauth.oidc) and sends (epochauth.oauth)."""

from __future__ import annotations

#: RFC 8628 device authorization grant.
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

#: RFC 8693 token exchange: the grant type and the token types of section 3.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"

#: OpenID Connect Back-Channel Logout 1.0 section 2.4: the event of a logout token.
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
