"""A detectron2 dataset mapper for N-band and multi-temporal GeoTIFF samples.

:class:`GeoDatasetMapper` reads a dataset dict (see below) with
:func:`d2geo.data.geotiff.read_geotiff`, applies detectron2 augmentations to the
``H x W x (C*T)`` float32 array (so one sampled transform is applied to every band of
every date), and returns what d2geo's models read:

* ``"image"``: float32 tensor ``(C, H, W)`` or ``(C, T, H, W)``;
* ``"metadata"``: ``{"timestamps": (T,) float64, "latlon": (2,), "gsd": () float32,
  "wavelengths": (C,)}``, each key only when known. ``gsd`` follows resizing (an image
  upsampled 2x has half the GSD); ``latlon`` stays the centre of the tile read;
* ``"sem_seg"``: int64 ``(H, W)`` with the ignore label (255) wherever the image had no
  valid data (nodata/NaN) or an augmentation padded;
* ``"instances"``: detectron2 ``Instances`` from pixel-coordinate annotations (COCO) or a
  GeoJSON in the scene CRS.

Dataset dict keys read: ``modality_files`` (``{modality: path}``, one file per modality
stacked by :func:`~d2geo.data.geotiff.read_modalities`, channels ``"<MODALITY>:<band>"``), else
``file_names`` (one path per date, for time series), else
``file_name`` (one path; a list is taken as one path per date),
``sem_seg_file_name`` (GeoTIFF), ``annotations`` (detectron2 format, pixel coords),
``geojson_file_name`` (FeatureCollection; its CRS: ``geo["geojson_crs"]``, else its ``crs`` member,
else RFC 7946 lon/lat, see :mod:`d2geo.data.geojson_labels`), and
``geo``: per-sample read options (``band_names``, ``sensor``, ``scale``, ``offset``,
``nodata``, ``num_frames``, ``timestamps``, ``time_tag``, ``time_from_name``, ``label_map``,
``geojson_crs``, ``category_key``, ``class_names``).

Windows of whole scenes (:func:`d2geo.data.scenes.register_geo_scenes`): a dict's ``window
= (col_off, row_off, width, height)`` (scene pixels) makes the mapper read only that window
of ``file_name``/``file_names``/``modality_files`` (rasterio windowed reads at full
resolution, never an overview); its labels come as ``scene_labels`` (polygons in window
pixels, rasterized here with ``scene_label_options``) or ``label_raster`` (resampled
nearest-neighbour onto the window's grid), or as pixel ``annotations``.

detectron2's own augmentations work on such arrays except those that go through PIL
or assume RGB: ``RandomExtent`` (use :class:`RandomExtentND`) and ``RandomSaturation`` /
``RandomLighting`` (RGB only; they raise). ``ResizeTransform`` interpolates float
arrays with torch, ``RandomFlip``/``RandomCrop``/``RandomRotation``/``ResizeScale``/
``FixedSizeCrop`` are channel-agnostic.
"""
from __future__ import annotations

import copy
import logging
from typing import Sequence

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from fvcore.transforms.transform import Transform

from ..encoders.metadata import as_timestamps
from .datasets import geojson_to_annotations
from .geotiff import IGNORE_LABEL, GeoTiffError, read_geotiff, read_label, read_modalities

logger = logging.getLogger(__name__)

__all__ = ["GeoDatasetMapper", "ExtentTransformND", "RandomExtentND", "build_geo_augmentation"]

_READ_KEYS = ("band_names", "sensor", "scale", "offset", "nodata", "num_frames", "timestamps", "time_tag",
              "time_from_name")


