"""Any timm model as a trunk: ``backbone=timm backbone.name=<model>`` (the ``[timm]`` extra).

``timm.create_model(name, pretrained=False, num_classes=0, in_chans=..., **kwargs)`` builds the model; its
``forward_features`` gives the unpooled features, and what the model would do after them goes:

* its classifier and pooling (``reset_classifier(0, "")``; a ViT's attention pool with them), and a head
  block that holds the classifier (ConvNeXt's and Swin's ``head``, with the norm ConvNeXt applies to the
  pooled vector). A head of lgm-gcp pools instead.
* A convolutional trunk's map (B, num_features, h, w) is the output as it is; a channels-last one (Swin,
  MambaOut: ``output_fmt == "NHWC"``) is permuted to (B, C, h, w).
* A transformer's tokens (B, N, C) drop the ``num_prefix_tokens`` class, register and distillation tokens
  and fold the patch tokens back into their grid (B, C, h, w), so GAP averages the patch tokens and GCP
  takes their covariance, as the GCP-on-ViT papers do. A model that normalises its pooled tokens
  (``fc_norm``: average-pooled ViTs, BEiT, EVA) has that norm applied to every token instead.
  A head that reads a class token (``uses_class_token``: ``head=sot``) gets ``(map, class_token (B, C))``
  from a model that has one (``cls_token``; ``return_class_token``, set by ``lgm_gcp.models.build``).

``out_channels`` is the model's ``num_features``. The head's dropout ``auto`` takes the model's own
``drop_rate`` (``backbone.kwargs.drop_rate``), which timm applies before its classifier.

``last_stride=1`` drops the last downsampling, as the GCP study does on ResNets: every stride-2 conv and
pool after the second-to-last feature stage (``feature_info``) becomes stride 1. Where that stage does not
downsample (a ViT) or downsamples by patch merging (a 2x2 stride-2 conv: ConvNeXt, Swin), the option is
refused in one line.

``weights``: a local timm state dict (``.safetensors``, ``.pth``, ``.bin``; nothing downloads), its keys as
``model.state_dict()`` names them; the classifier's tensors are left out. ``in_channels`` is timm's
``in_chans`` (with weights: built for 3, filled, then the first conv adapted as timm adapts it).
"""

from __future__ import annotations

import difflib
from types import MappingProxyType
from typing import Annotated, Any, Mapping

import torch
from torch import nn

from lgm_gcp.errors import ConfigError
from lgm_gcp.models.backbones.torchvision_nets import WeightsFile
from lgm_gcp.options.fields import Range

CLOSE_MATCHES = 5


def import_timm():
    try:
        import timm
    except ImportError:
        raise ConfigError("backbone=timm needs timm: pip install -e '.[timm]' (or pip install timm)") from None
    return timm


def check_model_name(timm, name: str) -> None:
    """One line listing the closest known names when timm has no architecture ``name`` (a pretrained tag
    after the dot, ``convnext_atto.d2_in1k``, is allowed): timm's own ``split_model_name_tag`` and
    ``is_model``, with difflib's close matches, which timm's wildcard ``list_models`` does not give."""
    architecture, _ = timm.models.split_model_name_tag(name)
    if timm.models.is_model(architecture):
        return
    close = difflib.get_close_matches(architecture, timm.list_models(), n=CLOSE_MATCHES, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else "; see timm.list_models()"
    raise ConfigError(f"backbone.name={name} is not a timm model (timm {timm.__version__}){hint}")


def _submodule_names(model: nn.Module) -> list:
    return [name for name, _ in model.named_modules()]


def drop_last_downsampling(model: nn.Module, name: str) -> None:
    """Stride 1 for every stride-2 conv and pool after the second-to-last ``feature_info`` stage."""
    info = list(getattr(model, "feature_info", None) or [])
    if len(info) < 2 or info[-1]["reduction"] == info[-2]["reduction"]:
        raise ConfigError(f"backbone.last_stride=1: timm's {name} has no downsampling in its last stage "
                          "(a transformer keeps its patch grid); use last_stride=2")
    names = _submodule_names(model)
    before = info[-2]["module"]
    start = max(i for i, n in enumerate(names) if n == before or n.startswith(before + "."))
    strided = [n for n in names[start + 1:] if _stride_two(model.get_submodule(n))]
    merges = [n for n in strided if _is_patch_merge(model.get_submodule(n))]
    if merges or not strided:
        how = f"patch merging ({merges[0]}, kernel = stride = 2)" if merges else "no strided layer"
        raise ConfigError(f"backbone.last_stride=1: timm's {name} downsamples its last stage by {how}, which "
                          "has no stride to drop; use last_stride=2")
    for n in strided:
        module = model.get_submodule(n)
        if isinstance(module, nn.Conv2d):
            module.stride = (1, 1)
        else:  # a stride-2 pool halves the map and nothing else: it goes
            parent, _, leaf = n.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, leaf, nn.Identity())


