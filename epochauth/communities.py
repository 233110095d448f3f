"""Communities (virtual organisations, "VOs"): several on one deployment (LHCb and Belle II on one
DIRAC), each with its own issuer, signing keys, JWKS and discovery documents.

A token of ours belongs to one community at most: it carries ``vo`` (the slug), the community's
issuer as ``iss`` and is signed with the community's key, so a verifier routes it by ``iss`` as
storage systems do (one ``iss`` per VO). A login selects the community with ``vo:<slug>``; without
one it gets ``DEFAULT_COMMUNITY`` (open to every user) or the user's only community; a user of
none, the site's token. Empty ``COMMUNITIES``: none, every token is the site's, exactly as before
communities existed.

The definitions live in the settings (``COMMUNITIES``); memberships and the groups of a community in
the database (:class:`~epochauth.models.CommunityMembership`, :class:`~epochauth.models.CommunityGroup`),
read when a token is minted, never when one is verified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.crypto import salted_hmac
from django.utils.translation import gettext_lazy as _

from . import conf, keys, models

#: A community's slug: a path segment of its default issuer and of its documents' URLs.
SLUG = re.compile(r"[-a-zA-Z0-9_]+")
#: ``vo:<slug>`` selects a community (diracx's spelling).
SCOPE_PREFIX = "vo:"
#: The options of one ``COMMUNITIES`` entry.
OPTIONS = frozenset(
    {
        "name",
        "issuer",
        "algorithm",
        "signing_key",
        "signing_key_file",
        "key_id",
        "verification_keys",
        "identity_providers",
    }
)


@dataclass(frozen=True)
class Community:
    """One ``COMMUNITIES`` entry, its keys loaded."""

    slug: str
    name: str
    issuer: str
    keyring: keys.KeyRing
    #: The external issuers (``ISSUERS`` names) its users may come from; None: any.
    identity_providers: frozenset[str] | None = None

    @property
    def scope(self) -> str:
        return f"{SCOPE_PREFIX}{self.slug}"


def default_issuer(slug: str) -> str:
    return f"{str(conf.epochauth_settings.ISSUER or '').rstrip('/')}/{slug}"


def _material(slug: str, options: Mapping[str, Any], algorithm: str) -> str | bytes:
    """The signing key of a community: its file, its key, or for HS* one derived from ``SECRET_KEY``
    for this community alone (no two communities, nor the site, share a secret)."""
    if options.get("signing_key_file"):
        return Path(options["signing_key_file"]).read_bytes()
    if options.get("signing_key"):
        return options["signing_key"]
    if algorithm in keys.HMAC_ALGORITHMS:
        return salted_hmac(
            "epochauth.communities", slug, secret=settings.SECRET_KEY, algorithm="sha256"
        ).hexdigest()
    raise ImproperlyConfigured(
        f"EPOCHAUTH: community {slug!r} needs signing_key or signing_key_file for {algorithm}"
    )


def load(slug: str, options: Mapping[str, Any]) -> Community:
    """A community from its ``COMMUNITIES`` entry; raises ImproperlyConfigured."""
    if not isinstance(options, Mapping):
        raise ImproperlyConfigured(f"EPOCHAUTH: community {slug!r} must be a dict")
    algorithm = options.get("algorithm") or conf.epochauth_settings.ALGORITHM
    signing = keys.load_key(algorithm, _material(slug, options, algorithm), options.get("key_id"))
    ring = keys.KeyRing(
        signing, [keys.verification_key(entry) for entry in options.get("verification_keys", [])]
    )
    providers = options.get("identity_providers")
    return Community(
        slug=slug,
        name=str(options.get("name") or slug),
        issuer=options.get("issuer") or default_issuer(slug),
        keyring=ring,
        identity_providers=frozenset(providers) if providers is not None else None,
    )


@lru_cache(maxsize=1)
def get_communities() -> Mapping[str, Community]:
    """Every configured community by slug, keys loaded once per settings reload."""
    configured = conf.epochauth_settings.COMMUNITIES or {}
    return MappingProxyType({slug: load(slug, options) for slug, options in configured.items()})


@lru_cache(maxsize=1)
def _by_issuer() -> Mapping[str, Community]:
    return MappingProxyType({c.issuer: c for c in get_communities().values()})


@lru_cache(maxsize=1)
def our_issuers() -> frozenset[str]:
    """Every ``iss`` of ours: the site's and each community's."""
    return frozenset({conf.epochauth_settings.ISSUER, *_by_issuer()})


conf.process_cache(get_communities.cache_clear)
conf.process_cache(_by_issuer.cache_clear)
conf.process_cache(our_issuers.cache_clear)


def enabled() -> bool:
    return bool(conf.epochauth_settings.COMMUNITIES)


def get(slug: str | None) -> Community | None:
    return get_communities().get(slug) if slug else None


def of_issuer(issuer: Any) -> Community | None:
    """The community whose issuer ``issuer`` is (an in-memory lookup: verification routes by it)."""
    return _by_issuer().get(issuer) if isinstance(issuer, str) and enabled() else None


def is_ours(issuer: Any) -> bool:
    """Whether ``issuer`` is the site's or one of its communities'."""
    return issuer in our_issuers() if isinstance(issuer, str) else False


def accepts(community: Community | None) -> bool:
    """Whether this service takes tokens of ``community`` (None: the site's, without one):
    ``ACCEPTED_COMMUNITIES``, every one when it is None."""
    accepted = conf.epochauth_settings.ACCEPTED_COMMUNITIES
    if accepted is None:
        return True
    return community is not None and community.slug in accepted


def community_name(scope: str) -> str | None:
    """The community a ``vo:<slug>`` scope selects, else None."""
    if scope.startswith(SCOPE_PREFIX):
        return scope[len(SCOPE_PREFIX) :] or None
    return None


def requested(names: Iterable[str]) -> list[str]:
    """The communities ``names`` (scope-tokens) select, without repeats."""
    return list(dict.fromkeys(slug for slug in map(community_name, names) if slug))


def memberships(user_id: Any) -> set[str]:
    """The communities a user is a member of (one query)."""
    return set(
        models.CommunityMembership.objects.filter(user_id=user_id).values_list(
            "community", flat=True
        )
    )


def is_member(user_id: Any, community: Community) -> bool:
    """Whether the user may hold tokens of ``community``: everyone may the default one."""
    if community.slug == conf.epochauth_settings.DEFAULT_COMMUNITY:
        return True
    return community.slug in memberships(user_id)


class Refused(Exception):
    """A token may not be of the community asked for; ``description`` says why, for the client.
    Each token endpoint answers it as ``invalid_scope``."""

    def __init__(self, description: Any) -> None:
        super().__init__(description)
        self.description = description


def choose(user_id: Any, names: Iterable[str]) -> Community | None:
    """The community of a new login of the user asking for scopes ``names``: the one ``vo:<slug>``
    selects, else ``DEFAULT_COMMUNITY``, else the user's only one. None (the site's token, of no
    community, as before communities) without communities and for a user of none: a site adopts
    them member by member, and its staff and services need none. Raises :class:`Refused` with the
    reason a client can show."""
    wanted = requested(names)
    if not enabled():
        if wanted:
            raise Refused(_("This service has no communities"))
        return None
    if len(wanted) > 1:
        raise Refused(_("Select at most one community"))
    if wanted:
        community = get(wanted[0])
        if community is None:
            raise Refused(_("Unknown community: %(vo)s") % {"vo": wanted[0]})
        if not is_member(user_id, community):
            raise Refused(_("You are not a member of that community"))
        return community
    default = get(conf.epochauth_settings.DEFAULT_COMMUNITY)
    if default is not None:
        return default
    member_of = sorted(slug for slug in memberships(user_id) if slug in get_communities())
    if len(member_of) <= 1:
        return get_communities()[member_of[0]] if member_of else None
    raise Refused(_("You are a member of several communities: select one with vo:<slug>"))


def check_provider(community: Community | None, issuer: str | None) -> None:
    """Raise :class:`Refused` when a user who came through the external issuer ``issuer`` (a
    browser login's provider, a token exchange's subject token) may not enter ``community``: it is
    not among its ``identity_providers``. A local login (no issuer) may."""
    allowed = community.identity_providers if community is not None else None
    if allowed is not None and issuer is not None and issuer not in allowed:
        raise Refused(_("Your identity provider is not one of that community's"))


def provider_refusal(user_id: Any, names: Iterable[str], issuer: str | None) -> Any:
    """Why a user signed in through the external issuer ``issuer`` (None: with a password) may not
    approve a grant of the scopes ``names`` in a browser (the device and code flows): the community
    the grant's token would be of does not list it in ``identity_providers``; None when they may.
    A choice the token endpoint refuses anyway (not a member, several communities) is left to it."""
    if issuer is None or not enabled():
        return None
    try:
        community = choose(user_id, names)
    except Refused:
        return None
    try:
        check_provider(community, issuer)
    except Refused as exc:
        return exc.description
    return None


def selectable(user_id: Any) -> list[Community]:
    """The communities a user may select (the default and their memberships), for a page to offer."""
    if not enabled():
        return []
    default = conf.epochauth_settings.DEFAULT_COMMUNITY
    slugs = memberships(user_id) | {default}
    # The default first: what a form preselects is what a login naming none gets.
    found = [c for slug, c in get_communities().items() if slug in slugs]
    return sorted(found, key=lambda c: c.slug != default)


def foreign_groups(community: Community | None, group_ids: Iterable[Any]) -> set[Any]:
    """Those of ``group_ids`` tied to a community other than ``community`` (one query, none without
    a community): they are not ``community``'s, a token of it neither lists nor selects them."""
    ids = list(group_ids)
    if community is None or not ids:
        return set()
    tied = models.CommunityGroup.objects.filter(group_id__in=ids).exclude(community=community.slug)
    return set(tied.values_list("group_id", flat=True))
