"""Detectors by name: L-GM's likelihood and Feinman et al.'s kernel density written here, the rest
pytorch-ood's (the ``[ood]`` extra), all behind pytorch-ood's interface (``fit_features(z, y)``,
``predict_features(z)`` / ``predict_logits(f)`` / ``predict(x)``) and all returning outlier scores
(higher = more abnormal).

  name         score (z: the head's feature, f: logits, ŷ = argmax f)               reads
  lgm          d_ŷ(z) = ½ Σ_d (z_d − μ_ŷd)² / σ_ŷ: the L-GM likelihood, negated    feature, L-GM's μ, σ
  kde          −log (1/N_ŷ) Σ_i exp(−‖z − z_i‖² / 2h²) over ŷ's training features   feature (fitted)
  msp          −max_c softmax(f)_c                                                   logits
  maxlogit     −max_c f_c                                                            logits
  entropy      −Σ_c p_c log p_c                                                      logits
  energy       −log Σ_c exp f_c                                                      logits
  odin         −max softmax(f(x̂)/T), x̂ = x − ε sign ∇_x CE(f(x)/T, ŷ); T 1000, ε 0.0014  input gradient
  mahalanobis  ½ min_k (z − μ_k)ᵀ S⁻¹ (z − μ_k), S the tied scatter (pytorch-ood: not divided by N)
  rmd          min_k d_k − d_0, d_0 under one Gaussian of all training features (relative Mahalanobis)
  vim          α‖Rᵀ(z − u)‖ − log Σ exp f, R the residual of the top-d principal space       feature + linear head
  knn          distance to the k-th (50) nearest normalised training feature

With σ = 1, ``lgm`` is ``mahalanobis`` with S = I and the learnt means instead of the fitted ones.
Features wider than ``max_cov_dim`` (a GCP head's d(d+1)/2 = 32,896 at d = 256: a tied covariance of
4.3 GB in float32) reach ``mahalanobis`` and ``rmd`` projected onto their ``pca_dim`` (256) leading
principal components, from the fit images; ``vim`` (whose logits need the whole feature) is refused there.
"""

from __future__ import annotations

import math

import torch
from pytorch_ood import detector as ood
from pytorch_ood.api import FeaturesDetector, LogitsDetector

from lgm_gcp.losses.lgm import LGMLoss


def linear_head(criterion) -> tuple | None:
    """(W (C, D), b (C,)) with logits = z Wᵀ + b up to a term common to all classes, or None. For L-GM with
    one shared σ and no log-det: −½‖z − μ_k‖²/σ = μ_kᵀz/σ − ½‖μ_k‖²/σ − ½‖z‖²/σ, so W = μ/σ, b = −½‖μ‖²/σ."""
    if isinstance(criterion, LGMLoss):
        sigma = criterion.variances(torch.float64)
        if sigma.dim() != 1 or criterion.log_det or not bool((sigma == sigma[0]).all()):
            return None
        mu = criterion.means.detach().double()
        return (mu / sigma[0]).float(), (-0.5 * mu.square().sum(1) / sigma[0]).float()
    fc = getattr(criterion, "fc", None)
    if isinstance(fc, torch.nn.Linear) and fc.bias is not None:
        return fc.weight.detach().float(), fc.bias.detach().float()
    return None


def why_not(name: str, criterion, feature_dim: int, max_cov_dim: int) -> str | None:
    """One line saying why ``name`` does not apply to this run, or None."""
    if name == "lgm" and not isinstance(criterion, LGMLoss):
        return f"lgm: the run's loss is {type(criterion).__name__}; L-GM's likelihood needs a loss=lgm run"
    if name == "vim" and linear_head(criterion) is None:
        return "vim: needs a linear last layer (softmax, large-margin, or L-GM with one shared σ and no log-det)"
    if name == "vim" and feature_dim > max_cov_dim:
        return (f"vim: its logits read the whole {feature_dim:,}-d feature, whose covariance (over "
                f"--max-cov-dim {max_cov_dim}) is not formed; use mahalanobis/rmd (PCA-projected), knn or kde")
    return None


