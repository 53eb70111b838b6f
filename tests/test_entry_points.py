"""Every module imports on its own and every console script starts: nothing may depend on another module having
been imported first (issue 39: ``lgm-gcp-plot-lr --help`` and ``import lgm_gcp.schedules.policies`` once died
on a circular import that the suite missed, because the suite always imported the config first).

The fast tier forks one child per module from a parent that has loaded only third-party packages, so each child
starts with no lgm_gcp module loaded, as a fresh interpreter would, without paying torch's import a hundred
times. The slow tier runs each installed console script with --help as its own process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import resolved

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts[:-1] if p.name == "__init__.py" else
             p.relative_to(ROOT).with_suffix("").parts)
    for p in [*(ROOT / "lgm_gcp").rglob("*.py"), *(ROOT / "hydra_plugins").rglob("*.py")])

# Runs in a fresh interpreter: loads the third-party packages named in argv[2] only, then forks a child per
# job of argv[1], two at a time. A job is ["import", module]; the children's exit statuses, stdouts and the last
# lines of their stderr come back as one JSON list.
FORKING_RUNNER = r"""
import importlib, json, os, sys, tempfile, traceback
for heavy in json.loads(sys.argv[2]):
    try:
        importlib.import_module(heavy)
    except ImportError:
        pass
assert not [m for m in sys.modules if m == "lgm_gcp" or m.startswith(("lgm_gcp.", "hydra_plugins.lgm_gcp_slurm"))]


def child(job):
    try:
        importlib.import_module(job[1])
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


jobs, running, results = json.loads(sys.argv[1]), {}, []
while jobs or running:
    if jobs and len(running) < 2:
        job, out, err = jobs.pop(0), tempfile.TemporaryFile(), tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            status = child(job)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
        running[pid] = (job, out, err)
        continue
    pid, wait_status = os.wait()
    job, out, err = running.pop(pid)
    out.seek(0)
    err.seek(0)
    stderr = err.read().decode(errors="replace").strip().splitlines()
    results.append([job, os.waitstatus_to_exitcode(wait_status), out.read().decode(errors="replace"),
                    stderr[-1] if stderr else ""])
print(json.dumps(results))
"""
THIRD_PARTY = ["torch", "torchvision", "numpy", "hydra", "omegaconf", "yaml", "matplotlib.pyplot", "tqdm",
               "sklearn.datasets", "torch.utils.tensorboard", "timm"]


def run_forked(jobs: list, preload=THIRD_PARTY, path: str = "") -> list:
    prefix = f"import sys; sys.path.insert(0, {path!r})\n" if path else ""
    done = subprocess.run([sys.executable, "-c", prefix + FORKING_RUNNER, json.dumps(jobs), json.dumps(preload)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_module_imports_first_in_a_fresh_process():
    failed = {job[1]: last for job, status, _, last in run_forked([["import", m] for m in MODULES]) if status != 0}
    assert failed == {}


def test_a_circular_import_is_caught(tmp_path):
    """The runner itself: a module that can only be imported after another one fails in its child."""
    (tmp_path / "circ").mkdir()
    (tmp_path / "circ" / "__init__.py").write_text("from circ.top import T\n")
    (tmp_path / "circ" / "top.py").write_text("from circ.low import L\nT = 1\n")
    (tmp_path / "circ" / "low.py").write_text("from circ.top import T\nL = 2\n")
    results = {job[1]: (status, last) for job, status, _, last in
               run_forked([["import", "circ.low"], ["import", "json"]], preload=[], path=str(tmp_path))}
    (circ_status, last), (json_status, _) = results["circ.low"], results["json"]
    assert (circ_status, json_status) == (1, 0)
    assert "partially initialized module" in last


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_installed_console_script_help_in_its_own_process(name):
    path = shutil.which(name) or pytest.skip(f"{name} is not installed on PATH")
    done = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def test_one_start_builds_the_network_once_and_composes_once_before_hydra(tmp_path, monkeypatch):
    """lgm-gcp-train checks the network on the meta device in its preflight, and launch checks it again before
    spawning workers: the second finds it passed. A sweep's folder comes from the preflight's composition, not
    a second one. (Hydra's @hydra.main, replaced here, composes once more for itself, which no hook avoids:
    lgm_gcp/config/compose.py, compose_for_start.)"""
    from lgm_gcp import assemble, entrypoint
    from lgm_gcp.config import compose
    from lgm_gcp.engine.launch import check_before_spawning

    builds, composes, hydra_argv = [], [], []
    real_check, real_compose = assemble.check_map_size, compose._compose_with_hydra
    monkeypatch.setattr(assemble, "_passed", set())
    monkeypatch.setattr(assemble, "check_map_size", lambda *a: builds.append(1) or real_check(*a))
    monkeypatch.setattr(compose, "_compose_with_hydra", lambda *a: composes.append(1) or real_compose(*a))
    monkeypatch.setattr(entrypoint, "main", lambda: hydra_argv.extend(sys.argv))
    monkeypatch.chdir(tmp_path)
    overrides = ["backbone.widths=[8,16]", "trainer.batch_size=32"]
    monkeypatch.setattr(sys, "argv", ["lgm-gcp-train", "-m", *overrides, "seed=0,1"])
    entrypoint.cli()
    assert len(composes) == 1 and any(a.startswith("hydra.sweep.dir=") for a in hydra_argv)
    check_before_spawning(resolved(*overrides, "seed=0"), 2)  # what launch does before spawning 2 workers
    assert len(builds) == 1

