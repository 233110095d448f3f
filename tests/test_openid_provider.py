"""OpenID Provider mode (DOT's ``OIDC_ENABLED`` on epochauth.oauth): ID tokens signed with our keys,
``sid``, userinfo checked by our revocation, RP-initiated logout, the discovery document; and what
ends it all again (epoch bumps, logout-all, the admin, the logout itself)."""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import jwt
import pytest
import requests
from authlib.common.errors import AuthlibBaseError as OAuthError
from authlib.common.security import generate_token
from authlib.integrations.django_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from authlib.oidc.discovery import OpenIDProviderMetadata
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core import checks
from django.test import Client, RequestFactory
from oauth2_provider.models import (
    get_access_token_model,
    get_application_model,
    get_id_token_model,
    get_refresh_token_model,
)

from epochauth.keys import generate_private_key_pem, get_keyring
from epochauth.models import Epoch
from epochauth.revocation import bump_epoch
from epochauth.tokens import CLAIM_TOKEN_FAMILY, mint_access_token
from tests.browser import screenshot
from tests.helpers import database_down, make_user, openid_provider, rsa_pem
from tests.helpers import login as password_login

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "rp-s3cret-" * 5
REDIRECT = "http://127.0.0.1:9/callback"
WIKI_REDIRECT = "http://127.0.0.1:9/wiki/callback"
WIKI_LOGOUT = "http://127.0.0.1:9/wiki/signed-out"
SCOPE = "openid profile email reports:read"
Application = get_application_model()


@pytest.fixture(autouse=True)
def close_client_connections():
    """authlib's sessions are reference cycles: collect them while the live server is up."""
    yield
    gc.collect()


@pytest.fixture
def op(live_server, settings):
    """Our site as an OpenID provider: RS256 keys, DOT's OIDC and RP-initiated logout on."""
    openid_provider(settings, ISSUER=live_server.url)
    return live_server


@cache
def es256_pem() -> str:
    return generate_private_key_pem("ES256")


@pytest.fixture
def alice():
    user = make_user("alice", groups=["physics"])
    user.email, user.first_name, user.last_name = "alice@example.test", "Alice", "Liddell"
    user.save()
    return user


@pytest.fixture
def portal():
    return Application.objects.create(
        name="Portal",
        client_id="portal",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=REDIRECT,
        post_logout_redirect_uris=REDIRECT,
        skip_authorization=True,
    )


@pytest.fixture
def wiki():
    """A second relying party, with its own post-logout redirect URI."""
    return Application.objects.create(
        name="Wiki",
        client_id="wiki",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=WIKI_REDIRECT,
        post_logout_redirect_uris=WIKI_LOGOUT,
        skip_authorization=True,
    )


@pytest.fixture
def service(alice):
    """A client-credentials application owned by alice: its tokens act as her, with no end user."""
    return Application.objects.create(
        name="Service",
        client_id="svc",
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=alice,
    )


def login(
    op, user, scope: str = SCOPE, client_id: str = "portal", redirect: str = REDIRECT
) -> tuple[dict, Client]:
    """A relying party's PKCE code flow with a nonce, in ``user``'s browser: (token response,
    browser)."""
    session = OAuth2Session(
        client_id, SECRET, scope=scope, redirect_uri=redirect, code_challenge_method="S256"
    )
    verifier = generate_token(48)
    url, _ = session.create_authorization_url(
        f"{op.url}/o/authorize/", code_verifier=verifier, nonce="n-0S6"
    )
    browser = Client()
    browser.force_login(user)
    response = browser.get(url.removeprefix(op.url))
    assert response.status_code == 302, response.content
    token = session.fetch_token(
        f"{op.url}/o/token/", authorization_response=response["Location"], code_verifier=verifier
    )
    return dict(token), browser


def verified_id_token(op, id_token: str) -> dict:
    """Verified as a relying party does: the key from our JWKS by ``kid``, the algorithm pinned."""
    jwks = requests.get(f"{op.url}/.well-known/jwks.json", timeout=5).json()
    kid = jwt.get_unverified_header(id_token)["kid"]
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == kid))
    return jwt.decode(id_token, key, algorithms=["RS256"], audience="portal", issuer=op.url)


