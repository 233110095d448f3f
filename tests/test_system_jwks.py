"""The WLCG system JWKS cache (v1.0, January 2026): keys read from it when an issuer is down, files
another user could have written refused, and ``epochauth_jwks_cache`` writing what the spec describes.

The cache files here are written by hand after the spec's own examples (sections 3 to 5), not by our
writer, so that the reader is shown to read the spec's format and not only its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterator
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import CommandError, call_command

from epochauth import system_jwks
from epochauth.issuers import jwks_cache
from epochauth.keys import generate_private_key_pem, get_keyring
from epochauth.tokens import verified_tokens
from tests.loopback_issuer import AUDIENCE, CraftedIssuer, key, public_jwk

pytestmark = pytest.mark.django_db
HELLO = "/api/hello/"


@pytest.fixture
def crafted(settings) -> Iterator[CraftedIssuer]:
    """An allowed issuer, and a cache directory in ``$JWKS_CACHE_DIR`` (none of the system's own)."""
    issuer = CraftedIssuer()
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ISSUERS": [
            {"issuer": issuer.issuer, "audiences": [AUDIENCE], "required_scopes": ["servicex"]}
        ],
    }
    yield issuer
    issuer.stop()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "jwks"
    directory.mkdir(mode=0o755)
    monkeypatch.setenv("JWKS_CACHE_DIR", str(directory))
    monkeypatch.delenv("JWKS_CACHE_FILE", raising=False)
    return directory


def spec_entry(issuer: CraftedIssuer, expiration: float) -> str:
    """One issuer's cache as the spec's section 3 shows it (with ``next_update``, a tool's hint)."""
    body = {"expiration": expiration, "next_update": int(expiration) - 3000, "jwks": issuer.jwks()}
    return json.dumps({issuer.issuer: body}, indent=2)


def place(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def in_directory(directory: Path, issuer: CraftedIssuer) -> Path:
    """Section 5.1: the file is named by the hex SHA-256 of the issuer."""
    return directory / hashlib.sha256(issuer.issuer.encode()).hexdigest()


def down(issuer: CraftedIssuer) -> None:
    """The issuer answers 503 from now on, and no process holds its keys (a node starting in the outage)."""
    issuer.status = 503
    cache.clear()
    jwks_cache.reset()
    verified_tokens.clear()


def status(client: Any, token: str) -> int:
    return client.get(HELLO, HTTP_AUTHORIZATION=f"Bearer {token}").status_code


def test_with_the_issuer_down_keys_from_the_cache_directory_verify_its_tokens(
    client, crafted, cache_dir, clock
):
    token = crafted.token()
    down(crafted)
    assert status(client, token) == 503  # no cache file yet
    jwks_cache.reset()
    place(in_directory(cache_dir, crafted), spec_entry(crafted, clock.wall() + 3600.5))
    assert status(client, token) == 200
    assert status(client, crafted.token("ec-1")) == 200
    clock.advance(3601)  # past the entry's expiration: its keys serve no longer
    verified_tokens.clear()
    assert status(client, token) == 503


def test_the_cache_is_read_only_when_a_fetch_fails(client, crafted, cache_dir, monkeypatch):
    place(in_directory(cache_dir, crafted), "not a cache")  # would be a warning if it were read

    def no_read(*args: Any) -> None:
        raise AssertionError("the system JWKS cache was read")

    monkeypatch.setattr(system_jwks, "read", no_read)
    assert status(client, crafted.token()) == 200
    assert status(client, crafted.token()) == 200


def test_several_caches_in_one_file_merge_and_the_search_goes_on_past_an_expired_entry(
    client, crafted, cache_dir, tmp_path, monkeypatch, clock
):
    """Section 4: objects one after the other (``cat``), later ones winning, reading stopped by
    anything else; section 6: ``$JWKS_CACHE_DIR`` first, then ``$JWKS_CACHE_FILE``."""
    token = crafted.token()
    down(crafted)
    place(in_directory(cache_dir, crafted), spec_entry(crafted, clock.wall() - 1))  # expired
    impostor = {"keys": [public_jwk(key("rsa-b"), "rsa-1", "RS256")]}  # same kid, another key
    wrong = json.dumps({crafted.issuer: {"expiration": clock.wall() + 600, "jwks": impostor}})
    text = f"  \n{wrong}\n{spec_entry(crafted, clock.wall() + 600)}\n\n"
    monkeypatch.setenv("JWKS_CACHE_FILE", str(place(tmp_path / "cache.json", text)))
    assert status(client, token) == 200
    jwks_cache.reset()
    verified_tokens.clear()
    # Anything but whitespace ends the file: the later (right) keys are not read.
    place(tmp_path / "cache.json", f"{wrong}\n#\n{spec_entry(crafted, clock.wall() + 600)}")
    assert status(client, token) == 401


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        '{"ISSUER": {"expiration": NaN, "jwks": {"keys": []}}}',
        '{"ISSUER": {"expiration": "1900000000", "jwks": {"keys": []}}}',
        '{"ISSUER": {"expiration": 1900000000}}',
    ],
    ids=["broken JSON", "NaN", "string expiration", "no jwks"],
)
def test_a_malformed_cache_file_is_skipped_with_a_warning(crafted, cache_dir, caplog, text):
    place(in_directory(cache_dir, crafted), text.replace("ISSUER", crafted.issuer))
    with caplog.at_level(logging.WARNING, logger="epochauth.system_jwks"):
        assert system_jwks.read(crafted.issuer, 0) is None
    assert "cannot read the system JWKS cache file" in caplog.text


