"""The 2-D feature plot on a real (tiny) L-GM run, and the analysis commands' device choice."""


import pytest
import torch

from lgm_gcp.analysis.features import plot_features
from lgm_gcp.engine.train import run

from conftest import resolved


def test_feature_plot_and_its_dimension_check(lgm_2d_run, tmp_path):
    out = plot_features(lgm_2d_run)
    assert out.read_bytes()[:4] == b"\x89PNG"
    run(resolved("backbone.widths=[4,8]", "trainer.max_epochs=1", "trainer.max_steps=1", "trainer.progress=false"),
        tmp_path)
    with pytest.raises(ValueError, match="features are 8-dimensional; a 2-D plot needs 2"):
        plot_features(tmp_path)


def test_device_auto_is_cuda_where_there_is_one_and_a_missing_cuda_is_refused(monkeypatch):
    from lgm_gcp.analysis.runs import resolve_device
    from lgm_gcp.errors import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="--device cuda:1 but no CUDA device is visible; use --device cpu"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="--device gpu0 is not a device; give auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
