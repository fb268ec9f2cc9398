"""Evaluator factories for LazyConfigs."""
from __future__ import annotations

from detectron2.data import MetadataCatalog
from detectron2.evaluation import SemSegEvaluator

__all__ = ["build_sem_seg_evaluator"]


def build_sem_seg_evaluator(dataset_name: str, **kwargs) -> SemSegEvaluator:
    """detectron2's ``SemSegEvaluator`` reading the ground truth the dataset's way.

    d2geo's dataset registrations (GeoTIFF label files, the synthetic sets) store a
    ``sem_seg_loading_fn`` in the dataset's ``MetadataCatalog`` entry; it is used unless
    one is passed. Without either, detectron2's default (image files read with PIL) applies.
    """
    if "sem_seg_loading_fn" not in kwargs:
        fn = MetadataCatalog.get(dataset_name).get("sem_seg_loading_fn", None)
        if fn is not None:
            kwargs["sem_seg_loading_fn"] = fn
    return SemSegEvaluator(dataset_name, **kwargs)
