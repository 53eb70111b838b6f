"""Image operations the corruptions and perturbations are built from (Hendrycks & Dietterich, ICLR
2019, "Benchmarking neural network robustness to common corruptions and perturbations").

Every function takes a batch ``x`` of shape (B, C, H, W), C = 1 or 3, float in [0, 1], on any
device (random draws and Pillow's codecs run on the CPU), and works at any size (8×8 included):
where a filter is wider than the image, reflection padding gives way to edge replication. Random
draws come from ``gens``, one ``torch.Generator`` per image, so an image's corruption depends on its
own seed only, not on the batch it is evaluated in.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

# ----------------------------------------------------------------------------------- randomness


def randn(gens, shape) -> torch.Tensor:
    """(B, *shape) standard normal draws, row b from gens[b]."""
    return torch.stack([torch.randn(shape, generator=g) for g in gens])


def rand(gens, shape) -> torch.Tensor:
    """(B, *shape) uniform draws in [0, 1)."""
    return torch.stack([torch.rand(shape, generator=g) for g in gens])


def poisson(x: torch.Tensor, rate: float, gens) -> torch.Tensor:
    """Photon counts: Poisson(rate·x) / rate per value, image b drawn from gens[b]."""
    return torch.stack([torch.poisson(img.double().cpu() * rate, generator=g) / rate for img, g in zip(x, gens)]).to(x)


def uniform(gens, low: float, high: float) -> list:
    """One uniform number in [low, high) per image."""
    return [low + (high - low) * torch.rand((), generator=g, dtype=torch.float64).item() for g in gens]


# ------------------------------------------------------------------------------------ filtering


def pad(x: torch.Tensor, left: int, right: int, top: int, bottom: int, mode: str = "reflect") -> torch.Tensor:
    """Reflection (OpenCV's BORDER_REFLECT_101) where the image is wide enough, else replication."""
    if mode == "reflect" and (max(left, right) >= x.shape[-1] or max(top, bottom) >= x.shape[-2]):
        mode = "replicate"
    return F.pad(x, (left, right, top, bottom), mode=mode)


def conv_same(x: torch.Tensor, kernel: torch.Tensor, mode: str = "reflect") -> torch.Tensor:
    """Every channel filtered by one 2-D kernel (kh, kw) of odd sides, output the input's size."""
    kh, kw = kernel.shape
    b, c, h, w = x.shape
    y = pad(x.reshape(b * c, 1, h, w), kw // 2, kw // 2, kh // 2, kh // 2, mode)
    return F.conv2d(y, kernel.to(x)[None, None]).reshape(b, c, h, w)


def gaussian_kernel1d(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0, mode: str = "replicate") -> torch.Tensor:
    """scikit-image's ``filters.gaussian`` (SciPy's separable filter: radius int(truncate·σ + 0.5);
    its default border 'nearest' is ``mode='replicate'``)."""
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x
    k = gaussian_kernel1d(sigma, radius)
    return conv_same(conv_same(x, k[None, :], mode), k[:, None], mode)


def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """ImageNet-C's defocus kernel: a normalised disk of ``radius`` on a grid of at least 17×17,
    smoothed by a 3×3 (radius > 8: 5×5) Gaussian of σ ``alias_blur`` (OpenCV GaussianBlur)."""
    half = 8 if radius <= 8 else int(radius)
    t = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((t[None, :] ** 2 + t[:, None] ** 2) <= radius ** 2).double()
    disk /= disk.sum()
    ksize = 3 if radius <= 8 else 5
    g = gaussian_kernel1d(alias_blur, ksize // 2)
    return conv_same(disk[None, None], g[None, :] * g[:, None])[0, 0]


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: list) -> torch.Tensor:
    """ImageMagick's MotionBlurImage, which ImageNet-C calls: a one-sided line of 2·radius + 1 taps
    with Gaussian weights exp(−i²/(2σ²)), i = 0 … 2·radius, tap i reading the pixel at
    (round(i·cos θ), round(i·sin θ)) in (x, y); borders replicate the edge. One angle θ (degrees)
    per image."""
    width = 2 * int(math.ceil(radius)) + 1
    taps = torch.arange(width, dtype=torch.float64)
    weights = torch.exp(-0.5 * (taps / sigma) ** 2)
    weights = (weights / weights.sum()).to(x)
    reach = width - 1
    h, w = x.shape[-2:]
    padded = F.pad(x, (reach, reach, reach, reach), mode="replicate")
    out = torch.empty_like(x)
    for b, angle in enumerate(angles):
        rad = math.radians(angle)
        acc = torch.zeros_like(x[b])
        for i in range(width):
            dx, dy = math.ceil(i * math.cos(rad) - 0.5), math.ceil(i * math.sin(rad) - 0.5)
            acc += weights[i] * padded[b, :, reach + dy: reach + dy + h, reach + dx: reach + dx + w]
        out[b] = acc
    return out


def snow_layer(x: torch.Tensor, loc: float, scale: float, zoom: float, threshold: float, gens) -> torch.Tensor:
    """ImageNet-C's snow flakes for a batch like ``x``: (B, 1, H, W) normal noise (loc, scale),
    zoomed into by ``zoom``, values below ``threshold`` dropped, on the 8-bit grid."""
    layer = clipped_zoom((loc + scale * randn(gens, (1, *x.shape[-2:]))).to(x), zoom)
    return to_uint8_grid(torch.where(layer < threshold, torch.zeros_like(layer), layer))


def add_snow(x: torch.Tensor, blurred_layer: torch.Tensor, blend: float) -> torch.Tensor:
    """The image whitened towards 1.5·grey + 0.5 by 1 − ``blend``, plus the motion-blurred flakes
    (read back on the 8-bit grid, as ImageMagick returns them) and their 180° rotation."""
    flakes = (blurred_layer * 255).round() / 255
    x = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return (x + flakes + flakes.flip(-1, -2)).clamp(0, 1)


# ---------------------------------------------------------------------------------- geometry


def clipped_zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Zoom into the centre by ``factor`` ≥ 1 and keep the input's size: a centre crop of
    ceil(side / factor) resized (bilinear, corners aligned: SciPy's ``zoom`` of order 1) to
    round(crop · factor), then centre-trimmed."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / factor), math.ceil(w / factor)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    zoomed = F.interpolate(crop, size=(round(ch * factor), round(cw * factor)), mode="bilinear", align_corners=True)
    th, tw = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[..., th:th + h, tw:tw + w]


def warp(x: torch.Tensor, matrices: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Projective warp: output pixel (u, v) (pixel centres at integers) reads the input at
    M⁻¹·(u, v, 1), bilinear; ``matrices`` (B, 3, 3) map input to output pixel coordinates, as
    OpenCV's warpPerspective / warpAffine take them; outside the image is black (or reflected)."""
    b, _, h, w = x.shape
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    points = torch.stack([u, v, torch.ones_like(u)], -1).reshape(-1, 3)
    src = points @ torch.linalg.inv(matrices.double()).transpose(1, 2)  # (B, HW, 3)
    src = src[..., :2] / src[..., 2:]
    grid = torch.stack([src[..., 0] * 2 / max(w - 1, 1) - 1, src[..., 1] * 2 / max(h - 1, 1) - 1], -1)
    return F.grid_sample(x, grid.reshape(b, h, w, 2).to(x), mode="bilinear", padding_mode=padding,
                         align_corners=True)


def centred_affine(h: int, w: int, angle: float = 0.0, scale: float = 1.0, translate=(0.0, 0.0)) -> torch.Tensor:
    """torchvision's ``F.affine`` as a matrix on pixel coordinates: rotation by ``angle`` degrees
    (counter-clockwise on screen) and ``scale`` about the image centre, then ``translate`` (x, y)."""
    cx, cy = (w - 1) / 2, (h - 1) / 2
    a = math.radians(angle)
    rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64) * scale
    m = torch.eye(3, dtype=torch.float64)
    m[:2, :2] = rot
    m[:2, 2] = torch.tensor([cx + translate[0], cy + translate[1]], dtype=torch.float64) - rot @ torch.tensor(
        [cx, cy], dtype=torch.float64)
    return m


def tilt_matrix(h: int, w: int, degrees: float) -> torch.Tensor:
    """ImageNet-P's tilt: the image plane rotated by ``degrees`` about both the x and y axes and
    re-projected with focal length √(w² + h²) (P2·T·R_x·R_y·P1 of its generating script)."""
    t = p = math.radians(degrees)
    f = math.hypot(w, h)
    p1 = torch.tensor([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0, 0], [0, math.cos(t), -math.sin(t), 0], [0, math.sin(t), math.cos(t), 0],
                       [0, 0, 0, 1]], dtype=torch.float64)
    ry = torch.tensor([[math.cos(p), 0, -math.sin(p), 0], [0, 1, 0, 0], [math.sin(p), 0, math.cos(p), 0],
                       [0, 0, 0, 1]], dtype=torch.float64)
    tz = torch.eye(4, dtype=torch.float64)
    tz[2, 3] = f
    p2 = torch.tensor([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]], dtype=torch.float64)
    return p2 @ tz @ rx @ ry @ p1


# -------------------------------------------------------------------------------------- colour


def gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) luma, OpenCV's RGB2GRAY weights (0.299, 0.587, 0.114); grey input unchanged."""
    if x.shape[1] == 1:
        return x
    return (x * torch.tensor([0.299, 0.587, 0.114]).to(x).view(1, 3, 1, 1)).sum(1, keepdim=True)


