"""The settings module knows no other module of tokenauth: each cache registers its own reset."""

from __future__ import annotations

import ast
from pathlib import Path

import tokenauth
from tokenauth import conf

PACKAGE = Path(tokenauth.__file__).parent


def test_conf_imports_no_tokenauth_module():
    ours = []
    for node in ast.walk(ast.parse((PACKAGE / "conf.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("tokenauth")):
            ours.append(node.module)
        elif isinstance(node, ast.Import):
            ours += [alias.name for alias in node.names if alias.name.startswith("tokenauth")]
    assert ours == []


def test_every_process_cache_is_reset_by_a_settings_change(settings):
    from tokenauth import issuers, keys, provisioning, revocation, tokens, verification
    from tokenauth.oidc import providers

    for reset in (
        keys.get_keyring.cache_clear,
        tokens.verified_tokens.clear,
        revocation.state.reset,
        issuers.db_issuers.reset,
        issuers.settings_issuers.cache_clear,
        issuers.jwks_cache.reset,
        provisioning.reset,
        providers.metadata_cache.clear,
        verification.local_policy.cache_clear,
        verification.issuer_url_acceptable.cache_clear,
    ):
        assert reset in conf._resets, reset
    tokens.verified_tokens.put("a-token", {"iss": "x"})
    settings.TOKENAUTH = {**settings.TOKENAUTH, "LEEWAY": 5}
    assert tokens.verified_tokens.get("a-token") is None
