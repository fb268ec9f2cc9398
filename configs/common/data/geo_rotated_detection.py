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

The loaders are ``geo_detection.py``'s with these changes: the dataset names, the mapper, one
more augmentation (90-degree turns), no instance masks, and the evaluator.
"""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.evaluation import RotatedCOCOEvaluator

from d2geo.data.rotated import RotatedGeoDatasetMapper

from .geo_detection import dataloader

dataloader.train.dataset.names = "geo_rot_train"
dataloader.train.mapper._target_ = RotatedGeoDatasetMapper
del dataloader.train.mapper.use_instance_mask
dataloader.train.mapper.augmentations.append(
    L(T.RandomRotation)(angle=[0, 90, 180, 270], sample_style="choice", expand=True))

dataloader.test.dataset.names = "geo_rot_val"
dataloader.test.mapper._target_ = RotatedGeoDatasetMapper

dataloader.evaluator._target_ = RotatedCOCOEvaluator
