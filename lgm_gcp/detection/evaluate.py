"""lgm-gcp-detect: how well each detector tells clean test images from abnormal ones (adversarial,
out-of-distribution, open-set), on any trained run, as pytorch-ood and OpenOOD score it.

    lgm-gcp-detect RUN [RUN ...] [--detectors lgm msp energy odin mahalanobis vim knn kde ...]
                   [--inputs fgsm bim pgd cw deepfool digits unknown uniform gaussian corrupted]
                   [--epsilon 0.1] [--l2-epsilon 2] [--keep successful|all] [--max-images 2000]

Detectors (``detectors.py``) are fitted on the run's first ``--fit-images`` un-augmented training images;
input sets (``inputs.py``) are made from its first ``--max-images`` test images. Each detector x input
set gets AUROC, AUPR-IN, AUPR-OUT and FPR@95TPR (``metrics.py``: abnormal inputs positive, FPR95 the
clean fraction flagged when 95 % of the abnormal ones are caught). A detector or input set that does
not apply to a run (L-GM's likelihood on a softmax run) is one line on stderr, and a blank in the table.
Writes detect.json and detect_roc.png (a panel per input set) into each run folder, and prints one table
per metric (to detect_table.md in the first run folder, or ``--out``): runs that differ only in their
seed are one row, mean ± std over them.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import torch
import yaml

from lgm_gcp.analysis.runs import add_device_argument, load_run, resolve_device
from lgm_gcp.detection.inputs import INPUTS
from lgm_gcp.errors import (
    ConfigError,
    UserError,
    fail,
    one_line_parser,
    output_path,
    positive_float,
    positive_int,
    unit_interval,
)
from lgm_gcp.markdown import markdown_table

DETECTORS = ("lgm", "kde", "msp", "maxlogit", "entropy", "energy", "odin", "mahalanobis", "rmd", "vim", "knn")
DEFAULT_DETECTORS = ["lgm", "msp", "energy", "odin", "mahalanobis", "vim", "knn", "kde"]
DEFAULT_INPUTS = ["fgsm", "pgd", "digits", "uniform", "corrupted"]
CONVENTION = ("Abnormal inputs are the positives and higher scores mean more abnormal (pytorch-ood, OpenOOD); "
              "FPR95 = fraction of clean inputs flagged when 95 % of the abnormal ones are caught.")


def detect(run_dir: str | Path, detectors=DEFAULT_DETECTORS, inputs=DEFAULT_INPUTS, epsilons=(0.1,),
           l2_epsilon: float = 2.0, keep: str = "successful", steps: int = 10, max_images: int = 2000,
           fit_images: int = 10000, bandwidth: float = 1.5, knn_k: int = 50, max_cov_dim: int = 4096,
           device: str = "cpu", seed: int = 0, say=print) -> dict:
    from lgm_gcp.detection import detectors as D
    from lgm_gcp.detection import inputs as I  # noqa: E741
    from lgm_gcp.detection.metrics import ood_metrics, roc

    run_dir = Path(run_dir)
    cfg, data, model = load_run(run_dir, device=device)
    fit_x, fit_y = _first(_train_batches(data), fit_images)
    fit_z = _batched(model.features, fit_x.to(device))
    feature_dim = fit_z.shape[1]
    chosen = {}
    for name in detectors:
        why = D.why_not(name, model.criterion, feature_dim, max_cov_dim)
        if why:
            say(f"lgm-gcp-detect: {run_dir.name}: {why}")
            continue
        if name == "knn" and len(fit_y) < knn_k:
            say(f"lgm-gcp-detect: {run_dir.name}: knn: {len(fit_y)} fit images for k = {knn_k}; lower --knn-k")
            continue
        chosen[name] = D.build(name, model, feature_dim, std=data.std.flatten().tolist(), bandwidth=bandwidth,
                               knn_k=knn_k, max_cov_dim=max_cov_dim, seed=seed)
        if getattr(chosen[name], "requires_fit", False):
            chosen[name].fit_features(fit_z, fit_y.to(device))
    del fit_z
    images, labels = _first(data.test_batches(256), max_images)
    images, labels = images.to(device), labels.to(device)
    mean, std = data.mean.view(1, -1, 1, 1).to(device), data.std.view(1, -1, 1, 1).to(device)
    clean = I.Clean(model, data, images, labels, mean, std, seed)
    clean_scores, predicted = _scores(chosen, model, images)
    result = {"run_dir": str(run_dir), "seed": cfg.get("seed"), "detectors": list(chosen), "keep": keep,
              "images": len(labels), "fit_images": len(fit_y),
              "fit_set": "training images" if hasattr(data, "train_x") else "augmented training batches (seed 0)",
              "feature_dim": int(feature_dim),
              "clean_accuracy": 100 * (predicted == labels).double().mean().item(), "convention": CONVENTION,
              "results": []}
    curves = {}
    for name, epsilon in I.expand(inputs, epsilons):
        why = I.why_not(name, data)
        if why:
            say(f"lgm-gcp-detect: {run_dir.name}: {why}")
            continue
        made = I.make(name, epsilon, clean, steps, l2_epsilon, max_images)
        scores, abnormal_predicted = _scores(chosen, model, made.images)
        entry = {"input": made.name, "kind": "adversarial" if made.adversarial else "ood"}
        if made.adversarial:
            pairs = ((predicted == labels) & (abnormal_predicted != labels) if keep == "successful"
                     else torch.ones_like(labels, dtype=torch.bool)).cpu()
            entry["adversarial_accuracy"] = 100 * (abnormal_predicted == labels).double().mean().item()
            entry["perturbation"] = _perturbation(made.images - images, std)
            entry["clean"] = entry["abnormal"] = int(pairs.sum())
            sides = {d: (clean_scores[d][pairs], scores[d][pairs]) for d in chosen}
        else:
            entry["clean"], entry["abnormal"] = len(labels), len(made.images)
            sides = {d: (clean_scores[d], scores[d]) for d in chosen}
        enough = entry["clean"] > 0 and entry["abnormal"] > 0
        entry["metrics"] = {d: ood_metrics(*sides[d]) if enough else None for d in chosen}
        if enough:
            curves[made.name] = {d: roc(*sides[d]) for d in chosen}
        result["results"].append(entry)
    (run_dir / "detect.json").write_text(json.dumps(result, indent=2))
    _plot(run_dir / "detect_roc.png", run_dir.name, curves, result)
    return result


def _scores(chosen: dict, model, images: torch.Tensor) -> tuple:
    """{detector: outlier scores (N,) float64 on the CPU}, and the network's predictions (N,)."""
    from lgm_gcp.detection.detectors import reads

    feats = _batched(model.features, images)
    with torch.no_grad():
        logits = model.criterion.logits(feats)
    out = {}
    for name, det in chosen.items():
        how = reads(det)
        if how == "images":
            s = torch.cat([det.predict(images[i:i + 256]) for i in range(0, len(images), 256)])
        elif how == "logits":
            s = det.predict_logits(logits)
        else:
            s = det.predict_features(feats)
        out[name] = s.detach().double().cpu()
    return out, logits.argmax(1)


