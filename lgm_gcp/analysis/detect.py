"""lgm-gcp-detect: separate clean test images from adversarial ones (the L-GM paper's abnormal-input
detection, evaluated as its predecessors do), by three scores, reported as ROC-AUC (clean = positive):

(a) L-GM likelihood: −d_ẑ(x), the negative half squared (Mahalanobis) distance of the feature to the
    mean of its predicted class ẑ (L-GM runs only);
(b) the maximum softmax probability of the prediction logits;
(c) kernel density (Feinman et al.'s baseline, as the authors' later code): a Gaussian KDE with
    bandwidth h on the predicted class's training features, log mean exp(−‖f − f_i‖² / (2h²)).

Attacks, with ε in [0, 1] pixel units (converted to the normalised input space per channel), every
iterate clipped to the valid pixel range:
  fgsm  x_adv = x + ε · sign(∇_x CE(logits(x), y))                      (Goodfellow et al.)
  bim   ``--steps`` T steps of α = 2.5ε/T along the sign of the gradient, each projected back onto
        the ε-ball around x                                              (Kurakin et al.)
  pgd   bim from a uniform random start in the ε-ball (seeded)           (Madry et al.)
Pairs: by default only those whose clean image is classified correctly and whose adversarial one is
not (``--keep successful``, as Feinman et al. and the L-GM paper's detection experiments count them);
``--keep all`` keeps every test image. detect.json says which, and how many pairs each AUC rests on.

    lgm-gcp-detect RUN [RUN ...] [--attacks fgsm bim pgd] [--epsilon 0.05 0.1] [--keep successful|all]

Writes detect.json and detect_roc.png (the first attack and ε) into each run folder, and prints (and
writes to detect_table.md in the first run folder, or --out) one table over runs × attacks × ε.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from lgm_gcp.analysis.runs import add_device_argument, features_of, load_run, resolve_device
from lgm_gcp.errors import UserError, fail, one_line_parser, output_path, positive_float, positive_int, unit_interval
from lgm_gcp.losses.lgm import LGMLoss
from lgm_gcp.markdown import markdown_table


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


ATTACKS = ("fgsm", "bim", "pgd")


def attack(name: str, model, images, targets, epsilon, mean, std, steps: int) -> torch.Tensor:
    if name == "fgsm":
        return fgsm(model, images, targets, epsilon, mean, std)
    return iterative(model, images, targets, epsilon, mean, std, steps, random_start=name == "pgd")


def kde_scores(features: torch.Tensor, predicted: torch.Tensor, train_feats: torch.Tensor, train_labels: torch.Tensor,
               bandwidth: float) -> torch.Tensor:
    scores = torch.empty(len(features), dtype=torch.float64, device=features.device)
    for k in predicted.unique():
        ref = train_feats[train_labels == k].double()
        rows = predicted == k
        if len(ref) == 0:
            scores[rows] = float("-inf")
            continue
        sq = torch.cdist(features[rows].double(), ref).square()
        scores[rows] = torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) - math.log(len(ref))
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
    return {k: v.cpu() for k, v in out.items()}, predicted.cpu()


def detect(run_dir: str | Path, epsilons=(0.1,), attacks=("fgsm",), bandwidth: float = 1.5,
           max_images: int = 2000, keep: str = "successful", steps: int = 10, device: str = "cpu") -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    run_dir = Path(run_dir)
    cfg, data, model = load_run(run_dir, device=device)
    train_feats, train_labels = features_of(model, _train_batches(data))
    clean, labels = _first_test_images(data, max_images)
    clean, on_device = clean.to(device), labels.to(device)  # attacked on the device; scores compared on the CPU
    mean, std = data.mean.view(1, -1, 1, 1).to(device), data.std.view(1, -1, 1, 1).to(device)
    clean_scores, clean_pred = scores_of(model, clean, train_feats, train_labels, bandwidth)
    result = {"run_dir": str(run_dir), "bandwidth": bandwidth, "images": len(clean), "keep": keep,
              "clean_accuracy": 100 * (clean_pred == labels).double().mean().item(), "results": []}
    plotted = None  # (title, {score: (fpr, tpr, auc)}): the first attack and ε with pairs
    for name in attacks:
        for epsilon in epsilons:
            adversarial = torch.cat([attack(name, model, clean[i:i + 256], on_device[i:i + 256], epsilon, mean, std,
                                            steps) for i in range(0, len(clean), 256)])
            adv_scores, adv_pred = scores_of(model, adversarial, train_feats, train_labels, bandwidth)
            pairs = ((clean_pred == labels) & (adv_pred != labels)) if keep == "successful" \
                else torch.ones_like(labels, dtype=torch.bool)
            entry = {"attack": name, "epsilon": epsilon, "steps": steps if name != "fgsm" else 1,
                     "adversarial_accuracy": 100 * (adv_pred == labels).double().mean().item(),
                     "pairs": int(pairs.sum()), "auc": {}}
            curves = {}
            for score in clean_scores:
                if not entry["pairs"]:
                    entry["auc"][score] = None
                    continue
                y = torch.cat([torch.ones(entry["pairs"]), torch.zeros(entry["pairs"])]).numpy()
                sc = torch.cat([clean_scores[score][pairs], adv_scores[score][pairs]]).nan_to_num(neginf=-1e300)
                entry["auc"][score] = float(roc_auc_score(y, sc.numpy()))
                curves[score] = (*roc_curve(y, sc.numpy())[:2], entry["auc"][score])
            if plotted is None and curves:
                plotted = (f"{name} ε = {epsilon:g}", curves)
            result["results"].append(entry)
    (run_dir / "detect.json").write_text(json.dumps(result, indent=2))
    _plot(run_dir / "detect_roc.png", *(plotted or ("no successful attack", {})), keep)
    return result


def table(results: list) -> str:
    """One markdown table over runs × attacks × ε."""
    scores = sorted({k for r in results for e in r["results"] for k in e["auc"]})
    header = ["run", "attack", "ε", "pairs", "clean acc %", "adv acc %", *(f"AUC {s}" for s in scores)]
    rows = [[Path(r["run_dir"]).name, e["attack"], f"{e['epsilon']:g}", e["pairs"], f"{r['clean_accuracy']:.1f}",
             f"{e['adversarial_accuracy']:.1f}",
             *("-" if e["auc"].get(s) is None else f"{e['auc'][s]:.3f}" for s in scores)]
            for r in results for e in r["results"]]
    keeps = {r["keep"] for r in results}
    note = ("pairs: clean correct and adversarial misclassified" if keeps == {"successful"}
            else "pairs: every test image" if keeps == {"all"} else "pairs: per run, see detect.json")
    return markdown_table(header, rows) + f"\n\n{note}; clean images are the positives.\n"


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


def _plot(path: Path, title: str, curves: dict, keep: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate (adversarial kept)", ylabel="true positive rate (clean kept)",
           title=f"{title}: clean vs adversarial ({keep} pairs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-detect", __doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN")
    parser.add_argument("--attacks", nargs="+", choices=ATTACKS, default=["fgsm"])
    parser.add_argument("--epsilon", type=unit_interval, nargs="+", default=[0.1], help="steps in [0, 1] pixel units")
    parser.add_argument("--steps", type=positive_int, default=10, help="iterations of bim and pgd")
    parser.add_argument("--keep", choices=("successful", "all"), default="successful",
                        help="successful: pairs whose clean image is right and adversarial one wrong; all: every image")
    parser.add_argument("--bandwidth", type=positive_float, default=1.5, help="KDE bandwidth on the features")
    parser.add_argument("--max-images", type=positive_int, default=2000)
    parser.add_argument("--out", type=output_path, default=None, help="where to write detect_table.md")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
        results = [detect(r, args.epsilon, args.attacks, args.bandwidth, args.max_images, args.keep, args.steps,
                          device) for r in args.run_dirs]
    except UserError as e:
        fail("lgm-gcp-detect", e)
    text = table(results)
    out = Path(args.out) if args.out else Path(args.run_dirs[0])
    (out / "detect_table.md" if out.is_dir() else out).write_text(text)
    print(text)
