"""Scene-scale semantic evaluation: the metric of the map a user gets.

:func:`evaluate_scene_semantic` predicts, for each scene of a dataset part (e.g. the
``_val`` part of ``register_geo_scenes``), the bounding box of the part's windows the way
region inference does: overlapping windows (``d2geo.data.scene.tile_windows``) whose
class scores are weighted by ``blend_weights`` (full weight in the centre, falling to ~0
over the overlap), summed, divided by the summed weights and arg-maxed. The ground truth is
the part's own windows (as ``GeoDatasetMapper`` rasterizes them); pixels outside them
(buffers, other parts) are not scored, but are read as context where a window reaches them.
Memory: ``classes x height x width`` floats per scene box.
"""
from __future__ import annotations

import copy
import logging
from collections import OrderedDict

import numpy as np
import torch

from ..scene import blend_weights, tile_windows

logger = logging.getLogger(__name__)

__all__ = ["evaluate_scene_semantic"]


def _scores(out) -> torch.Tensor:
    return out["sem_seg"] if isinstance(out, dict) else out


@torch.no_grad()
def evaluate_scene_semantic(model, dataset_name: str, mapper=None, *, tile: int | None = None,
                            overlap: int | None = None) -> dict:
    """``{"sem_seg": {"mIoU", "pACC", "IoU-<class>", ...}}`` over whole scenes (see the module docstring)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..mapper import GeoDatasetMapper

    meta = MetadataCatalog.get(dataset_name)
    classes = list(meta.stuff_classes)
    k, ignore = len(classes), meta.get("ignore_label", 255)
    mapper = mapper or GeoDatasetMapper(is_train=False, augmentations=[])
    dicts = DatasetCatalog.get(dataset_name)
    tile = int(tile or meta.get("window", dicts[0]["window"][2]))
    overlap = tile // 4 if overlap is None else int(overlap)
    weights = torch.as_tensor(blend_weights(tile, overlap))
    conf = np.zeros((k, k), dtype=np.int64)
    by_scene: dict = OrderedDict()
    for d in dicts:
        by_scene.setdefault(d["file_name"], []).append(d)
    was_training = model.training
    model.eval()
    for name, ds in by_scene.items():
        c0 = min(d["window"][0] for d in ds)
        r0 = min(d["window"][1] for d in ds)
        c1 = max(d["window"][0] + d["window"][2] for d in ds)
        r1 = max(d["window"][1] + d["window"][3] for d in ds)
        h, w = r1 - r0, c1 - c0
        gt = np.full((h, w), ignore, dtype=np.int64)
        for d in ds:
            col, row, ww, hh = d["window"]
            gt[row - r0:row - r0 + hh, col - c0:col - c0 + ww] = mapper(d)["sem_seg"].numpy()
        acc = torch.zeros((k, h, w))
        norm = torch.zeros((h, w))
        for r, c in tile_windows(h, w, tile, overlap):
            q = copy.deepcopy({key: v for key, v in ds[0].items()
                               if key not in ("scene_labels", "scene_label_options", "label_raster", "annotations")})
            q["window"] = (c0 + c, r0 + r, tile, tile)
            q["height"] = q["width"] = tile
            inp = mapper(q)
            inp.pop("sem_seg", None)
            scores = _scores(model([inp])[0]).float().softmax(0).cpu()
            hh, ww = min(tile, h - r), min(tile, w - c)
            acc[:, r:r + hh, c:c + ww] += scores[:, :hh, :ww] * weights[:hh, :ww]
            norm[r:r + hh, c:c + ww] += weights[:hh, :ww]
        pred = (acc / norm.clamp_min(1e-12)).argmax(0).numpy()
        ok = gt != ignore
        conf += np.bincount(k * gt[ok] + pred[ok], minlength=k * k).reshape(k, k)
    model.train(was_training)
    tp = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - tp
    present = conf.sum(1) > 0
    iou = np.divide(tp, union, out=np.full(k, np.nan), where=union > 0)
    res = {"mIoU": 100 * float(np.nanmean(iou[present])) if present.any() else float("nan"),
           "pACC": 100 * float(tp.sum() / max(conf.sum(), 1))}
    res.update({f"IoU-{c}": 100 * float(v) for c, v in zip(classes, iou)})
    logger.info("scene-scale evaluation of %s (%d scenes, tile %d, overlap %d): %s", dataset_name, len(by_scene),
                tile, overlap, res)
    return {"sem_seg": res}