def _stride_two(module: nn.Module) -> bool:
    stride = getattr(module, "stride", None)
    return isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)) and stride in (2, (2, 2))


def _is_patch_merge(module: nn.Module) -> bool:
    return isinstance(module, nn.Conv2d) and module.kernel_size == (2, 2)


class TimmBackbone(nn.Module):
    """A timm model cut before its pooling: images (B, in_channels, H, W) -> maps (B, num_features, h, w)."""

    def __init__(self, name: str, kwargs: Mapping[str, Any] = MappingProxyType({}),
                 last_stride: Annotated[int, Range(1, 2)] = 2, weights: WeightsFile = None, in_channels: int = 3):
        super().__init__()
        timm = import_timm()
        check_model_name(timm, name)
        kwargs = dict(kwargs)
        for reserved in ("pretrained", "num_classes", "in_chans", "features_only"):
            if reserved in kwargs:
                raise ConfigError(f"backbone.kwargs.{reserved}: lgm-gcp sets it itself (weights: backbone.weights="
                                  "FILE; classes: dataset.num_classes; channels: dataset.in_channels)")
        try:
            model = timm.create_model(name, pretrained=False, num_classes=0,
                                      in_chans=3 if weights else in_channels, **kwargs)
        except TypeError as e:
            raise ConfigError(f"backbone.kwargs={kwargs}: timm's {name} refuses them ({e})") from None
        model.reset_classifier(0, "")
        self.file_keys_left_out = self._remove_head(model)
        # the model's own module, called from forward (a second attribute would name its tensors twice)
        self.norm_tokens = not isinstance(getattr(model, "fc_norm", None), (nn.Identity, type(None)))
        if last_stride == 1:
            drop_last_downsampling(model, name)
        self.model = model
        self.name = name
        self.out_channels = model.num_features
        self.prefix_tokens = getattr(model, "num_prefix_tokens", 0)
        self.has_class_token = getattr(model, "cls_token", None) is not None
        self.return_class_token = False
        self.channels_last = getattr(model, "output_fmt", "NCHW") == "NHWC"
        drop_rate = float(getattr(model, "drop_rate", 0.0) or 0.0)
        self.recipe = {"dropout": drop_rate} if drop_rate else {}
        self.weights_file = weights  # with a file: built for 3 channels; the builder adapts the stem after loading

    @staticmethod
    def _remove_head(model: nn.Module) -> tuple:
        """Replace a head block holding the classifier (``head.fc`` -> ``head``) by an identity; returns
        the prefixes (in this backbone's state dict) of what a timm file holds beyond the trunk."""
        classifiers = model.pretrained_cfg.get("classifier") or ()
        classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
        left_out = []
        for classifier in classifiers:
            block = classifier.split(".")[0]
            if "." in classifier and isinstance(getattr(model, block, None), nn.Module):
                setattr(model, block, nn.Identity())
            left_out.append(f"model.{block}.")
        return tuple(left_out)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_features(images)
        if self.norm_tokens:
            out = self.model.fc_norm(out)
        if out.dim() == 3:  # tokens (B, N, C)
            maps = self.tokens_to_map(out[:, self.prefix_tokens:], images.shape[-2:])
            return (maps, out[:, 0]) if self.return_class_token and self.has_class_token else maps
        return out.permute(0, 3, 1, 2) if self.channels_last else out

    def tokens_to_map(self, tokens: torch.Tensor, image_size) -> torch.Tensor:
        """Patch tokens (B, h·w, C) -> (B, C, h, w), (h, w) the patch grid of this image size."""
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is not None and hasattr(patch_embed, "dynamic_feat_size"):
            h, w = patch_embed.dynamic_feat_size(tuple(image_size))
        else:
            h = w = int(round(tokens.shape[1] ** 0.5))
        if h * w != tokens.shape[1]:
            raise ConfigError(f"timm's {self.name} gives {tokens.shape[1]} patch tokens, not a {h}x{w} grid")
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)

    def set_in_channels(self, in_channels: int) -> None:
        """The first conv (timm's ``pretrained_cfg["first_conv"]``) made to take ``in_channels``, its kernel
        adapted by timm's own ``adapt_input_conv`` (summed for one channel, else repeated and rescaled), as
        timm adapts a pretrained file; the conv keeps its class (timm's ``Conv2dSame`` pads as before)."""
        first = self.model.pretrained_cfg.get("first_conv")
        if in_channels == 3 or not first:
            return
        conv = self.model.get_submodule(first)
        if conv.in_channels == in_channels:
            return
        timm = import_timm()
        with torch.no_grad():
            conv.weight = nn.Parameter(timm.models.adapt_input_conv(in_channels, conv.weight.detach().clone()))
        conv.in_channels = in_channels
