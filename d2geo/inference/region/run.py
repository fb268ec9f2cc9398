"""The region driver: every scene of a region through :func:`~d2geo.inference.loop.run_scene`.

:func:`predict_region` checks the whole request first (options, every scene against the
model, output names, the mosaic's CRS), holds the output folder (:class:`~.manifest.OutputLock`),
skips the scenes whose resume record matches, predicts the rest, each scene's pixels that
another scene owns left as no data (:mod:`.ownership`), and (rank 0) writes ``mosaic.vrt``
and ``manifest.json``. See :mod:`d2geo.inference.region` for the outputs.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from typing import Sequence

from d2geo.data.files import atomic_path

from ..loop import run_scene
from ..model_file import ModelMetadata, check_scene_gsd
from ..options import InferenceOptions
from ..panoptic import panoptic_spec
from ..request import check_input_units, check_polygon_request, check_request, model_outputs
from ..rotated import check_rotated_request
from ..windows import column_strips
from .inputs import RegionRequestError, RegionScene, collect_scenes, shard_scenes
from .manifest import STATE_DIR, OutputLock, done_path, record_done, remove_stale_temporaries, scene_is_done
from .mosaic import check_mosaic_crs, write_mosaic_vrt
from .ownership import crosses_antimeridian, ownership

logger = logging.getLogger(__name__)

__all__ = ["predict_region", "scene_outputs", "check_output_names", "check_region_request"]


def scene_outputs(scene: RegionScene, out_dir: str, opts: InferenceOptions, semseg: bool, instances: bool,
                  panoptic: bool = False) -> dict:
    """``{target: path}`` of one scene (the targets of :func:`~d2geo.inference.loop.run_scene`)."""
    out = {}
    j = lambda suffix: os.path.join(out_dir, scene.id + suffix)  # noqa: E731
    if panoptic:  # the class map from panoptic_seg, the instance ids, the parcels
        out.update(class_map=j(".tif"), instance_ids=j(".ids.tif"), parcels_geojson=j(".parcels.geojson"),
                   parcels_geoparquet=j(".parcels.parquet"))
    if semseg:
        out["class_map"] = j(".tif")
        if opts.probabilities:
            out["scores"] = j(".scores.tif")
        if opts.polygons:
            out["regions_geojson"] = j(".regions.geojson")
            out["regions_geoparquet"] = j(".regions.parquet")
    if instances:
        out["geojson"] = j(".geojson")
        out["geoparquet"] = j(".parquet")
    return out


def check_output_names(scenes: Sequence[RegionScene], out_dir: str, opts: InferenceOptions, semseg: bool,
                       instances: bool, panoptic: bool = False) -> None:
    """Refuse, before any work, outputs that would land on one file (scenes ``a`` and
    ``a.scores`` with class scores), on an input, or an output folder that is a scene's folder."""
    inputs = {os.path.abspath(p): s.id for s in scenes for p in s.sources}
    folders = {os.path.dirname(p) for p in inputs}
    if out_dir in folders:
        raise RegionRequestError(
            f"the output folder {out_dir} holds the scenes themselves: a rerun would read the outputs as scenes; "
            f"choose another --output-dir (e.g. {os.path.join(out_dir, 'predictions')})")
    owners: dict[str, str] = {}
    fixed = {os.path.join(out_dir, n): "the region" for n in ("mosaic.vrt", "manifest.json")}
    for s in scenes:
        outs = list(scene_outputs(s, out_dir, opts, semseg, instances, panoptic).values())
        if semseg or panoptic:
            outs += [os.path.join(out_dir, s.id + ".tif.aux.xml"), os.path.join(out_dir, s.id + ".warped.vrt")]
        for p in outs:
            p = os.path.abspath(p)
            other = owners.get(p) or fixed.get(p)
            if other is not None:
                raise RegionRequestError(
                    f"scene {s.id} would write {os.path.basename(p)}, which is also an output of "
                    f"{'scene ' + other if other != 'the region' else 'the region'}: rename one of the scenes "
                    f"(their file names make the output names)")
            if p in inputs:
                raise RegionRequestError(f"scene {s.id} would write {os.path.basename(p)} over the input of scene "
                                         f"{inputs[p]}: choose another --output-dir")
            owners[p] = s.id


