"""The ``EPOCHAUTH`` settings dict: defaults in one place, read like DRF's ``api_settings``.

Access values as attributes (``epochauth_settings.ACCESS_TOKEN_LIFETIME``); they are cached and
dropped again when a test changes the ``EPOCHAUTH`` setting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

#: Every setting and its default. What each one means is in :data:`DESCRIPTIONS`, the one text that
#: the handbook's settings table and the docs' reference are generated from (tests/test_docs.py).
DEFAULTS: dict[str, Any] = {
    "ISSUER": None,
    "AUDIENCE": None,
    "RESOURCES": (),
    "FIRST_PARTY_CLIENT_ID": "epochauth",
    "ALGORITHM": "HS256",
    "SIGNING_KEY": None,
    "SIGNING_KEY_FILE": None,
    "KEY_ID": None,
    "VERIFICATION_KEYS": [],
    "ID_TOKEN_SIGNING_KEY": None,
    "ID_TOKEN_SIGNING_KEY_FILE": None,
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=15),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "REMEMBER_ME_REFRESH_TOKEN_LIFETIME": timedelta(days=30),
    "REFRESH_TOKEN_GRACE_PERIOD": timedelta(0),
    "LEEWAY": timedelta(seconds=30),
    "MAX_TOKEN_BYTES": 8192,
    "DPOP_ALGORITHMS": ("ES256", "EdDSA", "Ed25519", "RS256", "PS256"),
    "DPOP_PROOF_LIFETIME": timedelta(seconds=60),
    "DPOP_NONCE": None,
    "DPOP_REQUIRED": False,
    "SCOPES": {},
    "SERVICE_SCOPES": {},
    "TOKEN_PROFILE": None,
    "LOCAL_TOKENS": True,
    "EXTERNAL_ISSUERS": True,
    "SESSION_AUTH_FALLBACK": True,
    "MAX_SESSIONS_PER_USER": None,
    "REVOKE_ON_PASSWORD_CHANGE": True,
    "LOGIN_THROTTLE_RATE": "10/min",
    "DEVICE_CODE_THROTTLE_RATE": "10/min",
    "CLIENT_REGISTRATION": None,
    "CLIENT_REGISTRATION_THROTTLE_RATE": "10/hour",
    "REVOCATION_REFRESH_INTERVAL": timedelta(seconds=1),
    "REVOCATION_RELOAD_INTERVAL": timedelta(minutes=1),
    "REVOCATION_WINDOW": timedelta(days=1),
    "REVOCATION_PUSH": True,
    "EPOCH_CACHE_TIMEOUT": timedelta(hours=1),
    "OUTAGE_JOURNAL_SIZE": 100_000,
    "VERIFIED_TOKEN_CACHE_SIZE": 10000,
    "CUSTOM_CLAIMS": None,
    "SIMPLEJWT_MIGRATION_ENDS": None,
    "LOAD_USER": False,
    "ISSUERS": [],
    "ALLOW_LOOPBACK_HTTP_ISSUERS": False,
    "HTTP_TIMEOUT": timedelta(seconds=5),
    "HTTP_MAX_BYTES": 512 * 1024,
    "JWKS_CACHE_MIN": timedelta(minutes=5),
    "JWKS_CACHE_MAX": timedelta(hours=24),
    "JWKS_REFETCH_COOLDOWN": timedelta(minutes=1),
    "JWKS_MAX_STALENESS": timedelta(days=1),
    "IDENTITY_CACHE_TIMEOUT": timedelta(hours=1),
    "CACHE_ALIAS": "default",
    "BROWSER_LOGIN": True,
    "OIDC_SCOPES": "openid profile email",
    "OIDC_CLIENT_SECRETS": {},
    "OIDC_REDIRECT_SINGLE_PROVIDER": False,
    "OIDC_PROVIDER_GROUPS": {},
    "OIDC_SESSION_CHECK_INTERVAL": None,
    "PASSWORD_LOGIN": False,
    "TOKEN_MANAGER_KEYS": [],
    "TOKEN_MANAGER_SCOPE": "tokenmanager",
    "TOKEN_MANAGER_MARGIN": timedelta(seconds=60),
    "BACKCHANNEL_LOGOUT_MAX_AGE": timedelta(minutes=5),
    "LOGOUT_TOKEN_LIFETIME": timedelta(minutes=2),
    "LOGOUT_DELIVERY_ATTEMPTS": 8,
    "LOGOUT_DELIVERY_RETRY_DELAY": timedelta(seconds=30),
    "STATUS_LIST": None,
    "SSF_TRANSMITTERS": [],
    "SSF_MAX_AGE": timedelta(days=1),
    "SSF_TRANSMITTER": None,
    "COMMUNITIES": {},
    "DEFAULT_COMMUNITY": None,
    "ACCEPTED_COMMUNITIES": None,
}

#: What each setting means, in Markdown, in the order of :data:`DEFAULTS`. The default is shown beside
#: it, written from the value; say here what ``None`` (or another special value) means.
DESCRIPTIONS: dict[str, str] = {
    "ISSUER": (
        "**Required.** The `iss` of every token this site mints; a token with this `iss` is verified as "
        "one of ours."
    ),
    "AUDIENCE": (
        "`aud` written into our tokens; when set, our tokens must carry it. `None`: `ISSUER` (this "
        "site is the resource server), in the WLCG profile its any-audience; every token has an `aud` "
        "(RFC 9068 section 2.2), and ours without one, minted by earlier versions, stay valid."
    ),
    "RESOURCES": (
        "The resource identifiers (absolute URIs, RFC 8707) this deployment issues tokens for besides "
        "the default audience: a `resource` parameter at `/auth/token/` (and its refresh), at "
        "`/o/token/` for client credentials, or in a token exchange narrows `aud` to the ones it "
        "names, `invalid_target` for any other; the code, device and refresh grants of `/o/token/` "
        "refuse it. Each service sets its own `AUDIENCE` to its identifier and refuses tokens "
        "narrowed to others. Empty: no resource but the default audience."
    ),
    "FIRST_PARTY_CLIENT_ID": (
        "The `client_id` (RFC 9068 section 2.2) of the tokens of our own login: `POST /auth/token/`, "
        "its refresh and renew, the browser login's token page, `epochauth_issue`. The OAuth server "
        "refuses an application of that client id, so no client's token passes for one of them "
        "(check `epochauth.E020`)."
    ),
    "ALGORITHM": (
        "Signing algorithm: `HS256/384/512`, `RS256/384/512`, `PS256/384/512`, `ES256/384/512`, "
        "`Ed25519` (RFC 9864), or `EdDSA`, its deprecated name, for consumers that know no other "
        "(an Ed25519 key verifies tokens labelled either way)."
    ),
    "SIGNING_KEY": (
        "HMAC secret or PEM private key. HS* without it falls back to `SECRET_KEY` (warning `W001` "
        "outside `DEBUG`)."
    ),
    "SIGNING_KEY_FILE": "Path of the key file; wins over `SIGNING_KEY`.",
    "KEY_ID": (
        "`kid` of the signing key; derived from the key when `None` (a truncated SHA-256 hash of the "
        "public JWK, or of the HMAC secret's hash; not an RFC 7638 thumbprint)."
    ),
    "VERIFICATION_KEYS": (
        'Retired keys that still verify: `[{"algorithm": ..., "key": ... or "file": ..., '
        '"kid": ...}]` '
        "(`kid` optional: derived)."
    ),
    "ID_TOKEN_SIGNING_KEY": (
        "PEM RSA private key that signs the ID tokens of OpenID Provider mode (RS256, which every "
        "relying party supports); `None`: the signing key, when `ALGORITHM` is `RS256` (else check "
        "`epochauth.oauth.E004`). Published in the JWKS under its own `kid`; it verifies no access token."
    ),
    "ID_TOKEN_SIGNING_KEY_FILE": "Path of that key's file; wins over `ID_TOKEN_SIGNING_KEY`.",
    "ACCESS_TOKEN_LIFETIME": "Lifetime of access tokens.",
    "REFRESH_TOKEN_LIFETIME": "Lifetime of a session's refresh token; each refresh starts it again.",
    "REMEMBER_ME_REFRESH_TOKEN_LIFETIME": "The same for logins with `remember_me: true`.",
    "REFRESH_TOKEN_GRACE_PERIOD": (
        "How long after a refresh the refresh token it replaced may be used once more (a client "
        "retrying a refresh whose answer it never got; WLCG Common JWT Profile section 4.3.2 suggests "
        "a day). The retry gets a new pair, and the pair of the first use stops refreshing, so a "
        "family keeps one live refresh token. A second retry, a retry after the period and any older "
        "refresh token still end the family as a reuse. Login sessions and, with `epochauth.oauth`, "
        "`/o/token/` refreshes alike (DOT's own `REFRESH_TOKEN_GRACE_PERIOD_SECONDS` stays 0, check "
        "`epochauth.oauth.E003`). `0` = none."
    ),
    "LEEWAY": "Clock skew allowed on `exp`, `nbf`, `iat`.",
    "MAX_TOKEN_BYTES": "Longer bearer tokens (and DPoP proofs) are refused before any parsing.",
    "DPOP_ALGORITHMS": (
        "The algorithms a DPoP proof (RFC 9449) may be signed with, offered in the `DPoP` challenge's "
        "`algs`: asymmetric ones only (`ES256/384/512`, `RS256/384/512`, `PS256/384/512`, `EdDSA`, "
        "`Ed25519`; never `none` nor HMAC, check `epochauth.E025`)."
    ),
    "DPOP_PROOF_LIFETIME": (
        "How old a DPoP proof's `iat` may be (one `LEEWAY` ahead is accepted too); its `jti` is "
        "remembered in the shared cache (`CACHE_ALIAS`) as long, so a proof is used once across every "
        "process (`503` when the cache is down). More than zero (check `epochauth.E025`)."
    ),
    "DPOP_NONCE": (
        "A timedelta: DPoP proofs must carry a nonce of ours (RFC 9449 section 9), which changes this "
        "often and is accepted until the next one changes too; a proof without it is refused with "
        "`use_dpop_nonce` and the nonce in `DPoP-Nonce` (add `epochauth.dpop.NonceMiddleware`, check "
        "`epochauth.E026`). Nonces are an HMAC of the time under `SECRET_KEY`: no shared state. `None`: "
        "no nonce required."
    ),
    "DPOP_REQUIRED": (
        "Refuse every access token sent as `Bearer`, and every token request (`/auth/token/`, its "
        "refresh, `/o/token/`) without a DPoP proof (`400 invalid_dpop_proof`): only DPoP-bound tokens "
        "are issued and pass. A bound token (`cnf.jkt`) is refused as a bearer token whatever this says "
        "(RFC 9449 section 7.2). For one OAuth application only: its DPoP policy in the admin."
    ),
    "SCOPES": (
        'Scopes a user may ask for: `{"name": "description"}`, at `POST /auth/token/`, with '
        "`epochauth_issue --scope` and, with `epochauth.oauth`, in the device, authorization-code, "
        "refresh and token-exchange grants; others are refused. Never a service scope (check "
        "`epochauth.E019`)."
    ),
    "SERVICE_SCOPES": (
        'Scopes only a service application may hold: `{"name": "description"}`. `TOKEN_MANAGER_SCOPE` '
        "and `host.auth` (WLCG host-based authorization) always are. Only the client-credentials "
        "grant of `epochauth.oauth` issues them, to a confidential application whose allowed scopes "
        "list them by name; every other way to a token refuses them (`invalid_scope`), and an "
        "external issuer's token never grants one."
    ),
    "TOKEN_PROFILE": (
        '`"wlcg"`: mint our tokens in the WLCG token profile ("Tokens for WLCG services") (`wlcg.ver`, '
        "`aud` always, groups as `wlcg.groups` paths, a group selection as `wlcg.groups:/<group>`); "
        "check `epochauth.E018`, and `epochauth.W006` for `SCOPES` outside its grammar. `None`: our "
        "own claims."
    ),
    "LOCAL_TOKENS": (
        "Accept our own tokens. (The token endpoints still mint when `False`: leave out `epochauth.urls` "
        "then.)"
    ),
    "EXTERNAL_ISSUERS": "Accept tokens of the issuers in `ISSUERS` and of enabled `Issuer` rows.",
    "SESSION_AUTH_FALLBACK": (
        "`epochauth.authentication.SessionAuthentication` (and `GET /auth/whoami/`) accept a Django "
        "session login; `False` switches session auth off."
    ),
    "MAX_SESSIONS_PER_USER": (
        "Live login sessions (refresh families of `POST /auth/token/` and browser login) per user; a "
        'login beyond it ends the user\'s oldest (`session_revoked` reason "limit"). `None` = unlimited; '
        "otherwise a positive integer (check `epochauth.E013`)."
    ),
    "REVOKE_ON_PASSWORD_CHANGE": (
        "A user's new password ends every token and session of theirs (an epoch bump, reason \"password "
        'change").'
    ),
    "LOGIN_THROTTLE_RATE": (
        "Failed password attempts at `POST /auth/token/` allowed per client address, in fixed "
        "windows of the period (DRF rate string; `None` = off). A username (case-folded) may fail "
        "10 times as often from all addresses together; beyond that only addresses it logged in "
        "from within 30 days may try it. So wrong passwords from elsewhere never lock a user out "
        "of an address they log in from, and guessing from many addresses stays bounded. Correct "
        "logins do not count, nor attempts the database could not answer (`503`). The counters "
        "live in the shared cache (`CACHE_ALIAS`); when it is down, logins answer `503`. The "
        "address is `REMOTE_ADDR`; `X-Forwarded-For` counts only with DRF's `NUM_PROXIES` set "
        "(behind that many proxies)."
    ),
    "DEVICE_CODE_THROTTLE_RATE": (
        "Wrong device user codes (RFC 8628 section 5.1) entered or linked at `/o/device/` allowed per "
        "client address and, separately, per signed-in user (an anonymous browser's session otherwise), "
        "in fixed windows of the period (DRF rate string; `None` = off); then a `429` page. A code that "
        "names a device grant does not count. Counted in the shared cache like `LOGIN_THROTTLE_RATE` "
        "(`503` page when it is down)."
    ),
    "CLIENT_REGISTRATION": (
        "Dynamic client registration (RFC 7591, managed by RFC 7592) at `/o/register/` of "
        '`epochauth.oauth`: `"open"`, anyone may register; `"authenticated"`, only with an access '
        "token of ours of a user (`Authorization: Bearer`, or `DPoP` with its proof for a bound one; "
        "not a client-credentials token), who then "
        "owns the application. Either way only a *public* client with the device grant or the "
        "authorization-code grant (PKCE) and user scopes, never a service scope, always asking the "
        'user\'s consent (handbook: "Dynamic client registration"). `None`: no registration, `404`, '
        "and no `registration_endpoint` in the metadata (check `epochauth.oauth.E006`)."
    ),
    "CLIENT_REGISTRATION_THROTTLE_RATE": (
        "Registrations allowed per client address, in fixed windows of the period (DRF rate string; "
        "`None` = off, check `epochauth.oauth.W003` when registration is open), counted in the shared "
        "cache like `LOGIN_THROTTLE_RATE` (`503` when it is down); then `429` with `Retry-After`."
    ),
    "REVOCATION_REFRESH_INTERVAL": (
        "How often a process reads the revocation version key from the shared cache (one read per process"
        " per interval); when it changed, the process reads the rows changed since its last read from the"
        " database. Also how long a process trusts its copy of an issuer table entry, an identity and an "
        "epoch read one by one."
    ),
    "REVOCATION_RELOAD_INTERVAL": (
        "How often a process reads the changed revocation rows (and the issuer table) from the database "
        "even when no change was announced through the shared cache (bounds a lost announcement; a "
        "database outage keeps the copy held)."
    ),
    "REVOCATION_WINDOW": (
        "Each process holds every epoch change this recent: a token issued within it is checked without "
        "any read. A token issued earlier (an external token with a long life, or `ACCESS_TOKEN_LIFETIME`"
        " above the window: check `epochauth.W005`) reads its epochs one by one through the shared cache."
        " Memory grows with the bumps made within the window, not with the number of users."
    ),
    "REVOCATION_PUSH": (
        "`True`: with Redis as the shared cache (`django.core.cache.backends.redis.RedisCache`), each "
        "revocation is pushed to every process over Redis pub/sub after its commit (a channel named with "
        "the cache's key prefix; one listener thread per process, started on first use and again in a "
        'forked worker). `"database"` (for sites without Redis): on PostgreSQL over `LISTEN/NOTIFY` (a '
        "connection of its own per process; needs session pooling, not PgBouncer's transaction pooling), "
        'on SQLite a `PRAGMA data_version` check every 0.5 s per process (handbook: "Push without '
        'Redis"). `False`: none. Polling stays the net.'
    ),
    "EPOCH_CACHE_TIMEOUT": "How long the shared cache keeps an epoch read from the database.",
    "OUTAGE_JOURNAL_SIZE": (
        "With Redis as the shared cache: how many changes made while the database is unreachable "
        "(refresh, logout, logout-all) the outage journal in Redis holds until the database is back "
        "and takes them; a full journal answers 503. `0` or `None`: no journal (nor session mirror), "
        "those requests answer 503 during an outage (as without Redis)."
    ),
    "VERIFIED_TOKEN_CACHE_SIZE": (
        "Verified tokens remembered per process (`0` = off): a signature is checked once per token, and "
        "our token's revocation check is kept with it until the process's revocation state changes, so a "
        "token sent again costs a dict lookup, a clock read and an integer compare; expiry is checked "
        "every time. An entry takes about 2.3 KB (the token and its claims; 23 MB for 10,000). A process "
        "that sees more tokens than this within their lifetime pays a new token's cost (signature, claims, "
        "revocation: some 3× a minimal HS256 verifier) on each first sight again: size it above the "
        "tokens one process sees in an access-token lifetime. The per-process memo of (issuer, sub) → "
        "user mappings holds as many entries at most (the oldest go first; they are read again from the "
        "shared cache)."
    ),
    "CUSTOM_CLAIMS": (
        "A callable (or its dotted path) `(user, *, session, scope, group, request) -> dict` whose claims "
        "are added to each access token we mint; reserved claims cannot be set (`epochauth.claims`, check "
        "`epochauth.E015`)."
    ),
    "SIMPLEJWT_MIGRATION_ENDS": (
        "`epochauth.contrib.simplejwt`: simplejwt tokens are accepted until then (an aware datetime; "
        "`None`: no end set, check `epochauth.simplejwt.W001`)."
    ),
    "LOAD_USER": (
        "Load the user row on every request (one query; refuses inactive users) instead of lazily."
    ),
    "ISSUERS": (
        "External issuers configured in code, next to the `Issuer` rows of the admin: a list of dicts with "
        '`"issuer"` and optionally `"audiences"`, `"profile"`, `"accept_any_audience"`, `"required_scopes"`, '
        '`"algorithms"`, `"auto_provision"`, `"default_groups"`, `"group_claims"`, `"group_map"`, '
        '`"group_prefix"`, `"mirror_groups"`, `"username_claim"`, `"status_list"` (Token Status '
        'Lists), `"enabled"`, and for browser login `"slug"`, `"display_name"`, `"client_id"`, '
        '`"client_secret_env"`, and for the Token Manager `"group_scopes"` (local group to the '
        "upstream scope)."
    ),
    "ALLOW_LOOPBACK_HTTP_ISSUERS": (
        "Accept `http://` issuers on loopback hosts (tests, demos); `https` is required otherwise."
    ),
    "HTTP_TIMEOUT": "Time limit of a discovery or JWKS request, for connecting and for the whole download.",
    "HTTP_MAX_BYTES": "Larger discovery/JWKS answers are refused.",
    "JWKS_CACHE_MIN": (
        "Lower bound on how long a fetched JWKS is used (the issuer's `Cache-Control: max-age`, clamped)."
    ),
    "JWKS_CACHE_MAX": "Upper bound; also the lifetime when the issuer sends no `max-age`.",
    "JWKS_REFETCH_COOLDOWN": (
        "An unknown `kid` refetches an issuer's JWKS at most once per this window (per issuer, shared by "
        "threads and, through the cache, by processes)."
    ),
    "JWKS_MAX_STALENESS": "While an issuer is unreachable its last good keys keep serving for this long.",
    "IDENTITY_CACHE_TIMEOUT": (
        "How long the shared cache keeps an (issuer, sub) → user mapping, and a process its copy while no "
        "change of mappings is announced."
    ),
    "CACHE_ALIAS": "The Django cache that holds revocation state; use a shared one (Redis) in production.",
    "BROWSER_LOGIN": (
        "Browser login through OpenID providers (`epochauth.oidc`); `False` hides every provider."
    ),
    "OIDC_SCOPES": "Scopes a browser login asks the provider for.",
    "OIDC_CLIENT_SECRETS": (
        "Client secrets by provider slug, for secrets not kept in the environment variable the issuer names."
    ),
    "OIDC_REDIRECT_SINGLE_PROVIDER": "With exactly one provider, `/oidc/login/` goes straight to it.",
    "OIDC_PROVIDER_GROUPS": (
        "Groups by provider slug, besides each issuer's `default_groups`: a sign-in for a `g:<group>` "
        "that exactly one provider has goes straight to that provider."
    ),
    "OIDC_SESSION_CHECK_INTERVAL": (
        "How often a browser session from a provider login is re-checked at the provider "
        "(`prompt=none`, at a page load; `epochauth.oidc.recheck.ProviderSessionMiddleware`): a user "
        "signed out there is signed out here. `None`: never (a provider with back-channel logout tells us)."
    ),
    "PASSWORD_LOGIN": (
        "`/oidc/login/` also has a username and password form (Django's `AUTHENTICATION_BACKENDS`), for "
        "any active user."
    ),
    "TOKEN_MANAGER_KEYS": (
        "Token Manager (`epochauth.tokenmanager`): Fernet keys of the stored upstream refresh tokens; the "
        "first encrypts, every one decrypts (put a new key first, then "
        "`epochauth_upstream_grants --rotate`). Required with `epochauth.tokenmanager` installed "
        "(check `epochauth.tokenmanager.E001`)."
    ),
    "TOKEN_MANAGER_SCOPE": (
        "The service scope of the Token Manager: a client-credentials token of ours with it, of a "
        "confidential application whose allowed scopes still list it, may obtain users' upstream "
        "access tokens. Always a service scope: never put it in `SCOPES`."
    ),
    "TOKEN_MANAGER_MARGIN": "A cached upstream access token is handed out until this long before it expires.",
    "BACKCHANNEL_LOGOUT_MAX_AGE": (
        "A provider's logout token issued longer ago (`iat`, plus `LEEWAY`) is refused; more than zero "
        "(check `epochauth.E014`)."
    ),
    "LOGOUT_TOKEN_LIFETIME": (
        "As OpenID provider: how long a logout token we send to a relying party's "
        "`backchannel_logout_uri` is valid (`exp` - `iat`; each delivery attempt signs a fresh one)."
    ),
    "LOGOUT_DELIVERY_ATTEMPTS": (
        "As OpenID provider: how often a logout token is POSTed to a relying party that answers 5xx, "
        "429 or not at all before the delivery is given up (any other 4xx: twice)."
    ),
    "LOGOUT_DELIVERY_RETRY_DELAY": (
        "The wait before the second delivery attempt of a logout token; it doubles with each attempt "
        "after that."
    ),
    "STATUS_LIST": (
        "Token Status Lists (draft-ietf-oauth-status-list) of our access tokens, for verifiers that are "
        "not epochauth: `True`, or a dict with `size` (bits per list, a multiple of 8; default "
        "1048576, 128 KiB before compression) and `ttl` (a timedelta: how long a served list is "
        "reused and how long verifiers may cache it; default 5 minutes). Sessions started while it is "
        "on get an index, and their access tokens `status.status_list` `{idx, uri}`; the lists are "
        "served at `/auth/statuslists/<n>`. `ISSUER` must then be an http(s) URL (check "
        "`epochauth.E027`). `None`: off."
    ),
    "SSF_TRANSMITTERS": (
        "Shared Signals (SSF 1.0, CAEP, RISC) receiver: the transmitters whose Security Event Tokens "
        'we accept, a list of dicts with `"issuer"` (an allow-listed issuer: its JWKS verifies the '
        'SETs, its identities are the only ones its events reach), `"token_env"` (the environment '
        "variable holding the bearer token we present to its stream management and poll endpoints), "
        'and optionally `"delivery"` (`"push"`, the default, or `"poll"`), `"audience"` (the `aud` '
        'its SETs must name; default `ISSUER`), `"push_url"` (our push endpoint as the transmitter '
        'reaches it; default `ISSUER` + the path of `epochauth-ssf-push`) and `"events"` (the '
        "event types to request; default every one we act on). See `epochauth_ssf_subscribe` and "
        "`epochauth_ssf_poll`; check `epochauth.E035`."
    ),
    "SSF_MAX_AGE": (
        "A Security Event Token issued longer ago (`iat`, plus `LEEWAY`) is refused, and each `jti` "
        "is remembered this long to refuse a replay; more than zero (check `epochauth.E036`)."
    ),
    "SSF_TRANSMITTER": (
        "The Shared Signals (SSF 1.0, CAEP 1.0) transmitter: `True`, or a dict with `default_subjects` "
        '(`"NONE"`, the default: a new stream tells about the subjects its receiver adds; `"ALL"`: '
        "about every user), `attempts` (push attempts before an event is given up; default 8), "
        "`retry_delay` (a timedelta: the wait before the second push attempt, doubling after; default "
        "30 s) and `min_verification_interval` (a timedelta between two verification events a "
        "receiver may ask for; default 1 minute). Publishes `/.well-known/ssf-configuration` and the "
        "stream management API; receivers are applications whose allowed scopes list `ssf:manage` "
        "(client credentials). Needs `epochauth.oauth`, an asymmetric signing key or an ID-token key, "
        "and an http(s) URL as `ISSUER` (check `epochauth.E037`, `epochauth.E038`). `None`: off."
    ),
    "COMMUNITIES": (
        "Communities (virtual organisations, VOs) on this deployment, by slug: "
        '`{"lhcb": {"name": ..., "issuer": ..., "algorithm": ..., "signing_key": ... or '
        '"signing_key_file": ..., "key_id": ..., "verification_keys": [...], '
        '"identity_providers": [...]}}`. Each has its own issuer (default `<ISSUER>/<slug>`), its '
        "own keys (the site's key options, in lower case; an HS* community without a key gets one "
        "derived from `SECRET_KEY`), JWKS and discovery documents, and the external issuers "
        "(`ISSUERS` names) its users may come from (`None`: any). A token of ours then belongs to "
        "one community: `vo` claim, its issuer, its key; a login selects it with `vo:<slug>`. Users "
        "join communities and groups are tied to one in the admin (checks `epochauth.E029`-`E031`). "
        "Empty: none, every token is the site's."
    ),
    "DEFAULT_COMMUNITY": (
        "The community of a login that names none (`vo:<slug>`) and whose user is in it; `None`: "
        "the user's only community (a login of a user in several must name one)."
    ),
    "ACCEPTED_COMMUNITIES": (
        "The communities whose tokens this service accepts (slugs); `None`: every one, and the "
        "site's tokens without a community. A list: only those communities' tokens."
    ),
}

TIMEDELTA_SETTINGS = (
    "ACCESS_TOKEN_LIFETIME",
    "REFRESH_TOKEN_LIFETIME",
    "REMEMBER_ME_REFRESH_TOKEN_LIFETIME",
    "REFRESH_TOKEN_GRACE_PERIOD",
    "LEEWAY",
    "DPOP_PROOF_LIFETIME",
    "REVOCATION_REFRESH_INTERVAL",
    "REVOCATION_RELOAD_INTERVAL",
    "REVOCATION_WINDOW",
    "EPOCH_CACHE_TIMEOUT",
    "HTTP_TIMEOUT",
    "JWKS_CACHE_MIN",
    "JWKS_CACHE_MAX",
    "JWKS_REFETCH_COOLDOWN",
    "JWKS_MAX_STALENESS",
    "IDENTITY_CACHE_TIMEOUT",
    "BACKCHANNEL_LOGOUT_MAX_AGE",
    "LOGOUT_TOKEN_LIFETIME",
    "LOGOUT_DELIVERY_RETRY_DELAY",
    "TOKEN_MANAGER_MARGIN",
    "SSF_MAX_AGE",
)


class EpochAuthSettings:
    """Attribute access to ``settings.EPOCHAUTH`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cached: set[str] = set()

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, "EPOCHAUTH", {}) or {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Invalid EPOCHAUTH setting: {name!r}")
        value = self.user_settings.get(name, DEFAULTS[name])
        if name in TIMEDELTA_SETTINGS and isinstance(value, int | float):
            value = timedelta(seconds=value)
        self._cached.add(name)
        setattr(self, name, value)
        return value

    def reload(self) -> None:
        for name in self._cached:
            delattr(self, name)
        self._cached.clear()


epochauth_settings = EpochAuthSettings()


#: What each module that holds process state registered with :func:`process_cache`.
_resets: list[Callable[[], None]] = []


def process_cache(reset: Callable[[], None]) -> Callable[[], None]:
    """Register the reset of a module's process cache (beside the cache, as Django's hashers keep
    theirs): it runs when a test changes ``EPOCHAUTH``, ``SECRET_KEY``, ``CACHES`` or
    ``AUTH_USER_MODEL``."""
    _resets.append(reset)
    return reset


def clear_process_caches() -> None:
    """Forget everything epochauth holds in process memory (keys, verified tokens, revocation, issuers)."""
    for reset in _resets:
        reset()


@receiver(setting_changed)
def reload_epochauth_settings(*, setting: str, **kwargs: Any) -> None:
    if setting in ("EPOCHAUTH", "SECRET_KEY", "CACHES", "AUTH_USER_MODEL"):
        epochauth_settings.reload()
        clear_process_caches()
