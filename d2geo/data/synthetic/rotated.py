"""A synthetic oriented-object dataset: ship-like and vehicle-like objects at random angles.

Backgrounds are :func:`d2geo.data.synthetic.generator.render_tile`'s scenes (soil, water,
fields, bright-soil confusers, clouds, nodata wedges; no buildings). On them:

* **ships**: elongated (length 18-32 px, aspect 3:1 to 5:1), a bright hull with a darker
  superstructure stripe along the middle;
* **vehicles**: 2:1 (length 10-15 px), painted in one of three colours (bright, red, dark).

Angles are uniform over the half turn. Objects are drawn anti-aliased (4x supersampled), do
not overlap, and their boxes are exact: ``(cx, cy, w, h, angle)`` in pixel corner
coordinates, ``w`` the long side, angle in degrees counter-clockwise (detectron2's
``XYWHA_ABS``; see :mod:`d2geo.data.rotated`).

Layout (as the other synthetic sets)::

    root/<split>/images/tile_00000.2020245.tif    6-band HLS-like GeoTIFF
    root/<split>/labelTxt/tile_00000.txt          DOTA labels (corners, class, difficulty)
    root/<split>/instances.json                   COCO json with 5-value (XYWHA) bboxes

:func:`register_synthetic_rotated` registers ``<prefix>_rot_{train,val}`` (read through
:func:`d2geo.data.rotated.load_rotated_coco_json`, evaluated with ``RotatedCOCOEvaluator``),
generated on first use into ``$D2GEO_DATASETS/d2geo_synth/<prefix>_rot-<digest>``;
importing this module registers ``d2geo_synth_rot_{train,val}`` (the rotated quickstart's
data); importing :mod:`d2geo.data.synthetic` does not.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os

import cv2
import numpy as np

from ..rotated import rotated_box_corners
from .generator import GENERATOR_VERSION, HLS_BANDS, render_tile, write_geotiff

logger = logging.getLogger(__name__)

__all__ = ["ROTATED_CLASSES", "ROTATED_PREFIX", "ROTATED_PARAMS", "render_rotated_tile", "make_rotated_dataset",
           "register_synthetic_rotated", "write_rotated_scene"]

ROTATED_CLASSES = ("ship", "vehicle")
ROTATED_PREFIX = "d2geo_synth"
ROTATED_PARAMS = dict(num_train=160, num_val=40, size=96, seed=0)
#: bumped when the objects drawn for given parameters change (keys the cache)
ROTATED_VERSION = 1
_SS = 4  # supersampling of the object masks

_HULL = np.array([0.30, 0.31, 0.32, 0.33, 0.28, 0.22])
_DECK = np.array([0.10, 0.10, 0.11, 0.12, 0.11, 0.09])
_PAINTS = (np.array([0.28, 0.28, 0.29, 0.31, 0.30, 0.26]),   # bright
           np.array([0.06, 0.06, 0.22, 0.25, 0.27, 0.22]),   # red
           np.array([0.03, 0.03, 0.035, 0.04, 0.04, 0.035]))  # dark


def _coverage(box, h: int, w: int) -> np.ndarray:
    """Anti-aliased coverage (0..1, ``(h, w)``) of an XYWHA box in corner coordinates."""
    pts = rotated_box_corners(np.asarray(box)[None])[0] * _SS - 0.5
    big = np.zeros((h * _SS, w * _SS), np.uint8)
    cv2.fillPoly(big, [np.round(pts * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
    return big.reshape(h, _SS, w, _SS).mean(axis=(1, 3)).astype(np.float32)


def _random_objects(rng, h: int, w: int, n: int):
    out, taken = [], np.zeros((h, w), bool)
    for _ in range(n * 6):
        if len(out) == n:
            break
        cls = int(rng.random() < 0.45)  # 0 ship, 1 vehicle
        if cls == 0:
            length = rng.uniform(18, 32)
            width = length / rng.uniform(3.0, 5.0)
        else:
            length = rng.uniform(10, 15)
            width = length / 2.0
        margin = length / 2 + 1
        cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
        box = np.array([cx, cy, length, width, rng.uniform(-90.0, 90.0)])
        cover = _coverage(box, h, w) > 0
        if (cover & taken).any():
            continue
        taken |= cv2.dilate(cover.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        out.append((cls, box))
    return out


def render_rotated_tile(rng: np.random.Generator, size: int, *, max_objects: int = 7, day_of_year: int = 200):
    """One tile: ``(reflectance (6, H, W) float32, NaN = nodata; objects: list of (class, box))``
    with boxes as described in the module docstring. Objects under nodata are not kept."""
    stack, labels, _ = render_tile(rng, size, size, buildings=[], day_of_year=(day_of_year,), cloud_prob=0.2,
                                   nodata_prob=0.1, confuser_prob=0.5, mixed_land_cover=True)
    img = stack[0]
    objects = []
    for cls, box in _random_objects(rng, size, size, int(rng.integers(1, max_objects + 1))):
        alpha = _coverage(box, size, size)
        if (labels[alpha > 0] == 255).any():
            continue
        if cls == 0:
            # the superstructure: a stripe along the middle, 1/3 of the width, 3/5 of the length
            inner = _coverage(np.array([box[0], box[1], box[2] * 0.6, box[3] / 3, box[4]]), size, size)
            spectrum = _HULL * rng.uniform(0.85, 1.15, size=6)
            colour = spectrum[:, None, None] * (1 - inner) + _DECK[:, None, None] * inner
        else:
            colour = (_PAINTS[int(rng.integers(len(_PAINTS)))] * rng.uniform(0.85, 1.15, size=6))[:, None, None]
        colour = colour + rng.normal(0, 0.01, size=(6, size, size))
        img = img * (1 - alpha) + colour.astype(np.float32) * alpha
        objects.append((cls, box))
    return np.clip(img, 0, 1, where=np.isfinite(img), out=img).astype(np.float32), objects


def write_rotated_scene(path, *, size: int = 384, seed: int = 1000, max_objects: int = 40,
                        crs: str = "EPSG:32610", gsd: float = 10.0, origin=(500_000.0, 4_200_000.0),
                        day_of_year: int = 200, truth_geojson=None) -> list:
    """One synthetic scene of ``size`` x ``size`` px (larger than the quickstart's tiles, so that a
    prediction runs over several windows) with up to ``max_objects`` ships and vehicles, written as
    the quickstart's GeoTIFFs are (``crs``, ``gsd`` m pixels, top-left corner at ``origin``);
    returns its objects as ``(class, (cx, cy, w, h, angle))`` in scene pixels, and with
    ``truth_geojson`` writes them there as polygons in ``crs`` (``category_id``, ``class``). The
    seed (default 1000) is not one of the quickstart's tiles."""
    from rasterio.transform import from_origin

    img, objects = render_rotated_tile(np.random.default_rng(seed), size, max_objects=max_objects,
                                       day_of_year=day_of_year)
    when = _dt.datetime(2020, 1, 1, 18, 30) + _dt.timedelta(days=day_of_year - 1)
    transform = from_origin(origin[0], origin[1], gsd, gsd)
    write_geotiff(os.fspath(path), img, transform=transform, crs=crs, when=when)
    if truth_geojson is not None:
        feats = []
        for cls, box in objects:
            ring = [list(transform * (float(x), float(y))) for x, y in rotated_box_corners(box[None])[0]]
            feats.append({"type": "Feature", "properties": {"category_id": int(cls), "class": ROTATED_CLASSES[cls]},
                          "geometry": {"type": "Polygon", "coordinates": [ring + [ring[0]]]}})
        with open(truth_geojson, "w", encoding="utf-8") as f:
            json.dump({"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": crs}},
                       "features": feats}, f)
    return objects


