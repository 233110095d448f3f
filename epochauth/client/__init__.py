"""Client side of epochauth: WLCG token discovery, a requests auth, and the ``epochauth`` CLI.

Imports no Django (only the standard library and requests), so it runs on any login node.
"""

from .auth import BearerAuth
from .discovery import FoundToken, discover, discover_token
from .errors import ClientError, InvalidToken, TokenNotFound

__all__ = [
    "BearerAuth",
    "ClientError",
    "FoundToken",
    "InvalidToken",
    "TokenNotFound",
    "discover",
    "discover_token",
]
