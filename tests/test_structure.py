"""The shape of the package: the settings module knows no other module of epochauth (each cache
registers its own reset), no import cycles, and how densely our modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import epochauth
from epochauth import conf

PACKAGE = Path(epochauth.__file__).parent


def test_conf_imports_no_epochauth_module():
    ours = []
    for node in ast.walk(ast.parse((PACKAGE / "conf.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (
            node.level or (node.module or "").startswith("epochauth")
        ):
            ours.append(node.module)
        elif isinstance(node, ast.Import):
            ours += [alias.name for alias in node.names if alias.name.startswith("epochauth")]
    assert ours == []


def test_every_process_cache_is_reset_by_a_settings_change(settings):
    from epochauth import issuers, keys, provisioning, revocation, tokens, users, verification
    from epochauth.oidc import providers

    for reset in (
        keys.get_keyring.cache_clear,
        keys._keyed.cache_clear,
        users.primary_key.cache_clear,
        tokens.verified_tokens.clear,
        revocation.state.reset,
        issuers.db_issuers.reset,
        issuers.settings_issuers.cache_clear,
        issuers.jwks_cache.reset,
        provisioning.reset,
        providers.metadata_cache.clear,
        verification.local_policy.cache_clear,
        verification.issuer_url_acceptable.cache_clear,
    ):
        assert reset in conf._resets, reset
    tokens.verified_tokens.put("a-token", tokens.Verified({"iss": "x"}, 0.0))
    settings.EPOCHAUTH = {**settings.EPOCHAUTH, "LEEWAY": 5}
    assert tokens.verified_tokens.get("a-token") is None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _sources() -> dict[str, Path]:
    """epochauth's modules by dotted name; migrations are generated and import nothing of ours."""
    return {
        _module_name(path): path
        for path in sorted(PACKAGE.rglob("*.py"))
        if "migrations" not in path.parts
    }


def _own_imports(module: str, path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """``(statement, imported name, inside a function)`` for each import of a epochauth module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ImportFrom):
                base = (
                    package.split(".")[: len(package.split(".")) - child.level + 1]
                    if child.level
                    else []
                )
                target = ".".join([*base, *([child.module] if child.module else [])])
                if target.split(".")[0] == "epochauth":
                    found.extend(
                        (child, f"{target}.{alias.name}", in_function) for alias in child.names
                    )
            elif isinstance(child, ast.Import):
                ours = [alias.name for alias in child.names if alias.name.startswith("epochauth")]
                found.extend((child, name, in_function) for name in ours)
            visit(child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef))

    visit(ast.parse(path.read_text()), False)
    return found


def _import_graph(modules: dict[str, Path], with_functions: bool) -> dict[str, set[str]]:
    """Which of our modules each module imports; ``from .x import name`` names module ``x``, and
    ``from . import x`` names ``x`` when it is a module."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for _, imported, in_function in _own_imports(name, path):
            if in_function and not with_functions:
                continue
            while imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported != name:
                graph[name].add(imported)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = [stack.pop()]
            while component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycle_in_epochauth():
    """No cycle among the module-level imports (the issue's goal: importing any module never meets a
    half-initialised one), and none either once the imports inside functions are counted: a lazy import
    that closes a circle hides the cycle from Python, not from whoever reads the code. The implicit
    import of a package's ``__init__`` is not an edge; only what the import statements name."""
    modules = _sources()
    assert _cycles(_import_graph(modules, with_functions=False)) == []
    assert _cycles(_import_graph(modules, with_functions=True)) == []


def test_the_issuer_model_imports_no_network_layer():
    graph = _import_graph(_sources(), with_functions=True)
    leaves = {
        "epochauth.issuer_config",
        "epochauth.keys",
        "epochauth.profiles",
        "epochauth.scopes",
    }
    assert graph["epochauth.models"] == leaves
    # The token profiles' rules are a leaf too: no settings, models or network.
    assert graph["epochauth.profiles"] == set()


def _own_import_density() -> float:
    """Import statements of our own modules (``from epochauth...``, relative ones, ``import epochauth``)
    per 1,000 lines of epochauth, migrations excluded: one statement counts once however many names."""
    statements = lines = 0
    for name, path in _sources().items():
        statements += len({id(statement) for statement, _, _ in _own_imports(name, path)})
        lines += len(path.read_text().splitlines())
    return statements * 1000 / lines


def test_imports_between_our_modules_are_at_most_15_per_1000_lines():
    """DRF, simplejwt and Django contrib: 6-17 per 1,000 lines. Modules are imported as a whole, as DRF
    does (``from . import conf, exceptions``), so one statement serves a module's every use."""
    assert _own_import_density() <= 15
