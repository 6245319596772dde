#!/usr/bin/env bash
# GPU check of fltool's CUDA paths, in one call on a lent GPU machine that has a CUDA torch and no network.
#
#   scripts/gpu_check.sh            # from the repository root; writes logs and summary.txt under $OUT
#
# What it needs beside the checkout (.whl/, carried): mmcv-2.1.0.tar.gz and wheels of mmengine, mmdet and their
# pure-Python needs missing on that machine (see the device tool's README for how they are downloaded).
# What it does:
#   1. installs those wheels into .devbuild/site, builds MMCV 2.1.0 *with its CUDA ops* for this GPU's arch only
#      (what scripts/setup.sh does on a CUDA machine), then fltool itself (with its CPU kernel);
#   2. checks the ops on CUDA against CPU (scripts/gpu_check_ops.py);
#   3. runs the CLI on the GPU: doctor, train (fp32 and --amp) + evaluation, eval, predict --device cuda,
#      bench speed-accuracy --device cuda, an OHEM/FL sweep on the sparse set, and torchrun --launcher pytorch (nccl).
# Every step's status, wall time and key numbers go to $OUT/summary.txt, printed last.
set -u
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
B="$ROOT/.devbuild"
mkdir -p "$B"
export PYTHONPATH="$B/site" PATH="$B/site/bin:$PATH" PYTHONUNBUFFERED=1 FLTOOL_CACHE="$B/cache"
PY=python3
W="$B/work"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"

# The whole script ends by BUDGET_S seconds (one device call is 600 s at most); a step that would start with less
# than a minute left is skipped and said so. Re-running resumes: a finished build is kept (.devbuild/site/.done).
DEADLINE=$(( $(date +%s) + ${BUDGET_S:-570} ))
ITERS=${ITERS:-300}      # training iterations of the train steps (600 took 86 s on an H200: ~7 it/s)
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu ITERS=20 dry-runs the CLI steps on a machine without a GPU (no --amp, no build)

# step NAME TIMEOUT CMD...: run CMD with a time limit, log it to $OUT/NAME.log, record rc and wall seconds.
step() {
  local name=$1 limit=$2; shift 2
  local t0=$(date +%s) left=$(( DEADLINE - $(date +%s) ))
  if [ "$left" -lt 60 ]; then
    printf '%-14s SKIPPED (%ss left of BUDGET_S)\n' "$name" "$left" >> "$SUMMARY"; return 99
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$? dt=$(( $(date +%s) - t0 ))
  printf '%-14s rc=%-3s %4ss  %s\n' "$name" "$rc" "$dt" "$*" | cut -c1-160 >> "$SUMMARY"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    | /' | cut -c1-200 >> "$SUMMARY"
  return $rc
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >> "$SUMMARY" 2>&1
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$SUMMARY"
echo "cpu: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" >> "$SUMMARY"

# metrics DIR: the AP and wall time a run's metrics.json records, into the summary.
metrics() {
  $PY -c "import json,sys; m=json.load(open(sys.argv[1])); b=m['bbox']; print(f\"    -> AP {b['AP']:.3f} AP50 {b['AP50']:.3f} after {m['iteration']} its, {m['wall_s']} s\")" \
    "$1/metrics.json" >> "$SUMMARY" 2>&1
}

# 1. Install and build.
if [ "$DEVICE" = cpu ]; then
  export PYTHONPATH="" PATH="$ROOT/.venv/bin:$PATH" FLTOOL_CACHE="${HOME}/.cache/fltool"
elif [ ! -f "$B/site/.done" ]; then
  step wheels 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$B/site" \
    .whl/*.whl || exit 1
  export CUDA_HOME="${CUDA_HOME:-$(dirname "$(dirname "$(command -v nvcc)")")}"
  echo "nvcc: $(nvcc --version | tail -n 2 | head -n 1); CUDA_HOME=$CUDA_HOME" >> "$SUMMARY"
  arch=$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability(0))")
  # setup.sh's way (pip, --no-build-isolation, MMCV_WITH_OPS=1) and flags: Python's own CFLAGS with -g0 (distutils
  # replaces CFLAGS); FORCE_CUDA=1 and only this GPU's arch, all cores.
  cflags="$($PY -c "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')") -g0"
  step mmcv_build 480 env MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$(nproc)" \
    CFLAGS="$cflags" $PY -m pip install -v --no-deps --no-build-isolation --no-index --upgrade --target "$B/site" \
    .whl/mmcv-2.1.0.tar.gz || { cat "$SUMMARY"; exit 1; }
  step fltool_install 300 $PY -m pip install -q --no-deps --no-build-isolation --no-index --upgrade \
    --target "$B/site" . \
    || { cat "$SUMMARY"; exit 1; }
  touch "$B/site/.done"
fi

# 2. Ops on CUDA against CPU.
step ops 180 env GPU_CHECK_DEVICE="$DEVICE" $PY scripts/gpu_check_ops.py
grep -E "^(PASS|FAIL)" "$OUT/ops.log" | cut -c1-150 | sed 's/^/    /' >> "$SUMMARY"

# 3. The CLI on the GPU.
step doctor 120 fltool doctor
step train_fp32 300 fltool train --work-dir "$W/fp32" --max-iters "$ITERS" --seed 0; metrics "$W/fp32"
[ "$DEVICE" = cuda ] && { step train_amp 300 fltool train --work-dir "$W/amp" --max-iters "$ITERS" --seed 0 --amp
                          metrics "$W/amp"; }
cfg=$(ls "$W"/fp32/*.py 2>/dev/null | head -n 1)
ckpt="$W/fp32/iter_$ITERS.pth"
step eval 120 fltool eval "$cfg" "$ckpt" --work-dir "$W/eval" --out "$OUT/eval_metrics.json"
imgs=$(find "$FLTOOL_CACHE" -path '*images*' -name '*.png' | head -n 4)
step predict 120 fltool predict "$W/fp32" $imgs --device "$DEVICE" --out-dir "$W/predict"
step bench 240 fltool bench speed-accuracy "$cfg" --checkpoint "$ckpt" --device "$DEVICE" --num-images 50 \
  --work-dir "$W/bench" --backend pytorch
step sweep_sparse 300 fltool sweep retinanet_r18-gn_synth-sparse_384 --work-dir "$W/sweep" \
  --set 'loss=FL,OHEM-b128,OHEM-1:3-b128' --max-iters $(( ITERS / 3 )) --seeds 0
step torchrun 180 torchrun --nproc_per_node=1 -m fltool train --launcher pytorch --work-dir "$W/ddp" \
  --max-iters $(( ITERS / 6 ))
cp "$W"/bench/results.csv "$OUT/bench_results.csv" 2>/dev/null
cp "$W"/sweep/results.json "$OUT/sweep_results.json" 2>/dev/null
nvidia-smi --query-gpu=memory.used --format=csv,noheader >> "$SUMMARY" 2>&1
echo "=== summary"
cat "$SUMMARY"
