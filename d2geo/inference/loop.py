"""The window loop: one scene through the model, blended, deduplicated and written.

:func:`run_scene` is the only place where d2geo runs a model over windows of a scene; a
single scene (:func:`d2geo.inference.predict_scene`) and every scene of a region
(:func:`d2geo.inference.region.predict_region`) go through it. Windows are read by a
``DataLoader`` (``num_workers`` processes ahead of the model), ``batch_size`` a forward, under
the autocast of :mod:`d2geo.precision`; scenes wider than ``max_strip_width`` are cut into
column strips, each read with ``overlap`` px of context on either side, so the
:class:`~d2geo.inference.blend.BlendBuffer` does not grow with the scene. The class map (and
scores) are written in strips to scratch rasters, then converted to COGs; polygons are made
from the class map strip by strip; instances are merged across windows. Every output appears
complete or not at all (:func:`~d2geo.data.files.atomic_path`; class map last).

A model whose ``array_backend`` is ``"numpy"`` (a model file in onnxruntime,
:func:`d2geo.inference.model_file.load_model`) takes windows as numpy arrays and returns
numpy logits: then the windows are read in this process and torch is never imported.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from d2geo.data.files import atomic_path
from d2geo.data.geotiff import GeoTiffError
from d2geo.precision import autocast

from .blend import BlendBuffer
from .instances import SceneInstance, float32_instances, instances_to_geojson, merge_instances, window_instances
from .options import InferenceOptions
from .panoptic import PANOPTIC_TARGETS, PanopticScene
from .outputs import (
    default_class_names, open_class_map, open_scores, scratch_path, to_cog, write_category_names, write_geojson,
    write_geoparquet,
)
from .request import SceneRequestError, read_scene_window
from .rotated import rotated_amp
from .windows import blend_weights, column_strips, tile_windows, window_shape

logger = logging.getLogger(__name__)

__all__ = ["run_scene", "SceneResult", "TARGETS", "count_windows", "disk_full"]

#: what :func:`run_scene` writes, by key of its ``targets``
TARGETS = ("class_map", "scores", "geojson", "geoparquet", "regions_geojson", "regions_geoparquet") + PANOPTIC_TARGETS


@dataclass
class SceneResult:
    windows: int = 0
    skipped: int = 0  # windows without valid data, not run (InferenceOptions.skip_empty)
    detections: int = 0
    instances: list = field(default_factory=list)  # kept SceneInstance
    regions: int | None = None
    class_names: list | None = None
    objects: int | None = None  # panoptic runs: objects (ids) in the scene


class _WindowReader:
    """Windows of one scene (a scene of modalities: stacked band-wise), in DataLoader workers
    (torch models) or in this process (``tensors=False``: numpy arrays, for numpy models)."""

    def __init__(self, scene, windows, shape, read_kwargs, tensors: bool = True):
        self.paths, self.modalities = scene.paths, scene.modalities
        self.windows, self.shape, self.kw, self.tensors = windows, shape, read_kwargs, tensors

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        from rasterio.windows import Window

        (row, col), (h, w) = self.windows[i], self.shape
        s = read_scene_window(self.paths, self.modalities, Window(col, row, w, h), **self.kw)
        if not self.tensors:
            return row, col, {"image": np.asarray(s.image, np.float32), "height": h, "width": w,
                              "metadata": dict(s.metadata)}, s.valid
        import torch

        meta = {k: (torch.as_tensor(v) if not isinstance(v, float) else v) for k, v in s.metadata.items()}
        return row, col, {"image": torch.as_tensor(s.image), "height": h, "width": w, "metadata": meta}, s.valid


def _collate(batch):
    return batch


def _numpy_model(model) -> bool:
    return getattr(model, "array_backend", "torch") == "numpy"


def _batches(model, scene, wins, shape, read_kw, opts: InferenceOptions):
    """The windows in batches of ``opts.batch_size``: a DataLoader for torch models, read in
    this process for numpy models."""
    reader = _WindowReader(scene, wins, shape, read_kw, tensors=not _numpy_model(model))
    if not reader.tensors:
        yield from _read_ahead(reader, opts.batch_size, ahead=2 if opts.num_workers > 0 else 0)
        return
    import torch

    yield from torch.utils.data.DataLoader(
        reader, batch_size=opts.batch_size, shuffle=False, num_workers=opts.num_workers, collate_fn=_collate,
        prefetch_factor=2 if opts.num_workers > 0 else None)


def _read_ahead(reader, batch_size: int, ahead: int):
    """Batches of ``reader`` in order, up to ``ahead`` batches read by a thread while the model
    runs (numpy models: onnxruntime and GDAL release the GIL); ``ahead=0``: read when asked."""
    chunks = [range(i, min(i + batch_size, len(reader))) for i in range(0, len(reader), batch_size)]

    def read(idx):
        return [reader[j] for j in idx]

    if ahead <= 0:
        for c in chunks:
            yield read(c)
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="d2geo-read-ahead")
    try:
        pending = deque(pool.submit(read, c) for c in chunks[:ahead])
        for c in chunks[ahead:] + [None]:
            batch = pending.popleft().result()
            if c is not None:
                pending.append(pool.submit(read, c))
            yield batch
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _forward(model, items, device_type: str, amp):
    if _numpy_model(model):
        return model(items)
    import torch

    with torch.no_grad(), autocast(device_type, amp):
        return model(items)


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch
        return x.detach().float().cpu().numpy()
    return np.asarray(x, np.float32)


def _strip_windows(height: int, width: int, a: int, b: int, opts: InferenceOptions, shape) -> tuple[list, int, int]:
    """The windows of the column strip ``[a, b)`` read with ``overlap`` px of context each side."""
    c0, c1 = max(0, a - opts.overlap), min(width, b + opts.overlap)
    # a strip narrower than a window: its windows start where a whole window fits the scene
    wins = [(r, min(c + c0, width - shape[1])) for r, c in tile_windows(height, c1 - c0, opts.tile, opts.overlap)]
    return list(dict.fromkeys(wins)), c0, c1


def run_scene(model, scene, opts: InferenceOptions, targets: Mapping[str, str], *, scratch_dir: str,
              semseg: bool, instances: bool, owner: Callable | None = None, device_type: str = "cpu",
              on_windows: Callable | None = None, properties: dict | None = None,
              raster_tags: dict | None = None, panoptic=None) -> SceneResult:
    """Predict ``scene`` (a :class:`~d2geo.inference.region.inputs.RegionScene`) and write
    ``targets`` (keys of :data:`TARGETS` -> paths). ``owner(row0, col0, rows, cols)`` -> the
    pixels the scene owns (others are no data; instances are kept where it owns their box
    centre); ``on_windows(done, total)`` is called after each batch; ``properties`` are added
    to every vector feature, ``raster_tags`` to the class map. ``panoptic`` (a
    :class:`~d2geo.inference.panoptic.PanopticSpec`): the class map (``semseg`` False), the
    instance ids and the parcels come from the windows' ``panoptic_seg``
    (:class:`~d2geo.inference.panoptic.PanopticScene`)."""
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; use {TARGETS}")
    opts.validate()
    if panoptic is not None and semseg:
        raise ValueError("a panoptic run writes the class map from panoptic_seg: semseg must be False")
    try:
        return _run_scene(model, scene, opts, targets, scratch_dir, semseg, instances, owner, device_type,
                          on_windows, properties, raster_tags, panoptic)
    except Exception as e:
        full = disk_full(e, [scratch_dir] + [os.path.dirname(os.path.abspath(p)) for p in targets.values()])
        if full is not None:
            raise full from e
        raise


def disk_full(error: BaseException, folders) -> OSError | None:
    """An ``OSError(ENOSPC)`` naming the folder whose filesystem is full, when ``error`` (an
    OSError, or a GDAL write error, which does not say why) came from a full disk; else None."""
    import errno
    import shutil

    said = isinstance(error, OSError) and error.errno == errno.ENOSPC or "No space left" in str(error) \
        or "Free disk space" in str(error)
    for folder in dict.fromkeys(folders):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if said or free < (1 << 20):
            return OSError(errno.ENOSPC, f"no space left on {folder} ({free / 2**20:.1f} MiB free; {error}): free "
                                         f"some space or choose another output folder")
    return None


def _run_scene(model, scene, opts, targets, scratch_dir, semseg, instances, owner, device_type, on_windows,
               properties, raster_tags, panoptic=None) -> SceneResult:
    height, width = scene.height, scene.width
    shape = window_shape(height, width, opts.tile)
    weights = blend_weights(shape[0], opts.overlap, shape[1])
    read_kw = dict(bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, scale=opts.scale, fill=opts.fill)
    res = SceneResult()
    amp = rotated_amp(model, opts.amp)  # rotated detectors: float32 (detectron2's rotated NMS)
    detections: list[SceneInstance] = []
    rotated, rotated_windows = None, []  # rotated: whether the boxes are (told by the first window's instances)
    sem_dst = prob_dst = None
    want_regions = "regions_geojson" in targets or "regions_geoparquet" in targets
    pan = PanopticScene(panoptic, height, width, opts.overlap, where=f"scene {scene.id}") if panoptic else None
    with contextlib.ExitStack() as stack:
        raw = {}
        if semseg:
            raw["class_map"] = scratch_path(stack, scratch_dir, scene.id + ".raw")
            if "scores" in targets:
                raw["scores"] = scratch_path(stack, scratch_dir, scene.id + ".scores.raw")

        def write(rows):
            from rasterio.windows import Window

            if rows is None:
                return
            win = Window(rows.col, rows.row, rows.labels.shape[1], rows.labels.shape[0])
            sem_dst.write(rows.labels[None], window=win)
            if prob_dst is not None:
                prob_dst.write(rows.scores, window=win)

        checked = False
        n_classes = None  # the logits' class count, once a window has run
        try:
            for a, b in column_strips(width, opts.max_strip_width):
                wins, c0, c1 = _strip_windows(height, width, a, b, opts, shape)
                buf, current_row = None, None
                for batch in _batches(model, scene, wins, shape, read_kw, opts):
                    # windows without valid data add nothing to the blend: not run once the class
                    # count is known (semantic runs; box-only instances are not cut to valid data, and
                    # panoptic runs keep every window)
                    skip = opts.skip_empty and not instances and pan is None and n_classes is not None
                    run = [i for i, b in enumerate(batch) if not skip or np.asarray(b[3]).any()]
                    outputs = {}
                    if run:
                        outs = _forward(model, [batch[i][2] for i in run], device_type, amp)
                        if len(outs) != len(run):
                            raise GeoTiffError(f"the model returned {len(outs)} outputs for {len(run)} inputs")
                        if not checked:  # models whose outputs model_outputs() could not tell
                            wanted = ((semseg, "sem_seg", "a class map"), (instances, "instances", "instances"),
                                      (pan is not None, "panoptic_seg", "a panoptic segmentation"))
                            for want, key, kind in wanted:
                                if want and key not in outs[0]:
                                    raise SceneRequestError(f"the model returns {sorted(outs[0])}, not {key!r}: "
                                                            f"it cannot give {kind}")
                            checked = True
                        outputs = dict(zip(run, outs))
                    res.skipped += len(batch) - len(run)
                    for i, (row, col, _, valid) in enumerate(batch):
                        out = outputs.get(i)
                        valid = np.asarray(valid)
                        if semseg:
                            logits = None
                            if out is not None:
                                logits = _as_numpy(out["sem_seg"])
                                if logits.shape[-2:] != shape:
                                    raise GeoTiffError(f"the model's sem_seg is {tuple(logits.shape)}, expected "
                                                       f"(K, {shape[0]}, {shape[1]}) (the window)")
                                if sem_dst is None:
                                    n_classes = logits.shape[0]
                                    res.class_names = default_class_names(n_classes, opts.class_names,
                                                                          SceneRequestError)
                                    sem_dst = open_class_map(raw["class_map"], scene, res.class_names,
                                                             blocksize=opts.cog_blocksize, tags=raster_tags)
                                    if "scores" in raw:
                                        prob_dst = open_scores(raw["scores"], scene, res.class_names,
                                                               blocksize=opts.cog_blocksize,
                                                               tags={"scene": scene.id})
                            if buf is None and n_classes is not None:
                                buf = BlendBuffer(n_classes, height, shape[0], c0, c1, out_cols=(a, b),
                                                  owner=owner, scores=prob_dst is not None)
                            if buf is not None and row != current_row:
                                write(buf.flush(row))
                                current_row = row
                            if logits is not None:
                                buf.add(row, col, logits, weights, valid)
                        if pan is not None and out is not None:
                            pan.add(out["panoptic_seg"], row, col, valid)
                        if instances and out is not None:
                            inst = float32_instances(out["instances"])
                            if rotated is None:
                                from .rotated import check_rotated_outputs

                                rotated = check_rotated_outputs(inst, opts.rotated)
                            if rotated:  # oriented boxes: d2geo.inference.rotated
                                from .rotated import window_rotated_detections

                                rotated_windows.append(window_rotated_detections(
                                    inst, row, col, shape=shape, height=height, width=width, valid=valid,
                                    score_threshold=opts.score_threshold, edge_margin=opts.edge_margin))
                            else:
                                detections.extend(window_instances(inst, row, col, shape, height, width, valid,
                                                                   opts.score_threshold, opts.edge_margin))
                    res.windows += len(batch)
                    if on_windows is not None:
                        on_windows(len(batch), len(wins))
                if buf is not None:
                    write(buf.flush(height))
        finally:
            for d in (sem_dst, prob_dst):
                if d is not None:
                    d.close()
        final = {}
        if semseg and "class_map" in targets:
            final["class_map"] = stack.enter_context(atomic_path(targets["class_map"]))
            to_cog(raw["class_map"], final["class_map"], "nearest", opts.cog_blocksize)
            final["aux"] = stack.enter_context(atomic_path(targets["class_map"] + ".aux.xml"))
            write_category_names(final["aux"], res.class_names)
        if "scores" in raw:
            final["scores"] = stack.enter_context(atomic_path(targets["scores"]))
            to_cog(raw["scores"], final["scores"], "average", opts.cog_blocksize)
        if pan is not None:
            res.objects = pan.finish(stack, targets, scene, opts, scratch_dir=scratch_dir, owner=owner,
                                     properties=properties, raster_tags=raster_tags)
            res.class_names = list(panoptic.class_names)
        if semseg and want_regions:
            _write_regions(stack, raw["class_map"], targets, opts, res, properties, scene)
        if instances and rotated:
            from .rotated import scene_rotated_detections

            res.detections, res.instances, gj = scene_rotated_detections(rotated_windows, scene, opts, owner,
                                                                         properties)
        elif instances:
            res.detections = len(detections)
            kept = merge_instances(detections, opts.dedup_threshold)
            if owner is not None:
                kept = [d for d in kept if _owns(owner, d, height, width)]
            res.instances = kept
            gj = instances_to_geojson(kept, scene.transform, scene.crs, to_crs=opts.to_crs,
                                      class_names=opts.object_names)
            for f in gj["features"]:
                f["properties"].update(properties or {})
        if instances:
            if "geojson" in targets:
                write_geojson(gj, stack.enter_context(atomic_path(targets["geojson"])))
            if "geoparquet" in targets:
                write_geoparquet(gj, stack.enter_context(atomic_path(targets["geoparquet"])),
                                 opts.to_crs or scene.crs)
        # leaving the stack renames every output into place (class map last: entered first)
    logger.info("%s: %d windows%s, %dx%d px%s%s", scene.id, res.windows,
                f" ({res.skipped} without valid data, not run)" if res.skipped else "", height, width,
                f", {scene.km2:.2f} km^2" if scene.gsd else "",
                f", {len(res.instances)} instances kept of {res.detections} detections" if instances else "")
    if pan is not None:
        logger.info("%s: %d panoptic objects", scene.id, res.objects)
    return res


def _write_regions(stack, class_map: str, targets, opts: InferenceOptions, res: SceneResult, properties, scene):
    from .polygons import PolygonRequestError, polygonize_class_map, resolve_classes

    try:
        chosen = resolve_classes(opts.polygon_classes, res.class_names, what="--polygon-classes")
        excluded = resolve_classes(opts.polygon_exclude, res.class_names, what="--polygon-exclude")
    except PolygonRequestError as e:
        raise SceneRequestError(str(e)) from None
    fc = polygonize_class_map(class_map, class_names=res.class_names, classes=chosen, exclude=excluded,
                              min_area_m2=opts.min_area_m2, to_crs=opts.to_crs, strip_rows=opts.polygon_strip_rows,
                              extra=properties, label=f"the class map of {scene.id}")
    res.regions = len(fc["features"])
    if "regions_geojson" in targets:
        write_geojson(fc, stack.enter_context(atomic_path(targets["regions_geojson"])))
    if "regions_geoparquet" in targets:
        write_geoparquet(fc, stack.enter_context(atomic_path(targets["regions_geoparquet"])), opts.to_crs or scene.crs,
                         empty_columns=("class_id", "class", "area_m2", "scene"))


def _owns(owner: Callable, d: SceneInstance, height: int, width: int) -> bool:
    """Whether the scene owns the centre of the instance's box."""
    import math

    cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
    r, c = int(min(max(math.floor(cy), 0), height - 1)), int(min(max(math.floor(cx), 0), width - 1))
    return bool(owner(r, c, 1, 1)[0, 0])


def count_windows(height: int, width: int, opts: InferenceOptions) -> int:
    """How many windows :func:`run_scene` runs over a ``height x width`` scene (strips included)."""
    shape = window_shape(height, width, opts.tile)
    return sum(len(_strip_windows(height, width, a, b, opts, shape)[0])
               for a, b in column_strips(width, opts.max_strip_width))
