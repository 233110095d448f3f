"""A small real issuer on loopback, for tokens no real provider would sign (shared by the test modules).

:class:`CraftedIssuer` serves discovery and a JWKS of keys the test holds; with ``oidc=True`` it is
also a login provider: discovery names an authorization and a token endpoint, and the token endpoint
answers each code the test registered in ``codes`` with the ID token the test crafted for it.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms
from jwt.utils import base64url_encode

from tests.idp import DEFAULT_RESOURCE

AUDIENCE = DEFAULT_RESOURCE


def compact(header: dict[str, Any], payload: Any, key: Any = None, alg: str | None = None) -> str:
    """A JWS built by hand: any header, signed with ``key`` using PyJWT's ``alg`` (unsigned without)."""
    return compact_bytes(
        json.dumps(header).encode(), json.dumps(payload).encode(), key, alg or header["alg"]
    )


def compact_bytes(header: bytes, payload: bytes, key: Any = None, alg: str = "") -> str:
    """A JWS of any bytes (another encoding, duplicate names ...), signed like :func:`compact`."""
    signing_input = base64url_encode(header) + b"." + base64url_encode(payload)
    signature = b"" if key is None else get_default_algorithms()[alg].sign(signing_input, key)
    return (signing_input + b"." + base64url_encode(signature)).decode()