@pytest.mark.parametrize("where", ["file", "directory", "parent", "symlink target"])
def test_a_file_others_could_have_written_is_refused_with_a_warning(
    client, crafted, cache_dir, tmp_path, caplog, clock, where
):
    """Like ssh's StrictModes: group- or world-writable anywhere from the file up to ``/`` (a sticky
    directory like ``/tmp`` aside) means another user could have planted the keys."""
    token = crafted.token()
    down(crafted)
    path = place(in_directory(cache_dir, crafted), spec_entry(crafted, clock.wall() + 600))
    assert system_jwks.read(crafted.issuer, clock.wall()) is not None
    if where == "file":
        path.chmod(0o664)
    elif where == "directory":
        cache_dir.chmod(0o775)
    elif where == "parent":
        tmp_path.chmod(0o777)
    else:
        loose = tmp_path / "loose"
        loose.mkdir(mode=0o755)
        loose.chmod(0o757)
        target = place(loose / "cache", path.read_text())
        path.unlink()
        path.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="epochauth.system_jwks"):
        assert status(client, token) == 503
    assert "refusing the system JWKS cache file" in caplog.text
    assert "may write it" in caplog.text


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
def test_a_file_of_another_user_is_refused(client, crafted, cache_dir, caplog, clock):
    token = crafted.token()
    down(crafted)
    path = place(in_directory(cache_dir, crafted), spec_entry(crafted, clock.wall() + 600))
    os.chown(path, 4242, -1)
    with caplog.at_level(logging.WARNING, logger="epochauth.system_jwks"):
        assert status(client, token) == 503
    assert "belongs to user id 4242" in caplog.text


# -- epochauth_jwks_cache ------------------------------------------------------------------------


@pytest.fixture
def asymmetric(settings) -> None:
    settings.EPOCHAUTH = {
        **settings.EPOCHAUTH,
        "ALGORITHM": "ES256",
        "SIGNING_KEY": generate_private_key_pem("ES256"),
    }


def run(*args: str) -> str:
    out = StringIO()
    call_command("epochauth_jwks_cache", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_the_command_writes_our_and_the_allowed_issuers_keys_in_the_spec_format(
    client, crafted, cache_dir, asymmetric, settings, clock
):
    ours = settings.EPOCHAUTH["ISSUER"]
    output = run("--lifetime", "2h")
    assert f"{crafted.issuer}: 2 keys in {in_directory(cache_dir, crafted)}" in output
    names = {hashlib.sha256(i.encode()).hexdigest() for i in (ours, crafted.issuer)}
    assert {p.name for p in cache_dir.iterdir()} == names  # nothing else: no temporary file left
    for issuer, jwks in ((ours, get_keyring().jwks()), (crafted.issuer, crafted.jwks())):
        path = cache_dir / hashlib.sha256(issuer.encode()).hexdigest()
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        text = path.read_text()
        assert text.isascii()
        written = json.loads(text)
        assert list(written) == [issuer]
        assert set(written[issuer]) == {"expiration", "jwks"}
        assert written[issuer]["jwks"] == jwks
        assert abs(written[issuer]["expiration"] - (clock.wall() + 7200)) < 5
        assert system_jwks.read(issuer, clock.wall()).jwks == jwks
    down(crafted)
    assert status(client, crafted.token()) == 200


def test_the_command_into_one_file_keeps_the_other_entries(crafted, cache_dir, tmp_path, clock):
    other = json.dumps({"https://other.example": {"expiration": 2000000000, "jwks": {"keys": []}}})
    path = place(tmp_path / "cache.json", other)
    run("--file", str(path), crafted.issuer)
    written = system_jwks.read_file(path)
    assert set(written) == {"https://other.example", crafted.issuer}
    assert written[crafted.issuer]["jwks"] == crafted.jwks()
    assert not list(cache_dir.iterdir())


def test_the_command_leaves_an_issuers_entry_alone_when_its_keys_cannot_be_fetched(
    crafted, cache_dir, clock
):
    path = place(in_directory(cache_dir, crafted), spec_entry(crafted, clock.wall() + 600))
    before = path.read_text()
    crafted.status = 503
    with pytest.raises(CommandError, match="Could not fetch the keys of 1 issuer"):
        run()
    assert path.read_text() == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["https://nowhere.example"], "Neither our issuer nor an allowed one"),
        (["--lifetime", "0"], "more than zero"),
        (["--lifetime", "soon"], "no duration"),
    ],
)
def test_the_command_refuses_bad_arguments(crafted, cache_dir, args, message):
    with pytest.raises(CommandError, match=message):
        run(*args)
    assert not list(cache_dir.iterdir())


def test_the_command_skips_our_hmac_key_and_refuses_to_name_it(crafted, cache_dir, settings):
    run()
    assert [p.name for p in cache_dir.iterdir()] == [in_directory(cache_dir, crafted).name]
    with pytest.raises(CommandError, match="HMAC"):
        run(settings.EPOCHAUTH["ISSUER"])


def test_the_command_refuses_a_directory_others_may_write(crafted, cache_dir):
    cache_dir.chmod(0o777)
    with pytest.raises(CommandError, match="other users could change it"):
        run()
    assert not list(cache_dir.iterdir())
