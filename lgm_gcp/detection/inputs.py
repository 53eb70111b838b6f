"""The inputs a detector must tell from clean test images, each a name of ``lgm-gcp-detect --inputs``.

Adversarial (``attacks.py``): ``fgsm``, ``bim``, ``pgd`` at every ``--epsilon``; ``cw``, ``deepfool`` at
``--l2-epsilon``. Each is paired with its clean image: by default (``--keep successful``) only the pairs
whose clean image is classified correctly and whose adversarial one is not, as Feinman et al., Ma et al.
and Lee et al. count them; both sides of the ROC are those pairs.

Out of distribution, every one offline (the clean side is every clean test image):
  digits     scikit-learn's 1,797 handwritten 8x8 digits, resized bilinearly to the run's input size and
             repeated over its channels: the stand-in for MNIST (Fashion-MNIST against MNIST is the usual
             offline pair; MNIST itself is not on this machine)
  unknown    the test images of the classes held out of training (open set), from a run trained with
             ``dataset.known_classes``
  uniform    pixels uniform in [0, 1]
  gaussian   pixels N(mean, std) of the run's dataset, clipped to [0, 1]
  corrupted  test images under the 15 ImageNet-C corruptions at severity 5 (the corruption rotating over
             the images; the CIFAR parameters below 96 px), as ``lgm-gcp-robustness`` draws them
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lgm_gcp.detection.attacks import ATTACKS, LINF_ATTACKS, attack
from lgm_gcp.errors import ConfigError

OOD_SETS = ("digits", "unknown", "uniform", "gaussian", "corrupted")
INPUTS = ATTACKS + OOD_SETS


@dataclass
class Clean:
    """What every input set is made from: the run's network and data, and its clean test images."""

    model: torch.nn.Module
    data: object
    images: torch.Tensor  # (N, C, H, W) normalised, on the device
    labels: torch.Tensor  # (N,)
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor
    seed: int = 0


@dataclass
class InputSet:
    name: str  # as in the tables: "fgsm ε=0.1", "digits"
    images: torch.Tensor  # normalised
    adversarial: bool = False  # paired image by image with the clean images


def expand(names: list, epsilons: list) -> list:
    """``--inputs`` names -> (name, ε) items, an L∞ attack once per ε."""
    return [(n, e) for n in names for e in (epsilons if n in LINF_ATTACKS else [None])]


def why_not(name: str, data) -> str | None:
    """One line saying why ``name`` cannot be made for this run's data, or None."""
    if name == "unknown" and getattr(data, "unknown_x", None) is None:
        return ("unknown: the run was trained on every class; train with dataset.known_classes=[...] "
                "to hold classes out (open set)")
    if name == "unknown" and not len(data.unknown_x):
        return "unknown: the held-out classes have no test images"
    if name == "digits" and getattr(data, "name", "") == "digits":
        return "digits: the run was trained on the digits; it is not out of distribution there"
    return None


def make(name: str, epsilon, clean: Clean, steps: int, l2_epsilon: float, max_images: int) -> InputSet:
    if name in ATTACKS:
        adversarial = attack(name, clean.model, clean.images, clean.labels, epsilon, clean.mean, clean.std, steps,
                             l2_epsilon, clean.seed)
        label = f"{name} ε={epsilon:g}" if epsilon is not None else f"{name} L2≤{l2_epsilon:g}"
        return InputSet(label, adversarial, adversarial=True)
    device = clean.images.device
    if name == "unknown":  # held-out test images, resized and normalised as the run's own test images
        return InputSet(name, clean.data.normalize(clean.data.unknown_x[:max_images]).to(device))
    g = torch.Generator().manual_seed(clean.seed)
    n, c = min(max_images, len(clean.images)), clean.images.shape[1]
    size = clean.images.shape[-2:]
    if name == "digits":
        from sklearn.datasets import load_digits

        pixels = torch.from_numpy(load_digits().images[:max_images]).float().div(16.0)[:, None]
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False).clamp(0, 1).repeat(1, c, 1, 1)
    elif name == "uniform":
        pixels = torch.rand((n, c, *size), generator=g)
    elif name == "gaussian":
        m, s = clean.mean.cpu(), clean.std.cpu()
        pixels = (m + s * torch.randn((n, c, *size), generator=g)).clamp(0, 1)
    elif name == "corrupted":
        pixels = corrupted(clean, n)
    else:
        raise ConfigError(f"unknown input set {name!r}; valid: {', '.join(INPUTS)}")
    return InputSet(name, (pixels.to(device) - clean.mean) / clean.std)


def corrupted(clean: Clean, n: int) -> torch.Tensor:
    from lgm_gcp.robustness import corruptions as C
    from lgm_gcp.robustness.evaluate import image_seed, pixels_of

    pixels = pixels_of(clean.images[:n], clean.mean, clean.std).cpu()
    out = torch.empty_like(pixels)
    for k, name in enumerate(C.CORRUPTIONS):
        rows = torch.arange(k, n, len(C.CORRUPTIONS))
        if len(rows):
            gens = [torch.Generator().manual_seed(image_seed(clean.seed, k, 5, int(i))) for i in rows]
            out[rows] = C.corrupt(pixels[rows], name, 5, gens)
    return out