def _dota_lines(objects) -> list[str]:
    lines = []
    for cls, box in objects:
        corners = rotated_box_corners(box[None])[0]
        lines.append(" ".join(f"{v:.2f}" for v in corners.reshape(-1)) + f" {ROTATED_CLASSES[cls]} 0")
    return lines


def make_rotated_dataset(root, *, num_train: int = 160, num_val: int = 40, size: int = 96, seed: int = 0,
                         crs: str = "EPSG:32610", gsd: float = 10.0, year: int = 2020) -> dict:
    """Write the train/val tiles under ``root`` (layout in the module docstring); returns
    ``{split: [image paths]}``."""
    from rasterio.transform import from_origin

    if size < 32:
        raise ValueError(f"tiles must be at least 32 px (got size={size})")
    rng = np.random.default_rng(seed)
    splits, idx = {}, 0
    for split, count in (("train", num_train), ("val", num_val)):
        base = os.path.join(root, split)
        for sub in ("images", "labelTxt"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        images, anns, files = [], [], []
        for _ in range(count):
            name = f"tile_{idx:05d}"
            col, row = idx % 50, idx // 50
            transform = from_origin(500_000 + col * size * gsd, 4_200_000 - row * size * gsd, gsd, gsd)
            doy = int(rng.integers(1, 300))
            img, objects = render_rotated_tile(rng, size, day_of_year=doy)
            fname = f"{name}.{year}{doy:03d}.tif"
            when = _dt.datetime(year, 1, 1, 18, 30) + _dt.timedelta(days=doy - 1)
            write_geotiff(os.path.join(base, "images", fname), img, transform=transform, crs=crs, when=when)
            with open(os.path.join(base, "labelTxt", f"{name}.txt"), "w", encoding="utf-8") as f:
                f.write("\n".join(["imagesource:d2geo-synthetic", f"gsd:{gsd}"] + _dota_lines(objects)) + "\n")
            images.append({"id": idx, "file_name": fname, "height": size, "width": size})
            for cls, box in objects:
                anns.append({"id": len(anns) + 1, "image_id": idx, "category_id": cls + 1, "iscrowd": 0,
                             "bbox": [round(float(v), 3) for v in box], "area": float(box[2] * box[3])})
            files.append(os.path.join(base, "images", fname))
            idx += 1
        coco = {"images": images, "annotations": anns,
                "categories": [{"id": i + 1, "name": n} for i, n in enumerate(ROTATED_CLASSES)]}
        with open(os.path.join(base, "instances.json"), "w", encoding="utf-8") as f:
            json.dump(coco, f)
        splits[split] = files
    logger.info("wrote %d synthetic oriented-object tiles under %s", idx, root)
    return splits


# -- registration ---------------------------------------------------------------------------------
_SPECS: dict[str, dict] = {}


def _dataset_dir(prefix: str, params: dict) -> str:
    from .cache import synthetic_cache_root

    key = json.dumps({"generator": GENERATOR_VERSION, "rotated": ROTATED_VERSION, **params}, sort_keys=True)
    return os.path.join(synthetic_cache_root(), f"{prefix}_rot-{hashlib.sha256(key.encode()).hexdigest()[:10]}")


def ensure_rotated_dataset(prefix: str = ROTATED_PREFIX) -> str:
    """The folder of the dataset registered under ``prefix``, generated now if needed (in a
    temporary folder renamed into place when complete, as the other synthetic sets)."""
    from .cache import write_dataset_once

    params = _SPECS[prefix]
    final = _dataset_dir(prefix, params)

    def make(tmp):
        make_rotated_dataset(tmp, **params)
        return {"params": params, "version": ROTATED_VERSION}

    write_dataset_once(final, make)
    return final


def _load(prefix: str, split: str, name: str) -> list[dict]:
    from ..rotated import load_rotated_coco_json

    root = ensure_rotated_dataset(prefix)
    dicts = load_rotated_coco_json(os.path.join(root, split, "instances.json"), os.path.join(root, split, "images"),
                                   dataset_name=name)
    for d in dicts:
        d["dota_file_name"] = os.path.join(root, split, "labelTxt", os.path.basename(d["file_name"]).split(".")[0] + ".txt")
    return dicts


def register_synthetic_rotated(prefix: str = ROTATED_PREFIX, **params) -> list[str]:
    """Register ``<prefix>_rot_{train,val}`` (classes :data:`ROTATED_CLASSES`, XYWHA boxes,
    ``evaluator_type="rotated_coco"``); ``params`` are :func:`make_rotated_dataset`'s
    (``num_train``, ``num_val``, ``size``, ``seed``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    unknown = sorted(set(params) - set(ROTATED_PARAMS))
    if unknown:
        raise TypeError(f"unknown rotated dataset parameters {unknown}; choose from {sorted(ROTATED_PARAMS)}")
    spec = {**ROTATED_PARAMS, **params}
    names = [f"{prefix}_rot_{s}" for s in ("train", "val")]
    if prefix in _SPECS:
        if _SPECS[prefix] != spec:
            raise ValueError(f"rotated dataset prefix {prefix!r} is registered with other parameters "
                             f"({_SPECS[prefix]}); pick another prefix")
        return names
    _SPECS[prefix] = spec
    for split, name in zip(("train", "val"), names):
        DatasetCatalog.register(name, functools.partial(_load, prefix, split, name))
        MetadataCatalog.get(name).set(thing_classes=list(ROTATED_CLASSES), evaluator_type="rotated_coco",
                                      thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(ROTATED_CLASSES))},
                                      bands=tuple(HLS_BANDS), sensor="hls", num_frames=1)
    return names


register_synthetic_rotated(ROTATED_PREFIX, **ROTATED_PARAMS)