class ExtentTransformND(Transform):
    """Crop/scale the region ``src_rect = (x0, y0, x1, y1)`` to ``output_size`` for any channel count/dtype."""

    def __init__(self, src_rect, output_size, fill: float = 0.0):
        super().__init__()
        self._set_attributes(locals())

    def _matrix(self):
        h, w = self.output_size
        x0, y0, x1, y1 = self.src_rect
        sx, sy = w / (x1 - x0), h / (y1 - y0)
        return np.array([[sx, 0, -x0 * sx], [0, sy, -y0 * sy]], dtype=np.float64)

    def _warp(self, img, interp, fill):
        h, w = self.output_size
        m = self._matrix()
        squeeze = img.ndim == 2
        arr = img[:, :, None] if squeeze else img
        work = arr.astype(np.float32) if arr.dtype not in (np.uint8, np.float32) else arr
        # OpenCV warps at most 4 channels at a time
        chunks = [cv2.warpAffine(np.ascontiguousarray(work[:, :, i:i + 4]), m, (w, h), flags=interp,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 4)
                  for i in range(0, work.shape[2], 4)]
        chunks = [c[:, :, None] if c.ndim == 2 else c for c in chunks]
        out = np.concatenate(chunks, axis=2).astype(arr.dtype, copy=False)
        return out[:, :, 0] if squeeze else out

    def apply_image(self, img):
        return self._warp(img, cv2.INTER_LINEAR, self.fill)

    def apply_segmentation(self, segmentation):
        return self._warp(segmentation, cv2.INTER_NEAREST, 0)

    def apply_coords(self, coords):
        m = self._matrix()
        out = coords.astype(np.float64) @ m[:, :2].T + m[:, 2]
        return out.astype(np.float32)


class RandomExtentND(T.Augmentation):
    """detectron2's RandomExtent (random crop/pad of a scaled, shifted box) for N-channel float arrays."""

    def __init__(self, scale_range, shift_range):
        super().__init__()
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        scale = np.random.uniform(*self.scale_range)
        cx = w / 2 + np.random.uniform(-1, 1) * self.shift_range[0] * w / 2
        cy = h / 2 + np.random.uniform(-1, 1) * self.shift_range[1] * h / 2
        hw, hh = scale * w / 2, scale * h / 2
        out = (int(round(2 * hh)), int(round(2 * hw)))
        return ExtentTransformND((cx - hw, cy - hh, cx + hw, cy + hh), out)


def build_geo_augmentation(cfg, is_train: bool) -> list:
    """ResizeShortestEdge (+ RandomFlip h/v and the configured crop when training) from ``cfg.INPUT``."""
    if is_train:
        augs = [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN,
                                     cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING)]
        if cfg.INPUT.CROP.ENABLED:
            augs.insert(0, T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
        flip = cfg.INPUT.RANDOM_FLIP
        if flip in ("horizontal", "both"):
            augs.append(T.RandomFlip(horizontal=True, vertical=False))
        if flip in ("vertical", "both"):
            augs.append(T.RandomFlip(horizontal=False, vertical=True))
        return augs
    return [T.ResizeShortestEdge(cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, "choice")]


def _scene_window(d: dict):
    """The rasterio Window of a dict's ``window = (col_off, row_off, width, height)``."""
    from rasterio.windows import Window

    try:
        col, row, w, h = (int(v) for v in d["window"])
    except (TypeError, ValueError):
        raise GeoTiffError(f"window {d['window']!r} of {d['file_name']} is not (col_off, row_off, width, height) "
                           "in scene pixels") from None
    return Window(col, row, w, h)


def _shared_empty(shape, dtype: torch.dtype):
    """An uninitialized tensor in shared memory inside a DataLoader worker, else None.

    A worker sends every tensor it returns through shared memory, copying it there unless it
    is there already (as torch's own collate does for batches); reading and converting a
    window straight into it saves an allocation and a copy per sample.
    """
    if torch.utils.data.get_worker_info() is None:
        return None
    numel = int(np.prod(shape, dtype=np.int64))
    storage = torch.UntypedStorage._new_shared(numel * torch.empty((), dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))


class _SharedArrays:
    """``read_geotiff``'s ``alloc``: float32 arrays backed by :func:`_shared_empty` storages,
    each with room after the image for the sample's metadata values (latlon, gsd and one
    wavelength per band), so that a sample sent by a worker costs one shared-memory segment."""

    def __init__(self):
        self.tensors = []

    def __call__(self, shape, dtype):
        numel = int(np.prod(shape, dtype=np.int64))
        t = _shared_empty((numel + 3 + shape[0],), torch.float32) if np.dtype(dtype) == np.float32 else None
        if t is None:
            return np.empty(shape, dtype)
        self.tensors.append((numel, t))
        return t[:numel].view(tuple(shape)).numpy()

    def tensor_of(self, arr: np.ndarray):
        """``(image tensor, spare tail)`` of the storage holding exactly ``arr`` (same memory,
        C order), else ``(None, None)``."""
        if arr.dtype == np.float32 and arr.flags.c_contiguous:
            for numel, t in self.tensors:
                if arr.size == numel and arr.__array_interface__["data"][0] == t.data_ptr():
                    return t[:numel].view(arr.shape), t[numel:]
        return None, None


def _as_int64_tensor(labels: np.ndarray) -> torch.Tensor:
    out = _shared_empty(labels.shape, torch.int64)
    if out is None:
        return torch.as_tensor(labels.astype(np.int64, copy=False))
    np.copyto(out.numpy(), labels, casting="unsafe")
    return out


def _float32_tensors(values: dict, spare: torch.Tensor | None = None) -> dict:
    """``{key: float32 tensor}`` of ``{key: array or number}``, all views of one storage:
    ``spare`` (a 1-d float32 tensor) when they fit in it, else a new one.

    A DataLoader worker moves every tensor storage it sends into a shared-memory segment of
    its own; one storage for the few metadata values of a sample costs one segment, not one
    per value.
    """
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in values.items()}
    total = sum(a.size for a in arrays.values())
    if spare is not None and arrays and spare.numel() >= total:
        flat = spare[:total]
        flat.numpy()[:] = np.concatenate([a.reshape(-1) for a in arrays.values()])
    else:
        flat = torch.from_numpy(np.concatenate([a.reshape(-1) for a in arrays.values()])) if arrays else None
    out, start = {}, 0
    for k, a in arrays.items():
        out[k] = flat[start:start + a.size].view(a.shape)
        start += a.size
    return out


