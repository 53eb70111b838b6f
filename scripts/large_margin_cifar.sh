#!/usr/bin/env bash
# Large-margin softmax (BMVC 2019): layer13 on CIFAR-10/100, softmax vs large-margin (the paper used 5 seeds: SEEDS=0,1,2,3,4).
#   LGM_GCP_DATA=/data SEEDS=0,1,2 bash scripts/large_margin_cifar.sh [overrides, e.g. trainer.devices=8]
exec "$(dirname "$0")/_sweep_and_table.sh" large_margin_cifar lm_layer13_ "$@"
