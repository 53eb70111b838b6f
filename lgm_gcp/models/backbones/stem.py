"""Where a backbone's stem ends: ``split_after_stem(backbone) -> (stem, rest)`` with
rest(stem(x)) == backbone(x), the split the GCP study's loss-landscape probe perturbs at.

The stem, per backbone family: ResNet / ResNeXt conv1 + bn1 + ReLU + max-pool (the study's split);
ShuffleNetV2 conv1 + max-pool; every sequential backbone (MobileNetV2, VGG, DenseNet, layer13, the
L-GM "simple" net, ResNet-20, the small CNN) its first block: the layers up to and including the first
activation (MobileNetV2: its first ConvBNReLU6, the study's split), plus a max-pool right after it.
"""

from __future__ import annotations

from torch import nn

from lgm_gcp.errors import ConfigError

ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def _first_block(layers: nn.Sequential) -> int:
    """How many leading children of ``layers`` make its stem: through the first activation (or the
    first child holding one), and a max-pool right after it."""
    children = list(layers.children())
    for i, child in enumerate(children):
        if isinstance(child, ACTIVATIONS) or any(isinstance(m, ACTIVATIONS) for m in child.modules()):
            k = i + 1
            return k + 1 if k < len(children) and isinstance(children[k], nn.MaxPool2d) else k
    raise ConfigError(f"trainer.landscape_every: the {type(layers).__name__} backbone has no activation to split at")


def split_after_stem(backbone: nn.Module) -> tuple:
    """(stem, rest) with rest(stem(x)) == backbone(x)."""
    features = getattr(backbone, "features", None)
    forward_fn = getattr(backbone, "_forward_fn", None)
    if features is not None and hasattr(features, "layer1"):  # ResNet, ResNeXt
        def stem(x):
            return features.maxpool(features.relu(features.bn1(features.conv1(x))))

        def rest(y):
            return features.layer4(features.layer3(features.layer2(features.layer1(y))))
        return stem, rest
    if features is not None and hasattr(features, "stage2"):  # ShuffleNetV2
        def stem(x):
            return features.maxpool(features.conv1(x))

        def rest(y):
            return features.conv5(features.stage4(features.stage3(features.stage2(y))))
        return stem, rest
    layers = features if features is not None else backbone
    if not isinstance(layers, nn.Sequential):
        raise ConfigError(f"trainer.landscape_every: no stem split is defined for {type(backbone).__name__}")
    k = _first_block(layers)
    children = list(layers.children())  # plain Sequentials: a subclass's slice would call its own __init__
    head, tail = nn.Sequential(*children[:k]), nn.Sequential(*children[k:])
    if forward_fn is not None:  # e.g. DenseNet's final ReLU after its features
        return head, lambda y: forward_fn(tail, y)
    return head, tail
