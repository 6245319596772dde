#!/usr/bin/env bash
# One-command, idempotent set-up of fltool's environment in .venv (safe to re-run; a finished set-up is a no-op).
#
#   scripts/setup.sh            # or: make setup
#
# Environment knobs:
#   PYTHON=python3.11           interpreter used to create .venv
#   TORCH_SPEC="torch==2.13.0"  what to install when .venv has no torch yet. An installed torch (e.g. a CUDA
#                               build you put there first) is always kept.
#   MAX_JOBS=N                  parallel compile jobs for MMCV's ops (default: number of cores)
#   FLTOOL_EXTRAS=dev           the project's extras to install (default dev: the test tools, which bring track,
#                               tune and openvino); e.g. FLTOOL_EXTRAS=track,tune for the trackers and Optuna
#                               without them, FLTOOL_EXTRAS=openvino for OpenVINO and NNCF alone
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"
STAMP="$VENV/.fltool-setup"

die() { echo "setup: ERROR: $*" >&2; exit 1; }
say() { echo "setup: $*"; }

# A finished set-up whose inputs are unchanged is not redone.
inputs_hash() { { cat pyproject.toml setup.py scripts/setup.sh plugins/csrc/*.cpp; echo "${FLTOOL_EXTRAS:-dev}"; } \
  2>/dev/null | sha256sum | cut -d' ' -f1; }
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(inputs_hash)" ] && "$PY" -c "import mmcv.ops, fltool" 2>/dev/null; then
  say "environment in .venv is up to date"
  exit 0
fi

start=$(date +%s)
if [ ! -x "$PY" ]; then
  say "creating .venv with ${PYTHON:-python3}"
  "${PYTHON:-python3}" -m venv "$VENV" || die "could not create a virtual environment; install python3-venv"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# 1. torch first: MMCV's ops and fltool's kernel compile against it. Keep whatever torch is already there.
if "$PY" -c "import torch" 2>/dev/null; then
  say "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  # torch==2.13.0 is the CPU build on this machine's disk; a plain 'torch' would pull a multi-GB CUDA build.
  say "installing ${TORCH_SPEC:-torch==2.13.0}"
  # shellcheck disable=SC2086
  "${PIP[@]}" install ${TORCH_SPEC:-torch==2.13.0}
fi

# 2. Build tools. setuptools<81: mmcv 2.1.0's setup.py and mmengine 0.10.7 import pkg_resources (removed in 81).
#    ninja makes the MMCV build use all cores. opencv headless before MMCV so that its setup.py keeps it.
"${PIP[@]}" install "setuptools>=64,<81" wheel ninja "numpy>=1.24" "opencv-python-headless>=4.8"

# 3. MMCV 2.1.0 from source WITH its compiled ops (no wheel exists for this torch): 77 C++ files, each parsing all of
#    torch/extension.h, most of a first set-up; pip caches the built wheel. -g0: Python's CFLAGS carry -g, and debug
#    info is ~40% of each file's compile time here (10.3 s -> 5.9 s for nms.cpp, measured) and of no use to a user.
#    setuptools' distutils *replaces* Python's CFLAGS with $CFLAGS (it does not append), so the variable is set to
#    Python's own flags (-O3, -DNDEBUG, ...) with -g0 after them. Progress (files compiled of total) is shown; the
#    full log stays in .venv. A cached wheel built without ops would install silently, so check and rebuild.
CFLAGS="$("$PY" -c "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')") ${CFLAGS:-} -g0"
export CFLAGS
have_mmcv_ops() { "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; }
build_mmcv() {
  "${PIP[@]}" install -v --no-build-isolation "$@" "mmcv==2.1.0" 2>&1 \
    | "$PY" "$ROOT/scripts/build_progress.py" "$VENV/mmcv-build.log" "MMCV ops"
}
if ! have_mmcv_ops; then
  say "building MMCV 2.1.0 with ops (MMCV_WITH_OPS=1, $(nproc) jobs); on a 2-core machine this is the long part"
  export MMCV_WITH_OPS=1 FORCE_CUDA="${FORCE_CUDA:-0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}"
  build_mmcv
  if ! have_mmcv_ops; then
    say "installed MMCV has no ops (a cached wheel built without MMCV_WITH_OPS?); rebuilding without cache"
    build_mmcv --no-cache-dir --force-reinstall --no-deps
  fi
fi

# 4. The project (editable) with mmdet/mmengine/pycocotools/typer/rich/matplotlib and its extras (default dev: pytest,
#    ruff, import-linter, and the track, tune and openvino extras the tests use); builds fltool's kernel.
"${PIP[@]}" install --no-build-isolation -e ".[${FLTOOL_EXTRAS:-dev}]"

# 5. mmengine's wheel asks for opencv-python (GUI build, needs libGL). Both packages own cv2/; keep headless only.
if "$PY" -m pip show opencv-python >/dev/null 2>&1; then
  say "replacing opencv-python (pulled in by mmengine) with opencv-python-headless"
  "${PIP[@]}" uninstall -y opencv-python
  "${PIP[@]}" install --force-reinstall --no-deps "opencv-python-headless>=4.8"
fi

# 6. Prove the stack: MMCV's compiled ops must import (a silent build without ops is the classic trap).
if ! err=$("$PY" -c "import mmcv.ops; from mmcv.ops import nms; import mmdet, mmengine, pycocotools, cv2" 2>&1); then
  echo "$err" | tail -n 5 >&2
  die "MMCV was installed without working compiled ops (import mmcv.ops failed). Rebuild it with:
    MMCV_WITH_OPS=1 $PY -m pip install --no-build-isolation --no-cache-dir --force-reinstall --no-deps mmcv==2.1.0
  and make sure gcc/g++ and the Python headers are installed."
fi
"$PY" -m fltool doctor || die "fltool doctor reports a broken stack (see above)"

inputs_hash > "$STAMP"
say "done in $(( $(date +%s) - start )) s; activate with: source .venv/bin/activate"
