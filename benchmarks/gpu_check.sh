#!/usr/bin/env bash
# The GPU tier and the GPU benchmarks in one go (under 8 minutes on one GPU): run it once on a GPU
# machine and put its figures in docs/benchmarks.md. Output: stdout, and a copy in ${1:-gpu_check.log}.
#   bash benchmarks/gpu_check.sh [LOG]
set -uo pipefail
cd "$(dirname "$0")/.."
log="${1:-gpu_check.log}"
{
  python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0), 'x', torch.cuda.device_count())" || exit 1
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  echo "== GPU tier"
  time python -m pytest -m gpu -p no:cacheprovider -q -rs tests/test_gpu.py
  echo "== heads (iSQRT-COV algorithms, fwd+bwd)"
  time python benchmarks/bench_heads.py --device cuda --batches 32 128 --dims 256 --positions 49 196 --rounds 5
  echo "== losses"
  time python benchmarks/bench_losses.py --device cuda --rounds 5
  echo "== trainer (GCP and 3G step time over GAP's), fp32 and bf16"
  time python benchmarks/bench_trainer.py --device cuda --batch 64 --rounds 5
  time python benchmarks/bench_trainer.py --device cuda --batch 64 --rounds 5 --amp bf16
  echo "== image-folder loading (and nvJPEG decode)"
  time python benchmarks/bench_folder.py --device cuda --workers 4 8 --images 2000 --rounds 2
} 2>&1 | tee "$log"
