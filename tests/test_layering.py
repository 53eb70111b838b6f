"""The package's import directions (docs/ARCHITECTURE.md), read from every module's source, imports
inside functions included: a function-local import cannot hide a cycle."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lgm_gcp"
PLUGIN = ROOT / "hydra_plugins"
# the option packages: their classes are what a config group's YAML names, written in options' vocabulary
OPTION_PACKAGES = {"models", "data", "losses", "schedules", "loggers", "weights", "robustness", "optim"}
TOP = {"entrypoint"}  # the console scripts' module: above engine and the SLURM launcher plugin
# part -> parts it must not import (the top-level modules count as parts: lgm_gcp.assemble is "assemble")
FORBIDDEN = {
    # the bottom: the field vocabulary, the derived schemas, the group list, instantiate
    "options": {"config", "engine", "analysis", "assemble"} | OPTION_PACKAGES | TOP,
    # registration, composition and resolvers: above every option package, below the engine
    "config": {"engine", "analysis", "assemble", "weights", "robustness"} | TOP,
    "engine": {"analysis", "robustness"} | TOP,  # the landscape probe is an engine hook; analysis reads runs
    "models": {"config", "weights", "engine", "analysis", "data", "assemble"} | TOP,  # weights meet models above
    "weights": {"config", "engine", "analysis", "assemble"} | TOP,
    "data": {"config", "engine", "models", "losses", "analysis", "assemble"} | TOP,
    "losses": {"config", "engine", "models", "data", "analysis", "assemble"} | TOP,
    "loggers": {"config", "engine", "analysis", "models", "assemble"} | TOP,
    "schedules": {"config", "engine", "models", "data", "losses", "analysis", "assemble"} | TOP,
    "robustness": {"config", "engine", "assemble"} | TOP,
    "analysis": TOP,
}


def part_files(part: str) -> list:
    folder = PACKAGE / part
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [PACKAGE / f"{part}.py"]


def imported_parts(path: Path) -> set:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        parts |= {n.split(".")[1] for n in names if n.startswith("lgm_gcp.") and n.count(".") >= 1}
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_no_part_imports_a_part_above_it(part):
    offenders = {str(p.relative_to(PACKAGE)): sorted(imported_parts(p) & FORBIDDEN[part]) for p in part_files(part)}
    assert not {k: v for k, v in offenders.items() if v}


def test_no_part_but_the_top_imports_the_slurm_plugin():
    """Hydra takes launchers from the ``hydra_plugins`` namespace, and the plugin imports the engine's sweep
    records: the engine importing it back would be an arrow up. Only ``lgm_gcp.entrypoint`` registers it."""
    importers = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if "hydra_plugins" in imported_roots(p)}
    assert importers == {"lgm_gcp/entrypoint.py"}


def imported_roots(path: Path) -> set:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add((node.module or "").split(".")[0])
    return roots


@pytest.mark.parametrize("part", ["config", "options"])
def test_config_layer_imports_no_torch(part):
    for path in (PACKAGE / part).rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "torch" not in names, path


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in [*PACKAGE.rglob("*.py"), *PLUGIN.rglob("*.py")]}


def packages_above(name: str) -> set:
    """The packages whose ``__init__`` Python runs before ``name``: importing a.b.c runs a, then a.b."""
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & MODULES.keys()


def imported_modules(name: str, path: Path) -> set:
    """The package's modules that ``name`` imports, anywhere in its source: ``from a.b import c`` counts
    as a.b.c where c is a module, else as a.b; and every package ``__init__`` that runs first, above
    ``name`` itself and above each module it imports, is an edge too."""
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
    found |= packages_above(name)
    found |= {package for module in found for package in packages_above(module)}
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


def test_an_init_that_imports_its_own_module_is_a_cycle():
    """lgm_gcp.config's __init__ once imported config.register, which resolvers reached through the
    schedules' config.fields: importing lgm_gcp.schedules.policies first failed with a partly initialised
    module. Counting the __init__ that runs first is what finds such a circle."""
    graph = {"p": {"p.a"}, "p.a": packages_above_of("p.a", {"p", "p.a"})}
    assert import_cycles(graph) == [["p", "p.a"]]


def packages_above_of(name: str, modules: set) -> set:
    parts = name.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))} & modules


def test_a_cycle_is_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"


def documented_layers() -> dict:
    """part -> its layer number, from docs/ARCHITECTURE.md's list between <!-- layers --> markers."""
    block = ARCHITECTURE.read_text().split("<!-- layers -->")[1].split("<!-- end layers -->")[0]
    layers = {}
    for line in block.strip().splitlines():
        number, _, parts = line.partition(". ")
        layers.update({part.strip(" `"): int(number) for part in parts.split(",")})
    return layers


def part_of(path: Path) -> str:
    if path.is_relative_to(PLUGIN):
        return "hydra_plugins"
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def test_every_import_goes_down_the_documented_layers():
    """docs/ARCHITECTURE.md's layer list is the code's: each part is listed, and imports only from its own
    layer or those below (a new part, or an arrow up, fails here until the document says it)."""
    layers = documented_layers()
    files = [p for p in [*PACKAGE.rglob("*.py"), *PLUGIN.rglob("*.py")] if p.name != "__init__.py" or
             p.parent not in (PACKAGE, PLUGIN)]
    unlisted = {part_of(p) for p in files} - layers.keys()
    assert unlisted == set(), f"parts missing from {ARCHITECTURE.name}'s layers"
    upward = {}
    for path in files:
        here = part_of(path)
        above = {part for part in imported_parts(path) | ({"hydra_plugins"} & imported_roots(path))
                 if layers.get(part, 0) > layers[here]}
        if above:
            upward[str(path.relative_to(ROOT))] = sorted(above)
    assert upward == {}


def test_the_documented_preset_count_is_the_metafiles():
    from collections import Counter

    from lgm_gcp.config.metafile import generated_rows

    per_file = Counter(name for name, _, _ in generated_rows().values())
    written = f"{sum(per_file.values())}: " + ", ".join(f"{name} {n}" for name, n in
                                                        sorted(per_file.items(), key=lambda kv: (-kv[1], kv[0])))
    assert f"<!-- presets -->{written}<!-- end presets -->" in " ".join(ARCHITECTURE.read_text().split())


def test_the_readme_stays_short():
    """A quick start, the groups and pointers: details live in docs/ (timings in docs/benchmarks.md)."""
    words = len((ROOT / "README.md").read_text().split())
    assert words <= 1500, f"README.md has {words} words"
