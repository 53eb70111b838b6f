"""The Fashion-MNIST table of docs/heads.md from the runs' metrics.json files: final test top-1 (%) per head and
trunk, mean ± std over seeds (n), and the uncontended-looking images/s of the run.

    python scripts/second_order_summary.py docs/results/second_order_fashion_mnist \
        docs/results/fashion_mnist/fast__head=gap* docs/results/fashion_mnist/fast__head=gcp* \
        --out docs/results/second_order_fashion_mnist/summary.md

A file's trunk and head come from its name: ``<trunk>_<head>_seed<n>.metrics.json`` (this measurement's) or
``fast__head=<head>,...`` (scripts/fashion_mnist_claims.sh's one-epoch small_cnn runs, the same protocol).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from lgm_gcp.markdown import markdown_table

HEADS = ["gap", "gcp", "3g", "dropcov", "isice", "sot", "dropcov_vit", "bcnn", "cbp"]
TRUNKS = {"small_cnn": "small_cnn 16-32-64", "vit_tiny": "ViT-Ti (16 tokens)"}


def trunk_and_head(path: Path) -> tuple[str, str]:
    if path.name.startswith("fast__"):
        return "small_cnn", re.search(r"head=([a-z0-9_]+)", path.name).group(1)
    trunk = next(t for t in TRUNKS if path.name.startswith(t + "_"))
    return trunk, re.sub(r"_seed\d+\.metrics\.json$", "", path.name[len(trunk) + 1:])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", nargs="+", help="metrics.json files or folders of them")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    files = [f for p in map(Path, args.inputs) for f in (sorted(p.glob("*.metrics.json")) if p.is_dir() else [p])]
    cells: dict = {}
    for f in files:
        metrics = json.loads(f.read_text())
        cells.setdefault(trunk_and_head(f), []).append(float(metrics["final"]["test_top1"]))

    def cell(key):
        values = cells.get(key)
        if not values:
            return ""
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.2f}{spread} (n={len(values)})"

    rows = [[head] + [cell((trunk, head)) for trunk in TRUNKS] for head in HEADS
            if any((trunk, head) in cells for trunk in TRUNKS)]
    text = markdown_table(["head"] + list(TRUNKS.values()), rows)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
