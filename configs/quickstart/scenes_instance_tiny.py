"""Scene quickstart: Mask R-CNN with a tiny ViT trained from whole scenes and building polygons.

The data are two synthetic 4096 x 4096 px COGs in UTM zones 31N and 32N with the buildings
as polygons in EPSG:4326 (GeoJSON); windows of 96 px are drawn at random from the training
blocks of a spatial split (a quarter of them placed on buildings; a building cut by the
window edge is kept when at least half of it is inside, else dropped) and box/mask AP is
measured on grid windows of the held-out blocks (configs/common/data/synthetic_scenes.py).
Generated on first use (about a minute), downloads nothing; trains on a CPU::

    python tools/train_net.py --config-file configs/quickstart/scenes_instance_tiny.py

The model is the one of ``mask_rcnn_tiny.py`` (a DINOv2-architecture ViT of 4 blocks of
width 96, 8-pixel patches, trained from scratch).
"""
from ..common.data.synthetic_scenes import det_dataloader as dataloader  # noqa: F401
from .mask_rcnn_tiny import lr_multiplier, model, optimizer, train  # noqa: F401  (the same model)

train.output_dir = "./output/quickstart/scenes_instance_tiny"
