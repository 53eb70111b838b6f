"""The GCP study's loss-landscape measurements (Wang et al., CVPR 2020, after Santurkar et al., NeurIPS
2018), taken during training with ``trainer.landscape_every=N``, and the figure they make.

Every N steps, before that step's SGD update, on a copy of the network with the step's weights and on
the step's training batch: split the network after its stem, y = stem(images) (B, C, h, w), L the
run's training loss of rest(y), g = ∇_y L. For the step sizes δ_i = a + i(b − a)/(n − 1), i = 0 … n−1
(``trainer.landscape_range`` [a, b] = [0.1, 75] and ``landscape_points`` n = 50, the study's ResNet
setting; its MobileNetV2 used [0.045, 1.5]), record

  loss:      L(y + δ_i g)                      (Lipschitzness of the loss)
  gradient:  ‖∇_y L(y + δ_i g) − g‖₂           (gradient predictiveness)

and keep their min and max over δ. As the study's code: the step is along +g, BatchNorm runs in
training mode on the copy, and the loss is the training loss (cross-entropy for softmax; the margin
and likelihood terms for L-GM). The copy and a forked RNG leave the training run bitwise unchanged.

The stem, per backbone family: ResNet / ResNeXt conv1 + bn1 + ReLU + max-pool (the study's split);
ShuffleNetV2 conv1 + max-pool; every sequential backbone (MobileNetV2, VGG, DenseNet, layer13, the
L-GM "simple" net, ResNet-20, the small CNN) its first block: the layers up to and including the first
activation (MobileNetV2: its first ConvBNReLU6, the study's split), plus a max-pool right after it.

    lgm-gcp-plot-landscape outputs/r18_gap outputs/r18_gcp [--labels GAP GCP] [--out landscape.png]
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from lgm_gcp.errors import ConfigError, RunFolderError, UserError, fail, one_line_parser, output_path
from lgm_gcp.markdown import markdown_table

ACTIVATIONS = (nn.ReLU, nn.ReLU6)


def _first_block(layers: nn.Sequential) -> int:
    """How many leading children of ``layers`` make its stem: through the first activation (or the
    first child holding one), and a max-pool right after it."""
    children = list(layers.children())
    for i, child in enumerate(children):
        if isinstance(child, ACTIVATIONS) or any(isinstance(m, ACTIVATIONS) for m in child.modules()):
            k = i + 1
            return k + 1 if k < len(children) and isinstance(children[k], nn.MaxPool2d) else k
    raise ConfigError(f"trainer.landscape_every: the {type(layers).__name__} backbone has no activation to split at")


def split_after_stem(backbone: nn.Module) -> tuple:
    """(stem, rest) with rest(stem(x)) == backbone(x)."""
    features = getattr(backbone, "features", None)
    forward_fn = getattr(backbone, "_forward_fn", None)
    if features is not None and hasattr(features, "layer1"):  # ResNet, ResNeXt
        def stem(x):
            return features.maxpool(features.relu(features.bn1(features.conv1(x))))

        def rest(y):
            return features.layer4(features.layer3(features.layer2(features.layer1(y))))
        return stem, rest
    if features is not None and hasattr(features, "stage2"):  # ShuffleNetV2
        def stem(x):
            return features.maxpool(features.conv1(x))

        def rest(y):
            return features.conv5(features.stage4(features.stage3(features.stage2(y))))
        return stem, rest
    layers = features if features is not None else backbone
    if not isinstance(layers, nn.Sequential):
        raise ConfigError(f"trainer.landscape_every: no stem split is defined for {type(backbone).__name__}")
    k = _first_block(layers)
    children = list(layers.children())  # plain Sequentials: a subclass's slice would call its own __init__
    head, tail = nn.Sequential(*children[:k]), nn.Sequential(*children[k:])
    if forward_fn is not None:  # e.g. DenseNet's final ReLU after its features
        return head, lambda y: forward_fn(tail, y)
    return head, tail


def step_sizes(low: float, high: float, points: int) -> list:
    return [low + i * (high - low) / max(points - 1, 1) for i in range(points)]


def probe(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, step: int, deltas: Sequence[float]) -> dict:
    """The ranges over ``deltas`` of L(y + δg) and ‖∇L(y + δg) − g‖₂ on a copy of ``model`` (a Network)."""
    devices = [images.device.index or 0] if images.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        net = copy.deepcopy(model).train()
        for p in net.parameters():
            p.requires_grad_(False)
        stem, rest = split_after_stem(net.backbone)

        def loss_and_grad(y: torch.Tensor) -> tuple:
            y = y.detach().requires_grad_(True)
            loss = net.criterion(net.head(rest(y)), targets, step)[0]
            return loss.detach(), torch.autograd.grad(loss, y)[0]

        with torch.no_grad():
            y0 = stem(images).float()
        _, g = loss_and_grad(y0)
        losses, gaps = [], []
        for delta in deltas:
            loss, grad = loss_and_grad(y0 + delta * g)
            losses.append(loss.item())
            gaps.append(torch.linalg.vector_norm(grad - g).item())
    return {"step": step, "loss_min": min(losses), "loss_max": max(losses), "grad_min": min(gaps),
            "grad_max": max(gaps)}


def probe_hook(tcfg) -> Callable | None:
    """The trainer's per-step probe, or None when ``trainer.landscape_every`` is 0."""
    every = tcfg["landscape_every"]
    if not every:
        return None
    low, high = tcfg["landscape_range"]
    if not 0 <= low <= high:
        raise ConfigError(f"trainer.landscape_range={[low, high]} must be [a, b] with 0 <= a <= b")
    deltas = step_sizes(low, high, tcfg["landscape_points"])
    return lambda model, images, targets, step: probe(model, images, targets, step, deltas) if step % every == 0 \
        else None


