"""Mint our own access tokens (RFC 9068 JWTs). Claim names live here and nowhere else; verification
is :mod:`epochauth.verification`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connections, router
from django.db.models import Field, ManyToManyField, Model
from django.db.models.expressions import Col

from . import communities, conf, keys, models, profiles, signals, snapshots
from .claims import custom_claims
from .scopes import group_scope, issued_scopes, split_scope

ACCESS_TOKEN_TYPE = "at+jwt"

# Claim names beyond the registered ones (iss, sub, aud, exp, iat, jti, scope, client_id).
CLAIM_USERNAME = "preferred_username"
CLAIM_GROUPS = "groups"
CLAIM_GROUP = "group"
CLAIM_GROUP_ID = "gid"
CLAIM_SESSION = "sid"
#: The refresh-token family of an OAuth-server token (epochauth.oauth).
CLAIM_TOKEN_FAMILY = "token_family"
#: "client_credentials" in an OAuth-server token that no end user granted (epochauth.oauth).
CLAIM_GRANT_TYPE = "gty"
#: The application owner's user id in a host token (WLCG ``host.auth``), whose ``sub`` is the host.
CLAIM_OWNER = "owner"
CLAIM_EPOCH = "epoch"
CLAIM_GROUP_EPOCH = "group_epoch"
CLAIM_GLOBAL_EPOCH = "global_epoch"
#: The community (``COMMUNITIES`` slug) a token belongs to, and that community's epoch when minted.
CLAIM_COMMUNITY = "vo"
CLAIM_COMMUNITY_EPOCH = "vo_epoch"

REQUIRED_CLAIMS = ["iss", "sub", "exp", "iat", "jti", CLAIM_EPOCH, CLAIM_GLOBAL_EPOCH]


def wlcg_group(name: str) -> str:
    """A group's name in ``wlcg.groups``: a path, ``/`` and the name (always, so it reads back)."""
    return f"/{name}"


def group_names(claims: dict[str, Any]) -> list[str]:
    """The groups one of our tokens was minted with: ``groups``, or in the WLCG profile
    ``wlcg.groups`` without the ``/`` :func:`wlcg_group` put before each name."""
    if profiles.WLCG_GROUPS in claims:
        return [name[1:] for name in claims[profiles.WLCG_GROUPS]]
    return claims.get(CLAIM_GROUPS, [])


def audience() -> Any:
    """The ``aud`` of every token we mint (RFC 9068 section 2.2 requires one): ``AUDIENCE``; without
    it the WLCG profile's any-audience in that profile, else ``ISSUER``, this site being the resource
    server its tokens are for."""
    configured = conf.epochauth_settings.AUDIENCE
    if configured:
        return configured
    if conf.epochauth_settings.TOKEN_PROFILE == profiles.WLCG:
        return profiles.WLCG_ANY_AUDIENCE
    return conf.epochauth_settings.ISSUER


def profile_claims(claims: dict[str, Any]) -> dict[str, Any]:
    """``claims`` in the token profile of ``TOKEN_PROFILE``. WLCG (Common JWT Profile 1.3):
    ``wlcg.ver`` "1.0" (section 2.1.1 keeps it until every consumer reads 1.2), groups as
    ``wlcg.groups`` paths, and no claims the profile does not define but RFC 9068's and the ones
    revocation needs (strict consumers such as the SciTokens Enforcer refuse the others). A selected
    group is ``wlcg.groups:/<group>`` in ``scope`` and first in ``wlcg.groups``, the other groups
    after it (section 3.1: the requested groups in order, then the default ones). ``aud`` is
    :func:`audience`'s, the any-audience without AUDIENCE."""
    if conf.epochauth_settings.TOKEN_PROFILE != profiles.WLCG:
        return claims
    profiled = {
        name: value for name, value in claims.items() if name not in (CLAIM_USERNAME, CLAIM_GROUPS)
    }
    profiled[profiles.WLCG_VERSION_CLAIM] = profiles.WLCG_VERSION
    groups = claims.get(CLAIM_GROUPS, [])
    selected = claims.get(CLAIM_GROUP)
    scope = issued_scopes(split_scope(claims.get("scope", "")))
    if selected is not None:
        groups = [selected, *(name for name in groups if name != selected)]
        scope = issued_scopes([*scope, group_scope(selected)])
    # Left out when empty, as mint_access_token leaves out scope and groups.
    profiled.pop("scope", None)
    if scope:
        profiled["scope"] = " ".join(scope)
    if groups:
        profiled[profiles.WLCG_GROUPS] = [wlcg_group(name) for name in groups]
    return profiled


