"""detectron2 registration of synthetic datasets: the cached built-in ones and any generated folder."""
from __future__ import annotations

import functools
import inspect
import json
import logging
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog

from ..datasets import load_geo_coco_json, load_geo_semseg, load_sem_seg_gt, register_geo_instances, register_geo_semseg
from ..geotiff import IGNORE_LABEL, read_geotiff
from .cache import _SPECS, BUILTIN_PARAMS, BUILTIN_PREFIX, ensure_synthetic_dataset
from .generator import HLS_BANDS, SEMSEG_CLASSES, THING_CLASSES, SyntheticGeoDataset, make_synthetic_dataset

__all__ = ["register_synthetic", "register_synthetic_geotiff", "register_synthetic_root", "synthetic_pixel_stats"]

logger = logging.getLogger(__name__)


def _load_det(prefix: str, split: str, name: str) -> list[dict]:
    ds = ensure_synthetic_dataset(prefix)
    return load_geo_coco_json(ds.coco_json(split), ds.image_dir(split), name)


def _load_seg(prefix: str, split: str) -> list[dict]:
    return load_geo_semseg(ensure_synthetic_dataset(prefix).semseg_pairs(split))


def register_synthetic(prefix: str = BUILTIN_PREFIX, **params) -> list[str]:
    """Register ``<prefix>_{det,seg}_{train,val}`` over one generated (cached) dataset; returns the names.

    ``params`` are keyword arguments of
    :func:`~d2geo.data.synthetic.generator.make_synthetic_dataset` (``num_train``,
    ``num_val``, ``size``, ``num_frames``, ``seed``, ...); unset ones take the
    quickstart's values. Registering a prefix again with the same parameters is a
    no-op, with other parameters an error.
    """
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


def register_synthetic_geotiff(dataset: SyntheticGeoDataset, prefix: str = "d2geo_geotiff_synth") -> list[str]:
    """Register a :func:`~d2geo.data.synthetic.generator.make_synthetic_dataset` output (or a
    :meth:`SyntheticGeoDataset.open` of its folder) as ``<prefix>_seg_<split>`` (semantic) and
    ``<prefix>_det_<split>`` (buildings) per split, with the band names and sensor given as read
    options; returns the names."""
    geo = {"band_names": dataset.bands, "sensor": "hls"}
    names = []
    for split in dataset.splits:
        seg = f"{prefix}_seg_{split}"
        register_geo_semseg(seg, functools.partial(dataset.semseg_pairs, split),
                            stuff_classes=dataset.semseg_classes, geo=geo)
        det = f"{prefix}_det_{split}"
        register_geo_instances(det, dataset.coco_json(split), dataset.image_dir(split), geo=geo,
                               thing_classes=list(dataset.thing_classes))
        names += [seg, det]
    return names


def register_synthetic_root(root: str) -> list[str]:
    """Register the synthetic dataset(s) in ``root`` (a :func:`make_synthetic_dataset` output, or
    the cache folder holding one ``<prefix>-<digest>`` folder per generated dataset) as
    ``d2geo_geotiff_synth[<k>]_{seg,det}_{train,val}``; returns the names. A folder without
    one is an error naming the fix."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--synthetic-root {root}: no such folder")
    candidates = []
    if any(os.path.isdir(os.path.join(root, s, "images")) for s in ("train", "val")):
        candidates.append(root)
    else:  # the cache folder: one <prefix>-<digest> folder per generated dataset
        for entry in sorted(os.listdir(root)):
            sub = os.path.join(root, entry)
            if not entry.startswith(".") and any(os.path.isdir(os.path.join(sub, s, "images"))
                                                 for s in ("train", "val")):
                candidates.append(sub)
    names = []
    for k, folder in enumerate(candidates):
        prefix = "d2geo_geotiff_synth" if k == 0 else f"d2geo_geotiff_synth{k}"
        new = register_synthetic_geotiff(SyntheticGeoDataset.open(folder), prefix=prefix)
        logger.info("registered %s from %s", ", ".join(new), folder)
        names += new
    if not names:
        raise ValueError(f"--synthetic-root {root}: no synthetic dataset there (expected train/images or "
                         f"val/images, or folders holding them). The quickstart datasets need no "
                         f"--synthetic-root: use --dataset d2geo_synth_seg_val or d2geo_synth_det_val")
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
