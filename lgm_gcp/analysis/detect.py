"""lgm-gcp-detect: separate clean test images from FGSM adversarial ones (the L-GM paper's
abnormal-input detection), by three scores, reported as ROC-AUC (clean = positive):

(a) L-GM likelihood: −d_ẑ(x), the negative half squared (Mahalanobis) distance of the feature to the
    mean of its predicted class ẑ (L-GM runs only);
(b) the maximum softmax probability of the prediction logits;
(c) kernel density (Feinman et al.'s baseline, as the authors' later code): a Gaussian KDE with
    bandwidth h on the predicted class's training features, log mean exp(−‖f − f_i‖² / (2h²)).

FGSM: x_adv = clip(x + ε · sign(∇_x CE(logits(x), y))), with ε in [0, 1] pixel units (converted to
the normalised input space per channel) and clipping to the valid pixel range.

    lgm-gcp-detect <run dir> [--epsilon 0.1] [--bandwidth 1.5] [--max-images 2000]

Writes detect.json and detect_roc.png into the run folder and prints the AUCs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from lgm_gcp.analysis.runs import features_of, load_run
from lgm_gcp.errors import UserError, fail, one_line_parser, positive_float, positive_int, unit_interval
from lgm_gcp.losses.lgm import LGMLoss


def fgsm(model, images: torch.Tensor, targets: torch.Tensor, epsilon: float, mean: torch.Tensor,
         std: torch.Tensor) -> torch.Tensor:
    x = images.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), targets)
    (grad,) = torch.autograd.grad(loss, x)
    lo, hi = (0.0 - mean) / std, (1.0 - mean) / std
    return torch.max(torch.min(x.detach() + (epsilon / std) * grad.sign(), hi), lo)


def kde_scores(features: torch.Tensor, predicted: torch.Tensor, train_feats: torch.Tensor, train_labels: torch.Tensor,
               bandwidth: float) -> torch.Tensor:
    scores = torch.empty(len(features), dtype=torch.float64)
    for k in predicted.unique():
        ref = train_feats[train_labels == k].double()
        rows = predicted == k
        if len(ref) == 0:
            scores[rows] = float("-inf")
            continue
        sq = torch.cdist(features[rows].double(), ref).square()
        scores[rows] = torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) - torch.log(torch.tensor(float(len(ref))))
    return scores


def scores_of(model, images: torch.Tensor, train_feats, train_labels, bandwidth: float) -> dict:
    with torch.no_grad():
        feats = model.features(images)
        logits = model.criterion.logits(feats)
        predicted = logits.argmax(1)
        out = {"max_softmax": logits.float().softmax(1).max(1).values.double(),
               "kde": kde_scores(feats, predicted, train_feats, train_labels, bandwidth)}
        if isinstance(model.criterion, LGMLoss):
            out["lgm_likelihood"] = -model.criterion.half_distances(feats).gather(1, predicted[:, None])[:, 0].double()
    return out, predicted


def detect(run_dir: str | Path, epsilon: float = 0.1, bandwidth: float = 1.5, max_images: int = 2000) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    run_dir = Path(run_dir)
    cfg, data, model = load_run(run_dir)
    train_feats, train_labels = features_of(model, _train_batches(data))
    clean, labels = _first_test_images(data, max_images)
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    adversarial = torch.cat([fgsm(model, clean[i:i + 256], labels[i:i + 256], epsilon, mean, std)
                             for i in range(0, len(clean), 256)])
    clean_scores, clean_pred = scores_of(model, clean, train_feats, train_labels, bandwidth)
    adv_scores, adv_pred = scores_of(model, adversarial, train_feats, train_labels, bandwidth)
    result = {"run_dir": str(run_dir), "epsilon": epsilon, "bandwidth": bandwidth, "images": len(clean),
              "clean_accuracy": 100 * (clean_pred == labels).double().mean().item(),
              "adversarial_accuracy": 100 * (adv_pred == labels).double().mean().item(), "auc": {}}
    curves = {}
    for name in clean_scores:
        y = torch.cat([torch.ones(len(clean)), torch.zeros(len(clean))]).numpy()
        s = torch.cat([clean_scores[name], adv_scores[name]]).nan_to_num(neginf=-1e300).numpy()
        result["auc"][name] = float(roc_auc_score(y, s))
        curves[name] = roc_curve(y, s)[:2]
    (run_dir / "detect.json").write_text(json.dumps(result, indent=2))
    _plot(run_dir / "detect_roc.png", curves, result)
    return result


def _train_batches(data):
    """Un-augmented training images in order (for the KDE reference features)."""
    for i in range(0, len(data.train_y), 256):
        yield data.normalize(data.train_x[i:i + 256]), data.train_y[i:i + 256]


def _first_test_images(data, max_images: int) -> tuple:
    xs, ys, n = [], [], 0
    for images, labels in data.test_batches(256):
        xs.append(images)
        ys.append(labels)
        n += len(labels)
        if n >= max_images:
            break
    return torch.cat(xs)[:max_images], torch.cat(ys)[:max_images]


def _plot(path: Path, curves: dict, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {result['auc'][name]:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (adversarial kept)", ylabel="true positive rate (clean kept)",
           title=f"FGSM ε = {result['epsilon']}: clean vs adversarial")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-detect", __doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--epsilon", type=unit_interval, default=0.1, help="FGSM step in [0, 1] pixel units")
    parser.add_argument("--bandwidth", type=positive_float, default=1.5, help="KDE bandwidth on the features")
    parser.add_argument("--max-images", type=positive_int, default=2000)
    args = parser.parse_args(argv)
    try:
        result = detect(args.run_dir, args.epsilon, args.bandwidth, args.max_images)
    except UserError as e:
        fail("lgm-gcp-detect", e)
    print(json.dumps(result, indent=2))
