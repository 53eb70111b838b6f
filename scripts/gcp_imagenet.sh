#!/usr/bin/env bash
# GCP study (CVPR 2020) ImageNet table: 40 runs (6 backbones x GAP/GCP x norm/fast/adju + _128 rows).
#   LGM_GCP_DATA=/data SEEDS=0,1,2 bash scripts/gcp_imagenet.sh [overrides, e.g. trainer.devices=8]
exec "$(dirname "$0")/_sweep_and_table.sh" gcp_imagenet gcp_ "$@"
