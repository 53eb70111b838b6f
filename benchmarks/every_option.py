"""Every option of every group, one at a time, on the embedded digits demo at its defaults: does it train to the
demo's accuracy, or is it refused in one line? The table behind docs/benchmarks.md's "Every option alone".

    python benchmarks/every_option.py --render docs/results/every_option/demo.jsonl   # its table, from the results
    python benchmarks/every_option.py [--groups optimizer lr_policy head loss logger backbone dataset]
                                      [--only dataset=mnist ...] [--epochs 30] [--out results.jsonl] [overrides ...]

Each run is the CLI's: the composed config with the one override, the start-up checks ``lgm-gcp-train`` makes
(``check_before_spawning``: the dataset's files, the network on the meta device), then ``run`` in a temporary
folder (the working directory too, so MLflow's default store lands there). A backbone or head refused for the
image size is run again at the size its line names (``dataset.input_size``), and the table says so. About an hour on
2 CPU cores for every group; ``--groups`` runs part of it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from lgm_gcp.config.compose import compose
from lgm_gcp.engine.launch import check_before_spawning
from lgm_gcp.engine.train import run
from lgm_gcp.errors import UserError
from lgm_gcp.markdown import markdown_header, markdown_row, markdown_table

GOAL = 95.0  # the demo's accuracy (it ends near 99 %)
CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["optimizer", "lr_policy", "head", "loss", "logger", "backbone", "dataset"]
EXTRA = {"backbone=timm": ["backbone.name=convnext_atto"]}  # an option that needs a value to name a model


def options(group: str) -> list:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@contextlib.contextmanager
def inside(folder: str):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


def attempt(overrides: list) -> dict:
    """Compose, check as the CLI does, train; the refusal's line if any."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder, inside(folder):
        try:
            cfg = OmegaConf.to_container(compose(overrides), resolve=True)
            check_before_spawning(cfg, 1)
        except UserError as e:
            return {"refused": str(e)}
        try:
            summary = run(cfg, Path(folder) / "run")
        except UserError as e:  # a run that starts and then stops in one line (a non-finite loss)
            return {"stopped": str(e), "seconds": time.perf_counter() - start}
    top1 = [e["test_top1"] for e in summary["epochs"]]
    return {"top1": top1, "epochs": len(top1), "seconds": time.perf_counter() - start}


HEADER = ["option", "overrides added", "epochs", "test top-1 (last)", f">= {GOAL:g} %", "s"]


def cells(row: dict) -> list:
    """A table row from one JSON line of ``--out``."""
    added = " ".join(f"`{a}`" for a in row["added"])
    if "refused" in row:
        return [f"`{row['option']}`", added, "", f"refused: {row['refused']}", "", ""]
    if "stopped" in row:
        return [f"`{row['option']}`", added, "", f"started, then stopped: {row['stopped']}", "no",
                f"{row['seconds']:.0f}"]
    last = row["top1"][-1]
    note = f" ({row['note']})" if row.get("note") else ""  # e.g. a run stopped before its epochs
    return [f"`{row['option']}`", added, row["epochs"], f"{last:.2f}{note}", "yes" if last >= GOAL else "no",
            f"{row['seconds']:.0f}"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--groups", nargs="+", default=GROUPS)
    parser.add_argument("--only", nargs="+", default=None, help="these options of the groups (group=option)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the demo's trainer.max_epochs")
    parser.add_argument("--out", default=None, help="append one JSON line per option to this file")
    parser.add_argument("--render", default=None, help="print the table of this --out file and stop")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.render:
        latest = {}  # an option measured again replaces its row, in the place of its first
        for line in Path(args.render).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                latest[row["option"]] = row
        print(markdown_table(HEADER, [cells(r) for r in latest.values()]))
        return
    common = ["trainer.progress=false", *([f"trainer.max_epochs={args.epochs}"] if args.epochs else []),
              *args.overrides]
    print(markdown_header(HEADER))
    for group in args.groups:
        for option in options(group):
            choice = f"{group}={option}"
            if args.only and choice not in args.only:
                continue
            added = EXTRA.get(choice, [])
            result = attempt([choice, *common, *added])
            first = result.get("refused")
            for _ in range(3):  # a backbone or head is trained at the size its refusal names (the map, the stride)
                size = re.search(r"set dataset\.input_size=(\d+)", result.get("refused", ""))
                if not (size and group in ("backbone", "head")):
                    break
                added = [a for a in added if not a.startswith("dataset.input_size=")]
                added.append(f"dataset.input_size={size.group(1)}")
                result = {**attempt([choice, *common, *added]), "refused_at_defaults": first}
            row = {"option": choice, "added": added, **result}
            print(markdown_row(cells(row)), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