def _area_scale(transforms) -> float:
    """Linear scale factor (output px per input px) of a transform list, from its Jacobian."""
    pts = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]], dtype=np.float32)
    out = transforms.apply_coords(pts.copy()).astype(np.float64)
    jac = np.stack([out[1] - out[0], out[2] - out[0]], axis=1) / 100.0
    det = abs(np.linalg.det(jac))
    return float(np.sqrt(det)) if det > 0 else 1.0


class GeoDatasetMapper:
    """Read, augment and format GeoTIFF samples for d2geo's models (see the module docstring)."""

    @configurable
    def __init__(self, is_train: bool = True, *, augmentations: Sequence = (),
                 bands: Sequence[str] | None = None, sensor: str | None = None,
                 fill: str | float | None = "zero", scale=None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 use_instance_mask: bool = False, instance_mask_format: str = "polygon",
                 recompute_boxes: bool = False, ignore_label: int = IGNORE_LABEL,
                 label_map: dict | None = None, num_classes: int | None = None):
        """
        Args:
            is_train: keep annotations/targets (test-time dicts drop them like detectron2).
            augmentations: detectron2 augmentations, applied to ``H x W x (C*T)`` float32.
            bands: band names to read, in the order the model expects (default: all).
            sensor: default sensor for wavelengths when the dict's ``geo`` has none.
            fill: how invalid pixels are filled (see ``read_geotiff``).
            scale: default DN -> float scale when the dict's ``geo`` has none.
            mean, std: optional per-band normalization applied here; leave None when the
                model normalizes its input itself (d2geo's models do, with ``pixel_mean/std``).
            use_instance_mask, instance_mask_format, recompute_boxes: as detectron2's mapper.
            ignore_label: label of pixels without valid data in ``sem_seg``.
            label_map: default stored-value -> label map for the semantic masks.
            num_classes: semantic classes; a label file holding a value outside
                ``0..num_classes-1`` (other than ``ignore_label``) is an error naming the file
                and the values. Default: the dict's ``geo["num_classes"]``
                (``register_geo_semseg`` sets it from ``stuff_classes``), else unchecked here
                (``GeoSemanticSegmentor`` still checks in training).

        COCO boxes of negative width or height are dropped, with a warning naming the
        annotation id and the image (an augmentation that flips would otherwise turn them
        into valid boxes, while without one detectron2 drops them as empty).
        """
        if fill is None:
            raise ValueError("fill=None would hand NaN to the model: use 'zero', 'mean' or a number")
        if recompute_boxes and not use_instance_mask:
            raise ValueError("recompute_boxes needs use_instance_mask=True")
        self.is_train = is_train
        self.augmentations = T.AugmentationList(list(augmentations))
        self._no_augmentation = not list(augmentations)
        self.bands = tuple(bands) if bands is not None else None
        self.sensor = sensor
        self.fill = fill
        self.scale = scale
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")
        self.mean = None if mean is None else np.asarray(mean, dtype=np.float32)
        self.std = None if std is None else np.asarray(std, dtype=np.float32)
        if self.std is not None and np.any(self.std <= 0):
            raise ValueError("std must be positive")
        self.use_instance_mask = use_instance_mask
        self.instance_mask_format = instance_mask_format
        self.recompute_boxes = recompute_boxes
        self.ignore_label = ignore_label
        self.label_map = label_map
        self.num_classes = num_classes
        logger.info("[GeoDatasetMapper] augmentations (%s): %s", "train" if is_train else "test",
                    self.augmentations)

    @classmethod
    def from_config(cls, cfg, is_train: bool = True):
        geo = cfg.INPUT.get("GEO", None) if hasattr(cfg.INPUT, "get") else None
        ret = {
            "is_train": is_train,
            "augmentations": build_geo_augmentation(cfg, is_train),
            "use_instance_mask": cfg.MODEL.MASK_ON,
            "instance_mask_format": cfg.INPUT.MASK_FORMAT,
            "recompute_boxes": cfg.MODEL.MASK_ON and is_train and cfg.INPUT.CROP.ENABLED,
            "ignore_label": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "num_classes": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES,
        }
        if geo is not None:
            for key in ("BANDS", "SENSOR", "FILL", "SCALE"):
                if key in geo and geo[key] not in (None, "", []):
                    ret[key.lower()] = geo[key]
        return ret

    # ------------------------------------------------------------------------------
    def _read(self, d: dict, alloc=None):
        geo = dict(d.get("geo") or {})
        kwargs = {k: geo[k] for k in _READ_KEYS if k in geo}
        kwargs.setdefault("sensor", self.sensor)
        if d.get("window") is not None:
            kwargs["window"] = _scene_window(d)
        if self.scale is not None:
            kwargs.setdefault("scale", self.scale)
        if "modality_files" in d:
            dated = [k for k in ("num_frames", "timestamps") if kwargs.get(k) is not None]
            if dated:
                raise GeoTiffError(
                    f"geo options {dated} are for a time series, but {d['file_name']} is one date of the "
                    f"modalities {list(d['modality_files'])}: remove them from the dataset's geo options")
            if isinstance(kwargs.get("sensor"), str):
                raise GeoTiffError(
                    f"sensor={kwargs['sensor']!r} names one sensor but {d['file_name']} is a sample of the "
                    f"modalities {list(d['modality_files'])}: leave sensor unset (TerraMind modalities know "
                    f"theirs) or give one per modality, sensor={{modality: sensor}}")
            kwargs = {k: v for k, v in kwargs.items() if v is not None}
            return read_modalities(d["modality_files"], bands=self.bands, fill=self.fill, **kwargs), geo
        paths = d.get("file_names") or d["file_name"]
        if alloc is not None:
            kwargs["alloc"] = alloc
        return read_geotiff(paths, bands=self.bands, fill=self.fill, **kwargs), geo

    def read_unnormalized(self, dataset_dict: dict):
        """``(image, band_names, sensor)`` of a dataset dict as read, before augmentation and
        normalization, NaN where it has no valid data: what the units check
        (:func:`d2geo.data.units.check_units`) compares with the model's statistics."""
        sample, geo = self._read(copy.deepcopy(dataset_dict))
        image = sample.image.copy()
        image[..., ~sample.valid] = np.nan
        sensor = geo.get("sensor", self.sensor)
        return image, sample.band_names, sensor if isinstance(sensor, str) else None

    def _check_label_range(self, labels: np.ndarray, path, num_classes: int | None) -> None:
        if num_classes is None:
            return
        bad = (labels >= num_classes) & (labels != self.ignore_label)
        if bad.any():
            values = np.unique(labels[bad])
            raise GeoTiffError(
                f"{path} holds labels {values[:8].tolist()} but there are {num_classes} classes "
                f"(0..{num_classes - 1}, and {self.ignore_label} for ignored pixels): map them with "
                f"geo['label_map'] (e.g. {{{int(values[0])}: {self.ignore_label}}}) or register the "
                "dataset with more stuff_classes / set the model's num_classes")

    def _scene_labels(self, d: dict, sample, shape) -> np.ndarray:
        """The semantic labels of a scene window (d2geo.data.scenes), ignore where the image has no data."""
        from .scenes.labels import rasterize_window, read_label_raster

        if "label_raster" in d:
            labels = read_label_raster(d.pop("label_raster"), sample.crs, sample.transform, shape)
        else:
            opts = d.pop("scene_label_options", None) or {}
            labels = rasterize_window(d.pop("scene_labels"), shape, all_touched=opts.get("all_touched", False),
                                      background=opts.get("background"), ignore_label=self.ignore_label)
        if not 0 <= self.ignore_label <= 255:  # kept uint8 (as detectron2's augmentations expect) when it fits
            labels = labels.astype(np.int64)
        labels[~sample.valid] = self.ignore_label
        return labels

    _warned_boxes: set = set()

    def _box_is_valid(self, obj: dict, index: int, file_name) -> bool:
        """False (with a warning, once per annotation) for a box of negative width or height."""
        if "bbox" not in obj:
            return True
        box = BoxMode.convert(list(obj["bbox"]), obj["bbox_mode"], BoxMode.XYXY_ABS)
        if box[2] >= box[0] and box[3] >= box[1]:
            return True
        key = (str(file_name), index, tuple(obj["bbox"]))
        if key not in self._warned_boxes:
            self._warned_boxes.add(key)
            logger.warning("dropping annotation id=%s (#%d of the image) of %s: its box %s (%s) has "
                           "negative width or height; fix it in the annotation file (x0 <= x1, y0 <= y1)",
                           obj.get("id", "?"), index, file_name, list(obj["bbox"]),
                           BoxMode(obj["bbox_mode"]).name)
        return False

    def _channel_stats(self, c: int, t: int | None):
        """mean and std per channel of the (C*T) image rows (each band's values for every frame)."""
        if len(self.mean) != c:
            raise ValueError(f"mean/std have {len(self.mean)} values for {c} bands")
        reps = t or 1
        return np.repeat(self.mean, reps), np.repeat(self.std, reps)

    def __call__(self, dataset_dict: dict) -> dict:
        d = copy.deepcopy(dataset_dict)
        if "file_name" not in d:
            raise KeyError("a GeoDatasetMapper dataset dict needs 'file_name' (a GeoTIFF path or a list of them)")
        # without augmentations or normalization the image read is the one sent: read it
        # straight into shared memory inside a DataLoader worker
        shared = _SharedArrays() if self._no_augmentation and self.mean is None else None
        sample, geo = self._read(d, alloc=shared)
        image = sample.image
        c = image.shape[0]
        t = image.shape[1] if image.ndim == 4 else None
        h, w = image.shape[-2:]
        if "height" in d and "width" in d and (d["height"], d["width"]) != (h, w):
            raise GeoTiffError(f"{d['file_name']} is {h}x{w} but its dataset dict says "
                               f"{d['height']}x{d['width']}: fix the dataset registration")
        # detectron2's augmentations take (H, W, C); without any, the image stays (C, H, W)
        hwc = None if self._no_augmentation else np.ascontiguousarray(image.reshape(-1, h, w).transpose(1, 2, 0))

        sem_seg = None
        if "sem_seg_file_name" in d:
            label_map = geo.get("label_map", self.label_map)
            label_path = d.pop("sem_seg_file_name")
            sem_seg = read_label(label_path, label_map=label_map,
                                 ignore_label=self.ignore_label, invalid=~sample.valid, like=sample)
            self._check_label_range(sem_seg, label_path, geo.get("num_classes", self.num_classes))

        if "scene_labels" in d or "label_raster" in d:
            sem_seg = self._scene_labels(d, sample, (h, w))
            self._check_label_range(sem_seg, d["file_name"], geo.get("num_classes", self.num_classes))

        if "geojson_file_name" in d:
            annos = geojson_to_annotations(d.pop("geojson_file_name"), sample.transform, crs=sample.crs,
                                           geojson_crs=geo.get("geojson_crs"),
                                           category_key=geo.get("category_key", "category_id"),
                                           class_names=geo.get("class_names"), image_shape=(h, w))
            d.setdefault("annotations", []).extend(annos)

        if hwc is None:
            transforms = T.TransformList([])
            chw, nh, nw = image.reshape(-1, h, w), h, w
            if chw.dtype != np.float32:
                chw = chw.astype(np.float32)
            if self.mean is not None:
                mean, std = self._channel_stats(c, t)
                chw = (chw - mean[:, None, None]) / std[:, None, None]
        else:
            aug_input = T.AugInput(hwc, sem_seg=sem_seg)
            transforms = self.augmentations(aug_input)
            hwc, sem_seg = aug_input.image, aug_input.sem_seg
            if hwc.dtype != np.float32:
                hwc = hwc.astype(np.float32)
            nh, nw = hwc.shape[:2]
            if sem_seg is not None:
                # pixels an augmentation padded in are not data: ignore them too
                covered = transforms.apply_segmentation(np.ones((h, w), dtype=np.uint8))
                sem_seg = np.where(covered > 0, sem_seg, self.ignore_label)
            if self.mean is not None:
                mean, std = self._channel_stats(c, t)
                hwc = (hwc - mean) / std
            # a copy, not ascontiguousarray: that keeps the negative strides of a flipped axis
            # of length 1, which torch refuses
            chw = hwc.transpose(2, 0, 1).copy()
        out_img = chw.reshape(c, t, nh, nw) if t is not None else chw
        tensor, spare = shared.tensor_of(out_img) if shared is not None else (None, None)
        d["image"] = tensor if tensor is not None else torch.as_tensor(out_img)

        md, floats = {}, {}
        if "timestamps" in sample.metadata:
            md["timestamps"] = as_timestamps(sample.metadata["timestamps"],
                                             where=f"the timestamps of {d['file_name']}")
        if "latlon" in sample.metadata:
            floats["latlon"] = sample.metadata["latlon"]
        if "gsd" in sample.metadata:
            # a 0-d tensor, not a float: traced and exported models take tensors only
            scale = 1.0 if hwc is None else _area_scale(transforms)
            floats["gsd"] = np.float64(float(sample.metadata["gsd"]) / scale)
        if "wavelengths" in sample.metadata:
            floats["wavelengths"] = sample.metadata["wavelengths"]
        md.update(_float32_tensors(floats, spare))
        d["metadata"] = md
        d.pop("geo", None)

        if sem_seg is not None:
            d["sem_seg"] = _as_int64_tensor(sem_seg)
        if not self.is_train:
            d.pop("annotations", None)
            return d
        if "annotations" in d:
            d["instances"] = self._instances(d, transforms, (nh, nw))
        return d

    def _instances(self, d: dict, transforms, image_size):
        """The transformed ``annotations`` of ``d`` (popped) as ``Instances``; subclasses
        with other box types override it (``d2geo.data.rotated.RotatedGeoDatasetMapper``)."""
        kept = [obj for i, obj in enumerate(d.pop("annotations"))
                if obj.get("iscrowd", 0) == 0 and self._box_is_valid(obj, i, d["file_name"])]
        if self.use_instance_mask and self.instance_mask_format == "polygon":
            rle = next((obj for obj in kept if isinstance(obj.get("segmentation"), dict)), None)
            if rle is not None:
                raise GeoTiffError(
                    f"annotation id={rle.get('id', '?')} of {d['file_name']} has a COCO RLE segmentation (a dict "
                    f"with 'counts' and 'size'), which polygon masks cannot hold: use bitmask masks, "
                    f"instance_mask_format='bitmask' (LazyConfig: dataloader.train.mapper.instance_mask_format="
                    f"'bitmask'; yacs: INPUT.MASK_FORMAT bitmask); bitmask takes polygons too")
        annos = [utils.transform_instance_annotations(obj, transforms, image_size) for obj in kept]
        if not self.use_instance_mask:
            for a in annos:
                a.pop("segmentation", None)
        instances = utils.annotations_to_instances(annos, image_size, mask_format=self.instance_mask_format)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        return utils.filter_empty_instances(instances)
