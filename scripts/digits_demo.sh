#!/usr/bin/env bash
# The embedded digits demo as a table: loss (softmax, L-GM) x pooling (GAP, GCP) x 3 seeds, on the CPU in minutes.
#   bash scripts/digits_demo.sh
set -euo pipefail
out=${OUT:-outputs/tables/digits_demo}
lgm-gcp-train -m loss=softmax,lgm head=gap,gcp "seed=${SEEDS:-0,1,2}" trainer.max_epochs=15 "hydra.sweep.dir=$out" "$@" || true
lgm-gcp-table "$out" table=digits_demo
