"""Load a finished run for analysis: its own config.yaml (never a config stored in a checkpoint),
its data, and its network with the weights of ``checkpoints/best.pt`` (or ``last.pt``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from lgm_gcp.engine import checkpoint
from lgm_gcp.errors import ConfigError, RunFolderError
from lgm_gcp.models.build import build_model
from lgm_gcp.options.instantiate import instantiate
from lgm_gcp.weights.load import load_weights


def read_yaml(path: Path, must_have: tuple = ()) -> dict:
    """A YAML mapping, or a one-line RunFolderError naming the file."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise RunFolderError(f"{path} cannot be read as YAML ({type(e).__name__}); "
                             "is this a run folder written by lgm-gcp-train?") from None
    if not isinstance(data, dict) or any(k not in data for k in must_have):
        raise RunFolderError(f"{path} is not a run config: expected a mapping with {', '.join(must_have)}")
    return data


def read_json(path: Path) -> dict:
    """A JSON object, or a one-line RunFolderError naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RunFolderError(f"{path} cannot be read as JSON ({type(e).__name__}: {e}); "
                             "delete it or rerun the run") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path} holds a JSON {type(data).__name__}, not a metrics object")
    return data


def run_folder(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunFolderError(f"{run_dir} does not exist or is not a folder; give a run folder of lgm-gcp-train")
    if not (run_dir / "config.yaml").is_file():
        raise RunFolderError(f"{run_dir} is not a run folder: it has no config.yaml")
    return run_dir


def resolve_device(name: str) -> torch.device:
    """``--device``: ``auto`` is the first CUDA device where there is one, else the CPU; a CUDA device
    asked for where none is visible is a one-line ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name} is not a device; give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} but no CUDA device is visible; use --device cpu")
    return device


def add_device_argument(parser) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA where there is one, else cpu) | cpu | cuda[:N]")


def load_run(run_dir: str | Path, which: str = "best", device: str = "cpu"):
    """Returns (config dict, data, network in eval mode). A run of ``lgm-gcp-eval`` has no
    checkpoint: its network is loaded from the ``weights`` file its config names."""
    run_dir = run_folder(run_dir)
    cfg = read_yaml(run_dir / "config.yaml", ("dataset", "backbone", "head", "loss"))
    path = run_dir / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        path = run_dir / "checkpoints" / "last.pt"
    if not path.is_file() and not cfg.get("weights"):
        raise RunFolderError(f"{run_dir} has no checkpoints/{which}.pt or last.pt and names no weights file; "
                             "has the run saved a checkpoint yet?")
    data = instantiate(cfg["dataset"], ten_crop=False, num_workers=0)
    model = build_model(cfg, data.num_classes, data.in_channels)
    if path.is_file():
        model.load_state_dict(checkpoint.load(path)["model"])
    else:
        load_weights(model, cfg["weights"])
    return cfg, data, model.to(device).eval()


@torch.no_grad()
def features_of(model, batches) -> tuple:
    """Features (N, D) and labels (N,) of every batch."""
    device = next(model.parameters()).device
    feats, labels = [], []
    for images, y in batches:
        feats.append(model.features(images.to(device)))
        labels.append(y.to(device))
    return torch.cat(feats), torch.cat(labels)
