"""Registering GeoTIFF datasets with detectron2, and loaders for public benchmark layouts.

Dataset dicts made here are read by :class:`d2geo.data.mapper.GeoDatasetMapper`:

* ``file_name``: the GeoTIFF (for a time series: the first date, so that detectron2's
  evaluators, which key ground truth by ``file_name``, keep working);
* ``file_names``: every date of a time series, in time order (absent for single images);
* ``sem_seg_file_name``: a label GeoTIFF; ``annotations`` (pixel coordinates) or
  ``geojson_file_name`` (any CRS, see :mod:`d2geo.data.geojson_labels`) for instances;
* ``geo``: the per-dataset read options (band names, sensor, scale, label map, ...).

``MetadataCatalog`` entries get ``bands``, ``sensor``, ``ignore_label`` and, for semantic
sets, ``sem_seg_loading_fn`` (a ``(path, dtype) -> array`` reader for detectron2's
``SemSegEvaluator(..., sem_seg_loading_fn=...)``, which otherwise opens targets with PIL
and would not apply the label map).

Benchmark layouts (the data itself is not shipped):

* **Sen1Floods11** (hand-labelled Sentinel-2 chips)::

      <root>/v1.1/data/flood_events/HandLabeled/S2Hand/<id>_S2Hand.tif       13 bands, L1C DN
      <root>/v1.1/data/flood_events/HandLabeled/LabelHand/<id>_LabelHand.tif  -1 no data, 0 dry, 1 water
      <root>/v1.1/splits/flood_handlabeled/flood_{train,valid,test}_data.csv
          rows "<id>_S1Hand.tif,<id>_LabelHand.tif", no header
      <root>/v1.1/Sen1Floods11_Metadata.geojson    optional: per-location "s2_date"

  ``root`` may also be the ``v1.1`` folder or the ``HandLabeled`` folder's parent.
* **HLS Burn Scars**::

      <root>/{training,validation}/subsetted_512x512_HLS.S30.T10SEH.2018190.v1.4_merged.tif
      <root>/{training,validation}/subsetted_512x512_HLS.S30.T10SEH.2018190.v1.4.mask.tif
          (``..._mask.tif`` is accepted too); 6 HLS bands, mask 1 burn scar / 0 not / -1 no data;
          the date is the ``YYYYDOY`` in the name.
"""
from __future__ import annotations

import csv
import functools
import glob
import json
import logging
import os
import re
from typing import Callable, Iterable, Mapping, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from d2geo.encoders.bands import HLS_BANDS

from .geojson_labels import geojson_to_annotations
from .geotiff import IGNORE_LABEL, parse_time, read_label

logger = logging.getLogger(__name__)

__all__ = [
    "register_geo_instances", "register_geo_semseg", "load_geo_coco_json", "load_geo_semseg",
    "load_sem_seg_gt", "load_sen1floods11", "register_sen1floods11", "load_hls_burn_scars",
    "register_hls_burn_scars", "SEN1FLOODS11_S2_BANDS", "HLS_BURN_SCARS_BANDS", "geojson_to_annotations",
]

#: Sentinel-2 L1C band ids in the order of Sen1Floods11's S2Hand chips
SEN1FLOODS11_S2_BANDS = ("b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08", "b8a", "b09", "b10",
                         "b11", "b12")
HLS_BURN_SCARS_BANDS = HLS_BANDS


def load_sem_seg_gt(path, dtype=int, *, label_map=None, ignore_label: int = IGNORE_LABEL):
    """Read a label GeoTIFF for evaluation: ``label_map`` applied, nodata -> ``ignore_label``."""
    return read_label(path, label_map=label_map, ignore_label=ignore_label).astype(dtype)


def _with_files(record: dict, files) -> dict:
    if isinstance(files, Mapping):  # one file per modality (read_modalities), on one grid
        if not files:
            raise ValueError("an image given as a mapping needs at least one modality: {name: path}")
        record["modality_files"] = {str(m): os.fspath(f) for m, f in files.items()}
        record["file_name"] = next(iter(record["modality_files"].values()))
    elif isinstance(files, (list, tuple)):
        files = [os.fspath(f) for f in files]
        record["file_name"] = files[0]
        if len(files) > 1:
            record["file_names"] = files
    else:
        record["file_name"] = os.fspath(files)
    return record


