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