def userinfo(op, access_token: str) -> requests.Response:
    return requests.get(
        f"{op.url}/o/userinfo/", headers={"Authorization": f"Bearer {access_token}"}, timeout=5
    )


def refresh(op, refresh_token: str) -> requests.Response:
    return requests.post(
        f"{op.url}/o/token/",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=("portal", SECRET),
        timeout=5,
    )


def client_credentials(op, scope: str) -> str:
    response = requests.post(
        f"{op.url}/o/token/",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=("svc", SECRET),
        timeout=5,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def live_refresh_tokens(user) -> int:
    return get_refresh_token_model().objects.filter(user=user, revoked__isnull=True).count()


def assert_ended(op, token: dict) -> None:
    response = userinfo(op, token["access_token"])
    assert response.status_code == 401, response.text
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    assert refresh(op, token["refresh_token"]).json()["error"] == "invalid_grant"


def test_the_id_token_is_signed_with_our_keys_and_names_the_session(op, alice, portal):
    token, _ = login(op, alice)
    claims = verified_id_token(op, token["id_token"])
    assert jwt.get_unverified_header(token["id_token"])["kid"] in {
        k["kid"] for k in requests.get(f"{op.url}/.well-known/jwks.json", timeout=5).json()["keys"]
    }
    assert claims["sub"] == str(alice.pk) and claims["nonce"] == "n-0S6"
    assert claims["preferred_username"] == "alice" and claims["email"] == "alice@example.test"
    access = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["sid"] == access[CLAIM_TOKEN_FAMILY]
    assert get_id_token_model().objects.filter(jti=claims["jti"], user=alice).exists()


def test_a_refreshed_id_token_keeps_the_session(op, alice, portal):
    token, _ = login(op, alice)
    sid = verified_id_token(op, token["id_token"])["sid"]
    new = refresh(op, token["refresh_token"]).json()
    assert verified_id_token(op, new["id_token"])["sid"] == sid


def test_userinfo(op, alice, portal):
    token, _ = login(op, alice)
    response = userinfo(op, token["access_token"])
    assert response.status_code == 200, response.text
    assert response.json() == {
        "sub": str(alice.pk),
        "preferred_username": "alice",
        "name": "Alice Liddell",
        "given_name": "Alice",
        "family_name": "Liddell",
        "email": "alice@example.test",
    }
    # The email scope alone: the profile's claims stay out.
    narrow, _ = login(op, alice, scope="openid email")
    assert userinfo(op, narrow["access_token"]).json() == {
        "sub": str(alice.pk),
        "email": "alice@example.test",
    }


def test_userinfo_refuses_tokens_without_openid_and_garbage(op, alice, portal):
    token, _ = login(op, alice, scope="reports:read")
    assert "id_token" not in token
    # A good token for something else: the client needs another grant (RFC 6750 section 3.1).
    response = userinfo(op, token["access_token"])
    assert response.status_code == 403, response.text
    assert response.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="openid"'
    )
    assert response.json()["error"] == "insufficient_scope"
    for bad in ("garbage", token["access_token"][:-4] + "AAAA"):
        response = userinfo(op, bad)
        assert (
            response.status_code == 401
            and 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        )
    # Revoked stays invalid_token even without openid: no hint that it once was good.
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    response = userinfo(op, token["access_token"])
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_userinfo_has_no_end_user_for_a_client_credentials_token(op, alice, service):
    """A client-credentials token acts as the application's owner, but no one signed in: no claims
    (403), whatever its scope."""
    for scope in ("openid profile email", "reports:read"):
        response = userinfo(op, client_credentials(op, scope))
        assert response.status_code == 403, (scope, response.text)
        assert response.headers["WWW-Authenticate"].startswith('Bearer error="insufficient_scope"')
        assert response.json()["error"] == "insufficient_scope"
        assert "alice" not in response.text


