"""Does every loss × head compose? Trains each pair on the embedded digits demo and prints its test top-1
per epoch: the check behind docs/heads.md's "every loss on every head" (issue 23's goal: >= 95 % within 10 epochs).

    python benchmarks/every_pair.py [overrides, e.g. dataset=fashion_mnist] [--epochs 10]
                                    [--losses softmax lgm large_margin] [--heads gap gcp 3g]

About 9 minutes on 2 CPU cores at the defaults. Each run is the CLI's (the composed config with its
defaults and ``auto`` choices), in a temporary folder.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time

from omegaconf import OmegaConf

from lgm_gcp.config.compose import compose
from lgm_gcp.engine.train import run
from lgm_gcp.errors import ConfigError
from lgm_gcp.markdown import markdown_header, markdown_row

GOAL = 95.0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--losses", nargs="+", default=["softmax", "lgm", "large_margin"])
    parser.add_argument("--heads", nargs="+", default=["gap", "gcp", "3g"])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    print(markdown_header(["loss", "head", "test top-1 by epoch", "final", ">= 95 %", "s"]))
    for loss, head in itertools.product(args.losses, args.heads):
        try:
            cfg = compose([f"loss={loss}", f"head={head}", f"trainer.max_epochs={args.epochs}",
                           "trainer.progress=false", *args.overrides])
        except ConfigError as e:  # a composition the config refuses, with its reason
            print(markdown_row([loss, head, f"refused: {e}", "", "", ""]), flush=True)
            continue
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            summary = run(OmegaConf.to_container(cfg, resolve=True), d)
        top1 = [e["test_top1"] for e in summary["epochs"]]
        print(markdown_row([loss, head, " ".join(f"{t:.1f}" for t in top1), f"{top1[-1]:.2f}",
                            "yes" if top1[-1] >= GOAL else "NO", f"{time.perf_counter() - start:.0f}"]), flush=True)
    print(json.dumps({"overrides": args.overrides, "epochs": args.epochs}))


if __name__ == "__main__":
    main()
