"""Data loading for panoptic segmentation on your own GeoTIFFs.

Register your data under the names below before the config is used (or override the names
on the command line)::

    from d2geo.data.panoptic import register_geo_panoptic
    register_geo_panoptic("geo_pan_train", [(image_tif, class_tif, instance_id_tif), ...],
                          stuff_classes=["forest", "water", "urban"], thing_classes=["wheat", "maize"],
                          geo=dict(band_names=[...], sensor="hls"))
    # or stuff raster + parcel polygons in any CRS:
    # [{"image": image_tif, "classes": stuff_tif, "parcels": "parcels.gpkg"}, ...], class_key="crop"

For time series give each image as a list of GeoTIFFs, one per date. The semantic branch
learns things as one class (label 0) and the stuff classes (``i + 1``); the instances come as
exact RLE masks (``instance_mask_format="bitmask"``). Evaluation is panoptic quality (PQ, SQ,
RQ; things, stuff, per class) with torchmetrics (``pip install 'd2geo[panoptic]'``).
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)

from d2geo.data.mapper import GeoDatasetMapper
from d2geo.model_zoo.evaluation import PanopticQualityEvaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_pan_train", filter_empty=False),
    mapper=L(GeoDatasetMapper)(
        is_train=True,
        bands=None,  # band names to read, in the encoder's order (None: every band of the file)
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
        ],
        use_instance_mask=True,
        instance_mask_format="bitmask",
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_pan_val", filter_empty=False),
    mapper=L(GeoDatasetMapper)(is_train=False, bands="${...train.mapper.bands}"),
    num_workers=4,
)

dataloader.evaluator = L(PanopticQualityEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}",
)