def test_userinfo_with_the_database_down_is_503(op, alice, portal):
    token, _ = login(op, alice)
    client = Client(raise_request_exception=False)
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {token['access_token']}"}
    assert client.get("/o/userinfo/", **bearer).status_code == 200
    with database_down() as attempted:
        response = client.get("/o/userinfo/", **bearer)
    assert attempted, "the test must actually reach the database"
    assert response.status_code == 503, response.content
    assert int(response["Retry-After"]) > 0
    assert response.json()["error"] == "temporarily_unavailable"


def test_userinfo_for_a_user_that_is_gone_is_invalid_token(op, alice, portal):
    """Deleted through Django, the user's epoch ends the token; a row removed behind Django's back
    (raw SQL, a restored backup) leaves a good signature for no one: both are 401."""
    token, _ = login(op, alice)
    ghost = mint_access_token(
        get_user_model()(pk=alice.pk + 1000, username="ghost"), scope="openid"
    )
    get_user_model().objects.filter(pk=alice.pk).delete()
    client = Client(raise_request_exception=False)
    for access_token in (token["access_token"], ghost.token):
        response = client.get("/o/userinfo/", HTTP_AUTHORIZATION=f"Bearer {access_token}")
        assert response.status_code == 401, response.content
        assert 'error="invalid_token"' in response["WWW-Authenticate"]


def test_userinfo_refuses_an_expired_token(op, alice, portal, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 0, "ACCESS_TOKEN_LIFETIME": 1}
    for scope in ("openid", "reports:read"):
        token, _ = login(op, alice, scope=scope)
        time.sleep(1.1)
        response = userinfo(op, token["access_token"])
        assert response.status_code == 401, (scope, response.text)
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_an_epoch_bump_ends_the_login(op, alice, portal):
    token, _ = login(op, alice)
    assert userinfo(op, token["access_token"]).status_code == 200
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert_ended(op, token)


def test_logout_all_ends_the_login(op, alice, portal):
    token, _ = login(op, alice)
    local = password_login(Client(), "alice")
    response = Client().post(
        "/auth/logout-all/", HTTP_AUTHORIZATION=f"Bearer {local['access_token']}"
    )
    assert response.status_code in (200, 204), response.content
    assert_ended(op, token)


def test_logout_with_the_access_token_ends_the_login(op, alice, portal):
    token, _ = login(op, alice)
    other, _ = login(op, alice)
    response = Client().post("/auth/logout/", HTTP_AUTHORIZATION=f"Bearer {token['access_token']}")
    assert response.status_code == 204, response.content
    assert_ended(op, token)
    # Another login of the same user goes on.
    assert userinfo(op, other["access_token"]).status_code == 200


def test_the_admin_ends_the_login(op, alice, portal):
    token, _ = login(op, alice)
    request = RequestFactory().post("/admin/")
    request.user = make_user("root")
    model_admin = admin.site._registry[get_refresh_token_model()]
    model_admin.message_user = lambda *args, **kwargs: None
    model_admin.revoke_tokens(request, get_refresh_token_model().objects.filter(user=alice))
    assert_ended(op, token)


def test_rp_initiated_logout_ends_the_login(op, alice, portal, wiki, service):
    token, browser = login(op, alice)
    at_wiki, _ = login(op, alice, client_id="wiki", redirect=WIKI_REDIRECT)
    service_token = client_credentials(op, "reports:read")
    query = {
        "id_token_hint": token["id_token"],
        "post_logout_redirect_uri": REDIRECT,
        "state": "s1",
    }
    page = browser.get("/o/logout/", query)
    assert page.status_code == 200 and "Sign out of Portal?" in page.content.decode()
    response = browser.post(
        f"/o/logout/?{requests.compat.urlencode(query)}", {**query, "allow": "Logout"}
    )
    assert response.status_code == 302 and response["Location"] == f"{REDIRECT}?state=s1"
    assert "_auth_user_id" not in browser.session
    assert_ended(op, token)
    assert not get_id_token_model().objects.filter(user=alice).exists()
    # Every application the user signed in to with a browser; not her service's own tokens.
    assert userinfo(op, at_wiki["access_token"]).status_code == 401
    whoami = Client().get("/auth/whoami/", HTTP_AUTHORIZATION=f"Bearer {service_token}")
    assert whoami.status_code == 200, whoami.content


