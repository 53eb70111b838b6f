#!/usr/bin/env bash
# Shared by the per-table scripts: run every experiment preset matching a prefix over SEEDS, then
# print the paper table. Usage: _sweep_and_table.sh TABLE PRESET_GLOB_PREFIX [extra overrides...]
# Environment: SEEDS (default 0), OUT (default outputs/tables/TABLE), LGM_GCP_DATA (dataset roots).
set -euo pipefail
table=$1; prefix=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-outputs/tables/$table}
presets=$(cd "$here/../conf/experiment" && ls ${prefix}*.yaml | sed 's/\.yaml$//' | paste -sd, -)
# a failed job does not stop the sweep; the table marks its cell
lgm-gcp-train -m "experiment=$presets" "seed=${SEEDS:-0}" "hydra.sweep.dir=$out" "$@" || true
lgm-gcp-table "$out" "table=$table"
