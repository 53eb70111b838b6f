"""ImageNet backbones built from torchvision's architectures (so torchvision-format weights load),
cut before their pooling and classifier, with the paper's stride changes.

``last_stride=1`` removes the last downsampling (ResNets: conv5_x, as iSQRT-COV / 3G-Net / the GCP
study do, 14x14 maps at 224²; VGG: the last max-pool; DenseNet: the last transition pool;
MobileNetV2 / ShuffleNetV2: their last stride-2 stage, which the GCP study does *not* change).
``cifar_stem=True`` keeps 32² inputs from shrinking to nothing: ResNets swap their 7x7/2 stem +
max-pool for a 3x3/1 conv, DenseNet likewise, MobileNetV2 and ShuffleNetV2 make their first conv
stride 1 (ShuffleNetV2 also drops its max-pool); VGG has no CIFAR stem (use ``layer13``) and refuses.
``in_channels`` other than 3 replaces the first conv, as timm's ``in_chans`` does: after any weights
are loaded, its kernel is summed over the RGB channels (1 channel) or repeated and scaled by
3/in_channels (more), so pretrained filters keep their response to a grey or multi-band image.
``weights``: a local file holding this backbone (a torchvision state dict, a released checkpoint of a
reference repository, an lgm-gcp checkpoint). The network is then built for 3 channels and keeps the file's
name; the builder fills it (``lgm_gcp/assemble.py``, above models and weights: its other tensors are left
out, nothing downloads) and only then adapts it to ``in_channels``.
"""

from __future__ import annotations

from typing import Annotated, Callable, Optional

import torch
import torchvision.models as tvm
from torch import nn

from lgm_gcp.errors import ConfigError
from lgm_gcp.options.fields import BY_HEAD, Range

# 1 removes the last downsampling; auto (the config's default): what the head prefers (1 under GCP and 3G)
LastStride = Annotated[int, Range(1, 2), BY_HEAD]
WeightsFile = Optional[str]


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
        self.input_conv = None  # (parent, name or index) of the first conv, for set_in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_fn(self.features, x) if self._forward_fn else self.features(x)

    def set_in_channels(self, in_channels: int) -> None:
        """Replace the first conv by one taking ``in_channels`` (``adapt_input_conv``), after any weights."""
        if in_channels == 3 or self.input_conv is None:
            return
        parent, key = self.input_conv
        if isinstance(key, int):
            parent[key] = adapt_input_conv(parent[key], in_channels)
        else:
            setattr(parent, key, adapt_input_conv(getattr(parent, key), in_channels))