#: Token -> :class:`Verified`, so a signature is checked once per token per process; expiry is still
#: checked on every request by the caller, and revocation whenever the revocation state changed.
verified_tokens: snapshots.BoundedMemo[str, Verified] = snapshots.BoundedMemo(
    lambda: conf.epochauth_settings.VERIFIED_TOKEN_CACHE_SIZE
)

conf.process_cache(verified_tokens.clear)


@dataclass(frozen=True)
class IssuedToken:
    token: str
    claims: dict[str, Any]
    expires_in: int


@dataclass(frozen=True)
class AccessToken:
    """What ``request.auth`` holds after bearer authentication: the verified claims, never the token."""

    claims: dict[str, Any]
    #: The caller's groups here: from our token's claim, or from the database for an external identity.
    groups: tuple[str, ...] = ()
    #: The local user the token names: our ``sub``, or the user an external identity is linked to.
    user_id: Any = None
    username: str = ""
    #: ``cnf.jkt``: the thumbprint of the key a DPoP-bound token is bound to (RFC 9449 section 6),
    #: None for a bearer token. Read when the token is verified, so a bearer request checks it once.
    dpop_jkt: str | None = None

    @property
    def is_dpop_bound(self) -> bool:
        return self.dpop_jkt is not None

    @property
    def issuer(self) -> str:
        return self.claims["iss"]

    @property
    def subject(self) -> str:
        """``sub``: our user's id, or a host's client id (``host:<fqdn>``) in a host token."""
        return self.claims["sub"]

    @property
    def jti(self) -> str | None:
        return self.claims.get("jti")

    @property
    def is_local(self) -> bool:
        """Ours: the site's token or a community's."""
        return communities.is_ours(self.claims["iss"])

    @property
    def vo(self) -> str | None:
        """The community (slug) one of our tokens belongs to, by its issuer (verification checked
        that ``vo`` names the same); None for the site's tokens and an external issuer's."""
        community = communities.of_issuer(self.claims["iss"])
        return community.slug if community is not None else None

    @property
    def session_id(self) -> str | None:
        """Our refresh session; an external issuer's ``sid`` names a session of its own, not ours."""
        return self.claims.get(CLAIM_SESSION) if self.is_local else None

    @property
    def group(self) -> str | None:
        return self.claims.get(CLAIM_GROUP)

    @property
    def scope(self) -> str:
        return scope_string(self.claims)

    @property
    def scopes(self) -> frozenset[str]:
        return frozenset(split_scope(self.scope))

    @property
    def is_first_party(self) -> bool:
        """A token of our own login (``FIRST_PARTY_CLIENT_ID``), not one the OAuth server issued to
        a client; ours minted before they carried ``client_id`` are of our login too."""
        first_party = conf.epochauth_settings.FIRST_PARTY_CLIENT_ID
        return self.is_local and self.claims.get("client_id", first_party) == first_party

    @property
    def is_client_credentials(self) -> bool:
        """A token of the client-credentials grant: it stands for its application, whose owner is
        its ``sub`` only so that the owner's standing ends it, not for that owner."""
        return self.claims.get(CLAIM_GRANT_TYPE) == "client_credentials"

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.claims["exp"], tz=UTC)


@dataclass(slots=True)
class Verified:
    """A token whose signature and claims this process verified (in ``verified_tokens``)."""

    claims: dict[str, Any]
    #: POSIX time after which it is expired: ``exp`` + LEEWAY.
    deadline: float
    #: Our token's access as its revocation check found it, and the revocation state's
    #: :func:`~epochauth.revocation.generation` then: while that stays the same, the token sent again
    #: is not checked again (the hot path is a memo read, a clock read and an integer compare).
    passed: tuple[int, AccessToken] | None = None


def scope_string(claims: dict[str, Any]) -> str:
    """``scope`` (RFC 9068 space-delimited string) or ``scp`` (a list or a string, as some issuers send)."""
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope
    scp = claims.get("scp")
    if isinstance(scp, str):
        return scp
    if isinstance(scp, list) and all(isinstance(s, str) for s in scp):
        return " ".join(scp)
    return ""


