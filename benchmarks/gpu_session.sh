#!/usr/bin/env bash
# The one prepared GPU check, for a lent GPU machine with PyTorch and Triton but no hnetbench
# install (run from the repository root; JSON and session.log, every step's whole output, go to
# $OUT, default /tmp/gpu_session):
#   1. benchmarks/gpu_kernels.py: EMA/routing Triton kernels and the SSD scans, parity + speed
#   2. scripts/reference_parity.py on CUDA (needs $GPU_REF/hnet: a goombalab/hnet checkout)
#   3. benchmarks/gpu_throughput.py at paper-L, with mamba_ssm's Triton SSD and without
#   4. a 40-step hnetbench train of hnet-2stage@cpu-tiny on CUDA (bf16 autocast, checkpoint)
# mamba_ssm is used from source ($GPU_REF/mamba: a state-spaces/mamba checkout at a6a1dae, the
# commit hnet pins; its Triton kernels need no build; its
# __init__, which imports the CUDA extensions, is replaced). Every step has its own time limit
# and a failed step does not stop the next. STEPS picks steps (default: kernels parity throughput
# train; "ssd" is the SSD part of step 1 alone, first shape).
set -u
OUT=${OUT:-/tmp/gpu_session}
GPU_REF=${GPU_REF:-.gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PKG=$(mktemp -d)
ln -s "$PWD" "$PKG/hnetbench"  # the repository root is the package
export PYTHONPATH=$PKG
MAMBA_SITE=$(mktemp -d)  # mamba_ssm from source, and wheels carried in $GPU_REF/whl (optree)
if [ -d "$GPU_REF/mamba/mamba_ssm" ]; then
  cp -r "$GPU_REF/mamba/mamba_ssm" "$MAMBA_SITE/"
  echo '__version__ = "source"' >"$MAMBA_SITE/mamba_ssm/__init__.py"
fi
if ls "$GPU_REF"/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$MAMBA_SITE" \
    "$GPU_REF"/whl/*.whl
fi
WITH_MAMBA="env PYTHONPATH=$PKG:$MAMBA_SITE"
STEPS=" ${STEPS:-kernels parity throughput train} "
want() { [[ $STEPS == *" $1 "* ]]; }
LOG=$(mktemp)
step() {  # step NAME SECONDS CMD...: whole log appended to $OUT/session.log, its tail printed
  local name=$1 limit=$2 t0=$SECONDS rc
  shift 2
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" >"$LOG" 2>&1
  rc=$?
  { echo "===== $name: $*"; cat "$LOG"; echo "===== $name: rc=$rc in $((SECONDS - t0))s"; } \
    >>"$OUT/session.log"
  tail -n 25 "$LOG"
  echo "=== $name: rc=$rc in $((SECONDS - t0))s"
}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
want kernels && step kernels 130 $WITH_MAMBA python3 benchmarks/gpu_kernels.py "$OUT/gpu_kernels.json"
want ssd && step ssd 170 $WITH_MAMBA python3 benchmarks/gpu_kernels.py "$OUT/gpu_ssd.json" \
  --only ssd --quick
if want parity && [ -d "$GPU_REF/hnet" ]; then  # smallest config per mamba_ssm kernel, no autotuning
  step parity 60 $WITH_MAMBA python3 scripts/reference_parity.py --hnet-repo "$GPU_REF/hnet" \
    --device cuda --dtype float32 --one-config
fi
want throughput && step throughput_mamba 150 $WITH_MAMBA python3 benchmarks/gpu_throughput.py \
  "$OUT/gpu_throughput_mamba.json" --steps 3
want throughput && step throughput_torch 60 python3 benchmarks/gpu_throughput.py "$OUT/gpu_throughput_torch.json" \
  --steps 3 --presets hnet-1stage@paper-L mambabyte@paper-L
RUN=$(mktemp -d)  # with the torch scan: mamba_ssm's autotuning of every new shape took > 80 s
want train && step train 60 python3 -m hnetbench train hnet-2stage@cpu-tiny train.steps=40 \
  train.device=cuda --out "$RUN"
cp "$RUN/summary.json" "$OUT/train_summary.json" 2>/dev/null
echo "=== done in ${SECONDS}s"
