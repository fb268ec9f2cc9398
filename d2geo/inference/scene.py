"""One scene: :func:`predict_scene` is the region runner (:func:`~d2geo.inference.loop.run_scene`)
with one scene, outputs at the paths the caller names and a quick-look PNG beside each.

A scene is a GeoTIFF, a list of one GeoTIFF per date, or a mapping ``{modality: path}`` of one
GeoTIFF per modality on one grid (stacked band-wise by
:func:`~d2geo.data.geotiff.read_modalities` into channels ``"<MODALITY>:<band>"``). The request
is checked before any window is read (:func:`~d2geo.inference.request.check_request`); every
output is written to a temporary file beside its final name and renamed when complete.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

from d2geo.data.geotiff import GeoTiffError, pixel_gsd

from .loop import count_windows, run_scene
from .model_file import ModelMetadata, check_scene_gsd
from .options import InferenceOptions
from .panoptic import check_panoptic_request
from .request import SceneRequestError, check_input_units, check_polygon_request, check_request, scene_files
from .rotated import check_rotated_request

logger = logging.getLogger(__name__)

__all__ = ["predict_scene", "single_scene"]


def single_scene(paths: Sequence[str], modalities, info: dict):
    """The :class:`~d2geo.inference.region.inputs.RegionScene` of a checked request (``info``:
    what :func:`check_request` returned); a scene without a CRS is allowed here."""
    from .region.inputs import RegionScene, scene_id

    crs, transform, h, w = info["crs"], info["transform"], info["height"], info["width"]
    gsd = 0.0
    if crs is not None:
        with contextlib.suppress(GeoTiffError, ValueError):
            gsd = pixel_gsd(crs, transform, h, w)
    return RegionScene(scene_id(paths[0]), list(paths), list(paths), crs, transform, h, w, gsd,
                       modalities=dict(modalities) if modalities else None)


def _bar(total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(total=total, desc="windows", unit="win")
        except ImportError:  # pragma: no cover
            pass
    return None


def predict_scene(model, scene, *, semseg_path: str | None = None, instances_path: str | None = None,
                  regions_path: str | None = None, geoparquet_path: str | None = None,
                  options: InferenceOptions | None = None, progress: bool = True, device_type: str | None = None,
                  instance_ids_path: str | None = None, parcels_path: str | None = None,
                  parcels_parquet_path: str | None = None,
                  **option_values) -> dict:
    """Run ``model`` over ``scene`` (see the module docstring) and write the blended class map
    to ``semseg_path``, the merged instances as GeoJSON to ``instances_path`` (and as GeoParquet
    to ``geoparquet_path``; a rotated detector's as rotated polygons, :mod:`.rotated`) and (semantic
    models) the class map's connected regions as GeoJSON polygons to ``regions_path``
    (without ``semseg_path`` the class map is a scratch file), in ``to_crs`` or the scene CRS.
    A panoptic model (``panoptic_seg``; ``panoptic=`` option) writes its panoptic class map to
    ``semseg_path``, the uint32 instance-id COG to ``instance_ids_path`` and the objects as
    polygons to ``parcels_path`` (GeoJSON) / ``parcels_parquet_path`` (GeoParquet): see
    :mod:`d2geo.inference.panoptic`.

    The options are an :class:`~d2geo.inference.options.InferenceOptions` (``options=``) or its
    fields as keywords (``tile``, ``overlap``, ``bands``, ``band_names``, ``sensor``, ``scale``,
    ``fill``, ``to_crs``, ``class_names``, ``object_names``, ``score_threshold``,
    ``dedup_threshold``, ``edge_margin``, ``batch_size``, ``quicklook``, ``polygon_classes``,
    ``polygon_exclude``, ``min_area_m2``, ``polygon_strip_rows``, ``amp``, ...). Here the
    defaults are one window a forward read in this process, float32 (``amp="off"``) and a
    quick-look ``<output>.png`` beside each output. Returns a summary with the window count
    and the kept instances (``SceneInstance`` list; of a rotated detector, a
    :class:`~d2geo.inference.rotated.RotatedDetections`).
    """
    if options is not None and option_values:
        raise TypeError(f"give the options as options= or as keywords, not both ({sorted(option_values)})")
    if options is None:
        kw = dict(batch_size=1, num_workers=0, amp="off", quicklook=True)
        kw.update(option_values)
        unknown = set(kw) - set(InferenceOptions.__dataclass_fields__)
        if unknown:
            raise TypeError(f"predict_scene() got unknown options {sorted(unknown)}")
        options = InferenceOptions(**kw)
    opts = options
    paths, modalities = scene_files(scene)
    object_names = opts.object_names
    if object_names is None and semseg_path is None:
        object_names = opts.class_names
    spec = check_panoptic_request(model, opts, paths, semseg_path=semseg_path, regions_path=regions_path,
                                  instance_ids_path=instance_ids_path, parcels_path=parcels_path,
                                  parcels_parquet_path=parcels_parquet_path)
    pan_paths = [p for p in (instance_ids_path, parcels_path, parcels_parquet_path) if p is not None]
    want_instances = instances_path is not None or geoparquet_path is not None
    check_rotated_request(model, rotated=opts.rotated, semseg=semseg_path is not None or regions_path is not None,
                          instances=want_instances, amp=opts.amp)
    info = check_request(model, modalities or paths, semseg_path=semseg_path, instances_path=instances_path,
                         panoptic_paths=pan_paths, bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor,
                         tile=opts.tile, overlap=opts.overlap, regions_path=regions_path, scale=opts.scale,
                         geoparquet_path=geoparquet_path)
    if geoparquet_path is not None:
        try:
            import geopandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            raise SceneRequestError("GeoParquet (geoparquet_path, --out-geoparquet) needs geopandas and pyarrow: "
                                    "pip install 'd2geo[region]', or write GeoJSON only") from None
    if isinstance(getattr(model, "meta", None), ModelMetadata):  # a model file: the scene's GSD against its own
        check_scene_gsd(model.meta, info, paths[0])
    check_input_units(model, paths, modalities, height=info["height"], width=info["width"], tile=opts.tile,
                      overlap=opts.overlap, bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor,
                      scale=opts.scale, allow=not opts.units_check)
    if regions_path is not None:
        check_polygon_request(opts.class_names, opts.polygon_classes, opts.polygon_exclude, opts.min_area_m2,
                              opts.polygon_strip_rows)
    if info["crs"] is None and (opts.to_crs is not None or (regions_path is not None and opts.min_area_m2 > 0)):
        raise SceneRequestError(
            f"{paths[0]} has no CRS: its vectors are in pixel coordinates, so --to-crs"
            f"{' and --min-area-m2 (square metres)' if opts.min_area_m2 > 0 else ''} cannot apply; assign the "
            f"scene a CRS (gdal_edit.py -a_srs EPSG:...) or drop them")
    opts = opts.replace(object_names=object_names)
    s = single_scene(paths, modalities, info)
    targets = {}
    if semseg_path is not None:
        targets["class_map"] = semseg_path
    if regions_path is not None:
        targets["regions_geojson"] = regions_path
    if instances_path is not None:
        targets["geojson"] = instances_path
    for key, path in (("instance_ids", instance_ids_path), ("parcels_geojson", parcels_path),
                      ("parcels_geoparquet", parcels_parquet_path)):
        if path is not None:
            targets[key] = path
    if geoparquet_path is not None:
        targets["geoparquet"] = geoparquet_path
    scratch = os.path.dirname(os.path.abspath(next(iter(targets.values()))))
    if device_type is None:
        params = list(getattr(model, "parameters", lambda: [])())
        device_type = params[0].device.type if params else "cpu"
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    bar = _bar(count_windows(s.height, s.width, opts), progress)
    try:
        res = run_scene(model, s, opts, targets, scratch_dir=scratch, semseg=spec is None and (
                        semseg_path is not None or regions_path is not None), instances=want_instances,
                        device_type=device_type, panoptic=spec,
                        on_windows=(lambda n, total: bar.update(n)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
        if was_training and hasattr(model, "train"):
            model.train()
    quicklooks = []
    if opts.quicklook:
        from .quicklook import preview_source, write_quicklook

        qpaths, qbands, qsensor = preview_source(paths, modalities, info["band_names"], opts.band_names, opts.sensor)
        if semseg_path is not None:
            names = list(spec.class_names) if spec is not None else opts.class_names
            write_quicklook(semseg_path + ".png", qpaths, qbands, qsensor, class_map_path=semseg_path,
                            class_names=list(names) if names is not None else None)
            quicklooks.append(semseg_path + ".png")
        if instances_path is not None:
            write_quicklook(instances_path + ".png", qpaths, qbands, qsensor, instances=res.instances,
                            class_names=object_names)
            quicklooks.append(instances_path + ".png")
    return {"windows": res.windows, "skipped_windows": res.skipped, "detections": res.detections,
            "instances": res.instances,
            "semseg_path": semseg_path, "instances_path": instances_path, "regions_path": regions_path,
            "regions": res.regions, "quicklooks": quicklooks, "objects": res.objects,
            "instance_ids_path": instance_ids_path, "parcels_path": parcels_path,
            "parcels_parquet_path": parcels_parquet_path, "geoparquet_path": geoparquet_path}
