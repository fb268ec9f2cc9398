"""Oriented (rotated) boxes: reading them, checking them and moving them with the image.

Boxes are detectron2's ``XYWHA_ABS``: ``(cx, cy, w, h, angle)`` in pixels of the image
(``(0, 0)`` = top-left corner of the top-left pixel), ``angle`` in **degrees,
counter-clockwise** as seen on the screen (image y pointing down): the ``w`` side of a box
of angle 30 rises to the right. This is what ``RotatedBoxes``, ``RRPN``, ``RROIHeads`` and
``RotatedCOCOEvaluator`` read.

Sources:

* :func:`load_dota_labels`: DOTA label files (``x1 y1 ... x4 y4 class difficulty`` per
  line, optional ``imagesource:`` / ``gsd:`` header lines); the four corners become their
  minimum rotated rectangle;
* :func:`load_rotated_coco_json`: COCO json whose ``bbox`` has five values (XYWHA);
* :func:`geojson_to_rotated_annotations`: polygons of a GeoJSON FeatureCollection in any
  CRS, reprojected into the image and replaced by their minimum rotated rectangle (shapely).

Every source goes through :func:`check_rotated_boxes`, which refuses boxes of zero width
or height and angles that look like radians (the fix is in the message).

:class:`RotatedGeoDatasetMapper` is ``GeoDatasetMapper`` with ``gt_boxes`` as
``RotatedBoxes``: the boxes follow the augmentations through detectron2's
``Transform.apply_rotated_box``. detectron2 defines it for horizontal flips and resizes;
importing this module adds it (exactly, through the four corners) for vertical flips,
crops, pads, rotations (e.g. ``RandomRotation([90, 180, 270], sample_style="choice")``)
and :class:`~d2geo.data.mapper.ExtentTransformND`.
"""
from __future__ import annotations

import json
import logging
import math
import os
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, Instances, RotatedBoxes
from fvcore.transforms import transform as FT

from .datasets import geojson_to_annotations
from .geotiff import GeoTiffError
from .mapper import ExtentTransformND, GeoDatasetMapper

logger = logging.getLogger(__name__)

__all__ = ["RotatedBoxError", "rotated_box_corners", "corners_to_rotated_box", "polygon_to_rotated_box",
           "check_rotated_boxes", "load_dota_labels", "load_rotated_coco_json", "geojson_to_rotated_annotations",
           "transform_rotated_boxes", "RotatedGeoDatasetMapper"]


class RotatedBoxError(GeoTiffError):
    """Bad rotated-box input (a ``GeoTiffError``, so callers that catch data errors catch it)."""


