"""The docs' reference pages, generated from the code so that they cannot drift from it.

A Sphinx extension (directives ``epochauth-settings``, ``epochauth-endpoints``, ``epochauth-signals``,
``epochauth-checks`` and ``epochauth-commands``), and the writer of the handbook's settings table::

    python docs/_ext/epochauth_reference.py --write   # after changing conf.DESCRIPTIONS
    python docs/_ext/epochauth_reference.py --check   # exit 1 when the table is stale

Sources: settings from ``epochauth.conf.DEFAULTS`` and ``DESCRIPTIONS``; endpoints from the URL
modules as the demo project (``testproject.urls``) mounts them; signals and their ``#:`` comments
from ``epochauth.signals``; system checks from the ``id=`` of every
``checks.Error``/``checks.Warning`` in ``epochauth/**/checks.py``; management commands from their
argparse parsers.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
#: The manual: its settings table is written from the code (``--write``), not read in at build time,
#: so that the page reads the same on GitHub.
HANDBOOK = ROOT / "docs" / "handbook.md"
TABLE_START = (
    "<!-- settings table: generated from epochauth.conf (edit DESCRIPTIONS there, then run "
    "python docs/_ext/epochauth_reference.py --write) -->"
)
TABLE_END = "<!-- end of the generated settings table -->"
#: Seconds per unit, largest first: a duration is written in the largest unit that divides it.
DURATION_UNITS = (("day", 86400), ("h", 3600), ("min", 60), ("s", 1))


def setup_django() -> None:
    """Configure Django with the demo project's settings (every optional app installed)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "testproject.settings")
    import django

    django.setup()


# Settings -------------------------------------------------------------------------------------------


def format_default(name: str, value: Any) -> str:
    """A default as the table shows it: durations and byte sizes in words, other values as Python."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        unit, size = next((u, s) for u, s in DURATION_UNITS if seconds % s == 0)
        count = seconds // size
        return f"{count} {unit}{'s' if unit == 'day' and count != 1 else ''}"
    if name.endswith("_BYTES") and isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        return f"{value // 1024} KiB"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value!r}`"


def settings_rows() -> Iterator[tuple[str, str, str]]:
    from epochauth.conf import DEFAULTS, DESCRIPTIONS

    for name, value in DEFAULTS.items():
        yield name, format_default(name, value), DESCRIPTIONS[name]


def settings_table() -> list[str]:
    """The handbook's settings table (Markdown)."""
    lines = ["| Key | Default | Meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | {default} | {text} |" for name, default, text in settings_rows()]
    return lines


def with_settings_table(page: str) -> str:
    """The page with its generated settings table rewritten from the code."""
    before, rest = page.split(TABLE_START + "\n", 1)
    _, after = rest.split(TABLE_END, 1)
    return before + TABLE_START + "\n" + "\n".join(settings_table()) + "\n" + TABLE_END + after


def settings_markdown() -> list[str]:
    lines: list[str] = []
    for name, default, text in settings_rows():
        lines += [f"(setting-{name})=", f"## `{name}`", "", f"Default: {default}", "", text, ""]
    return lines


# Endpoints ------------------------------------------------------------------------------------------


def endpoints() -> Iterator[tuple[str, str, list[str], str]]:
    """(path, URL name, methods, first paragraph of the view's docstring) of each epochauth URL."""
    from django.urls import URLResolver, get_resolver

    for mount in get_resolver("testproject.urls").url_patterns:
        module = getattr(mount, "urlconf_name", None)
        if not isinstance(mount, URLResolver) or not getattr(module, "__name__", "").startswith(
            "epochauth"
        ):
            continue
        for pattern in mount.url_patterns:
            view = getattr(pattern.callback, "view_class", pattern.callback)
            methods = [
                m.upper()
                for m in getattr(view, "http_method_names", [])
                if m not in ("options", "head")
            ]
            methods = [m for m in methods if hasattr(view, m.lower())]
            doc = (inspect.getdoc(view) or "").split("\n\n")[0].replace("\n", " ")
            yield f"/{mount.pattern}{pattern.pattern}", pattern.name or "", methods, doc


def endpoints_markdown() -> list[str]:
    lines = ["| Path | Methods | URL name | View |", "|---|---|---|---|"]
    for path, name, methods, doc in endpoints():
        lines.append(f"| `{path}` | {', '.join(methods)} | `{name}` | {doc} |")
    return lines


# Signals --------------------------------------------------------------------------------------------


def signals() -> list[tuple[str, str]]:
    """(name, its ``#:`` comment) of each signal of ``epochauth.signals``, in source order."""
    from django.dispatch import Signal
    from sphinx.pycode import ModuleAnalyzer

    import epochauth.signals

    comments = ModuleAnalyzer.for_module("epochauth.signals").find_attr_docs()
    names = [n for n, v in vars(epochauth.signals).items() if isinstance(v, Signal)]
    return [(n, " ".join(comments.get(("", n), [""])).strip()) for n in names]


def signals_markdown() -> list[str]:
    lines: list[str] = []
    for name, comment in signals():
        lines += [f"(signal-{name})=", f"## `{name}`", "", comment, ""]
    return lines


# System checks --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckMessage:
    id: str
    level: str
    message: str
    hint: str
    module: str
    line: int


