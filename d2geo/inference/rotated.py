"""Oriented detections across windows: scene pixels, rotated NMS over the seams, map polygons.

Pure functions for the outputs of a rotated detector (``RRPN`` + ``RROIHeads``: boxes
``(cx, cy, w, h, angle)``, angle in degrees counter-clockwise, see :mod:`d2geo.data.rotated`)
run window by window over a scene; not yet wired into :func:`~d2geo.inference.run_scene`:

* :func:`window_rotated_detections`: one window's boxes moved into scene pixels;
* :func:`merge_rotated_detections`: detections of all windows, duplicates where windows
  overlap removed by detectron2's ``batched_nms_rotated`` (per class, rotated IoU);
* :func:`rotated_detections_to_geojson`: rotated polygons in the scene CRS (or ``to_crs``)
  with class and score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from d2geo.data.geotiff import apply_affine
from d2geo.data.rotated import check_rotated_boxes, rotated_box_corners

__all__ = ["RotatedDetections", "window_rotated_detections", "merge_rotated_detections",
           "rotated_detections_to_geojson"]


@dataclass
class RotatedDetections:
    """Detections in scene pixel coordinates: ``boxes`` ``(N, 5)`` XYWHA, ``scores`` ``(N,)``,
    ``classes`` ``(N,)``."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.boxes)


def window_rotated_detections(instances, row: int, col: int) -> RotatedDetections:
    """A window's ``Instances`` (``pred_boxes`` as ``RotatedBoxes``, ``scores``,
    ``pred_classes``) in scene pixels: the window's top-left is scene pixel ``(row, col)``."""
    boxes = instances.pred_boxes.tensor.detach().cpu().numpy().astype(np.float64).reshape(-1, 5)
    if boxes.shape[1] != 5:  # pragma: no cover - reshape above guarantees 5 columns or fails
        raise ValueError("rotated detections need (cx, cy, w, h, angle) boxes")
    boxes = boxes.copy()
    boxes[:, 0] += col
    boxes[:, 1] += row
    return RotatedDetections(boxes, instances.scores.detach().cpu().numpy().astype(np.float64),
                             instances.pred_classes.detach().cpu().numpy().astype(np.int64))


def merge_rotated_detections(windows: Sequence[RotatedDetections], iou_threshold: float = 0.5) -> RotatedDetections:
    """All windows' detections with duplicates across window seams removed: per class, of
    boxes whose rotated IoU exceeds ``iou_threshold`` the highest score stays
    (``detectron2.layers.batched_nms_rotated``). Kept detections are in descending score."""
    import torch
    from detectron2.layers import batched_nms_rotated

    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    parts = [w for w in windows if len(w)]
    if not parts:
        return RotatedDetections()
    boxes = np.concatenate([w.boxes for w in parts])
    scores = np.concatenate([w.scores for w in parts])
    classes = np.concatenate([w.classes for w in parts])
    keep = batched_nms_rotated(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
                               torch.as_tensor(classes), iou_threshold).numpy()
    return RotatedDetections(boxes[keep], scores[keep], classes[keep])


def rotated_detections_to_geojson(dets: RotatedDetections, transform, crs=None, *, to_crs=None,
                                  class_names: Sequence[str] | None = None) -> dict:
    """A GeoJSON FeatureCollection of the detections as rotated rectangles (four corners through
    the raster ``transform``), in the scene ``crs`` or reprojected to ``to_crs``; properties
    ``category_id``, ``score`` and ``class`` (with ``class_names``)."""
    feats = []
    if len(dets):
        boxes = check_rotated_boxes(dets.boxes, "rotated detections", radians_check=False)
        for box, score, cls in zip(rotated_box_corners(boxes), dets.scores, dets.classes):
            xs, ys = apply_affine(transform, box[:, 0], box[:, 1])
            ring = [[float(a), float(b)] for a, b in zip(xs, ys)]
            geom = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}
            if to_crs is not None and crs is not None:
                from rasterio.warp import transform_geom

                geom = transform_geom(crs, to_crs, geom)
            props: dict[str, Any] = {"category_id": int(cls), "score": round(float(score), 5)}
            if class_names is not None and 0 <= cls < len(class_names):
                props["class"] = class_names[int(cls)]
            feats.append({"type": "Feature", "properties": props, "geometry": geom})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    target = to_crs if to_crs is not None else crs
    if target is not None:
        from rasterio.crs import CRS

        out["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
    return out
