"""Our tokens in the WLCG Common JWT Profile 1.3 as the software of the WLCG reads them: a group
selection in the profile's spelling at every way in and out, host-based authorization, checked by
the SciTokens libraries: the Python ``Enforcer`` (the README's recipe) and scitokens-cpp (the Debian
package; what HTCondor and XRootD verify with), from its key cache and by discovery over https."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import scitokens
from cryptography.hazmat.primitives import serialization
from django.test import Client
from oauth2_provider.models import get_application_model
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from epochauth.authentication import BearerAuthentication
from epochauth.keys import generate_private_key_pem
from epochauth.oauth.models import ensure_cli_application
from epochauth.permissions import HasScope
from tests.helpers import make_user
from tests.loopback_issuer import CraftedIssuer
from tests.test_authorization_matrix import (
    REDIRECT,
    SECRET,
    code_flow,
    device_flow,
    exchange,
    form_post,
)

pytestmark = pytest.mark.django_db

Application = get_application_model()
ISSUER = "https://auth.example.org"
STORAGE = "https://storage.example.org"
SIGNING_KEY = generate_private_key_pem("ES256")
PUBLIC_KEY = (
    serialization.load_pem_private_key(SIGNING_KEY.encode(), None)
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
)
#: The claims of ours a WLCG consumer on the SciTokens library registers validators for (its
#: ``Enforcer`` refuses any claim it has no validator for, the profile's two included).
OUR_CLAIMS = (
    "epoch",
    "global_epoch",
    "group_epoch",
    "group",
    "gid",
    "sid",
    "client_id",
    "token_family",
    "gty",
)


def enforcer() -> scitokens.Enforcer:
    """The ``Enforcer`` as a storage service builds it for our issuer (the README's recipe)."""
    checker = scitokens.Enforcer(ISSUER, audience=STORAGE)
    checker.add_validator("wlcg.ver", lambda value: value.split(".")[0] == "1")
    checker.add_validator("wlcg.groups", lambda value: all(g.startswith("/") for g in value))
    for claim in OUR_CLAIMS:
        checker.add_validator(claim, lambda value: True)
    return checker


def scitoken(token: str) -> scitokens.SciToken:
    """The token as the SciTokens library reads it, its signature checked with our public key."""
    return scitokens.SciToken.deserialize(token, public_key=PUBLIC_KEY)


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


@pytest.fixture
def crafted() -> Any:
    issuer = CraftedIssuer()
    yield issuer
    issuer.stop()


@pytest.fixture
def wlcg(settings: Any, crafted: CraftedIssuer) -> None:
    """We mint in the WLCG profile; an external issuer whose ``groups`` claim names our groups
    (for token exchange); the applications of the flows."""
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUER": ISSUER,
        "ALGORITHM": "ES256",
        "SIGNING_KEY": SIGNING_KEY,
        "AUDIENCE": STORAGE,
        "TOKEN_PROFILE": "wlcg",
        "SCOPES": {"storage.read:/data": "Read the data"},
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [
            {
                "issuer": crafted.issuer,
                "audiences": [crafted.claims()["aud"]],
                "group_claims": ["groups"],
                "group_map": {"physics": "physics"},
            }
        ],
    }
    ensure_cli_application(Application)
    for client_id, grant in (
        ("portal", Application.GRANT_AUTHORIZATION_CODE),
        ("svc", Application.GRANT_CLIENT_CREDENTIALS),
    ):
        Application.objects.create(
            name=client_id,
            client_id=client_id,
            client_secret=SECRET,
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=grant,
            redirect_uris=REDIRECT,
            skip_authorization=True,
            user=make_user(f"{client_id}-owner"),
        )


@pytest.fixture
def alice() -> Any:
    return make_user("alice", groups=["cms", "physics"])


def login(scope: str, **extra: str) -> tuple[int, dict[str, Any]]:
    response = Client().post(
        "/auth/token/",
        {"username": "alice", "password": "pw", "scope": scope, **extra},
        content_type="application/json",
    )
    return response.status_code, response.json()


