"""The 15 ImageNet-C corruptions at 5 severities, generated on the fly at any image size
(Hendrycks & Dietterich, ICLR 2019), written here from their definitions in PyTorch.

Why not the ``imagecorruptions`` package: its PyPI release (1.1.2, 2020) does not import with
setuptools ≥ 81 (``pkg_resources``), and glass_blur, gaussian_blur and fog fail with NumPy 2 and
scikit-image ≥ 0.26; it needs OpenCV (libGL) at import and works only from 32×32 up. Our versions
run batched on the evaluation device, on 1- or 3-channel images, from 8×8 up.

Two parameter sets (``protocol``), each exactly its dataset's generating script:
  imagenet  make_imagenet_c.py (224×224); the output is saved as JPEG quality 85, as the
            ImageNet-C files are;
  cifar     make_cifar_c.py (32×32, CIFAR-10-C / CIFAR-100-C), no JPEG.
``auto`` takes imagenet for images whose shorter side is ≥ 96 pixels, else cifar. Pixel-sized
parameters (blur radii, shuffle distances) are used as they are; the elastic transform's are
relative to the image side (as both scripts define them), the fog map is the next power of two
above the side, and frost crops are the image's size.

Where ours is not the reference's computation (the numbers differ, the corruption is the same):
  * glass_blur's local shuffle: the reference swaps pixels one by one in a Python loop; here each
    pixel of the same range reads a neighbour at the same random offset (±max_delta) in one gather.
  * frost: ImageNet-C blends crops of six frost photographs that do not ship with lgm-gcp; by
    default a procedural ice texture (fractal clouds and crystal streaks) stands in; give the
    photographs (``frost_dir``: hendrycks/robustness ImageNet-C/create_c/frost*.{png,jpg}) to
    use them.
  * motion_blur follows ImageMagick's kernel (which the reference calls through Wand) in PyTorch.
Random draws differ from NumPy's, so no image is bit-identical to the released files; use the
released datasets where numbers must be comparable to published ones.

Each function maps a batch (B, C, H, W) in [0, 1] and one ``torch.Generator`` per image to the
corrupted batch; ``corrupt`` applies one (corruption, severity) and the saving step.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lgm_gcp.errors import ConfigError
from lgm_gcp.robustness import ops

GROUPS = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
CORRUPTIONS = tuple(name for names in GROUPS.values() for name in names)
PROTOCOLS = ("imagenet", "cifar")

PARAMS = {
    "imagenet": {
        "gaussian_noise": [0.08, 0.12, 0.18, 0.26, 0.38],
        "shot_noise": [60, 25, 12, 5, 3],
        "impulse_noise": [0.03, 0.06, 0.09, 0.17, 0.27],
        "defocus_blur": [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)],
        "glass_blur": [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)],
        "motion_blur": [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
        "zoom_blur": [(1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03)],  # arange(1, stop, step)
        "snow": [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7), (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
                 (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65), (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
        "frost": [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
        "fog": [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)],
        "brightness": [0.1, 0.2, 0.3, 0.4, 0.5],
        "contrast": [0.4, 0.3, 0.2, 0.1, 0.05],
        # (alpha, sigma, affine) as fractions of the side: the script's 244·k on 224-pixel images
        "elastic_transform": [(2 * 244 / 224, 0.7 * 244 / 224, 0.1 * 244 / 224),
                              (2 * 244 / 224, 0.08 * 244 / 224, 0.2 * 244 / 224),
                              (0.05 * 244 / 224, 0.01 * 244 / 224, 0.02 * 244 / 224),
                              (0.07 * 244 / 224, 0.01 * 244 / 224, 0.02 * 244 / 224),
                              (0.12 * 244 / 224, 0.01 * 244 / 224, 0.02 * 244 / 224)],
        "pixelate": [0.6, 0.5, 0.4, 0.3, 0.25],
        "jpeg_compression": [25, 18, 15, 10, 7],
    },
    "cifar": {
        "gaussian_noise": [0.04, 0.06, 0.08, 0.09, 0.10],
        "shot_noise": [500, 250, 100, 75, 50],
        "impulse_noise": [0.01, 0.02, 0.03, 0.05, 0.07],
        "defocus_blur": [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)],
        "glass_blur": [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)],
        "motion_blur": [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)],
        "zoom_blur": [(1.06, 0.01), (1.11, 0.01), (1.16, 0.01), (1.21, 0.01), (1.26, 0.01)],
        "snow": [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
                 (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
        "frost": [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
        "fog": [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)],
        "brightness": [0.05, 0.1, 0.15, 0.2, 0.3],
        "contrast": [0.75, 0.5, 0.4, 0.3, 0.15],
        "elastic_transform": [(0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                              (0.1, 0.03, 0.03)],
        "pixelate": [0.95, 0.9, 0.85, 0.75, 0.65],
        "jpeg_compression": [80, 65, 58, 50, 40],
    },
}
FROST_SCALE = {"imagenet": 1.0, "cifar": 0.2}  # the frost photographs are shrunk 5× for CIFAR
SAVED_AS_JPEG = {"imagenet": 85, "cifar": None}


def protocol_for(height: int, width: int, protocol: str = "auto") -> str:
    if protocol == "auto":
        return "imagenet" if min(height, width) >= 96 else "cifar"
    if protocol not in PROTOCOLS:
        raise ConfigError(f"robustness protocol {protocol!r} is not valid; choose auto, {', '.join(PROTOCOLS)}")
    return protocol


def corrupt(x: torch.Tensor, name: str, severity: int, gens: list, protocol: str = "auto",
            frost_dir: str | None = None) -> torch.Tensor:
    """Corruption ``name`` at ``severity`` (1–5) of a batch (B, C, H, W) in [0, 1], as saved: on
    the 8-bit grid (truncated, as ``np.uint8``), and JPEG quality 85 for the imagenet protocol."""
    if name not in CORRUPTIONS:
        raise ConfigError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    if not 1 <= severity <= 5:
        raise ConfigError(f"corruption severity {severity} is not valid; choose 1 to 5")
    protocol = protocol_for(*x.shape[-2:], protocol)
    c = PARAMS[protocol][name][severity - 1]
    if name == "frost":
        out = frost(x, c, gens, protocol, frost_dir)
    else:
        out = globals()[name](x, c, gens)
    out = ops.to_uint8_grid(out)
    return ops.jpeg(out, SAVED_AS_JPEG[protocol]) if SAVED_AS_JPEG[protocol] else out


# --------------------------------------------------------------------------------------- noise


def gaussian_noise(x, c, gens):
    return (x + c * ops.randn(gens, x.shape[1:]).to(x)).clamp(0, 1)


def shot_noise(x, c, gens):
    """Poisson photon counts at rate c·x, rescaled."""
    return ops.poisson(x, c, gens).clamp(0, 1)


def impulse_noise(x, c, gens):
    """Salt and pepper (scikit-image's ``s&p``): each value with probability c becomes 0 or 1,
    equally likely."""
    flipped = (ops.rand(gens, x.shape[1:]) <= c).to(x.device)
    salt = (ops.rand(gens, x.shape[1:]) <= 0.5).to(x)
    return torch.where(flipped, salt, x)


# ---------------------------------------------------------------------------------------- blur


def defocus_blur(x, c, gens):
    return ops.conv_same(x, ops.disk_kernel(*c)).clamp(0, 1)


def glass_blur(x, c, gens):
    sigma, max_delta, iterations = c
    x = ops.to_uint8_grid(ops.gaussian_blur(x, sigma))
    h, w = x.shape[-2:]
    rows = torch.arange(max_delta + 1, h - max_delta + 1)  # the reference's range(h − d, d, −1)
    cols = torch.arange(max_delta + 1, w - max_delta + 1)
    if len(rows) and len(cols):
        for _ in range(iterations):
            shifts = (ops.rand(gens, (2, len(rows), len(cols))) * 2 * max_delta).floor().long() - max_delta
            for b in range(len(x)):
                src_r = rows[:, None] + shifts[b, 1]
                src_c = cols[None, :] + shifts[b, 0]
                x[b][:, rows[:, None], cols[None, :]] = x[b][:, src_r, src_c]
    return ops.gaussian_blur(x, sigma).clamp(0, 1)


def motion_blur(x, c, gens):
    radius, sigma = c
    return ops.motion_blur(x, radius, sigma, ops.uniform(gens, -45, 45)).clamp(0, 1)


def zoom_blur(x, c, gens):
    factors = np.arange(1, c[0], c[1])  # NumPy's arange, so the number of zooms is the script's
    out = x.clone()
    for z in factors:
        out += ops.clipped_zoom(x, float(z))
    return (out / (len(factors) + 1)).clamp(0, 1)


# ------------------------------------------------------------------------------------- weather


def snow(x, c, gens):
    loc, scale, zoom, threshold, radius, sigma, blend = c
    layer = ops.snow_layer(x, loc, scale, zoom, threshold, gens)
    return ops.add_snow(x, ops.motion_blur(layer, radius, sigma, ops.uniform(gens, -135, -45)), blend)


def frost(x, c, gens, protocol: str, frost_dir: str | None):
    h, w = x.shape[-2:]
    layers = []
    for g in gens:
        if frost_dir:
            pictures = _frost_pictures(str(frost_dir), FROST_SCALE[protocol], h, w)
            pic = pictures[int(torch.randint(len(pictures), (), generator=g))]
            top = int(torch.randint(pic.shape[1] - h + 1, (), generator=g))
            left = int(torch.randint(pic.shape[2] - w + 1, (), generator=g))
            layer = pic[:, top:top + h, left:left + w]
        else:
            layer = procedural_frost(h, w, g)
        layers.append(layer if x.shape[1] == 3 else ops.gray(layer[None])[0])
    return (c[0] * x + c[1] * torch.stack(layers).to(x)).clamp(0, 1)


def procedural_frost(h: int, w: int, gen: torch.Generator) -> torch.Tensor:
    """A (3, h, w) ice texture in [0, 1]: fractal clouds plus crystal streaks (sparse bright seeds
    drawn out in three random directions), tinted blue-white. A stand-in for ImageNet-C's frost
    photographs, of similar brightness (mean ≈ 0.5)."""
    size = ops.next_power_of_two(max(h, w))
    clouds = ops.plasma_fractal(size, 1.6, gen)[:h, :w].float()
    seeds = (torch.rand(1, 1, h, w, generator=gen) < 0.03).float()
    reach = max(1, round(max(h, w) / 16))
    streaks = sum(ops.motion_blur(seeds, reach, reach / 2, [float(torch.rand((), generator=gen) * 360)])
                  for _ in range(3))[0, 0]
    streaks = streaks / streaks.max().clamp_min(1e-12)
    ice = (0.2 + 0.45 * clouds + 0.8 * streaks).clamp(0, 1)
    return ice[None] * torch.tensor([0.86, 0.93, 1.0]).view(3, 1, 1)


@functools.lru_cache(maxsize=4)
def _frost_pictures(frost_dir: str, scale: float, h: int, w: int) -> list:
    from PIL import Image

    files = sorted(p for p in Path(frost_dir).iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise ConfigError(f"frost folder {frost_dir} holds no .png or .jpg picture; give the folder of "
                          "frost1.png … frost6.jpg (hendrycks/robustness ImageNet-C/create_c)")
    pictures = []
    for f in files:
        img = Image.open(f).convert("RGB")
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.BILINEAR)
        grow = max(h / img.height, w / img.width, 1.0)  # pictures smaller than the image are enlarged
        if grow > 1:
            img = img.resize((math.ceil(img.width * grow), math.ceil(img.height * grow)), Image.BILINEAR)
        pictures.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1))
    return pictures


def fog(x, c, gens):
    strength, decay = c
    h, w = x.shape[-2:]
    size = ops.next_power_of_two(max(h, w))
    maps = torch.stack([ops.plasma_fractal(size, decay, g)[:h, :w] for g in gens])[:, None].to(x)
    peak = x.amax((1, 2, 3), keepdim=True)
    return ((x + strength * maps) * peak / (peak + strength)).clamp(0, 1)


def brightness(x, c, gens):
    return ops.shift_value(x, c)


# ------------------------------------------------------------------------------------- digital


def contrast(x, c, gens):
    means = x.mean((2, 3), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


def elastic_transform(x, c, gens):
    """A random affine map (three points near the centre moved by up to c[2]·side), then a smooth
    random displacement field (uniform noise, Gaussian σ = c[1]·side, scaled by c[0]·side)."""
    h, w = x.shape[-2:]
    side = min(h, w)
    alpha, sigma, affine = (v * side for v in c)
    cy, cx, sq = h // 2, w // 2, side // 3
    pts1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    moved = pts1 + (ops.rand(gens, (3, 2)).double() * 2 - 1) * affine
    matrices = torch.stack([_affine_from_points(pts1, m) for m in moved])
    x = ops.warp(x, matrices, padding="reflection")
    fields = (ops.rand(gens, (2, h, w)) * 2 - 1).to(x)
    fields = ops.gaussian_blur(fields, sigma, truncate=3.0, mode="reflect") * alpha
    v, u = torch.meshgrid(torch.arange(h).to(x), torch.arange(w).to(x), indexing="ij")
    grid = torch.stack([(u + fields[:, 0]) * 2 / max(w - 1, 1) - 1, (v + fields[:, 1]) * 2 / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True).clamp(0, 1)


def _affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3×3 affine matrix taking three points ``src`` to ``dst`` (OpenCV's getAffineTransform),
    points given as the reference builds them from the (height, width) shape and read as (x, y)."""
    a = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], 1)
    m = torch.eye(3, dtype=torch.float64)
    m[:2] = torch.linalg.solve(a, dst).T
    return m


def pixelate(x, c, gens):
    return ops.pixelate(x, c)


def jpeg_compression(x, c, gens):
    return ops.jpeg(x, c)
