"""Oriented detections across windows: scene pixels, rotated NMS over the seams, map polygons.

The outputs of a rotated detector (``RRPN`` + ``RROIHeads``: ``pred_boxes`` as
``RotatedBoxes`` ``(cx, cy, w, h, angle)``, angle in degrees counter-clockwise, see
:mod:`d2geo.data.rotated`) run window by window over a scene by
:func:`~d2geo.inference.loop.run_scene` (``predict_scene``, ``predict_region``):

* :func:`rotated_model` / :func:`check_rotated_request`: whether a model's boxes are rotated,
  and the request checked against it before any window (rotated polygons asked of an
  axis-aligned detector, a class map asked of a rotated one: an error naming the fix);
* :func:`window_rotated_detections`: one window's boxes moved into scene pixels (scores under
  the threshold, degenerate boxes and boxes centred on no data dropped; copies touching an
  interior window edge marked ``truncated``);
* :func:`merge_rotated_detections`: the rotated NMS across window seams. Per class, of two
  detections whose rotated boxes overlap by more than ``dedup_threshold`` of the smaller box
  (intersection over minimum: a copy cut by a window edge lies inside the whole object, which
  an IoU threshold would keep twice) one stays: the one not touching an interior window edge,
  then the higher score. Intersections are exact polygon areas (shapely);
* :func:`owned_rotated`: detections whose centre the scene owns (regions of several scenes);
* :func:`rotated_detections_to_geojson`: rotated rectangles, their four corners through the
  scene's geotransform, in the scene CRS (or ``to_crs``) with class and score.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from d2geo.data.geotiff import apply_affine

from .request import SceneRequestError

logger = logging.getLogger(__name__)

__all__ = ["RotatedDetections", "rotated_model", "rotated_amp", "check_rotated_request", "is_rotated_instances",
           "check_rotated_outputs", "window_rotated_detections", "merge_rotated_detections", "owned_rotated",
           "rotated_detections_to_geojson", "rotated_corners", "scene_rotated_detections"]


@dataclass
class RotatedDetections:
    """Detections in scene pixel coordinates: ``boxes`` ``(N, 5)`` XYWHA, ``scores`` ``(N,)``,
    ``classes`` ``(N,)``, ``truncated`` ``(N,)`` (touching an interior edge of its window)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    truncated: np.ndarray | None = None

    def __post_init__(self):
        if self.truncated is None:
            self.truncated = np.zeros(len(self.boxes), bool)

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, keep) -> "RotatedDetections":
        keep = np.asarray(keep)
        return RotatedDetections(self.boxes[keep], self.scores[keep], self.classes[keep], self.truncated[keep])


def rotated_corners(boxes) -> np.ndarray:
    """``(N, 5)`` XYWHA boxes -> ``(N, 4, 2)`` corners (:func:`d2geo.data.rotated.rotated_box_corners`)."""
    from d2geo.data.rotated import rotated_box_corners

    return rotated_box_corners(boxes)


def _class_names_of(obj) -> list[str]:
    return [c.__name__ for c in type(obj).__mro__]


def rotated_model(model) -> bool | None:
    """Whether ``model``'s boxes are rotated (``RRPN`` or ``RROIHeads``, or a subclass), judged by
    its parts; False for other detectors, None when it has no detector parts to judge by."""
    m = getattr(model, "module", model)  # DDP
    declared = getattr(m, "rotated_boxes", None)
    if isinstance(declared, bool):
        return declared
    parts = [getattr(m, name, None) for name in ("proposal_generator", "roi_heads")]
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return any(n in ("RRPN", "RROIHeads") for p in parts for n in _class_names_of(p))


