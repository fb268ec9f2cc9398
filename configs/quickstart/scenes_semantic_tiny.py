"""Scene quickstart: Semantic FPN with a tiny ViT trained from whole scenes and vector labels.

The data are two synthetic 4096 x 4096 px COGs in UTM zones 31N and 32N with the water,
field and building areas as polygons in EPSG:4326 (a GeoPackage); windows of 96 px are
drawn at random from the training blocks of a spatial split and the mIoU is measured on
grid windows of the held-out blocks (configs/common/data/synthetic_scenes.py). Generated on
first use (about a minute), downloads nothing; trains on a CPU::

    python tools/train_net.py --config-file configs/quickstart/scenes_semantic_tiny.py

The model is the one of ``semantic_fpn_tiny.py`` (a DINOv2-architecture ViT of 4 blocks of
width 96, 8-pixel patches, trained from scratch). Classes: background (what no polygon
covers), water, field, building.
"""
from detectron2.config import LazyCall as L

from d2geo.inference.scene_eval import SceneSemSegEvaluator, scene_eval_windows

from ..common.data.synthetic_scenes import SEG_NAMES, WINDOW
from ..common.data.synthetic_scenes import seg_dataloader as dataloader
from .semantic_fpn_tiny import lr_multiplier, model, optimizer, train  # noqa: F401  (the same model)

# scene-scale evaluation: the held-out part of each scene blended as prediction maps it
dataloader.test.dataset = L(scene_eval_windows)(dataset_name=SEG_NAMES[1], overlap=WINDOW // 4)
dataloader.evaluator = L(SceneSemSegEvaluator)(dataset_name=SEG_NAMES[1], overlap=WINDOW // 4)
dataloader.train.num_workers = 1
train.output_dir = "./output/quickstart/scenes_semantic_tiny"