def refreshed(scope: str, user: Any, settings: Any) -> tuple[int, dict[str, Any]]:
    """A refresh asking for ``scope`` of a code-flow login that selected ``physics`` before the
    site minted in the WLCG profile (its refresh token says ``g:physics``)."""
    wlcg = settings.EPOCHAUTH
    settings.EPOCHAUTH = {**wlcg, "TOKEN_PROFILE": None}
    status, token = code_flow(user, "storage.read:/data g:physics")
    assert status == 200, token
    assert claims_of(token["access_token"])["scope"] == "storage.read:/data g:physics"
    settings.EPOCHAUTH = wlcg
    response = form_post(
        Client(),
        "/o/token/",
        {
            "grant_type": "refresh_token",
            "refresh_token": token["refresh_token"],
            "client_id": "portal",
            "client_secret": SECRET,
            "scope": scope,
        },
    )
    return response.status_code, response.json()


#: The ways to a token with a group selection: each (way, spelling) answers (status, token body).
SELECTION = "storage.read:/data {}"


def obtain(way: str, selection: str, crafted: CraftedIssuer, user: Any, settings: Any) -> Any:
    scope = SELECTION.format(selection)
    if way == "login":
        status, body = login(scope)
        return status, body.get("access_token")
    if way == "device":
        return device_flow(user, scope)
    if way == "code":
        status, body = code_flow(user, scope)
        return status, body.get("access_token")
    if way == "exchange":
        subject = crafted.token(sub="alice-at-ext", scope="storage.read:/data", groups=["physics"])
        return exchange(Application.objects.get(client_id="svc"), subject, scope)
    status, body = refreshed(scope, user, settings)
    return status, body.get("access_token")


WAYS = ["login", "device", "code", "exchange", "refresh"]
SPELLINGS = ["g:physics", "wlcg.groups:/physics"]


@pytest.mark.parametrize("selection", SPELLINGS)
@pytest.mark.parametrize("way", WAYS)
def test_a_group_selection_is_issued_in_the_wlcg_spelling(
    wlcg, alice, crafted, settings, way, selection
):
    """Profile 1.3 section 3.1: ``wlcg.groups:/physics`` in ``scope``, ``/physics`` first in
    ``wlcg.groups``; the Enforcer reads the token (``g:physics``, a relative path to it, made it
    refuse the whole token)."""
    status, token = obtain(way, selection, crafted, alice, settings)
    assert status == 200, token
    checker = enforcer()
    # The ACLs of the whole token: the Enforcer reads every scope (test() stops at the first match).
    assert ("storage.read", "/data") in checker.generate_acls(scitoken(token))
    assert checker.test(scitoken(token), "storage.read", "/data/run1"), checker.last_failure
    assert not checker.test(scitoken(token), "storage.read", "/etc")
    claims = claims_of(token)
    assert claims["scope"].split() == ["storage.read:/data", "wlcg.groups:/physics"]
    assert claims["wlcg.groups"][0] == "/physics" and claims["group"] == "physics"
    assert claims["wlcg.ver"] == "1.0"


def test_a_login_selection_leads_wlcg_groups_and_is_one_selection(wlcg, alice):
    """The ``group`` field and either spelling in ``scope`` are one selection; the other groups
    follow the selected one in ``wlcg.groups`` (section 3.1: the defaults after the requested)."""
    for extra in ({"group": "physics"}, {"group": "physics", "scope": "g:physics"}):
        status, body = login(**{"scope": "", **extra})
        assert status == 200, body
        claims = claims_of(body["access_token"])
        assert claims["scope"] == body["scope"] == "wlcg.groups:/physics"
        assert claims["wlcg.groups"] == ["/physics", "/cms"]
    status, body = login("g:physics wlcg.groups:/physics storage.read:/data")
    assert status == 200, body
    assert body["scope"] == "wlcg.groups:/physics storage.read:/data"
    for refused, why in (
        ("g:physics wlcg.groups:/cms", "Select at most one group"),
        ("wlcg.groups:/chemistry", "You are not a member of that group"),
        ("wlcg.groups:/", "Unknown scope: wlcg.groups:/"),
    ):
        status, body = login(refused)
        assert (status, body["error"], body["error_description"]) == (400, "invalid_scope", why)
    status, body = login("wlcg.groups:/cms", group="physics")
    assert (status, body["error"]) == (400, "invalid_scope")


