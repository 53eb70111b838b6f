#!/usr/bin/env bash
# Every pooling head on real Fashion-MNIST, beside GAP and GCP, on the CPU:
#   cnn  small_cnn widths 16-32-64 (7x7 maps), batch 128, softmax, EPOCHS epoch(s) of cosine LR from 0.1, SEEDS
#        seeds: the protocol of scripts/fashion_mnist_claims.sh's fast schedule, whose GAP and GCP runs this
#        compares with (docs/results/fashion_mnist/fast__*). iSICE at d = 64 and
#        CBP at 2,048 dimensions (ISICE_DIM, CBP_DIM): at their defaults (d = 256, 8,192) one CPU step takes
#        22 s and 1.9 s (benchmarks/bench_second_order.py).
#                                                                          -> $out/cnn
#   vit  timm's ViT-Ti on 28-pixel images with 7-pixel patches (16 tokens), AdamW 1e-3 as docs/open_world.md,
#        GAP against the token heads (sot, dropcov_vit), seed 0              -> $out/vit
#   bash scripts/second_order_fashion_mnist.sh [cnn|vit] [HEADS]   # env: SEEDS=0,1 EPOCHS=1 OUT=...
# then copy each run's metrics.json to docs/results/second_order_fashion_mnist/<trunk>_<head>_seed<n>.metrics.json
# and summarise: python scripts/second_order_summary.py (its docstring has the command)
set -euo pipefail
out=${OUT:-outputs/second_order/fashion_mnist}
part=${1:-cnn}
common=(dataset=fashion_mnist loss=softmax trainer.progress=false "trainer.max_epochs=${EPOCHS:-1}")
if [ "$part" = cnn ]; then
  heads=${2:-3g,dropcov,sot,bcnn,cbp,isice}  # GAP and GCP: scripts/fashion_mnist_claims.sh's `fast` runs
  for head in ${heads//,/ }; do
    extra=()
    [ "$head" = isice ] && extra=("head.dim=${ISICE_DIM:-64}")
    [ "$head" = cbp ] && extra=("head.out_dim=${CBP_DIM:-2048}")
    lgm-gcp-train -m "head=$head" "${common[@]}" "backbone.widths=[16,32,64]" trainer.batch_size=128 \
      "seed=${SEEDS:-0,1}" "${extra[@]}" "hydra.sweep.dir=$out/cnn/$head"
  done
else
  lgm-gcp-train -m "head=${2:-gap,sot,dropcov_vit}" "${common[@]}" seed=0 optimizer=adamw lr_policy.base_lr=1e-3 \
    lr_policy.warmup_epochs=0.5 trainer.batch_size=64 backbone=timm backbone.name=vit_tiny_patch16_224 \
    +backbone.kwargs.img_size=28 +backbone.kwargs.patch_size=7 "hydra.sweep.dir=$out/vit"
fi