def test_a_forged_id_token_hint_is_a_readable_page(op, alice, portal):
    token, browser = login(op, alice)
    forged = jwt.encode(
        {**verified_id_token(op, token["id_token"]), "sub": "1"},
        rsa_pem(1),
        algorithm="RS256",
        headers={"kid": jwt.get_unverified_header(token["id_token"])["kid"]},
    )
    for hint in (forged, "garbage"):
        response = browser.get("/o/logout/", {"id_token_hint": hint})
        assert response.status_code == 400, response.content
        assert "Sign-out failed" in response.content.decode()
    assert userinfo(op, token["access_token"]).status_code == 200


def test_an_id_token_hint_is_no_credential(op, alice, portal, wiki):
    """A logout request from a browser signed in as no one (here: no cookies at all) ends nothing,
    whoever's ID token it brings (RP-Initiated Logout 1.0 section 2: the hint is a hint)."""
    at_portal, _ = login(op, alice)
    at_wiki, _ = login(op, alice, client_id="wiki", redirect=WIKI_REDIRECT)
    hint = {"id_token_hint": at_portal["id_token"]}
    stranger = Client()
    page = stranger.get("/o/logout/", hint)
    # Back to the hint's relying party, as after a logout; its state is passed back.
    back = stranger.get(
        "/o/logout/", {**hint, "post_logout_redirect_uri": REDIRECT, "state": "s1"}
    )
    confirmed = stranger.post("/o/logout/", {**hint, "allow": "Logout"})
    for token in (at_portal, at_wiki):
        assert userinfo(op, token["access_token"]).status_code == 200
    assert live_refresh_tokens(alice) == 2
    assert get_id_token_model().objects.filter(user=alice).count() == 2
    assert page.status_code == 200 and "You are signed out" in page.content.decode()
    assert back.status_code == 302 and back["Location"] == f"{REDIRECT}?state=s1"
    assert confirmed.status_code == 200 and "You are signed out" in confirmed.content.decode()


def test_a_hint_naming_someone_else_signs_out_only_the_browsers_user(op, alice, portal):
    """The page asks, naming who is signed in; confirmed, it ends that user's sign-in, never the
    hint's user's."""
    at_portal, _ = login(op, alice)
    bob = make_user("bob")
    bobs, browser = login(op, bob)
    hint = {"id_token_hint": at_portal["id_token"]}
    page = browser.get("/o/logout/", hint).content.decode()
    response = browser.post("/o/logout/", {**hint, "allow": "Logout"})
    assert userinfo(op, at_portal["access_token"]).status_code == 200
    assert live_refresh_tokens(alice) == 1
    assert "_auth_user_id" not in browser.session
    assert_ended(op, bobs)
    assert "You are signed in as bob" in page
    assert "The application asked to sign out another account" in page
    assert response.status_code == 200 and "You are signed out" in response.content.decode()


def test_the_redirect_must_be_registered_for_the_hints_client(op, alice, portal, wiki):
    """post_logout_redirect_uri is one of the requesting client's (the hint's, or client_id's), never
    another client's (section 3); a refused request signs no one out."""
    token, browser = login(op, alice)
    refused = [
        {"id_token_hint": token["id_token"], "post_logout_redirect_uri": WIKI_LOGOUT},
        {"id_token_hint": token["id_token"], "client_id": "wiki"},
        {"client_id": "portal", "post_logout_redirect_uri": WIKI_LOGOUT},
        {"client_id": "nobody", "post_logout_redirect_uri": WIKI_LOGOUT},
        {"post_logout_redirect_uri": REDIRECT},
    ]
    for query in refused:
        for response in (
            browser.get("/o/logout/", query),
            browser.post("/o/logout/", {**query, "allow": "Logout"}),
        ):
            assert response.status_code == 400, (query, response.content)
            assert "Sign-out failed" in response.content.decode()
    assert "_auth_user_id" in browser.session
    assert userinfo(op, token["access_token"]).status_code == 200
    # client_id alone names the relying party too.
    response = browser.post(
        "/o/logout/",
        {
            "client_id": "wiki",
            "post_logout_redirect_uri": WIKI_LOGOUT,
            "state": "s2",
            "allow": "Logout",
        },
    )
    assert response.status_code == 302 and response["Location"] == f"{WIKI_LOGOUT}?state=s2"
    assert_ended(op, token)


