"""lgm-gcp-table: turn runs' metrics.json into a paper's table, beside the published numbers.

    lgm-gcp-table outputs/tables/gcp_imagenet table=gcp_imagenet [--out DIR]
    lgm-gcp-table outputs/multirun/2026-11-22/10-00-00          # no table: one line per run

A run is a folder holding config.yaml (written when it starts); its group choices (choices.yaml)
and resolved config place it in a row and a column (conf/table/NAME.yaml); runs that differ only
in ``seed`` are averaged (mean ± sample std). A run counts once it finished its schedule (its
``trainer.max_epochs``, or its ``trainer.max_steps`` as the Caffe solvers end). Cells without such a
run say ``missing``, ``running``, ``preempted``, ``failed`` or ``not evaluated``. Runs of
``lgm-gcp-eval`` on a released checkpoint (status ``evaluated``, a reference layout) fill the
"released" numbers beside "ours" and "paper", never "ours". A table with ``results: robustness``
reads each run's robustness.json (``lgm-gcp-robustness``) instead of its metrics.json epochs.
Writes NAME.md, NAME.csv and NAME.png (test curves per row; not for robustness tables) to --out
(default: the first folder given).
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import OmegaConf

from lgm_gcp.analysis.metafile import published_cells
from lgm_gcp.analysis.runs import read_json, read_yaml
from lgm_gcp.config.metafile import load_metafile
from lgm_gcp.config.schema import TableConfig
from lgm_gcp.errors import ConfigError, RunFolderError, UserError, fail, one_line_parser, output_path
from lgm_gcp.markdown import markdown_table


@dataclass
class Run:
    path: Path
    config: dict
    choices: dict
    metrics: dict | None

    def value(self, key: str) -> Any:
        if key in self.choices:
            return self.choices[key]
        node: Any = self.config
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    @property
    def status(self) -> str:
        return "missing metrics" if self.metrics is None else self.metrics.get("status", "unknown")

    @property
    def released(self) -> bool:
        """An evaluation of a reference repository's released weights (lgm-gcp-eval)."""
        return self.status == "evaluated" and (self.metrics.get("weights") or {}).get("source") == "released"


def load_runs(paths: Iterable[str | Path]) -> list:
    runs = []
    for root in paths:
        root = Path(root)
        if not root.is_dir():
            raise RunFolderError(f"{root} does not exist or is not a folder; give run or multirun folders")
        for cfg_path in sorted({*root.rglob("config.yaml")} | ({root / "config.yaml"} & {*root.glob("config.yaml")})):
            if cfg_path.parent.name == ".hydra":
                continue
            run_dir = cfg_path.parent
            metrics_path = run_dir / "metrics.json"
            choices_path = run_dir / "choices.yaml"
            runs.append(Run(run_dir, read_yaml(cfg_path), read_yaml(choices_path) if choices_path.is_file() else {},
                            read_json(metrics_path) if metrics_path.is_file() else None))
    return runs


def load_table(name: str) -> TableConfig:
    path = resources.files("lgm_gcp.conf") / "table" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(Path(p.name).stem for p in (resources.files("lgm_gcp.conf") / "table").iterdir()
                       if p.name.endswith(".yaml"))
        raise ConfigError(f"unknown table '{name}'; valid: {', '.join(known)}")
    merged = OmegaConf.merge(OmegaConf.structured(TableConfig), OmegaConf.load(str(path)))
    table = OmegaConf.to_object(merged)
    if table.results not in ("metrics", "robustness"):
        raise ConfigError(f"table {name}: results={table.results!r} is not valid; choose metrics or robustness")
    metafiles = ([table.metafile] if table.metafile else []) + list(table.metafiles)
    if metafiles:
        if table.published:
            raise ConfigError(f"table {name}: give published numbers in its metafiles {', '.join(metafiles)} or "
                              "in published:, not both")
        for meta in metafiles:
            for row, cells in published_cells(load_metafile(meta), table).items():
                table.published.setdefault(row, {}).update(cells)
    return table


def _axis_label(run: Run, axis) -> str | None:
    key = ",".join(str(run.value(k)) for k in axis.keys)
    return axis.labels.get(key)


def metric_names(table: TableConfig) -> list:
    return [table.metric] + ([table.second_metric] if table.second_metric else []) + list(table.extra_metrics)