def build(name: str, model, feature_dim: int, *, std: list, bandwidth: float = 1.5, knn_k: int = 50,
          vim_dim: int | None = None, max_cov_dim: int = 4096, pca_dim: int = 256, seed: int = 0):
    """Detector ``name`` for a ``Network`` (images -> logits; ``features``, ``criterion``), not fitted."""
    criterion = model.criterion
    if name == "lgm":
        return LGMLikelihood(model.features, criterion)
    if name == "kde":
        return KernelDensity(model.features, criterion.logits, bandwidth)
    if name in ("msp", "maxlogit", "entropy", "energy"):
        return {"msp": ood.MaxSoftmax, "maxlogit": ood.MaxLogit, "entropy": ood.Entropy,
                "energy": ood.EnergyBased}[name](model)
    if name == "odin":
        return ood.ODIN(model, eps=0.0014, temperature=1000.0, norm_std=list(std))
    if name in ("mahalanobis", "rmd"):
        inner = (ood.Mahalanobis if name == "mahalanobis" else ood.RMD)(model.features)
        return Projected(model.features, inner, pca_dim, seed) if feature_dim > max_cov_dim else inner
    if name == "vim":
        w, b = linear_head(criterion)
        return ood.ViM(model.features, d=vim_dim or min(feature_dim // 2, 512), w=w, b=b)
    if name == "knn":
        return ood.KNN(model.features, k=knn_k)
    raise ValueError(f"unknown detector {name!r}")


def reads(detector) -> str:
    """What a detector scores: images (ODIN, through the network's input gradient), logits or features."""
    if isinstance(detector, ood.ODIN):
        return "images"
    return "logits" if isinstance(detector, LogitsDetector) else "features"


class LGMLikelihood(FeaturesDetector):
    """L-GM's likelihood as an outlier score: the half (σ-scaled) squared distance of the feature to the
    learnt mean of its predicted class, d_ŷ(z), ŷ = argmax of L-GM's logits (Wan et al. 2018, eq. 7)."""

    requires_fit = False

    def __init__(self, encoder, criterion: LGMLoss):
        self.encoder, self.criterion = encoder, criterion

    def fit_features(self, z: torch.Tensor, y: torch.Tensor):
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(self.encoder(x))

    @torch.no_grad()
    def predict_features(self, z: torch.Tensor) -> torch.Tensor:
        d = self.criterion.half_distances(z)
        predicted = self.criterion.logits(z).argmax(1)
        return d.gather(1, predicted[:, None])[:, 0].double()


class KernelDensity(FeaturesDetector):
    """Feinman et al. (2017)'s density score: a Gaussian KDE of bandwidth h on the training features of
    the predicted class ŷ; outlier score −log (1/N_ŷ) Σ_i exp(−‖z − z_i‖² / (2h²)) (no normalising
    constant: it is common to all inputs). A class with no training feature scores +inf."""

    requires_fit = True

    def __init__(self, encoder, classifier, bandwidth: float):
        self.encoder, self.classifier, self.bandwidth = encoder, classifier, bandwidth
        self.reference = None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(self.encoder(x))

    def fit_features(self, z: torch.Tensor, y: torch.Tensor):
        self.reference = (z.detach().double(), y.detach())
        return self

    @torch.no_grad()
    def predict_features(self, z: torch.Tensor) -> torch.Tensor:
        train, labels = self.reference
        predicted = self.classifier(z).argmax(1)
        out = torch.full((len(z),), math.inf, dtype=torch.float64, device=z.device)
        for k in predicted.unique():
            ref, rows = train[labels == k].to(z.device), predicted == k
            if len(ref):
                sq = torch.cdist(z[rows].double(), ref).square()
                out[rows] = math.log(len(ref)) - torch.logsumexp(-sq / (2 * self.bandwidth**2), dim=1)
        return out


class Projected(FeaturesDetector):
    """A covariance detector on the ``dim`` leading principal components of the fit features (torch's
    randomised ``pca_lowrank``, seeded): for features too wide for a D x D covariance."""

    requires_fit = True

    def __init__(self, encoder, inner, dim: int, seed: int = 0):
        self.encoder, self.inner, self.dim, self.seed = encoder, inner, dim, seed
        self.centre = self.basis = None

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predict_features(self.encoder(x))

    def fit_features(self, z: torch.Tensor, y: torch.Tensor):
        z = z.float()
        self.centre = z.mean(0)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            _, _, v = torch.pca_lowrank(z - self.centre, q=min(self.dim, *z.shape), center=False)
        self.basis = v
        self.inner.fit_features(self.project(z), y)
        return self

    def project(self, z: torch.Tensor) -> torch.Tensor:
        return (z.float() - self.centre.to(z.device)) @ self.basis.to(z.device)

    def predict_features(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.predict_features(self.project(z))
