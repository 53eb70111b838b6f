"""Build the network from the resolved config: backbone first, then the head and the criterion
sized from it. Head and loss parameters marked ``RECIPE`` in their signature default to ``auto`` in a config:
the backbone's recipe (its paper default) decides, else the signature's own default; an explicit value
always wins."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from lgm_gcp.config.derive import recipe_defaults
from lgm_gcp.config.instantiate import instantiate, locate
from lgm_gcp.models.network import Network


def _resolve_auto(cfg: Mapping[str, Any], recipe: Mapping[str, Any], group: str) -> dict:
    plain = recipe_defaults(locate(cfg["_target_"], group))
    return {key: recipe.get(key, plain[key]) if value == "auto" and key in plain else value
            for key, value in cfg.items()}


def build_backbone(backbone_cfg: Mapping[str, Any], head_cfg: Mapping[str, Any], in_channels: int,
                   load_backbone: Callable | None = None):
    """The backbone; one given ``weights`` (a file) is built for 3 channels, filled by
    ``load_backbone(backbone, path)`` (``lgm_gcp.assemble`` passes the weights package's loader; without
    one the file is not read, as for a shape check), and only then adapted to ``in_channels``."""
    cfg = dict(backbone_cfg)
    if cfg.get("last_stride") == "auto":
        cfg["last_stride"] = locate(head_cfg["_target_"], "head").preferred_last_stride
    target = locate(cfg["_target_"], "backbone")
    takes = inspect.signature(target).parameters
    if "in_channels" in takes or any(p.kind is p.VAR_KEYWORD for p in takes.values()):
        cfg["in_channels"] = in_channels
    backbone = instantiate(cfg)
    weights = getattr(backbone, "weights_file", None)
    if weights:
        if load_backbone is not None:
            load_backbone(backbone, weights)
        backbone.set_in_channels(in_channels)
    return backbone


def build_model(cfg: Mapping[str, Any], num_classes: int, in_channels: int,
                load_backbone: Callable | None = None) -> Network:
    backbone = build_backbone(cfg["backbone"], cfg["head"], in_channels, load_backbone)
    recipe = getattr(backbone, "recipe", {}) or {}
    head = instantiate(_resolve_auto(cfg["head"], recipe, "head"), in_channels=backbone.out_channels)
    criterion = instantiate(_resolve_auto(cfg["loss"], recipe, "loss"), in_features=head.out_features,
                            num_classes=num_classes)
    return Network(backbone, head, criterion)