def test_without_the_profile_the_wlcg_spelling_is_taken_and_g_issued(wlcg, alice, settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_PROFILE": None}
    status, token = device_flow(alice, "storage.read:/data wlcg.groups:/physics")
    assert status == 200, token
    claims = claims_of(token)
    assert claims["scope"] == "storage.read:/data g:physics" and claims["group"] == "physics"
    status, body = login("wlcg.groups:/physics")
    assert status == 200 and claims_of(body["access_token"])["group"] == "physics"
    assert body["scope"] == "g:physics"


def test_an_application_allowed_one_group_is_allowed_it_in_either_spelling(wlcg, alice):
    from epochauth.oauth.models import AllowedScopes

    AllowedScopes.objects.create(
        application=Application.objects.get(client_id="portal"),
        scopes="storage.read:/data g:physics",
    )
    assert code_flow(alice, "storage.read:/data wlcg.groups:/physics")[0] == 200
    assert code_flow(alice, "storage.read:/data wlcg.groups:/cms")[0] == 400


def test_an_exchange_carries_a_subject_selection_only_of_a_group_it_grants(wlcg, crafted):
    """Not asked for, an IAM token's own ``wlcg.groups:/<group>`` selects that group here only if
    the token grants it; a group of the issuer's namespace is dropped, not an error."""
    svc = Application.objects.get(client_id="svc")
    for carried, expected in (
        ("wlcg.groups:/physics", "storage.read:/data wlcg.groups:/physics"),
        ("wlcg.groups:/indigo-dc/xfers", "storage.read:/data"),
    ):
        subject = crafted.token(
            sub="alice-at-ext", scope=f"storage.read:/data {carried}", groups=["physics"]
        )
        status, token = exchange(svc, subject, "")  # no scope asked for: the subject token's
        assert status == 200
        assert claims_of(token)["scope"] == expected
    # Asked for, a group the subject token does not grant here is refused.
    assert exchange(svc, subject, "wlcg.groups:/indigo-dc/xfers")[0] == 400


# -- host-based authorization (profile 1.3 section 2.2.4) ------------------------------------------

HOST = "host:xfer.example.org"


def host_application(client_id: str = HOST, allowed: str | None = "host.auth") -> Any:
    """A confidential client-credentials application, marked for ``host.auth`` by the admin
    (its allowed scopes name it), owned by ``svc-owner``."""
    from django.contrib.auth import get_user_model

    from epochauth.oauth.models import AllowedScopes

    application = Application.objects.create(
        name=client_id,
        client_id=client_id,
        client_secret=SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
        user=get_user_model().objects.get(username="svc-owner"),
    )
    if allowed is not None:
        AllowedScopes.objects.create(application=application, scopes=allowed)
    return application


def client_credentials_body(client_id: str, scope: str, **headers: str) -> tuple[int, Any]:
    data = {"grant_type": "client_credentials", "scope": scope}
    if not headers:
        data.update(client_id=client_id, client_secret=SECRET)
    response = form_post(Client(), "/o/token/", data, **headers)
    return response.status_code, response.json()


def test_a_host_token_names_the_host_and_its_owner_stands_behind_it(wlcg):
    """The client-credentials token of an application marked for ``host.auth`` whose client id is
    ``host:<fqdn>``: ``sub`` is the host, ``host.auth`` in ``scope``; the Enforcer grants
    ``host.auth``; we accept it as the owner's, whose logout-all ends it."""
    import base64

    from epochauth.models import Epoch
    from epochauth.revocation import bump_epoch

    host_application()
    basic = base64.b64encode(f"host%3Axfer.example.org:{SECRET}".encode()).decode()
    for headers in ({}, {"HTTP_AUTHORIZATION": f"Basic {basic}"}):  # RFC 6749 section 2.3.1
        status, body = client_credentials_body(HOST, "host.auth", **headers)
        assert status == 200, body
    token = body["access_token"]
    claims = claims_of(token)
    owner = Application.objects.get(client_id=HOST).user
    assert (claims["sub"], claims["scope"], claims["owner"]) == (HOST, "host.auth", str(owner.pk))
    assert claims["gty"] == "client_credentials" and claims["wlcg.ver"] == "1.0"
    checker = enforcer()
    checker.add_validator("owner", lambda value: True)
    assert checker.test(scitoken(token), "host.auth"), checker.last_failure
    assert host_only(token).data == {"user": owner.pk, "subject": HOST}
    bump_epoch(Epoch.Kind.USER, str(owner.pk), reason="test: logout-all")
    assert host_only(token).status_code == 401


class HostOnly(APIView):
    """An API that a host token opens (``HasScope``), as a service of ours would guard it."""

    authentication_classes = (BearerAuthentication,)
    permission_classes = (HasScope,)
    required_scopes = ("host.auth",)

    def get(self, request: Any) -> Response:
        return Response({"user": request.user.pk, "subject": request.auth.subject})


def host_only(token: str) -> Any:
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {token}")
    return HostOnly.as_view()(request)


def test_host_auth_is_never_a_scope_a_user_or_another_application_obtains(wlcg, alice, crafted):
    """A privileged capability: only the client-credentials grant of an application marked for it
    whose client id names a host; never a user's login, device or code flow, never an exchange."""
    host_application("jobs")  # marked, but its client id names no host
    host_application("host:nodots")
    host_application("host:other.example.org", allowed="storage.read:/data")  # not marked
    assert client_credentials_body("svc", "host.auth")[0] == 400  # no allowed-scopes row at all
    assert client_credentials_body("host:other.example.org", "host.auth")[0] == 400
    for client_id in ("jobs", "host:nodots"):
        status, body = client_credentials_body(client_id, "host.auth")
        assert (status, body["error"]) == (400, "invalid_scope"), body
        assert "host:<fully qualified domain name>" in body["error_description"]
    status, body = login("host.auth")
    assert (status, body["error"]) == (400, "invalid_scope")
    assert device_flow(alice, "host.auth")[0] == 400
    assert code_flow(alice, "host.auth")[0] == 400
    subject = crafted.token(sub="alice-at-ext", scope="storage.read:/data host.auth")
    svc = Application.objects.get(client_id="svc")
    assert exchange(svc, subject, "host.auth")[0] == 400
    status, token = exchange(svc, subject, "")
    assert status == 200 and claims_of(token)["scope"] == "storage.read:/data"


# -- scitokens-cpp: what HTCondor and XRootD verify tokens with -------------------------------------

SCITOKENS_CPP = ("scitokens-verify", "scitokens-test-access", "scitokens-list-access")


def _check_scitokens_cpp() -> None:
    for program in SCITOKENS_CPP:
        if shutil.which(program) is None:
            raise FileNotFoundError(program)


@pytest.fixture
def scitokens_cpp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The Debian package scitokens-cpp (.ci/run installs it), its key cache under ``tmp_path``
    (``$XDG_CACHE_HOME/scitokens/scitokens_cpp.sqllite``): the cache file it reads."""
    from tests.conftest import service_required

    service_required("scitokens-cpp (Debian package scitokens-cpp)", _check_scitokens_cpp)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scitokens" / "scitokens_cpp.sqllite"


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def seed_key_cache(cache: Path, issuer: str, jwks: dict[str, Any]) -> None:
    """What scitokens-cpp keeps of an issuer after discovery (its ``keycache`` table: the JWKS, when
    to look again, when it expires): here the JWKS we serve, so that it fetches nothing."""
    cache.parent.mkdir(parents=True)
    now = int(time.time())
    entry = {"jwks": jwks, "next_update": now + 3600, "expires": now + 7200}
    with closing(sqlite3.connect(cache)) as db, db:
        db.execute(
            "CREATE TABLE keycache (issuer text UNIQUE PRIMARY KEY NOT NULL, keys text NOT NULL)"
        )
        db.execute("INSERT INTO keycache VALUES (?, ?)", (issuer, json.dumps(entry)))


def test_scitokens_cpp_verifies_and_enforces_our_tokens(wlcg, alice, scitokens_cpp):
    """Our JWKS in scitokens-cpp's key cache (as discovery would leave it; a non-https issuer is
    never fetched by it): it verifies our WLCG token, group selection and all, and its ``Enforcer``
    (in its default mode, which maps ``storage.read`` to ``read``) authorizes by path and audience."""
    seed_key_cache(scitokens_cpp, ISSUER, Client().get("/.well-known/jwks.json").json())
    status, body = login("storage.read:/data wlcg.groups:/physics")
    assert status == 200, body
    token = body["access_token"]
    for profile in ((), ("--profile", "wlcg")):
        verified = run("scitokens-verify", *profile, token)
        assert verified.returncode == 0, verified.stdout + verified.stderr
    allowed = run("scitokens-test-access", token, ISSUER, STORAGE, "read", "/data/run1/f.root")
    assert allowed.returncode == 0 and "Access test successful" in allowed.stdout, allowed.stdout
    for authz, path, audience in (
        ("read", "/etc/passwd", STORAGE),
        ("write", "/data/run1/f.root", STORAGE),
        ("read", "/data/run1/f.root", "https://other.example.org"),
    ):
        refused = run("scitokens-test-access", token, ISSUER, audience, authz, path)
        assert refused.returncode == 1 and "Access test failed" in refused.stdout, refused.stdout
    acls = run("scitokens-list-access", token, ISSUER, STORAGE)
    assert acls.returncode == 0 and "read" in acls.stdout and "/data" in acls.stdout, acls.stdout
    # A token of another key: refused.
    other = generate_private_key_pem("ES256")
    forged = jwt.encode(claims_of(token), other, "ES256", headers=jwt.get_unverified_header(token))
    assert run("scitokens-verify", forged).returncode == 1


def _check_private_mount_namespace() -> None:
    """A mount namespace of our own (root): there a test CA can stand in for the system's bundle."""
    if os.geteuid() != 0:
        raise PermissionError("not root")
    result = run("unshare", "--mount", "--propagation", "private", "true")
    if result.returncode != 0:
        raise PermissionError(result.stderr.strip())


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a certificate it signed for 127.0.0.1: (CA, certificate, key) PEM files."""
    from datetime import UTC, datetime, timedelta
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.now(UTC)
    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca = (
        x509.CertificateBuilder(
            issuer_name=name("epochauth test CA"), subject_name=name("epochauth test CA")
        )
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    server = (
        x509.CertificateBuilder(issuer_name=ca.subject, subject_name=name("127.0.0.1"))
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    for path, data in zip(
        paths,
        (
            ca.public_bytes(serialization.Encoding.PEM),
            server.public_bytes(serialization.Encoding.PEM),
            server_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        strict=True,
    ):
        path.write_bytes(data)
    return paths


class Discovery(ThreadingHTTPServer):
    """Our discovery documents over HTTPS, as our views answered them (``documents``: path ->
    (status, body)); each path it was asked for lands in ``asked``."""

    def __init__(self, certificate: Path, key: Path) -> None:
        self.documents: dict[str, tuple[int, bytes]] = {}
        self.asked: list[str] = []
        self.ca: Path | None = None
        served = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                served.asked.append(self.path)
                status, body = served.documents.get(self.path, (404, b"{}"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        super().__init__(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certificate, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.daemon_threads = True
        self.url = f"https://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture
def discovery(wlcg: None, settings: Any, tmp_path: Path) -> Iterator[Discovery]:
    """We are the issuer at an https URL, where our discovery documents are served with a
    certificate of a test CA (``discovery.ca``)."""
    ca, certificate, key = tls_files(tmp_path)
    front = Discovery(certificate, key)
    front.ca = ca
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUER": front.url}
    for path in (
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
    ):
        response = Client().get(path)
        front.documents[path] = (response.status_code, response.content)
    yield front
    front.shutdown()
    front.server_close()


def test_scitokens_cpp_discovers_our_keys_over_https(discovery, alice, scitokens_cpp):
    """The whole way HTCondor and XRootD go: scitokens-cpp reads our metadata at the issuer (https
    only), then the JWKS it names, and verifies. It trusts the system's CA bundle only (libcurl; no
    setting for another one): the test CA is bound over that bundle in a mount namespace of its own."""
    from tests.conftest import service_required

    service_required(
        "a private mount namespace (unshare, as root)", _check_private_mount_namespace
    )
    status, body = login("storage.read:/data g:physics")
    assert status == 200, body
    token = body["access_token"]
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    verified = run(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        f'mount --bind "$1" {bundle} && exec scitokens-test-access "$2" "$3" "$4" read /data/f',
        "sh",
        str(discovery.ca),
        token,
        discovery.url,
        STORAGE,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "Access test successful" in verified.stdout
    assert "/.well-known/jwks.json" in discovery.asked, discovery.asked
    # It keeps the keys it fetched for the issuer: the next verification fetches nothing.
    asked = len(discovery.asked)
    assert run("scitokens-verify", token).returncode == 0
    assert len(discovery.asked) == asked


def test_a_wlcg_issuer_publishes_its_metadata_at_openid_configuration(wlcg, settings):
    """Profile 1.3 section 4.2.1: a WLCG issuer's metadata, ``jwks_uri`` included, at
    ``/.well-known/openid-configuration`` (the SciTokens library reads no other path). Not being an
    OpenID provider (ES256 only: no RS256 key for ID tokens), it publishes its RFC 8414 document
    there, which promises no ID token; without the profile, nothing."""
    response = Client().get("/.well-known/openid-configuration")
    assert response.status_code == 200, response.content
    document = response.json()
    assert document == Client().get("/.well-known/oauth-authorization-server").json()
    assert document["issuer"] == ISSUER
    assert document["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert "id_token_signing_alg_values_supported" not in document
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "TOKEN_PROFILE": None}
    assert Client().get("/.well-known/openid-configuration").status_code == 404


def readme_enforcer_block() -> str:
    """The README's code for the Python ``Enforcer`` (section "WLCG and SciTokens")."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    found = [block for block in blocks if "scitokens.Enforcer(" in block]
    assert len(found) == 1, "README.md: no (or more than one) Enforcer example"
    return found[0]


def test_the_readmes_enforcer_accepts_our_wlcg_token_with_a_group(
    discovery, alice, tmp_path, monkeypatch
):
    """The README's ``wlcg_enforcer`` as written, our issuer's URL put in: the SciTokens library
    discovers our keys over https (Python trusts ``SSL_CERT_FILE``) and its ``Enforcer`` accepts a
    token that selected a group."""
    monkeypatch.setenv("SSL_CERT_FILE", str(discovery.ca))
    # Python 3.12+ builds urllib's shared opener's TLS context once, at its first urlopen: a fresh
    # one reads SSL_CERT_FILE (monkeypatch puts the process's own back afterwards).
    monkeypatch.setattr(urllib.request, "_opener", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    status, body = login("storage.read:/data g:physics")
    assert status == 200, body
    code = readme_enforcer_block().replace("https://auth.example.org", discovery.url)
    assert STORAGE in code
    namespace: dict[str, Any] = {"bearer": body["access_token"]}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    enforcer = namespace["enforcer"]
    token = namespace["token"]
    assert ("storage.read", "/data") in enforcer.generate_acls(token)
    assert not enforcer.test(token, "storage.read", "/etc/passwd")
