"""Evaluator factories and evaluators for LazyConfigs."""
from __future__ import annotations

import itertools
import logging
from collections import OrderedDict

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator, SemSegEvaluator
from detectron2.utils import comm

__all__ = ["build_sem_seg_evaluator", "PanopticQualityEvaluator", "panoptic_pairs"]

logger = logging.getLogger(__name__)


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


def panoptic_pairs(panoptic_seg, num_things: int) -> np.ndarray:
    """A ``PanopticFPN`` output ``(segment ids (H, W), segments_info)`` as ``(H, W, 2)``
    ``(category, instance id)`` in the numbering of :mod:`d2geo.data.panoptic` (things
    ``0..K-1``, stuff ``K + i``); unassigned pixels get category -1.

    ``segments_info`` entries are detectron2's: things carry their class index, stuff
    the semantic label (``i + 1``, label 0 being the "things" class)."""
    seg, infos = panoptic_seg
    seg = seg.cpu().numpy() if torch.is_tensor(seg) else np.asarray(seg)
    out = np.zeros(seg.shape + (2,), np.int64)
    out[..., 0] = -1
    for info in infos:
        sel = seg == info["id"]
        if info["isthing"]:
            out[sel, 0] = int(info["category_id"])
            out[sel, 1] = int(info["id"])
        else:
            out[sel, 0] = num_things + int(info["category_id"]) - 1
    return out


class PanopticQualityEvaluator(DatasetEvaluator):
    """Panoptic quality (PQ = SQ x RQ; overall, things, stuff and per class) of a panoptic
    dataset registered with :func:`d2geo.data.panoptic.register_geo_panoptic`, computed with
    torchmetrics' ``PanopticQuality`` (the panopticapi definition: a prediction matches a
    ground-truth segment of its class at IoU > 0.5; pixels without ground truth do not count,
    predictions mostly on them are no false positives; each stuff class is one segment per
    image; an object the model left unassigned is a false negative). Averages are over the
    classes that occur (TP + FP + FN > 0), in percent, under the key ``"panoptic_seg"`` as
    detectron2's ``COCOPanopticEvaluator`` reports them.

    Needs ``pip install torchmetrics`` (the ``panoptic`` extra). The ground truth is each
    input's ``panoptic_file_name``; the prediction the model's ``"panoptic_seg"``.
    """

    def __init__(self, dataset_name: str, output_dir: str | None = None):
        try:
            from torchmetrics.detection import PanopticQuality
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("PanopticQualityEvaluator needs torchmetrics: "
                              "pip install 'd2geo[panoptic]'") from e
        meta = MetadataCatalog.get(dataset_name)
        self.thing_classes = list(meta.thing_classes)
        self.stuff_classes = list(meta.get("panoptic_stuff_classes", list(meta.stuff_classes)[1:]))
        k, s = len(self.thing_classes), len(self.stuff_classes)
        # Pixels the model left unassigned form one segment of an extra stuff category: with
        # torchmetrics' void (allow_unknown_preds_category) a missed object left unassigned
        # would not count as a false negative (torchmetrics ignores ground truth that is
        # mostly void in the prediction; panopticapi counts it). The extra category is left
        # out of every average and of the per-class results.
        self._unassigned = k + s
        # ground truth without a label (-1): a category the metric does not know, i.e. its void
        self._gt_void = k + s + 1
        self._metric = PanopticQuality(things=set(range(k)), stuffs=set(range(k, k + s + 1)),
                                       return_sq_and_rq=True, return_per_class=True)
        self._dataset_name = dataset_name

    def reset(self):
        self._metric.reset()

    def process(self, inputs, outputs):
        from d2geo.data.panoptic import read_panoptic_gt

        for inp, out in zip(inputs, outputs):
            if "panoptic_file_name" not in inp:
                raise KeyError(f"{inp.get('file_name')} has no 'panoptic_file_name': evaluate a dataset "
                               "registered with d2geo.data.panoptic.register_geo_panoptic")
            cat, inst = read_panoptic_gt(inp["panoptic_file_name"])
            pred = panoptic_pairs(out["panoptic_seg"], len(self.thing_classes))
            if pred.shape[:2] != cat.shape:
                raise ValueError(f"the prediction for {inp.get('file_name')} is {pred.shape[:2]} but its "
                                 f"ground truth {cat.shape}: predict at the input's height/width")
            pred[..., 0][pred[..., 0] < 0] = self._unassigned
            target = np.stack([np.where(cat < 0, self._gt_void, cat), inst], axis=-1)
            self._metric.update(torch.as_tensor(pred)[None], torch.as_tensor(target, dtype=torch.int64)[None])

    def _states(self):
        m = self._metric
        states = [m.iou_sum, m.true_positives, m.false_positives, m.false_negatives]
        if comm.get_world_size() > 1:
            gathered = comm.gather([s.cpu() for s in states], dst=0)
            if not comm.is_main_process():
                return None
            states = [sum(g[i] for g in gathered) for i in range(4)]
            m.iou_sum, m.true_positives, m.false_positives, m.false_negatives = states
        return states

    def evaluate(self):
        states = self._states()
        if states is None:
            return None
        _, tp, fp, fn = states
        # (C + 1, 3): pq, sq, rq; things first, then stuff, then the unassigned pixels
        per_class = self._metric.compute()[:-1]
        seen = ((tp + fp + fn) > 0)[:-1]
        names = self.thing_classes + self.stuff_classes
        k = len(self.thing_classes)
        res = OrderedDict()
        for suffix, sel in (("", slice(None)), ("_th", slice(0, k)), ("_st", slice(k, None))):
            valid = seen[sel]
            for j, key in enumerate(("PQ", "SQ", "RQ")):
                vals = per_class[sel, j][valid]
                res[key + suffix] = float(vals.mean()) * 100 if len(vals) else float("nan")
        for c, name in enumerate(names):
            if seen[c]:
                for j, key in enumerate(("PQ", "SQ", "RQ")):
                    res[f"{key}-{name}"] = float(per_class[c, j]) * 100
        logger.info("panoptic quality on %s: %s", self._dataset_name,
                    ", ".join(f"{k} {v:.1f}" for k, v in itertools.islice(res.items(), 9)))
        return {"panoptic_seg": res}