# ------------------------------------------------------------------------ instances
def load_geo_coco_json(json_file: str, image_root: str, dataset_name: str | None = None,
                       geo: dict | None = None) -> list[dict]:
    """detectron2's ``load_coco_json`` plus time series: an image entry's ``file_names``
    (list, relative to ``image_root``) becomes the dict's ``file_names``."""
    dicts = load_coco_json(json_file, image_root, dataset_name, extra_annotation_keys=["id"])
    with open(json_file, encoding="utf-8") as f:
        images = {img["id"]: img for img in json.load(f)["images"]}
    for d in dicts:
        img = images.get(d["image_id"], {})
        if "file_names" in img:
            _with_files(d, [os.path.join(image_root, p) for p in img["file_names"]])
        if geo:
            d["geo"] = dict(geo)
    return dicts


def register_geo_instances(name: str, json_file: str | None = None, image_root: str | None = None, *,
                           samples: Callable[[], list] | Sequence[dict] | None = None,
                           geo: dict | None = None, **metadata) -> None:
    """Register an instance dataset: a COCO json in pixel coordinates, or ``samples``.

    ``samples`` (a list or a function returning one) holds dicts with ``file_name``
    (path or list of dates) and ``geojson_file_name`` (polygons in ``geo["geojson_crs"]``, else
    in the file's ``crs`` member, else RFC 7946 longitude/latitude; see
    :mod:`d2geo.data.geojson_labels`), plus anything else detectron2 reads (``image_id``, ...).
    The GeoJSON is converted to pixel ``annotations`` when the dataset is loaded, so
    COCO evaluation sees the objects.
    ``metadata`` goes to ``MetadataCatalog`` (give ``thing_classes`` for ``samples``).
    """
    if (json_file is None) == (samples is None):
        raise ValueError("give either json_file (+ image_root) or samples")
    if json_file is not None:
        if image_root is None:
            raise ValueError("json_file needs image_root (the folder its file_name entries are relative to)")
        DatasetCatalog.register(name, lambda: load_geo_coco_json(json_file, image_root, name, geo))
        MetadataCatalog.get(name).set(json_file=json_file, image_root=image_root)
    else:
        def load():
            items = samples() if callable(samples) else samples
            out = []
            for i, s in enumerate(items):
                d = _with_files(dict(s), s.get("file_names", s["file_name"]))
                d.setdefault("image_id", i)
                if geo:
                    d["geo"] = {**geo, **d.get("geo", {})}
                if "geojson_file_name" in d:
                    _geojson_to_pixel_annotations(d)
                out.append(d)
            return out

        DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(evaluator_type="coco", ignore_label=IGNORE_LABEL,
                                  **_geo_meta(geo), **metadata)


def _geojson_to_pixel_annotations(d: dict) -> None:
    """Turn a dict's ``geojson_file_name`` into pixel ``annotations`` (+ height/width), so that
    evaluators that build COCO ground truth from the dataset dicts see the objects."""
    from .geotiff import _rasterio

    with _rasterio().open(d["file_name"]) as src:
        crs, transform, h, w = src.crs, src.transform, src.height, src.width
    geo = d.get("geo") or {}
    annos = geojson_to_annotations(d.pop("geojson_file_name"), transform, crs=crs,
                                   geojson_crs=geo.get("geojson_crs"),
                                   category_key=geo.get("category_key", "category_id"),
                                   class_names=geo.get("class_names"), image_shape=(h, w))
    d.setdefault("annotations", []).extend(annos)
    d.setdefault("height", h)
    d.setdefault("width", w)


def _geo_meta(geo: dict | None) -> dict:
    geo = geo or {}
    out = {}
    if "band_names" in geo:
        out["bands"] = tuple(geo["band_names"])
    if "sensor" in geo:
        out["sensor"] = geo["sensor"]
    return out