class _Progress:
    """km^2 done and the ETA over all ranks (shown on rank 0; other ranks' finished scenes
    are counted when their manifest entries appear)."""

    def __init__(self, enabled: bool, total_km2: float, out_dir: str, others: dict):
        self.bar = None
        self.out_dir, self.others, self.counted = out_dir, dict(others), set()
        self.last_poll = 0.0
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total_km2, unit="km²", unit_scale=False, desc="region",
                                bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} km² [{elapsed}<{remaining}, "
                                           "{rate_fmt}]")
            except ImportError:  # pragma: no cover
                self.bar = None

    def add(self, km2: float):
        if self.bar is None:
            return
        self.bar.update(min(km2, max(self.bar.total - self.bar.n, 0.0)))  # float sums never pass the total
        now = time.monotonic()
        if now - self.last_poll > 2.0:
            self.poll()

    def poll(self):
        self.last_poll = time.monotonic()
        for sid, km2 in self.others.items():
            if sid not in self.counted and os.path.isfile(done_path(self.out_dir, sid)):
                self.counted.add(sid)
                self.bar.update(km2)

    def close(self):
        if self.bar is not None:
            self.poll()
            self.bar.close()


def _kinds(model, opts: InferenceOptions) -> tuple[bool, bool, bool]:
    outputs = model_outputs(model)
    can_pan = outputs is not None and "panoptic_seg" in outputs
    panoptic = opts.panoptic if opts.panoptic is not None else can_pan
    if panoptic and not can_pan:
        have = sorted(outputs) if outputs is not None else "outputs it cannot tell before running"
        raise RegionRequestError(f"panoptic outputs were asked of a model that predicts {have}, not panoptic_seg: "
                                 f"use a panoptic model (GeoPanopticFPN, configs/*/panoptic_fpn_*.py) or drop "
                                 f"panoptic=True")
    if panoptic:  # the class map is the panoptic one; the parcels are the instances
        if opts.semseg:
            raise RegionRequestError("semseg=True and panoptic outputs would both write <scene>.tif: a panoptic "
                                     "model's class map is its panoptic one; set panoptic=False for the semantic "
                                     "branch's class map")
        if opts.polygons:
            raise RegionRequestError("--polygons polygonizes a semantic class map; a panoptic run writes its "
                                     "objects as <scene>.parcels.geojson/.parquet: drop --polygons")
        return False, bool(opts.instances), True
    semseg = opts.semseg if opts.semseg is not None else (outputs is None or "sem_seg" in outputs)
    instances = opts.instances if opts.instances is not None else (outputs is not None and "instances" in outputs)
    if not semseg and not instances:
        raise RegionRequestError("nothing to write: the model predicts neither sem_seg nor instances")
    if opts.polygons and not semseg:
        raise RegionRequestError("polygons (--polygons) are made from the class map, but this model predicts no "
                                 "sem_seg: drop --polygons (instance models write their polygons anyway)")
    return semseg, instances, False


