"""The OAuth URNs (RFC 6755, ``urn:ietf:params:oauth:``) that the authorization server and the Token
Manager both speak, in one place: neither of those optional apps needs the other."""

from __future__ import annotations

#: RFC 8628 device authorization grant.
DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"

#: RFC 8693 token exchange: the grant type and the token types of section 3.
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:refresh_token"
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"