# -------------------------------------------------------------------------- semantic
def load_geo_semseg(pairs: Iterable, geo: dict | None = None) -> list[dict]:
    """Dataset dicts from ``(image, label path)`` pairs; the image is a path, a list of
    dates, or a ``{modality: path}`` mapping (stacked by :func:`~d2geo.data.geotiff.read_modalities`)."""
    from .geotiff import _rasterio

    rasterio = _rasterio()
    out = []
    for i, (image, label) in enumerate(pairs):
        d = _with_files({"image_id": i}, image)
        for p in [d["file_name"], label]:
            if not os.path.exists(p):
                raise FileNotFoundError(f"dataset file not found: {p}")
        with rasterio.open(d["file_name"]) as src:
            d["height"], d["width"] = src.height, src.width
        d["sem_seg_file_name"] = os.fspath(label)
        if geo:
            d["geo"] = dict(geo)
        out.append(d)
    return out


def register_geo_semseg(name: str, pairs: Callable[[], Iterable] | Sequence, *, stuff_classes: Sequence[str],
                        geo: dict | None = None, ignore_label: int = IGNORE_LABEL, **metadata) -> None:
    """Register a semantic-segmentation dataset from (image(s), label GeoTIFF) pairs.

    ``pairs`` may be a function returning them (evaluated lazily, like detectron2's
    loaders). ``geo`` holds the read options (``band_names``, ``sensor``, ``scale``,
    ``label_map`` e.g. ``{-1: 255}``, ...).
    """
    geo = dict(geo or {})

    def load():  # num_classes lets the mapper name a label file holding larger values
        return load_geo_semseg(pairs() if callable(pairs) else pairs,
                               {**geo, "num_classes": len(stuff_classes)})

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        stuff_classes=list(stuff_classes), ignore_label=ignore_label, evaluator_type="sem_seg",
        sem_seg_loading_fn=functools.partial(load_sem_seg_gt, label_map=geo.get("label_map"),
                                             ignore_label=ignore_label),
        **_geo_meta(geo), **metadata)


# ---------------------------------------------------------------------- Sen1Floods11
_SPLIT_NAMES = {"train": "train", "val": "valid", "valid": "valid", "test": "test"}
_CHIP_SUFFIX = re.compile(r"_(S1Hand|S2Hand|LabelHand|S1OtsuLabelHand|JRCWaterHand)(\.tif)?$", re.IGNORECASE)


def _find_dir(root: str, candidates: Sequence[str], what: str) -> str:
    for c in candidates:
        p = os.path.join(root, c)
        if os.path.isdir(p):
            return p
    raise FileNotFoundError(f"no {what} under {root}: looked for {', '.join(candidates)}")


def _sen1floods11_dates(root: str) -> dict:
    for cand in ("v1.1/Sen1Floods11_Metadata.geojson", "Sen1Floods11_Metadata.geojson"):
        path = os.path.join(root, cand)
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                feats = json.load(f).get("features", [])
            out = {}
            for feat in feats:
                props = feat.get("properties") or {}
                if props.get("location") and props.get("s2_date"):
                    out[str(props["location"])] = parse_time(str(props["s2_date"]))
            return out
    return {}


