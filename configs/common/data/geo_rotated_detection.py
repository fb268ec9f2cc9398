"""Data loading for oriented (rotated-box) detection on your own GeoTIFFs.

Register ``geo_rot_train`` / ``geo_rot_val`` before the config is used (or override the
names), with dataset dicts whose annotations hold ``XYWHA_ABS`` boxes
``(cx, cy, w, h, angle_degrees_ccw)`` or polygons (each becomes its minimum rotated
rectangle); ``d2geo.data.rotated`` reads DOTA label files, COCO json with 5-value boxes and
GeoJSON polygons in any CRS::

    from detectron2.data import DatasetCatalog, MetadataCatalog
    from d2geo.data.rotated import load_rotated_coco_json
    DatasetCatalog.register("geo_rot_train", lambda: load_rotated_coco_json("train.json", "images/"))
    MetadataCatalog.get("geo_rot_train").set(thing_classes=["ship", "vehicle"])

``RotatedGeoDatasetMapper`` reads the bands and metadata as ``GeoDatasetMapper`` does and
moves the boxes with the augmentations (flips and 90-degree turns update the angles).
Evaluation: ``RotatedCOCOEvaluator`` (COCO AP with rotated IoU) on the val split.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import RotatedCOCOEvaluator

from d2geo.data.rotated import RotatedGeoDatasetMapper

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_rot_train"),
    mapper=L(RotatedGeoDatasetMapper)(
        is_train=True,
        bands=None,  # band names to read, in the encoder's order (None: every band of the file)
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
            L(T.RandomRotation)(angle=[0, 90, 180, 270], sample_style="choice", expand=True),
        ],
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_rot_val", filter_empty=False),
    mapper=L(RotatedGeoDatasetMapper)(is_train=False, bands="${...train.mapper.bands}"),
    num_workers=4,
)

dataloader.evaluator = L(RotatedCOCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}",
)