def rotated_amp(model, amp):
    """The autocast a rotated detector runs under: float32 (``"off"``) for ``amp="auto"``, since
    detectron2's rotated NMS (``nms_rotated``, inside ``RRPN`` and ``RROIHeads``) takes boxes and
    scores of one dtype and autocast makes the scores half precision; an explicit ``bf16`` /
    ``fp16`` is refused. Other models: ``amp`` as given."""
    if not rotated_model(model) or amp in (None, False) or str(amp).strip().lower() in ("off", "none", "float32"):
        return amp
    if str(amp).strip().lower() == "auto":
        return "off"
    raise SceneRequestError(
        f"--amp {amp}: {type(getattr(model, 'module', model)).__name__} is a rotated detector, and detectron2's "
        f"rotated NMS (nms_rotated) has no mixed-precision kernel (its boxes and scores must share one dtype): use "
        f"--amp off (or auto, which runs rotated detectors in float32)")


def check_rotated_request(model, *, rotated: bool | None, semseg: bool, instances: bool,
                          amp=None) -> bool | None:
    """The request against the model's kind of boxes, before any work; returns whether the
    model's boxes are rotated (None: cannot be told before a window has run).

    ``rotated=True`` (``--rotated-boxes``) asks for rotated polygons: refused for an axis-aligned
    detector or a model without detector parts, and without an instances output; ``rotated=False``
    refuses a rotated detector. A class map (``semseg``) from a rotated detector is refused: its
    outputs are boxes only; so is half precision (``amp``, :func:`rotated_amp`)."""
    kind = rotated_model(model)
    rotated_amp(model, amp)
    name = type(getattr(model, "module", model)).__name__
    if kind and semseg:
        raise SceneRequestError(
            f"{name} is a rotated detector (RRPN/RROIHeads): it predicts oriented boxes only, no class map; drop "
            f"--out-semseg (and --polygons), and write its rotated polygons with --out-geojson / --out-geoparquet")
    if rotated is True:
        if kind is False:
            raise SceneRequestError(
                f"rotated polygons (--rotated-boxes) were asked for, but {name} predicts axis-aligned boxes (its "
                f"heads are not RRPN/RROIHeads): drop --rotated-boxes, or use a rotated R-CNN config "
                f"(configs/*/rotated_*.py, e.g. configs/quickstart/rotated_tiny.py) and its weights")
        if not instances:
            raise SceneRequestError(f"rotated polygons (--rotated-boxes) were asked for, but no instances are written "
                                    f"({name} predicts none, or no --out-geojson / --out-geoparquet was given): "
                                    f"give a rotated detector and a vector output")
    if rotated is False and kind:
        raise SceneRequestError(f"{name} is a rotated detector but rotated=False was asked for: its boxes are "
                                f"rotated; leave rotated unset (or True) to write them as rotated polygons")
    return kind


def is_rotated_instances(inst) -> bool:
    """Whether an ``Instances``' ``pred_boxes`` are rotated (``RotatedBoxes``: 5 values a box)."""
    if not inst.has("pred_boxes"):
        return False
    boxes = inst.pred_boxes
    if "RotatedBoxes" in _class_names_of(boxes):
        return True
    t = getattr(boxes, "tensor", None)
    return t is not None and t.dim() == 2 and t.shape[-1] == 5


def check_rotated_outputs(inst, rotated: bool | None) -> bool:
    """Whether the first window's ``Instances`` are rotated, checked against ``rotated`` (models
    whose kind :func:`check_rotated_request` could not tell)."""
    got = is_rotated_instances(inst)
    if rotated is True and not got:
        raise SceneRequestError("rotated polygons (--rotated-boxes) were asked for, but the model returns "
                                "axis-aligned boxes: drop --rotated-boxes, or use a rotated R-CNN model")
    if rotated is False and got:
        raise SceneRequestError("the model returns rotated boxes but rotated=False was asked for: leave it unset")
    return got


