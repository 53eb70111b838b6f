import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

os.environ.setdefault("HYDRA_FULL_ERROR", "1")
TINY = ["backbone.widths=[8,16]", "trainer.max_epochs=2", "trainer.batch_size=64", "trainer.progress=false"]


def compose(*overrides):
    from lgm_gcp.config.compose import compose as _compose

    return _compose(list(overrides))


def resolved(*overrides) -> dict:
    return OmegaConf.to_container(compose(*overrides), resolve=True)


@pytest.fixture
def tiny_cfg():
    """A resolved digits config that trains in about a second."""
    return lambda *extra: resolved(*TINY, "trainer.deterministic=true", *extra)


def run_cli(*args, cwd: Path, env_extra=None, timeout=300):
    env = dict(os.environ, **(env_extra or {}))
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "lgm_gcp.engine.entrypoint", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