def load_sen1floods11(root: str, split: str = "train") -> list[dict]:
    """Sen1Floods11 hand-labelled Sentinel-2 chips of ``split`` (train/val/test)."""
    if split not in _SPLIT_NAMES:
        raise ValueError(f"unknown Sen1Floods11 split {split!r}; use train, val or test")
    hand = _find_dir(root, ("v1.1/data/flood_events/HandLabeled", "data/flood_events/HandLabeled",
                            "HandLabeled", "."), "HandLabeled folder (S2Hand/, LabelHand/)")
    if not os.path.isdir(os.path.join(hand, "S2Hand")):
        raise FileNotFoundError(f"no S2Hand/ folder under {root}")
    splits = _find_dir(root, ("v1.1/splits/flood_handlabeled", "splits/flood_handlabeled", "splits", "."),
                       "splits folder")
    split_file = os.path.join(splits, f"flood_{_SPLIT_NAMES[split]}_data.csv")
    if not os.path.exists(split_file):
        raise FileNotFoundError(f"Sen1Floods11 split file not found: {split_file}")
    ids = []
    with open(split_file, newline="", encoding="utf-8") as f:
        for row in csv.reader(f):
            if row and row[0].strip():
                ids.append(_CHIP_SUFFIX.sub("", os.path.basename(row[0].strip())))
    dates = _sen1floods11_dates(root)
    # chip ids are plain numbers (Paraguay_2012345 would pass for 2012, day 345): the date
    # comes from the metadata file only
    geo = {"band_names": SEN1FLOODS11_S2_BANDS, "sensor": "sentinel-2-l1c", "scale": 1e-4,
           "label_map": {-1: IGNORE_LABEL}, "time_from_name": False}
    pairs, geos = [], []
    for chip in ids:
        image = os.path.join(hand, "S2Hand", f"{chip}_S2Hand.tif")
        label = os.path.join(hand, "LabelHand", f"{chip}_LabelHand.tif")
        pairs.append((image, label))
        g = dict(geo)
        location = chip.split("_")[0]
        if location in dates:
            g["timestamps"] = [dates[location]]
        geos.append(g)
    dicts = load_geo_semseg(pairs)
    for d, g in zip(dicts, geos):
        d["geo"] = g
    logger.info("Sen1Floods11 %s: %d chips from %s", split, len(dicts), split_file)
    return dicts


def register_sen1floods11(root: str, prefix: str = "sen1floods11_s2") -> list[str]:
    """Register ``<prefix>_{train,val,test}``; returns the names."""
    names = []
    for split in ("train", "val", "test"):
        name = f"{prefix}_{split}"
        DatasetCatalog.register(name, functools.partial(load_sen1floods11, root, split))
        MetadataCatalog.get(name).set(
            stuff_classes=["dry", "water"], ignore_label=IGNORE_LABEL, evaluator_type="sem_seg",
            bands=SEN1FLOODS11_S2_BANDS, sensor="sentinel-2-l1c", stats="sen1floods11_s2",
            sem_seg_loading_fn=functools.partial(load_sem_seg_gt, label_map={-1: IGNORE_LABEL}))
        names.append(name)
    return names


# -------------------------------------------------------------------- HLS Burn Scars
def load_hls_burn_scars(root: str, split: str = "train") -> list[dict]:
    """HLS Burn Scars chips of ``split`` (train -> ``training/``, val -> ``validation/``)."""
    folder = {"train": "training", "training": "training", "val": "validation",
              "validation": "validation"}.get(split)
    if folder is None:
        raise ValueError(f"unknown HLS Burn Scars split {split!r}; use train or val")
    base = os.path.join(root, folder)
    if not os.path.isdir(base):
        raise FileNotFoundError(f"HLS Burn Scars folder not found: {base}")
    pairs = []
    for image in sorted(glob.glob(os.path.join(base, "*_merged.tif"))):
        stem = image[: -len("_merged.tif")]
        for cand in (stem + ".mask.tif", stem + "_mask.tif"):
            if os.path.exists(cand):
                pairs.append((image, cand))
                break
        else:
            raise FileNotFoundError(f"no mask for {image} (expected {os.path.basename(stem)}.mask.tif)")
    if not pairs:
        raise FileNotFoundError(f"no *_merged.tif chips in {base}")
    geo = {"band_names": HLS_BURN_SCARS_BANDS, "sensor": "hls", "label_map": {-1: IGNORE_LABEL}}
    return load_geo_semseg(pairs, geo)


def register_hls_burn_scars(root: str, prefix: str = "hls_burn_scars") -> list[str]:
    """Register ``<prefix>_{train,val}``; returns the names."""
    names = []
    for split in ("train", "val"):
        name = f"{prefix}_{split}"
        DatasetCatalog.register(name, functools.partial(load_hls_burn_scars, root, split))
        MetadataCatalog.get(name).set(
            stuff_classes=["not burned", "burn scar"], ignore_label=IGNORE_LABEL, evaluator_type="sem_seg",
            bands=HLS_BURN_SCARS_BANDS, sensor="hls", stats="hls_burn_scars",
            sem_seg_loading_fn=functools.partial(load_sem_seg_gt, label_map={-1: IGNORE_LABEL}))
        names.append(name)
    return names
