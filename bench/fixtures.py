"""Bench data, made fast: users and denylist rows by one ``executemany``, tokens by a signing fast path.

Tokens: one token is minted with epochauth's ``mint_access_token``; the others copy its header and
claims, change only ``sub``, ``preferred_username`` and ``jti``, and are signed with ``jwt.encode``
under the same key (``KEY_ID`` and secret are the bench's settings). So they carry exactly the claims
epochauth mints today (and whatever it adds later), and :func:`verify` checks a sample of them
through ``authenticate_token`` before anything is timed. DPoP proofs are signed here too, before
timing: signing is the client's cost.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management import call_command
from django.db import connection, models, transaction
from django.utils import timezone

from epochauth import dpop
from epochauth.authentication import authenticate_token
from epochauth.models import Epoch, RevokedToken
from epochauth.tokens import CLAIM_USERNAME, mint_access_token

from .settings import HS_SECRET

PASSWORD = "bench-password"
BATCH = 10_000
#: Tokens :func:`verify` takes out of a list to check them.
SAMPLE = 20


def migrate() -> None:
    call_command("migrate", verbosity=0)


def insert_rows(
    model: type[models.Model], varying: str, values: Iterable[Any], **fixed: Any
) -> int:
    """Insert one row per value of field ``varying``, the other fields as ``model(**fixed)`` saves them
    (defaults included), with one ``executemany`` per batch: 1M rows take seconds, not minutes."""
    template = model(**fixed)
    fields = [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]
    row = [f.get_db_prep_save(f.pre_save(template, add=True), connection) for f in fields]
    index = [f.name for f in fields].index(varying)
    field = fields[index]
    table, quote = model._meta.db_table, connection.ops.quote_name
    sql = (
        f"INSERT INTO {quote(table)} ({', '.join(quote(f.column) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    count = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for batch in batched(values, BATCH):
            rows = []
            for value in batch:
                row[index] = field.get_db_prep_save(value, connection)
                rows.append(tuple(row))
            cursor.executemany(sql, rows)
            count += len(rows)
    return count


def batched(values: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for value in values:
        batch.append(value)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def create_users(count: int, prefix: str = "user") -> list[tuple[int, str]]:
    """``count`` users with the bench password; returns their (pk, username)."""
    model = get_user_model()
    names = [f"{prefix}{i:07d}" for i in range(count)]
    insert_rows(model, "username", names, password=make_password(PASSWORD), is_active=True)
    found = model._default_manager.filter(username__startswith=prefix).order_by("pk")
    return list(found.values_list("pk", "username"))


def deny_random_ids(count: int) -> int:
    """``count`` live denylist rows (random ids that no bench token carries), revoked an hour ago
    (as rows gathered over a day are, not all within the change feed's last minute)."""
    now = timezone.now()
    return insert_rows(
        RevokedToken,
        "jti",
        (uuid.uuid4().hex for _ in range(count)),
        expires_at=now + timedelta(days=1),
        revoked_at=now - timedelta(hours=1),
        reason="bench",
    )


def bump_many_users(count: int) -> int:
    """``count`` user epoch rows bumped within ``REVOCATION_WINDOW`` (synthetic user ids, no user rows):
    the most a process holds for that many users."""
    return insert_rows(
        Epoch,
        "object_id",
        (str(10**9 + n) for n in range(count)),
        kind=Epoch.Kind.USER,
        value=1,
        not_before=timezone.now() - timedelta(hours=1),
        reason="bench",
    )


class TokenFactory:
    """Real epochauth access tokens for many users, signed by a fast path (module docstring)."""

    def __init__(self, user: Any) -> None:
        token = mint_access_token(user).token
        self.header = jwt.get_unverified_header(token)
        self.claims = jwt.decode(token, options={"verify_signature": False})

    def token(self, pk: Any, username: str) -> str:
        claims = {**self.claims, "sub": str(pk), "jti": uuid.uuid4().hex}
        if CLAIM_USERNAME in claims:
            claims[CLAIM_USERNAME] = username
        return jwt.encode(claims, HS_SECRET, algorithm=self.header["alg"], headers=self.header)


def verify(tokens: list[str], sample: int = SAMPLE) -> None:
    """A sample of ``tokens`` must authenticate with epochauth itself (public API), or the bench stops.
    The sample is taken out of ``tokens``, so each token left is still unseen by this process."""
    for _ in range(min(sample, len(tokens) - 1)):
        authenticate_token(tokens.pop(random.randrange(len(tokens))))


# -- DPoP proofs -------------------------------------------------------------------------------

#: The DPoP rows: the proof's ``alg`` and a new client key of each kind (RSA: the usual 2048 bits).
DPOP_KEYS: dict[str, tuple[str, Callable[[], Any]]] = {
    "ES256": ("ES256", lambda: ec.generate_private_key(ec.SECP256R1())),
    "Ed25519": ("EdDSA", ed25519.Ed25519PrivateKey.generate),
    "RS256": ("RS256", lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)),
}


class ProofKey:
    """A DPoP client's key (``name``: one of :data:`DPOP_KEYS`): the thumbprint a token bound to it
    carries (``cnf.jkt``), and proofs signed before timing, since signing is the client's cost."""

    def __init__(self, name: str) -> None:
        self.algorithm, generate = DPOP_KEYS[name]
        self.private_key = generate()
        self.public_key = self.private_key.public_key()
        to_jwk = jwt.get_algorithm_by_name(self.algorithm).to_jwk
        self.jwk = to_jwk(self.public_key, as_dict=True)
        self.jkt = dpop.thumbprint(self.jwk)

    def proofs(self, count: int, url: str, token: str) -> list[str]:
        """``count`` proofs of ``GET url`` with ``token``, each with a jti of its own (one use each)."""
        headers = {"typ": "dpop+jwt", "jwk": self.jwk}
        claims = {"htm": "GET", "htu": url, "ath": dpop.access_token_hash(token)}
        return [
            jwt.encode(
                {**claims, "jti": uuid.uuid4().hex, "iat": int(time.time())},
                self.private_key,
                algorithm=self.algorithm,
                headers=headers,
            )
            for _ in range(count)
        ]
