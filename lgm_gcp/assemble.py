"""The network a run starts from, above ``models`` and ``weights`` (which do not import each other's
builders): ``models.build_model`` builds it, filling the backbone from ``backbone.weights`` through the
weights package's loader, and ``weights=FILE`` then fills the whole network, or ``finetune=FILE`` its
backbone and head, leaving a new classifier."""

from __future__ import annotations

import json
from typing import Any, Mapping

import torch

from lgm_gcp.models.build import build_model, check_map_size
from lgm_gcp.models.network import Network
from lgm_gcp.weights.load import check_weights, load_backbone_weights, load_for_finetuning, load_weights


def build_network(cfg: Mapping[str, Any], num_classes: int, in_channels: int) -> tuple[Network, dict | None]:
    """(the network, what ``weights=FILE`` or ``finetune=FILE`` loaded for metrics.json, or None)."""
    model = build_model(cfg, num_classes, in_channels, load_backbone=load_backbone_weights)
    if cfg.get("finetune"):
        return model, load_for_finetuning(model, cfg["finetune"])
    return model, (load_weights(model, cfg["weights"]) if cfg.get("weights") else None)


NETWORK_KEYS = ("dataset", "backbone", "head", "loss", "weights", "finetune")  # what the check reads
_passed: set = set()  # the networks this process has checked: the CLI's preflight, then launch, check once


def check_network(cfg: Mapping[str, Any]) -> None:
    """Before any work, on the meta device (shapes only, nothing computed or read but ``weights``): the
    network builds, its backbone leaves the head a map to pool at the dataset's image size, and
    ``weights`` fits it. Once per network and process: a config whose network passed is not built again
    (the CLI checks before Hydra writes anything, and ``launch`` before spawning, for every launcher)."""
    key = json.dumps({k: cfg.get(k) for k in NETWORK_KEYS}, sort_keys=True, default=str)
    if key in _passed:
        return
    with torch.device("meta"):
        model = build_model(cfg, cfg["dataset"]["num_classes"], cfg["dataset"]["in_channels"])
    check_map_size(model, cfg)
    check_weights(cfg, model)
    _passed.add(key)
