#!/usr/bin/env bash
# The GPU check: every CUDA path of d2geo tested, then the GPU benchmarks, on a bare GPU machine.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine (docs/gpu.md: the device tool call)
#   bash benchmarks/gpu_check.sh --quick     # install, build, the gpu tests only (no benchmarks)
#   bash benchmarks/gpu_check.sh --dry-run   # here, on the CPU: the same steps with the CPU device
#
# 1. install: the wheels of .gpu-travel/wheels (made here by benchmarks/gpu_travel.sh) into
#    $D2GEO_GPU_WORK/site, the detectron2 and detrex snapshots of .gpu-travel/vendor unpacked and their
#    C++/CUDA ops built in place with the machine's nvcc, for its own GPU architecture only;
#    both go on PYTHONPATH (the image's Python is left as it is). Log: $OUT/install.log.
# 2. benchmarks/gpu_check.py: `pytest -m gpu`, then the GPU benchmarks, each part writing its files
#    to $OUT before the next starts, and a summary table; it exits non-zero on any failure.
#
# A second run on the same (warm) machine reuses step 1's install (D2GEO_GPU_REINSTALL=1 redoes it).
# --dry-run skips step 1 (this machine has detectron2 and detrex; the wheels are for Python 3.12):
# it checks the travelling set instead and runs step 2 with the CPU device.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export OUT="${OUT:-$REPO/gpu-results}"
mkdir -p "$OUT"
DRY=0
for a in "$@"; do [ "$a" = "--dry-run" ] && DRY=1; done
TRAVEL="${D2GEO_TRAVEL:-$REPO/.gpu-travel}"
export D2GEO_TRAVEL="$TRAVEL"
export PYTHONUNBUFFERED=1

if [ "$DRY" = 1 ]; then
  PY="${PYTHON:-python}"
  exec "$PY" benchmarks/gpu_check.py "$@"
fi

PY="${PYTHON:-python3}"
WORK="${D2GEO_GPU_WORK:-/tmp/d2geo-gpu}"
t0=$(date +%s)
install() {
  set -e
  [ -d "$TRAVEL/wheels" ] && [ -d "$TRAVEL/vendor" ] || {
    echo "install: $TRAVEL/wheels and $TRAVEL/vendor are missing: run 'bash benchmarks/gpu_travel.sh' on a" \
         "machine with pip, and name .gpu-travel in the device tool's carry (docs/gpu.md)"; return 2; }
  rm -rf "$WORK" && mkdir -p "$WORK/src"
  echo "install: $(ls "$TRAVEL"/wheels/*.whl | wc -l) wheels -> $WORK/site"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
    "$TRAVEL"/wheels/*.whl
  for t in "$TRAVEL"/vendor/detectron2-*.tar.gz "$TRAVEL"/vendor/detrex-*.tar.gz; do
    tar xzf "$t" -C "$WORK/src"
  done
  local arch jobs
  # the machine's own GPU only (set TORCH_CUDA_ARCH_LIST to build for others)
  arch="${TORCH_CUDA_ARCH_LIST:-$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}"
  jobs=$(( ($(nproc) + 1) / 2 ))
  echo "install: nvcc $(nvcc --version 2>&1 | grep -o 'release [0-9.]*' || echo 'not on PATH'), building for" \
       "compute capability ${arch}, ${jobs} jobs each"
  local pids=() name
  for name in detectron2 detrex; do
    (cd "$WORK/src/$name" && FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$arch" MAX_JOBS="$jobs" \
       "$PY" setup.py build_ext --inplace > "$WORK/build-$name.log" 2>&1) &
    pids+=($!)
  done
  local rc=0 i=0
  for name in detectron2 detrex; do
    if wait "${pids[$i]}"; then echo "install: $name built with its CUDA ops"; else
      rc=1
      echo "install: building $name's CUDA ops FAILED; the end of its log:"; tail -40 "$WORK/build-$name.log"
      # its CPU ops, so that it imports and the checks that do not need its CUDA ops still run
      (cd "$WORK/src/$name" && rm -rf build && CUDA_VISIBLE_DEVICES= FORCE_CUDA=0 MAX_JOBS="$(nproc)" \
         "$PY" setup.py build_ext --inplace > "$WORK/build-$name-cpu.log" 2>&1) \
        && echo "install: $name built with its CPU ops only (the install counts as failed)" \
        || { echo "install: building $name's CPU ops failed too:"; tail -20 "$WORK/build-$name-cpu.log"; }
    fi
    i=$((i + 1))
  done
  return $rc
}
if [ -f "$WORK/installed.ok" ] && [ -z "${D2GEO_GPU_REINSTALL:-}" ]; then
  # a warm machine that ran the check before: reuse its install and builds (a quick rerun)
  echo "install: reused from an earlier run on this machine ($WORK; D2GEO_GPU_REINSTALL=1 redoes it)" \
    > "$OUT/install.log"
  rc=0
else
  ( install ) > "$OUT/install.log" 2>&1
  rc=$?
  [ "$rc" = 0 ] && touch "$WORK/installed.ok"
fi
cat "$OUT/install.log"
export PYTHONPATH="$WORK/site:$WORK/src/detectron2:$WORK/src/detrex:$REPO${PYTHONPATH:+:$PYTHONPATH}"
export D2GEO_UPSTREAM_WHEELS="$TRAVEL/upstream"
exec "$PY" benchmarks/gpu_check.py --install-seconds "$(( $(date +%s) - t0 ))" --install-rc "$rc" "$@"