def public_jwk(private_key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = (
        RSAAlgorithm
        if alg.startswith(("RS", "PS"))
        else OKPAlgorithm
        if alg in ("EdDSA", "Ed25519")
        else ECAlgorithm
    )
    return {
        **algorithm.to_jwk(private_key.public_key(), as_dict=True),
        "kid": kid,
        "alg": alg,
        "use": "sig",
    }


KEYS: dict[str, Any] = {}


def key(name: str) -> Any:
    """Generated once per session: RSA keys are slow to make."""
    if name not in KEYS:
        if name.startswith("rsa"):
            KEYS[name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif name.startswith("ed448"):
            KEYS[name] = ed448.Ed448PrivateKey.generate()
        elif name.startswith("ed"):
            KEYS[name] = ed25519.Ed25519PrivateKey.generate()
        else:
            KEYS[name] = ec.generate_private_key(
                ec.SECP384R1() if name.endswith("384") else ec.SECP256R1()
            )
    return KEYS[name]


class CraftedIssuer:
    """A real issuer on loopback serving discovery and a JWKS of keys we hold; counts requests per path.

    Misbehaviour on demand: ``status`` (answer every request with it), ``jwks_body`` (raw bytes),
    ``redirect`` (302 to that URL), ``discovery_issuer`` (another ``issuer`` in discovery),
    ``cache_control`` (header on the JWKS), ``jwks_uri`` (another one in discovery), ``jwks_path``
    (where the JWKS is served, and named in discovery; elsewhere 404).

    With ``oidc=True`` discovery also names ``/authorize`` (never fetched: the browser would go
    there) and ``/token``, which answers a code in ``codes`` with that ID token and an access token,
    any other code with 400 ``invalid_grant``; each token request lands in ``token_requests``.
    With ``userinfo`` (claims) set, discovery names ``/userinfo`` too, which answers the access
    tokens ``/token`` gave out with those claims (``userinfo_status``: with that status instead).
    ``token_answer`` (status, body) replaces every answer of ``/token``; ``auth_methods`` goes into
    discovery as ``token_endpoint_auth_methods_supported``.
    """

    def __init__(
        self, keys: dict[str, tuple[Any, str]] | None = None, *, oidc: bool = False
    ) -> None:
        self.keys = (
            keys
            if keys is not None
            else {"rsa-1": (key("rsa-a"), "RS256"), "ec-1": (key("ec-a"), "ES256")}
        )
        self.oidc = oidc
        self.codes: dict[str, str] = {}
        self.token_requests: list[dict[str, Any]] = []
        self.access_tokens: list[str] = []
        self.userinfo: dict[str, Any] | None = None
        self.userinfo_status = 200
        self.token_answer: tuple[int, dict[str, Any]] | None = None
        self.auth_methods: list[str] | None = None
        self.counts: Counter[str] = Counter()
        self.status: int | None = None
        self.jwks_body: bytes | None = None
        self.redirect: str | None = None
        self.discovery_issuer: str | None = None
        self.cache_control: str | None = None
        self.jwks_uri: str | None = None
        self.jwks_path = "/jwks"
        #: Key ids of ``keys`` published without their ``kid`` (as some SciTokens issuers do).
        self.unnamed: set[str] = set()
        #: Serve RFC 8414 metadata (path inserted) instead of OpenID discovery; ``neither``: no metadata.
        self.metadata = "openid"
        #: More documents to serve: path -> (content type, body).
        self.documents: dict[str, tuple[str, bytes]] = {}
        #: More endpoints: "METHOD /path" -> (JSON body or None, Authorization) -> (status, answer);
        #: ``status`` answers them too.
        self.routes: dict[str, Callable[[Any, str | None], tuple[int, Any]]] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, Any]:
        published = [(kid, public_jwk(k, kid, alg)) for kid, (k, alg) in self.keys.items()]
        return {
            "keys": [
                {n: v for n, v in jwk.items() if not (n == "kid" and kid in self.unnamed)}
                for kid, jwk in published
            ]
        }

    def discovery(self) -> dict[str, Any]:
        document = {
            "issuer": self.discovery_issuer or self.issuer,
            "jwks_uri": self.jwks_uri or f"{self.issuer}{self.jwks_path}",
        }
        if self.oidc:
            document["authorization_endpoint"] = f"{self.issuer}/authorize"
            document["token_endpoint"] = f"{self.issuer}/token"
        if self.userinfo is not None:
            document["userinfo_endpoint"] = f"{self.issuer}/userinfo"
        if self.auth_methods is not None:
            document["token_endpoint_auth_methods_supported"] = self.auth_methods
        return document

    def token_response(
        self, form: dict[str, str], authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        """The token endpoint: records the request, answers a registered code once (like a real one)."""
        client = None
        if authorization and authorization.startswith("Basic "):
            client = base64.b64decode(authorization[6:]).decode().partition(":")[::2]
        self.token_requests.append({**form, "basic_auth": client})
        if self.token_answer is not None:
            return self.token_answer
        id_token = self.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or id_token is None:
            return 400, {"error": "invalid_grant"}
        self.access_tokens.append(uuid.uuid4().hex)
        return 200, {
            "access_token": self.access_tokens[-1],
            "id_token": id_token,
            "token_type": "Bearer",
        }

    def userinfo_response(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        if authorization not in [f"Bearer {token}" for token in self.access_tokens]:
            return 401, {"error": "invalid_token"}
        if self.userinfo_status != 200:
            return self.userinfo_status, {"error": "unavailable"}
        return 200, self.userinfo or {}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                issuer.counts[self.path] += 1
                headers = {"Content-Type": "application/json"}
                if issuer.status is not None:
                    status, body = issuer.status, b"{}"
                elif issuer.redirect is not None:
                    status, body, headers = 302, b"", {"Location": issuer.redirect}
                elif self.path == {"openid": "/.well-known/openid-configuration"}.get(
                    issuer.metadata
                ):
                    status, body = 200, json.dumps(issuer.discovery()).encode()
                elif self.path == {"oauth": "/.well-known/oauth-authorization-server"}.get(
                    issuer.metadata
                ):
                    status, body = 200, json.dumps(issuer.discovery()).encode()
                elif self.path == "/userinfo" and issuer.userinfo is not None:
                    status, answer = issuer.userinfo_response(self.headers.get("Authorization"))
                    body = json.dumps(answer).encode()
                elif self.path in issuer.documents:
                    content_type, body = issuer.documents[self.path]
                    status, headers = 200, {"Content-Type": content_type}
                elif self.path == issuer.jwks_path:
                    status, body = 200, issuer.jwks_body or json.dumps(issuer.jwks()).encode()
                    if issuer.cache_control:
                        headers["Cache-Control"] = issuer.cache_control
                else:
                    status, body = 404, b"{}"
                self.send(status, body, headers)

            def do_POST(self) -> None:
                issuer.counts[f"{self.command} {self.path}"] += 1
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                route = issuer.routes.get(f"{self.command} {self.path}")
                if route is not None:
                    status, answer = issuer.status or 0, {}
                    if not status:
                        status, answer = route(
                            json.loads(raw) if raw else None, self.headers.get("Authorization")
                        )
                    body = b"" if answer is None else json.dumps(answer).encode()
                    self.send(status, body, {"Content-Type": "application/json"})
                    return
                if issuer.oidc and self.path == "/token":
                    form = {k: v[0] for k, v in parse_qs(raw).items()}
                    status, answer = issuer.token_response(form, self.headers.get("Authorization"))
                else:
                    status, answer = 404, {}
                headers = {"Content-Type": "application/json", "Cache-Control": "no-store"}
                self.send(status, json.dumps(answer).encode(), headers)

            do_PATCH = do_POST

        return Handler

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Access-token claims (``None`` drops one)."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "sub": "svc-1",
            "aud": AUDIENCE,
            "scope": "servicex",
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        return {k: v for k, v in {**base, **overrides}.items() if v is not None}

    def token(
        self, kid: str = "rsa-1", header: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        """Signed with our key ``kid`` (its alg), ``header`` merged into the JOSE header."""
        private_key, alg = self.keys[kid]
        return compact(
            {"alg": alg, "typ": "at+jwt", "kid": kid, **(header or {})},
            self.claims(**claims),
            private_key,
        )

    def raw_token(self, payload: bytes, kid: str = "rsa-1") -> str:
        """Signed like :meth:`token`, with these exact claims-set bytes."""
        private_key, alg = self.keys[kid]
        header = json.dumps({"alg": alg, "typ": "at+jwt", "kid": kid}).encode()
        return compact_bytes(header, payload, private_key, alg)
