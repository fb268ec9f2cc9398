"""``GeoTrainer``: detectron2's ``DefaultTrainer`` for yacs configs, reading GeoTIFFs.

detectron2's ``DefaultTrainer`` maps dataset dicts with ``DatasetMapper``, which reads
images with PIL as 8-bit RGB/BGR: multispectral or float GeoTIFFs come out wrong or fail.
:class:`GeoTrainer` builds its train and test loaders with
:class:`~d2geo.data.GeoDatasetMapper` (bands, scale and fill from ``cfg.INPUT.GEO``, see
:func:`~d2geo.modeling.add_d2geo_config`), and picks the evaluator from the dataset's
``evaluator_type`` (``"coco"`` or ``"sem_seg"``)::

    cfg = get_cfg()
    add_d2geo_config(cfg)
    cfg.merge_from_file("my_geo_rcnn.yaml")
    trainer = GeoTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

Before the first step, :meth:`GeoTrainer.train` checks the units of the first samples of the
first training dataset against the model's ``pixel_mean``/``pixel_std``
(:mod:`d2geo.engine.units_check`).
"""
from __future__ import annotations

import os

from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer
from detectron2.evaluation import COCOEvaluator, SemSegEvaluator

import d2geo.modeling  # noqa: F401  (GeoRCNN, GeoSemanticSegmentor, geo backbones in the registries)

from ..data.mapper import GeoDatasetMapper
from .units_check import check_training_units

__all__ = ["GeoTrainer"]


class GeoTrainer(DefaultTrainer):
    """``DefaultTrainer`` whose loaders read GeoTIFFs with :class:`GeoDatasetMapper`."""

    @classmethod
    def build_train_loader(cls, cfg):
        return build_detection_train_loader(cfg, mapper=GeoDatasetMapper(cfg, is_train=True))

    def train(self):
        """Check the first training samples' units against the model's statistics
        (:mod:`d2geo.engine.units_check`; ``INPUT.GEO.UNITS_CHECK False`` only warns), then train."""
        geo = self.cfg.INPUT.get("GEO", None)
        enabled = True if geo is None else bool(geo.get("UNITS_CHECK", True))
        names = self.cfg.DATASETS.TRAIN
        if names:
            dataset = DatasetCatalog.get(names[0])
            check_training_units(self.model, dataset, GeoDatasetMapper(self.cfg, is_train=True), enabled=enabled)
        return super().train()

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=GeoDatasetMapper(cfg, is_train=False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        kind = MetadataCatalog.get(dataset_name).get("evaluator_type", None)
        if kind == "coco":
            return COCOEvaluator(dataset_name, output_dir=output_folder)
        if kind == "sem_seg":
            return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)
        raise NotImplementedError(
            f"dataset {dataset_name!r} has evaluator_type={kind!r}; GeoTrainer builds 'coco' and "
            f"'sem_seg' evaluators: set MetadataCatalog.get({dataset_name!r}).evaluator_type, or "
            f"subclass GeoTrainer and override build_evaluator")
