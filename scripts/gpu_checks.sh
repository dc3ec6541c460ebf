#!/usr/bin/env bash
# The checks that need a GPU, as one script, sized to about ten minutes on one H100/H200: first the fused
# kernels' resource rows for this card's architecture (registers, spills, shared memory, blocks per SM, as
# scripts/kernel_resources.py compiles them with the launch plan; bf16 and fp16, mask and dropout on), so
# the speed figures below have them beside them; then correctness of the transforms, the adapter and the fused kernels on CUDA (fp32 and bf16, real shapes), the `gpu` tests,
# then the attention benchmark (sdpa, ssaf torch path, ssaf Triton, the entmax package, AdaSplash) and a
# bert-base fine-tuning step (bf16 autocast) at 128 and 384 tokens with the fused kernels.
#
#   bash scripts/gpu_checks.sh [OUT_DIR]     (results are also written to OUT_DIR, default outputs/gpu)
#
# Needs torch with CUDA (with its triton) and transformers; entmax and adasplash are installed from
# $WHEELS (a folder of wheels carried beside the tree: the machine reaches nothing) when given. It runs the
# package from src/ without installing it, so a machine with its own torch can run it as is.
set -uo pipefail
out="${1:-outputs/gpu}"
mkdir -p "$out"
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
unset TRITON_INTERPRET
py="${PYTHON:-python3}"
status=0
step() {  # step NAME CMD...: run, keep the output, remember a failure and go on
  local name="$1"; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.txt" || status=1
}
nvidia-smi -L || true
if [ -n "${WHEELS:-}" ]; then $py -m pip install --quiet --no-index --find-links "$WHEELS" entmax adasplash || true; fi
$py -c "import torch, transformers, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
arch="$($py -c 'import torch; major, minor = torch.cuda.get_device_capability(); print(10 * major + minor)')"
step resources "$py" scripts/kernel_resources.py --arch "$arch" --dtype bf16,fp16 --flags on --jobs 8 --json "$out/resources.json"
step check "$py" scripts/check_device.py --device cuda
step gpu_tests "$py" -m pytest -q -m gpu tests/unit/test_kernels.py -p no:cacheprovider
step attention_bf16 "$py" scripts/bench_attention.py --dtype bfloat16 --repeats 20
step step_128 "$py" scripts/bench_step.py --device cuda --model bert-base --autocast --package --fused --batch 32 --seq 128 --steps 20 --only 0,1,3,4,6,7,11,13,15,16,17,18,19
step step_384 "$py" scripts/bench_step.py --device cuda --model bert-base --autocast --package --fused --batch 16 --seq 384 --steps 20 --only 0,1,3,4,6,7,11,13,15,16,17,18,19
exit $status
