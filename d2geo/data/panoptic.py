"""Panoptic segmentation datasets: stuff classes plus countable instances (fields, parcels).

A sample is an image (a GeoTIFF, a list of them for a time series, or ``{modality: path}``)
and its labels in one of two forms:

* (a) a **class raster** and an **instance-id raster** on the image's grid: every pixel's
  class value (stuff and thing classes alike, as PASTIS' semantic rasters hold them) and, for
  thing pixels, the id of the object (0 = no object);
* (b) a **stuff raster** on the image's grid plus **parcel polygons** (a vector file or a
  GeoJSON mapping, any CRS): each polygon is an object of the thing class in its ``class_key``
  property. The polygons are reprojected to the raster's CRS (pyproj) and rasterized onto its
  grid (``rasterio.features.rasterize``, pixel centres); they cover the stuff beneath.

:func:`register_geo_panoptic` turns them into detectron2 dataset dicts for ``PanopticFPN``:

* ``sem_seg_file_name``: the semantic-branch target, written as a GeoTIFF on the image grid,
  in **detectron2's ``separate_coco_semantic_from_panoptic`` convention**: every thing pixel
  is label 0 (one "things" class), stuff class ``i`` is label ``i + 1``, 255 is ignored. The
  semantic head therefore has ``len(stuff_classes) + 1`` classes, and the dataset metadata's
  ``stuff_classes`` is ``["things", *stuff_classes]`` as in detectron2's COCO panoptic
  registration;
* ``annotations``: one per object (instance id), ``category_id`` its thing class index,
  ``bbox`` (``XYXY_ABS``, pixel corners) and ``segmentation`` as COCO RLE (exact, no polygon
  approximation: the mapper needs ``instance_mask_format="bitmask"``), ``id`` the instance id;
* ``panoptic_file_name``: the panoptic ground truth for evaluation, a two-band int32 GeoTIFF
  (band 1: category, things ``0..K-1`` then stuff ``K..K+S-1``, -1 ignored; band 2: instance
  id, 0 for stuff), read by :class:`d2geo.model_zoo.evaluation.PanopticQualityEvaluator`.

The derived files are written on every load into ``cache_dir`` (default
``$D2GEO_DATASETS/panoptic/<name>``, ``./datasets`` when the variable is unset).

Refused with an error naming the problem and the fix: class values that are not in
``class_values`` (and not ``ignore_value``), an instance id covering pixels of two classes
(the id and both classes are named) or of a stuff class, thing pixels without an instance id
(unless ``unlabelled_things="ignore"``), a class or instance raster or image on another grid,
parcels of an unknown class, overlapping parcels.
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from .datasets import _geo_meta, _with_files
from .geotiff import IGNORE_LABEL, GeoTiffError, _grid_problems, _open_raster, _rasterio

logger = logging.getLogger(__name__)

__all__ = ["PanopticLabelError", "THINGS_SEM_LABEL", "panoptic_targets", "rasterize_parcels",
           "load_geo_panoptic", "register_geo_panoptic", "read_panoptic_gt"]

#: the label of every thing pixel in the semantic branch's target (detectron2's convention)
THINGS_SEM_LABEL = 0


class PanopticLabelError(GeoTiffError):
    """Panoptic labels that cannot be turned into targets as they are."""


def _class_table(stuff_classes, thing_classes, class_values):
    stuff, things = list(stuff_classes), list(thing_classes)
    if not things:
        raise ValueError("a panoptic dataset needs at least one thing class (thing_classes=[...])")
    both = sorted(set(stuff) & set(things))
    if both:
        raise ValueError(f"classes {both} are both stuff and things; each class is one or the other")
    names = stuff + things
    if class_values is None:  # raster value v = index into stuff_classes + thing_classes
        class_values = {i: n for i, n in enumerate(names)}
    unknown = sorted({str(n) for n in class_values.values()} - set(names))
    if unknown:
        raise ValueError(f"class_values names {unknown}, which are neither stuff_classes {stuff} "
                         f"nor thing_classes {things}")
    return stuff, things, {int(k): v for k, v in class_values.items()}


def panoptic_targets(classes: np.ndarray, instances: np.ndarray, *, stuff_classes: Sequence[str],
                     thing_classes: Sequence[str], class_values: Mapping[int, str] | None = None,
                     ignore_value: int = IGNORE_LABEL, unlabelled_things: str = "error",
                     where: str = "the sample") -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """Targets of one sample from its class raster and instance-id raster (same shape).

    Returns ``(sem_seg uint8, category int32, instance int32, segments)``: the semantic-branch
    target (things 0, stuff ``i + 1``, 255 ignored), the panoptic category (things
    ``0..K-1``, stuff ``K + i``, -1 ignored), the instance ids (0 off things) and one
    ``{"id", "category_id" (thing index), "mask"}`` per object, by increasing id.
    """
    if unlabelled_things not in ("error", "ignore"):
        raise ValueError(f"unlabelled_things must be 'error' or 'ignore', got {unlabelled_things!r}")
    stuff, things, values = _class_table(stuff_classes, thing_classes, class_values)
    classes = np.asarray(classes)
    instances = np.asarray(instances)
    if classes.shape != instances.shape:
        raise PanopticLabelError(f"{where}: the class raster is {classes.shape} but the instance raster "
                                 f"{instances.shape}; both must be on the image's grid")
    if instances.dtype.kind == "f":
        if np.any(~np.isfinite(instances)) or np.any(instances != np.round(instances)):
            raise PanopticLabelError(f"{where}: the instance raster holds fractional or NaN values; "
                                     "instance ids are integers (0 = no object)")
    instances = instances.astype(np.int64)
    if (instances < 0).any():
        raise PanopticLabelError(f"{where}: the instance raster holds negative ids "
                                 f"{np.unique(instances[instances < 0])[:5].tolist()}; ids are >= 0 "
                                 "(0 = no object)")
    k = len(things)
    # raster value -> panoptic category (-1 ignored)
    present = np.unique(classes)
    unknown = [int(v) for v in present if int(v) not in values and int(v) != ignore_value]
    if unknown:
        raise PanopticLabelError(
            f"{where}: class values {unknown[:8]} are not classes; known values are "
            f"{dict(sorted(values.items()))} and {ignore_value} (ignored). Name them in class_values "
            f"(e.g. {{{unknown[0]}: 'forest'}}) or set those pixels to {ignore_value}")
    category = np.full(classes.shape, -1, np.int32)
    for v in present:
        v = int(v)
        if v in values:
            name = values[v]
            category[classes == v] = things.index(name) if name in things else k + stuff.index(name)
    cat_name = lambda c: things[c] if c < k else stuff[c - k]  # noqa: E731
    labelled = (instances > 0) & (category >= 0)
    segments = []
    for inst in np.unique(instances[labelled]):
        mask = labelled & (instances == inst)
        cats = np.unique(category[mask])
        if len(cats) > 1:
            counts = {cat_name(int(c)): int((category[mask] == c).sum()) for c in cats}
            raise PanopticLabelError(
                f"{where}: instance id {int(inst)} is shared by classes {list(counts)} "
                f"({', '.join(f'{n}: {c} px' for n, c in counts.items())}); an object has one class. "
                "Give the parts different ids, or fix the class raster under the object")
        cat = int(cats[0])
        if cat >= k:
            raise PanopticLabelError(
                f"{where}: instance id {int(inst)} lies on the stuff class {cat_name(cat)!r}; only "
                f"thing classes {things} have objects. Set those pixels to 0 in the instance raster, "
                "or make the class a thing class")
        segments.append({"id": int(inst), "category_id": cat, "mask": mask})
    thing_px = (category >= 0) & (category < k)
    orphan = thing_px & (instances == 0)
    if orphan.any():
        if unlabelled_things == "error":
            names = sorted({cat_name(int(c)) for c in np.unique(category[orphan])})
            raise PanopticLabelError(
                f"{where}: {int(orphan.sum())} pixels of thing classes {names} have no instance id (0); "
                "every object needs an id. Give them ids, set them to the ignore value in the class "
                "raster, or pass unlabelled_things='ignore' to ignore them")
        category[orphan] = -1
    instance = np.where(thing_px & ~orphan, instances, 0).astype(np.int32)
    sem = np.full(classes.shape, IGNORE_LABEL, np.uint8)
    sem[thing_px & ~orphan] = THINGS_SEM_LABEL
    st = category >= k
    sem[st] = (category[st] - k + 1).astype(np.uint8)
    return sem, category, instance, segments


def _read_parcels(parcels) -> tuple[list, Any]:
    """(features as GeoJSON-like dicts, CRS or None) of a vector file, GeoDataFrame or GeoJSON mapping."""
    if isinstance(parcels, Mapping):
        crs = None
        name = (parcels.get("crs") or {}).get("properties", {}).get("name")
        if name:
            crs = name
        return list(parcels.get("features", [])), crs
    if hasattr(parcels, "to_crs") and hasattr(parcels, "geometry"):  # a GeoDataFrame
        gdf = parcels
    else:
        try:
            import geopandas as gpd
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(f"reading the parcel file {parcels} needs geopandas: pip install 'd2geo[region]' "
                              "(or pass the parcels as a GeoJSON mapping)") from None
        gdf = gpd.read_file(os.fspath(parcels))
    feats = [{"type": "Feature", "geometry": g.__geo_interface__ if g is not None else None,
              "properties": {k: row[k] for k in gdf.columns if k != gdf.geometry.name}}
             for g, (_, row) in zip(gdf.geometry, gdf.iterrows())]
    return feats, gdf.crs


def rasterize_parcels(parcels, *, crs, transform, shape: tuple[int, int], thing_classes: Sequence[str],
                      class_key: str = "class", id_key: str | None = None,
                      vector_crs=None, where: str = "the parcels") -> tuple[np.ndarray, np.ndarray]:
    """Parcel polygons as ``(thing class index or -1, instance id or 0)`` rasters on a grid.

    ``parcels``: a vector file (anything geopandas reads), a GeoDataFrame or a GeoJSON mapping;
    its CRS (or ``vector_crs``; GeoJSON without one is EPSG:4326) is reprojected to ``crs`` with
    pyproj. ``class_key``: the property holding the class (a name of ``thing_classes`` or its
    index); ``id_key``: the property holding the instance id (default: feature order, from 1).
    """
    from pyproj import CRS, Transformer
    from rasterio.features import rasterize
    try:
        import shapely
        from shapely.geometry import mapping, shape as to_shape
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError("parcel polygons need shapely: pip install 'd2geo[panoptic]'") from None

    feats, file_crs = _read_parcels(parcels)
    src_crs = CRS.from_user_input(vector_crs or file_crs or "EPSG:4326")
    dst_crs = CRS.from_user_input(crs)
    tf = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
    things = list(thing_classes)
    ids = np.zeros(shape, np.int32)
    cls = np.full(shape, -1, np.int32)
    count = np.zeros(shape, np.uint8)
    used = {}
    for n, f in enumerate(feats, 1):
        props = f.get("properties") or {}
        value = props.get(class_key)
        if isinstance(value, str) and value in things:
            c = things.index(value)
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and 0 <= int(value) < len(things):
            c = int(value)
        else:
            raise PanopticLabelError(
                f"{where}: feature #{n} has {class_key}={value!r}, not one of the thing classes {things} "
                f"(or their indices 0..{len(things) - 1}); fix the attribute or add the class to thing_classes")
        inst = int(props[id_key]) if id_key else n
        if inst <= 0 or inst in used:
            raise PanopticLabelError(f"{where}: feature #{n} has instance id {inst}, "
                                     + ("already used by feature #%d" % used[inst] if inst in used else "not > 0")
                                     + f"; give each parcel its own positive {id_key or 'id'}")
        used[inst] = n
        if f.get("geometry") is None:
            continue
        geom = shapely.transform(to_shape(f["geometry"]),
                                 lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))
        burn = rasterize([(mapping(geom), 1)], out_shape=shape, transform=transform, fill=0, dtype="uint8")
        sel = burn > 0
        count += burn
        ids[sel] = inst
        cls[sel] = c
    if (count > 1).any():
        overlap = count > 1
        raise PanopticLabelError(
            f"{where}: parcels overlap on {int(overlap.sum())} pixels (e.g. row {int(np.argwhere(overlap)[0][0])}, "
            f"col {int(np.argwhere(overlap)[0][1])}); a pixel belongs to one object: clip or dissolve "
            "the overlapping parcels")
    return cls, ids


def _read_raster(path, what: str, ref: dict, where: str):
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{where}: the {what} {path} does not exist")
    with _open_raster(path) as src:
        data = src.read(1)
        nodata = src.nodata
        problems = _grid_problems(src.crs, None if src.transform.is_identity else src.transform,
                                  (src.height, src.width), ref_crs=ref["crs"], ref_transform=ref["transform"],
                                  ref_shape=ref["shape"])
    if problems:
        raise PanopticLabelError(
            f"{where}: the {what} {path} is not on the grid of the image {ref['path']}: " + "; ".join(problems)
            + ". Labels must cover the image's pixels: reproject or resample them onto the image's grid "
            "(rasterio.warp.reproject with the image's crs/transform/shape and nearest resampling)")
    return data, nodata


def _write(path: str, bands: list[np.ndarray], dtype: str, nodata, ref: dict) -> None:
    rasterio = _rasterio()
    tmp = f"{path}.tmp-{os.getpid()}"
    h, w = bands[0].shape
    with rasterio.open(tmp, "w", driver="GTiff", width=w, height=h, count=len(bands), dtype=dtype,
                       crs=ref["crs"], transform=ref["transform"] or rasterio.Affine.identity(),
                       nodata=nodata) as dst:
        for i, b in enumerate(bands, 1):
            dst.write(b.astype(dtype), i)
    os.replace(tmp, path)


def _encode_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def load_geo_panoptic(samples: Iterable, *, stuff_classes: Sequence[str], thing_classes: Sequence[str],
                      cache_dir: str, class_values: Mapping[int, str] | None = None,
                      ignore_value: int = IGNORE_LABEL, unlabelled_things: str = "error",
                      class_key: str = "class", id_key: str | None = None, parcels_crs=None,
                      geo: dict | None = None) -> list[dict]:
    """Dataset dicts (see the module docstring) from samples given as dicts with ``image``
    and ``classes`` (class raster, form a) plus ``instances`` (instance-id raster) or
    ``parcels`` (polygons, form b; ``classes`` then holds stuff only), or as tuples
    ``(image, classes, instances)``. Writes the derived label files into ``cache_dir``."""
    os.makedirs(cache_dir, exist_ok=True)
    stuff, things, values = _class_table(stuff_classes, thing_classes, class_values)
    out = []
    for i, s in enumerate(samples):
        if not isinstance(s, Mapping):
            image, cls_path, inst_path = s
            s = {"image": image, "classes": cls_path, "instances": inst_path}
        if ("instances" in s) == ("parcels" in s):
            raise ValueError(f"sample {i}: give either 'instances' (an instance-id raster) or 'parcels' "
                             f"(polygons), not {'both' if 'instances' in s else 'neither'}")
        d = _with_files({"image_id": i}, s["image"])
        with _open_raster(d["file_name"]) as src:
            ref = {"crs": src.crs, "transform": None if src.transform.is_identity else src.transform,
                   "shape": (src.height, src.width), "path": d["file_name"]}
        d["height"], d["width"] = ref["shape"]
        where = f"sample {i} ({d['file_name']})"
        classes, nodata = _read_raster(s["classes"], "class raster", ref, where)
        classes = classes.astype(np.int64)
        if nodata is not None and np.isfinite(nodata) and int(nodata) != ignore_value:
            classes[classes == int(nodata)] = ignore_value
        if "instances" in s:
            instances, inst_nodata = _read_raster(s["instances"], "instance raster", ref, where)
            instances = instances.astype(np.int64)
            if inst_nodata is not None and np.isfinite(inst_nodata) and inst_nodata != 0:
                classes[instances == int(inst_nodata)] = ignore_value
                instances[instances == int(inst_nodata)] = 0
        else:
            stuff_values = {v for v, n in values.items() if n in stuff}
            bad = sorted({int(v) for v in np.unique(classes)} - stuff_values - {ignore_value})
            if bad:
                raise PanopticLabelError(
                    f"{where}: the stuff raster holds values {bad[:8]} that are not stuff classes "
                    f"({ {v: values[v] for v in sorted(stuff_values)} }, {ignore_value} ignored); with parcel "
                    "polygons the raster holds stuff only: map the values in class_values or set them "
                    f"to {ignore_value}")
            p_cls, instances = rasterize_parcels(
                s["parcels"], crs=ref["crs"], transform=ref["transform"] or _rasterio().Affine.identity(),
                shape=ref["shape"], thing_classes=things, class_key=class_key, id_key=id_key,
                vector_crs=parcels_crs, where=f"{where}, parcels")
            value_of = {n: v for v, n in values.items()}
            missing = [things[c] for c in np.unique(p_cls[p_cls >= 0]) if things[c] not in value_of]
            if missing:
                raise ValueError(f"thing classes {missing} have no raster value in class_values")
            for c in np.unique(p_cls[p_cls >= 0]):
                classes[p_cls == c] = value_of[things[c]]
        sem, category, instance, segments = panoptic_targets(
            classes, instances, stuff_classes=stuff, thing_classes=things, class_values=values,
            ignore_value=ignore_value, unlabelled_things=unlabelled_things, where=where)
        stem = os.path.join(cache_dir, f"{i:06d}")
        _write(stem + "_sem.tif", [sem], "uint8", IGNORE_LABEL, ref)
        _write(stem + "_panoptic.tif", [category, instance], "int32", None, ref)
        d["sem_seg_file_name"] = stem + "_sem.tif"
        d["panoptic_file_name"] = stem + "_panoptic.tif"
        annos = []
        for seg in segments:
            ys, xs = np.nonzero(seg["mask"])
            annos.append({"id": seg["id"], "category_id": seg["category_id"], "iscrowd": 0,
                          "bbox": [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)],
                          "bbox_mode": BoxMode.XYXY_ABS, "segmentation": _encode_rle(seg["mask"]),
                          "area": float(seg["mask"].sum())})
        d["annotations"] = annos
        d["geo"] = {**dict(geo or {}), "num_classes": len(stuff) + 1}
        out.append(d)
    return out


def read_panoptic_gt(path) -> tuple[np.ndarray, np.ndarray]:
    """``(category, instance)`` int32 arrays of a ``panoptic_file_name`` (see the module docstring)."""
    with _open_raster(os.fspath(path)) as src:
        if src.count != 2:
            raise PanopticLabelError(f"{path} has {src.count} bands; a panoptic ground-truth file has 2 "
                                     "(category, instance id) as load_geo_panoptic writes them")
        data = src.read()
    return data[0].astype(np.int32), data[1].astype(np.int32)


def register_geo_panoptic(name: str, samples: Callable[[], Iterable] | Sequence, *,
                          stuff_classes: Sequence[str], thing_classes: Sequence[str],
                          cache_dir: str | Callable[[], str] | None = None, geo: dict | None = None,
                          **options) -> None:
    """Register a panoptic dataset (see the module docstring and :func:`load_geo_panoptic`,
    whose keyword ``options`` are passed on: ``class_values``, ``ignore_value``,
    ``unlabelled_things``, ``class_key``, ``id_key``, ``parcels_crs``). ``samples`` may be a
    function returning them (evaluated lazily, like detectron2's loaders); ``cache_dir`` too."""
    _class_table(stuff_classes, thing_classes, options.get("class_values"))  # fail at registration
    if cache_dir is None:
        cache_dir = os.path.join(os.environ.get("D2GEO_DATASETS") or "datasets", "panoptic", name)
    geo = dict(geo or {})
    load = functools.partial(_load_registered, samples, dict(stuff_classes=list(stuff_classes),
                             thing_classes=list(thing_classes), cache_dir=cache_dir, geo=geo, **options))
    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        thing_classes=list(thing_classes), stuff_classes=["things", *stuff_classes],
        panoptic_stuff_classes=list(stuff_classes), ignore_label=IGNORE_LABEL,
        evaluator_type="panoptic_seg", **_geo_meta(geo))


def _load_registered(samples, kwargs: dict) -> list[dict]:
    if callable(kwargs["cache_dir"]):
        kwargs = {**kwargs, "cache_dir": kwargs["cache_dir"]()}
    return load_geo_panoptic(samples() if callable(samples) else samples, **kwargs)
