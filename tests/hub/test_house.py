"""The hub package's shape, read from its source: layers that import only downwards, no circle, short modules.

docs/design.md ("The hub's house") draws the same layers. A module of a lower layer that imports a
higher one, a circle between modules, or an import hidden inside a function fails here with the
lines to look at.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "hub" / "hpclab_hub"

#: lowest first: a module may import its own package, and packages of lower layers only
LAYERS: list[tuple[str, ...]] = [
    ("deferred_imports", "__init__"),  # leaves: the start of every hub process and server; the package's version
    ("config",),
    ("ops", "kernels"),
    ("backends",),  # the protocol every backend implements, and what backends share
    ("backends.local", "backends.slurm"),
    ("spawner",),
    ("web",),
    ("auth",),
    ("host_notes", "reload"),  # what a running hub checks and does on SIGHUP
    ("hubconfig",),
    ("jupyterhub_config", "cli"),
]
MAX_LINES = 350


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts)] = path
    return found


def _owner(module: str) -> tuple[int, str]:
    """(layer index, package) of a module: the longest package prefix named in LAYERS."""
    best = (-1, "")
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and len(package) > len(best[1]):
                best = (index, package)
    assert best[0] >= 0, f"{module} is in no layer of LAYERS: add its package there (and to docs/design.md)"
    return best


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported hub module, line, at top level) for every import of the hub's own modules.

    An import inside a function counts as top level where a ``# deferred:`` comment on its line or the
    line above says why (a measured start-up cost).
    """
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text, str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # imports under `if TYPE_CHECKING:` at the top count as top level
        if isinstance(node, ast.If):
            top_level.update(id(child) for child in node.body)
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").startswith("hpclab_hub"):
                target = (node.module or "").removeprefix("hpclab_hub").lstrip(".")
            else:
                continue
            found.append((target or "__init__", node.lineno, id(node) in top_level or _deferred(lines, node.lineno)))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("hpclab_hub"):
                    found.append((alias.name.removeprefix("hpclab_hub").lstrip(".") or "__init__", node.lineno,
                                  id(node) in top_level or _deferred(lines, node.lineno)))
    return found


def _deferred(lines: list[str], lineno: int) -> bool:
    return any("# deferred:" in lines[i] for i in (lineno - 1, lineno - 2) if 0 <= i < len(lines))


def _resolve(target: str, modules: dict[str, Path]) -> str:
    if target in modules:
        return target
    if f"{target}.__init__" in modules:
        return f"{target}.__init__"
    return target.rsplit(".", 1)[0] + ".__init__" if target.rsplit(".", 1)[0] + ".__init__" in modules else target


def test_every_import_of_the_hub_goes_down_its_layers_from_the_top_of_a_module():
    modules = _modules()
    wrong = []
    for module, path in modules.items():
        layer, package = _owner(module)
        for target, line, top in _imports(module, path):
            where = f"{path.relative_to(REPO_ROOT)}:{line} imports {target}"
            if not top:
                wrong.append(f"{where} inside a function (imports go at the top of the module)")
            target_layer, target_package = _owner(_resolve(target, modules))
            if target_package != package and target_layer >= layer:
                wrong.append(f"{where}: layer {LAYERS[layer]} may only import lower layers, not {LAYERS[target_layer]}")
    assert not wrong, "\n".join(wrong)


def test_no_circle_between_the_hubs_modules():
    modules = _modules()
    graph = {module: {_resolve(t, modules) for t, _, _ in _imports(module, path)} - {module} for module, path in modules.items()}
    state: dict[str, int] = {}
    circles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(" -> ".join(trail[trail.index(nxt):] + [nxt]) if nxt in trail else f"{node} -> {nxt}")
            elif nxt in graph and not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])
    assert not circles, "\n".join(circles)


def test_no_module_of_the_hub_is_longer_than_one_sitting():
    long = {str(path.relative_to(REPO_ROOT)): n for path in _modules().values() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_layers_name_every_package_of_the_hub():
    packages = {".".join(p.relative_to(PACKAGE).parts) for p in PACKAGE.rglob("__init__.py")}
    for package in packages - {"."}:
        name = package.removesuffix("__init__.py").rstrip(".")
        if name and "templates" not in name:
            _owner(name)
