"""A small synthetic multispectral dataset, generated on the fly, for quickstarts and tests.

Every tile shows a smooth, noisy soil background with a few non-overlapping objects of
three classes, each with its own spectral signature over six HLS bands (blue, green,
red, NIR, SWIR 1, SWIR 2; values are surface reflectance x 10000):

* ``building``: rectangles, bright in every band;
* ``vegetation``: ellipses, dark in the visible bands and bright in the NIR;
* ``water``: irregular blobs, dark everywhere and darkest in the NIR and SWIR.

Importing this module registers four datasets in detectron2's ``DatasetCatalog`` and
``MetadataCatalog``:

* ``d2geo_synth_det_train`` / ``d2geo_synth_det_val``: instance annotations (boxes and
  polygons), evaluated with ``COCOEvaluator``;
* ``d2geo_synth_seg_train`` / ``d2geo_synth_seg_val``: semantic masks (background + the
  three classes), evaluated with ``SemSegEvaluator(sem_seg_loading_fn=load_synthetic_sem_seg)``
  (the function is also stored as the datasets' ``sem_seg_loading_fn`` metadata).

Dataset dicts stay small: they hold the scene description and the pixels are rendered by
:class:`InMemoryDatasetMapper`, deterministically from the record's seed. Each dict also
carries the acquisition ``"metadata"`` (timestamps, latitude/longitude, GSD,
wavelengths) in d2geo's schema, which the mapper passes on as tensors.

:func:`register_synthetic` registers further variants (other sizes, band subsets or
multi-temporal tiles ``(C, T, H, W)`` for temporal encoders).
"""
from __future__ import annotations

import copy
import functools
import logging
import re
from typing import Any, Sequence

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode, polygons_to_bitmask

from d2geo.encoders.metadata import band_wavelengths

logger = logging.getLogger(__name__)

__all__ = [
    "SYNTH_BANDS", "SYNTH_THING_CLASSES", "SYNTH_STUFF_CLASSES", "register_synthetic",
    "synthetic_pixel_stats", "load_synthetic_sem_seg", "render_image", "render_sem_seg",
    "InMemoryDatasetMapper",
]

#: the bands of the synthetic tiles, named as in d2geo's ``hls`` sensor table
SYNTH_BANDS = ("blue", "green", "red", "nir_narrow", "swir_1", "swir_2")
SYNTH_THING_CLASSES = ("building", "vegetation", "water")
SYNTH_STUFF_CLASSES = ("background",) + SYNTH_THING_CLASSES
IGNORE_LABEL = 255

# Reflectance signatures over SYNTH_BANDS (soil background, then the thing classes).
_SIGNATURES = {
    "background": (0.07, 0.10, 0.14, 0.24, 0.30, 0.24),
    "building": (0.26, 0.28, 0.31, 0.33, 0.36, 0.34),
    "vegetation": (0.03, 0.07, 0.04, 0.46, 0.21, 0.09),
    "water": (0.08, 0.06, 0.04, 0.015, 0.008, 0.005),
}
_SCALE = 10000.0
_URI = "d2geo-synth://"
_EPOCH_2019 = 1546300800.0  # 2019-01-01T00:00:00Z
_DAY = 86400.0

# name -> generation parameters, filled by register_synthetic
_SPECS: dict[str, dict[str, Any]] = {}


# -- scene generation -------------------------------------------------------------------
def _record_rng(record: dict) -> np.random.Generator:
    return np.random.default_rng(record["synthetic"]["seed"])