@dataclass(frozen=True)
class Standing:
    """What the database says a new token of a user carries, read in one query (:func:`read_standing`):
    the user's groups, and the epochs of the user, of everyone and of groups (only rows that exist)."""

    #: Name -> primary key of each of the user's groups.
    groups: dict[str, Any]
    #: (kind, object id) -> (value, time of the last bump) of each epoch row read.
    epochs: dict[tuple[str, str], tuple[int, datetime | None]]

    def epoch(self, kind: str, object_id: str = "") -> int:
        return self.epochs.get((kind, object_id), (0, None))[0]

    def bumped_after(
        self, moment: datetime, user_id: str, group_id: str | None, community: str = ""
    ) -> bool:
        """Whether the user's, everyone's, the group's or the community's epoch was bumped after
        ``moment``."""
        kinds = [(models.Epoch.Kind.USER, user_id), (models.Epoch.Kind.GLOBAL, "")]
        if group_id is not None:
            kinds.append((models.Epoch.Kind.GROUP, group_id))
        if community:
            kinds.append((models.Epoch.Kind.COMMUNITY, community))
        bumps = [self.epochs.get(key, (0, None))[1] for key in kinds]
        return any(at is not None and at > moment for at in bumps)

    def epoch_claims(
        self, user_id: str, group_id: str | None, community: str = ""
    ) -> dict[str, int]:
        claims = {
            CLAIM_EPOCH: self.epoch(models.Epoch.Kind.USER, user_id),
            CLAIM_GLOBAL_EPOCH: self.epoch(models.Epoch.Kind.GLOBAL),
        }
        if group_id is not None:
            claims[CLAIM_GROUP_EPOCH] = self.epoch(models.Epoch.Kind.GROUP, group_id)
        if community:
            claims[CLAIM_COMMUNITY_EPOCH] = self.epoch(models.Epoch.Kind.COMMUNITY, community)
        return claims


class _StandingQuery(NamedTuple):
    sql: str
    #: The through table's user column, which prepares the user's id for the database.
    member: Field
    #: ``not_before`` as a column, and the converters that turn what the driver returns into an aware
    #: datetime (SQLite returns text).
    not_before: Col
    converters: tuple[Callable[..., Any], ...]


def _column(model: type[Model], name: str) -> str:
    # Concrete fields only here: ``_meta.get_field`` would also name a reverse relation, which has none.
    return cast(str, cast(Field, model._meta.get_field(name)).column)


@lru_cache(maxsize=8)
def _standing_query(alias: str, with_group: bool, with_community: bool = False) -> _StandingQuery:
    """The statement of :func:`read_standing` on one database, written once per process from the
    models' tables and columns with the backend's own quoting and cast.

    Not a queryset: building and compiling the ORM's UNION of a filtered and a joined query costs
    about a millisecond, some thirty times what running it costs, and it runs on every login and
    refresh. Membership rows have a NULL kind, which no epoch row has.
    """
    connection = connections[alias]
    qn = connection.ops.quote_name
    groups = cast(ManyToManyField, get_user_model()._meta.get_field("groups"))
    through, user, group = (
        qn(name)
        for name in (groups.m2m_db_table(), groups.m2m_column_name(), groups.m2m_reverse_name())
    )
    epoch, group_table = qn(models.Epoch._meta.db_table), qn(Group._meta.db_table)
    kind, object_id, value, not_before = (
        f"{epoch}.{qn(_column(models.Epoch, name))}"
        for name in ("kind", "object_id", "value", "not_before")
    )
    one = f"({kind} = %s AND {object_id} = %s)"
    of_groups = (
        f"({kind} = %s AND {object_id} IN (SELECT CAST({through}.{group} AS "
        f"{connection.ops.cast_char_field_without_max_length}) FROM {through} WHERE {through}.{user} = %s))"
    )
    wanted = " OR ".join(
        [one, one, of_groups] + ([one] if with_group else []) + ([one] if with_community else [])
    )
    name, pk = qn(_column(Group, "name")), qn(_column(Group, "id"))
    sql = (
        f"SELECT {kind}, {object_id}, {value}, {not_before} FROM {epoch} WHERE {wanted} "
        f"UNION ALL SELECT NULL, {group_table}.{name}, {through}.{group}, NULL FROM {through} "
        f"INNER JOIN {group_table} ON ({through}.{group} = {group_table}.{pk}) WHERE {through}.{user} = %s"
    )
    column = cast(Field, models.Epoch._meta.get_field("not_before")).get_col(
        models.Epoch._meta.db_table
    )
    converters = (*connection.ops.get_db_converters(column), *column.get_db_converters(connection))
    through_model = cast(type[Model], groups.remote_field.through)
    member = cast(Field, through_model._meta.get_field(groups.m2m_field_name()))
    return _StandingQuery(sql, member, column, converters)


conf.process_cache(_standing_query.cache_clear)


def standing_read(
    user_id: Any, group_id: Any = None, alias: str | None = None, community: str = ""
) -> tuple[str, list[Any]]:
    """The statement of :func:`read_standing` and its parameters, for a caller that runs it along
    with its own (:func:`epochauth.sessions.start_session`); :func:`standing_of` reads its rows.
    ``community``: a slug whose epoch is read too."""
    alias = alias or router.db_for_read(models.Epoch)
    query = _standing_query(alias, group_id is not None, bool(community))
    member = query.member.get_db_prep_value(user_id, connections[alias])
    params = [
        models.Epoch.Kind.USER,
        str(user_id),
        models.Epoch.Kind.GLOBAL,
        "",
        models.Epoch.Kind.GROUP,
        member,
    ]
    if group_id is not None:
        params += [models.Epoch.Kind.GROUP, str(group_id)]
    if community:
        params += [models.Epoch.Kind.COMMUNITY, community]
    return query.sql, [*params, member]


