"""Synthetic large scenes for the scene quickstarts: COGs of several thousand pixels in two UTM
zones, assembled from the generator's tiles, with vector labels in EPSG:4326.

:func:`make_synthetic_scenes` renders each scene as a grid of :func:`~.generator.render_tile`
tiles (``tile`` px each, the generator's land cover, buildings, clouds and nodata wedges),
written window by window into an HLS-like int16 GeoTIFF (scale 0.0001, nodata -9999, band
descriptions, ``SENSOR=hls``) and converted to a COG. Scene ``i`` lies in ``zones[i]``. The
labels are written once for all scenes in EPSG:4326:

* ``semantic.gpkg``: the water / field / building areas of the label rasters vectorized
  with ``rasterio.features.shapes`` (column ``class``; background is what no polygon covers);
* ``buildings.geojson``: one polygon per building (its rotated rectangle; column ``class``).

:func:`ensure_synthetic_scenes` keeps one generated copy per parameters under
``$D2GEO_DATASETS/d2geo_synth_scenes/`` (written to a temporary folder, renamed when
complete). :func:`register_synthetic_scenes` registers ``<prefix>_<task>_{train,val}`` with
a spatial block split, lazily: nothing is generated before the first ``DatasetCatalog.get``.
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from .generator import GENERATOR_VERSION, HLS_BANDS, NODATA, SCALE, SEMSEG_CLASSES, THING_CLASSES, render_tile

logger = logging.getLogger(__name__)

__all__ = ["SCENE_PARAMS", "make_synthetic_scenes", "ensure_synthetic_scenes", "register_synthetic_scenes"]

#: the quickstarts' scenes: two 4096 px scenes (41 km at 10 m) in UTM 31N and 32N
SCENE_PARAMS = dict(size=4096, tile=128, seed=0, zones=["EPSG:32631", "EPSG:32632"])
_ORIGINS = {"EPSG:32631": (400_000.0, 5_000_000.0), "EPSG:32632": (560_000.0, 4_900_000.0)}
_MANIFEST = "manifest.json"
#: bumped when the files written for given parameters change (it keys the cache)
_FORMAT = 2


def _write_scene(path: str, *, size: int, tile: int, crs: str, origin, rng, when) -> tuple:
    """One scene of ``size`` px from ``tile`` px generator tiles; returns (labels, buildings in scene px)."""
    import rasterio
    from rasterio.shutil import copy as rio_copy
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    transform = from_origin(origin[0], origin[1], 10.0, 10.0)
    labels = np.zeros((size, size), np.uint8)
    buildings = []
    raw = path + ".raw.tif"
    profile = dict(driver="GTiff", width=size, height=size, count=len(HLS_BANDS), dtype="int16", crs=crs,
                   transform=transform, nodata=NODATA, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(raw, "w", **profile) as dst:
        for r in range(0, size, tile):
            for c in range(0, size, tile):
                h, w = min(tile, size - r), min(tile, size - c)
                stack, lab, blds = render_tile(rng, h, w, mixed_land_cover=True)
                refl = stack[0]
                data = np.where(np.isfinite(refl), np.round(refl / SCALE), NODATA).astype(np.int16)
                dst.write(data, window=Window(c, r, w, h))
                labels[r:r + h, c:c + w] = lab
                buildings += [b.corner_polygon() + (c, r) for b in blds]
        dst.scales = (SCALE,) * len(HLS_BANDS)
        dst.offsets = (0.0,) * len(HLS_BANDS)
        for i, name in enumerate(HLS_BANDS):
            dst.set_band_description(i + 1, name)
        dst.update_tags(SENSOR="hls", TIFFTAG_DATETIME=when.strftime("%Y:%m:%d %H:%M:%S"))
    with rasterio.open(raw) as src:
        # 128 px blocks: a 96-256 px training window decompresses 4-9 small blocks (512 px
        # blocks made a 96 px window read ~3x slower)
        rio_copy(src, path, driver="COG", compress="DEFLATE", predictor=2, blocksize=128)
    os.remove(raw)
    return labels, buildings, transform


def make_synthetic_scenes(root, *, size: int = 4096, tile: int = 128, seed: int = 0,
                          zones=("EPSG:32631", "EPSG:32632")) -> dict:
    """Write the scenes and labels under ``root`` (see the module docstring); returns
    ``{"scenes": [paths], "semantic": gpkg path, "instances": geojson path}``."""
    import geopandas as gpd
    import pandas as pd
    import shapely
    from rasterio import features

    rng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    scenes, sem, inst = [], [], []
    for i, crs in enumerate(zones):
        origin = _ORIGINS.get(crs, (500_000.0, 5_000_000.0))
        path = os.path.join(root, f"scene_{i}_{crs.split(':')[-1]}.tif")
        when = _dt.datetime(2020, 6, 1, 10, 30) + _dt.timedelta(days=20 * i)
        labels, buildings, transform = _write_scene(path, size=size, tile=tile, crs=crs, origin=origin, rng=rng,
                                                    when=when)
        scenes.append(path)
        shapes = [(shapely.geometry.shape(g), int(v)) for g, v in
                  features.shapes(labels, mask=(labels > 0) & (labels < 255), transform=transform, connectivity=4)]
        sem.append(gpd.GeoDataFrame({"class": [SEMSEG_CLASSES[v] for _, v in shapes]},
                                    geometry=[g for g, _ in shapes], crs=crs).to_crs("EPSG:4326"))
        polys = [shapely.Polygon([transform * tuple(p) for p in b]) for b in buildings]
        inst.append(gpd.GeoDataFrame({"class": [THING_CLASSES[0]] * len(polys)}, geometry=polys,
                                     crs=crs).to_crs("EPSG:4326"))
    out = {"scenes": scenes, "semantic": os.path.join(root, "semantic.gpkg"),
           "instances": os.path.join(root, "buildings.geojson")}
    gpd.GeoDataFrame(pd.concat(sem, ignore_index=True), crs="EPSG:4326").to_file(out["semantic"], engine="pyogrio")
    gpd.GeoDataFrame(pd.concat(inst, ignore_index=True), crs="EPSG:4326").to_file(
        out["instances"], driver="GeoJSON", engine="pyogrio")
    return out


def _root() -> str:
    return os.path.join(os.environ.get("D2GEO_DATASETS") or "datasets", "d2geo_synth_scenes")


def ensure_synthetic_scenes(**params) -> dict:
    """The scenes of ``params`` (keyword arguments of :func:`make_synthetic_scenes`), generated on first use."""
    params = json.loads(json.dumps({**SCENE_PARAMS, **params}))
    blob = json.dumps({"generator": GENERATOR_VERSION, "format": _FORMAT, **params}, sort_keys=True)
    digest = hashlib.sha256(blob.encode())
    final = os.path.join(_root(), f"scenes-{digest.hexdigest()[:10]}")
    manifest = os.path.join(final, _MANIFEST)
    if os.path.isfile(manifest):
        with open(manifest, encoding="utf-8") as f:
            rel = json.load(f)["files"]
        files = {k: ([os.path.join(final, p) for p in v] if isinstance(v, list) else os.path.join(final, v))
                 for k, v in rel.items()}
        if all(os.path.isfile(p) for v in files.values() for p in (v if isinstance(v, list) else [v])):
            return files
    os.makedirs(_root(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".scenes.tmp-", dir=_root())
    os.chmod(tmp, 0o755)
    try:
        logger.info("generating %d synthetic scenes of %d px in %s", len(params["zones"]), params["size"], final)
        start = time.perf_counter()
        files = make_synthetic_scenes(tmp, **params)
        rel = {k: ([os.path.relpath(p, tmp) for p in v] if isinstance(v, list) else os.path.relpath(v, tmp))
               for k, v in files.items()}
        with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump({"params": params, "files": rel}, f)
        if os.path.exists(final):
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            if not os.path.isfile(manifest):  # not another process that finished first
                raise
        logger.info("synthetic scenes written in %.1f s", time.perf_counter() - start)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return ensure_synthetic_scenes(**params)


_BUILT: dict = {}


def _build(prefix: str, task: str, params: dict, options: dict) -> dict:
    key = (prefix, task)
    if key not in _BUILT:
        from ..scenes import build_scene_datasets

        files = ensure_synthetic_scenes(**params)
        if task == "semantic":
            labels, classes, extra = files["semantic"], list(SEMSEG_CLASSES), dict(background="background")
        else:
            labels, classes, extra = files["instances"], list(THING_CLASSES), {}
        out_dir = os.path.dirname(files["semantic"])
        datasets, *_ = build_scene_datasets(f"{prefix}_{task}", files["scenes"], labels, task=task, classes=classes,
                                            class_key="class", output_dir=out_dir, geo={"sensor": "hls"},
                                            **{**extra, **options})
        _BUILT[key] = datasets
    return _BUILT[key]


def register_synthetic_scenes(prefix: str = "d2geo_scenes", task: str = "semantic", *, params: dict | None = None,
                              parts=("train", "val"), **options) -> list[str]:
    """Register ``<prefix>_<task>_<part>`` (lazily) over the synthetic scenes of ``params``;
    ``options`` go to :func:`~d2geo.data.scenes.build_scene_datasets` (``window``, ``count``,
    ``split``, ...). Registering the same names again is a no-op."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    params = {**SCENE_PARAMS, **(params or {})}
    names = [f"{prefix}_{task}_{p}" for p in parts]
    if all(n in DatasetCatalog.list() for n in names):
        return names
    meta = dict(ignore_label=255, evaluator_type="sem_seg" if task == "semantic" else "coco")
    meta["stuff_classes" if task == "semantic" else "thing_classes"] = list(
        SEMSEG_CLASSES if task == "semantic" else THING_CLASSES)
    for n in names:
        DatasetCatalog.register(n, functools.partial(lambda n: _build(prefix, task, params, options)[n], n))
        MetadataCatalog.get(n).set(**meta)
    return names
