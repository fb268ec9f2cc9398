"""A synthetic bi-temporal change-detection dataset (two dates per tile, a change label).

Each tile is rendered by :func:`d2geo.data.synthetic.generator.render_tile` at two dates, then
buildings and fields change between them:

* buildings are split at random into kept, **demolished** (on the first date only) and
  **new** (on the second date only). Where a building is absent, the pixels come from a
  render of the same scene without it (same seed: identical water, fields, soil, noise and
  clouds), so a change is exactly the building's footprint;
* a field parcel may be **cleared** (second date: bare soil, the tile's own median
  background spectrum of that date) and a new parcel may be **planted** on background
  (second date: the tile's median field spectrum, or the generic one when it has no field),
  both with the renderer's pixel noise.

Labels are ``0`` no change, ``1`` change, ``255`` no data. Scenes use plain land cover
(``mixed_land_cover=False``) so that the with- and without-building renders share every
random draw.

Layout (as :func:`~d2geo.data.synthetic.generator.make_synthetic_dataset` writes a two-date
series)::

    root/<split>/images/tile_00000.2020123.tif, tile_00000.2020183.tif
    root/<split>/masks/tile_00000_mask.tif        change labels

:func:`register_synthetic_change` registers ``<prefix>_change_{train,val}`` (generated on
first use into ``$D2GEO_DATASETS/d2geo_synth/<prefix>-<digest>``); importing this module
registers ``d2geo_synth_change_{train,val}`` (the change quickstart's data); importing
:mod:`d2geo.data.synthetic` does not.
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

from .generator import (
    GENERATOR_VERSION,
    HLS_BANDS,
    SIGNATURES,
    SyntheticGeoDataset,
    _write_mask,
    render_tile,
    write_geotiff,
)

logger = logging.getLogger(__name__)

__all__ = ["CHANGE_CLASSES", "CHANGE_PREFIX", "CHANGE_PARAMS", "render_change_pair", "make_change_dataset",
           "register_synthetic_change"]

CHANGE_CLASSES = ("no_change", "change")
CHANGE_PREFIX = "d2geo_synth"
CHANGE_PARAMS = dict(num_train=96, num_val=32, size=64, seed=0)
_NOISE = 0.012


def _footprint(b, h, w) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.fillPoly(m, [np.round(b.polygon()).astype(np.int32)], 1)
    return m.astype(bool)


def render_change_pair(rng: np.random.Generator, size: int, *, day_of_year=(150, 240),
                       p_demolish: float = 0.25, p_new: float = 0.25, p_clear_field: float = 0.3,
                       p_plant_field: float = 0.3, cloud_prob: float = 0.2, nodata_prob: float = 0.1):
    """Two dates of one tile and their change label.

    Returns ``(reflectance (2, 6, H, W) float32 with NaN for no data, change (H, W) uint8 with
    255 = no data, info)`` where ``info`` counts the demolished / new buildings and the
    cleared / planted fields.
    """
    h = w = size
    seed = int(rng.integers(2**31))
    opts = dict(num_frames=2, day_of_year=tuple(day_of_year), cloud_prob=cloud_prob, nodata_prob=nodata_prob,
                mixed_land_cover=False)
    _, _, buildings = render_tile(np.random.default_rng(seed), h, w, **opts)
    fate = rng.choice(3, size=len(buildings), p=[1 - p_demolish - p_new, p_demolish, p_new])
    kept = [b for b, f in zip(buildings, fate) if f == 0]
    full, labels, _ = render_tile(np.random.default_rng(seed), h, w, buildings=buildings, **opts)
    bare, _, _ = render_tile(np.random.default_rng(seed), h, w, buildings=kept, **opts)
    change = np.zeros((h, w), bool)
    kept_mask = np.zeros((h, w), bool)
    for b in kept:
        kept_mask |= _footprint(b, h, w)
    for b, f in zip(buildings, fate):
        if f == 0:
            continue
        m = _footprint(b, h, w) & ~kept_mask
        date = 1 if f == 1 else 0  # demolished: absent on date 2; new: absent on date 1
        full[date][:, m] = bare[date][:, m]
        change |= m
    info = {"demolished": int((fate == 1).sum()), "new": int((fate == 2).sum()), "cleared": 0, "planted": 0}

    second = full[1]
    valid = labels != 255

    def median_of(sel):
        px = second[:, sel & valid]
        px = px[:, np.isfinite(px).all(0)]
        return None if px.shape[1] == 0 else np.median(px, axis=1)

    fields = (labels == 2).astype(np.uint8)
    n, comp = cv2.connectedComponents(fields)
    if n > 1 and rng.random() < p_clear_field:
        soil = median_of(labels == 0)
        if soil is not None:
            parcel = comp == int(rng.integers(1, n))
            second[:, parcel] = soil[:, None] + rng.normal(0, _NOISE, size=(6, int(parcel.sum())))
            change |= parcel
            info["cleared"] = 1
    if rng.random() < p_plant_field:
        crop = median_of(labels == 2)
        crop = SIGNATURES["field"] if crop is None else crop
        fh, fw = int(rng.integers(h // 6, h // 3)), int(rng.integers(w // 6, w // 3))
        y0, x0 = int(rng.integers(0, h - fh)), int(rng.integers(0, w - fw))
        parcel = np.zeros((h, w), bool)
        parcel[y0:y0 + fh, x0:x0 + fw] = True
        parcel &= (labels == 0) & ~change
        if parcel.any():
            second[:, parcel] = crop[:, None] + rng.normal(0, _NOISE, size=(6, int(parcel.sum())))
            change |= parcel
            info["planted"] = 1
    full = np.clip(full, 0.0, 1.0, where=np.isfinite(full), out=full)
    out = change.astype(np.uint8)
    out[~valid] = 255
    return full.astype(np.float32), out, info


def make_change_dataset(root, *, num_train: int = 96, num_val: int = 32, size: int = 64, seed: int = 0,
                        crs: str = "EPSG:32610", gsd: float = 10.0, year: int = 2020) -> SyntheticGeoDataset:
    """Write train/val two-date tiles with change labels under ``root`` (see the module docstring)."""
    from rasterio.transform import from_origin

    if size < 32:
        raise ValueError(f"tiles must be at least 32 px (got size={size})")
    rng = np.random.default_rng(seed)
    out = SyntheticGeoDataset(root=os.fspath(root), num_frames=2, semseg_classes=CHANGE_CLASSES, thing_classes=())
    idx = 0
    for split, count in (("train", num_train), ("val", num_val)):
        base = os.path.join(root, split)
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        files = []
        for _ in range(count):
            name = f"tile_{idx:05d}"
            col, row = idx % 50, idx // 50
            transform = from_origin(500_000 + col * size * gsd, 4_200_000 - row * size * gsd, gsd, gsd)
            first = int(rng.integers(60, 200))
            doys = (first, first + int(rng.integers(60, 150)))
            stack, change, _ = render_change_pair(rng, size, day_of_year=doys)
            paths = []
            for t, doy in enumerate(doys):
                when = _dt.datetime(year, 1, 1, 18, 30) + _dt.timedelta(days=doy - 1)
                path = os.path.join(base, "images", f"{name}.{year}{doy:03d}.tif")
                write_geotiff(path, stack[t], transform=transform, crs=crs, when=when)
                paths.append(path)
            _write_mask(os.path.join(base, "masks", f"{name}_mask.tif"), change, transform=transform, crs=crs)
            files.append(paths)
            idx += 1
        out.splits[split] = files
    logger.info("wrote %d synthetic change tiles under %s", idx, root)
    return out


# -- registration ---------------------------------------------------------------------------------
_SPECS: dict[str, dict] = {}


def _dataset_dir(prefix: str, params: dict) -> str:
    from .cache import synthetic_cache_root

    key = json.dumps({"generator": GENERATOR_VERSION, "change": 1, **params}, sort_keys=True)
    return os.path.join(synthetic_cache_root(), f"{prefix}_change-{hashlib.sha256(key.encode()).hexdigest()[:10]}")


def _ensure(prefix: str) -> SyntheticGeoDataset:
    from .cache import write_dataset_once

    params = _SPECS[prefix]
    final = _dataset_dir(prefix, params)

    def make(tmp):
        ds = make_change_dataset(tmp, **params)
        rel = {s: [[os.path.relpath(p, tmp) for p in f] for f in files] for s, files in ds.splits.items()}
        return {"params": params, "splits": rel}

    rel = write_dataset_once(final, make)["splits"]
    splits = {s: [[os.path.join(final, p) for p in f] for f in files] for s, files in rel.items()}
    return SyntheticGeoDataset(root=final, splits=splits, num_frames=2, semseg_classes=CHANGE_CLASSES,
                               thing_classes=())


def _load(prefix: str, split: str) -> list[dict]:
    from ..datasets import load_geo_semseg

    ds = _ensure(prefix)
    return load_geo_semseg([(f, ds.mask_file(split, f)) for f in ds.splits[split]])


def register_synthetic_change(prefix: str = CHANGE_PREFIX, **params) -> list[str]:
    """Register ``<prefix>_change_{train,val}`` (semantic segmentation, classes
    :data:`CHANGE_CLASSES`, two dates per sample); ``params`` are
    :func:`make_change_dataset`'s (``num_train``, ``num_val``, ``size``, ``seed``)."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from ..datasets import load_sem_seg_gt
    from ..geotiff import IGNORE_LABEL

    unknown = sorted(set(params) - set(CHANGE_PARAMS))
    if unknown:
        raise TypeError(f"unknown change dataset parameters {unknown}; choose from {sorted(CHANGE_PARAMS)}")
    spec = {**CHANGE_PARAMS, **params}
    names = [f"{prefix}_change_{s}" for s in ("train", "val")]
    if prefix in _SPECS:
        if _SPECS[prefix] != spec:
            raise ValueError(f"change dataset prefix {prefix!r} is registered with other parameters "
                             f"({_SPECS[prefix]}); pick another prefix")
        return names
    _SPECS[prefix] = spec
    for split, name in zip(("train", "val"), names):
        DatasetCatalog.register(name, functools.partial(_load, prefix, split))
        MetadataCatalog.get(name).set(stuff_classes=list(CHANGE_CLASSES), evaluator_type="sem_seg",
                                      sem_seg_loading_fn=load_sem_seg_gt, bands=tuple(HLS_BANDS), sensor="hls",
                                      ignore_label=IGNORE_LABEL, num_frames=2)
    return names


register_synthetic_change(CHANGE_PREFIX, **CHANGE_PARAMS)
