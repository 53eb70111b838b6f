import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HYDRA_FULL_ERROR", "1")


def pytest_configure(config):
    """Build matplotlib's font cache before any test captures stderr: on a fresh machine its first
    use prints "Matplotlib is building the font cache", which a one-line error test would count."""
    import matplotlib.font_manager  # noqa: F401
TINY = ["backbone.widths=[8,16]", "trainer.max_epochs=2", "trainer.batch_size=64", "trainer.progress=false"]


CONF = Path(__file__).resolve().parents[1] / "conf"


def conf_options(group: str) -> list:
    """The options of a config group, as conf/ holds them: tests parametrised by this cover a new option
    the day its YAML is added."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def experiment_presets() -> list:
    """Every experiment preset: the YAML files of conf/experiment/ and the metafiles' generated rows."""
    from lgm_gcp.config.metafile import with_generated

    return with_generated("experiment", conf_options("experiment"))


def compose(*overrides):
    from lgm_gcp.config.compose import compose as _compose

    return _compose(list(overrides))


def resolved(*overrides) -> dict:
    return OmegaConf.to_container(compose(*overrides), resolve=True)


@pytest.fixture(scope="session")
def lgm_2d_run(tmp_path_factory):
    """A tiny real L-GM run with a 2-D feature (4 epochs on the digits), for the analysis commands."""
    from lgm_gcp.engine.train import run

    run_dir = tmp_path_factory.mktemp("lgm2d")
    run(resolved("experiment=digits_lgm_2d", "backbone.widths=[8,16]", "trainer.max_epochs=4",
                 "trainer.progress=false"), run_dir)
    return run_dir


@pytest.fixture
def tiny_cfg():
    """A resolved digits config that trains in about a second."""
    return lambda *extra: resolved(*TINY, "trainer.deterministic=true", *extra)


# Generous: a loaded 2-core machine runs these several times slower than an idle one. A timeout
# fails the test with the command that was running and what it had printed.
TIMEOUT_S = 1800


def run_command(cmd, *, cwd: Path, env_extra=None, timeout=TIMEOUT_S, drop=("HYDRA_FULL_ERROR",)):
    env = {k: v for k, v in {**os.environ, **(env_extra or {})}.items() if k not in drop}
    try:
        return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-2000:]
        pytest.fail(f"timed out after {timeout} s: {' '.join(map(str, cmd))} (in {cwd}); stderr tail: {tail!r}")


def wait_for(proc: subprocess.Popen, what: str, timeout=TIMEOUT_S) -> int:
    """proc's exit status; on a timeout, kill it and fail naming ``what`` was running."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"timed out after {timeout} s: {what} ({' '.join(map(str, proc.args))})")


def run_cli(*args, cwd: Path, env_extra=None, timeout=TIMEOUT_S):
    return run_command([sys.executable, "-m", "lgm_gcp.entrypoint", *args], cwd=cwd, env_extra=env_extra,
                       timeout=timeout)
