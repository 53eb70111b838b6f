"""The package's import directions (docs/ARCHITECTURE.md), read from every module's source, imports
inside functions included: a function-local import cannot hide a cycle."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lgm_gcp"
# part -> parts it must not import
FORBIDDEN = {
    "engine": {"analysis", "robustness"},  # the landscape probe is an engine hook; analysis reads runs
    "models": {"weights", "engine", "analysis", "data"},  # weight files are applied above (assemble.py)
    "weights": {"engine", "analysis"},
    "data": {"engine", "models", "losses", "analysis"},
    "losses": {"engine", "models", "data", "analysis"},
    "loggers": {"engine", "analysis", "models"},
    "config": {"engine", "models", "data", "analysis", "weights"},
    # the schedules' signatures use config.fields; the config's resolvers read the GCP policy table (modules,
    # not these packages, decide: no cycle between modules, below)
    "schedules": {"engine", "models", "data", "losses", "analysis"},
}


def imported_parts(path: Path) -> set:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        parts |= {n.split(".")[1] for n in names if n.startswith("lgm_gcp.") and n.count(".") >= 1}
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_part_imports_a_part_above_it(part):
    offenders = {str(p.relative_to(PACKAGE)): sorted(imported_parts(p) & FORBIDDEN[part])
                 for p in (PACKAGE / part).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}


def test_config_imports_no_torch():
    for path in (PACKAGE / "config").rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in names, path


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_modules(name: str, path: Path) -> set:
    """The package's modules that ``name`` imports, anywhere in its source: ``from a.b import c`` counts
    as a.b.c where c is a module, else as a.b. (A package's ``__init__`` running first is not an edge.)"""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in MODULES}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found |= {sub} if sub in MODULES else {base} if base in MODULES else set()
    return found - {name}


def import_cycles(graph: dict) -> list:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_module_imports_itself_through_others():
    """Across every package, function-local imports included: e.g. config.schema -> config.metafile ->
    config.schema (the metafile reading the group list from the schema, the schema registering the
    metafile source) was such a cycle; the group list now lives in config.groups and registration in
    config.register, above both."""
    assert import_cycles({name: imported_modules(name, path) for name, path in MODULES.items()}) == []


def test_a_cycle_is_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
