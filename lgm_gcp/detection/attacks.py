"""Adversarial inputs for detection. Images are normalised (B, C, H, W) tensors as the network reads
them; ε is in [0, 1] pixel units and every result stays in the valid pixel range.

L∞, written here (in the normalised space, ε and steps divided by the std per channel):
  fgsm      x + ε · sign(∇_x CE(f(x), y))                                   (Goodfellow et al. 2015)
  bim       T steps of α = 2.5ε/T along the gradient's sign, each projected onto the ε-ball  (Kurakin et al.)
  pgd       bim from a uniform random start in the ε-ball (seeded)        (Madry et al. 2018)
L2, through foolbox (``[ood]`` extra) on the network with its normalisation in front, bounds (0, 1):
  cw        Carlini & Wagner L2: one constant c = 1, κ = 0, 50 Adam steps of 0.01 (torchattacks' defaults;
            foolbox's own 9 x 10,000 steps are too slow for a CPU table)
  deepfool  DeepFool L2, overshoot 0.02 (foolbox's), the 4 top-scoring classes as candidates and 20 steps (foolbox:
            10 and 50; its loop stops only when every image of a batch is adversarial, so one image that
            never flips costs the whole batch 50 x 10 gradient passes)
Both are minimum-norm attacks; the result is clipped to the L2 ball of radius ``l2_epsilon``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgm_gcp.errors import ConfigError

LINF_ATTACKS = ("fgsm", "bim", "pgd")
L2_ATTACKS = ("cw", "deepfool")
ATTACKS = LINF_ATTACKS + L2_ATTACKS


def fgsm(model, images: torch.Tensor, targets: torch.Tensor, epsilon: float, mean: torch.Tensor,
         std: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), targets)
    (grad,) = torch.autograd.grad(loss, x)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    return torch.max(torch.min(x.detach() + (epsilon / std) * grad.sign(), hi), lo)


def iterative(model, images: torch.Tensor, targets: torch.Tensor, epsilon: float, mean: torch.Tensor,
              std: torch.Tensor, steps: int, random_start: bool, seed: int = 0) -> torch.Tensor:
    """BIM (``random_start=False``) or PGD: ``steps`` sign-gradient steps of 2.5ε/steps, each projected
    onto the ε-ball around ``images`` and the valid pixel range (all in normalised units per channel)."""
    radius, alpha = epsilon / std, 2.5 * epsilon / steps / std
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    x = images.clone()
    if random_start:
        noise = torch.rand(images.shape, generator=torch.Generator().manual_seed(seed)).to(images)
        x = torch.max(torch.min(x + (2 * noise - 1) * radius, hi), lo)
    for _ in range(steps):
        x.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), targets), x)
        x = x.detach() + alpha * grad.sign()
        x = torch.max(torch.min(x, images + radius), images - radius)
        x = torch.max(torch.min(x, hi), lo)
    return x.detach()


class OnPixels(nn.Module):
    """The network on [0, 1] pixels: normalisation in front, as foolbox attacks in pixel space."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model((pixels - self.mean) / self.std)


def foolbox_l2(name: str, model, images, targets, l2_epsilon: float, mean, std) -> torch.Tensor:
    try:
        import foolbox
    except ImportError:
        raise ConfigError(f"--inputs {name} needs foolbox: pip install -e '.[ood]'") from None
    attack = (foolbox.attacks.L2CarliniWagnerAttack(binary_search_steps=1, steps=50, stepsize=0.01, confidence=0,
                                                    initial_const=1.0, abort_early=True) if name == "cw"
              else foolbox.attacks.L2DeepFoolAttack(steps=20, overshoot=0.02, candidates=4))
    fmodel = foolbox.PyTorchModel(OnPixels(model, mean, std).eval(), bounds=(0, 1), device=images.device)
    pixels = (images * std + mean).clamp(0, 1)
    _, clipped, _ = attack(fmodel, pixels, targets, epsilons=l2_epsilon)
    return (clipped.detach() - mean) / std


def attack(name: str, model, images, targets, epsilon: float, mean, std, steps: int, l2_epsilon: float,
           seed: int = 0) -> torch.Tensor:
    """``name``'s adversarial images of ``images`` (normalised), in batches of 256."""
    out = []
    for i in range(0, len(images), 256):
        x, y = images[i:i + 256], targets[i:i + 256]
        if name == "fgsm":
            out.append(fgsm(model, x, y, epsilon, mean, std))
        elif name in ("bim", "pgd"):
            out.append(iterative(model, x, y, epsilon, mean, std, steps, random_start=name == "pgd", seed=seed + i))
        else:
            out.append(foolbox_l2(name, model, x, y, l2_epsilon, mean, std))
    return torch.cat(out)