def test_signing_out_takes_the_pages_form(op, alice, portal):
    """A signed-in browser is only signed out by the confirmation page's POST: a GET asks, and a POST
    from elsewhere has no CSRF token."""
    token, _ = login(op, alice)
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(alice)
    hint = {"id_token_hint": token["id_token"]}
    page = browser.get("/o/logout/", hint)
    assert page.status_code == 200 and "Sign out of Portal?" in page.content.decode()
    forged = browser.post("/o/logout/", {**hint, "allow": "Logout"})
    assert forged.status_code == 403
    assert "_auth_user_id" in browser.session
    assert userinfo(op, token["access_token"]).status_code == 200
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]
    signed_out = browser.post(
        "/o/logout/", {**hint, "allow": "Logout", "csrfmiddlewaretoken": csrf}
    )
    assert signed_out.status_code == 200 and "You are signed out" in signed_out.content.decode()
    assert_ended(op, token)


def test_the_consent_page_describes_the_openid_scopes(op, alice, portal):
    portal.skip_authorization = False
    portal.save()
    session = OAuth2Session(
        "portal", SECRET, scope=SCOPE, redirect_uri=REDIRECT, code_challenge_method="S256"
    )
    url, _ = session.create_authorization_url(
        f"{op.url}/o/authorize/", code_verifier=generate_token(48)
    )
    browser = Client()
    browser.force_login(alice)
    page = browser.get(url.removeprefix(op.url)).content.decode()
    for description in (
        "Sign you in with your account here",
        "See your email address",
        "Read the example",
    ):
        assert description in page, page


def test_discovery_names_the_openid_endpoints(op):
    document = requests.get(f"{op.url}/.well-known/openid-configuration", timeout=5).json()
    assert document["issuer"] == op.url
    assert document["userinfo_endpoint"] == f"{op.url}/o/userinfo/"
    assert document["end_session_endpoint"] == f"{op.url}/o/logout/"
    assert document["id_token_signing_alg_values_supported"] == ["RS256", "HS256"]
    assert {"openid", "profile", "email"} <= set(document["scopes_supported"])
    assert "sid" in document["claims_supported"]
    assert document["backchannel_logout_supported"] is True
    assert document["backchannel_logout_session_supported"] is True


def authlib_id_token(op, token: dict, nonce: str = "n-0S6") -> dict:
    """The ID token as Authlib's OpenID client reads it: keys from our JWKS, algorithms from our
    discovery document, its rules for a code flow's ID token (iss, aud, nonce, at_hash, exp)."""
    client = OAuth().register(
        "op",
        client_id="portal",
        client_secret=SECRET,
        server_metadata_url=f"{op.url}/.well-known/openid-configuration",
    )
    return dict(client.parse_id_token(token, nonce=nonce))


