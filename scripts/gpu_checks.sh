#!/usr/bin/env bash
# The checks that need a GPU, as one script: correctness of the transforms and of the adapter on CUDA,
# the transform benchmark (fp32 and bf16), and a bert-base fine-tuning step (random init, bf16 autocast)
# at 128 and 384 tokens against eager/sdpa softmax and the entmax package.
#
#   bash scripts/gpu_checks.sh [OUT_DIR]     (results are also written to OUT_DIR, default outputs/gpu)
#
# Needs torch with CUDA, transformers and entmax importable (pip install -e '.[dev]'); it runs the
# package from src/ without installing it, so a machine with its own torch can run it as is.
set -uo pipefail
out="${1:-outputs/gpu}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py="${PYTHON:-python3}"
status=0
step() {  # step NAME CMD...: run, keep the output, remember a failure and go on
  local name="$1"; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.txt" || status=1
}
nvidia-smi -L || true
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, torch.cuda.get_device_name())"
step check "$py" scripts/check_device.py --device cuda
step transforms_fp32 "$py" scripts/bench_transforms.py --device cuda --shapes all --repeats 20
step transforms_gpu_fp32 "$py" scripts/bench_transforms.py --device cuda --shapes gpu --repeats 20
step transforms_gpu_bf16 "$py" scripts/bench_transforms.py --device cuda --shapes gpu --dtype bfloat16 --repeats 20
step step_128 "$py" scripts/bench_step.py --device cuda --model bert-base --autocast --package --batch 32 --seq 128 --steps 20
step step_384 "$py" scripts/bench_step.py --device cuda --model bert-base --autocast --package --batch 16 --seq 384 --steps 20
exit $status
