"""Panoptic outputs over scenes: windows' ``panoptic_seg`` stitched into a class map plus an
instance-id raster (ids unique across the scene), and the objects as polygons.

Pure functions and one small accumulator, not yet wired into :func:`~d2geo.inference.run_scene`:

* :func:`window_panoptic`: a ``PanopticFPN`` output ``(segment ids, segments_info)`` as a class
  map (stuff ``i`` -> ``i``, thing ``j`` -> ``len(stuff) + j``, the order of
  :func:`d2geo.data.panoptic.register_geo_panoptic`'s default ``class_values``, so outputs can
  be read back as labels; :data:`UNASSIGNED` where the model assigned nothing) and per-window
  segment ids of the things;
* :class:`PanopticStitcher`: windows pasted into scene arrays. A window writes its ``core``
  (the part it owns, e.g. without half of each overlap); a thing segment of a window that
  overlaps (IoU > ``match_iou`` over the pixels both predicted) an object already written by an
  earlier window of the same class takes that object's id, so an object cut by a window seam
  keeps one id; every other segment gets a new id;
* :func:`panoptic_polygons`: the instance-id raster as one (Multi)Polygon per id, in the raster's
  CRS coordinates, with its class: rasterizing them back on the grid (pixel centres) gives the
  ids again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["UNASSIGNED", "window_panoptic", "PanopticStitcher", "panoptic_polygons"]

#: class-map value of pixels without a prediction (and of pixels no window covered)
UNASSIGNED = 255


def window_panoptic(panoptic_seg, *, num_stuff: int, num_things: int) -> tuple[np.ndarray, np.ndarray]:
    """``(class map uint8, thing segment ids int32, 0 off things)`` of one window's output."""
    seg, infos = panoptic_seg
    seg = seg.cpu().numpy() if hasattr(seg, "cpu") else np.asarray(seg)
    if num_stuff + num_things >= UNASSIGNED:
        raise ValueError(f"{num_stuff} stuff + {num_things} thing classes do not fit a uint8 class map "
                         f"({UNASSIGNED} marks unassigned pixels)")
    classes = np.full(seg.shape, UNASSIGNED, np.uint8)
    ids = np.zeros(seg.shape, np.int32)
    for info in infos:
        sel = seg == info["id"]
        c = int(info["category_id"])
        if info["isthing"]:
            if not 0 <= c < num_things:
                raise ValueError(f"segment {info['id']} has thing class {c}; the model has {num_things}")
            classes[sel] = num_stuff + c
            ids[sel] = int(info["id"])
        else:  # PanopticFPN's stuff labels are the semantic labels: 0 is "things", stuff i is i + 1
            if not 1 <= c <= num_stuff:
                raise ValueError(f"segment {info['id']} has stuff label {c}; expected 1..{num_stuff} "
                                 "(PanopticFPN's semantic labels, 0 being 'things')")
            classes[sel] = c - 1
    return classes, ids


class PanopticStitcher:
    """Scene class map and instance ids from windows (see the module docstring)."""

    def __init__(self, height: int, width: int, *, num_stuff: int, num_things: int, match_iou: float = 0.5):
        self.classes = np.full((height, width), UNASSIGNED, np.uint8)
        self.ids = np.zeros((height, width), np.int32)
        self._written = np.zeros((height, width), bool)
        self.num_stuff, self.num_things = num_stuff, num_things
        self.match_iou = match_iou
        self.next_id = 1

    def add(self, panoptic_seg, x0: int, y0: int, core: Sequence[int] | None = None) -> None:
        """Paste one window whose top-left is scene pixel ``(x0, y0)``; ``core`` =
        ``(cx0, cy0, cx1, cy1)`` in window pixels is what it writes (default: all of it)."""
        classes, seg_ids = window_panoptic(panoptic_seg, num_stuff=self.num_stuff, num_things=self.num_things)
        h, w = classes.shape
        H, W = self.classes.shape
        if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:
            raise ValueError(f"a {h}x{w} window at ({x0}, {y0}) does not fit the {H}x{W} scene")
        cx0, cy0, cx1, cy1 = core if core is not None else (0, 0, w, h)
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        written, scene_ids = self._written[region], self.ids[region]
        scene_ids_new = np.zeros_like(seg_ids)
        for sid in np.unique(seg_ids[seg_ids > 0]):
            mask = seg_ids == sid
            cls = classes[mask][0]
            scene_id = self._match(mask, cls, written, scene_ids, self.classes[region])
            if scene_id is None:
                scene_id = self.next_id
                self.next_id += 1
            scene_ids_new[mask] = scene_id
        core_sel = (slice(cy0, cy1), slice(cx0, cx1))
        target = (slice(y0 + cy0, y0 + cy1), slice(x0 + cx0, x0 + cx1))
        self.classes[target] = classes[core_sel]
        self.ids[target] = scene_ids_new[core_sel]
        self._written[target] = True

    def _match(self, mask, cls, written, scene_ids, scene_classes) -> int | None:
        both = mask & written
        if not both.any():
            return None
        best, best_iou = None, self.match_iou
        for cand in np.unique(scene_ids[both & (scene_ids > 0)]):
            other = (scene_ids == cand) & written
            if scene_classes[other][0] != cls:
                continue
            inter = float((both & other).sum())
            union = float(((mask & written) | other).sum())
            if union and inter / union > best_iou:
                best, best_iou = int(cand), inter / union
        return best


def panoptic_polygons(ids: np.ndarray, classes: np.ndarray, transform, *, class_names: Sequence[str]) -> dict:
    """A GeoJSON FeatureCollection with one feature per instance id: its (Multi)Polygon in the
    coordinates of ``transform`` (the raster's CRS), ``instance_id``, ``class_id`` and ``class``."""
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape

    pieces: dict[int, list] = {}
    mask = ids > 0
    for geom, value in shapes(ids.astype(np.int32), mask=mask, transform=transform, connectivity=4):
        pieces.setdefault(int(value), []).append(shape(geom))
    feats = []
    for inst in sorted(pieces):
        cls_values = np.unique(classes[ids == inst])
        if len(cls_values) != 1:
            raise ValueError(f"instance {inst} has classes {cls_values.tolist()} in the class map; one expected")
        c = int(cls_values[0])
        geom = shapely.union_all(pieces[inst]) if len(pieces[inst]) > 1 else pieces[inst][0]
        feats.append({"type": "Feature", "geometry": mapping(geom),
                      "properties": {"instance_id": inst, "class_id": c,
                                     "class": class_names[c] if c < len(class_names) else str(c)}})
    return {"type": "FeatureCollection", "features": feats}
