"""How the reference repositories name the tensors of the networks lgm-gcp builds.

A layout renames a file's keys (``module.`` already removed) to the model's; ``match`` tries each
and keeps the one that fills the most model tensors with the right shapes, so the file's content
chooses the mapping, never its name. The layouts (spec: checkpoints/README.md, sections 3 and 5):

``lgm-gcp``     our own checkpoints (``backbone.* / head.* / criterion.*``).
``reference``   GCP_Optimization, fast-MPN-COV's model zoo (and VGG-D), 3G-Net, LargeMarginInSoftmax on
                ImageNet and plain torchvision models: the backbone's keys as torchvision names them;
                ``layer_reduce(_bn)``, ``dimension_reduction.N`` and ``representation.conv_dr_block.N``
                are the 1x1 reduction block; ``AtMp1-3`` are 3G-Net's re-weighting blocks; ``fc`` or the
                last ``classifier`` Linear is the classifier and earlier ``classifier.N`` are the MLP.
``sequential``  LargeMarginInSoftmax's CIFAR ``layer13``: ``features.N`` is the backbone itself.
``timm``        a timm model's own state dict (a ``.safetensors`` or ``.pth`` file timm saved or its hub serves):
                ``backbone=timm`` keeps the model as ``backbone.model``.
``fast-mpn-cov-main``  models trained by fast-MPN-COV's ``main.py``: ``features.0/1/4-7`` are the
                ResNet's conv1, bn1 and layer1-4 (``features.8/9`` the reduction block when fine-tuned).
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

# 3G-Net's block layers -> lgm-gcp's ReweightBlock (lgm_gcp/models/heads/three_g.py)
THREE_G_BLOCK = {"map1": "p1.0", "bn1": "p1.1", "map2": "p2.0", "bn2": "p2.1", "map21": "inject.0",
                 "bn21": "inject.1", "map3": "h1.0", "bn3": "h1.1", "map4": "h2.0", "bn4": "h2.1",
                 "atmap1": "squeeze.0", "bnat1": "squeeze.1", "atmap2": "score.0", "atmap3": "scale.0"}
REDUCTION = {"layer_reduce.": "head.reduce.0.", "layer_reduce_bn.": "head.reduce.1.",
             "dimension_reduction.": "head.reduce.", "representation.conv_dr_block.": "head.reduce.",
             "fc.": "criterion.fc."}
MAINPY_RESNET = {"features.0.": "conv1.", "features.1.": "bn1.", "features.4.": "layer1.", "features.5.": "layer2.",
                 "features.6.": "layer3.", "features.7.": "layer4.", "features.8.": "layer_reduce.",
                 "features.9.": "layer_reduce_bn."}


def _classifier_indices(keys: Iterable[str]) -> list:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(r"classifier\.(\d+)\.", k))})


def _renamed_prefix(key: str, table: dict) -> str | None:
    """``key`` with the first matching prefix of ``table`` replaced, or None."""
    for old, new in table.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def reference_key(key: str, last_classifier: int | None) -> str:
    """One reference key -> lgm-gcp's; ``last_classifier``: the index of the last classifier Linear.
    lgm-gcp's backbone keeps the torchvision model as ``backbone.features``, or, where torchvision
    splits it (VGG, MobileNetV2, DenseNet), that model's own ``features``."""
    if (renamed := _renamed_prefix(key, REDUCTION)) is not None:
        return renamed
    if m := re.fullmatch(r"AtMp(\d+)\.(\w+)\.(\w+)", key):
        block, layer, tensor = m.groups()
        return f"head.blocks.{int(block) - 1}.{THREE_G_BLOCK.get(layer, layer)}.{tensor}"
    if m := re.fullmatch(r"classifier\.(?:(\d+)\.)?(\w+)", key):
        index, tensor = m.groups()
        if index is None or int(index) == last_classifier:
            return f"criterion.fc.{tensor}"
        return f"head.post.{index}.{tensor}"
    return ("backbone." if key.startswith("features.") else "backbone.features.") + key


def _reference(keys: list) -> dict:
    last = (_classifier_indices(keys) or [None])[-1]
    return {k: reference_key(k, last) for k in keys}


def _sequential(keys: list) -> dict:
    last = (_classifier_indices(keys) or [None])[-1]
    return {k: "backbone." + k[len("features."):] if k.startswith("features.") else reference_key(k, last)
            for k in keys}


def _fast_mpn_cov_main(keys: list) -> dict:
    renamed = {k: _renamed_prefix(k, MAINPY_RESNET) or k for k in keys}
    mapped = _reference(list(renamed.values()))
    return {k: mapped[renamed[k]] for k in keys}


LAYOUTS: dict[str, Callable[[list], dict]] = {
    "lgm-gcp": lambda keys: {k: k for k in keys},
    "reference": _reference,
    "sequential": _sequential,
    "fast-mpn-cov-main": _fast_mpn_cov_main,
    "timm": lambda keys: {k: "backbone.model." + k for k in keys},
}

def file_vector_order(keys: Iterable[str]) -> str:
    """The covariance vectorisation the file's classifier was trained on: 3G-Net's files (AtMp keys)
    go column by column, iSQRT-COV's row by row."""
    return "col" if any(k.startswith("AtMp") for k in keys) else "row"
