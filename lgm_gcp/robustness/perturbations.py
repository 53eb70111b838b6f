"""The 10 ImageNet-P perturbation sequences, generated on the fly at any image size (Hendrycks &
Dietterich, ICLR 2019), from the definitions in make_imagenet_p.py (``protocol=imagenet``) and
make_cifar_p.py (``protocol=cifar``); ``auto`` as for the corruptions.

| perturbation | frames | what changes from frame to frame (imagenet / cifar) |
|---|---|---|
| gaussian_noise | 31 | frame 0 clean, then independent draws of σ 0.03 / 0.02 |
| shot_noise | 31 | frame 0 clean, then Poisson draws at rate 300 / 700 |
| motion_blur | 31 / 21 | the blur's angle, 4° / 9° per frame (radius 10 σ 3 / radius 6 σ 1.8) |
| zoom_blur | 31 | frame i averages zooms 1 + 0.004·k, k = 0 … i |
| snow | 31 | one snow layer whose motion-blur angle turns 4° per frame |
| brightness | 31 | HSV value shifted by (i − 15)·0.02 / ·0.015 |
| translate | 41 / 16 | horizontal shift i − 20 / i − 7 pixels |
| rotate | 31 | angle i − 15 degrees |
| tilt | 31 | perspective tilt of (i − 15)° / 0.75·(i − 15)° about both axes |
| scale | 31 | zoom factor 0.40 + 0.025·i / 0.70 + 0.02·i |

Differences from the released videos: frames are kept on the 8-bit grid, not H.264-encoded; the
geometric perturbations transform the evaluated image itself (black outside it), where ImageNet-P
transformed the 256-pixel resize and then cropped its centre.
"""

from __future__ import annotations

from typing import Iterator

import torch

from lgm_gcp.errors import ConfigError
from lgm_gcp.robustness import ops
from lgm_gcp.robustness.corruptions import protocol_for

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise"),
    "blur": ("motion_blur", "zoom_blur"),
    "weather": ("snow", "brightness"),
    "digital": ("translate", "rotate", "tilt", "scale"),
}
PERTURBATIONS = tuple(name for names in GROUPS.values() for name in names)

PARAMS = {
    "imagenet": {"gaussian_noise": 0.03, "shot_noise": 300, "motion_blur": (10, 3, 4.0, 31), "brightness": 0.02,
                 "snow": (0.05, 0.3, 3, 0.5, 14, 4), "translate": 20, "tilt": 1.0, "scale": (0.40, 0.025)},
    "cifar": {"gaussian_noise": 0.02, "shot_noise": 700, "motion_blur": (6, 1.8, 9.0, 21), "brightness": 0.015,
              "snow": (0.05, 0.3, 2, 0.5, 10, 2), "translate": 7, "tilt": 0.75, "scale": (0.70, 0.02)},
}


def compares_to_first(name: str) -> bool:
    """Noise sequences are compared with their clean frame 0, the others frame to frame."""
    return "noise" in name


def frames(x: torch.Tensor, name: str, gens: list, protocol: str = "auto") -> Iterator[torch.Tensor]:
    """The sequence of perturbation ``name`` for a batch (B, C, H, W) in [0, 1]: frame after frame,
    each (B, C, H, W) on the 8-bit grid."""
    if name not in PERTURBATIONS:
        raise ConfigError(f"unknown perturbation {name!r}; valid: {', '.join(PERTURBATIONS)}")
    protocol = protocol_for(*x.shape[-2:], protocol)
    c = PARAMS[protocol].get(name)
    for frame in _sequence(x, name, c, gens, protocol):
        yield ops.to_uint8_grid(frame)


def _sequence(x, name, c, gens, protocol):
    h, w = x.shape[-2:]
    b = len(x)
    if name == "gaussian_noise":
        yield x
        for _ in range(30):
            yield (x + c * ops.randn(gens, x.shape[1:]).to(x)).clamp(0, 1)
    elif name == "shot_noise":
        yield x
        for _ in range(30):
            yield ops.poisson(x, c, gens)
    elif name == "motion_blur":
        radius, sigma, turn, n = c
        for i in range(n):
            yield ops.motion_blur(x, radius, sigma, [(i - (n - 1)) * turn] * b)
    elif name == "zoom_blur":
        total = torch.zeros_like(x)
        for i in range(31):
            zoom = ops.centred_affine(h, w, scale=1 + 0.004 * i).expand(b, 3, 3)
            total += ops.warp(x, zoom)
            yield total / (i + 1)
    elif name == "snow":
        loc, scale, zoom, threshold, radius, sigma = c
        layer = ops.snow_layer(x, loc, scale, zoom, threshold, gens)
        for i in range(31):  # one layer, its blur turning 4° per frame
            yield ops.add_snow(x, ops.motion_blur(layer, radius, sigma, [i * 4.0 - 150] * b), 0.85)
    elif name == "brightness":
        for i in range(31):
            yield ops.shift_value(x, (i - 15) * c)
    elif name == "translate":
        for i in range(2 * c + 1 if protocol == "imagenet" else 16):  # ImageNet-P −20 … 20, CIFAR-P −7 … 8
            yield ops.warp(x, ops.centred_affine(h, w, translate=(i - c, 0)).expand(b, 3, 3))
    elif name == "rotate":
        for i in range(31):
            yield ops.warp(x, ops.centred_affine(h, w, angle=i - 15).expand(b, 3, 3))
    elif name == "tilt":
        for i in range(31):
            yield ops.warp(x, ops.tilt_matrix(h, w, c * (i - 15)).expand(b, 3, 3))
    elif name == "scale":
        start, step = c
        for i in range(31):
            yield ops.warp(x, ops.centred_affine(h, w, scale=start + step * i).expand(b, 3, 3))