def check_region_request(model, scenes: Sequence[RegionScene], out_dir: str, opts: InferenceOptions, *,
                         mosaic_crs=None) -> tuple[bool, bool, bool]:
    """The whole request against the model and every scene, before any work; returns
    ``(semseg, instances, panoptic)``: what the run writes."""
    opts.validate()
    semseg, instances, panoptic = _kinds(model, opts)
    if panoptic:
        panoptic_spec(model, opts.class_names, opts.object_names, RegionRequestError)  # names fit the model
    check_rotated_request(model, rotated=opts.rotated, semseg=semseg, instances=instances, amp=opts.amp)
    if opts.polygons:
        check_polygon_request(opts.class_names, opts.polygon_classes, opts.polygon_exclude, opts.min_area_m2,
                              opts.polygon_strip_rows)
    if instances or opts.polygons or panoptic:
        try:
            import geopandas  # noqa: F401  (GeoParquet)
            import pyarrow  # noqa: F401
        except ImportError:
            raise RegionRequestError("vector outputs are written as GeoJSON and GeoParquet, which needs geopandas "
                                     "and pyarrow: pip install 'd2geo[region]'") from None
    check_output_names(scenes, out_dir, opts, semseg, instances, panoptic)
    for s in scenes:
        class_map = os.path.join(out_dir, s.id + ".tif") if semseg or panoptic else None
        info = check_request(model, s.files, semseg_path=class_map,
                             instances_path=os.path.join(out_dir, s.id + ".geojson") if instances else None,
                             bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, tile=opts.tile,
                             overlap=opts.overlap, scale=opts.scale)
        if isinstance(getattr(model, "meta", None), ModelMetadata):  # a model file: the GSD against its own
            check_scene_gsd(model.meta, info, s.paths[0])
        check_input_units(model, s.paths, s.modalities, height=s.height, width=s.width, tile=opts.tile,
                          overlap=opts.overlap, bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor,
                          scale=opts.scale, allow=not opts.units_check)
    for s in scenes:
        across = crosses_antimeridian(s)
        if across is not None and (opts.to_crs is not None or ((semseg or panoptic) and len(scenes) > 1)):
            raise RegionRequestError(
                f"scene {s.id} crosses the antimeridian (longitudes {across[0]:.4f} to {across[1]:.4f}): "
                + ("its vectors in --to-crs " if opts.to_crs is not None else "a mosaic.vrt over it and other scenes ")
                + "would span the whole world; split the scene at 180 degrees (gdalwarp -te ...) and run each "
                  "side on its own, or leave out --to-crs (vectors in the scene's CRS)")
    if semseg or panoptic:
        for s in scenes:
            t = s.transform
            if t.b != 0 or t.d != 0 or t.a <= 0 or t.e >= 0:
                kind = "rotated" if (t.b != 0 or t.d != 0) else "south-up or mirrored"
                raise RegionRequestError(
                    f"scene {s.id} has a {kind} geotransform {tuple(t)[:6]}: mosaic.vrt takes north-up class maps; "
                    f"warp the scene north-up first (gdalwarp {s.paths[0]} {s.id}_north_up.tif)")
        check_mosaic_crs(scenes, mosaic_crs)
    return semseg, instances, panoptic


def _quiet_bar(bar):
    """Log lines above the progress bar instead of into it (tqdm's logging redirect)."""
    if bar.bar is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def predict_region(model, inputs, out_dir: str, opts: InferenceOptions | None = None, *,
                   key: str = "", rank: int = 0, world_size: int = 1, progress: bool = True,
                   overwrite: bool = False, device_type: str | None = None, barrier=None,
                   mosaic_crs=None, lock: bool | None = None) -> dict:
    """Predict every scene of ``inputs`` this rank is dealt (see :mod:`d2geo.inference.region`).

    ``key`` identifies the model and options in the manifest (:func:`~.manifest.model_key`);
    ``barrier`` is called once all this rank's scenes are written (the distributed
    barrier; rank 0 then writes ``mosaic.vrt`` and ``manifest.json``). ``lock`` (default: in
    a single-process run) holds the output folder for this run and removes the temporaries
    a killed earlier run left (a distributed run's launcher does it on rank 0). Returns a summary."""
    opts = opts or InferenceOptions()
    out_dir = os.path.abspath(out_dir)
    if not os.path.isdir(out_dir):
        raise RegionRequestError(f"the output folder {out_dir} does not exist: create it first (mkdir -p {out_dir})")
    state = os.path.join(out_dir, STATE_DIR)
    os.makedirs(os.path.join(state, "done"), exist_ok=True)
    held = OutputLock(out_dir) if (lock if lock is not None else world_size == 1) else None
    with held if held is not None else contextlib.nullcontext():
        if held is not None:
            n = remove_stale_temporaries(out_dir)
            if n:
                logger.info("removed %d temporary file(s) a killed run left in %s", n, out_dir)
        return _predict_region(model, inputs, out_dir, opts, key=key, rank=rank, world_size=world_size,
                               progress=progress, overwrite=overwrite, device_type=device_type, barrier=barrier,
                               mosaic_crs=mosaic_crs)


