"""ImageNet backbones built from torchvision's architectures (so torchvision-format weights load),
cut before their pooling and classifier, with the paper's stride changes.

``last_stride=1`` removes the last downsampling (ResNets: conv5_x, as iSQRT-COV / 3G-Net / the GCP
study do, 14x14 maps at 224²; VGG: the last max-pool; DenseNet: the last transition pool;
MobileNetV2 / ShuffleNetV2: their last stride-2 stage, which the GCP study does *not* change).
``cifar_stem=True`` swaps a ResNet's 7x7/2 stem + max-pool for a 3x3/1 conv (32² inputs).
``weights``: a local torchvision-format state_dict file; classifier keys are ignored, nothing downloads.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torchvision.models as tvm
from torch import nn

from lgm_gcp.errors import ConfigError

_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def set_stride_one(module: nn.Module) -> None:
    """Turn every stride-2 conv and pool inside ``module`` into stride 1 (a 2x2 pool becomes identity)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Conv2d) and child.stride == (2, 2):
            child.stride = (1, 1)
        elif isinstance(child, (nn.AvgPool2d, nn.MaxPool2d)) and child.stride in (2, (2, 2)):
            setattr(module, name, nn.Identity())
        else:
            set_stride_one(child)


class TorchvisionBackbone(nn.Module):
    """Wraps a torchvision feature extractor: images (B, 3, H, W) -> maps (B, out_channels, h, w)."""

    def __init__(self, features: nn.Module, out_channels: int, recipe: dict, forward_fn: Callable | None = None):
        super().__init__()
        self.features = features
        self.out_channels = out_channels
        self.recipe = recipe
        self._forward_fn = forward_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fn(self.features, x) if self._forward_fn else self.features(x)

    def load_torchvision_weights(self, path: str) -> None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
        prefix = "features." if not next(iter(state)).startswith("features.") else ""
        missing, unexpected = self.load_state_dict({prefix + k: v for k, v in state.items()}, strict=False)
        if unexpected or missing:
            raise ConfigError(f"backbone.weights={path}: {len(missing)} missing and {len(unexpected)} unexpected keys "
                             f"(e.g. {(missing or unexpected)[:3]}); "
                             "is it a torchvision state_dict of this architecture?")


def _resnet_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _finish(backbone: TorchvisionBackbone, weights: str | None) -> TorchvisionBackbone:
    if weights:
        backbone.load_torchvision_weights(weights)
    return backbone


def _resnet(builder, last_stride: Any = 2, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    net = builder()
    del net.fc, net.avgpool
    if last_stride == 1:
        set_stride_one(net.layer4)
    if cifar_stem or in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, 3 if cifar_stem else 7, 1 if cifar_stem else 2,
                              1 if cifar_stem else 3, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        if cifar_stem:
            net.maxpool = nn.Identity()
    out = net.layer4[-1].conv3.out_channels if hasattr(net.layer4[-1], "conv3") else net.layer4[-1].conv2.out_channels
    return _finish(TorchvisionBackbone(net, out, {}, _resnet_forward), weights)


def resnet18(**kw):
    return _resnet(tvm.resnet18, **kw)


def resnet34(**kw):
    return _resnet(tvm.resnet34, **kw)


def resnet50(**kw):
    return _resnet(tvm.resnet50, **kw)


def resnet101(**kw):
    return _resnet(tvm.resnet101, **kw)


def resnext50(**kw):
    return _resnet(tvm.resnext50_32x4d, **kw)


def mobilenet_v2(last_stride: Any = 2, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    """Features through the final 1x1 ConvBNReLU6 (320 -> 1280), 7x7 at 224². Recipe: Dropout(0.2) +
    Linear with N(0, 0.01) init; GCP reduction with ReLU6 (the GCP study)."""
    features = tvm.mobilenet_v2().features
    if last_stride == 1:
        set_stride_one(features[14])
    if cifar_stem:
        features[0][0].stride = (1, 1)
    recipe = {"dropout": 0.2, "init": "normal", "activation": "relu6"}
    return _finish(TorchvisionBackbone(features, 1280, recipe), weights)


def _shufflenet_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.conv1(x))
    return net.conv5(net.stage4(net.stage3(net.stage2(x))))


def shufflenet_v2(last_stride: Any = 2, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    """ShuffleNetV2 x1.0 through conv5 (464 -> 1024, BN, ReLU). Recipe: default Linear init, no
    dropout, GCP reduction with ReLU6 and PyTorch's default init of its 1x1 conv (as the GCP study's
    ShuffleNetV2, which initialises no layer itself)."""
    net = tvm.shufflenet_v2_x1_0()
    del net.fc
    if last_stride == 1:
        set_stride_one(net.stage4)
    if cifar_stem:
        net.conv1[0].stride = (1, 1)
        net.maxpool = nn.Identity()
    recipe = {"activation": "relu6", "reduce_init": "default"}
    return _finish(TorchvisionBackbone(net, 1024, recipe, _shufflenet_forward), weights)


def vgg16_bn(last_stride: Any = 2, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    """VGG-16-BN conv layers; ``last_stride=1`` drops the last max-pool (14x14, as MPN-COV VGG does).
    Recipe: MLP 4096-4096 with ReLU + Dropout(0.5), Linear N(0, 0.01)."""
    features = tvm.vgg16_bn().features
    if last_stride == 1:
        features = features[:-1]
    recipe = {"mlp": [4096, 4096], "dropout": 0.5, "init": "normal"}
    return _finish(TorchvisionBackbone(features, 512, recipe), weights)


def vgg16_mod(last_stride: Any = 1, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    """The large-margin paper's "VGG-16 mod" (its ``vgg16bow_bn``): VGG-16-BN whose last max-pool is
    replaced by a 1x1 conv (with bias) to 4096 channels + BN + ReLU (``last_stride`` is fixed by that
    design). As the reference builds it, every conv and linear layer starts from N(0, 0.01) with zero
    biases and every BatchNorm has eps 1e-4. Recipe: after pooling, FC 4096 -> BN(eps 1e-4) -> ReLU,
    then the classifier, N(0, 0.01). 37,719,080 parameters at 1000 classes with GAP."""
    features = tvm.vgg16_bn().features[:-1]
    features.extend([nn.Conv2d(512, 4096, 1), nn.BatchNorm2d(4096), nn.ReLU(inplace=True)])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-4
    recipe = {"mlp": [4096], "mlp_norm": 1e-4, "init": "normal"}
    return _finish(TorchvisionBackbone(features, 4096, recipe), weights)


def _densenet_forward(features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(features(x))


def densenet169(last_stride: Any = 2, cifar_stem: bool = False, weights: str | None = None, in_channels: int = 3):
    """DenseNet-169 features + the final ReLU torchvision applies (1664 channels)."""
    features = tvm.densenet169().features
    if last_stride == 1:
        set_stride_one(features.transition3)
    return _finish(TorchvisionBackbone(features, 1664, {}, _densenet_forward), weights)
