"""Data loading for instance detection / segmentation on your own GeoTIFFs.

Register your data under the names below before the config is used, e.g. in a small
module you import first, or override the names on the command line
(``dataloader.train.dataset.names=my_train dataloader.test.dataset.names=my_val``)::

    from d2geo.data.datasets import register_geo_instances
    register_geo_instances("geo_det_train", "train.json", "images/",  # COCO json, pixel coords
                           geo=dict(band_names=[...], sensor="sentinel-2-l2a"))
    register_geo_instances("geo_det_val", "val.json", "images/", geo=...)

(or any detectron2 dataset whose dicts point at GeoTIFFs; see ``d2geo.data.mapper`` for
time series and GeoJSON labels). ``GeoDatasetMapper`` reads the bands, the acquisition
metadata (timestamps, location, GSD, wavelengths) and the annotations.

Evaluation is COCO AP (boxes and masks) on the val split.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.evaluation import COCOEvaluator

from d2geo.data.mapper import GeoDatasetMapper

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_det_train"),
    mapper=L(GeoDatasetMapper)(
        is_train=True,
        bands=None,  # band names to read, in the encoder's order (None: every band of the file)
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
        ],
        use_instance_mask=True,
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_det_val", filter_empty=False),
    mapper=L(GeoDatasetMapper)(is_train=False, bands="${...train.mapper.bands}"),
    num_workers=4,
)

dataloader.evaluator = L(COCOEvaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}",
)