@torch.no_grad()
def _batched(fn, images: torch.Tensor, size: int = 256) -> torch.Tensor:
    return torch.cat([fn(images[i:i + size]) for i in range(0, len(images), size)])


def _perturbation(delta: torch.Tensor, std: torch.Tensor) -> dict:
    """The largest L∞ and L2 perturbation, in [0, 1] pixel units."""
    pixels = (delta * std).flatten(1)
    return {"linf_max": float(pixels.abs().max()), "l2_max": float(pixels.norm(dim=1).max())}


def _train_batches(data):
    """The detectors' fit set: un-augmented training images in order where the dataset holds them in memory;
    an image-folder dataset's first training epoch (seed 0) otherwise, with its training augmentation."""
    if not hasattr(data, "train_x"):
        yield from data.train_batches(256, seed=0, epoch=0)
        return
    for i in range(0, len(data.train_y), 256):
        yield data.normalize(data.train_x[i:i + 256]), data.train_y[i:i + 256]


def _first(batches, n: int) -> tuple:
    xs, ys, seen = [], [], 0
    for x, y in batches:
        xs.append(x)
        ys.append(y)
        seen += len(y)
        if seen >= n:
            break
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


def group_labels(run_dirs: list) -> list:
    """A row label per run: its overrides (``overrides.yaml``) that not every run shares, without its seed,
    so runs that differ only in their seed share a label; the folder's name without ``seed=N`` where a
    run has no overrides file."""
    def overrides(run_dir):
        path = Path(run_dir) / "overrides.yaml"
        try:
            items = yaml.safe_load(path.read_text()) if path.is_file() else None
        except yaml.YAMLError:
            items = None
        return [str(o) for o in items if not str(o).startswith("seed=")] if isinstance(items, list) else None

    lists = [overrides(r) for r in run_dirs]
    known = [o for o in lists if o is not None]
    shared = set.intersection(*map(set, known)) if known else set()  # one run: its folder's name
    labels = []
    for run_dir, items in zip(run_dirs, lists):
        name = re.sub(r"(^|,)seed=\d+(?=,|$)", "", Path(run_dir).name).strip(",") or Path(run_dir).name
        kept = [o for o in items or [] if o not in shared and not o.startswith("hydra.")]
        labels.append(",".join(kept) if items is not None and kept else name)
    return labels


