"""WLCG Bearer Token Discovery (epochauth.client.discovery): order, whitespace, empty and invalid values."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from epochauth.client import discover, discover_token
from epochauth.client import discovery as discovery_module
from epochauth.client.discovery import C_WHITESPACE, default_path, is_b64token
from epochauth.client.errors import InvalidToken, TokenNotFound, UsageError

REAL_GETEUID = os.geteuid
REAL_BELONGS_TO_US = discovery_module._belongs_to_us
FAKE_UID = (
    3_999_999_000 + os.getpid() % 997
)  # a uid of our own: /tmp/bt_u<uid> is never a real user's


@pytest.fixture(autouse=True)
def fake_uid(monkeypatch):
    """Discovery uses the effective uid; a fake one keeps the real /tmp/bt_u<uid> out of the tests."""
    monkeypatch.setattr("epochauth.client.discovery.os.geteuid", lambda: FAKE_UID)
    monkeypatch.setattr(
        "epochauth.client.discovery._belongs_to_us", lambda fd: True
    )  # we wrote them
    yield
    for path in Path("/tmp").glob(f"bt_u{FAKE_UID}*"):
        path.unlink()


@pytest.fixture
def xdg(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return runtime


def tmp_file(suffix: str = "") -> Path:
    return Path(f"/tmp/bt_u{FAKE_UID}{suffix}")


# ------------------------------------------------------------------------------ the four steps, in order


def test_step1_bearer_token_wins_over_everything(tmp_path, xdg):
    (tmp_path / "file").write_text("from-file")
    (xdg / f"bt_u{FAKE_UID}").write_text("from-xdg")
    env = {
        "BEARER_TOKEN": "from-env",
        "BEARER_TOKEN_FILE": str(tmp_path / "file"),
        "XDG_RUNTIME_DIR": str(xdg),
    }
    found = discover(environ=env)
    assert (found.token, found.source, found.path) == ("from-env", "$BEARER_TOKEN", None)


def test_step2_bearer_token_file_wins_over_xdg(tmp_path, xdg):
    (tmp_path / "file").write_text("from-file")
    (xdg / f"bt_u{FAKE_UID}").write_text("from-xdg")
    found = discover(
        environ={"BEARER_TOKEN_FILE": str(tmp_path / "file"), "XDG_RUNTIME_DIR": str(xdg)}
    )
    assert found.token == "from-file"
    assert found.path == tmp_path / "file"
    assert found.source == f"$BEARER_TOKEN_FILE ({tmp_path / 'file'})"


def test_step3_xdg_runtime_dir(xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text("from-xdg")
    tmp_file().write_text("from-tmp")
    found = discover(environ={"XDG_RUNTIME_DIR": str(xdg)})
    assert (found.token, found.path) == ("from-xdg", xdg / f"bt_u{FAKE_UID}")


def test_step4_tmp_when_xdg_runtime_dir_is_unset():
    tmp_file().write_text("from-tmp")
    found = discover(environ={})
    assert (found.token, found.path, found.source) == ("from-tmp", tmp_file(), str(tmp_file()))


def test_an_empty_xdg_runtime_dir_counts_as_unset():
    tmp_file().write_text("from-tmp")
    assert discover_token(environ={"XDG_RUNTIME_DIR": ""}) == "from-tmp"


def test_with_xdg_runtime_dir_set_tmp_is_not_consulted(xdg):
    """Step 4 is the *otherwise* of step 3: a user-private runtime dir is not bypassed by a /tmp file."""
    tmp_file().write_text("from-tmp")
    with pytest.raises(TokenNotFound) as info:
        discover(environ={"XDG_RUNTIME_DIR": str(xdg)})
    assert str(tmp_file()) not in str(info.value)


def test_a_default_file_of_another_user_is_refused(monkeypatch, xdg):
    """Anyone may create /tmp/bt_u$ID first; its user's tools must not send the stranger's token."""
    monkeypatch.setattr(discovery_module, "_belongs_to_us", REAL_BELONGS_TO_US)
    (xdg / f"bt_u{FAKE_UID}").write_text("planted")  # ours, so not FAKE_UID's
    tmp_file().write_text("planted")
    for environ in ({"XDG_RUNTIME_DIR": str(xdg)}, {}):
        with pytest.raises(InvalidToken, match="belongs to another user"):
            discover(environ=environ)
    monkeypatch.setattr(discovery_module.os, "geteuid", REAL_GETEUID)  # as the user who wrote them
    (xdg / f"bt_u{REAL_GETEUID()}").write_text("mine")
    assert discover_token(environ={"XDG_RUNTIME_DIR": str(xdg)}) == "mine"


def test_discover_token_reads_the_process_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BEARER_TOKEN", "  from-os-environ\n")
    assert discover_token() == "from-os-environ"
    monkeypatch.delenv("BEARER_TOKEN")
    monkeypatch.setenv("BEARER_TOKEN_FILE", str(tmp_path / "t"))
    (tmp_path / "t").write_text("from-os-file")
    assert discover_token() == "from-os-file"


# ------------------------------------------------------------------------------ empty values continue


@pytest.mark.parametrize("value", ["", " ", "\n", " \t\n\v\f\r ", "\r\n"])
def test_empty_bearer_token_continues_with_the_next_step(tmp_path, value):
    (tmp_path / "file").write_text("from-file")
    assert discover_token(
        environ={"BEARER_TOKEN": value, "BEARER_TOKEN_FILE": str(tmp_path / "file")}
    ) == ("from-file")


@pytest.mark.parametrize("content", ["", "\n", "  \t \n", "\v\f"])
def test_empty_token_file_continues_with_the_next_step(tmp_path, xdg, content):
    (tmp_path / "file").write_text(content)
    (xdg / f"bt_u{FAKE_UID}").write_text("from-xdg")
    env = {"BEARER_TOKEN_FILE": str(tmp_path / "file"), "XDG_RUNTIME_DIR": str(xdg)}
    assert discover_token(environ=env) == "from-xdg"


def test_missing_bearer_token_file_continues_with_the_next_step(tmp_path, xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text("from-xdg")
    env = {"BEARER_TOKEN_FILE": str(tmp_path / "nope"), "XDG_RUNTIME_DIR": str(xdg)}
    assert discover_token(environ=env) == "from-xdg"


def test_an_empty_bearer_token_file_variable_counts_as_unset():
    tmp_file().write_text("from-tmp")
    assert discover_token(environ={"BEARER_TOKEN_FILE": ""}) == "from-tmp"


def test_empty_xdg_file_ends_discovery_without_a_token(xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text(" \n")
    with pytest.raises(TokenNotFound, match="empty"):
        discover(environ={"XDG_RUNTIME_DIR": str(xdg)})


def test_nothing_found_lists_every_place_looked_at(tmp_path, xdg):
    env = {
        "BEARER_TOKEN": " ",
        "BEARER_TOKEN_FILE": str(tmp_path / "nope"),
        "XDG_RUNTIME_DIR": str(xdg),
    }
    with pytest.raises(TokenNotFound) as info:
        discover(environ=env)
    assert info.value.looked == [
        "$BEARER_TOKEN (empty)",
        f"$BEARER_TOKEN_FILE ({tmp_path / 'nope'}: missing)",
        f"{xdg / f'bt_u{FAKE_UID}'} (missing)",
    ]
    assert info.value.exit_code == 4
    assert str(info.value).startswith("no bearer token found; looked at $BEARER_TOKEN (empty), ")


def test_nothing_found_without_any_variable():
    with pytest.raises(TokenNotFound) as info:
        discover(environ={})
    assert info.value.looked == [
        "$BEARER_TOKEN (unset)",
        "$BEARER_TOKEN_FILE (unset)",
        f"{tmp_file()} (missing)",
    ]


# ------------------------------------------------------------------------------ whitespace


@pytest.mark.parametrize("space", list(C_WHITESPACE), ids=["space", "tab", "lf", "vt", "ff", "cr"])
def test_every_c_isspace_character_is_stripped_on_both_sides(tmp_path, space):
    assert discover_token(environ={"BEARER_TOKEN": f"{space}{space}abc.def{space}"}) == "abc.def"
    (tmp_path / "file").write_text(f"{space}abc.def{space}{space}")
    assert discover_token(environ={"BEARER_TOKEN_FILE": str(tmp_path / "file")}) == "abc.def"


def test_crlf_and_mixed_whitespace_around_a_file_token(tmp_path):
    (tmp_path / "file").write_bytes(b" \t\r\n eyJ.eyJ.sig \r\n\r\n\x0b\x0c")
    assert discover_token(environ={"BEARER_TOKEN_FILE": str(tmp_path / "file")}) == "eyJ.eyJ.sig"


@pytest.mark.parametrize(
    "space",
    ["\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u2003", "\u3000", "\x00"],
    ids=["FS", "GS", "RS", "US", "NEL", "NBSP", "EM-SPACE", "IDEO-SPACE", "NUL"],
)
def test_characters_python_strips_but_c_isspace_does_not_make_the_token_invalid(space):
    """str.strip() would remove most of these; the spec's whitespace is C99 isspace() only."""
    with pytest.raises(InvalidToken, match=r"\$BEARER_TOKEN does not hold a valid bearer token"):
        discover(environ={"BEARER_TOKEN": f"{space}abc{space}"})


