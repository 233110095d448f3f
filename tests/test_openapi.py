"""OpenAPI (drf-spectacular): our authentication resolves to security schemes, HasScope views list
their scopes, and the document of the test project is a valid OpenAPI 3 document."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from django.core.management import call_command
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from epochauth import openapi
from tests.helpers import login, make_user


def schema(tmp_path: Path) -> dict[str, Any]:
    """``manage.py spectacular --validate --fail-on-warn``: any unresolved authenticator or view fails."""
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    document = yaml.safe_load(out.read_text())
    validate(document)
    return document


def security(
    document: dict[str, Any], path: str, method: str = "get"
) -> list[dict[str, list[str]]]:
    return document["paths"][path][method]["security"]


def test_bearer_and_oauth2_schemes(tmp_path):
    document = schema(tmp_path)
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from POST /auth/token/ (or from an allow-listed OpenID issuer).",
    }
    flows = schemes["oauth2"]["flows"]
    assert flows["authorizationCode"]["authorizationUrl"] == "/o/authorize/"
    assert (
        flows["authorizationCode"]["tokenUrl"]
        == flows["clientCredentials"]["tokenUrl"]
        == "/o/token/"
    )
    # a service scope (the Token Manager's, WLCG host.auth, ssf:manage; not in SCOPES) only where
    # it is granted
    assert flows["clientCredentials"]["scopes"] == {
        "reports:read": "Read the example reports",
        "tokenmanager": "Obtain users' upstream tokens",
        "host.auth": "Act as the host the application's client id names",
        "ssf:manage": "Manage shared signals streams as a receiver",
    }
    assert flows["authorizationCode"]["scopes"] == {"reports:read": "Read the example reports"}
    assert schemes["cookieAuth"]["in"] == "cookie"


def test_has_scope_views_show_their_scopes(tmp_path):
    document = schema(tmp_path)
    assert security(document, "/api/reports/") == [
        {"bearer": []},
        {"oauth2": ["reports:read"]},
        {"cookieAuth": []},
    ]
    assert {"oauth2": []} in security(document, "/api/hello/")


def test_any_scope_is_one_requirement_per_scope():
    from rest_framework.views import APIView

    from epochauth.permissions import HasAnyScope

    class Either(APIView):
        permission_classes = [HasAnyScope]
        required_scopes = ["a", "b"]

    assert openapi.required_scope_sets(Either()) == [["a"], ["b"]]


def test_token_endpoints_are_described(tmp_path):
    document = schema(tmp_path)
    login = document["paths"]["/auth/token/"]["post"]
    body = login["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body == "#/components/schemas/Login"
    assert set(login["responses"]) == {"200", "400", "401"}
    assert "security" not in login or login["security"] in ([], [{}])
    token_response = document["components"]["schemas"]["TokenResponse"]["properties"]
    assert {"access_token", "refresh_token", "expires_in"} <= set(token_response)
    assert set(document["paths"]["/auth/logout-all/"]["post"]["responses"]) >= {"204", "401"}
    assert "/oidc/backchannel-logout/" in document["paths"]


@pytest.mark.django_db
def test_token_answers_match_the_document(tmp_path, client):
    """What login, refresh and renew answer is what the document describes, every member required
    there present (and the user, groups and group members among them)."""
    document = schema(tmp_path)
    components = document["components"]["schemas"]
    described = components["TokenResponse"]
    assert {"user", "groups", "group"} <= set(described["required"])
    assert set(components["TokenUser"]["required"]) == {"id", "username"}
    validator = OAS30Validator(
        {"$ref": "#/components/schemas/TokenResponse", "components": document["components"]}
    )

    make_user("alice", groups=["operators"])
    body = login(client, "alice", group="operators")
    refreshed = client.post(
        "/auth/token/refresh/", {"refresh_token": body["refresh_token"]}, "application/json"
    ).json()
    renewed = client.post(
        "/auth/token/renew/", HTTP_AUTHORIZATION=f"Bearer {refreshed['access_token']}"
    ).json()
    for answer in (body, refreshed, renewed, login(client, "alice")):
        validator.validate(answer)
        assert set(answer) <= set(described["properties"])


def test_without_the_oauth_server_only_bearer(tmp_path, monkeypatch):
    monkeypatch.setattr(openapi, "oauth_server_installed", lambda: False)
    document = schema(tmp_path)
    assert set(document["components"]["securitySchemes"]) == {"bearer", "cookieAuth"}
    assert security(document, "/api/reports/") == [{"bearer": []}, {"cookieAuth": []}]


@pytest.mark.django_db
def test_the_demo_serves_the_document_and_swagger_ui(client):
    document = client.get("/api/schema/?format=json")
    assert document.status_code == 200
    assert document.json()["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert b"swagger-ui" in page.content and b"/api/schema/" in page.content


@pytest.mark.django_db(transaction=True)
def test_the_demos_swagger_ui_works_offline(live_server):
    """Its scripts, stylesheet and icon come from the test project (drf-spectacular-sidecar), not a CDN."""
    page = requests.get(f"{live_server.url}/api/docs/", timeout=10)
    assert page.status_code == 200
    assert "://" not in page.text and 'src="//' not in page.text  # no other host, any scheme
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {asset.rsplit(".", 1)[-1] for asset in assets} == {"png", "css", "js"}, assets
    for asset in assets:
        assert asset.startswith("/static/drf_spectacular_sidecar/"), asset
        served = requests.get(f"{live_server.url}{asset}", timeout=10)
        assert served.status_code == 200, asset
        assert served.content, asset
