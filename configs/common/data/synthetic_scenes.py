"""Data for the scene quickstarts: windows of d2geo's synthetic large scenes with vector labels.

Two 4096 x 4096 px COGs (10 m, six HLS bands) in UTM zones 31N and 32N, assembled from the
synthetic generator's tiles, with labels in EPSG:4326: the water / field / building areas
as a GeoPackage (semantic) and the buildings as GeoJSON (instances); see
``d2geo.data.synthetic.scenes``. They are generated on first use (about a minute, no
download) into ``$D2GEO_DATASETS/d2geo_synth_scenes/`` and reused afterwards.

``register_geo_scenes`` (through ``register_synthetic_scenes``) splits the scenes into
square blocks of 5 km dealt 80 / 20 to train and val from the seed, keeps one window
(960 m) between the parts, and writes the split (regions and windows, EPSG:4326) to
``split.geojson`` beside the generated scenes. Training draws 96 px windows at random in
the train blocks (the instance data puts a quarter of them on buildings); evaluation reads
the val blocks on a grid of 96 px windows.
"""
from omegaconf import OmegaConf

import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import build_detection_test_loader, build_detection_train_loader, get_detection_dataset_dicts
from detectron2.evaluation import COCOEvaluator

from d2geo.data.mapper import GeoDatasetMapper
from d2geo.data.scenes.evaluation import WindowSemSegEvaluator
from d2geo.data.synthetic.scenes import register_synthetic_scenes

WINDOW = 96
SPLIT = {"blocks": 5000, "fractions": {"train": 0.8, "val": 0.2}}
SEG_NAMES = register_synthetic_scenes("d2geo_scenes", "semantic", window=WINDOW, sampler="random", count=6000,
                                      split=SPLIT, seed=0)
DET_NAMES = register_synthetic_scenes("d2geo_scenes", "instance", window=WINDOW, sampler="random", count=1200,
                                      label_fraction=0.25, split=SPLIT, seed=0)


def _loaders(names, is_instance: bool):
    loader = OmegaConf.create()
    loader.train = L(build_detection_train_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names[0], filter_empty=is_instance),
        mapper=L(GeoDatasetMapper)(
            is_train=True,
            bands=None,
            augmentations=[L(T.RandomFlip)(horizontal=True, vertical=False),
                           L(T.RandomFlip)(horizontal=False, vertical=True)],
            use_instance_mask=is_instance,
        ),
        total_batch_size=4,
        # a 96 px window of a COG reads in a few ms: worker processes would cost more than they save
        num_workers=0,
    )
    loader.test = L(build_detection_test_loader)(
        dataset=L(get_detection_dataset_dicts)(names=names[1], filter_empty=False),
        mapper=L(GeoDatasetMapper)(is_train=False, bands="${...train.mapper.bands}"),
        num_workers=0,
    )
    return loader


seg_dataloader = _loaders(SEG_NAMES, False)
seg_dataloader.evaluator = L(WindowSemSegEvaluator)(dataset_name="${..test.dataset.names}",
                                                    output_dir="${...train.output_dir}")
det_dataloader = _loaders(DET_NAMES, True)
det_dataloader.evaluator = L(COCOEvaluator)(dataset_name="${..test.dataset.names}",
                                            output_dir="${...train.output_dir}", allow_cached_coco=False)
