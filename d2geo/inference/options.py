"""The options of a prediction run (scene or region), checked when they are made.

:class:`InferenceOptions` holds every option that says how windows are read, blended and
written; a value out of range is a :class:`~d2geo.inference.request.SceneRequestError`
naming the fix when the options are built, before any model or scene is touched.
:meth:`InferenceOptions.output_key` is what changes the outputs (for the resume records).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from d2geo.precision import AMP_CHOICES

from .outputs import COG_BLOCK
from .request import SceneRequestError

__all__ = ["InferenceOptions", "RegionOptions"]


@dataclasses.dataclass
class InferenceOptions:
    tile: int = 256  # window size in pixels (shrunk to the scene where the scene is smaller)
    overlap: int = 64  # overlap of neighbouring windows in pixels
    batch_size: int = 4  # windows per forward
    num_workers: int = 1  # processes reading windows ahead of the model (0: none; numpy models: a thread)
    skip_empty: bool = True  # semantic runs: windows without valid data are not run (their pixels are no data anyway)
    bands: Sequence[str] | None = None
    band_names: Any = None  # names of the file's bands, or {modality: names}
    sensor: Any = None  # sensor key, or {modality: key}
    scale: Any = None  # DN scale, or {modality: scale}
    fill: Any = "zero"  # what invalid pixels inside the scene are filled with ("zero", "mean", a number)
    class_names: Sequence[str] | None = None
    object_names: Sequence[str] | None = None
    probabilities: bool = False  # class scores (float32 raster)
    instances: bool | None = None  # None: when the model predicts instances
    semseg: bool | None = None  # None: when the model predicts sem_seg
    panoptic: bool | None = None  # None: when the model predicts panoptic_seg (class map, instance ids, parcels)
    rotated: bool | None = None  # rotated polygons (d2geo.inference.rotated): None when the model's boxes are rotated
    to_crs: str | None = None
    score_threshold: float = 0.5
    dedup_threshold: float = 0.5
    edge_margin: int = 2
    amp: str = "auto"  # d2geo.precision.autocast: bfloat16 where the device has it natively; "bf16", "fp16", "off"
    max_strip_width: int = 4096
    cog_blocksize: int = COG_BLOCK  # overviews are made until the image fits one block
    polygons: bool = False  # semantic models: the class map's regions as polygons
    polygon_classes: Sequence[str | int] | None = None  # only these classes (names or ids)
    polygon_exclude: Sequence[str | int] | None = None  # not these classes (names or ids)
    min_area_m2: float = 0.0  # regions smaller than this are dropped
    polygon_strip_rows: int = 1024  # rows of the class map polygonized at a time (memory)
    quicklook: bool = False  # a quick-look PNG next to each output
    units_check: bool = True  # d2geo.data.units: refuse an input whose magnitude does not fit the model (False: warn)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise :class:`SceneRequestError` for a value out of range (run again when a run
        starts: fields may have been changed since)."""
        E = SceneRequestError
        for name in ("tile", "overlap", "batch_size", "num_workers", "edge_margin", "max_strip_width",
                     "cog_blocksize", "polygon_strip_rows"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise E(f"{name}={v!r}: give a whole number")
        if self.tile < 1:
            raise E(f"tile={self.tile}: the window size is at least 1 pixel (e.g. --tile 256)")
        if not 0 <= self.overlap < self.tile:
            raise E(f"overlap={self.overlap}: overlap must be in [0, tile) = [0, {self.tile})")
        if not isinstance(self.skip_empty, bool):
            raise E(f"skip_empty={self.skip_empty!r}: give True or False")
        if self.batch_size < 1 or self.num_workers < 0:
            raise E(f"batch_size={self.batch_size}, num_workers={self.num_workers}: use at least 1 window a "
                    f"forward and 0 or more reading processes")
        for name in ("score_threshold", "dedup_threshold"):
            v = getattr(self, name)
            if not 0.0 <= float(v) <= 1.0:
                raise E(f"{name}={v}: give a value in [0, 1]")
        if str(self.amp).lower() not in AMP_CHOICES and self.amp not in (None, False):
            raise E(f"amp={self.amp!r}: use one of {', '.join(AMP_CHOICES)}")
        if self.cog_blocksize < 128 or self.cog_blocksize % 16:
            raise E(f"cog_blocksize={self.cog_blocksize}: GDAL's COG tiles are a multiple of 16 and at least "
                    f"128 px; use 256 or 512")
        if self.max_strip_width < self.tile:
            raise E(f"max_strip_width={self.max_strip_width} is narrower than a window ({self.tile}): make it at "
                    f"least the tile size")
        if self.polygon_strip_rows < 1:
            raise E(f"polygon_strip_rows={self.polygon_strip_rows}: use at least 1 row")
        if self.min_area_m2 < 0:
            raise E(f"min_area_m2={self.min_area_m2} is negative: use 0 (keep every region) or a positive area "
                    f"in square metres")
        if self.fill not in ("zero", "mean", None) and not isinstance(self.fill, (int, float)):
            raise E(f"fill={self.fill!r}: use 'zero', 'mean' or a number")
        if self.class_names is not None and len(set(self.class_names)) != len(self.class_names):
            raise E(f"class names {list(self.class_names)} name a class twice: give each class its own name")

    def replace(self, **changes) -> "InferenceOptions":
        return dataclasses.replace(self, **changes)

    def output_key(self) -> dict:
        """The options that change the outputs (the manifest's model key hashes them)."""
        d = dataclasses.asdict(self)
        for speed_or_memory in ("num_workers", "polygon_strip_rows", "quicklook", "units_check", "skip_empty"):
            d.pop(speed_or_memory)  # polygons are normalized and sorted: strips change memory only
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


#: the name :mod:`d2geo.data.region` gave them
RegionOptions = InferenceOptions
