"""The package's import structure: no import cycles, lower layers never import higher ones.

Imports are read from the source (``ast``), module-level and function-local
alike, including ``if TYPE_CHECKING:`` blocks.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

#: The flow, bottom to top: a module may import its own layer and the ones below.
LAYERS: list[tuple[str, ...]] = [
    (
        "hiscale._version",
        "hiscale._config",
        "hiscale._paths",
        "hiscale._util",
        "hiscale._distributed",
    ),
    ("hiscale.data",),
    ("hiscale.laws",),
    ("hiscale.priors",),
    ("hiscale.modeling",),
    ("hiscale.infer",),
    ("hiscale.population",),
    ("hiscale.planning",),
    ("hiscale.backtesting",),
    ("hiscale.plots",),
    ("hiscale.cli", "hiscale.__main__"),
    # shipped test helpers (fake fits): on top, so nothing in hiscale may import them
    ("hiscale.testing",),
]
#: May import anything; nothing in hiscale imports it.
CONTRIB = "hiscale.contrib"
#: The package root (the public API): nothing in hiscale imports it.
ROOT = "hiscale"


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "hiscale").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """hiscale modules imported anywhere in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            base = node.module or ""
            # 'from pkg import mod' imports the module pkg.mod; 'from mod import name' mod
            names = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        for name in names:
            if name == ROOT or name.startswith(f"{ROOT}."):
                while name not in MODULES:  # 'import hiscale.x.y' of a non-module attribute
                    name = name.rsplit(".", 1)[0]
                found.add(name)
    return found


GRAPH = {mod: _imports(path) - {mod} for mod, path in MODULES.items()}


def _layer(mod: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(mod == p or mod.startswith(f"{p}.") for p in prefixes):
            return i
    return None


def test_every_module_has_a_place():
    homeless = [
        m for m in MODULES if m not in (ROOT, CONTRIB) and not m.startswith(f"{CONTRIB}.")
        if _layer(m) is None
    ]  # fmt: skip
    assert not homeless, f"add these modules to LAYERS: {homeless}"


def test_nothing_in_hiscale_imports_the_test_helpers():
    users = sorted(m for m, deps in GRAPH.items() if "hiscale.testing" in deps)
    assert not users, f"hiscale.testing is for tests only, imported by {users}"
    assert "hiscale.infer.result" in GRAPH["hiscale.testing"]


def test_the_import_reader_sees_imports():
    assert "hiscale.infer.result" in GRAPH["hiscale.infer.fit"]
    assert "hiscale.cli.report" in GRAPH["hiscale.cli.predict"]
    assert "hiscale.backtesting.runner" in GRAPH["hiscale.plots.heatmap"]  # function-local


@pytest.mark.parametrize("mod", sorted(MODULES))
def test_lower_layers_never_import_higher_ones(mod):
    if mod == ROOT or mod == CONTRIB or mod.startswith(f"{CONTRIB}."):
        return
    here = _layer(mod)
    for dep in GRAPH[mod]:
        assert dep != ROOT, f"{mod} imports the package root (import from the defining module)"
        assert not dep.startswith(CONTRIB), f"{mod} imports {dep}: nothing may import contrib"
        assert _layer(dep) <= here, f"{mod} (layer {LAYERS[here]}) imports higher {dep}"


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (module -> imported modules), or None."""
    state: dict[str, int] = {}  # 1 = on the DFS stack, 2 = done
    stack: list[str] = []

    def visit(mod: str) -> list[str] | None:
        state[mod] = 1
        stack.append(mod)
        for dep in sorted(graph.get(mod, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if dep not in state and (cycle := visit(dep)):
                return cycle
        stack.pop()
        state[mod] = 2
        return None

    for mod in sorted(graph):
        if mod not in state and (cycle := visit(mod)):
            return cycle
    return None


def test_cycle_finder():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_cycles():
    cycle = _find_cycle(GRAPH)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
