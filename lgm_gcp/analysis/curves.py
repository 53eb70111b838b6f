"""lgm-gcp-plot-curves: the GCP study's convergence figure for any sweep: train loss and test top-1
against the epoch for every group of runs.

    lgm-gcp-plot-curves outputs/multirun/2026-11-23/10-00-00 --group-by head lr_policy [--out DIR]

A run is a folder with config.yaml and metrics.json (any status: a running run shows its epochs so
far). Runs are grouped by the given config keys (group choices such as ``head`` or dotted keys such as
``loss.reg_lambda``; by default every choice that differs between the runs, ``seed`` aside); a group's
curve is the mean over its runs at each epoch that all of them reached, with a band from their min to
their max. Writes curves.png (two panels) and curves.csv (group, epoch, runs, and the mean, min and max
of each metric) to --out (default: the first folder).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Sequence

from lgm_gcp.analysis.table import Run, load_runs
from lgm_gcp.errors import ConfigError, RunFolderError, UserError, fail, one_line_parser, output_path

METRICS = ("train_loss", "test_top1")
PROG = "lgm-gcp-plot-curves"


def varying_choices(runs: Sequence[Run]) -> list:
    keys = sorted({k for r in runs for k in r.choices if k != "seed"})
    return [k for k in keys if len({str(r.value(k)) for r in runs}) > 1]


def group_runs(runs: Sequence[Run], keys: Sequence[str]) -> dict:
    """{label: [runs]}, label = "key=value, ..." (or "all runs" without keys)."""
    for key in keys:
        if all(r.value(key) is None for r in runs):
            known = sorted({k for r in runs for k in r.choices})
            raise ConfigError(f"--group-by {key}: no run has this key; group choices are {', '.join(known)} "
                              "(or give a dotted config key such as loss.reg_lambda)")
    groups: dict = {}
    for run in runs:
        label = ", ".join(f"{k}={run.value(k)}" for k in keys) or "all runs"
        groups.setdefault(label, []).append(run)
    return groups


def curve(runs: Sequence[Run], metric: str) -> list:
    """[(epoch, n, mean, min, max)] over the epochs every run of the group recorded ``metric`` at."""
    per_run = []
    for run in runs:
        values = {r["epoch"]: r[metric] for r in (run.metrics or {}).get("epochs", [])
                  if metric in r and not r.get("partial")}
        if values:
            per_run.append(values)
    if not per_run:
        return []
    epochs = sorted(set.intersection(*(set(v) for v in per_run)))
    return [(e, len(per_run), statistics.fmean(v[e] for v in per_run), min(v[e] for v in per_run),
             max(v[e] for v in per_run)) for e in epochs]


def write_outputs(groups: dict, out: Path) -> tuple:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 4))
    with open(out / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "epoch", "runs"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "min", "max")])
        for label, runs in groups.items():
            curves = {m: {e: row for e, *row in curve(runs, m)} for m in METRICS}
            for ax, metric in zip(axes, METRICS):
                points = sorted(curves[metric].items())
                if not points:
                    continue
                xs = [e + 1 for e, _ in points]  # epochs counted from 1 on the axis, as the papers draw them
                line, = ax.plot(xs, [p[1] for _, p in points], label=label)
                ax.fill_between(xs, [p[2] for _, p in points], [p[3] for _, p in points], color=line.get_color(),
                                alpha=0.2)
            for epoch in sorted(set().union(*(set(c) for c in curves.values()))):
                rows = [curves[m].get(epoch) for m in METRICS]
                n = max(r[0] for r in rows if r)
                writer.writerow([label, epoch, n] + [v for r in rows for v in (r[1:] if r else ("", "", ""))])
    for ax, metric in zip(axes, METRICS):
        ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=metric.replace("_", " ") + " per epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)
    return out / "curves.png", out / "curves.csv"


def plot_curves(dirs: Sequence[str | Path], group_by: Sequence[str] | None, out: Path | None) -> tuple:
    runs = [r for r in load_runs(dirs) if r.metrics]
    if not runs:
        raise RunFolderError(f"no run with a metrics.json under {', '.join(map(str, dirs))}")
    groups = group_runs(runs, varying_choices(runs) if group_by is None else group_by)
    out = Path(out or dirs[0])
    out.mkdir(parents=True, exist_ok=True)
    return write_outputs(groups, out)


def cli(argv=None) -> None:
    parser = one_line_parser(PROG, __doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", help="sweep or run folders")
    parser.add_argument("--group-by", nargs="+", default=None, metavar="KEY",
                        help="config keys that make a group (default: the choices that differ between runs)")
    parser.add_argument("--out", type=output_path, default=None, help="folder for curves.png and curves.csv")
    args = parser.parse_args(argv)
    try:
        png, table = plot_curves(args.folders, args.group_by, args.out)
    except UserError as e:
        fail(PROG, e)
    print(f"wrote {png} and {table}")