def _predict_region(model, inputs, out_dir, opts, *, key, rank, world_size, progress, overwrite, device_type,
                    barrier, mosaic_crs) -> dict:
    state = os.path.join(out_dir, STATE_DIR)
    scenes = collect_scenes(inputs, state)
    semseg, instances, panoptic = check_region_request(model, scenes, out_dir, opts, mosaic_crs=mosaic_crs)
    spec = panoptic_spec(model, opts.class_names, opts.object_names, RegionRequestError) if panoptic else None
    index = {s.id: i for i, s in enumerate(scenes)}
    if spec is not None:  # each scene its own block of instance ids: a scene's resume record names its block
        key_of = {s.id: f"{key}|instance-ids:{spec.for_scene(index[s.id], len(scenes)).id_base}" for s in scenes}
    else:
        key_of = {s.id: key for s in scenes}
    if device_type is None:
        params = list(getattr(model, "parameters", lambda: [])())
        device_type = params[0].device.type if params else "cpu"
    mine = shard_scenes(scenes, rank, world_size)
    todo = [s for s in mine if overwrite or not scene_is_done(s, out_dir, key_of[s.id])]
    skipped = [s.id for s in mine if s not in todo]
    if skipped:
        logger.info("rank %d: %d scene(s) already done (manifest matches): %s", rank, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    # what the bar counts: scenes no rank has finished yet
    others = {s.id: s.km2 for s in scenes if s not in mine and not os.path.isfile(done_path(out_dir, s.id))}
    pending = sum(s.km2 for s in todo) + sum(others.values())
    bar = _Progress(progress and rank == 0, pending, out_dir, others)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    done = []
    scratch = os.path.join(state, "tmp")
    os.makedirs(scratch, exist_ok=True)
    try:
        with _quiet_bar(bar):
            for s in todo:
                t0 = time.perf_counter()
                n_strips = len(column_strips(s.width, opts.max_strip_width))

                def on_windows(n, total, s=s, n_strips=n_strips):
                    bar.add(s.km2 * n / max(total, 1) / n_strips)

                own = ownership(s, scenes)
                outs = scene_outputs(s, out_dir, opts, semseg, instances, panoptic)
                run_scene(model, s, opts, outs, scratch_dir=scratch, semseg=semseg, instances=instances,
                          owner=own if own else None, device_type=device_type, on_windows=on_windows,
                          properties={"scene": s.id},
                          raster_tags={"scene": s.id, "d2geo_overlap_rule": "owner: farthest from its scene edge"},
                          panoptic=spec.for_scene(index[s.id], len(scenes)) if spec is not None else None)
                record_done(s, out_dir, key_of[s.id], outs, time.perf_counter() - t0)
                done.append(s.id)
    finally:
        bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    if barrier is not None:
        barrier()
    summary = {"scenes": [s.id for s in scenes], "done": done, "skipped": skipped,
               "km2": sum(s.km2 for s in scenes)}
    if rank == 0:
        if semseg or panoptic:
            summary["mosaic"] = write_mosaic_vrt(scenes, out_dir, crs=mosaic_crs)
        entries = {}
        for s in scenes:
            with contextlib.suppress(OSError, ValueError), open(done_path(out_dir, s.id), encoding="utf-8") as f:
                entries[s.id] = json.load(f)
        missing = [s.id for s in scenes if s.id not in entries]
        with atomic_path(os.path.join(out_dir, "manifest.json")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"model": key, "scenes": entries, "missing": missing}, f, indent=1, sort_keys=True)
        summary["manifest"] = os.path.join(out_dir, "manifest.json")
    return summary
