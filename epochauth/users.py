"""``request.user`` for bearer requests: what the token says, with the database row loaded on demand."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Field

from . import conf


@lru_cache(maxsize=1)
def primary_key() -> Field[Any, Any]:
    """The user model's primary key field: looked up once per settings reload, not per new token
    (``get_user_model`` is an app-registry lookup)."""
    pk = get_user_model()._meta.pk
    assert pk is not None
    return pk


conf.process_cache(primary_key.cache_clear)


class TokenUser:
    """An authenticated user known by id, username and group names without a query.

    Any other attribute (``is_staff``, ``email``, ``groups``, ``has_perm`` ...) loads the user row
    once and is answered by it, so code written for ``request.user`` keeps working.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True  # inactive users are revoked by an epoch bump before they get here

    def __init__(
        self, pk: Any, username: str, group_names: list[str] | tuple[str, ...] = ()
    ) -> None:
        self.pk = self.id = pk
        self.username = username
        self.group_names = tuple(group_names)

    def get_username(self) -> str:
        return self.username

    @property
    def user(self) -> Any:
        """The full user row (one query, on first use)."""
        if "_user" not in self.__dict__:
            self.__dict__["_user"] = get_user_model()._default_manager.get(pk=self.pk)
        return self.__dict__["_user"]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.user, name)

    def __eq__(self, other: object) -> bool:
        model = get_user_model()
        if isinstance(other, TokenUser | model):
            return str(self.pk) == str(other.pk)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(str(self.pk))

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<TokenUser {self.pk} {self.username!r}>"
