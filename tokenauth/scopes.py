"""Scope strings (RFC 6749 section 3.3): one place that splits them and says what a scope-token is."""

from __future__ import annotations

import re

SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")

#: ``g:<group>`` selects one of the user's groups for a token (DIRAC's parametric scope).
GROUP_PREFIX = "g:"


def split_scope(scope: str) -> list[str]:
    """Scope-tokens are separated by the ASCII space (0x20) only.

    ``str.split()`` would also split at a no-break space or other Unicode whitespace, turning one
    invalid scope-token into valid-looking ones.
    """
    return [name for name in scope.split(" ") if name]


def is_scope_token(name: str) -> bool:
    """``scope-token = 1*( %x21 / %x23-5B / %x5D-7E )``: printable ASCII but space, ``"`` and ``\\``."""
    return SCOPE_TOKEN.fullmatch(name) is not None


def group_name(scope: str) -> str | None:
    """The group a ``g:<group>`` scope names, else None."""
    return scope[len(GROUP_PREFIX) :] or None if scope.startswith(GROUP_PREFIX) else None