@pytest.mark.parametrize("algorithm", ["", "RS256"])
def test_an_es256_site_signs_id_tokens_rs256_with_a_key_of_their_own(
    settings, op, alice, portal, algorithm
):
    """OpenID Connect Core 1.0 section 15.1: RS256, also for an application that registered no
    algorithm (its default); the access tokens keep the ES256 signing key."""
    openid_provider(
        settings,
        ISSUER=op.url,
        ALGORITHM="ES256",
        SIGNING_KEY=es256_pem(),
        ID_TOKEN_SIGNING_KEY=rsa_pem(1),
    )
    portal.algorithm = algorithm
    portal.save()
    keyring = get_keyring()
    token, _ = login(op, alice)
    assert jwt.get_unverified_header(token["id_token"]) == {
        "alg": "RS256",
        "kid": keyring.id_token.kid,
        "typ": "JWT",
    }
    assert jwt.get_unverified_header(token["access_token"])["kid"] == keyring.signing.kid
    for claims in (verified_id_token(op, token["id_token"]), authlib_id_token(op, token)):
        assert claims["sub"] == str(alice.pk) and claims["email"] == "alice@example.test"
    assert userinfo(op, token["access_token"]).status_code == 200
    refreshed = refresh(op, token["refresh_token"]).json()
    assert (
        verified_id_token(op, refreshed["id_token"])["sid"] == authlib_id_token(op, token)["sid"]
    )


def test_an_application_that_chose_hs256_gets_them_signed_with_its_secret(op, alice, portal):
    """OpenID Connect Core 1.0 section 10.1 (DOT's *algorithm* HS256: its secret stored unhashed);
    its ID token still links its tokens and serves as a logout hint."""
    portal.algorithm, portal.hash_client_secret, portal.client_secret = "HS256", False, SECRET
    portal.save()
    token, browser = login(op, alice)
    assert jwt.get_unverified_header(token["id_token"]) == {"alg": "HS256", "typ": "JWT"}
    claims = jwt.decode(token["id_token"], SECRET, algorithms=["HS256"], audience="portal")
    assert claims["sub"] == str(alice.pk) and claims["nonce"] == "n-0S6"
    assert str(get_access_token_model().objects.get(user=alice).id_token.jti) == claims["jti"]
    page = browser.get("/o/logout/", {"id_token_hint": token["id_token"]})
    assert page.status_code == 200 and "Sign out of Portal?" in page.content.decode()


def test_hs256_with_a_hashed_secret_is_an_oauth_error(op, alice, portal):
    """DOT's form refuses it; a row that has it anyway gets an answer, never a 500."""
    portal.algorithm = "HS256"
    portal.save()  # DOT stores the secret hashed
    with pytest.raises(OAuthError) as refused:
        login(op, alice)
    assert refused.value.error == "unauthorized_client"
    assert "stored hashed" in refused.value.description


@pytest.mark.parametrize(
    "site",
    [
        {"ALGORITHM": "RS256"},
        {"ALGORITHM": "ES256", "SIGNING_KEY": "es256", "ID_TOKEN_SIGNING_KEY": "rsa"},
        {"ALGORITHM": "EdDSA", "SIGNING_KEY": "eddsa", "ID_TOKEN_SIGNING_KEY": "rsa"},
        {"ALGORITHM": "HS256", "SIGNING_KEY": "s" * 40, "ID_TOKEN_SIGNING_KEY": "rsa"},
    ],
    ids=["rs256", "es256-and-an-id-token-key", "eddsa-and-an-id-token-key", "hs256-and-one"],
)
def test_the_discovery_document_passes_authlibs_validation(settings, client, site):
    """OpenID Connect Discovery 1.0 section 3 (RS256 included) for each site that is an OpenID
    provider; authlib wants https, as it should."""
    materials = {
        "es256": es256_pem(),
        "eddsa": generate_private_key_pem("EdDSA"),
        "rsa": rsa_pem(1),
    }
    openid_provider(
        settings,
        ISSUER="https://api.example.org",
        **{name: materials.get(value, value) for name, value in site.items()},
    )
    assert not [m for m in checks.run_checks() if m.id.startswith("epochauth.oauth.")]
    document = client.get("/.well-known/openid-configuration").json()
    OpenIDProviderMetadata(document).validate()
    AuthorizationServerMetadata(
        client.get("/.well-known/oauth-authorization-server").json()
    ).validate()
    assert document["id_token_signing_alg_values_supported"] == ["RS256", "HS256"]
    published = {
        key["kid"]: key["alg"] for key in client.get("/.well-known/jwks.json").json()["keys"]
    }
    assert published[get_keyring().id_token.kid] == "RS256"