# -- geometry -------------------------------------------------------------------------------------
def rotated_box_corners(boxes) -> np.ndarray:
    """``(N, 5)`` XYWHA boxes -> ``(N, 4, 2)`` corners (detectron2's convention, as its
    visualizer draws them): the first two corners span the ``h`` side, the 2nd and 3rd the ``w`` side."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 5)
    theta = np.deg2rad(b[:, 4])
    c, s = np.cos(theta), np.sin(theta)
    w, h = b[:, 2] / 2, b[:, 3] / 2
    local = np.stack([np.stack([-w, h], 1), np.stack([-w, -h], 1), np.stack([w, -h], 1), np.stack([w, h], 1)], 1)
    xx, yy = local[..., 0], local[..., 1]
    x = s[:, None] * yy + c[:, None] * xx + b[:, None, 0]
    y = c[:, None] * yy - s[:, None] * xx + b[:, None, 1]
    return np.stack([x, y], -1)


def _normalize_angle(a: np.ndarray) -> np.ndarray:
    """Angles in [-90, 90): a rectangle is the same after a half turn."""
    return (a + 90.0) % 180.0 - 90.0


def corners_to_rotated_box(corners) -> np.ndarray:
    """``(N, 4, 2)`` corners of rectangles (in order around the rectangle, either way round)
    -> ``(N, 5)`` XYWHA boxes; the side from corner 1 to corner 2 becomes ``w``. Exact for
    rectangles, e.g. the corners of :func:`rotated_box_corners` after a flip, crop or rotation."""
    p = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    centre = p.mean(1)
    side_w = p[:, 2] - p[:, 1]
    side_h = p[:, 1] - p[:, 0]
    w = np.hypot(side_w[:, 0], side_w[:, 1])
    h = np.hypot(side_h[:, 0], side_h[:, 1])
    angle = np.rad2deg(np.arctan2(-side_w[:, 1], side_w[:, 0]))
    return np.concatenate([centre, w[:, None], h[:, None], _normalize_angle(angle)[:, None]], 1)


def polygon_to_rotated_box(points) -> np.ndarray:
    """The minimum rotated rectangle (shapely) of a polygon given as ``(K, 2)`` pixel points,
    as one XYWHA box ``(5,)``. The polygon needs at least 4 distinct corners (else
    :class:`RotatedBoxError`: a triangle or a line has no meaningful orientation)."""
    try:
        import shapely.geometry
    except ImportError:  # pragma: no cover - shapely is a dependency of the vector workflow
        raise ImportError("oriented boxes from polygons need shapely: pip install shapely") from None
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) > 1 and np.allclose(pts[0], pts[-1]):
        pts = pts[:-1]
    distinct = np.unique(np.round(pts, 6), axis=0)
    if len(distinct) < 4:
        raise RotatedBoxError(f"a polygon with {len(distinct)} distinct corners ({pts.round(2).tolist()}): an "
                              "oriented box needs at least 4 corners; fix or drop the geometry")
    rect = shapely.geometry.Polygon(pts).minimum_rotated_rectangle
    ring = np.asarray(rect.exterior.coords)[:4] if rect.geom_type == "Polygon" else None
    if ring is None or len(ring) < 4:
        raise RotatedBoxError(f"the polygon {pts.round(2).tolist()} has no area (its minimum rotated rectangle is a "
                              f"{rect.geom_type}); fix or drop the geometry")
    return corners_to_rotated_box(ring[None])[0]


def check_rotated_boxes(boxes, where: str, *, angles_in_radians: bool = False, radians_check: bool = True,
                        ids: Sequence | None = None) -> np.ndarray:
    """``(N, 5)`` float64 XYWHA boxes, with angles in degrees, or a :class:`RotatedBoxError`.

    Refused: a wrong shape, non-finite values, zero or negative width/height, and (with
    ``radians_check``, for a whole file or dataset rather than one image) angles that look
    like radians: every ``|angle| <= 2*pi`` and some non-zero (a set whose angles really all
    are below 6.3 degrees is ambiguous too: say which with ``angles_in_radians``).
    ``angles_in_radians=True`` says the angles are radians: they are converted to degrees.
    ``ids`` name the boxes in messages (e.g. annotation ids; default: their index).
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.size == 0:
        return b.reshape(0, 5)
    if b.ndim != 2 or b.shape[1] != 5:
        raise RotatedBoxError(f"{where}: rotated boxes must be (cx, cy, w, h, angle), got shape {b.shape}")
    if not np.isfinite(b).all():
        raise RotatedBoxError(f"{where}: non-finite values in rotated boxes {b[~np.isfinite(b).all(1)][:3].tolist()}")
    bad = (b[:, 2] <= 0) | (b[:, 3] <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        name = f"id={ids[i]}" if ids is not None else f"#{i}"
        raise RotatedBoxError(f"{where}: box {name} {b[i].tolist()} has zero width or height; a box needs w > 0 and "
                              "h > 0 (drop degenerate objects, or give the true extent of the object)")
    if angles_in_radians:
        b = b.copy()
        b[:, 4] = np.rad2deg(b[:, 4])
        return b
    a = np.abs(b[:, 4])
    if radians_check and (a <= 2 * math.pi).all() and (a > 0).any():
        raise RotatedBoxError(
            f"{where}: every angle is within +-2*pi ({b[:, 4][:5].round(4).tolist()}...): these look like radians, "
            "but rotated boxes take degrees (counter-clockwise). Convert them (np.degrees), or pass "
            "angles_in_radians=True where the loader takes it")
    return b


# -- sources --------------------------------------------------------------------------------------
def load_dota_labels(path, class_names: Sequence[str] | None = None, *, skip_difficult: bool = False) -> list[dict]:
    """detectron2 annotations (``XYWHA_ABS`` boxes) from a DOTA label file.

    Lines: ``x1 y1 x2 y2 x3 y3 x4 y4 class difficulty`` (the difficulty may be missing);
    ``imagesource:...`` and ``gsd:...`` header lines and blank lines are skipped. Classes are
    looked up in ``class_names`` (required names; an unknown one is an error) or, if None,
    numbered in the order they appear. A line with another number of fields, unreadable
    numbers or a degenerate quadrilateral is an error naming the file and line.
    Difficult objects (difficulty 1) get ``iscrowd=1`` (evaluation ignores them) unless
    ``skip_difficult`` drops them.
    """
    names = list(class_names) if class_names is not None else []
    annos = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for lineno, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.lower().startswith(("imagesource:", "gsd:")):
            continue
        fields = text.split()
        where = f"{os.fspath(path)}:{lineno}"
        if len(fields) not in (9, 10):
            raise RotatedBoxError(f"{where}: {len(fields)} fields in {text!r}; a DOTA line is 8 corner coordinates, "
                                  "the class and the difficulty ('x1 y1 x2 y2 x3 y3 x4 y4 ship 0')")
        try:
            corners = np.array([float(v) for v in fields[:8]]).reshape(4, 2)
            difficult = int(fields[9]) if len(fields) == 10 else 0
        except ValueError:
            raise RotatedBoxError(f"{where}: unreadable numbers in {text!r}; expected "
                                  "'x1 y1 x2 y2 x3 y3 x4 y4 class difficulty'") from None
        cls = fields[8]
        if cls not in names:
            if class_names is not None:
                raise RotatedBoxError(f"{where}: class {cls!r} is not in class_names={names}; add it or map it")
            names.append(cls)
        if difficult and skip_difficult:
            continue
        try:
            box = polygon_to_rotated_box(corners)
        except RotatedBoxError as e:
            raise RotatedBoxError(f"{where}: {e}") from None
        # the angle comes from the corners: no radians to mistake
        box = check_rotated_boxes(box[None], where, radians_check=False)[0]
        annos.append({"bbox": box.tolist(), "bbox_mode": BoxMode.XYWHA_ABS, "category_id": names.index(cls),
                      "iscrowd": int(bool(difficult))})
    return annos


def load_rotated_coco_json(json_file, image_root, *, angles_in_radians: bool = False,
                           dataset_name: str | None = None) -> list[dict]:
    """Dataset dicts from a COCO json whose ``bbox`` entries are ``[cx, cy, w, h, angle]``
    (degrees, counter-clockwise; ``angles_in_radians=True`` converts radians). Category ids
    are mapped to contiguous ``0..K-1`` in id order (the mapping goes into the dataset's
    metadata as ``thing_dataset_id_to_contiguous_id`` when ``dataset_name`` is given)."""
    with open(json_file, encoding="utf-8") as f:
        coco = json.load(f)
    cats = sorted(coco.get("categories", []), key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    if dataset_name is not None:
        from detectron2.data import MetadataCatalog

        MetadataCatalog.get(dataset_name).set(thing_classes=[c["name"] for c in cats],
                                              thing_dataset_id_to_contiguous_id=id_map)
    all_annos = coco.get("annotations", [])
    for a in all_annos:
        if len(a["bbox"]) != 5:
            raise RotatedBoxError(f"{os.fspath(json_file)}: annotation id={a.get('id')} has a bbox of {len(a['bbox'])} "
                                  "values; rotated COCO boxes are [cx, cy, w, h, angle_degrees]")
        if a["category_id"] not in id_map:
            raise RotatedBoxError(f"{os.fspath(json_file)}: annotation id={a.get('id')} has category_id "
                                  f"{a['category_id']}, not among the categories {sorted(id_map)}")
    # the whole file at once: the radians check needs many angles
    checked = check_rotated_boxes([a["bbox"] for a in all_annos], os.fspath(json_file),
                                  angles_in_radians=angles_in_radians, ids=[a.get("id") for a in all_annos])
    by_image: dict[Any, list] = {}
    for a, box in zip(all_annos, checked):
        by_image.setdefault(a["image_id"], []).append((a, box))
    dicts = []
    for img in coco["images"]:
        pairs = by_image.get(img["id"], [])
        annos, boxes = [a for a, _ in pairs], [b for _, b in pairs]
        dicts.append({
            "file_name": os.path.join(image_root, img["file_name"]), "image_id": img["id"],
            "height": img["height"], "width": img["width"],
            "annotations": [{"bbox": box.tolist(), "bbox_mode": BoxMode.XYWHA_ABS, "iscrowd": a.get("iscrowd", 0),
                             "category_id": id_map[a["category_id"]]} for a, box in zip(annos, boxes)],
        })
    return dicts


def geojson_to_rotated_annotations(geojson: Mapping[str, Any] | os.PathLike | str, transform, *, crs=None,
                                   geojson_crs=None, category_key: str = "category_id",
                                   class_names: Sequence[str] | None = None) -> list[dict]:
    """Polygons of a GeoJSON FeatureCollection (scene CRS, or ``geojson_crs``, reprojected)
    -> XYWHA annotations in the pixels of the raster with ``transform``: each polygon's
    minimum rotated rectangle. A polygon with fewer than 4 corners is an error naming the
    feature. Arguments as :func:`d2geo.data.datasets.geojson_to_annotations`."""
    if isinstance(geojson, (str, os.PathLike)):
        with open(geojson, encoding="utf-8") as f:
            geojson = json.load(f)
    features = geojson.get("features") if isinstance(geojson, Mapping) else None
    if features is None:
        raise RotatedBoxError("expected a GeoJSON FeatureCollection (a mapping with 'features')")
    out = []
    for i, feat in enumerate(features):
        annos = geojson_to_annotations({"type": "FeatureCollection", "features": [feat]}, transform, crs=crs,
                                       geojson_crs=geojson_crs, category_key=category_key, class_names=class_names)
        for a in annos:
            for poly in a["segmentation"]:
                try:
                    box = polygon_to_rotated_box(np.reshape(poly, (-1, 2)))
                except RotatedBoxError as e:
                    raise RotatedBoxError(f"feature {i} of the GeoJSON: {e}") from None
                out.append({"bbox": box.tolist(), "bbox_mode": BoxMode.XYWHA_ABS,
                            "category_id": a["category_id"], "iscrowd": 0})
    return out


# -- transforms -----------------------------------------------------------------------------------
def _rotated_box_by_corners(transform, rotated_boxes: np.ndarray) -> np.ndarray:
    """``apply_rotated_box`` of a transform that maps rectangles to rectangles (flips, crops,
    pads, rotations, uniform scaling): move the four corners, read the rectangle back."""
    boxes = np.asarray(rotated_boxes, dtype=np.float64).reshape(-1, 5)
    if len(boxes) == 0:
        return boxes
    corners = rotated_box_corners(boxes).reshape(-1, 2)
    moved = transform.apply_coords(corners.astype(np.float64)).reshape(-1, 4, 2)
    return corners_to_rotated_box(moved)


for _cls in (FT.VFlipTransform, FT.CropTransform, FT.PadTransform, T.RotationTransform, ExtentTransformND):
    if not hasattr(_cls, "apply_rotated_box"):
        _cls.register_type("rotated_box", _rotated_box_by_corners)


def transform_rotated_boxes(boxes, transforms) -> np.ndarray:
    """XYWHA boxes through a detectron2 ``TransformList`` (``apply_rotated_box`` of each
    transform); raises with the fix for a transform that cannot move rotated boxes."""
    out = np.asarray(boxes, dtype=np.float64).reshape(-1, 5).copy()
    for t in getattr(transforms, "transforms", [transforms]):
        if not hasattr(t, "apply_rotated_box"):
            raise RotatedBoxError(f"the augmentation's {type(t).__name__} cannot move rotated boxes; use flips, "
                                  "crops, resizes, RandomRotation or RandomExtentND, or register a 'rotated_box' "
                                  f"function with {type(t).__name__}.register_type")
        out = np.asarray(t.apply_rotated_box(out), dtype=np.float64)
    out[:, 4] = _normalize_angle(out[:, 4])
    return out


def _clip_to_image(boxes: np.ndarray, image_size) -> np.ndarray:
    """Keep boxes whose centre is inside the image (detectron2's RotatedBoxes.clip does not
    clip rotated boxes; a box whose centre left the image after a crop is dropped)."""
    h, w = image_size
    return (boxes[:, 0] >= 0) & (boxes[:, 0] <= w) & (boxes[:, 1] >= 0) & (boxes[:, 1] <= h)


class RotatedGeoDatasetMapper(GeoDatasetMapper):
    """``GeoDatasetMapper`` whose instances hold ``gt_boxes`` as ``RotatedBoxes`` (XYWHA).

    Annotations: ``bbox`` in ``XYWHA_ABS`` (from :func:`load_dota_labels`,
    :func:`load_rotated_coco_json`, ...), or any polygon annotation (``segmentation``, e.g.
    from a GeoJSON with ``geojson_file_name``) which becomes its minimum rotated rectangle.
    Boxes are checked by :func:`check_rotated_boxes` before any augmentation; ``iscrowd``
    ones are dropped (as detectron2 does); boxes whose centre an augmentation moved out of
    the image are dropped. Masks are not supported (``RROIHeads`` predicts boxes only).
    """

    def __init__(self, *args, angles_in_radians: bool = False, **kwargs):
        if kwargs.get("use_instance_mask"):
            raise ValueError("RotatedGeoDatasetMapper gives boxes only (RROIHeads has no mask head): "
                             "set use_instance_mask=False")
        super().__init__(*args, **kwargs)
        self.angles_in_radians = angles_in_radians

    def _rotated_boxes(self, annos: Iterable[dict], where: str) -> tuple[np.ndarray, np.ndarray]:
        boxes, classes = [], []
        for a in annos:
            if a.get("bbox_mode") == BoxMode.XYWHA_ABS and len(a.get("bbox", ())) == 5:
                boxes.append(a["bbox"])
            elif a.get("segmentation"):
                polys = a["segmentation"]
                if not isinstance(polys, list):
                    raise RotatedBoxError(f"{where}: RLE masks cannot become rotated boxes; give polygons")
                pts = np.concatenate([np.reshape(p, (-1, 2)) for p in polys])
                boxes.append(polygon_to_rotated_box(pts).tolist())
            else:
                raise RotatedBoxError(f"{where}: an annotation with bbox_mode {BoxMode(a.get('bbox_mode')).name} "
                                      "and no polygon: rotated detection needs XYWHA_ABS boxes (load them with "
                                      "d2geo.data.rotated's loaders) or polygons")
            classes.append(a["category_id"])
        radians = self.angles_in_radians and all(a.get("bbox_mode") == BoxMode.XYWHA_ABS for a in annos)
        # one image has too few angles to tell radians from degrees: the loaders check whole files
        boxes = check_rotated_boxes(boxes, where, angles_in_radians=radians, radians_check=False)
        return boxes, np.asarray(classes, dtype=np.int64)

    def _instances(self, d: dict, transforms, image_size) -> Instances:
        annos = [a for a in d.pop("annotations") if a.get("iscrowd", 0) == 0]
        boxes, classes = self._rotated_boxes(annos, f"annotations of {d['file_name']}")
        boxes = transform_rotated_boxes(boxes, transforms)
        keep = _clip_to_image(boxes, image_size) & (boxes[:, 2] > 0) & (boxes[:, 3] > 0)
        inst = Instances(image_size)
        inst.gt_boxes = RotatedBoxes(torch.as_tensor(boxes[keep], dtype=torch.float32))
        inst.gt_classes = torch.as_tensor(classes[keep])
        return inst
