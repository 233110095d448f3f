"""The docs build without a warning and their reference covers the code; the handbook's settings table
is the one generated from ``epochauth.conf`` (docs/_ext/epochauth_reference.py); the README stays a
short front door whose links lead somewhere."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docutils.nodes import make_id

from epochauth.conf import DEFAULTS, DESCRIPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
HANDBOOK = DOCS / "handbook.md"
#: The README is the front door (what it is, the demo, "Use it in your project", one example per
#: feature); the manual is docs/. It may not grow back into the manual (issue 26).
README_MAX_LINES = 400
sys.path.insert(0, str(DOCS / "_ext"))

import epochauth_reference as reference  # noqa: E402


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML build of docs/, with every warning an error (a broken internal link is one)."""
    if shutil.which("dot") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Graphviz's dot is not installed (apt-get install graphviz)")
        pytest.skip("Graphviz's dot is not installed")
    out = tmp_path_factory.mktemp("docs") / "html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return out


def page(built: Path, name: str) -> str:
    return (built / f"{name}.html").read_text()


def handbook_section(title: str) -> str:
    return HANDBOOK.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def anchor(label: str) -> str:
    """The HTML id docutils makes of a MyST target ``(label)=``."""
    return f'id="{make_id(label)}"'


def test_every_setting_has_a_description_in_order() -> None:
    missing = [name for name in DEFAULTS if name not in DESCRIPTIONS]
    assert not missing, f"epochauth.conf.DESCRIPTIONS has no description of {missing}"
    assert list(DESCRIPTIONS) == list(DEFAULTS), "DESCRIPTIONS must follow the order of DEFAULTS"
    assert all(text.strip() for text in DESCRIPTIONS.values())


def test_the_handbook_settings_table_is_generated_from_conf() -> None:
    handbook = HANDBOOK.read_text()
    assert handbook == reference.with_settings_table(handbook), (
        "docs/handbook.md's settings table differs from epochauth.conf: "
        "run python docs/_ext/epochauth_reference.py --write"
    )
    rows = re.findall(r"^\| `([A-Z_]+)` \|", handbook_section("Settings"), flags=re.M)
    assert rows == list(DEFAULTS)


def test_the_handbook_lists_every_system_check() -> None:
    section = handbook_section("System checks")
    listed = set(re.findall(r"^\| `(epochauth[.\w]*\.[EW]\d{3})` \|", section, flags=re.M))
    assert listed == {m.id for m in reference.check_messages()}


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (DEFAULTS["ACCESS_TOKEN_LIFETIME"], "15 min"),
        (DEFAULTS["REMEMBER_ME_REFRESH_TOKEN_LIFETIME"], "30 days"),
        (DEFAULTS["JWKS_REFETCH_COOLDOWN"], "1 min"),
        (DEFAULTS["LEEWAY"], "30 s"),
        (None, "`None`"),
        (True, "`True`"),
        ("HS256", '`"HS256"`'),
        (10000, "10000"),
    ],
)
def test_defaults_are_written_from_their_values(value: object, shown: str) -> None:
    assert reference.format_default("X", value) == shown


def test_byte_sizes_are_written_in_kib() -> None:
    assert reference.format_default("HTTP_MAX_BYTES", 512 * 1024) == "512 KiB"
    assert reference.format_default("HTTP_MAX_BYTES", 1000) == "1000"


def test_check_ids_are_read_from_the_checks_modules() -> None:
    ids = {m.id for m in reference.check_messages()}
    assert {"epochauth.E001", "epochauth.E014", "epochauth.W005", "epochauth.oauth.E001"} <= ids
    assert all(
        re.fullmatch(r"epochauth(\.(oauth|simplejwt|tokenmanager))?\.[EW]\d{3}", i) for i in ids
    )


def test_the_reference_covers_every_setting(built_docs: Path) -> None:
    settings_html = page(built_docs, "reference/settings")
    missing = [name for name in DEFAULTS if anchor(f"setting-{name}") not in settings_html]
    assert not missing


def test_the_reference_covers_every_system_check(built_docs: Path) -> None:
    checks_html = page(built_docs, "reference/checks")
    missing = [
        m.id for m in reference.check_messages() if anchor(f"check-{m.id}") not in checks_html
    ]
    assert not missing


def test_the_reference_covers_every_command_and_its_options(built_docs: Path) -> None:
    commands_html = page(built_docs, "reference/commands")
    names = reference.command_names()
    assert {"epochauth_issue", "epochauth_issuer", "epochauth_keys", "epochauth_purge"} <= set(
        names
    )
    for name in names:
        assert anchor(f"command-{name}") in commands_html
        options = {o for a in reference.command_parser(name)._actions for o in a.option_strings}
        assert all(option in commands_html for option in options - reference.BASE_OPTIONS), name


def test_the_reference_covers_every_signal_and_endpoint(built_docs: Path) -> None:
    signals_html = page(built_docs, "reference/signals")
    assert {"token_issued", "epoch_bumped", "session_revoked"} <= {
        n for n, _ in reference.signals()
    }
    assert all(anchor(f"signal-{name}") in signals_html for name, _ in reference.signals())
    endpoints_html = page(built_docs, "reference/endpoints")
    paths = [path for path, *_ in reference.endpoints()]
    assert {"/auth/token/", "/.well-known/jwks.json", "/oidc/callback/", "/o/token/"} <= set(paths)
    missing = [path for path in paths if f">{html.escape(path)}<" not in endpoints_html]
    assert not missing


