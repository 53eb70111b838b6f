"""Build the network from the resolved config: backbone first, then the head and the criterion
sized from it. Head and loss parameters marked ``RECIPE`` in their signature default to ``auto`` in a config:
the backbone's recipe (its paper default) decides, else the signature's own default; an explicit value
always wins."""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

import torch

from lgm_gcp.errors import ConfigError
from lgm_gcp.models.network import Network
from lgm_gcp.options.derive import resolve_auto
from lgm_gcp.options.instantiate import instantiate, locate


def _resolve_auto(cfg: Mapping[str, Any], recipe: Mapping[str, Any], group: str) -> dict:
    return resolve_auto(cfg, recipe, locate(cfg["_target_"], group))


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
    if getattr(head, "uses_class_token", False) and getattr(head, "class_token", "auto") == "auto" \
            and hasattr(backbone, "return_class_token"):
        backbone.return_class_token = True  # a ViT's maps come with its class token (SoTHead)
    criterion = instantiate(_resolve_auto(cfg["loss"], recipe, "loss"), in_features=head.out_features,
                            num_classes=num_classes)
    return Network(backbone, head, criterion)


LARGEST_SIDE = 4096  # the smallest-size search gives up above this
# what torch's convs and pools say when a map would come out empty
EMPTY_MAP_ERRORS = ("Output size is too small", "can't be greater than actual input size", "non-positive")


def input_side(dataset_cfg: Mapping[str, Any]) -> int:
    """The side of the square images the network sees: an in-memory dataset's ``input_size`` if set,
    else ``image_size`` (an image-folder dataset's crop)."""
    return dataset_cfg.get("input_size") or dataset_cfg["image_size"]


def map_positions(backbone: torch.nn.Module, in_channels: int, side: int) -> int | None:
    """h·w of the backbone's map for one side x side image, run on the meta device (shapes only, no
    compute); 0 where the strides leave nothing. A backbone that refuses the size (a ViT built for one
    image size) raises its AssertionError; None where the backbone cannot run on the meta device at all
    (data-dependent code, or a bug, which the run itself then meets with its traceback)."""
    shape = map_shape(backbone, in_channels, side)
    return shape if shape is None or isinstance(shape, int) else shape[0] * shape[1]


def map_shape(backbone: torch.nn.Module, in_channels: int, side: int) -> tuple | int | None:
    """(h, w) of the backbone's map for one side x side image on the meta device; 0 or None as
    ``map_positions`` says."""
    training = backbone.training
    backbone.eval()  # BatchNorm in training refuses one value per channel
    try:
        maps = backbone(torch.empty(1, in_channels, side, side, device="meta"))
    except AssertionError:
        raise
    except RuntimeError as e:  # a conv or pool whose output would be empty
        return 0 if any(words in str(e) for words in EMPTY_MAP_ERRORS) else None
    except Exception:
        return None
    finally:
        backbone.train(training)
    maps = maps[0] if isinstance(maps, tuple) else maps  # (maps, class token) for a head that reads it
    return tuple(maps.shape[-2:])


STRIDE_PROBE_SIDE = 224  # the side the output stride is measured at (what ImageNet trunks are built for)


def output_stride(backbone: torch.nn.Module, in_channels: int) -> int | None:
    """How many pixels of the image one position of the map spans (32 for ResNets, ConvNeXt and VGG, 16
    for a ViT-B/16, 4 for small_cnn), measured on a 224-pixel image; None where it cannot be."""
    try:
        shape = map_shape(backbone, in_channels, STRIDE_PROBE_SIDE)
    except AssertionError:  # a transformer built for another image size
        return None
    return round(STRIDE_PROBE_SIDE / shape[1]) if isinstance(shape, tuple) and shape[1] else None


def smallest_side(backbone: torch.nn.Module, in_channels: int, positions: int) -> int | None:
    """The smallest square side whose map has at least ``positions`` positions (bisection: a larger
    image never gives a smaller map), or None up to ``LARGEST_SIDE``."""
    def enough(side: int) -> bool:
        try:
            return (map_positions(backbone, in_channels, side) or 0) >= positions
        except AssertionError:  # a size the backbone refuses (timm's fixed img_size)
            return False

    low, high = 1, LARGEST_SIDE
    if not enough(high):
        return None
    while low < high:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid + 1, high)
    return low


def check_map_size(model: Network, cfg: Mapping[str, Any]) -> None:
    """One line when the backbone leaves the head too small a map at the dataset's image size (GCP and
    3G need two positions for a covariance; GAP one), naming the smallest size that works."""
    dataset, head = cfg["dataset"], model.head
    side, in_channels = input_side(dataset), dataset["in_channels"]
    need = getattr(head, "min_positions", 1)
    backbone_cfg = cfg["backbone"]
    what = f"backbone.name={backbone_cfg['name']}" if "name" in backbone_cfg \
        else f"backbone {backbone_cfg['_target_'].rsplit('.', 1)[-1]}"
    try:
        have = map_positions(model.backbone, in_channels, side)
    except AssertionError as e:  # timm's transformers built for one img_size assert it; other errors are bugs
        raise ConfigError(f"{what} does not take {side}x{side} images ({str(e).splitlines()[0]}); "
                          "for a timm transformer set backbone.kwargs.img_size to the image size, or "
                          "backbone.kwargs.dynamic_img_size=true") from None
    stride = output_stride(model.backbone, in_channels) if have else None
    if stride and side < stride:  # the padding leaves a map, but the last stages stride over one position
        raise ConfigError(f"{what} strides its input by {stride}, so its last stages see a {side}x{side} image as "
                          f"one padded pixel; it takes images of at least {stride}x{stride}: set "
                          f"dataset.input_size={stride} (or larger) to resize them, or choose another backbone")
    if have is None or have >= need:
        return
    smallest = smallest_side(model.backbone, in_channels, need)
    head_name = type(head).__name__
    fix = (f"images of at least {smallest}x{smallest}: set dataset.input_size={smallest} (or larger) to resize "
           "them, or choose another backbone" if smallest else "no image size up to "
           f"{LARGEST_SIDE} does: choose another backbone")
    why = getattr(head, "min_positions_why", None)
    raise ConfigError(f"{what} leaves {have} position(s) of a {side}x{side} image, and {head_name} needs {need}"
                      f"{f' ({why})' if why else ''}; it takes {fix}")
