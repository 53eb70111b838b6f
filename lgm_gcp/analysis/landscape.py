"""The figure and table of the GCP study's loss-landscape measurements (Wang et al., CVPR 2020),
from the probes a run recorded with ``trainer.landscape_every=N`` (the probe itself:
lgm_gcp/engine/landscape.py): the loss range and the gradient-distance range over the step sizes, per
probe, for each run.

    lgm-gcp-plot-landscape outputs/r18_gap outputs/r18_gcp [--labels GAP GCP] [--out landscape.png]
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lgm_gcp.errors import ConfigError, RunFolderError, UserError, fail, one_line_parser, output_path
from lgm_gcp.markdown import markdown_table


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
