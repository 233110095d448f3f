"""The Token Manager cannot run without keys to encrypt what it keeps."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.core import checks

from .. import conf


@checks.register(checks.Tags.security)
def check_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    keys = conf.tokenauth_settings.TOKEN_MANAGER_KEYS
    if not keys:
        return [
            checks.Error(
                'TOKENAUTH["TOKEN_MANAGER_KEYS"] is empty: the Token Manager cannot encrypt refresh tokens.',
                hint="Add Fernet keys (cryptography.fernet.Fernet.generate_key()); the first one encrypts.",
                id="tokenauth.tokenmanager.E001",
            )
        ]
    try:
        for key in keys:
            Fernet(key)
    except (TypeError, ValueError):
        return [
            checks.Error(
                'TOKENAUTH["TOKEN_MANAGER_KEYS"] holds a value that is no Fernet key.',
                hint="32 url-safe base64-encoded bytes, as Fernet.generate_key() makes them.",
                id="tokenauth.tokenmanager.E002",
            )
        ]
    return []