@pytest.mark.parametrize("algorithm", ["HS256", "ES256", "EdDSA"])
def test_a_site_without_an_rs256_key_is_no_openid_provider(settings, client, algorithm, portal):
    """With DOT's OIDC_ENABLED but no key for RS256 ID tokens: a system check, no OpenID
    configuration, no openid scope; the OAuth server works on (RFC 8414 metadata)."""
    pem = {"HS256": "s" * 40, "ES256": es256_pem(), "EdDSA": generate_private_key_pem("EdDSA")}
    openid_provider(settings, ALGORITHM=algorithm, SIGNING_KEY=pem[algorithm])
    (error,) = [m for m in checks.run_checks() if m.id == "epochauth.oauth.E004"]
    assert algorithm in error.msg and "ID_TOKEN_SIGNING_KEY_FILE" in error.hint
    assert client.get("/.well-known/openid-configuration").status_code == 404
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    assert "openid" not in metadata["scopes_supported"] and "userinfo_endpoint" not in metadata
    browser = Client()
    browser.force_login(make_user("alice"))
    url, _ = OAuth2Session(
        "portal", SECRET, scope="openid", redirect_uri=REDIRECT, code_challenge_method="S256"
    ).create_authorization_url("/o/authorize/", code_verifier=generate_token(48))
    response = browser.get(url)
    assert response.status_code == 302 and "error=invalid_scope" in response["Location"]


def test_the_test_projects_own_configuration_is_no_openid_provider(settings, client):
    """HS256 without OIDC_ENABLED: RFC 8414 metadata only, valid for authlib."""
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUER": "https://api.example.org"}
    assert client.get("/.well-known/openid-configuration").status_code == 404
    AuthorizationServerMetadata(
        client.get("/.well-known/oauth-authorization-server").json()
    ).validate()


@pytest.fixture
def renew_seconds() -> int:
    """The age of its ID token at which the relying party signs the user in again silently."""
    return 15 * 60


