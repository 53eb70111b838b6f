"""The network a run starts from, above ``models`` and ``weights`` (which do not import each other's
builders): ``models.build_model`` builds it, filling the backbone from ``backbone.weights`` through the
weights package's loader, and ``weights=FILE`` then fills the whole network."""

from __future__ import annotations

from typing import Any, Mapping

from lgm_gcp.models.build import build_model
from lgm_gcp.models.network import Network
from lgm_gcp.weights.load import load_backbone_weights, load_weights


def build_network(cfg: Mapping[str, Any], num_classes: int, in_channels: int) -> tuple[Network, dict | None]:
    """(the network, what ``weights=FILE`` loaded for metrics.json, or None)."""
    model = build_model(cfg, num_classes, in_channels, load_backbone=load_backbone_weights)
    return model, (load_weights(model, cfg["weights"]) if cfg.get("weights") else None)
