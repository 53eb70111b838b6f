"""The Fashion-MNIST detection tables of docs/claims.md, from the runs' detect.json and metrics.json.

    python scripts/detection_summary.py outputs/detection/fashion_mnist --keep docs/results/detection_fashion_mnist \
        --out docs/results/detection_fashion_mnist/summary.md
    python scripts/detection_summary.py docs/results/detection_fashion_mnist --out ...   # from the kept files

``--keep`` copies each run's detect.json and metrics.json there as ``<sweep>__<label>,seed=<n>.detect.json``
(label: the run's overrides that not every run of the sweep shares). The summary gives each run group's
clean accuracy, one table per metric (mean ± std over seeds), and L-GM's likelihood against the best other
detector, on the same L-GM network and on the softmax network with the same head, per seed.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

from lgm_gcp.detection.evaluate import group_labels, table
from lgm_gcp.markdown import markdown_table


def keep(out: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for sweep in sorted(p for p in out.iterdir() if p.is_dir()):
        runs = sorted(r for r in sweep.iterdir() if (r / "detect.json").is_file())
        for run, label in zip(runs, group_labels([str(r) for r in runs])):
            seed = json.loads((run / "detect.json").read_text())["seed"]
            stem = f"{sweep.name}__{label},seed={seed}"
            shutil.copy(run / "detect.json", dest / f"{stem}.detect.json")
            shutil.copy(run / "metrics.json", dest / f"{stem}.metrics.json")


def load(kept: Path) -> list:
    """detect.json results with ``run_dir`` set to the kept file's stem (the table's row label)."""
    results = []
    for f in sorted(kept.glob("*.detect.json")):
        r = json.loads(f.read_text())
        r["run_dir"] = f.name[: -len(".detect.json")]
        r["top1"] = json.loads(f.with_name(f.name.replace(".detect.json", ".metrics.json")).read_text())["final"][
            "test_top1"]
        results.append(r)
    return results


def group_of(stem: str) -> str:
    return re.sub(r",seed=\d+$", "", stem)


def spread(values: list, scale: float = 1.0, digits: int = 1) -> str:
    values = [scale * v for v in values]
    return f"{statistics.mean(values):.{digits}f}" + (f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1
                                                       else "")


def auroc(results: list, group: str, inp: str) -> dict:
    """{detector: {seed: AUROC}} of one group's runs on one input set."""
    out: dict = {}
    for r in results:
        if group_of(r["run_dir"]) != group:
            continue
        for e in r["results"]:
            if e["input"] == inp:
                for d, m in e["metrics"].items():
                    if m is not None:
                        out.setdefault(d, {})[r["seed"]] = m["AUROC"]
    return out


def best(by_detector: dict, exclude=("lgm",)) -> tuple:
    candidates = {d: v for d, v in by_detector.items() if d not in exclude and v}
    name = max(candidates, key=lambda d: statistics.mean(candidates[d].values()))
    return name, candidates[name]


def claim_rows(results: list) -> list:
    rows = []
    groups = list(dict.fromkeys(group_of(r["run_dir"]) for r in results))
    for group in [g for g in groups if "loss=lgm" in g]:
        softmax_group = group.replace("loss=lgm", "loss=softmax")
        inputs = list(dict.fromkeys(e["input"] for r in results if group_of(r["run_dir"]) == group
                                    for e in r["results"]))
        for inp in inputs:
            mine = auroc(results, group, inp)
            if "lgm" not in mine:
                continue
            lgm = mine["lgm"]
            row = [group, inp, spread(lgm.values(), 100)]
            for other in (mine, auroc(results, softmax_group, inp) if softmax_group in groups else {}):
                if not other or not any(d != "lgm" for d in other):
                    row += ["-", "-", "-"]
                    continue
                name, theirs = best(other)
                seeds = sorted(set(lgm) & set(theirs))
                diffs = [100 * (lgm[s] - theirs[s]) for s in seeds]
                mean = statistics.mean(diffs)
                sd = statistics.stdev(diffs) if len(diffs) > 1 else 0.0
                verdict = ("yes" if mean > 0 and mean > sd else "no (below)" if mean < 0 and -mean > sd
                           else "within spread")
                row += [f"{name} {spread(theirs.values(), 100)}", f"{mean:+.1f} ± {sd:.1f}", verdict]
            rows.append(row)
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("source", help="a sweep output folder (with --keep) or a folder of kept files")
    parser.add_argument("--keep", default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    kept = Path(args.source)
    if args.keep:
        keep(kept, Path(args.keep))
        kept = Path(args.keep)
    results = load(kept)
    groups: dict = {}
    for r in results:
        groups.setdefault(group_of(r["run_dir"]), []).append(r)
    accuracy = markdown_table(["runs", "seeds", "clean test top-1 %", "feature dim"],
                              [[g, len(rs), spread([r["top1"] for r in rs], 1, 2), rs[0]["feature_dim"]]
                               for g, rs in groups.items()])
    claim = markdown_table(
        ["L-GM runs", "input", "lgm AUROC", "best other on L-GM", "lgm − it (per seed)", "beats it",
         "best on softmax", "lgm − it (per seed)", "beats it"], claim_rows(results))
    text = "\n\n".join([accuracy, table(results), "**L-GM's likelihood against the best other detector** (AUROC x 100; "
                        "the best is the highest mean over seeds; 'yes' when the mean difference is positive and "
                        "larger than its std over seeds)", claim]) + "\n"
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