@pytest.fixture
def relying_party(op, portal, tmp_path, free_port, renew_seconds):
    """mozilla-django-oidc's relying party (tests/rp_settings.py) in a process of its own on
    127.0.0.1, registered as the portal; the provider is ``op`` on localhost (its own cookies)."""
    url = f"http://127.0.0.1:{free_port}"
    portal.redirect_uris = f"{url}/oidc/callback/"
    portal.post_logout_redirect_uris = f"{url}/"
    portal.save()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.rp_settings",
        "RP_OP_URL": op.url,
        "RP_CLIENT_ID": "portal",
        "RP_CLIENT_SECRET": SECRET,
        "RP_DATABASE": str(tmp_path / "rp.sqlite3"),
        "RP_RENEW_SECONDS": str(renew_seconds),
    }
    root = Path(__file__).resolve().parent.parent
    django = [sys.executable, "-m", "django"]
    subprocess.run([*django, "migrate", "-v0"], env=env, cwd=root, check=True, timeout=120)
    server = subprocess.Popen(
        [*django, "runserver", "--noreload", f"127.0.0.1:{free_port}"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(url, timeout=1)
                break
            except requests.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    tail = server.stderr.read().decode()[-2000:]
                    raise RuntimeError(f"the relying party did not start: {tail}") from None
                time.sleep(0.2)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def rp_tokens(chrome, url: str) -> dict:
    from selenium.webdriver.common.by import By

    chrome.get(f"{url}/tokens/")
    return json.loads(chrome.find_element(By.TAG_NAME, "body").text)


def test_a_relying_party_signs_in_and_out_in_chromium(chrome, op, alice, relying_party):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 30)
    chrome.get(relying_party)
    wait.until(ec.element_to_be_clickable((By.ID, "login"))).click()
    # Our sign-in page (LOGIN_URL) keeps the authorization request in next.
    wait.until(ec.url_contains(f"{op.url}/oidc/login/"))
    chrome.find_element(By.NAME, "username").send_keys("alice")
    chrome.find_element(By.NAME, "password").send_keys("pw")
    chrome.find_element(By.CSS_SELECTOR, "#password-login button").click()
    wait.until(ec.url_to_be(f"{relying_party}/"))
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Signed in as alice@example.test"
    screenshot(chrome, "openid-provider/relying-party-signed-in.png")

    tokens = rp_tokens(chrome, relying_party)
    claims = verified_id_token(op, tokens["id_token"])
    assert claims["sub"] == str(alice.pk) and claims["sid"]
    assert userinfo(op, tokens["access_token"]).json()["email"] == "alice@example.test"

    chrome.get(relying_party)
    wait.until(ec.element_to_be_clickable((By.ID, "logout"))).click()
    wait.until(ec.url_contains(f"{op.url}/o/logout/"))
    assert "Sign out of Portal?" in chrome.find_element(By.TAG_NAME, "h1").text
    chrome.find_element(By.CSS_SELECTOR, '#logout button[name="allow"]').click()
    wait.until(ec.url_to_be(f"{relying_party}/"))
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Signed out"
    assert userinfo(op, tokens["access_token"]).status_code == 401
    assert not get_refresh_token_model().objects.filter(user=alice, revoked__isnull=True).exists()


def sign_in_at(chrome, op, relying_party: str) -> None:
    """Alice signs in at the relying party, with her password on our sign-in page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(chrome, 30)
    chrome.get(f"{relying_party}/oidc/authenticate/")
    wait.until(ec.url_contains(f"{op.url}/oidc/login/"))
    chrome.find_element(By.NAME, "username").send_keys("alice")
    chrome.find_element(By.NAME, "password").send_keys("pw")
    chrome.find_element(By.CSS_SELECTOR, "#password-login button").click()
    wait.until(ec.url_to_be(f"{relying_party}/"))


def test_an_epoch_bump_ends_what_a_relying_party_holds(chrome, op, alice, relying_party):
    sign_in_at(chrome, op, relying_party)
    tokens = rp_tokens(chrome, relying_party)
    assert userinfo(op, tokens["access_token"]).status_code == 200
    bump_epoch(Epoch.Kind.USER, str(alice.pk))
    assert userinfo(op, tokens["access_token"]).status_code == 401


@pytest.mark.parametrize("renew_seconds", [2])
def test_a_relying_party_renews_its_login_silently_until_the_user_signs_out_here(
    chrome, op, alice, relying_party, renew_seconds
):
    """mozilla-django-oidc's ``SessionRefresh``: once its ID token is due, a page load sends the
    browser to /o/authorize/ with ``prompt=none``. Signed in here, it comes back with a code, no
    page shown, and a new ID token of the same sign-in; signed out here, with ``login_required``,
    and the relying party signs the user out too."""
    from selenium.webdriver.common.by import By

    sign_in_at(chrome, op, relying_party)
    first = rp_tokens(chrome, relying_party)
    time.sleep(renew_seconds + 0.5)
    chrome.get(relying_party)  # through /o/authorize/?prompt=none and the callback, back here
    assert chrome.current_url == f"{relying_party}/"
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Signed in as alice@example.test"
    renewed = rp_tokens(chrome, relying_party)
    assert renewed["id_token"] != first["id_token"]
    assert get_id_token_model().objects.filter(user=alice).count() == 2
    before, after = (verified_id_token(op, t["id_token"]) for t in (first, renewed))
    assert after["auth_time"] == before["auth_time"] and after["sub"] == before["sub"]

    chrome.get(f"{op.url}/oidc/logout/")
    chrome.find_element(By.CSS_SELECTOR, "form button").click()
    time.sleep(renew_seconds + 0.5)
    chrome.get(relying_party)
    assert chrome.current_url == f"{relying_party}/"
    assert chrome.find_element(By.TAG_NAME, "h1").text == "Signed out"
    screenshot(chrome, "openid-provider/relying-party-signed-out-by-prompt-none.png")
    assert get_id_token_model().objects.filter(user=alice).count() == 2