def standing_of(rows: Iterable[Sequence[Any]], alias: str | None = None) -> Standing:
    """The standing in the rows of :func:`standing_read`'s statement, run on ``alias``."""
    alias = alias or router.db_for_read(models.Epoch)
    connection = connections[alias]
    query = _standing_query(alias, False)
    standing = Standing(groups={}, epochs={})
    for kind, name, value, at in rows:
        if kind is None:
            standing.groups[name] = value
            continue
        for convert in query.converters:
            at = convert(at, query.not_before, connection)
        standing.epochs[(kind, name)] = (value, at)
    return standing


def read_standing(user_id: Any, group_id: Any = None, community: str = "") -> Standing:
    """The user's groups and the epochs a token of theirs depends on, in one query: of the user, of
    everyone, of each of the user's groups, of ``group_id`` (a session's group the user may have left)
    and of ``community``."""
    alias = router.db_for_read(models.Epoch)
    with connections[alias].cursor() as cursor:
        cursor.execute(*standing_read(user_id, group_id, alias, community))
        rows = cursor.fetchall()
    return standing_of(rows, alias)


def current_epochs(user_id: str, group_id: str | None) -> dict[str, int]:
    """Epoch claims for a new token, read from the database (minting touches the DB anyway)."""
    return read_standing(user_id, group_id).epoch_claims(user_id, group_id)


def community_groups(community: communities.Community | None, standing: Standing) -> list[str]:
    """The user's groups a token of ``community`` lists: the site's and that community's."""
    foreign = communities.foreign_groups(community, standing.groups.values())
    return sorted(name for name, pk in standing.groups.items() if pk not in foreign)


def mint_access_token(
    user: Any,
    *,
    scope: str = "",
    group: Any = None,
    session_id: str | None = None,
    lifetime: timedelta | None = None,
    extra_claims: dict[str, Any] | None = None,
    standing: Standing | None = None,
    session: Any = None,
    request: Any = None,
    aud: Any = None,
    community: communities.Community | None = None,
) -> IssuedToken:
    """Sign an access token for ``user``; ``group`` (a Group) is the selected group, if any.
    ``standing``: the user's groups and epochs if the caller just read them (one query otherwise).
    ``session`` and ``request`` are handed to the site's ``CUSTOM_CLAIMS`` callable (epochauth.claims).
    ``client_id`` is the first-party client's unless ``extra_claims`` names the OAuth client's; ``aud``
    the default :func:`audience` unless a resource narrowed it (:mod:`epochauth.resources`).
    ``community``: the one the token belongs to (its issuer and key, ``vo``); its groups only, and
    ``standing`` must hold its epoch (:func:`read_standing` with it)."""
    keyring = community.keyring if community is not None else keys.get_keyring()
    slug = community.slug if community is not None else ""
    if lifetime is None:
        lifetime = conf.epochauth_settings.ACCESS_TOKEN_LIFETIME
    group_id = str(group.pk) if group is not None else None
    if standing is None:
        standing = read_standing(user.pk, group_id, slug)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": community.issuer if community is not None else conf.epochauth_settings.ISSUER,
        "sub": str(user.pk),
        "aud": aud or audience(),
        "client_id": conf.epochauth_settings.FIRST_PARTY_CLIENT_ID,
        "iat": now,
        "nbf": now,
        "exp": now + int(lifetime.total_seconds()),
        "jti": uuid.uuid4().hex,
        CLAIM_USERNAME: user.get_username(),
        **standing.epoch_claims(str(user.pk), group_id, slug),
    }
    if community is not None:
        claims[CLAIM_COMMUNITY] = slug
    # Only when not empty: RFC 8693 section 4.2's scope is a list of scopes, which "" is not, and
    # RFC 9068 validators (Authlib's) refuse an empty scope or groups.
    if scope:
        claims["scope"] = scope
    groups = community_groups(community, standing)
    if groups:
        claims[CLAIM_GROUPS] = groups
    if group is not None:
        claims[CLAIM_GROUP] = group.name
        claims[CLAIM_GROUP_ID] = str(group.pk)
    if session_id:
        claims[CLAIM_SESSION] = session_id
    claims = profile_claims(claims)
    claims.update(custom_claims(user, session=session, scope=scope, group=group, request=request))
    claims.update(extra_claims or {})
    token = keyring.sign(claims, ACCESS_TOKEN_TYPE)
    signals.token_issued.send(sender=AccessToken, user=user, claims=claims, session_id=session_id)
    return IssuedToken(token=token, claims=claims, expires_in=claims["exp"] - now)