def read_probes(run_dir: Path) -> list:
    from lgm_gcp.analysis.runs import read_json, run_folder

    folder = run_folder(run_dir)
    metrics = folder / "metrics.json"
    if not metrics.is_file():
        raise RunFolderError(f"{folder} has no metrics.json yet")
    probes = read_json(metrics).get("landscape") or []
    if not probes:
        raise RunFolderError(f"{folder} recorded no landscape probes; train it with trainer.landscape_every=N")
    return probes


def band_widths(probes: list) -> tuple:
    """The figure in two numbers: the mean over probed steps of (max − min over δ) of the loss and of
    the gradient distance; smaller means a smoother landscape, more predictive gradients."""
    n = len(probes)
    return (sum(p["loss_max"] - p["loss_min"] for p in probes) / n,
            sum(p["grad_max"] - p["grad_min"] for p in probes) / n)


def width_table(run_dirs: Sequence[str | Path], labels: Sequence[str] | None) -> str:
    rows = []
    for i, run_dir in enumerate(run_dirs):
        probes = read_probes(Path(run_dir))
        loss, grad = band_widths(probes)
        rows.append([labels[i] if labels else Path(run_dir).name, len(probes), f"{loss:.4g}", f"{grad:.4g}"])
    return markdown_table(["run", "probes", "mean loss range", "mean gradient-distance range"], rows) + "\n"


def plot(run_dirs: Sequence[str | Path], labels: Sequence[str] | None, out: Path) -> Path:
    """The study's figure: per run, the band between min and max over δ at every probed step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if labels and len(labels) != len(run_dirs):
        raise ConfigError(f"--labels gives {len(labels)} names for {len(run_dirs)} runs; give one per run")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, run_dir in enumerate(run_dirs):
        probes = read_probes(Path(run_dir))
        steps = [p["step"] for p in probes]
        label = labels[i] if labels else Path(run_dir).name
        for ax, key in zip(axes, ("loss", "grad")):
            ax.fill_between(steps, [p[f"{key}_min"] for p in probes], [p[f"{key}_max"] for p in probes],
                            alpha=0.35, label=label)
    axes[0].set(title="loss landscape: L(y + δ∇L)", xlabel="training step", ylabel="loss")
    axes[1].set(title="gradient predictiveness: ‖∇L(y + δ∇L) − ∇L‖", xlabel="training step", ylabel="ℓ2 distance")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-plot-landscape", "The GCP study's loss-landscape figure for runs trained "
                             "with trainer.landscape_every=N.")
    parser.add_argument("runs", nargs="+", help="run folders")
    parser.add_argument("--labels", nargs="+", default=None, help="one legend label per run (default: folder names)")
    parser.add_argument("--out", type=output_path, default=Path("landscape.png"), help="the PNG to write")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {plot(args.runs, args.labels, args.out)}")
        print(width_table(args.runs, args.labels), end="")
    except UserError as e:
        fail("lgm-gcp-plot-landscape", e)
