#!/usr/bin/env bash
# L-GM (CVPR 2018): the Caffe CIFAR-100 simple-net example, L-GM vs softmax.
#   LGM_GCP_DATA=/data SEEDS=0,1,2 bash scripts/lgm_cifar100.sh [overrides, e.g. trainer.devices=8]
exec "$(dirname "$0")/_sweep_and_table.sh" lgm_cifar100 lgm_cifar100_ "$@"