def test_inner_whitespace_is_not_stripped_and_is_invalid():
    with pytest.raises(InvalidToken):
        discover(environ={"BEARER_TOKEN": "abc def"})
    with pytest.raises(InvalidToken):
        discover(environ={"BEARER_TOKEN": "abc\ndef\n"})


# ------------------------------------------------------------------------------ invalid values stop


@pytest.mark.parametrize(
    "value",
    [
        "Bearer abc",
        "abc def",
        "tok%en",
        "=abc",
        "a=b",
        "a==b",
        "abc!",
        'ab"c',
        "a,b",
        "é",
        "abc\x7f",
        "a;b",
    ],
)
def test_invalid_b64token(value):
    assert not is_b64token(value)


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "abc.def.ghi",
        "A-Z_a~z+0/9",
        "abc=",
        "abc==",
        "abc===",
        "eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl",
        "-._~+/",
    ],
)
def test_valid_b64token(value):
    assert is_b64token(value)


def test_invalid_bearer_token_stops_discovery_and_says_where(tmp_path):
    (tmp_path / "file").write_text("good")
    with pytest.raises(InvalidToken) as info:
        discover(
            environ={"BEARER_TOKEN": "not valid", "BEARER_TOKEN_FILE": str(tmp_path / "file")}
        )
    assert (
        str(info.value) == "$BEARER_TOKEN does not hold a valid bearer token (RFC 6750 b64token)"
    )
    assert "not valid" not in str(info.value)  # the value itself is never echoed
    assert info.value.exit_code == 5