def table(results: list, metrics=("AUROC", "FPR95", "AUPR-IN", "AUPR-OUT")) -> str:
    """A table per metric (x 100): rows are run groups x input sets, columns detectors; mean ± std over the
    runs of a group (seeds) where it has several."""
    detectors = [d for d in DEFAULT_DETECTORS + sorted({d for r in results for d in r["detectors"]})
                 if any(d in r["detectors"] for r in results)]
    detectors = list(dict.fromkeys(detectors))
    cells, counts, order = {}, {}, []
    for r, g in zip(results, group_labels([r["run_dir"] for r in results])):
        for e in r["results"]:
            key = (g, e["input"])
            if key not in cells:
                order.append(key)
                cells[key] = {}
            counts.setdefault(key, []).append(e["abnormal"])
            for d, m in e["metrics"].items():
                if m is not None:
                    cells[key].setdefault(d, []).append(m)
    parts = [CONVENTION + " Values x 100; mean ± std over the runs of a row (n)."]
    for metric in metrics:
        rows = [[g, inp, len(counts[(g, inp)]), _count(counts[(g, inp)]),
                 *(_cell([m[metric] for m in cells[(g, inp)].get(d, [])]) for d in detectors)] for g, inp in order]
        parts.append(f"**{metric}**" + (" (lower is better)" if metric == "FPR95" else "") + "\n\n"
                     + markdown_table(["runs", "input", "n", "abnormal", *detectors], rows))
    return "\n\n".join(parts) + "\n"


def _count(values: list) -> str:
    values = [v for v in values if v is not None]
    return "-" if not values else str(values[0]) if len(set(values)) == 1 else f"{min(values)}-{max(values)}"


def _cell(values: list) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.mean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def _plot(path: Path, title: str, curves: dict, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(curves), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.6 * rows), squeeze=False)
    for ax, (name, by_detector) in zip(axes.flat, curves.items()):
        entry = next(e for e in result["results"] if e["input"] == name)
        for det, (fpr, tpr) in by_detector.items():
            ax.plot(fpr, tpr, lw=1, label=f"{det} {100 * entry['metrics'][det]['AUROC']:.1f}")
        ax.plot([0, 1], [0, 1], "k:", lw=0.6)
        ax.set_title(name, fontsize=9)
        ax.set(xlabel="clean flagged (FPR)", ylabel="abnormal caught (TPR)")
        ax.legend(fontsize=6, title="AUROC", title_fontsize=6)
    for ax in list(axes.flat)[len(curves):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-detect", __doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN")
    parser.add_argument("--detectors", nargs="+", choices=DETECTORS, default=DEFAULT_DETECTORS)
    parser.add_argument("--inputs", "--attacks", nargs="+", choices=INPUTS, default=DEFAULT_INPUTS,
                        help="input sets to tell from the clean test images (--attacks: its earlier name)")
    parser.add_argument("--epsilon", type=unit_interval, nargs="+", default=[0.1],
                        help="L-inf radius of fgsm, bim, pgd in [0, 1] pixel units (one set per value)")
    parser.add_argument("--l2-epsilon", type=positive_float, default=2.0, help="L2 radius of cw and deepfool")
    parser.add_argument("--steps", type=positive_int, default=10, help="iterations of bim and pgd")
    parser.add_argument("--keep", choices=("successful", "all"), default="successful",
                        help="adversarial pairs: successful (clean right, adversarial wrong) or all")
    parser.add_argument("--max-images", type=positive_int, default=2000, help="clean test images (and per OOD set)")
    parser.add_argument("--fit-images", type=positive_int, default=10000, help="training images the detectors fit")
    parser.add_argument("--bandwidth", type=positive_float, default=1.5, help="kde bandwidth on the features")
    parser.add_argument("--knn-k", type=positive_int, default=50, help="knn: the k-th neighbour's distance")
    parser.add_argument("--max-cov-dim", type=positive_int, default=4096,
                        help="wider features reach mahalanobis/rmd through 256 principal components; vim refuses")
    parser.add_argument("--seed", type=int, default=0, help="PGD starts, noise images, corruptions, PCA")
    parser.add_argument("--out", type=output_path, default=None, help="where to write detect_table.md")
    add_device_argument(parser)
    args = parser.parse_args(argv)
    _needs_ood_extra(args)
    try:
        device = resolve_device(args.device)
        results = [detect(r, args.detectors, args.inputs, args.epsilon, args.l2_epsilon, args.keep, args.steps,
                          args.max_images, args.fit_images, args.bandwidth, args.knn_k, args.max_cov_dim, device,
                          args.seed, say=lambda line: print(line, file=sys.stderr)) for r in args.run_dirs]
    except UserError as e:
        fail("lgm-gcp-detect", e)
    text = table(results)
    out = Path(args.out) if args.out else Path(args.run_dirs[0])
    (out / "detect_table.md" if out.is_dir() else out).write_text(text)
    print(text)


def _needs_ood_extra(args) -> None:
    missing = [m for m in ("pytorch_ood", "foolbox") if _absent(m)]
    if "pytorch_ood" in missing or ("foolbox" in missing and {"cw", "deepfool"} & set(args.inputs)):
        fail("lgm-gcp-detect", ConfigError(f"{' and '.join(missing)} missing: pip install -e '.[ood]' "
                                           "(or pip install 'lgm-gcp[ood]')"))


def _absent(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is None
