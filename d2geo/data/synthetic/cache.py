"""The built-in synthetic datasets: GeoTIFFs written by d2geo's generator, registered for detectron2.

Importing this module registers four datasets in detectron2's ``DatasetCatalog`` and
``MetadataCatalog``, all backed by one generated dataset
(:func:`d2geo.data.synthetic_geotiff.make_synthetic_dataset`: HLS-like 6-band int16
GeoTIFFs with a UTM CRS, 10 m pixels, acquisition times and band descriptions):

* ``d2geo_synth_det_train`` / ``d2geo_synth_det_val``: the buildings as instances (COCO
  json, pixel polygons), evaluated with ``COCOEvaluator``;
* ``d2geo_synth_seg_train`` / ``d2geo_synth_seg_val``: background / water / field /
  building label GeoTIFFs (255 = no data), evaluated with ``SemSegEvaluator`` through the
  datasets' ``sem_seg_loading_fn``.

Nothing is generated at import. The first ``DatasetCatalog.get`` of one of the names
writes the files into the cache directory::

    $D2GEO_DATASETS/d2geo_synth/<prefix>-<digest>/    (D2GEO_DATASETS defaults to ./datasets)

where ``digest`` identifies the generation parameters and the generator version. The
tiles are written to a temporary folder next to it that is renamed into place only when
complete, so an interrupted run never leaves a partial dataset; a complete one is reused
as it is (deterministic by seed, so every machine gets the same tiles), an incomplete one
(files deleted by hand) is generated again.

The dataset dicts point at the files (``file_name``, ``sem_seg_file_name``, pixel
``annotations``) and carry no read options: :class:`d2geo.data.mapper.GeoDatasetMapper`
takes the band names from the band descriptions, the wavelengths from the ``SENSOR``
tag, the time from ``TIFFTAG_DATETIME`` and the location and GSD from the CRS, as for
any user's GeoTIFFs.

:func:`register_synthetic` registers further variants (other sizes, counts, seeds,
multi-temporal tiles) under another prefix.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from .datasets import load_geo_coco_json, load_geo_semseg, load_sem_seg_gt
from .geotiff import IGNORE_LABEL, read_geotiff
from .synthetic_geotiff import (
    GENERATOR_VERSION,
    HLS_BANDS,
    SEMSEG_CLASSES,
    THING_CLASSES,
    SyntheticGeoDataset,
    make_synthetic_dataset,
)

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTH_BANDS", "SYNTH_THING_CLASSES", "SYNTH_STUFF_CLASSES", "BUILTIN_PREFIX", "BUILTIN_PARAMS",
    "register_synthetic", "synthetic_cache_root", "synthetic_dataset_dir", "ensure_synthetic_dataset",
    "synthetic_pixel_stats",
]

#: the bands of the synthetic tiles (named as in d2geo's ``hls`` sensor table)
SYNTH_BANDS = HLS_BANDS
SYNTH_THING_CLASSES = THING_CLASSES
SYNTH_STUFF_CLASSES = SEMSEG_CLASSES

#: the quickstart datasets: ``d2geo_synth_{det,seg}_{train,val}``
BUILTIN_PREFIX = "d2geo_synth"
BUILTIN_PARAMS = dict(num_train=192, num_val=48, size=96, num_frames=1, seed=0)

_MANIFEST = "manifest.json"
_STALE_TMP_SECONDS = 3600.0
# prefix -> generation parameters (keyword arguments of make_synthetic_dataset)
_SPECS: dict[str, dict[str, Any]] = {}


# -- the cache --------------------------------------------------------------------------------
def synthetic_cache_root() -> str:
    """``$D2GEO_DATASETS/d2geo_synth`` (``./datasets/d2geo_synth`` when the variable is unset),
    read at every call so that the variable may be set after import."""
    return os.path.join(os.environ.get("D2GEO_DATASETS") or "datasets", "d2geo_synth")


def _digest(params: dict) -> str:
    blob = json.dumps({"generator": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _spec(prefix: str) -> dict:
    if prefix not in _SPECS:
        raise KeyError(f"no synthetic dataset is registered under the prefix {prefix!r} "
                       f"(registered: {sorted(_SPECS)}); call register_synthetic({prefix!r}, ...) first")
    return _SPECS[prefix]


def synthetic_dataset_dir(prefix: str = BUILTIN_PREFIX) -> str:
    """Where the dataset registered under ``prefix`` is (or will be) generated."""
    return os.path.join(synthetic_cache_root(), f"{prefix}-{_digest(_spec(prefix))}")


def _read_manifest(path: str, params: dict) -> SyntheticGeoDataset | None:
    """The dataset in ``path`` if it is complete and was generated with ``params``, else None."""
    try:
        with open(os.path.join(path, _MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("generator") != GENERATOR_VERSION or manifest.get("params") != params:
        return None
    splits = {}
    for split, files in manifest["splits"].items():
        splits[split] = [[os.path.join(path, p) for p in f] if isinstance(f, list) else os.path.join(path, f)
                         for f in files]
    ds = SyntheticGeoDataset(root=path, splits=splits, num_frames=params.get("num_frames", 1))
    wanted = [os.path.join(path, p) for p in manifest["files"]]
    missing = [p for p in wanted if not os.path.isfile(p)]
    if missing:
        logger.warning("synthetic dataset %s is incomplete (%d of %d files missing, e.g. %s): generating it again",
                       path, len(missing), len(wanted), missing[0])
        return None
    return ds


def _remove_stale_tmp_dirs(parent: str, name: str) -> None:
    """Temporary folders of generations that were killed (not merely interrupted) long ago."""
    now = time.time()
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.tmp-"):
            path = os.path.join(parent, entry)
            try:
                if now - os.path.getmtime(path) > _STALE_TMP_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def ensure_synthetic_dataset(prefix: str = BUILTIN_PREFIX) -> SyntheticGeoDataset:
    """The generated dataset of ``prefix``: from the cache, or written now (see the module docstring)."""
    params = _spec(prefix)
    final = synthetic_dataset_dir(prefix)
    ds = _read_manifest(final, params)
    if ds is not None:
        return ds
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(final):  # incomplete or of other parameters: move it aside, then delete it
        aside = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        os.rename(final, os.path.join(aside, "old"))
        shutil.rmtree(aside, ignore_errors=True)
    _remove_stale_tmp_dirs(parent, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; the dataset is not
    try:
        logger.info("generating the synthetic dataset %r (%d train + %d val tiles of %d px) in %s",
                    prefix, params["num_train"], params["num_val"], params["size"], final)
        start = time.perf_counter()
        generated = make_synthetic_dataset(tmp, **params)
        rel = {split: [[os.path.relpath(p, tmp) for p in f] if isinstance(f, list) else os.path.relpath(f, tmp)
                       for f in files] for split, files in generated.splits.items()}
        files = sorted(os.path.relpath(os.path.join(d, f), tmp)
                       for d, _, names in os.walk(tmp) for f in names)
        manifest = {"generator": GENERATOR_VERSION, "params": params, "splits": rel, "files": files}
        with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f)
        try:
            os.rename(tmp, final)
        except OSError:
            # another process (e.g. a second training process) finished the same dataset first
            if _read_manifest(final, params) is None:
                raise
        logger.info("synthetic dataset %r written in %.1f s", prefix, time.perf_counter() - start)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    ds = _read_manifest(final, params)
    if ds is None:  # pragma: no cover - only if the files vanish right after the rename
        raise RuntimeError(f"the synthetic dataset in {final} disappeared while it was being opened")
    return ds


# -- detectron2 registration ----------------------------------------------------------------------
def _load_det(prefix: str, split: str, name: str) -> list[dict]:
    ds = ensure_synthetic_dataset(prefix)
    return load_geo_coco_json(ds.coco_json(split), os.path.join(ds.split_dir(split), "images"), name)


def _load_seg(prefix: str, split: str) -> list[dict]:
    ds = ensure_synthetic_dataset(prefix)
    return load_geo_semseg([(f, ds.mask_file(split, f)) for f in ds.splits[split]])


def register_synthetic(prefix: str = BUILTIN_PREFIX, **params) -> list[str]:
    """Register ``<prefix>_{det,seg}_{train,val}`` over one generated dataset; returns the names.

    ``params`` are keyword arguments of
    :func:`~d2geo.data.synthetic_geotiff.make_synthetic_dataset` (``num_train``,
    ``num_val``, ``size``, ``num_frames``, ``seed``, ...); unset ones take the
    quickstart's values. Registering a prefix again with the same parameters is a
    no-op, with other parameters an error.
    """
    import inspect

    allowed = set(inspect.signature(make_synthetic_dataset).parameters) - {"root"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise TypeError(f"unknown synthetic dataset parameters {unknown}; choose from {sorted(allowed)}")
    spec = {**BUILTIN_PARAMS, **params}
    spec = json.loads(json.dumps(spec))  # the form it has in a manifest (tuples become lists)
    names = [f"{prefix}_{task}_{split}" for task in ("det", "seg") for split in ("train", "val")]
    if prefix in _SPECS:
        if _SPECS[prefix] != spec:
            raise ValueError(f"synthetic prefix {prefix!r} is already registered with other parameters "
                             f"({_SPECS[prefix]}); pick another prefix")
        return names
    taken = [n for n in names if n in DatasetCatalog.list()]
    if taken:
        raise ValueError(f"datasets {taken} are already registered by someone else; pick another prefix")
    if spec.get("size", 64) < 32:
        raise ValueError(f"tiles must be at least 32 px (got size={spec['size']})")
    _SPECS[prefix] = spec
    common = dict(bands=tuple(HLS_BANDS), sensor="hls", ignore_label=IGNORE_LABEL,
                  num_frames=spec.get("num_frames", 1))
    for split in ("train", "val"):
        det = f"{prefix}_det_{split}"
        DatasetCatalog.register(det, functools.partial(_load_det, prefix, split, det))
        MetadataCatalog.get(det).set(thing_classes=list(THING_CLASSES), evaluator_type="coco", **common)
        seg = f"{prefix}_seg_{split}"
        DatasetCatalog.register(seg, functools.partial(_load_seg, prefix, split))
        MetadataCatalog.get(seg).set(stuff_classes=list(SEMSEG_CLASSES), evaluator_type="sem_seg",
                                     sem_seg_loading_fn=load_sem_seg_gt, **common)
    return names


def synthetic_pixel_stats(prefix: str = BUILTIN_PREFIX, split: str = "train") -> tuple[list[float], list[float]]:
    """Per-band mean and std of a synthetic split as the mapper reads it (reflectance, nodata
    filled with 0): the values for a model's ``pixel_mean``/``pixel_std``. Generates the
    dataset if needed."""
    ds = ensure_synthetic_dataset(prefix)
    total = np.zeros(len(HLS_BANDS))
    total_sq = np.zeros(len(HLS_BANDS))
    count = 0
    for f in ds.splits[split]:
        image = read_geotiff(f).image.astype(np.float64)
        flat = image.reshape(image.shape[0], -1)
        total += flat.sum(axis=1)
        total_sq += (flat ** 2).sum(axis=1)
        count += flat.shape[1]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0))
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


register_synthetic(BUILTIN_PREFIX, **BUILTIN_PARAMS)
