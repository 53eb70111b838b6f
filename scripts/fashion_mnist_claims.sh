#!/usr/bin/env bash
# The four papers' claims on Fashion-MNIST (60,000 + 10,000 real 28x28 images), on the CPU in about an hour:
#   grid       softmax / L-GM / large-margin x GAP / GCP (iSQRT-COV, d = 256), EPOCHS epochs of cosine LR,
#              SEEDS seeds                                           -> $out/grid
#   LR_fast    softmax x GAP / GCP on a third of the budget (FAST_EPOCHS), the GCP study's "GCP tolerates
#              a fast LR decay" at this scale                        -> $out/fast
#   accuracy   scripts/claims_summary.py: final-epoch test top-1 mean ± std per cell (best epoch beside it,
#              marked), each claim's per-seed difference and whether it exceeds its spread
#                                                                    -> $out/claims.md
#   detection  lgm-gcp-detect on each seed's L-GM and softmax GAP runs (FGSM / BIM / PGD, successful pairs)
#                                                                    -> $out/detect_seed*.md
#   robustness lgm-gcp-robustness, the CIFAR protocol at 28 px, GCP normalised by the GAP run of its seed
#                                                                    -> $out/robustness_seed*.md
# The network is small_cnn with widths 16-32-64 (7x7 maps, M = 49 < d = 256, so the GCP head takes the Gram
# path), batch 128. Every run's folder keeps its config, metrics.json and checkpoint.
#   bash scripts/fashion_mnist_claims.sh   # env: SEEDS=0,1 EPOCHS=3 FAST_EPOCHS=1 ROBUST_IMAGES=500
#                                          #      DETECT_IMAGES=500 OUT=outputs/claims/fashion_mnist
set -euo pipefail
out=${OUT:-outputs/claims/fashion_mnist}
seeds=${SEEDS:-0,1}
start=$(date +%s)
common=(dataset=fashion_mnist "backbone.widths=[16,32,64]" trainer.batch_size=128 trainer.progress=false
        "seed=$seeds")
lgm-gcp-train -m loss=softmax,lgm,large_margin head=gap,gcp "trainer.max_epochs=${EPOCHS:-3}" "${common[@]}" \
  "hydra.sweep.dir=$out/grid" "$@"
lgm-gcp-train -m loss=softmax head=gap,gcp "trainer.max_epochs=${FAST_EPOCHS:-1}" "${common[@]}" \
  "hydra.sweep.dir=$out/fast" "$@"
trained=$(date +%s)
run_of() {  # run_of SWEEP_DIR KEY=VALUE...: the job folder whose name holds every KEY=VALUE
  for d in "$1"/*/; do
    local name=",$(basename "$d"),"
    local ok=1
    for kv in "${@:2}"; do case "$name" in *",$kv,"*) ;; *) ok=0;; esac; done
    if [ "$ok" = 1 ]; then echo "${d%/}"; return; fi
  done
}
for seed in ${seeds//,/ }; do
  lgm-gcp-detect "$(run_of "$out/grid" head=gap loss=lgm "seed=$seed")" \
    "$(run_of "$out/grid" head=gap loss=softmax "seed=$seed")" --inputs fgsm bim pgd --epsilon 0.05 0.1 \
    --max-images "${DETECT_IMAGES:-500}" --out "$out/detect_seed$seed.md"
  gap=$(run_of "$out/grid" head=gap loss=softmax "seed=$seed")
  lgm-gcp-robustness "$(run_of "$out/grid" head=gcp loss=softmax "seed=$seed")" "$gap" --baseline "$gap" \
    --protocol cifar --max-images "${ROBUST_IMAGES:-500}" --out "$out/robustness_seed$seed.md"
done
python "$(dirname "$0")/claims_summary.py" "$out" --out "$out/claims.md"
end=$(date +%s)
echo "fashion_mnist_claims: training $((trained - start)) s, analyses $((end - trained)) s, total $((end - start)) s" \
  | tee "$out/time.txt"