def _resnet_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def adapt_input_conv(conv: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """A copy of ``conv`` taking ``in_channels`` inputs: the RGB kernel summed (1 channel), or
    repeated over the channels and scaled by 3/in_channels (timm's rule)."""
    if in_channels == conv.in_channels:
        return conv
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                    conv.dilation, conv.groups, conv.bias is not None)
    with torch.no_grad():
        w = conv.weight
        if in_channels == 1:
            new.weight.copy_(w.sum(1, keepdim=True))
        else:
            repeats = -(-in_channels // w.shape[1])
            new.weight.copy_(w.repeat(1, repeats, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    return new


def _finish(backbone: TorchvisionBackbone, in_channels: int = 3, stem: tuple | None = None,
            weights: WeightsFile = None) -> TorchvisionBackbone:
    """Record the first conv ``getattr(stem[0], stem[1])`` (or ``stem[0][stem[1]]``) and adapt it to
    ``in_channels``; with ``weights`` keep 3 channels and the file's name (``weights_file``): the builder
    loads it, then adapts the conv."""
    backbone.input_conv, backbone.weights_file = stem, weights
    if not weights:
        backbone.set_in_channels(in_channels)
    return backbone


def _no_cifar_stem(name: str, cifar_stem: bool) -> None:
    if cifar_stem:
        raise ConfigError(f"backbone.cifar_stem=true: {name} has no CIFAR stem (its five max-pools take 32x32 "
                          "inputs to 1x1); use backbone=layer13 or a ResNet for CIFAR, or cifar_stem=false")


def _resnet(builder, last_stride: int = 2, cifar_stem: bool = False, weights: WeightsFile = None,
            in_channels: int = 3):
    net = builder()
    del net.fc, net.avgpool
    if last_stride == 1:
        set_stride_one(net.layer4)
    if cifar_stem:
        net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
        net.maxpool = nn.Identity()
    out = net.layer4[-1].conv3.out_channels if hasattr(net.layer4[-1], "conv3") else net.layer4[-1].conv2.out_channels
    return _finish(TorchvisionBackbone(net, out, {}, _resnet_forward), in_channels, (net, "conv1"), weights)


def resnet18(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
             in_channels: int = 3):
    return _resnet(tvm.resnet18, last_stride, cifar_stem, weights, in_channels)


def resnet34(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
             in_channels: int = 3):
    return _resnet(tvm.resnet34, last_stride, cifar_stem, weights, in_channels)


def resnet50(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
             in_channels: int = 3):
    return _resnet(tvm.resnet50, last_stride, cifar_stem, weights, in_channels)


def resnet101(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
             in_channels: int = 3):
    return _resnet(tvm.resnet101, last_stride, cifar_stem, weights, in_channels)


def resnext50(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
             in_channels: int = 3):
    return _resnet(tvm.resnext50_32x4d, last_stride, cifar_stem, weights, in_channels)


def mobilenet_v2(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
                in_channels: int = 3):
    """Features through the final 1x1 ConvBNReLU6 (320 -> 1280), 7x7 at 224². Recipe: Dropout(0.2) +
    Linear with N(0, 0.01) init; GCP reduction with ReLU6 (the GCP study)."""
    features = tvm.mobilenet_v2().features
    if last_stride == 1:
        set_stride_one(features[14])
    if cifar_stem:
        features[0][0].stride = (1, 1)
    recipe = {"dropout": 0.2, "init": "normal", "activation": "relu6"}
    return _finish(TorchvisionBackbone(features, 1280, recipe), in_channels, (features[0], 0), weights)


def _shufflenet_forward(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = net.maxpool(net.conv1(x))
    return net.conv5(net.stage4(net.stage3(net.stage2(x))))


def shufflenet_v2(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
                in_channels: int = 3):
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
    return _finish(TorchvisionBackbone(net, 1024, recipe, _shufflenet_forward), in_channels, (net.conv1, 0), weights)


def vgg16_bn(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
                in_channels: int = 3):
    """VGG-16-BN conv layers; ``last_stride=1`` drops the last max-pool (14x14, as MPN-COV VGG does).
    Recipe: MLP 4096-4096 with ReLU + Dropout(0.5), Linear N(0, 0.01)."""
    _no_cifar_stem("vgg16_bn", cifar_stem)
    features = tvm.vgg16_bn().features
    if last_stride == 1:
        features = features[:-1]
    recipe = {"mlp": [4096, 4096], "dropout": 0.5, "init": "normal"}
    return _finish(TorchvisionBackbone(features, 512, recipe), in_channels, (features, 0), weights)


def vgg16_mod(last_stride: LastStride = 1, cifar_stem: bool = False, weights: WeightsFile = None,
                in_channels: int = 3):
    """The large-margin paper's "VGG-16 mod" (its ``vgg16bow_bn``): VGG-16-BN whose last max-pool is
    replaced by a 1x1 conv (with bias) to 4096 channels + BN + ReLU (``last_stride`` is fixed by that
    design). As the reference builds it, every conv and linear layer starts from N(0, 0.01) with zero
    biases and every BatchNorm has eps 1e-4. Recipe: after pooling, FC 4096 -> BN(eps 1e-4) -> ReLU,
    then the classifier, N(0, 0.01). 37,719,080 parameters at 1000 classes with GAP."""
    _no_cifar_stem("vgg16_mod", cifar_stem)
    features = tvm.vgg16_bn().features[:-1]
    features.extend([nn.Conv2d(512, 4096, 1), nn.BatchNorm2d(4096), nn.ReLU(inplace=True)])
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            m.eps = 1e-4
    recipe = {"mlp": [4096], "mlp_norm": 1e-4, "init": "normal"}
    return _finish(TorchvisionBackbone(features, 4096, recipe), in_channels, (features, 0), weights)


def _densenet_forward(features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(features(x))


def densenet169(last_stride: LastStride = 2, cifar_stem: bool = False, weights: WeightsFile = None,
                in_channels: int = 3):
    """DenseNet-169 features + the final ReLU torchvision applies (1664 channels). CIFAR stem: a 3x3/1
    conv and no max-pool, as DenseNet's own CIFAR models."""
    features = tvm.densenet169().features
    if last_stride == 1:
        set_stride_one(features.transition3)
    if cifar_stem:
        features.conv0 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(features.conv0.weight)
        features.pool0 = nn.Identity()
    return _finish(TorchvisionBackbone(features, 1664, {}, _densenet_forward), in_channels,
                   (features, "conv0"), weights)