def test_invalid_bearer_token_file_stops_discovery_and_names_the_file(tmp_path, xdg):
    (tmp_path / "file").write_text("{'not': 'a token'}\n")
    (xdg / f"bt_u{FAKE_UID}").write_text("good")
    with pytest.raises(
        InvalidToken, match=rf"^\$BEARER_TOKEN_FILE \({tmp_path / 'file'}\) does not hold"
    ):
        discover(
            environ={"BEARER_TOKEN_FILE": str(tmp_path / "file"), "XDG_RUNTIME_DIR": str(xdg)}
        )


def test_invalid_xdg_file_names_the_file(xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text("two\ntokens")
    with pytest.raises(InvalidToken, match=rf"^{xdg / f'bt_u{FAKE_UID}'} does not hold"):
        discover(environ={"XDG_RUNTIME_DIR": str(xdg)})


def test_invalid_tmp_file_names_the_file():
    tmp_file().write_text("a b")
    with pytest.raises(InvalidToken, match=rf"^{tmp_file()} does not hold"):
        discover(environ={})


def test_non_ascii_bytes_in_a_token_file_are_invalid(tmp_path):
    (tmp_path / "file").write_bytes(b"abc\xff")
    with pytest.raises(InvalidToken, match="not ASCII"):
        discover(environ={"BEARER_TOKEN_FILE": str(tmp_path / "file")})


def test_unreadable_token_file_is_an_error_not_a_skip(tmp_path):
    (tmp_path / "dir").mkdir()
    with pytest.raises(
        InvalidToken, match=rf"^cannot read token file \$BEARER_TOKEN_FILE \({tmp_path / 'dir'}\)"
    ):
        discover(environ={"BEARER_TOKEN_FILE": str(tmp_path / "dir")})


# ------------------------------------------------------------------------------ purpose names


def test_purpose_reads_its_own_file_in_the_xdg_runtime_dir(xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text("default")
    (xdg / f"bt_u{FAKE_UID}-fife-CMS").write_text("cms")
    (xdg / f"bt_u{FAKE_UID}-fife-DUNE").write_text("dune")
    env = {"XDG_RUNTIME_DIR": str(xdg)}
    assert discover_token(environ=env) == "default"
    assert discover_token("fife-CMS", environ=env) == "cms"
    assert discover_token("fife-DUNE", environ=env) == "dune"


def test_purpose_in_tmp_when_xdg_runtime_dir_is_unset():
    tmp_file("-atlas").write_text(" atlas\n")
    found = discover("atlas", environ={})
    assert (found.token, found.path) == ("atlas", tmp_file("-atlas"))


def test_purpose_ignores_the_environment_variables_which_name_the_default_token(tmp_path, xdg):
    (tmp_path / "file").write_text("from-file")
    (xdg / f"bt_u{FAKE_UID}-cms").write_text("cms")
    env = {
        "BEARER_TOKEN": "from-env",
        "BEARER_TOKEN_FILE": str(tmp_path / "file"),
        "XDG_RUNTIME_DIR": str(xdg),
    }
    assert discover_token("cms", environ=env) == "cms"


def test_missing_purpose_file_does_not_fall_back_to_the_default_token(xdg):
    (xdg / f"bt_u{FAKE_UID}").write_text("default")
    with pytest.raises(TokenNotFound) as info:
        discover("cms", environ={"XDG_RUNTIME_DIR": str(xdg)})
    assert info.value.looked == [f"{xdg / f'bt_u{FAKE_UID}-cms'} (missing)"]


def test_invalid_purpose_file_names_the_file(xdg):
    (xdg / f"bt_u{FAKE_UID}-cms").write_text("a b")
    with pytest.raises(InvalidToken, match=f"bt_u{FAKE_UID}-cms does not hold"):
        discover("cms", environ={"XDG_RUNTIME_DIR": str(xdg)})


@pytest.mark.parametrize("purpose", ["", "../etc", "a/b", "-x", ".hidden", "a b", "a\x00b", "ü"])
def test_purpose_names_that_are_not_safe_file_name_parts_are_refused(purpose):
    with pytest.raises(UsageError, match="invalid purpose name"):
        default_path(purpose, {})


def test_default_path_is_where_discovery_reads(xdg):
    assert default_path(None, {"XDG_RUNTIME_DIR": str(xdg)}) == xdg / f"bt_u{FAKE_UID}"
    assert default_path("cms", {}) == tmp_file("-cms")


def test_effective_uid_names_the_file(monkeypatch):
    monkeypatch.setattr("epochauth.client.discovery.os.geteuid", lambda: 1221)
    assert default_path("fife-CMS", {}) == Path("/tmp/bt_u1221-fife-CMS")


# ------------------------------------------------------------------------------ no Django


def test_importing_the_client_loads_no_django():
    code = (
        "import sys, epochauth.client, epochauth.client.cli;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