def _place_objects(rng: np.random.Generator, size: int, count: int) -> list[tuple[int, list[float]]]:
    """Non-overlapping objects as (class index, flat polygon) in absolute pixel coordinates."""
    placed: list[tuple[int, list[float], tuple[float, float, float, float]]] = []
    lo, hi = max(6, size // 12), max(10, size // 4)
    for _ in range(count * 40):
        if len(placed) == count:
            break
        cls = int(rng.integers(len(SYNTH_THING_CLASSES)))
        w, h = rng.uniform(lo, hi, size=2)
        cx, cy = rng.uniform(w / 2 + 1, size - w / 2 - 1), rng.uniform(h / 2 + 1, size - h / 2 - 1)
        box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        if any(box[0] < b[2] + 2 and b[0] < box[2] + 2 and box[1] < b[3] + 2 and b[1] < box[3] + 2
               for _, _, b in placed):
            continue
        if cls == 0:  # building: an axis-aligned rectangle on whole pixels
            x0, y0, x1, y1 = (float(round(v)) for v in box)
            poly = [x0, y0, x1, y0, x1, y1, x0, y1]
        else:  # vegetation: ellipse; water: an ellipse with a wobbly radius
            n = 20
            t = np.linspace(0, 2 * np.pi, n, endpoint=False)
            r = np.ones(n) if cls == 1 else rng.uniform(0.7, 1.0, size=n)
            xs = cx + (w / 2) * r * np.cos(t)
            ys = cy + (h / 2) * r * np.sin(t)
            poly = np.stack([xs, ys], axis=1).reshape(-1).round(2).tolist()
        placed.append((cls, poly, box))
    return [(cls, poly) for cls, poly, _ in placed]


def _object_masks(record: dict) -> list[tuple[int, np.ndarray]]:
    H, W = record["height"], record["width"]
    return [(cls, polygons_to_bitmask([np.asarray(poly, dtype=np.float64)], H, W))
            for cls, poly in record["synthetic"]["objects"]]


def render_sem_seg(record: dict) -> np.ndarray:
    """The ``(H, W)`` uint8 class map of a synthetic record (0 = background)."""
    label = np.zeros((record["height"], record["width"]), dtype=np.uint8)
    for cls, mask in _object_masks(record):
        label[mask] = cls + 1
    return label


def _smooth_field(rng: np.random.Generator, size: tuple[int, int], cells: int = 6) -> np.ndarray:
    coarse = torch.from_numpy(rng.normal(0.0, 1.0, size=(1, 1, cells, cells)).astype(np.float32))
    fine = torch.nn.functional.interpolate(coarse, size=size, mode="bicubic", align_corners=True)
    return fine[0, 0].numpy()


def render_image(record: dict) -> np.ndarray:
    """The pixels of a synthetic record: ``(C, H, W)``, or ``(C, T, H, W)`` if multi-temporal.

    float32 reflectance x 10000, deterministic given the record.
    """
    spec = record["synthetic"]
    rng = _record_rng(record)
    H, W = record["height"], record["width"]
    band_idx = [SYNTH_BANDS.index(b) for b in spec["bands"]]
    T_ = spec["num_frames"]
    background = np.asarray(_SIGNATURES["background"], dtype=np.float32)[band_idx]
    field = 1.0 + 0.15 * _smooth_field(rng, (H, W))
    base = background[:, None, None] * field[None]
    for cls, mask in _object_masks(record):
        sig = np.asarray(_SIGNATURES[SYNTH_THING_CLASSES[cls]], dtype=np.float32)[band_idx]
        sig = sig * rng.uniform(0.85, 1.15)
        base[:, mask] = sig[:, None]
    frames = []
    for _ in range(T_):
        gain = rng.uniform(0.9, 1.1, size=(len(band_idx), 1, 1)).astype(np.float32)
        noise = rng.normal(0.0, 0.012, size=base.shape).astype(np.float32)
        frames.append(np.clip(base * gain + noise, 0.0, 1.0) * _SCALE)
    image = np.stack(frames, axis=1) if T_ > 1 else frames[0]
    return image.astype(np.float32)


def _make_dicts(name: str) -> list[dict]:
    spec = _SPECS[name]
    return copy.deepcopy(_cached_dicts(name, spec["key"]))


@functools.lru_cache(maxsize=None)
def _cached_dicts(name: str, key: tuple) -> list[dict]:
    spec = _SPECS[name]
    size, num_frames, bands = spec["size"], spec["num_frames"], spec["bands"]
    wavelengths = band_wavelengths("hls", bands).tolist()
    out = []
    for i in range(spec["num_images"]):
        seed = [spec["seed"], i]
        rng = np.random.default_rng(seed + [1])
        count = int(rng.integers(spec["min_objects"], spec["max_objects"] + 1))
        objects = _place_objects(rng, size, count)
        start = _EPOCH_2019 + float(rng.integers(0, 5 * 365)) * _DAY
        record = {
            "file_name": f"{_URI}{name}/{i:05d}",
            "image_id": i,
            "height": size,
            "width": size,
            "synthetic": {"seed": seed, "bands": list(bands), "num_frames": num_frames,
                          "objects": [[cls, poly] for cls, poly in objects]},
            "metadata": {
                "timestamps": [start + 30.0 * _DAY * t for t in range(num_frames)],
                "latlon": [round(float(rng.uniform(-60, 60)), 4), round(float(rng.uniform(-180, 180)), 4)],
                "gsd": 30.0,
                "wavelengths": wavelengths,
            },
        }
        if spec["task"] == "det":
            record["annotations"] = [_annotation(cls, poly) for cls, poly in objects]
        else:
            record["sem_seg_file_name"] = record["file_name"]
        out.append(record)
    return out


def _annotation(cls: int, poly: list[float]) -> dict:
    xy = np.asarray(poly).reshape(-1, 2)
    x0, y0 = xy.min(axis=0)
    x1, y1 = xy.max(axis=0)
    return {"bbox": [float(x0), float(y0), float(x1), float(y1)], "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": cls, "segmentation": [list(poly)], "iscrowd": 0}


def register_synthetic(name: str, *, task: str, num_images: int, seed: int, size: int = 96,
                       bands: Sequence[str] = SYNTH_BANDS, num_frames: int = 1,
                       min_objects: int = 2, max_objects: int = 5) -> None:
    """Register a synthetic dataset ``name`` for ``task`` ``"det"`` or ``"seg"``.

    Registering the same name again with the same parameters is a no-op; with other
    parameters it is an error.
    """
    if task not in ("det", "seg"):
        raise ValueError(f"task must be 'det' or 'seg', got {task!r}")
    unknown = [b for b in bands if b not in SYNTH_BANDS]
    if unknown:
        raise ValueError(f"unknown synthetic bands {unknown}; choose from {SYNTH_BANDS}")
    if num_frames < 1 or size < 32:
        raise ValueError(f"need num_frames >= 1 and size >= 32, got {num_frames} and {size}")
    spec = dict(task=task, num_images=int(num_images), seed=int(seed), size=int(size),
                bands=tuple(bands), num_frames=int(num_frames), min_objects=int(min_objects),
                max_objects=int(max_objects))
    spec["key"] = tuple(sorted((k, v) for k, v in spec.items()))
    if name in _SPECS:
        if _SPECS[name]["key"] != spec["key"]:
            raise ValueError(f"dataset {name!r} is already registered with other parameters")
        return
    if name in DatasetCatalog.list():
        raise ValueError(f"dataset {name!r} is already registered by someone else; pick another name")
    _SPECS[name] = spec
    DatasetCatalog.register(name, functools.partial(_make_dicts, name))
    meta = dict(bands=tuple(bands), num_frames=num_frames, ignore_label=IGNORE_LABEL)
    if task == "det":
        meta.update(thing_classes=list(SYNTH_THING_CLASSES), evaluator_type="coco")
    else:
        meta.update(stuff_classes=list(SYNTH_STUFF_CLASSES), evaluator_type="sem_seg",
                    sem_seg_loading_fn=load_synthetic_sem_seg)
    MetadataCatalog.get(name).set(**meta)


def load_synthetic_sem_seg(file_name: str, dtype=None) -> np.ndarray:
    """``SemSegEvaluator``'s ``sem_seg_loading_fn`` for synthetic ``d2geo-synth://`` masks."""
    m = re.fullmatch(re.escape(_URI) + r"(.+)/(\d+)", file_name)
    if not m or m.group(1) not in _SPECS:
        raise ValueError(f"{file_name!r} is not a registered synthetic mask name")
    record = _cached_dicts(m.group(1), _SPECS[m.group(1)]["key"])[int(m.group(2))]
    label = render_sem_seg(record)
    return label if dtype is None else label.astype(dtype)


@functools.lru_cache(maxsize=None)
def synthetic_pixel_stats(bands: tuple[str, ...] = SYNTH_BANDS, num_images: int = 16,
                          size: int = 96) -> tuple[list[float], list[float]]:
    """Per-band mean and std of synthetic tiles, for the model's ``pixel_mean``/``pixel_std``."""
    name = f"_d2geo_synth_stats_{'_'.join(bands)}_{num_images}_{size}"
    if name not in _SPECS:
        _SPECS[name] = dict(task="det", num_images=num_images, seed=12345, size=size,
                            bands=tuple(bands), num_frames=1, min_objects=2, max_objects=5)
        _SPECS[name]["key"] = tuple(sorted(_SPECS[name].items()))
    images = np.stack([render_image(r) for r in _cached_dicts(name, _SPECS[name]["key"])])
    mean = images.mean(axis=(0, 2, 3))
    std = images.std(axis=(0, 2, 3))
    return [round(float(v), 2) for v in mean], [round(float(v), 2) for v in std]


# -- mapping dataset dicts to model inputs ----------------------------------------------
def _metadata_tensors(meta: dict) -> dict:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if value is None:
            continue
        if key == "timestamps":
            out[key] = torch.as_tensor(np.asarray(value, dtype=np.float64))
        elif key == "gsd":
            out[key] = float(value)
        else:
            out[key] = torch.as_tensor(np.asarray(value, dtype=np.float32))
    return out


class InMemoryDatasetMapper:
    """Turn a dataset dict whose pixels are in memory into a model input.

    Handles synthetic records (rendered from their scene) and records that carry the
    pixels themselves as ``"image"``: a ``(C, H, W)`` or ``(C, T, H, W)`` array, with an
    optional ``"sem_seg"`` ``(H, W)`` array. Files on disk need a file-reading mapper.

    The output dict has ``"image"`` as a float32 tensor of the same layout, ``"instances"``
    (with ``use_instance_mask``, polygon masks) and/or ``"sem_seg"`` (int64), and the
    record's ``"metadata"`` as tensors (``timestamps`` float64 ``(T,)``, ``latlon``
    ``(2,)``, ``gsd`` float, ``wavelengths`` ``(C,)``).

    Args:
        is_train: keep the annotations (as detectron2's ``DatasetMapper`` does, test-time
            outputs drop them).
        augmentations: detectron2 augmentations (flips, resizes, crops); they see the
            image as ``(H, W, C*T)``, so all frames move together.
        use_instance_mask: put ``gt_masks`` into the instances.
    """

    def __init__(self, is_train: bool = True, augmentations: Sequence[T.Augmentation] = (),
                 use_instance_mask: bool = True):
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self.use_instance_mask = use_instance_mask

    def _pixels(self, record: dict) -> tuple[np.ndarray, np.ndarray | None]:
        if "synthetic" in record:
            image = render_image(record)
            wanted = self.is_train and "sem_seg_file_name" in record
            return image, render_sem_seg(record) if wanted else None
        if "image" in record:
            image = np.asarray(record.pop("image"), dtype=np.float32)
            sem_seg = record.pop("sem_seg", None)
            return image, None if sem_seg is None or not self.is_train else np.asarray(sem_seg)
        raise ValueError(
            f"InMemoryDatasetMapper needs a synthetic record or an 'image' array, but "
            f"{record.get('file_name', '<no file_name>')!r} has neither (keys: {sorted(record)}); "
            f"records that point at files on disk need a mapper that reads them"
        )

    def __call__(self, dataset_dict: dict) -> dict:
        record = copy.deepcopy(dataset_dict)
        image, sem_seg = self._pixels(record)
        if image.ndim not in (3, 4):
            raise ValueError(f"image of {record.get('file_name')} has shape {image.shape}; "
                             f"expected (C, H, W) or (C, T, H, W)")
        shape = image.shape
        hwc = image.reshape(-1, *shape[-2:]).transpose(1, 2, 0)  # (H, W, C*T)
        if hwc.shape[:2] != (record.get("height", shape[-2]), record.get("width", shape[-1])):
            raise ValueError(f"image of {record.get('file_name')} is {hwc.shape[:2]} but the record "
                             f"says {(record.get('height'), record.get('width'))}")
        aug_input = T.AugInput(np.ascontiguousarray(hwc), sem_seg=sem_seg)
        transforms = self.augmentations(aug_input)
        hwc, sem_seg = aug_input.image, aug_input.sem_seg
        H, W = hwc.shape[:2]
        chw = np.ascontiguousarray(hwc.transpose(2, 0, 1)).reshape(*shape[:-2], H, W)
        record["image"] = torch.from_numpy(chw)
        record.pop("synthetic", None)
        if "metadata" in record:
            record["metadata"] = _metadata_tensors(record["metadata"])
        if sem_seg is not None:
            record["sem_seg"] = torch.as_tensor(sem_seg.astype(np.int64))
        if not self.is_train:
            record.pop("annotations", None)
            record.pop("sem_seg_file_name", None)
            return record
        if "annotations" in record:
            annos = [
                utils.transform_instance_annotations(a, transforms, (H, W))
                for a in record.pop("annotations") if a.get("iscrowd", 0) == 0
            ]
            if not self.use_instance_mask:
                for a in annos:
                    a.pop("segmentation", None)
            instances = utils.annotations_to_instances(annos, (H, W), mask_format="polygon")
            record["instances"] = utils.filter_empty_instances(instances)
        return record


def _register_builtin() -> None:
    common = dict(size=96, min_objects=2, max_objects=5)
    register_synthetic("d2geo_synth_det_train", task="det", num_images=64, seed=1, **common)
    register_synthetic("d2geo_synth_det_val", task="det", num_images=16, seed=2, **common)
    register_synthetic("d2geo_synth_seg_train", task="seg", num_images=64, seed=3, **common)
    register_synthetic("d2geo_synth_seg_val", task="seg", num_images=16, seed=4, **common)


_register_builtin()