def shift_value(x: torch.Tensor, shift) -> torch.Tensor:
    """Add ``shift`` (a number, or one per image) to HSV's value V = max over channels, clipped to
    [0, 1], hue and saturation kept: RGB scales by V'/V (black becomes grey V')."""
    shift = torch.as_tensor(shift, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
    v = x.amax(1, keepdim=True)
    v_new = (v + shift).clamp(0, 1)
    return torch.where(v > 0, x * v_new / v.clamp_min(1e-12), v_new.expand_as(x))


def scale_saturation(x: torch.Tensor, factor: float, offset: float) -> torch.Tensor:
    """HSV's saturation S = (V − min)/V set to clip(S·factor + offset, 0, 1), hue and V kept."""
    v = x.amax(1, keepdim=True)
    lo = x.amin(1, keepdim=True)
    s = torch.where(v > 0, (v - lo) / v.clamp_min(1e-12), torch.zeros_like(v))
    s_new = (s * factor + offset).clamp(0, 1)
    # each channel's distance below V scales with S (hue fixed); grey pixels have no hue: kept
    ratio = torch.where(s > 0, s_new / s.clamp_min(1e-12), torch.ones_like(s))
    return torch.where(s > 0, v - (v - x) * ratio, x)


# ------------------------------------------------------------------------------------- fractal


def plasma_fractal(size: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """A (size, size) diamond-square height map scaled to [0, 1] (``size`` a power of two): each
    step sets the square centres, then the diamond centres, to the mean of their four neighbours
    (wrapping around) plus uniform noise of amplitude ``wibble``², ``wibble`` starting at 100 and
    divided by ``decay`` per level, ImageNet-C's fog."""
    m = torch.zeros(size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def noisy_mean(total: torch.Tensor) -> torch.Tensor:
        return total / 4 + wibble * (torch.rand(total.shape, generator=gen, dtype=torch.float64) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = m[0::step, 0::step]
        square = corners + corners.roll(-1, 0)
        square = square + square.roll(-1, 1)
        m[half::step, half::step] = noisy_mean(square)
        centres = m[half::step, half::step]
        corners = m[0::step, 0::step]
        m[0::step, half::step] = noisy_mean(centres + centres.roll(1, 0) + corners + corners.roll(-1, 1))
        m[half::step, 0::step] = noisy_mean(centres + centres.roll(1, 1) + corners + corners.roll(-1, 0))
        step //= 2
        wibble /= decay
    m -= m.min()
    return m / m.max()


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


# ---------------------------------------------------------------------------------- encodings


def to_uint8_grid(x: torch.Tensor) -> torch.Tensor:
    """What saving the array as an image does (``np.uint8(255·x)``: truncation), back in [0, 1]."""
    return (x.clamp(0, 1) * 255).floor() / 255


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    """A JPEG round trip at ``quality`` (Pillow, the library the references save with)."""
    out = torch.empty_like(x)
    for b in range(len(x)):
        buf = io.BytesIO()
        _to_pil(x[b]).save(buf, "JPEG", quality=int(quality))
        out[b] = _from_pil(Image.open(buf), x.shape[1])
    return out


def pixelate(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Box-downsample to int(side·factor), then box-upsample back (Pillow's BOX filter)."""
    h, w = x.shape[-2:]
    small = (max(1, int(w * factor)), max(1, int(h * factor)))
    out = torch.empty_like(x)
    for b in range(len(x)):
        out[b] = _from_pil(_to_pil(x[b]).resize(small, Image.BOX).resize((w, h), Image.BOX), x.shape[1])
    return out


def _to_pil(img: torch.Tensor) -> Image.Image:
    array = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def _from_pil(img: Image.Image, channels: int) -> torch.Tensor:
    array = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255
    return torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1)).permute(2, 0, 1)