def _score(run: Run, table: TableConfig) -> tuple | None:
    if run.metrics is None or run.metrics.get("status") not in ("finished", "stopped", "evaluated"):
        return None  # stopped: written before 0.2 for runs that reached max_steps
    if table.results == "robustness":
        path = run.path / "robustness.json"
        record = read_json(path).get("summary") if path.is_file() else None
    else:
        record = run.metrics.get("final" if run.released else "best" if table.take == "best" else "final")
    if not record:
        return None
    values = tuple(float("nan") if record.get(n) is None else record[n] for n in metric_names(table))
    return tuple(100.0 - v for v in values) if table.error else values


@dataclass
class Cell:
    row: str
    column: str
    scores: list = field(default_factory=list)
    runs: list = field(default_factory=list)
    published: Any = None
    released: list = field(default_factory=list)  # scores of evaluated released checkpoints

    @property
    def status(self) -> str:
        if self.scores:
            return "ok"
        if not self.runs:
            return "missing"
        states = {r.status for r in self.runs}
        for status in ("running", "preempted"):  # a rerun of the same command continues these
            if status in states:
                return status
        if states & {"finished", "stopped", "evaluated"}:  # trained, but its results file is missing
            return "not evaluated"
        return "failed"

    def stats(self, i: int, released: bool = False) -> tuple:
        vals = [s[i] for s in (self.released if released else self.scores)]
        return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _published_numbers(value) -> tuple:
    if value is None:
        return ()
    if isinstance(value, (int, float)):
        return (float(value),)
    if isinstance(value, str):
        return (float(value.replace("±", "+-").split("+-")[0]),)
    return tuple(float(v) for v in value)


def build_cells(runs: Sequence[Run], table: TableConfig) -> list:
    cells = {(r, c): Cell(r, c, published=table.published.get(r, {}).get(c))
             for r in table.rows.labels.values() for c in table.columns.labels.values()}
    for run in runs:
        if any(str(run.value(k)) != str(v) for k, v in table.select.items()):
            continue
        row, column = _axis_label(run, table.rows), _axis_label(run, table.columns)
        if (row, column) not in cells:
            continue
        cell = cells[(row, column)]
        score = _score(run, table)
        if run.released:
            if score is not None:
                cell.released.append(score)
            continue
        if run.status == "evaluated":  # an evaluation of lgm-gcp's own weights: its training run counts
            continue
        cell.runs.append(run)
        if score is not None:
            cell.scores.append(score)
    return list(cells.values())


def _format_cell(cell: Cell, n_metrics: int) -> str:
    pub = _published_numbers(cell.published)
    if cell.status != "ok":
        ours = cell.status
    else:
        parts = []
        for i in range(n_metrics):
            mean, std = cell.stats(i)
            parts.append(f"{mean:.2f}" + (f" ± {std:.2f}" if len(cell.scores) > 1 else ""))
        ours = " / ".join(parts) + f" (n={len(cell.scores)})"
    if cell.released:
        ours += " · released " + " / ".join(f"{cell.stats(i, released=True)[0]:.2f}" for i in range(n_metrics))
    if not pub:
        return ours
    paper = cell.published if isinstance(cell.published, str) else " / ".join(f"{v:.2f}" for v in pub)
    text = f"{ours} · paper {paper}"
    if cell.status == "ok":
        deltas = [cell.stats(i)[0] - pub[i] for i in range(min(n_metrics, len(pub)))]
        text += " · Δ " + " / ".join(f"{d:+.2f}" for d in deltas)
    return text


