#!/usr/bin/env bash
# CI step: the inference-only install (pip install d2geo[infer]: no torch, no detectron2) runs
# tools/predict_scene.py --model on a real tile.
#
#   .ci/infer_only.sh MODEL_FILE SCENE OUT_DIR [extra predict_scene flags...]
#
# MODEL_FILE: a model file exported by the full environment (tools/export_model.py --format onnx).
# VENV (default $OUT_DIR/venv) is made with python3 -m venv and reused when it exists; PYTHON
# picks the interpreter (default python3). Exits non-zero when torch or detectron2 is importable
# in the venv, when the run fails, or when the class map is missing.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 MODEL_FILE SCENE OUT_DIR [predict_scene flags...]" >&2
    exit 2
fi
MODEL=$(realpath "$1"); SCENE=$(realpath "$2"); OUT=$(realpath -m "$3"); shift 3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${VENV:-$OUT/venv}
mkdir -p "$OUT"
if [ ! -x "$VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet -e "$ROOT[infer]"
# the point of the install: neither torch nor detectron2 is there
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
present = [n for n in ("torch", "detectron2", "timm", "torchvision") if importlib.util.find_spec(n)]
if present:
    sys.exit(f"the inference-only install pulled {present}")
import d2geo, d2geo.data.geotiff, d2geo.data.units, d2geo.inference  # noqa: E401
print("d2geo", d2geo.__version__, "imports without torch")
PY
cd "$OUT"
"$VENV/bin/python" "$ROOT/tools/predict_scene.py" --model "$MODEL" --scene "$SCENE" \
    --out-semseg "$OUT/pred.tif" --no-progress "$@"
test -s "$OUT/pred.tif"
echo "infer_only: wrote $OUT/pred.tif"
