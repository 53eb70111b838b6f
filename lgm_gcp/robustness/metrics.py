"""ImageNet-C and ImageNet-P metrics (Hendrycks & Dietterich, ICLR 2019), with AlexNet's published
ImageNet-C errors as the default ImageNet normaliser.

Errors E are fractions in [0, 1]; ratios are reported ×100, as the papers do.
  CE_c          = Σ_s E_{s,c} / Σ_s B_{s,c}                                (B: the baseline's errors)
  relative CE_c = Σ_s (E_{s,c} − E_clean) / Σ_s (B_{s,c} − B_clean)
  mCE, relative mCE: their means over the corruptions, ×100
  FP_p   (flip probability) = mean over sequences of the share of compared frame pairs whose top-1
         prediction differs; noise sequences compare every frame with frame 0, the others each frame
         with the one before (difficulty 1, as ImageNet-P/test.sh runs it)
  T5D_p  (top-5 distance) = the same mean of Σ_{i=1}^{5} |i − min(σ(i), 6)|, σ(i) the rank in the
         later frame of the class ranked i in the earlier one
  mFP, mT5D: means over the perturbations of FP_p / FP_p^baseline and T5D_p / T5D_p^baseline, ×100
A ratio whose denominator is not positive (a baseline that never erred, flipped or degraded under
that corruption: it happens on small test sets) is undefined: it is recorded as None and left out
of the mean, and the summary lists it under ``undefined``. On ImageNet-C/P every ratio is defined
and the means are the papers'.
"""

from __future__ import annotations

import statistics

import torch

# AlexNet's ImageNet-C top-1 errors per severity 1–5 (torchvision's alexnet-owt-4df8aa71.pth, the
# model hendrycks/robustness normalises by; the per-corruption means are augmix's ALEXNET_ERR)
ALEXNET_ERRORS = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}
ALEXNET_CLEAN_ERROR = 0.4348  # robustness_metrics' ALEXNET_AVERAGE_ERR_CLEAN (the paper's Appendix C)


def ratios(numerators: dict, denominators: dict) -> dict:
    """100·n/d per key; None where d is not positive (beyond float rounding)."""
    return {k: 100 * n / denominators[k] if denominators[k] > 1e-12 else None for k, n in numerators.items()}


def mean_defined(values: dict) -> float | None:
    defined = [v for v in values.values() if v is not None]
    return statistics.fmean(defined) if defined else None


def corruption_summary(errors: dict, clean: float, baseline: dict | None = None,
                       baseline_clean: float | None = None) -> dict:
    """``errors``: corruption → the 5 severities' errors; ``clean``: the clean error. Without a
    baseline only the unnormalised mean error (CIFAR-10-C's "mean corruption error") is defined."""
    out = {"clean_error": 100 * clean,
           "mean_error": 100 * statistics.fmean(e for errs in errors.values() for e in errs)}
    if baseline is None:
        return out | {"CE": None, "relative_CE": None, "mCE": None, "relative_mCE": None, "undefined": []}
    ce = ratios({c: sum(e) for c, e in errors.items()}, {c: sum(baseline[c]) for c in errors})
    rel = ratios({c: sum(x - clean for x in e) for c, e in errors.items()},
                 {c: sum(b - baseline_clean for b in baseline[c]) for c in errors})
    undefined = [f"CE {c}" for c, v in ce.items() if v is None] + [f"relative CE {c}" for c, v in rel.items()
                                                                    if v is None]
    return out | {"CE": ce, "relative_CE": rel, "mCE": mean_defined(ce), "relative_mCE": mean_defined(rel),
                  "undefined": undefined}


def flip_probability(top1: torch.Tensor, to_first: bool) -> float:
    """``top1`` (frames T, sequences N): each frame's predicted class."""
    reference = top1[:1].expand(len(top1) - 1, -1) if to_first else top1[:-1]
    return (top1[1:] != reference).double().mean(0).mean().item()


def top5_distance(ranks: torch.Tensor, to_first: bool) -> float:
    """``ranks`` (frames T, sequences N, classes K): the 1-based rank of every class in each frame."""
    earlier = ranks[:1].expand(len(ranks) - 1, -1, -1) if to_first else ranks[:-1]
    later = ranks[1:]
    order = earlier.argsort(-1)[..., :5]                   # the classes ranked 1 … 5 in the earlier frame
    sigma = later.gather(-1, order).clamp(max=6)           # their ranks in the later frame, capped at 6
    i = torch.arange(1, 6, device=ranks.device)
    return (i - sigma).abs().sum(-1).double().mean(0).mean().item()


def perturbation_summary(fp: dict, t5d: dict, baseline: dict | None = None) -> dict:
    """``fp``, ``t5d``: perturbation → raw value; ``baseline``: the baseline's {"FP": …, "T5D": …}."""
    out = {"FP": fp, "T5D": t5d, "mean_FP": 100 * statistics.fmean(fp.values()),
           "mean_T5D": statistics.fmean(t5d.values())}
    if baseline is None:
        return out | {"FR": None, "T5D_ratio": None, "mFP": None, "mT5D": None, "undefined": []}
    fr = ratios(fp, {p: baseline["FP"][p] for p in fp})
    tr = ratios(t5d, {p: baseline["T5D"][p] for p in t5d})
    undefined = [f"FR {p}" for p, v in fr.items() if v is None] + [f"T5D ratio {p}" for p, v in tr.items()
                                                                    if v is None]
    return out | {"FR": fr, "T5D_ratio": tr, "mFP": mean_defined(fr), "mT5D": mean_defined(tr),
                  "undefined": undefined}


def ranks_of(logits: torch.Tensor) -> torch.Tensor:
    """(N, K) logits → (N, K) ordinal 1-based ranks (rank 1 = the largest logit; ties by index, as
    SciPy's ``rankdata(-logits, method='ordinal')``)."""
    order = torch.sort(-logits, dim=-1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(1, logits.shape[-1] + 1, device=logits.device).expand_as(order))
    return ranks
