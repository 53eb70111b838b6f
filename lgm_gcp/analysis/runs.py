"""Load a finished run for analysis: its own config.yaml (never a config stored in a checkpoint),
its data, and its network with the weights of ``checkpoints/best.pt`` (or ``last.pt``)."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

from lgm_gcp.config.instantiate import instantiate
from lgm_gcp.engine import checkpoint
from lgm_gcp.models.build import build_model


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu"):
    """Returns (config dict, data, network in eval mode)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.yaml")
    cfg = yaml.safe_load(cfg_path.read_text())
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        path = run_dir / "checkpoints" / "last.pt"
    payload = checkpoint.load(path)
    data = instantiate(cfg["dataset"], ten_crop=False, num_workers=0)
    model = build_model(cfg, data.num_classes, data.in_channels)
    model.load_state_dict(payload["model"])
    return cfg, data, model.to(device).eval()


@torch.no_grad()
def features_of(model, batches) -> tuple:
    """Features (N, D) and labels (N,) of every batch."""
    feats, labels = [], []
    for images, y in batches:
        feats.append(model.features(images))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)