def window_rotated_detections(instances, row: int, col: int, *, shape: tuple[int, int] | None = None,
                              height: int | None = None, width: int | None = None, valid: np.ndarray | None = None,
                              score_threshold: float = 0.0, edge_margin: int = 2) -> RotatedDetections:
    """A window's ``Instances`` (``pred_boxes`` as ``RotatedBoxes``, ``scores``,
    ``pred_classes``) in scene pixels: the window's top-left is scene pixel ``(row, col)``.

    Dropped: scores under ``score_threshold``, boxes without area or with non-finite values,
    boxes whose centre is outside the scene (``height`` x ``width``) or on a pixel ``valid``
    (the window's valid mask) says is no data. With ``shape`` (the window's ``(rows, cols)``),
    detections whose corners come within ``edge_margin`` px of an interior window edge (not a
    scene edge) are marked ``truncated``."""
    boxes = instances.pred_boxes.tensor.detach().cpu().double().numpy().reshape(-1, 5)
    n = len(boxes)
    scores = (instances.scores.detach().cpu().double().numpy() if instances.has("scores") else np.ones(n))
    classes = (instances.pred_classes.detach().cpu().numpy().astype(np.int64) if instances.has("pred_classes")
               else np.zeros(n, np.int64))
    keep = (scores >= score_threshold) & np.isfinite(boxes).all(1) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
    if valid is not None and n:
        r = np.clip(np.floor(boxes[:, 1]), 0, valid.shape[0] - 1).astype(int)
        c = np.clip(np.floor(boxes[:, 0]), 0, valid.shape[1] - 1).astype(int)
        keep &= np.asarray(valid, bool)[r, c]
    truncated = np.zeros(n, bool)
    if shape is not None and n:
        th, tw = shape
        sh, sw = height if height is not None else row + th, width if width is not None else col + tw
        corners = rotated_corners(boxes)
        x0, x1 = corners[..., 0].min(1), corners[..., 0].max(1)
        y0, y1 = corners[..., 1].min(1), corners[..., 1].max(1)
        truncated = (((col > 0) & (x0 <= edge_margin)) | ((row > 0) & (y0 <= edge_margin))
                     | ((col + tw < sw) & (x1 >= tw - edge_margin)) | ((row + th < sh) & (y1 >= th - edge_margin)))
    boxes = boxes.copy()
    boxes[:, 0] += col
    boxes[:, 1] += row
    if height is not None and width is not None:
        keep &= (boxes[:, 0] >= 0) & (boxes[:, 0] < width) & (boxes[:, 1] >= 0) & (boxes[:, 1] < height)
    return RotatedDetections(boxes, scores, classes, truncated).subset(np.flatnonzero(keep))


def merge_rotated_detections(windows: Sequence[RotatedDetections], dedup_threshold: float = 0.5) -> RotatedDetections:
    """All windows' detections with duplicates across window seams removed (the module's rotated
    NMS: per class, intersection over the smaller box above ``dedup_threshold``; of duplicates
    the one not ``truncated`` stays, then the higher score). Kept detections come in that order."""
    if not 0.0 <= dedup_threshold <= 1.0:
        raise ValueError(f"dedup_threshold must be in [0, 1], got {dedup_threshold}")
    parts = [w for w in windows if len(w)]
    if not parts:
        return RotatedDetections()
    dets = RotatedDetections(np.concatenate([w.boxes for w in parts]), np.concatenate([w.scores for w in parts]),
                             np.concatenate([w.classes for w in parts]),
                             np.concatenate([w.truncated for w in parts]))
    import shapely
    from shapely import STRtree

    order = np.lexsort((-dets.scores, dets.truncated))  # not truncated first, then by score
    dets = dets.subset(order)
    polys = shapely.polygons(rotated_corners(dets.boxes))
    areas = dets.boxes[:, 2] * dets.boxes[:, 3]
    tree = STRtree(polys)
    kept = np.zeros(len(dets), bool)
    for i in range(len(dets)):
        near = tree.query(polys[i])
        near = near[kept[near] & (dets.classes[near] == dets.classes[i])]
        if len(near):
            inter = shapely.area(shapely.intersection(polys[i], polys[near]))
            if (inter / np.maximum(np.minimum(areas[near], areas[i]), 1e-9) > dedup_threshold).any():
                continue
        kept[i] = True
    return dets.subset(np.flatnonzero(kept))


