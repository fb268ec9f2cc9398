#!/usr/bin/env bash
# Make the travelling set of benchmarks/gpu_check.sh: everything the bare GPU machine lacks
# (Python 3.12, no network), in one git-ignored folder that the device tool's `carry` names.
#
#   bash benchmarks/gpu_travel.sh            # -> .gpu-travel/ (about 40 MiB; must stay under 64 MiB)
#
# .gpu-travel/wheels/    cp312 manylinux wheels of rasterio, pyproj, fvcore, iopath and their
#                        dependencies that the GPU image does not hold (numpy, attrs, click, ...
#                        are there: /work/.library/device/KINDS.md), detectron2's and detrex's
#                        pure-Python needs (pycocotools, omegaconf, hydra-core, ...). fvcore and
#                        antlr4-python3-runtime publish only sdists: built here into pure-Python wheels.
# .gpu-travel/upstream/  the pinned upstream reference wheels of testkit/upstream.py (read as
#                        zip files by the fidelity tests and benchmarks, never installed)
# .gpu-travel/vendor/    the detectron2 and detrex source snapshots (../shared does not travel)
# .gpu-travel/MANIFEST   what is in it, with sizes
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${1:-$REPO/.gpu-travel}"
VENDOR="${D2GEO_VENDOR:-}"
if [ -z "$VENDOR" ]; then  # ../shared/vendor beside the checkout, else the workplace's /work/shared/vendor
  for v in "$REPO/../shared/vendor" "/work/shared/vendor"; do [ -d "$v" ] && { VENDOR="$v"; break; }; done
fi
[ -n "$VENDOR" ] && [ -d "$VENDOR" ] || { echo "gpu_travel: no vendor folder with the detectron2/detrex snapshots (set D2GEO_VENDOR)" >&2; exit 2; }
PY="${PYTHON:-python}"
# the versions this repository is tested with (pip list here); one version of each
BINARY=(rasterio==1.4.4 affine==3.0.1 cligj==0.7.2 click-plugins==1.1.1.2 pyproj==3.7.2
        iopath==0.1.9 yacs==0.1.8 termcolor==3.3.0 pycocotools==2.0.11 omegaconf==2.3.1 hydra-core==1.3.8)
SDIST_ONLY=(fvcore==0.1.5.post20221221 antlr4-python3-runtime==4.9.3)
UPSTREAM=$("$PY" -c "import sys; sys.path.insert(0, '$REPO'); from testkit.upstream import UPSTREAM_WHEELS as U; print(' '.join(U.values()))")
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/wheels" "$DEST.tmp/upstream" "$DEST.tmp/vendor"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$DEST.tmp/wheels" "${BINARY[@]}"
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$DEST.tmp/wheels" "${SDIST_ONLY[@]}"
"$PY" -m pip download -q --no-deps -d "$DEST.tmp/upstream" $UPSTREAM
cp "$VENDOR"/detectron2-*.tar.gz "$VENDOR"/detrex-*.tar.gz "$DEST.tmp/vendor/"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST"
(cd "$DEST" && find . -type f ! -name MANIFEST -printf '%s %p\n' | sort -k2 > MANIFEST)
total=$(du -sb "$DEST" | cut -f1)
echo "gpu_travel: $(wc -l < "$DEST/MANIFEST") files, $((total / 1024 / 1024)) MiB ($total bytes) in $DEST"
[ "$total" -lt $((64 * 1024 * 1024)) ] || { echo "gpu_travel: over the 64 MiB the device tool carries" >&2; exit 1; }
