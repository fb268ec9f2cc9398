"""Synthetic panoptic tiles: crop fields (each field an object, its crop its class) over stuff.

The backgrounds are the synthetic generator's (its spectra, smooth blobs, texture, noise and
haze, HLS-like 6-band int16 GeoTIFFs in UTM): grassland everywhere, with forest, water and
urban blobs (the stuff classes). Fields are rotated rectangles of one of three crops, each
crop with its own spectrum and phenology, kept two pixels apart so that neighbouring fields
are separate objects. Layout under the dataset folder::

    <split>/images/tile_00000.2020245.tif      (one file per date when num_frames > 1)
    <split>/classes/tile_00000_classes.tif     uint8: stuff i -> i, crop j -> 4 + j, 255 = no data
    <split>/instances/tile_00000_ids.tif       uint16 field ids (0 = no field), unique per tile

:func:`register_synthetic_panoptic` registers ``<prefix>_train`` / ``<prefix>_val`` with
:func:`d2geo.data.panoptic.register_geo_panoptic`, i.e. through the same path as a user's
class and instance-id rasters. The files are generated on first use into
``$D2GEO_DATASETS/d2geo_synth/<prefix>-<digest>/`` (like the other synthetic sets) and reused.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os

import cv2
import numpy as np

from ..panoptic import register_geo_panoptic
from .cache import synthetic_cache_root, write_dataset_once
from .generator import HLS_BANDS, LAND_COVER, SIGNATURES, _smooth_field, write_geotiff

logger = logging.getLogger(__name__)

__all__ = ["PANOPTIC_STUFF_CLASSES", "PANOPTIC_THING_CLASSES", "render_panoptic_tile",
           "make_synthetic_panoptic", "register_synthetic_panoptic", "PANOPTIC_PARAMS"]

PANOPTIC_GENERATOR_VERSION = 1
PANOPTIC_STUFF_CLASSES = ("grassland", "forest", "water", "urban")
PANOPTIC_THING_CLASSES = ("wheat", "maize", "rapeseed")
#: the quickstart's dataset (``d2geo_synth_pan_{train,val}``)
PANOPTIC_PARAMS = dict(num_train=160, num_val=40, size=96, num_frames=1, seed=0)

_REGISTERED: dict[str, dict] = {}  # prefix -> parameters
_CROPS = {  # spectrum at peak season, and the day of year of the peak
    "wheat": (np.array([0.05, 0.09, 0.075, 0.30, 0.29, 0.19]), 140),
    "maize": (SIGNATURES["field"], 220),
    "rapeseed": (np.array([0.07, 0.13, 0.11, 0.35, 0.22, 0.12]), 120),
}


def _blob(rng, h, w, frac, free):
    field = _smooth_field(rng, h, w, cells=int(rng.integers(2, 5)))
    return (field > np.quantile(field, 1 - frac)) & free


def render_panoptic_tile(rng: np.random.Generator, size: int, *, num_frames: int = 1, doys=(180,),
                         max_fields: int = 5, noise: float = 0.012):
    """``(reflectance (T, 6, H, W), classes (H, W) uint8, ids (H, W) uint16)`` of one tile."""
    h = w = size
    classes = np.zeros((h, w), np.uint8)  # grassland
    free = np.ones((h, w), bool)
    for value, prob, frac in ((1, 0.6, (0.1, 0.3)), (2, 0.5, (0.05, 0.2)), (3, 0.5, (0.05, 0.2))):
        if rng.random() < prob:
            sel = _blob(rng, h, w, rng.uniform(*frac), free)
            classes[sel] = value
            free &= ~sel
    ids = np.zeros((h, w), np.uint16)
    occupied = np.zeros((h, w), np.uint8)
    crop_of = {}
    for _ in range(max_fields * 4):
        if len(crop_of) == int(rng.integers(2, max_fields + 1)):
            break
        fw, fh = rng.uniform(size * 0.15, size * 0.4, size=2)
        cx, cy = rng.uniform(fw / 2, w - fw / 2), rng.uniform(fh / 2, h - fh / 2)
        pts = cv2.boxPoints(((cx, cy), (fw, fh), float(rng.uniform(-20, 20))))
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(pts).astype(np.int32)], 1)
        if not m.any() or (m & occupied).any():
            continue
        occupied |= cv2.dilate(m, np.ones((5, 5), np.uint8))  # 2 px apart
        fid = len(crop_of) + 1
        ids[m > 0] = fid
        crop_of[fid] = int(rng.integers(len(PANOPTIC_THING_CLASSES)))
        classes[m > 0] = len(PANOPTIC_STUFF_CLASSES) + crop_of[fid]
    spectra = {
        0: LAND_COVER["grass"], 1: LAND_COVER["natural_vegetation"], 2: SIGNATURES["water"],
        3: 0.5 * SIGNATURES["building"] + 0.3 * LAND_COVER["tile_roof"] + 0.2 * LAND_COVER["dark_roof"],
    }
    jitter = {v: s * rng.uniform(0.9, 1.1, size=6) for v, s in spectra.items()}
    texture = 1.0 + 0.08 * _smooth_field(rng, h, w, cells=8)
    rough = 1.0 + 0.25 * _smooth_field(rng, h, w, cells=max(8, h // 4))  # forest canopy, city blocks
    texture = np.where(np.isin(classes, (1, 3)), texture * rough, texture)
    texture = np.where(classes == 2, 1.0, texture).astype(np.float32)
    frames = []
    for t in range(num_frames):
        img = np.empty((6, h, w), np.float32)
        for v, s in jitter.items():
            img[:, classes == v] = s[:, None]
        for fid, c in crop_of.items():
            spec, peak = _CROPS[PANOPTIC_THING_CLASSES[c]]
            green = 0.5 + 0.5 * np.cos(2 * np.pi * (doys[t] - peak) / 365.0)
            s = spec * rng.uniform(0.92, 1.08, size=6)
            s = s * np.array([1.0, 1.0, 1.3 - 0.3 * green, 0.7 + 0.3 * green, 1.0, 1.0])
            img[:, ids == fid] = s[:, None]
        img *= texture[None] * rng.uniform(0.9, 1.1)
        img += (rng.uniform(0.0, 0.04) * np.array([1.0, 0.7, 0.45, 0.2, 0.05, 0.0]))[:, None, None].astype(np.float32)
        img += rng.normal(0, noise, size=img.shape).astype(np.float32)
        frames.append(np.clip(img, 0.0, 1.0))
    return np.stack(frames), classes, ids


def _write_raster(path, data, *, transform, crs, dtype, nodata):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
                       dtype=dtype, crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(data.astype(dtype)[None])


def make_synthetic_panoptic(root, *, num_train: int = 160, num_val: int = 40, size: int = 96,
                            num_frames: int = 1, seed: int = 0, crs: str = "EPSG:32610",
                            gsd: float = 10.0, year: int = 2020) -> dict:
    """Write the tiles under ``root`` (layout in the module docstring); returns
    ``{split: [(image or dates, classes, ids), ...]}`` with paths relative to ``root``."""
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    out, idx = {}, 0
    for split, count in (("train", num_train), ("val", num_val)):
        for sub in ("images", "classes", "instances"):
            os.makedirs(os.path.join(root, split, sub), exist_ok=True)
        rows = []
        for _ in range(count):
            name = f"tile_{idx:05d}"
            transform = from_origin(600_000 + (idx % 50) * size * gsd, 4_100_000 - (idx // 50) * size * gsd, gsd, gsd)
            first = int(rng.integers(60, 240))
            doys = [min(first + 45 * t, 365) for t in range(num_frames)]
            stack, classes, ids = render_panoptic_tile(rng, size, num_frames=num_frames, doys=doys)
            images = []
            for t, doy in enumerate(doys):
                rel = os.path.join(split, "images", f"{name}.{year}{doy:03d}.tif")
                when = _dt.datetime(year, 1, 1, 18, 30) + _dt.timedelta(days=doy - 1)
                write_geotiff(os.path.join(root, rel), stack[t], transform=transform, crs=crs, when=when)
                images.append(rel)
            cls_rel = os.path.join(split, "classes", f"{name}_classes.tif")
            ids_rel = os.path.join(split, "instances", f"{name}_ids.tif")
            _write_raster(os.path.join(root, cls_rel), classes, transform=transform, crs=crs, dtype="uint8", nodata=255)
            _write_raster(os.path.join(root, ids_rel), ids, transform=transform, crs=crs, dtype="uint16", nodata=None)
            rows.append([images if num_frames > 1 else images[0], cls_rel, ids_rel])
            idx += 1
        out[split] = rows
    return out


def _ensure(prefix: str, params: dict) -> tuple[str, dict]:
    blob = json.dumps({"generator": PANOPTIC_GENERATOR_VERSION, **params}, sort_keys=True)
    final = os.path.join(synthetic_cache_root(), f"{prefix}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}")

    def make(tmp):
        logger.info("generating the synthetic panoptic dataset %r in %s", prefix, final)
        splits = make_synthetic_panoptic(tmp, **params)
        return {"generator": PANOPTIC_GENERATOR_VERSION, "params": params, "splits": splits}

    return final, write_dataset_once(final, make)["splits"]


def _samples(prefix: str, params: dict, split: str) -> list:
    root, splits = _ensure(prefix, params)
    join = lambda p: [os.path.join(root, q) for q in p] if isinstance(p, list) else os.path.join(root, p)  # noqa: E731
    return [tuple(join(p) for p in row) for row in splits[split]]


def _derived_dir(prefix: str, params: dict, split: str) -> str:
    return os.path.join(_ensure(prefix, params)[0], "derived", split)


def register_synthetic_panoptic(prefix: str = "d2geo_synth_pan", **params) -> list[str]:
    """Register ``<prefix>_train`` / ``<prefix>_val`` (keyword ``params`` of
    :func:`make_synthetic_panoptic`; unset ones take the quickstart's). Generated on first use."""
    import functools

    from detectron2.data import DatasetCatalog

    spec = {**PANOPTIC_PARAMS, **params}
    names = [f"{prefix}_{s}" for s in ("train", "val")]
    if prefix in _REGISTERED:
        if _REGISTERED[prefix] != spec:
            raise ValueError(f"synthetic panoptic prefix {prefix!r} is already registered with other parameters "
                             f"({_REGISTERED[prefix]}); pick another prefix")
        return names
    taken = [n for n in names if n in DatasetCatalog.list()]
    if taken:
        raise ValueError(f"datasets {taken} are already registered by someone else; pick another prefix")
    _REGISTERED[prefix] = spec
    for split, name in zip(("train", "val"), names):
        register_geo_panoptic(
            name, functools.partial(_samples, prefix, spec, split),
            stuff_classes=PANOPTIC_STUFF_CLASSES, thing_classes=PANOPTIC_THING_CLASSES,
            cache_dir=functools.partial(_derived_dir, prefix, spec, split),
            geo={"band_names": list(HLS_BANDS), "sensor": "hls"})
    return names