def owned_rotated(dets: RotatedDetections, owner: Callable, height: int, width: int) -> RotatedDetections:
    """The detections whose box centre the scene owns (``owner(row0, col0, rows, cols)`` -> mask)."""
    keep = []
    for i, (cx, cy) in enumerate(dets.boxes[:, :2]):
        r = int(min(max(np.floor(cy), 0), height - 1))
        c = int(min(max(np.floor(cx), 0), width - 1))
        if owner(r, c, 1, 1)[0, 0]:
            keep.append(i)
    return dets.subset(np.asarray(keep, dtype=np.int64))


def _signed_area(xs, ys) -> float:
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    return float(np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys) / 2)


def rotated_detections_to_geojson(dets: RotatedDetections, transform, crs=None, *, to_crs=None,
                                  class_names: Sequence[str] | None = None, properties: dict | None = None) -> dict:
    """A GeoJSON FeatureCollection of the detections as rotated rectangles (four corners through
    the raster ``transform``: pixel corner coordinates, so ``transform * (0, 0)`` is the scene's
    top-left corner), in the scene ``crs`` or reprojected to ``to_crs``; properties
    ``category_id``, ``score``, ``class`` (with ``class_names``), the box in scene pixels
    (``cx, cy, w, h, angle``: angle in degrees counter-clockwise, as detectron2's) and
    ``properties``."""
    feats = []
    if len(dets):
        from d2geo.data.rotated import check_rotated_boxes

        boxes = check_rotated_boxes(dets.boxes, "rotated detections", radians_check=False)
        for box, corners, score, cls in zip(boxes, rotated_corners(boxes), dets.scores, dets.classes):
            xs, ys = apply_affine(transform, corners[:, 0], corners[:, 1])
            if _signed_area(xs, ys) < 0:  # exterior rings counter-clockwise (RFC 7946)
                xs, ys = xs[::-1], ys[::-1]
            ring = [[float(a), float(b)] for a, b in zip(xs, ys)]
            geom = {"type": "Polygon", "coordinates": [ring + [ring[0]]]}
            if to_crs is not None and crs is not None:
                from rasterio.warp import transform_geom

                geom = transform_geom(crs, to_crs, geom)
            props: dict[str, Any] = {"category_id": int(cls), "score": round(float(score), 5)}
            if class_names is not None and 0 <= cls < len(class_names):
                props["class"] = class_names[int(cls)]
            props.update(zip(("cx", "cy", "w", "h", "angle"), (round(float(v), 3) for v in box)))
            props.update(properties or {})
            feats.append({"type": "Feature", "properties": props, "geometry": geom})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    target = to_crs if to_crs is not None else crs
    if target is not None:
        from rasterio.crs import CRS

        out["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
    return out


def scene_rotated_detections(windows: Sequence[RotatedDetections], scene, opts, owner: Callable | None = None,
                             properties: dict | None = None) -> tuple[int, RotatedDetections, dict]:
    """One scene's windows of detections merged (:func:`merge_rotated_detections`, ``opts.dedup_threshold``),
    kept where ``owner`` says the scene owns their centre, as GeoJSON (``opts.to_crs``,
    ``opts.object_names``); returns ``(detections before merging, kept, geojson)``."""
    n = sum(len(w) for w in windows)
    kept = merge_rotated_detections(windows, opts.dedup_threshold)
    if owner is not None:
        kept = owned_rotated(kept, owner, scene.height, scene.width)
    gj = rotated_detections_to_geojson(kept, scene.transform, scene.crs, to_crs=opts.to_crs,
                                       class_names=opts.object_names, properties=properties)
    return n, kept, gj
