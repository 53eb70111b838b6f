"""The claims table of scripts/fashion_mnist_claims.sh: accuracy per loss x head and each paper's claim as a
per-seed difference with its spread.

    python scripts/claims_summary.py OUT_DIR [--out OUT_DIR/claims.md]

OUT_DIR holds the sweeps ``grid`` (every loss x head, the full budget) and ``fast`` (softmax x head, the short
budget). The figure of a run is its final epoch's test top-1 (the best epoch, chosen on the test set and so
inflated, is shown beside it, marked). A claim's difference is taken seed by seed (the same seed's two runs
share their data order), then averaged; it "exceeds its spread" when the mean difference is larger than the
standard deviation of the differences over seeds, and in the claimed direction.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from pathlib import Path

from lgm_gcp.analysis.table import load_runs
from lgm_gcp.markdown import markdown_header, markdown_row, markdown_table

LOSSES = {"softmax": "softmax", "lgm": "L-GM", "large_margin": "large-margin"}
HEADS = {"gap": "GAP", "gcp": "GCP"}


def collect(out: Path) -> dict:
    """(budget, loss, head) -> {seed: (final top-1, best top-1)} over the finished runs."""
    cells: dict = defaultdict(dict)
    for budget in ("grid", "fast"):
        for run in load_runs([out / budget]) if (out / budget).is_dir() else []:
            if run.status != "finished":
                continue
            key = (budget, run.choices.get("loss"), run.choices.get("head"))
            cells[key][run.config["seed"]] = (run.metrics["final"]["test_top1"], run.metrics["best"]["test_top1"])
    return cells


def mean_std(values) -> str:
    values = list(values)
    if not values:
        return "missing"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.2f} ± {std:.2f}"


def difference(a: dict, b: dict) -> tuple[list, str, str]:
    """Per-seed a − b of the final top-1 over the seeds both have; its mean ± std and the verdict."""
    diffs = [a[s][0] - b[s][0] for s in sorted(set(a) & set(b))]
    if not diffs:
        return diffs, "missing", "—"
    mean = statistics.fmean(diffs)
    std = statistics.stdev(diffs) if len(diffs) > 1 else float("inf")
    verdict = "yes" if mean > 0 and mean > std else ("no (opposite)" if mean < 0 and -mean > std else "no")
    return diffs, f"{mean:+.2f} ± {std:.2f}", verdict


def render(cells: dict) -> str:
    seeds = sorted({s for runs in cells.values() for s in runs})
    lines = ["### Fashion-MNIST: test top-1 (%), final epoch, mean ± std over seeds "
             f"({', '.join(map(str, seeds))}); best epoch [chosen on the test set] beside it", ""]
    rows = []
    for loss, loss_label in LOSSES.items():
        row = [loss_label]
        for head in HEADS:
            runs = cells.get(("grid", loss, head), {})
            row.append(f"{mean_std(v[0] for v in runs.values())} [best {mean_std(v[1] for v in runs.values())}]")
        rows.append(row)
    lines += [markdown_table(["loss", *HEADS.values()], rows), "",
              "### The claims, as per-seed differences of the final test top-1 (percentage points)", "",
              markdown_header(["claim", "where", "per seed", "mean ± std", "exceeds its spread"])]

    def claim(text, where, a, b):
        diffs, stat, verdict = difference(a, b)
        lines.append(markdown_row([text, where, " ".join(f"{d:+.2f}" for d in diffs), stat, verdict]))

    for loss in ("lgm", "large_margin"):
        for head, head_label in HEADS.items():
            claim(f"{LOSSES[loss]} > softmax", head_label, cells.get(("grid", loss, head), {}),
                  cells.get(("grid", "softmax", head), {}))
    for loss, loss_label in LOSSES.items():
        claim("GCP > GAP", loss_label, cells.get(("grid", loss, "gcp"), {}), cells.get(("grid", loss, "gap"), {}))
    drops = {}
    for head in HEADS:  # fast − full budget: the accuracy a shorter schedule costs (negative)
        fast, full = cells.get(("fast", "softmax", head), {}), cells.get(("grid", "softmax", head), {})
        drops[head] = {s: (fast[s][0] - full[s][0], 0.0) for s in sorted(set(fast) & set(full))}
    claim("GCP loses less to the fast schedule (drop GCP − drop GAP)", "softmax", drops["gcp"], drops["gap"])
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--out", dest="md", type=Path, default=None)
    args = parser.parse_args()
    text = render(collect(args.out))
    (args.md or args.out / "claims.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
