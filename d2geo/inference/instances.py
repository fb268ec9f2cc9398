"""Instances across windows: detections in scene pixel coordinates, deduplicated, as GeoJSON.

Masks are kept as crops in scene pixel coordinates. Detections from different windows are
duplicates when they share a class and their masks (or boxes, for box-only models) overlap
by more than ``dedup_threshold`` of the smaller one (intersection over minimum: a copy cut
by a window edge is a subset of the whole object). Of duplicates the one not touching an
interior window edge wins, then the higher score.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from d2geo.data.geotiff import GeoTiffError, apply_affine, translate_affine

__all__ = ["SceneInstance", "merge_instances", "window_instances", "instances_to_geojson", "float32_instances"]


@dataclass
class SceneInstance:
    """One detection in scene pixel coordinates: ``mask`` is a crop whose top-left is (x0, y0)."""

    category_id: int
    score: float
    box: np.ndarray  # x0, y0, x1, y1 in scene pixels
    x0: int
    y0: int
    mask: np.ndarray | None
    truncated: bool  # touches an interior edge of its window

    @property
    def area(self) -> float:
        if self.mask is not None:
            return float(self.mask.sum())
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def _intersection(a: SceneInstance, b: SceneInstance) -> float:
    if a.mask is None or b.mask is None:
        x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
        x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
        return float(max(x1 - x0, 0) * max(y1 - y0, 0))
    ax1, ay1 = a.x0 + a.mask.shape[1], a.y0 + a.mask.shape[0]
    bx1, by1 = b.x0 + b.mask.shape[1], b.y0 + b.mask.shape[0]
    x0, y0, x1, y1 = max(a.x0, b.x0), max(a.y0, b.y0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    ma = a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
    mb = b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
    return float(np.logical_and(ma, mb).sum())


def merge_instances(instances: Sequence[SceneInstance], dedup_threshold: float = 0.5) -> list[SceneInstance]:
    """Drop duplicates across windows (see the module docstring); returns the kept ones."""
    order = sorted(instances, key=lambda d: (d.truncated, -d.score))
    kept: list[SceneInstance] = []
    boxes = np.zeros((0, 4))
    for cand in order:
        if cand.area <= 0:
            continue
        if len(kept):
            ov = ((np.minimum(boxes[:, 2], cand.box[2]) > np.maximum(boxes[:, 0], cand.box[0]))
                  & (np.minimum(boxes[:, 3], cand.box[3]) > np.maximum(boxes[:, 1], cand.box[1])))
            dup = False
            for j in np.nonzero(ov)[0]:
                other = kept[j]
                if other.category_id != cand.category_id:
                    continue
                inter = _intersection(cand, other)
                if inter / max(min(cand.area, other.area), 1e-9) > dedup_threshold:
                    dup = True
                    break
            if dup:
                continue
        kept.append(cand)
        boxes = np.vstack([boxes, cand.box[None]])
    return kept


def _array(x) -> np.ndarray:
    """A field of detectron2's ``Instances`` (a tensor, ``Boxes``) or of
    :class:`~.onnx_instances.ArrayInstances` (an array) as a numpy array."""
    x = getattr(x, "tensor", x)  # Boxes
    return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)


def window_instances(inst, row: int, col: int, tile, height: int, width: int, valid: np.ndarray,
                     score_threshold: float, edge_margin: int) -> list[SceneInstance]:
    out = []
    if len(inst) == 0:
        return out
    scores = _array(inst.scores) if inst.has("scores") else np.ones(len(inst))
    classes = _array(inst.pred_classes) if inst.has("pred_classes") else np.zeros(len(inst), int)
    boxes = _array(inst.pred_boxes) if inst.has("pred_boxes") else None
    masks = _array(inst.pred_masks) if inst.has("pred_masks") else None
    if boxes is None and masks is None:
        raise GeoTiffError("the model's instances have neither pred_boxes nor pred_masks")
    """The detections of one window at scene ``(row, col)`` of ``tile`` (an int, or the
    window's ``(rows, cols)``) as :class:`SceneInstance` (scores under ``score_threshold``
    dropped; masks cut to ``valid`` and to the scene)."""
    th, tw = (tile, tile) if isinstance(tile, (int, np.integer)) else tile
    # interior edges: window edges that are not scene edges
    inner = (col > 0, row > 0, col + tw < width, row + th < height)  # left, top, right, bottom
    for k in range(len(inst)):
        if scores[k] < score_threshold:
            continue
        if masks is not None:
            m = masks[k] > 0.5 if masks[k].dtype != bool else masks[k]
            m = m & valid
            ys, xs = np.nonzero(m)
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = m[y0:y1, x0:x1].copy()
            bx = np.array([x0, y0, x1, y1], dtype=np.float64)
        else:
            crop = None
            bx = boxes[k].astype(np.float64)
            x0, y0 = int(math.floor(bx[0])), int(math.floor(bx[1]))
        truncated = ((inner[0] and bx[0] <= edge_margin) or (inner[1] and bx[1] <= edge_margin)
                     or (inner[2] and bx[2] >= tw - edge_margin) or (inner[3] and bx[3] >= th - edge_margin))
        gbox = bx + np.array([col, row, col, row], dtype=np.float64)
        if gbox[0] >= width or gbox[1] >= height:
            continue
        gbox[2], gbox[3] = min(gbox[2], width), min(gbox[3], height)
        if crop is not None:
            crop = crop[: height - (row + y0), : width - (col + x0)]
        out.append(SceneInstance(int(classes[k]), float(scores[k]), gbox, int(col + x0), int(row + y0),
                                 crop, bool(truncated)))
    return out


def instances_to_geojson(instances: Sequence[SceneInstance], transform, crs, *, to_crs=None,
                         class_names: Sequence[str] | None = None) -> dict:
    """GeoJSON FeatureCollection of instance polygons (masks) or boxes, in ``to_crs`` or the scene CRS."""
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    feats = []
    for inst in instances:
        if inst.mask is not None:
            t = translate_affine(transform, inst.x0, inst.y0)
            polys = [g for g, v in shapes(inst.mask.astype(np.uint8), mask=inst.mask, transform=t) if v == 1]
            if not polys:
                continue
            geom = polys[0] if len(polys) == 1 else {
                "type": "MultiPolygon", "coordinates": [p["coordinates"] for p in polys]}
        else:
            x0, y0, x1, y1 = inst.box
            xs, ys = apply_affine(transform, [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
            ring = [[float(a), float(b)] for a, b in zip(xs, ys)]
            geom = {"type": "Polygon", "coordinates": [ring]}
        if to_crs is not None and crs is not None:
            geom = transform_geom(crs, to_crs, geom)
        props = {"category_id": inst.category_id, "score": round(inst.score, 5)}
        if class_names is not None and 0 <= inst.category_id < len(class_names):
            props["class"] = class_names[inst.category_id]
        feats.append({"type": "Feature", "properties": props, "geometry": geom})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    target = to_crs if to_crs is not None else crs
    if target is not None:
        from rasterio.crs import CRS

        out["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
    return out


def float32_instances(inst):
    """Instances with float32 scores, boxes and masks (autocast leaves some in bfloat16)."""
    if getattr(inst, "array_backend", "torch") == "numpy":  # a model file's (numpy float32 already)
        return inst
    for name in ("scores", "pred_masks"):
        if inst.has(name) and getattr(inst, name).is_floating_point():
            inst.set(name, getattr(inst, name).float())
    if inst.has("pred_boxes"):
        inst.pred_boxes.tensor = inst.pred_boxes.tensor.float()
    return inst
