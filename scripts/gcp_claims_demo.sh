#!/usr/bin/env bash
# The GCP study's claims (CVPR 2020) at demo scale, on the embedded digits, on the CPU:
# GAP vs GCP under LR_norm and LR_fast, every run with the landscape probe, then
#   accuracy      lgm-gcp-table table=digits_gcp_claims      -> $out/digits_gcp_claims.md
#   convergence   lgm-gcp-plot-curves                       -> $out/curves.png, curves.csv
#   landscape     lgm-gcp-plot-landscape                    -> $out/landscape_{norm,fast}.png
#   robustness    lgm-gcp-robustness, GCP normalised by the GAP run of its policy and seed
#                 lgm-gcp-table table=digits_robustness     -> $out/digits_robustness.md
# The policies are the MobileNetV2 family's per-epoch exponential ones (LR_norm 0.045·0.98^e over 40
# epochs, LR_fast 0.06·0.92^e over 10: the study's 4:1 ratio of epochs), whose decay starts at once
# where the ResNet family's waits for epoch 30. GCP is 64-D: 256-D is ten times slower on 8×8 images.
#   bash scripts/gcp_claims_demo.sh   # env: SEEDS=0,1,2 NORM_EPOCHS=40 FAST_EPOCHS=10 ROBUST_IMAGES=all OUT=...
set -euo pipefail
out=${OUT:-outputs/claims/gcp_digits}
seeds=${SEEDS:-0,1,2}
common=(lr_policy.family=mobilenet_v2 lr_policy.batch_size=64 "trainer.landscape_every=${PROBE_EVERY:-42}"
        trainer.progress=false "seed=$seeds")
for policy in norm fast; do
  if [ "$policy" = norm ]; then epochs=${NORM_EPOCHS:-40}; else epochs=${FAST_EPOCHS:-10}; fi
  lgm-gcp-train -m head=gap "lr_policy=$policy" "lr_policy.epochs=$epochs" "${common[@]}" \
    "hydra.sweep.dir=$out/$policy/gap" "$@"
  lgm-gcp-train -m head=gcp head.dim=64 "lr_policy=$policy" "lr_policy.epochs=$epochs" "${common[@]}" \
    "hydra.sweep.dir=$out/$policy/gcp" "$@"
done
run_of() {  # run_of SWEEP_DIR SEED: the sweep's job folder of that seed
  for d in "$1"/*/; do case "$d" in *",seed=$2,"* | *",seed=$2/") echo "${d%/}"; return;; esac; done
}
lgm-gcp-table "$out" table=digits_gcp_claims
lgm-gcp-plot-curves "$out" --group-by head lr_policy --out "$out"
for policy in norm fast; do
  first=${seeds%%,*}
  lgm-gcp-plot-landscape "$(run_of "$out/$policy/gap" "$first")" "$(run_of "$out/$policy/gcp" "$first")" \
    --labels "GAP $policy" "GCP $policy" --out "$out/landscape_$policy.png"
  for seed in ${seeds//,/ }; do
    gap=$(run_of "$out/$policy/gap" "$seed")
    lgm-gcp-robustness "$(run_of "$out/$policy/gcp" "$seed")" "$gap" --baseline "$gap" \
      ${ROBUST_IMAGES:+--max-images "$ROBUST_IMAGES"} --out "$out/$policy/robustness_seed$seed.md"
  done
done
lgm-gcp-table "$out" table=digits_robustness
