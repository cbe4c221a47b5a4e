"""The package's layering, read from the source with ``ast`` (no import is executed).

Layers, bottom up:

* the **core** (:data:`CORE`, plus every module under a :data:`CORE_PACKAGES` package): the
  methods and the model seams. It imports the standard library, torch and other core modules
  only, so that ``import modbalance`` needs nothing else and the methods never depend on the
  trainer or the data code;
* the periphery: ``data``, ``prep``, ``encoders``, ``train``, ``commands``, ``report`` and the
  rest. ``report`` reads run folders through :mod:`modbalance.runfolder` and never imports the
  trainer.

Every ``import`` counts, wherever it is written: at module level, inside a function (a lazy
import is still a dependency, only a later one) or in a ``try`` block. Imports
under ``if TYPE_CHECKING:`` do not count: they never run. The cycle check uses the same edges,
lazy ones included, so a pair of modules that import each other, one of them lazily (which
Python tolerates), is reported as well. Python's implicit import of a parent package
(``import modbalance.train.x`` runs ``modbalance/train/__init__.py`` first) is not an edge of the
cycle graph (every package would otherwise be a cycle with its submodules), but it counts for
what a module loads: the report check follows it, and also imports ``modbalance.report`` in a
fresh interpreter to see what it really loads.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "modbalance"

#: The core, by name: the one place that lists it.
CORE: frozenset[str] = frozenset(
    {
        "modbalance",  # the package's __init__ re-exports the core
        "modbalance._distributed",
        "modbalance.fusion",
        "modbalance.imbalance",
        "modbalance.model",
        "modbalance.ogm",
        "modbalance.opm",
        "modbalance.presets",
        "modbalance.registry",
        "modbalance.scores",
    }
)
#: Packages whose every module is core (method and interaction modules, present or future).
CORE_PACKAGES: tuple[str, ...] = ("modbalance.methods", "modbalance.interaction")
#: What the core may import besides other core modules.
CORE_ALLOWED_ROOTS: frozenset[str] = frozenset({"torch", "__future__", *sys.stdlib_module_names})
#: Periphery the core must never reach (also checked by name, for a clear message).
PERIPHERY: tuple[str, ...] = (
    "modbalance.train",
    "modbalance.data",
    "modbalance.prep",
    "modbalance.encoders",
    "modbalance.commands",
    "modbalance.report",
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def is_core(name: str) -> bool:
    return name in CORE or any(name == p or name.startswith(p + ".") for p in CORE_PACKAGES)


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) blocks."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(name: str) -> set[str]:
    """Fully qualified names this module imports (``from a import b`` gives ``a.b`` when that is a module)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    return imports_in(path.read_text(), package)


def imports_in(source: str, package: str) -> set[str]:
    """Imported names in ``source``, a module of ``package`` (for relative imports)."""
    tree = ast.parse(source)
    skipped = _type_checking_blocks(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    return found


def internal_edges(name: str) -> set[str]:
    """The modbalance modules ``name`` imports (a dotted name resolved to its longest module prefix)."""
    edges = set()
    for target in imports_of(name):
        if target.split(".")[0] != PACKAGE:
            continue
        while target not in MODULES and "." in target:
            target = target.rpartition(".")[0]
        if target != name:
            edges.add(target)
    return edges


GRAPH: dict[str, set[str]] = {name: internal_edges(name) for name in MODULES}


def test_the_core_list_names_real_modules():
    assert set(MODULES) >= CORE, sorted(CORE - set(MODULES))


@pytest.mark.parametrize("name", sorted(n for n in MODULES if is_core(n)))
def test_core_imports_only_torch_stdlib_and_core(name):
    bad = set()
    for target in imports_of(name):
        root = target.split(".")[0]
        if root == PACKAGE:
            resolved = target
            while resolved not in MODULES and "." in resolved:
                resolved = resolved.rpartition(".")[0]
            if not is_core(resolved):
                bad.add(resolved)
        elif root not in CORE_ALLOWED_ROOTS:
            bad.add(target)
    assert not bad, f"{name} ({MODULES[name]}) imports outside the core: {sorted(bad)}"
    reached = {t for t in GRAPH[name] if any(t == p or t.startswith(p + ".") for p in PERIPHERY)}
    assert not reached, f"{name} imports the periphery: {sorted(reached)}"


def test_report_does_not_import_the_trainer():
    reached = reachable("modbalance.report")
    trainer = sorted(t for t in reached if t == "modbalance.train" or t.startswith("modbalance.train."))
    assert not trainer, f"modbalance.report reaches the trainer: {trainer}"
    # The same, observed: what importing the module really loads.
    code = "import sys, modbalance.report; print(sorted(m for m in sys.modules if m.startswith('modbalance.train')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded


def reachable(start: str) -> set[str]:
    """Modules that importing ``start`` loads: its imports, theirs, and each one's parent packages."""
    seen: set[str] = set()
    stack = [start]
    while stack:
        current = stack.pop()
        parents = {".".join(current.split(".")[:i]) for i in range(1, current.count(".") + 1)}
        for target in GRAPH[current] | parents:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (a list of modules, first == last), or None; iterative depth-first search."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        path = [root]
        iterators = [iter(sorted(graph[root]))]
        state[root] = 1
        while iterators:
            target = next(iterators[-1], None)
            if target is None:
                state[path.pop()] = 2
                iterators.pop()
                continue
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                state[target] = 1
                path.append(target)
                iterators.append(iter(sorted(graph.get(target, ()))))
    return None


def test_no_import_cycles_among_modbalance_modules():
    # A package's __init__ importing its own submodules is how packages re-export; the edge from a
    # submodule back up to its package is Python's implicit parent import, not one we write, and it
    # is not in the graph. Every written edge counts, lazy (in-function) imports included.
    cycle = find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_what_they_claim():
    # The cycle finder finds a planted cycle; the import reader sees lazy imports and skips TYPE_CHECKING.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    source = (
        "from typing import TYPE_CHECKING\nimport torch\nfrom . import opm\n"
        "if TYPE_CHECKING:\n    from modbalance.train import config\n"
        "def f():\n    from modbalance.data import synthetic\n"
    )
    assert imports_in(source, "modbalance") == {"typing", "torch", "modbalance.opm", "modbalance.data.synthetic"}
    assert not is_core("modbalance.train.loop") and is_core("modbalance.methods.anything")