def render_markdown(table: TableConfig, cells: Sequence[Cell]) -> str:
    n = len(metric_names(table))
    what = " / ".join(metric_names(table))
    kind = "error (100 − accuracy)" if table.error else "accuracy"
    epoch = ("the best epoch of each run (highest test top-1)" if table.take == "best"
             else "the final epoch of each run")
    if table.results == "robustness":
        intro = (f"{what} (lower is better) from each run's robustness.json (lgm-gcp-robustness, which evaluates "
                 f"the checkpoint of {epoch})")
    else:
        intro = f"{what}, {kind} in %, from {epoch}"
    lines = [f"### {table.title}", "", f"{intro}; mean ± std over seeds."
             + (f" Published: {table.source}." if table.source else ""), ""]
    columns = list(table.columns.labels.values())
    by_key = {(c.row, c.column): c for c in cells}
    lines.append(markdown_table(["", *columns], [[row, *(_format_cell(by_key[(row, c)], n) for c in columns)]
                                                 for row in table.rows.labels.values()]))
    if table.references:
        lines += ["", "Published, not trained here:", "",
                  markdown_table(["model", "published"], table.references.items())]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, table: TableConfig, cells: Sequence[Cell]) -> None:
    names = metric_names(table)
    n = len(names)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "column", "status", "n", "epoch"] + [f"{m}_{s}" for m in names for s in ("mean", "std")]
                   + [f"{m}_published" for m in names] + [f"{m}_delta" for m in names]
                   + [f"{m}_released" for m in names] + ["runs"])
        for cell in cells:
            stats = [cell.stats(i) if cell.scores else (math.nan, math.nan) for i in range(n)]
            pub = list(_published_numbers(cell.published)) + [math.nan] * n
            w.writerow([cell.row, cell.column, cell.status, len(cell.scores), table.take]
                       + [v for s in stats for v in s] + pub[:n] + [stats[i][0] - pub[i] for i in range(n)]
                       + [cell.stats(i, released=True)[0] if cell.released else math.nan for i in range(n)]
                       + [";".join(str(r.path) for r in cell.runs)])


def plot_curves(path: Path, table: TableConfig, cells: Sequence[Cell]) -> None:
    """Test metric per epoch (mean over seeds), one panel per row, one line per column."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(table.rows.labels.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(7, 2.6 * len(rows)), squeeze=False)
    for ax, row in zip(axes[:, 0], rows):
        for cell in (c for c in cells if c.row == row and c.runs):
            curves = [[r.get(table.metric) for r in run.metrics["epochs"] if table.metric in r]
                      for run in cell.runs if run.metrics]
            curves = [c for c in curves if c]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            mean = [statistics.fmean(c[i] for c in curves) for i in range(length)]
            ax.plot(range(1, length + 1), [100 - v for v in mean] if table.error else mean, label=cell.column)
        ax.set(title=row, xlabel="epoch", ylabel=table.metric + (" error" if table.error else ""))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_listing(runs: Sequence[Run]) -> str:
    def fmt(v):
        return "" if v is None else f"{v:.2f}"

    rows = []
    for run in runs:
        final = (run.metrics or {}).get("final") or {}
        best = (run.metrics or {}).get("best") or {}
        rows.append([run.path.name, run.status, fmt(final.get("test_top1")), fmt(final.get("test_top5")),
                     fmt(best.get("test_top1"))])
    return markdown_table(["run", "status", "test_top1", "test_top5", "best test_top1"], rows) + "\n"


def make_table(dirs: Sequence[str | Path], name: str | None, out: Path | None) -> str:
    """The table (or, without a name, the runs' listing), written under ``out``; with no folders, the
    published numbers alone, written only where ``out`` is given."""
    runs = load_runs(dirs) if dirs else []
    if out is None:
        table = load_table(name)
        return render_markdown(table, build_cells(runs, table))
    out.mkdir(parents=True, exist_ok=True)
    if name is None:
        text = run_listing(runs)
        (out / "runs.md").write_text(text)
        return text
    table = load_table(name)
    cells = build_cells(runs, table)
    text = render_markdown(table, cells)
    (out / f"{name}.md").write_text(text)
    write_csv(out / f"{name}.csv", table, cells)
    if table.results == "metrics":  # robustness numbers have no per-epoch curve
        plot_curves(out / f"{name}.png", table, cells)
    return text


def cli(argv=None) -> None:
    parser = one_line_parser("lgm-gcp-table", __doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="run or multirun folders, and optionally table=NAME "
                                                  "(alone: the table's published numbers)")
    parser.add_argument("--out", default=None, type=output_path,
                        help="folder for NAME.md/.csv/.png (default: the first folder)")
    args = parser.parse_args(argv)
    names = [a.split("=", 1)[1] for a in args.inputs if a.startswith("table=")]
    dirs = [a for a in args.inputs if not a.startswith("table=")]
    if not dirs and not names:
        parser.error("give at least one run or multirun folder, or table=NAME for its published numbers")
    out = Path(args.out) if args.out else (Path(dirs[0]) if dirs else None)
    try:
        print(make_table(dirs, names[-1] if names else None, out), end="")
    except UserError as e:
        fail("lgm-gcp-table", e)