def _text(node: ast.expr | None) -> str:
    """A message argument as written: an f-string's fields shown as ``{…}``."""
    if node is None:
        return ""
    if isinstance(node, ast.Constant):
        return str(node.value)
    if isinstance(node, ast.JoinedStr):
        return "".join(_text(v) if isinstance(v, ast.Constant) else "{…}" for v in node.values)
    if isinstance(node, ast.BinOp):
        return _text(node.left) + _text(node.right)
    return "{…}"


def check_messages() -> list[CheckMessage]:
    """Every ``checks.Error(..., id=...)`` and ``checks.Warning`` in ``epochauth/**/checks.py``."""
    found: list[CheckMessage] = []
    for path in sorted((ROOT / "epochauth").rglob("checks.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.attr not in ("Error", "Warning") or "id" not in keywords:
                continue
            message = _text(node.args[0] if node.args else keywords.get("msg"))
            hint = _text(keywords.get("hint"))
            check_id = _text(keywords["id"])
            found.append(
                CheckMessage(check_id, node.func.attr, message, hint, module, node.lineno)
            )
    return sorted(found, key=lambda m: (m.id.count("."), m.id, m.module, m.line))


def checks_markdown() -> list[str]:
    lines: list[str] = []
    by_id: dict[str, list[CheckMessage]] = {}
    for m in check_messages():
        by_id.setdefault(m.id, []).append(m)
    for check_id, messages in by_id.items():
        lines += [f"(check-{check_id})=", f"## `{check_id}`", ""]
        lines += [f"{messages[0].level}, from `{messages[0].module}`:", ""]
        for m in messages:
            lines.append(f"- {m.message}" + (f" *Hint:* {m.hint}" if m.hint else ""))
        lines.append("")
    return lines


# Management commands --------------------------------------------------------------------------------


#: The apps whose management commands are documented: epochauth's and those of its optional apps.
COMMAND_APPS = ("epochauth", "epochauth.oauth", "epochauth.tokenmanager")


def _commands(app: str) -> list[str]:
    from django.core.management import find_commands

    return find_commands(str(ROOT.joinpath(*app.split(".")) / "management"))


def command_app(name: str) -> str:
    return next(app for app in COMMAND_APPS if name in _commands(app))


def command_names() -> list[str]:
    return sorted(name for app in COMMAND_APPS for name in _commands(app))


#: Options every Django command has: left out of each command's help, named once on the page.
BASE_OPTIONS = {
    "--version",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
}


def command_parser(name: str) -> argparse.ArgumentParser:
    from django.core.management import load_command_class

    command = load_command_class(command_app(name), name)
    command.suppressed_base_arguments = BASE_OPTIONS
    return command.create_parser("manage.py", name)


def command_help(name: str) -> list[str]:
    """``manage.py NAME --help``, and each subcommand's help after it."""
    parser = command_parser(name)
    texts = [parser.format_help()]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            texts += [sub.format_help() for sub in action.choices.values()]
    return texts


def commands_markdown() -> list[str]:
    lines: list[str] = []
    for name in command_names():
        lines += [f"(command-{name})=", f"## `{name}`", ""]
        for text in command_help(name):
            lines += ["```text", text.rstrip(), "```", ""]
    return lines


# Pages that are files of the repository -------------------------------------------------------------

#: docname -> (the repository file it shows, its title there, the title here). Links between these
#: files are rewritten to the pages; any other link to a repository file fails the build (-W).
INCLUDED = {
    "benchmarks": ("bench/README.md", "# Benchmarks", "# Benchmarks"),
    "changelog": ("CHANGELOG.md", "# Changelog", "# Changelog"),
}


def included_source(docname: str) -> str:
    path, title, new_title = INCLUDED[docname]
    text = (ROOT / path).read_text()
    if not text.startswith(title + "\n"):
        raise ValueError(f"{path} no longer starts with {title!r}")
    text = new_title + text[len(title) :]
    for page, (other, _, _) in INCLUDED.items():
        text = text.replace(f"]({other})", f"]({page}.md)")
    return text


# Sphinx ---------------------------------------------------------------------------------------------

GENERATORS = {
    "epochauth-settings": settings_markdown,
    "epochauth-endpoints": endpoints_markdown,
    "epochauth-signals": signals_markdown,
    "epochauth-checks": checks_markdown,
    "epochauth-commands": commands_markdown,
}


def setup(app: Any) -> dict[str, Any]:
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    setup_django()

    def directive(generate: Any) -> type:
        class Generated(SphinxDirective):
            def run(self) -> list[Any]:
                container = nodes.container()
                self.state.nested_parse(StringList(generate()), 0, container, match_titles=True)
                return container.children

        return Generated

    def read_included(app: Any, docname: str, source: list[str]) -> None:
        if docname in INCLUDED:
            app.env.note_dependency(str(ROOT / INCLUDED[docname][0]))
            source[0] = included_source(docname)

    for name, generate in GENERATORS.items():
        app.add_directive(name, directive(generate))
    app.connect("source-read", read_included)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(
        "--write", action="store_true", help="rewrite the handbook's settings table"
    )
    group.add_argument(
        "--check", action="store_true", help="exit 1 if the handbook's table is stale"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    handbook = HANDBOOK.read_text()
    expected = with_settings_table(handbook)
    if args.write:
        HANDBOOK.write_text(expected)
        return 0
    if handbook != expected:
        print(
            "docs/handbook.md: the settings table is stale: python docs/_ext/epochauth_reference.py --write"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
