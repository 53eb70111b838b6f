#!/usr/bin/env bash
# L-GM's detector against the field's, on real Fashion-MNIST (issue 41; docs/claims.md):
#   grid       softmax / L-GM / large-margin x GAP / GCP (iSQRT-COV, d = 256), EPOCHS (3) epochs, SEEDS (0,1,2)
#                                                                        -> $out/grid
#   open set   the same losses x GAP on 6 known classes (T-shirt, trouser, pullover, dress, coat, sandal); shirt,
#              sneaker, bag and ankle boot held out                        -> $out/open_set
#   detection  lgm-gcp-detect on every run (each detector x input set: attacks and OOD sets on the grid, the
#              held-out classes and OOD sets on the open set; DETECT_IMAGES (400) clean test images, GCP_DETECT_IMAGES
#              (200) on the GCP runs, whose attacks cost 3x; FIT_IMAGES (5000) training images to fit on)              -> RUN/detect.json, RUN/detect_roc.png
#   summary    scripts/detection_summary.py: the tables with mean ± std over seeds, and L-GM's likelihood
#              against the best other detector per input set             -> $out/summary.md
# The network is the claims script's: small_cnn 16-32-64, batch 128, cosine LR from 0.1. A stage whose runs
# are all there is skipped (a run with detect.json is not detected again), so the script resumes.
#   bash scripts/fashion_mnist_detection.sh   # env: SEEDS EPOCHS DETECT_IMAGES GCP_DETECT_IMAGES FIT_IMAGES OUT
set -euo pipefail
out=${OUT:-outputs/detection/fashion_mnist}
seeds=${SEEDS:-0,1,2}
n_seeds=$(echo "$seeds" | tr ',' '\n' | wc -l)
common=(dataset=fashion_mnist "backbone.widths=[16,32,64]" trainer.batch_size=128 trainer.progress=false
        "trainer.max_epochs=${EPOCHS:-3}" "seed=$seeds")
completed() { grep -c '"COMPLETED"' "$1/jobs.jsonl" 2>/dev/null || echo 0; }
start=$(date +%s)
if [ "$(completed "$out/grid")" -lt $((6 * n_seeds)) ]; then
  lgm-gcp-train -m loss=softmax,lgm,large_margin head=gap,gcp "${common[@]}" "hydra.sweep.dir=$out/grid"
fi
if [ "$(completed "$out/open_set")" -lt $((3 * n_seeds)) ]; then
  lgm-gcp-train -m loss=softmax,lgm,large_margin head=gap "dataset.known_classes=[0,1,2,3,4,5]" "${common[@]}" \
    "hydra.sweep.dir=$out/open_set"
fi
trained=$(date +%s)
detectors=(lgm msp maxlogit entropy energy odin mahalanobis rmd vim knn kde)
detect() {  # detect SWEEP INPUTS...: every run of the sweep without a detect.json
  for run in "$out/$1"/*/; do
    [ -f "$run/detect.json" ] || [ ! -f "$run/metrics.json" ] && continue
    case "$run" in *head=gcp*) images=${GCP_DETECT_IMAGES:-200};; *) images=${DETECT_IMAGES:-400};; esac
    lgm-gcp-detect "$run" --detectors "${detectors[@]}" --inputs "${@:2}" --epsilon 0.1 --l2-epsilon 2 \
      --max-images "$images" --fit-images "${FIT_IMAGES:-5000}" --out "$run/detect_table.md" > /dev/null
  done
}
detect grid fgsm pgd cw deepfool digits uniform gaussian corrupted
detect open_set unknown digits uniform gaussian corrupted
python "$(dirname "$0")/detection_summary.py" "$out" --keep "$out/kept" --out "$out/summary.md"
end=$(date +%s)
echo "fashion_mnist_detection: training $((trained - start)) s, detection and summary $((end - trained)) s" \
  | tee "$out/time.txt"
