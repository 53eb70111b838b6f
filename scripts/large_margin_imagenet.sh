#!/usr/bin/env bash
# Large-margin softmax (BMVC 2019): VGG-16 mod, VGG-16, ResNet-50, ResNeXt-50, DenseNet-169 on ImageNet.
#   LGM_GCP_DATA=/data SEEDS=0,1,2 bash scripts/large_margin_imagenet.sh [overrides, e.g. trainer.devices=8]
exec "$(dirname "$0")/_sweep_and_table.sh" large_margin_imagenet "lm_*_imagenet_" "$@"
