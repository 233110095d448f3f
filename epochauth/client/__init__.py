"""Client side of epochauth: WLCG token discovery, a requests auth, and the ``epochauth`` CLI.

Imports no Django (only the standard library, requests and PyJWT with cryptography, for DPoP proofs), so
it runs on any login node.
"""

from .auth import BearerAuth, DPoPAuth
from .discovery import FoundToken, discover, discover_token
from .dpop import ProofKey
from .errors import ClientError, InvalidToken, TokenNotFound

__all__ = [
    "BearerAuth",
    "ClientError",
    "DPoPAuth",
    "FoundToken",
    "InvalidToken",
    "ProofKey",
    "TokenNotFound",
    "discover",
    "discover_token",
]
