#!/usr/bin/env bash
# The L-GM paper's detection claim at demo scale: its likelihood against lgm-gcp-detect's default detectors
# (max softmax, energy, ODIN, Mahalanobis, ViM, kNN, kernel density) on adversarial digits (FGSM, BIM, PGD
# at ε = 0.05 and 0.1, C&W and DeepFool; successful-attack pairs) and noise images, for a 2-D and a 128-D
# L-GM model and a 128-D softmax model, on the CPU in minutes.
#   bash scripts/lgm_detection_demo.sh        # env: OUT=...
set -euo pipefail
out=${OUT:-outputs/claims/lgm_detection}
lgm-gcp-train experiment=digits_lgm_2d trainer.progress=false "hydra.run.dir=$out/lgm_2d" "$@"
lgm-gcp-train loss=lgm trainer.progress=false "hydra.run.dir=$out/lgm_128d" "$@"
lgm-gcp-train loss=softmax trainer.progress=false "hydra.run.dir=$out/softmax_128d" "$@"
lgm-gcp-detect "$out/lgm_2d" "$out/lgm_128d" "$out/softmax_128d" --inputs fgsm bim pgd cw deepfool uniform gaussian \
  --epsilon 0.05 0.1 --out "$out/detect_table.md"
