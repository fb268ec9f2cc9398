"""Panoptic outputs over scenes: windows' ``panoptic_seg`` stitched into a class map plus an
instance-id raster (ids unique across the scene, and across the scenes of a region), and the
objects (parcels) as polygons.

* :func:`window_panoptic`: a ``PanopticFPN`` output ``(segment ids, segments_info)`` as a class
  map (stuff ``i`` -> ``i``, thing ``j`` -> ``len(stuff) + j``, the order of
  :func:`d2geo.data.panoptic.register_geo_panoptic`'s default ``class_values``, so outputs can
  be read back as labels; :data:`UNASSIGNED` where the model assigned nothing) and per-window
  segment ids of the things;
* :class:`PanopticStitcher`: windows pasted into scene arrays. A window writes its ``core``
  (the part it owns, e.g. without half of each overlap); a thing segment of a window that
  overlaps (IoU > ``match_iou`` over the pixels both predicted) an object already written by an
  earlier window of the same class takes that object's id, so an object cut by a window seam
  keeps one id; every other segment gets a new id (from ``id_base + 1``);
* :func:`panoptic_polygons`: the instance-id raster as one (Multi)Polygon per id, in the raster's
  CRS coordinates, with its class: rasterizing them back on the grid (pixel centres) gives the
  ids again;
* :class:`PanopticScene`: the hook of :func:`~d2geo.inference.loop.run_scene`. Windows come
  row-major (column strips one after the other); each writes from half the overlap past its
  top and left edges to its bottom and right edges, so every pixel is decided by a window that
  sees at least half the overlap of context on each side. At the end the pixels the scene does
  not own (a region's ``owner``) become :data:`UNASSIGNED` / id 0, and it writes the class map
  COG (``class_map``), the uint32 instance-id COG (``instance_ids``, 0 = stuff or nothing) and
  the parcels (``parcels_geojson``, ``parcels_geoparquet``: ``instance_id``, ``class_id``,
  ``class``, ``score``, ``area_m2`` and the caller's properties, in the scene CRS or ``to_crs``).

The stitcher holds the whole scene (6 bytes a pixel: class, id, written) and the polygons are
made from the whole id raster (5 bytes a pixel more while they are made), so a 100 km x 100 km
scene at 10 m (10,000 x 10,000 px) takes about 1.1 GB.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

__all__ = ["UNASSIGNED", "window_panoptic", "PanopticStitcher", "panoptic_polygons", "PanopticSpec", "PanopticScene",
           "panoptic_spec", "panoptic_class_counts", "instance_id_block", "PANOPTIC_TARGETS",
           "check_panoptic_request"]

#: class-map value of pixels without a prediction (and of pixels no window covered)
UNASSIGNED = 255
#: what :class:`PanopticScene` writes besides the class map (keys of run_scene's targets)
PANOPTIC_TARGETS = ("instance_ids", "parcels_geojson", "parcels_geoparquet")


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
    """Scene class map and instance ids from windows (see the module docstring). Ids start at
    ``id_base + 1`` and stay below ``id_base + id_block`` (more objects are an error)."""

    def __init__(self, height: int, width: int, *, num_stuff: int, num_things: int, match_iou: float = 0.5,
                 id_base: int = 0, id_block: int = 1 << 31, where: str = "the scene"):
        self.classes = np.full((height, width), UNASSIGNED, np.uint8)
        self.ids = np.zeros((height, width), np.uint32)
        self._written = np.zeros((height, width), bool)
        self.num_stuff, self.num_things = num_stuff, num_things
        self.match_iou = match_iou
        self.id_base, self.id_block, self.where = int(id_base), int(id_block), where
        if self.id_base < 0 or self.id_block < 2 or self.id_base + self.id_block > 1 << 32:
            raise ValueError(f"instance ids {self.id_base}+[1, {self.id_block}) do not fit uint32")
        self.next_id = self.id_base + 1
        self.scores: dict[int, float] = {}  # id -> best score of its segments

    def add(self, panoptic_seg, x0: int, y0: int, core: Sequence[int] | None = None,
            valid: np.ndarray | None = None) -> None:
        """Paste one window whose top-left is scene pixel ``(x0, y0)``; ``core`` =
        ``(cx0, cy0, cx1, cy1)`` in window pixels is what it writes (default: all of it);
        pixels where ``valid`` (window-shaped) is False are written as unassigned."""
        classes, seg_ids = window_panoptic(panoptic_seg, num_stuff=self.num_stuff, num_things=self.num_things)
        seg_scores = {int(i["id"]): float(i.get("score", 1.0)) for i in panoptic_seg[1] if i.get("isthing")}
        if valid is not None:
            valid = np.asarray(valid, bool)
            classes[~valid] = UNASSIGNED
            seg_ids[~valid] = 0
        h, w = classes.shape
        H, W = self.classes.shape
        if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:
            raise ValueError(f"a {h}x{w} window at ({x0}, {y0}) does not fit the {H}x{W} scene")
        cx0, cy0, cx1, cy1 = core if core is not None else (0, 0, w, h)
        region = (slice(y0, y0 + h), slice(x0, x0 + w))
        written, scene_ids = self._written[region], self.ids[region]
        scene_ids_new = np.zeros(seg_ids.shape, np.uint32)
        taken: set[int] = set()  # one scene object takes one segment of a window
        for sid in np.unique(seg_ids[seg_ids > 0]):
            mask = seg_ids == sid
            cls = classes[mask][0]
            scene_id = self._match(mask, cls, written, scene_ids, self.classes[region], taken, classes)
            if scene_id is None:
                scene_id = self._new_id()
            taken.add(scene_id)
            score = seg_scores.get(int(sid), 1.0)
            self.scores[scene_id] = max(score, self.scores.get(scene_id, score))
            scene_ids_new[mask] = scene_id
        core_sel = (slice(cy0, cy1), slice(cx0, cx1))
        target = (slice(y0 + cy0, y0 + cy1), slice(x0 + cx0, x0 + cx1))
        self.classes[target] = classes[core_sel]
        self.ids[target] = scene_ids_new[core_sel]
        self._written[target] = True

    def _new_id(self) -> int:
        if self.next_id >= self.id_base + self.id_block:
            raise ValueError(f"{self.where} has more than {self.id_block - 1} objects, the instance ids it is given "
                             f"({self.id_base + 1}..{self.id_base + self.id_block - 1}); predict fewer scenes in one "
                             f"run (each scene of a region gets 2^32 / scenes ids)")
        self.next_id += 1
        return self.next_id - 1

    def _match(self, mask, cls, written, scene_ids, scene_classes, taken=(), win_classes=None) -> int | None:
        """The scene object this window's segment ``mask`` continues: same class, IoU >
        ``match_iou`` over the pixels both this window and the scene predicted (assigned)."""
        both = written & (scene_classes != UNASSIGNED)
        if win_classes is not None:
            both &= win_classes != UNASSIGNED
        m = mask & both
        if not m.any():
            return None
        best, best_iou = None, self.match_iou
        for cand in np.unique(scene_ids[m & (scene_ids > 0)]):
            if int(cand) in taken:
                continue
            other = (scene_ids == cand) & both
            if scene_classes[other][0] != cls:
                continue
            inter = float((m & other).sum())
            union = float((m | other).sum())
            if union and inter / union > best_iou:
                best, best_iou = int(cand), inter / union
        return best


def panoptic_polygons(ids: np.ndarray, classes: np.ndarray, transform, *, class_names: Sequence[str],
                      scores: dict | None = None) -> dict:
    """A GeoJSON FeatureCollection with one feature per instance id: its (Multi)Polygon in the
    coordinates of ``transform`` (the raster's CRS), ``instance_id``, ``class_id``, ``class``,
    ``pixels`` and ``score`` (from ``scores``, when given)."""
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import mapping, shape

    on = ids > 0
    if not on.any():
        return {"type": "FeatureCollection", "features": []}
    # rasterio polygonizes int32: ids shifted to start at 1 (4 bytes a pixel, no sort of the raster)
    lo, hi = int(ids[on].min()), int(ids[on].max())
    if hi - lo >= (1 << 31) - 1:
        raise ValueError(f"instance ids span {lo}..{hi}: more than 2^31 apart, which int32 polygonizing cannot hold")
    offset = lo - 1
    dense = np.asarray(ids, np.int64 if ids.dtype.itemsize > 4 else np.uint32) - offset
    dense[~on] = 0
    dense = dense.astype(np.int32)
    # each id's class, checked to be one: the distinct (id, class) pairs
    pairs = np.unique(dense[on].astype(np.int64) * 256 + classes[on])
    pair_ids, pair_cls = pairs // 256, pairs % 256
    dups = np.flatnonzero(np.diff(pair_ids) == 0)
    if len(dups):
        dup = pair_ids[dups[0]]
        raise ValueError(f"instance {int(dup) + offset} has classes {pair_cls[pair_ids == dup].tolist()} in the "
                         f"class map; one expected")
    cls_of = dict(zip(pair_ids.tolist(), pair_cls.tolist()))
    counts = np.bincount(dense.ravel())
    pieces: dict[int, list] = {}
    for geom, value in shapes(dense, mask=on, transform=transform, connectivity=4):
        pieces.setdefault(int(value), []).append(shape(geom))
    feats = []
    for d in sorted(pieces):
        inst, c = d + offset, int(cls_of[d])
        geom = shapely.union_all(pieces[d]) if len(pieces[d]) > 1 else pieces[d][0]
        props = {"instance_id": inst, "class_id": c, "class": class_names[c] if c < len(class_names) else str(c),
                 "pixels": int(counts[d])}
        if scores is not None:
            props["score"] = round(float(scores.get(inst, float("nan"))), 6)
        feats.append({"type": "Feature", "geometry": mapping(geom), "properties": props})
    return {"type": "FeatureCollection", "features": feats}


@dataclass(frozen=True)
class PanopticSpec:
    """What a panoptic run needs besides the options: the class names (stuff, then things) and
    the scene's instance ids ``id_base + 1 .. id_base + id_block - 1``."""

    num_stuff: int
    num_things: int
    class_names: tuple
    id_base: int = 0
    id_block: int = 1 << 31

    def for_scene(self, index: int, n_scenes: int) -> "PanopticSpec":
        """The spec of scene ``index`` of ``n_scenes``: its own block of ids."""
        block = instance_id_block(n_scenes)
        return replace(self, id_base=index * block, id_block=block)


def instance_id_block(n_scenes: int) -> int:
    """Ids per scene when ``n_scenes`` share uint32: the largest power of two with
    ``n_scenes * block <= 2^32``, at most 2^31."""
    n = max(int(n_scenes), 1)
    block = 1 << 31
    while block * n > 1 << 32:
        block >>= 1
    return block


def panoptic_class_counts(model) -> tuple[int, int] | None:
    """``(stuff classes, thing classes)`` of a PanopticFPN-style model (its semantic head counts
    "things" as one class more), or None when the model does not say."""
    m = getattr(model, "module", model)
    sem, roi = getattr(m, "sem_seg_head", None), getattr(m, "roi_heads", None)
    k_sem = getattr(getattr(sem, "predictor", None), "out_channels", None) or getattr(sem, "num_classes", None)
    k_things = getattr(roi, "num_classes", None)
    if not k_sem or not k_things:
        return None
    return int(k_sem) - 1, int(k_things)


def panoptic_spec(model, class_names=None, object_names=None, error=ValueError) -> PanopticSpec:
    """The :class:`PanopticSpec` of ``model``: class names from ``class_names`` (stuff then
    things; or the semantic head's, ``["things", *stuff]``, with the things in ``object_names``),
    else ``stuff i`` / ``thing j``."""
    counts = panoptic_class_counts(model)
    if counts is None:
        raise error(f"{type(getattr(model, 'module', model)).__name__} is not a panoptic model (PanopticFPN: a "
                    f"semantic head and ROI heads): it cannot give the instance-id raster or parcels")
    ns, nt = counts
    names = list(class_names) if class_names is not None else None
    if names is not None and len(names) == ns + 1 and object_names is not None and len(object_names) == nt:
        names = names[1:] + list(object_names)  # the semantic head's names: "things" first
    if names is None:
        names = [f"stuff {i}" for i in range(ns)] + [f"thing {j}" for j in range(nt)]
    if len(names) != ns + nt:
        raise error(f"the panoptic model has {ns} stuff and {nt} thing classes, but {len(names)} class names were "
                    f"given ({names}): give the stuff names, then the thing names ({ns + nt} in all)")
    if ns + nt >= UNASSIGNED:
        raise error(f"{ns} stuff + {nt} thing classes do not fit a uint8 class map")
    return PanopticSpec(ns, nt, tuple(names))


def check_panoptic_request(model, opts, scene_paths, *, semseg_path=None, regions_path=None, instance_ids_path=None,
                           parcels_path=None, parcels_parquet_path=None) -> PanopticSpec | None:
    """Whether :func:`~d2geo.inference.predict_scene` runs panoptic (``opts.panoptic``, by
    default when the model predicts ``panoptic_seg`` and a class map, instance ids or parcels
    are asked) and its spec; the panoptic outputs' paths checked. Raises
    :class:`~d2geo.inference.request.SceneRequestError` naming the fix."""
    from .request import SceneRequestError, _check_output_path, model_outputs

    asked = {"instance-id raster (instance_ids_path, --out-instance-ids)": instance_ids_path,
             "parcels (parcels_path, --out-parcels)": parcels_path,
             "parcels GeoParquet (parcels_parquet_path, --out-parcels *.parquet)": parcels_parquet_path}
    asked = {k: v for k, v in asked.items() if v is not None}
    outputs = model_outputs(model)
    can = outputs is not None and "panoptic_seg" in outputs
    panoptic = opts.panoptic if opts.panoptic is not None else can and bool(asked or semseg_path)
    if asked and not panoptic:
        what = ", ".join(asked)
        if opts.panoptic is False:
            raise SceneRequestError(f"panoptic=False, but the {what} come from panoptic outputs: drop them or the "
                                    f"panoptic=False")
        have = sorted(outputs) if outputs is not None else "outputs it cannot tell before running"
        raise SceneRequestError(f"the {what} come from a panoptic model (panoptic_seg), but "
                                f"{type(getattr(model, 'module', model)).__name__} predicts {have}: use a panoptic "
                                f"model (GeoPanopticFPN, configs/*/panoptic_fpn_*.py), or --out-semseg / --out-geojson")
    if not panoptic:
        return None
    if not can:
        raise SceneRequestError(f"panoptic=True, but {type(getattr(model, 'module', model)).__name__} does not "
                                f"predict panoptic_seg: use a panoptic model (GeoPanopticFPN)")
    if regions_path is not None:
        raise SceneRequestError("class-map regions (regions_path) polygonize a semantic class map; a panoptic run "
                                "writes its objects as parcels: give parcels_path (--out-parcels) instead")
    for what, path in asked.items():
        exts = ((".tif", ".tiff") if "raster" in what else (".parquet",) if "Parquet" in what
                else (".geojson", ".json"))
        _check_output_path(path, what.split(" (")[0], exts, scene_paths)
    given = [os.path.abspath(p) for p in [semseg_path, *asked.values()] if p is not None]
    if len(set(given)) < len(given):
        raise SceneRequestError("two panoptic outputs (class map, instance ids, parcels) would go to the same file: "
                                "give each its own file name")
    return panoptic_spec(model, opts.class_names, opts.object_names, SceneRequestError)


class PanopticScene:
    """One scene's panoptic outputs, fed window by window by :func:`~d2geo.inference.loop.run_scene`
    (see the module docstring)."""

    def __init__(self, spec: PanopticSpec, height: int, width: int, overlap: int, where: str = "the scene"):
        self.spec, self.half = spec, overlap // 2
        self.st = PanopticStitcher(height, width, num_stuff=spec.num_stuff, num_things=spec.num_things,
                                   id_base=spec.id_base, id_block=spec.id_block, where=where)

    def add(self, panoptic_seg, row: int, col: int, valid) -> None:
        seg = panoptic_seg[0]
        h, w = int(seg.shape[-2]), int(seg.shape[-1])
        core = (self.half if col > 0 else 0, self.half if row > 0 else 0, w, h)
        self.st.add(panoptic_seg, col, row, core=core, valid=valid)

    def finish(self, stack, targets: dict, scene, opts, *, scratch_dir: str, owner=None, properties=None,
               raster_tags=None) -> int:
        """Write the targets (entered into ``stack``: renamed into place when it closes, the
        class map last if the caller entered it first); returns the number of objects."""
        from d2geo.data.files import atomic_path

        from .outputs import open_class_map, to_cog, write_category_names, write_geojson, write_geoparquet

        st, H, W = self.st, *self.st.ids.shape
        if owner is not None:
            for r in range(0, H, 1024):
                n = min(1024, H - r)
                off = ~np.asarray(owner(r, 0, n, W), bool)
                st.classes[r:r + n][off] = UNASSIGNED
                st.ids[r:r + n][off] = 0
        tags = dict(raster_tags or {})
        tags.update(d2geo_instance_id_base=str(self.spec.id_base), d2geo_instance_id_block=str(self.spec.id_block))
        names = list(self.spec.class_names)
        if "class_map" in targets:
            raw = _scratch(stack, scratch_dir, scene.id + ".pan")
            with open_class_map(raw, scene, names, blocksize=opts.cog_blocksize, tags=tags) as dst:
                dst.write(st.classes[None])
            to_cog(raw, stack.enter_context(atomic_path(targets["class_map"])), "nearest", opts.cog_blocksize)
            write_category_names(stack.enter_context(atomic_path(targets["class_map"] + ".aux.xml")), names)
        if "instance_ids" in targets:
            raw = _scratch(stack, scratch_dir, scene.id + ".ids")
            _write_ids(raw, st.ids, scene, opts.cog_blocksize, tags)
            to_cog(raw, stack.enter_context(atomic_path(targets["instance_ids"])), "nearest", opts.cog_blocksize)
        fc = panoptic_polygons(st.ids, st.classes, scene.transform, class_names=names, scores=st.scores)
        if "parcels_geojson" in targets or "parcels_geoparquet" in targets:
            _finish_features(fc, scene, opts.to_crs, properties)
            if "parcels_geojson" in targets:
                write_geojson(fc, stack.enter_context(atomic_path(targets["parcels_geojson"])))
            if "parcels_geoparquet" in targets:
                write_geoparquet(fc, stack.enter_context(atomic_path(targets["parcels_geoparquet"])),
                                 opts.to_crs or scene.crs,
                                 empty_columns=("instance_id", "class_id", "class", "pixels", "score", "scene"))
        return len(fc["features"])


def _scratch(stack, directory: str, name: str) -> str:
    from .outputs import scratch_path

    return scratch_path(stack, directory, name)


def _write_ids(path: str, ids: np.ndarray, scene, blocksize: int, tags: dict) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=scene.width, height=scene.height, count=1, dtype="uint32",
                       crs=scene.crs, transform=scene.transform, tiled=True, blockxsize=blocksize,
                       blockysize=blocksize, compress="deflate", bigtiff="if_safer") as dst:
        dst.write(ids[None])
        dst.set_band_description(1, "instance id")
        dst.update_tags(1, meaning="instance id; 0 = stuff or no prediction (the class map says which)")
        dst.update_tags(**tags)


def _finish_features(fc: dict, scene, to_crs, properties) -> None:
    """Area in m^2 (pixels x the scene's GSD^2), the caller's properties, and the CRS."""
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    gsd = float(getattr(scene, "gsd", 0.0) or 0.0)
    for f in fc["features"]:
        if gsd > 0:
            f["properties"]["area_m2"] = round(f["properties"]["pixels"] * gsd * gsd, 3)
        f["properties"].update(properties or {})
        if to_crs is not None and scene.crs is not None:
            f["geometry"] = transform_geom(scene.crs, to_crs, f["geometry"])
    target = to_crs if to_crs is not None else scene.crs
    if target is not None:
        fc["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
