#!/usr/bin/env bash
# 3G-Net (CVPR 2019): ResNet-50/101-3G on ImageNet (1-crop) and Places365 (10-crop).
#   LGM_GCP_DATA=/data SEEDS=0,1,2 bash scripts/g3net.sh [overrides, e.g. trainer.devices=8]
exec "$(dirname "$0")/_sweep_and_table.sh" g3net g3_ "$@"