def test_the_handbook_is_a_page_of_its_own(built_docs: Path) -> None:
    handbook = page(built_docs, "handbook")
    assert (
        'id="revocation"' in handbook
        and 'id="accept-tokens-from-your-identity-provider"' in handbook
    )
    assert 'href="benchmarks.html"' in handbook
    assert 'id="use-it-in-your-project"' not in handbook, "the README is no longer read in"


def test_the_revocation_page_has_its_diagram(built_docs: Path) -> None:
    revocation_html = page(built_docs, "explanation/revocation")
    (svg,) = re.findall(r"_images/(graphviz-[0-9a-f]+\.svg)", revocation_html)
    assert "REVOCATION_WINDOW" in (built_docs / "_images" / svg).read_text()


def test_the_handbook_lists_every_token_endpoint_with_its_methods() -> None:
    section = handbook_section("Endpoints")
    endpoints = [
        (p, m) for p, _, m, _ in reference.endpoints() if p.startswith(("/auth/", "/.well-known/"))
    ]
    assert len(endpoints) >= 10
    for path, methods in endpoints:
        rows = [
            line for line in section.splitlines() if line.startswith("| ") and f" {path}`" in line
        ]
        assert rows, f"docs/handbook.md has no table row for {path}"
        assert all(method in rows[0] for method in methods), (path, methods)


def test_the_handbook_lists_every_signal_and_command() -> None:
    signals = re.findall(r"^\| `(\w+)` \|", handbook_section("Signals"), flags=re.M)
    assert set(signals) == {name for name, _ in reference.signals()}
    commands = set(
        re.findall(r"python manage.py (epochauth_\w+)", handbook_section("Management commands"))
    )
    assert commands == set(reference.command_names())


def prose() -> dict[str, str]:
    """The README and every page of docs/, by path."""
    files = [README, *sorted(DOCS.rglob("*.md"))]
    return {str(f.relative_to(ROOT)): f.read_text() for f in files if "_build" not in f.parts}


def test_the_prose_names_only_settings_checks_and_commands_that_exist() -> None:
    ids = {m.id for m in reference.check_messages()}
    commands = set(reference.command_names())
    wrong = []
    for path, text in prose().items():
        wrong += [
            (path, i)
            for i in re.findall(r"\bepochauth(?:\.oauth)?\.[EW]\d{3}\b", text)
            if i not in ids
        ]
        wrong += [
            (path, c) for c in re.findall(r"manage\.py (epochauth_\w+)", text) if c not in commands
        ]
        for block in re.findall(r"^EPOCHAUTH = \{\n(.*?)^\}", text, flags=re.M | re.S):
            keys = re.findall(r'^    "([A-Z_]+)":', block, flags=re.M)
            wrong += [(path, k) for k in keys if k not in DEFAULTS]
    assert not wrong


def test_the_readme_stays_a_front_door() -> None:
    lines = len(README.read_text().splitlines())
    assert lines < README_MAX_LINES, (
        f"README.md has {lines} lines: the detail belongs in docs/ (docs/handbook.md, a guide)"
    )


def readme_links() -> list[tuple[str, str]]:
    """(file, anchor) of each relative link of the README; Sphinx does not read it, so nothing else
    checks them."""
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    relative = [t for t in targets if not re.match(r"[a-z]+:", t)]
    return [(file, anchor) for file, _, anchor in (t.partition("#") for t in relative)]


def test_the_readme_links_to_files_that_exist() -> None:
    missing = [file for file, _ in readme_links() if file and not (ROOT / file).exists()]
    assert not missing


def test_the_readme_links_to_headings_that_exist(built_docs: Path) -> None:
    """A link such as docs/handbook.md#revocation names a section of the built page."""
    broken = []
    for file, anchor in readme_links():
        if not anchor:
            continue
        if not file:
            ids = {make_id(h) for h in re.findall(r"^#+ (.+)$", README.read_text(), flags=re.M)}
            broken += [anchor] if anchor not in ids else []
            continue
        assert file.startswith("docs/") and file.endswith(".md"), file
        built = page(built_docs, file.removeprefix("docs/").removesuffix(".md"))
        broken += [f"{file}#{anchor}"] if f'id="{anchor}"' not in built else []
    assert not broken
    assert any(anchor for _, anchor in readme_links())


def test_read_the_docs_builds_with_every_warning_an_error() -> None:
    """Read the Docs builds what CI builds: docs/conf.py, -W, the docs extra, Graphviz's dot."""
    config = yaml.safe_load((ROOT / ".readthedocs.yaml").read_text())
    assert config["version"] == 2
    assert config["sphinx"] == {"configuration": "docs/conf.py", "fail_on_warning": True}
    assert "graphviz" in config["build"]["apt_packages"]
    assert {"method": "pip", "path": ".", "extra_requirements": ["docs"]} in config["python"][
        "install"
    ]
