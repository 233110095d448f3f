"""The Token Manager cannot run without keys to encrypt what it keeps."""

from __future__ import annotations

from typing import Any

from cryptography.fernet import Fernet
from django.core import checks

from .. import conf


@checks.register(checks.Tags.security)
def check_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    keys = conf.epochauth_settings.TOKEN_MANAGER_KEYS
    if not keys:
        return [
            checks.Error(
                'EPOCHAUTH["TOKEN_MANAGER_KEYS"] is empty: the Token Manager cannot encrypt refresh tokens.',
                hint="Add Fernet keys (cryptography.fernet.Fernet.generate_key()); the first one encrypts.",
                id="epochauth.tokenmanager.E001",
            )
        ]
    try:
        for key in keys:
            Fernet(key)
    except (TypeError, ValueError):
        return [
            checks.Error(
                'EPOCHAUTH["TOKEN_MANAGER_KEYS"] holds a value that is no Fernet key.',
                hint="32 url-safe base64-encoded bytes, as Fernet.generate_key() makes them.",
                id="epochauth.tokenmanager.E002",
            )
        ]
    return []
