"""Data loading for semantic segmentation on your own GeoTIFFs.

Register your data under the names below before the config is used, e.g. in a small
module you import first, or override the names on the command line
(``dataloader.train.dataset.names=my_train dataloader.test.dataset.names=my_val``)::

    from d2geo.data.datasets import register_geo_semseg
    register_geo_semseg("geo_seg_train", [(image_tif, label_tif), ...],
                        stuff_classes=["background", ...],
                        geo=dict(band_names=[...], sensor="hls", label_map={-1: 255}))
    register_geo_semseg("geo_seg_val", [...], stuff_classes=[...], geo=...)

For time series give each image as a list of GeoTIFFs, one per date. Label value 255 is
ignored. ``GeoDatasetMapper`` reads the bands and the acquisition metadata (timestamps,
location, GSD, wavelengths).

Evaluation is mIoU on the val split (the ground truth is read with the dataset's
``sem_seg_loading_fn``).
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
from d2geo.model_zoo.evaluation import build_sem_seg_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_seg_train", filter_empty=False),
    mapper=L(GeoDatasetMapper)(
        is_train=True,
        bands=None,  # band names to read, in the encoder's order (None: every band of the file)
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
        ],
    ),
    total_batch_size=16,
    num_workers=4,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="geo_seg_val", filter_empty=False),
    mapper=L(GeoDatasetMapper)(is_train=False, bands="${...train.mapper.bands}"),
    num_workers=4,
)

dataloader.evaluator = L(build_sem_seg_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${...train.output_dir}",
)
