#!/usr/bin/env bash
# Makes the pictures of docs/tutorial.md with the README's commands, from the d2geo folder,
# after the two quickstart runs (their outputs in output/quickstart/). The PNGs are reduced
# to 128 colours, the legend's class colours among them, so the docs stay small.
set -euo pipefail
cd "$(dirname "$0")/../.."
T=../shared/data/terramind-examples
S2="--band-names B01,B02,B03,B04,B05,B06,B07,B08,B8A,B09,B11,B12 --sensor sentinel-2-l2a"
LULC="no data,water,trees,flooded vegetation,crops,built area,bare ground,snow/ice,clouds,rangeland"
SEG="--config-file configs/quickstart/semantic_fpn_tiny.py --weights output/quickstart/semantic_fpn_tiny/model_final.pth"
DET="--config-file configs/quickstart/mask_rcnn_tiny.py --weights output/quickstart/mask_rcnn_tiny/model_final.pth"
HLS6="--bands B02,B03,B04,B8A,B11,B12 --dn-scale 0.0001"
ROT="--config-file configs/quickstart/rotated_tiny.py --weights output/quickstart/rotated_tiny/model_final.pth"
OUT=${OUT:-/tmp/d2geo_tutorial}
mkdir -p "$OUT/pred"

python tools/visualize.py --dataset d2geo_synth_seg_val --num 3 --sheet --scale 2 $SEG --out "$OUT/seg"
python tools/visualize.py --dataset d2geo_synth_det_val --num 3 --sheet --scale 2 $DET --out "$OUT/det"
python tools/visualize.py --image $T/S2L2A/433D_629L_3_1.tif --mask $T/LULC/433D_629L_3_1.tif $S2 \
    --composite true,false,swir --class-names "$LULC" --scale 1 $SEG $HLS6 --out "$OUT/s2"
python tools/predict_scene.py $SEG --scene $T/S2L2A/433D_629L_3_1.tif $S2 $HLS6 --tile 96 --overlap 32 \
    --out-semseg "$OUT/pred/433D_629L_3_1_classes.tif" --no-progress
python tools/predict_scene.py $DET --scene $T/S2L2A/637U_59R_1_3.tif $S2 $HLS6 --tile 96 --overlap 32 \
    --out-geojson "$OUT/pred/637U_59R_1_3_buildings.geojson" --to-crs EPSG:4326 --no-progress
# rotated: a synthetic scene (not a training tile) and its truth, predict_scene's rotated polygons drawn from the file
python -c "from d2geo.data.synthetic.rotated import write_rotated_scene as w; \
w('$OUT/rot_scene.tif', size=320, max_objects=30, truth_geojson='$OUT/rot_truth.geojson')"
python tools/predict_scene.py $ROT --scene "$OUT/rot_scene.tif" --tile 96 --overlap 32 --rotated-boxes --to-crs EPSG:4326 \
    --out-geojson "$OUT/pred/rot_objects.geojson" --out-geoparquet "$OUT/pred/rot_objects.parquet" --no-progress
python tools/visualize.py --image "$OUT/rot_scene.tif" --geojson "$OUT/rot_truth.geojson" \
    --predictions "$OUT/pred/rot_objects.geojson" --class-names ship,vehicle --out "$OUT/rot"

python - "$OUT" docs/images <<'PY'
import sys
from PIL import Image

src, dst = sys.argv[1:]
pictures = {
    "quickstart_semseg.png": "seg/sheet.png",
    "quickstart_instances.png": "det/sheet.png",
    "s2_visualize.png": "s2/0000_433D_629L_3_1.png",
    "s2_predict_scene_classes.png": "pred/433D_629L_3_1_classes.tif.png",
    "s2_predict_scene_buildings.png": "pred/637U_59R_1_3_buildings.geojson.png",
    "rotated_scene.png": "rot/0000_rot_scene.png",
}
for name, path in pictures.items():
    im = Image.open(f"{src}/{path}")
    fixed = [bytes.fromhex(c.split("#")[1][:6]) for c in im.text.get("legend", "").split("; ") if "#" in c]
    im = im.convert("RGB")
    common = im.quantize(128 - len(fixed), method=Image.Quantize.MEDIANCUT).getpalette()[: 3 * (128 - len(fixed))]
    palette = Image.new("P", (1, 1))
    palette.putpalette(b"".join(fixed) + bytes(common))
    im.quantize(palette=palette, dither=Image.Dither.NONE).save(f"{dst}/{name}", optimize=True)
PY
