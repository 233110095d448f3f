"""Managing external issuers: the Issuer admin, the ``epochauth_issuer`` command and the ISSUERS checks."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.checks import run_checks
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client

from epochauth.checks import check_issuer_rows, check_issuers
from epochauth.issuers import IssuerConfig
from epochauth.models import Issuer
from tests.idp import DEFAULT_RESOURCE

pytestmark = pytest.mark.django_db

SECRET_VALUE = "s3cr3t-value-never-shown"


def bearer(token: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def hello(client: Any, token: str) -> int:
    return client.get("/api/hello/", **bearer(token)).status_code


def run(*args: str) -> str:
    out = StringIO()
    call_command("epochauth_issuer", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def loopback_allowed(settings: Any) -> None:
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}


@pytest.fixture
def admin_client() -> Client:
    client = Client()
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


@pytest.fixture
def idp_issuer(idp_stats_reset: Any, loopback_allowed: None) -> Issuer:
    return Issuer.objects.create(
        issuer=idp_stats_reset.issuer, audiences=[DEFAULT_RESOURCE], required_scopes=["servicex"]
    )


def run_action(admin_client: Client, action: str, issuers: list[Issuer]) -> str:
    response = admin_client.post(
        "/admin/epochauth/issuer/",
        {"action": action, "_selected_action": [str(i.pk) for i in issuers]},
        follow=True,
    )
    assert response.status_code == 200
    return response.content.decode()


# -- admin -------------------------------------------------------------------------------------


def test_issuer_pages_load_for_a_superuser(admin_client, monkeypatch):
    monkeypatch.setenv("IAM_SECRET", SECRET_VALUE)
    row = Issuer.objects.create(
        issuer="https://iam.example.org/", client_id="our-app", client_secret_env="IAM_SECRET"
    )
    for url in (
        "/admin/epochauth/issuer/",
        "/admin/epochauth/issuer/add/",
        f"/admin/epochauth/issuer/{row.pk}/change/",
    ):
        response = admin_client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert SECRET_VALUE not in html
    assert "IAM_SECRET" in html  # the change page names the variable, never its value
    assert "https://wlcg.cern.ch/jwt/v1/any" in html


def test_issuer_can_be_added_in_the_admin(admin_client):
    response = admin_client.post(
        "/admin/epochauth/issuer/add/",
        {
            "issuer": "https://iam.example.org/",
            "enabled": "on",
            "audiences": '["https://api.example.org"]',
            "required_scopes": '["storage.read:/"]',
            "algorithms": '["RS256", "ES256"]',
            "auto_provision": "on",
            "username_claim": "preferred_username",
            "group_claims": '["wlcg.groups", "eduperson_entitlement"]',
            "group_map": '{"/cms/ops": "cms-operators"}',
            "group_prefix": "cms:",
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    row = Issuer.objects.get()
    config = row.config()
    assert config.audiences == ("https://api.example.org",)
    assert config.required_scopes == ("storage.read:/",)
    assert config.group_claims == ("wlcg.groups", "eduperson_entitlement")
    assert config.group_map == (("/cms/ops", "cms-operators"),)
    assert config.group_prefix == "cms:"
    assert config.accepted_audiences == ["https://api.example.org"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"issuer": "http://iam.example.org/"}, "http"),
        (
            {"issuer": "http://127.0.0.1:9/"},
            "http",
        ),  # loopback, but ALLOW_LOOPBACK_HTTP_ISSUERS is off
        ({"algorithms": '["HS256"]'}, "asymmetric"),
        ({"algorithms": '["none"]'}, "asymmetric"),
        ({"algorithms": "[]"}, "This field is required"),
        ({"audiences": '"https://api.example.org"'}, "list of strings"),
        ({"accept_any_audience": "on"}, "An any-audience belongs to a token profile"),
        ({"profile": "jwt"}, "Select a valid choice"),
        ({"group_map": '["/cms"]'}, "Claim values to group names"),
        ({"group_map": '{"/cms": 7}'}, "Claim values to group names"),
    ],
)
def test_admin_refuses_bad_issuers(admin_client, settings, change, field):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": False}
    data = {
        "issuer": "https://iam.example.org/",
        "audiences": "[]",
        "required_scopes": "[]",
        "algorithms": '["RS256"]',
        "username_claim": "preferred_username",
        "group_claims": "[]",
        "group_map": "{}",
        **change,
    }
    response = admin_client.post("/admin/epochauth/issuer/add/", data)
    assert response.status_code == 200
    assert field in response.content.decode()
    assert not Issuer.objects.exists()


def test_admin_disable_stops_tokens_at_once_and_enable_restores(
    client, admin_client, idp, idp_issuer, django_capture_on_commit_callbacks
):
    token = idp.client_credentials_token()
    assert hello(client, token) == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert "Disabled 1 issuer." in run_action(admin_client, "disable", [idp_issuer])
    idp_issuer.refresh_from_db()
    assert not idp_issuer.enabled
    response = client.get("/api/hello/", **bearer(token))
    assert response.status_code == 401
    assert "issuer is not accepted" in response["WWW-Authenticate"]
    with django_capture_on_commit_callbacks(execute=True):
        assert "Enabled 1 issuer." in run_action(admin_client, "enable", [idp_issuer])
    assert hello(client, token) == 200


def test_admin_refresh_keys_action(admin_client, idp, idp_issuer, free_port):
    unreachable = Issuer.objects.create(issuer=f"http://127.0.0.1:{free_port}")
    html = run_action(admin_client, "refresh_keys", [idp_issuer, unreachable])
    assert f"Fetched {len(idp.jwks()['keys'])} keys of {idp.issuer}." in html
    assert f"Could not fetch the keys of http://127.0.0.1:{free_port}." in html


def test_admin_needs_staff_for_issuers():
    get_user_model().objects.create_user("alice", password="pw")
    client = Client()
    client.login(username="alice", password="pw")
    assert client.get("/admin/epochauth/issuer/").status_code == 302


# -- epochauth_issuer --------------------------------------------------------------------------


def test_add_with_every_option():
    Group.objects.create(name="external")
    output = run(
        "add",
        "https://iam.example.org/",
        *("--audience", "https://api.example.org", "--audience", "https://other.example.org"),
        *("--profile", "wlcg", "--any-audience"),
        *("--scope", "storage.read:/", "--scope", "compute.read"),
        *("--algorithm", "ES256", "--algorithm", "EdDSA"),
        "--no-provision",
        *("--group-claim", "wlcg.groups", "--group-claim", "groups"),
        *("--group-map", "/cms/ops=cms-operators", "--group-map", "urn:x:role=admin=cms-admins"),
        *("--group-prefix", "cms:"),
        "--no-mirror-groups",
        *("--default-group", "external"),
        *("--username-claim", "email"),
        *("--slug", "iam", "--display-name", "Our IAM"),
        *("--client-id", "our-app", "--client-secret-env", "IAM_SECRET"),
    )
    assert output == "added https://iam.example.org/\n"
    config = Issuer.objects.get().config()
    assert config == IssuerConfig(
        issuer="https://iam.example.org/",
        audiences=("https://api.example.org", "https://other.example.org"),
        profile="wlcg",
        accept_any_audience=True,
        required_scopes=("storage.read:/", "compute.read"),
        algorithms=frozenset({"ES256", "EdDSA"}),
        auto_provision=False,
        default_groups=("external",),
        group_claims=("wlcg.groups", "groups"),
        group_map=(("/cms/ops", "cms-operators"), ("urn:x:role=admin", "cms-admins")),
        group_prefix="cms:",
        mirror_groups=False,
        username_claim="email",
        slug="iam",
        display_name="Our IAM",
        client_id="our-app",
        client_secret_env="IAM_SECRET",
    )


def test_add_again_changes_only_the_options_given():
    run(
        "add",
        "https://iam.example.org/",
        "--scope",
        "a",
        "--scope",
        "b",
        "--client-id",
        "our-app",
        "--no-provision",
    )
    run(
        "add",
        "https://iam.example.org/",
        "--scope",
        "compute.read",
        "--profile",
        "WLCG",
        "--any-audience",
    )
    row = Issuer.objects.get()
    assert row.required_scopes == ["compute.read"]  # a list given replaces the old one
    assert (row.accept_any_audience, row.client_id, row.auto_provision) == (True, "our-app", False)
    run("add", "https://iam.example.org/", "--provision", "--no-any-audience")
    row.refresh_from_db()
    assert (row.auto_provision, row.accept_any_audience, row.required_scopes) == (
        True,
        False,
        ["compute.read"],
    )
    assert row.profile == "wlcg"
    run("add", "https://iam.example.org/", "--profile", "none")
    row.refresh_from_db()
    assert row.profile == ""


def test_an_any_audience_needs_a_profile():
    with pytest.raises(CommandError, match="An any-audience belongs to a token profile"):
        run("add", "https://iam.example.org/", "--scope", "x", "--any-audience")
    assert not Issuer.objects.exists()
    run(
        "add",
        "https://iam.example.org/",
        "--scope",
        "x",
        "--profile",
        "scitokens",
        "--any-audience",
    )
    config = Issuer.objects.get().config()
    assert config.accepted_audiences == ["ANY"]
    with pytest.raises(CommandError, match="An any-audience belongs to a token profile"):
        run("add", "https://iam.example.org/", "--profile", "none")
    assert "profile=scitokens" in run("list")


def test_a_new_issuer_gets_the_model_defaults():
    run("add", "https://iam.example.org/", "--scope", "x")
    row = Issuer.objects.get()
    assert (row.enabled, row.auto_provision, row.algorithms) == (True, True, ["RS256", "ES256"])
    assert (row.username_claim, row.slug, row.client_id) == ("preferred_username", "", "")


def test_add_without_audience_or_scope_warns():
    err = StringIO()
    call_command(
        "epochauth_issuer", "add", "https://iam.example.org/", stdout=StringIO(), stderr=err
    )
    assert "any token this issuer signs is accepted" in err.getvalue()
    assert Issuer.objects.exists()
    err = StringIO()
    call_command(
        "epochauth_issuer",
        "add",
        "https://b.example.org/",
        "--scope",
        "x",
        stdout=StringIO(),
        stderr=err,
    )
    assert err.getvalue() == ""


@pytest.mark.parametrize(
    "args, message",
    [
        (["--algorithm", "HS256"], "asymmetric"),
        (["--default-group", "nobody"], "No such group: nobody"),
        (["--slug", "not a slug"], "slug"),
    ],
)
def test_add_refuses_bad_options_and_keeps_the_row(args, message):
    run("add", "https://iam.example.org/", "--scope", "x")
    with pytest.raises(CommandError, match=message):
        run("add", "https://iam.example.org/", "--scope", "changed", *args)
    assert Issuer.objects.get().required_scopes == ["x"]


def test_login_slugs_must_differ(settings):
    run("add", "https://a.example.org/", "--client-id", "app", "--slug", "iam")
    with pytest.raises(
        CommandError, match="The login slug iam is https://a.example.org/'s already"
    ):
        run("add", "https://b.example.org/", "--client-id", "app", "--slug", "iam")
    run("add", "https://b.example.org/", "--slug", "iam")  # not a login provider: no clash
    run("add", "https://a.example.org/", "--client-id", "app2")  # its own slug is no clash
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [
            {"issuer": "https://c.example.org/", "client_id": "app", "required_scopes": ["x"]}
        ],
    }
    with pytest.raises(CommandError, match="cexampleorg is https://c.example.org/'s already"):
        run("add", "https://d.example.org/", "--client-id", "app", "--slug", "cexampleorg")


@pytest.mark.parametrize(
    "url",
    [
        "http://iam.example.org/",
        "http://10.0.0.1/",
        "ftp://iam.example.org/",
        "iam.example.org",
        "https://",
    ],
)
def test_add_refuses_urls_that_are_not_https(url, loopback_allowed):
    with pytest.raises(CommandError, match="https required"):
        run("add", url)
    assert not Issuer.objects.exists()


def test_add_loopback_http_needs_the_setting(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": False}
    with pytest.raises(CommandError, match="https required"):
        run("add", "http://127.0.0.1:9000")
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ALLOW_LOOPBACK_HTTP_ISSUERS": True}
    assert run("add", "http://127.0.0.1:9000") == "added http://127.0.0.1:9000\n"
    assert run("add", "http://[::1]:9000") == "added http://[::1]:9000\n"
    assert run("add", "http://localhost:9000") == "added http://localhost:9000\n"


def test_add_secret_env_needs_a_client_id():
    with pytest.raises(CommandError, match="--client-id"):
        run("add", "https://iam.example.org/", "--client-secret-env", "IAM_SECRET")


def test_list():
    assert run("list") == ""
    run("add", "https://b.example.org/", "--audience", "https://api.example.org", "--scope", "s1")
    run("add", "https://a.example.org/", "--no-provision")
    run("disable", "https://a.example.org/")
    assert run("list").splitlines() == [
        "disabled https://a.example.org/  audiences=-  scopes=-  provision=False",
        "enabled  https://b.example.org/  audiences=https://api.example.org  scopes=s1  provision=True",
    ]


def test_enable_and_disable_stop_and_restore_tokens(
    client, idp, idp_issuer, django_capture_on_commit_callbacks
):
    token = idp.client_credentials_token()
    assert hello(client, token) == 200
    with django_capture_on_commit_callbacks(execute=True):
        assert run("disable", idp.issuer) == f"disabled {idp.issuer}\n"
    assert not Issuer.objects.get().enabled
    assert hello(client, token) == 401
    with django_capture_on_commit_callbacks(execute=True):
        assert run("enable", idp.issuer) == f"enabled {idp.issuer}\n"
    assert hello(client, token) == 200


@pytest.mark.parametrize("action", ["enable", "disable", "refresh"])
def test_unknown_issuer_is_a_command_error(action):
    with pytest.raises(CommandError, match="No such"):
        run(action, "https://nobody.example.org/")


def test_refresh_prints_the_key_count(idp, idp_issuer):
    before = idp.stats()
    output = run("refresh", idp.issuer)
    after = idp.stats()
    assert after["discovery"] == before["discovery"] + 1  # discovery fetched again, not from cache
    assert after["jwks"] == before["jwks"] + 1
    keys = idp.jwks()["keys"]
    assert output.startswith(f"{idp.issuer}: {len(keys)} keys (")
    for key in keys:
        assert key["kid"] in output


def test_refresh_an_issuer_from_settings(idp_stats_reset, settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": True,
        "ISSUERS": [{"issuer": idp_stats_reset.issuer}],
    }
    assert " keys (" in run("refresh", idp_stats_reset.issuer)


def test_refresh_an_unreachable_issuer_is_a_command_error(loopback_allowed, free_port):
    Issuer.objects.create(issuer=f"http://127.0.0.1:{free_port}")
    with pytest.raises(CommandError, match="Could not fetch"):
        run("refresh", f"http://127.0.0.1:{free_port}")


def test_refresh_an_issuer_that_is_down_is_a_command_error(idp, idp_issuer):
    idp.down()
    with pytest.raises(CommandError, match="Could not fetch"):
        run("refresh", idp.issuer)


# -- system checks for EPOCHAUTH["ISSUERS"] ----------------------------------------------------


def issuer_check_ids(
    settings: Any, issuers: Any, loopback: bool = False, errors_only: bool = True
) -> list[str]:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": issuers,
        "ALLOW_LOOPBACK_HTTP_ISSUERS": loopback,
    }
    return sorted(m.id for m in check_issuers() if m.is_serious() or not errors_only)


def test_good_issuers_have_no_messages(settings):
    good = [
        {"issuer": "https://iam.example.org/", "required_scopes": ["storage.read:/"]},
        {
            "issuer": "https://login.example.org/realms/x",
            "audiences": ["https://api.example.org"],
            "profile": "wlcg",
            "accept_any_audience": True,
            "algorithms": ["RS256", "ES256", "PS256", "EdDSA"],
            "auto_provision": False,
            "default_groups": ["external"],
            "group_claims": ["wlcg.groups", "groups", "eduperson_entitlement"],
            "group_map": {"/cms/ops": "cms-operators"},
            "group_prefix": "cms:",
            "username_claim": "email",
            "enabled": False,
        },
    ]
    assert issuer_check_ids(settings, good, errors_only=False) == []
    loopback = [{"issuer": "http://127.0.0.1:9000", "required_scopes": ["x"]}]
    assert issuer_check_ids(settings, loopback, loopback=True, errors_only=False) == []
    assert issuer_check_ids(settings, [], errors_only=False) == []


def test_an_issuer_without_audience_or_scope_is_a_warning(settings):
    """Nothing would tell its ID tokens or tokens for other services from ours."""
    bare = [{"issuer": "https://iam.example.org/"}]
    assert issuer_check_ids(settings, bare, errors_only=False) == ["epochauth.W003"]
    scoped = [{"issuer": "https://iam.example.org/", "required_scopes": ["servicex"]}]
    assert issuer_check_ids(settings, scoped, errors_only=False) == []


def test_w007_group_claims_that_can_join_no_group(settings):
    """Without a mapping or a namespace every claim value is ignored: say so, not a silent no-op."""
    entry = {"issuer": "https://iam.example.org/", "required_scopes": ["x"]}
    claims = [{**entry, "group_claims": ["groups"]}]
    assert issuer_check_ids(settings, claims, errors_only=False) == ["epochauth.W007"]
    for allowed in ({"group_map": {"a": "b"}}, {"group_prefix": "iam:"}):
        entries = [{**claims[0], **allowed}]
        assert issuer_check_ids(settings, entries, errors_only=False) == []


def test_w008_one_issuers_namespace_inside_anothers(settings):
    a = {"issuer": "https://a.example.org/", "required_scopes": ["x"], "group_prefix": "cms:"}
    b = {"issuer": "https://b.example.org/", "required_scopes": ["x"], "group_prefix": "cms:x"}
    assert issuer_check_ids(settings, [a, b], errors_only=False) == ["epochauth.W008"]
    apart = [a, {**b, "group_prefix": "atlas:"}]
    assert issuer_check_ids(settings, apart, errors_only=False) == []


def test_run_checks_includes_the_issuer_checks(settings):
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "ISSUERS": [{"issuer": "http://iam.example.org"}]}
    assert "epochauth.E008" in {m.id for m in run_checks(tags=["security"])}


@pytest.mark.parametrize(
    "issuers",
    [
        {"issuer": "https://iam.example.org/"},  # not a list
        "https://iam.example.org/",
        [{"audiences": ["x"]}],  # no issuer
        [{"issuer": 42}],
        ["https://iam.example.org/"],
        [{"issuer": "https://iam.example.org/", "audience": ["x"]}],  # unknown option (typo)
        [
            {"issuer": "https://iam.example.org/", "audiences": "https://api.example.org"}
        ],  # a bare string
        [{"issuer": "https://iam.example.org/", "required_scopes": None}],
        [{"issuer": "https://iam.example.org/", "group_claims": [1]}],
        [{"issuer": "https://iam.example.org/", "group_map": ["/cms"]}],
        [{"issuer": "https://iam.example.org/", "group_map": {"/cms": ""}}],
        [{"issuer": "https://iam.example.org/", "group_map": {"/cms": "x" * 151}}],
        [{"issuer": "https://iam.example.org/", "group_prefix": 7}],
        [{"issuer": "https://iam.example.org/"}, {"issuer": "https://iam.example.org/"}],  # twice
    ],
)
def test_e007_malformed_issuer_entries(settings, issuers):
    assert issuer_check_ids(settings, issuers) == ["epochauth.E007"]


@pytest.mark.parametrize(
    "url, loopback",
    [
        ("http://iam.example.org/", False),
        ("http://iam.example.org/", True),
        ("http://127.0.0.1:9000", False),
        ("http://10.0.0.1/", True),
        ("ftp://iam.example.org/", True),
        ("iam.example.org", False),
    ],
)
def test_e008_issuer_url_not_https(settings, url, loopback):
    assert issuer_check_ids(settings, [{"issuer": url}], loopback=loopback) == ["epochauth.E008"]


def test_e010_login_providers_share_a_slug(settings):
    a = {
        "issuer": "https://a.example.org/",
        "required_scopes": ["x"],
        "client_id": "app",
        "slug": "iam",
    }
    b = {
        "issuer": "https://b.example.org/",
        "required_scopes": ["x"],
        "client_id": "app",
        "slug": "iam",
    }
    assert issuer_check_ids(settings, [a, b]) == ["epochauth.E010"]
    derived = {**b, "slug": "aexampleorg"}  # the slug a would have been given without one
    assert issuer_check_ids(settings, [{**a, "slug": ""}, derived]) == ["epochauth.E010"]
    assert issuer_check_ids(settings, [a, {**b, "client_id": ""}]) == []  # b is no login provider


@pytest.mark.parametrize(
    "algorithms", [["HS256"], ["RS256", "HS512"], ["none"], [], "RS256", None, 5, [["RS256"]]]
)
def test_e009_only_asymmetric_algorithms(settings, algorithms):
    entry = {"issuer": "https://iam.example.org/", "algorithms": algorithms}
    assert issuer_check_ids(settings, [entry]) == ["epochauth.E009"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ({"profile": "WLCG"}, ["epochauth.E016"]),
        ({"profile": "jwt", "accept_any_audience": True}, ["epochauth.E016"]),
        ({"accept_any_audience": True}, ["epochauth.E017"]),
        ({"profile": "", "accept_any_audience": True}, ["epochauth.E017"]),
        ({"profile": "wlcg", "accept_any_audience": True}, []),
        ({"profile": "scitokens"}, []),
    ],
)
def test_e016_e017_a_known_profile_and_an_any_audience_only_with_one(settings, entry, expected):
    entry = {"issuer": "https://iam.example.org/", "required_scopes": ["x"], **entry}
    assert issuer_check_ids(settings, [entry]) == expected


@pytest.mark.parametrize(
    "scope", ["", "two words", "servicex\u00a0", 'say"hi"', "back\\slash", "caf\u00e9"]
)
def test_e011_required_scopes_must_be_scope_tokens(settings, scope):
    """RFC 6749 section 3.3: a name no token could carry as one scope-token is a configuration error."""
    entry = {"issuer": "https://iam.example.org/", "required_scopes": ["servicex", scope]}
    assert issuer_check_ids(settings, [entry]) == ["epochauth.E011"]


@pytest.mark.django_db
def test_issuer_rows_refuse_required_scopes_that_are_not_scope_tokens():
    row = Issuer(issuer="https://iam.example.org/", required_scopes=["servicex", "two words"])
    with pytest.raises(ValidationError) as raised:
        row.full_clean()
    assert "required_scopes" in raised.value.message_dict
    row.required_scopes = ["servicex", "storage.read:/data"]
    row.full_clean()


@pytest.mark.django_db
def test_e017_issuer_rows_written_around_the_admin_are_checked_with_the_database():
    Issuer.objects.create(issuer="https://iam.example.org/", accept_any_audience=True)
    Issuer.objects.create(
        issuer="https://cilogon.example.org/", profile="wlcg", accept_any_audience=True
    )
    messages = check_issuer_rows(databases=["default"])
    assert [m.id for m in messages] == ["epochauth.E017"]
    assert messages[0].msg.startswith(
        "https://iam.example.org/: accept_any_audience without a token profile"
    )
    assert check_issuer_rows() == []  # without --database no query


@pytest.mark.django_db
def test_w007_w008_issuer_rows_group_claims_and_namespaces(settings):
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [{"issuer": "https://a.example.org/", "group_prefix": "cms:"}],
    }
    Issuer.objects.create(issuer="https://iam.example.org/", group_claims=["groups"])
    Issuer.objects.create(issuer="https://b.example.org/", group_prefix="cms:b:")
    Issuer.objects.create(issuer="https://c.example.org/", group_prefix="atlas:")
    messages = check_issuer_rows(databases=["default"])
    assert [(m.id, m.msg.split(":")[0] + ":" + m.msg.split(":")[1]) for m in messages] == [
        ("epochauth.W007", "https://iam.example.org/"),
        ("epochauth.W008", "https://a.example.org/"),
    ]
    assert "https://b.example.org/" in messages[1].msg
