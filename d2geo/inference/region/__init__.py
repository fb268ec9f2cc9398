"""Region-scale inference: many scenes, many processes, cloud-native outputs.

:func:`predict_region` runs a detectron2-style model over a list of scenes (GeoTIFFs,
one file per date, one file per modality, or STAC items) and writes, per scene, into one output folder:

* ``<id>.tif``: the class map as a Cloud-Optimized GeoTIFF (uint8, 512 px tiles, deflate,
  nearest-neighbour overviews until the image fits one tile, the colour table and class names of
  :mod:`d2geo.inference.outputs`; 255 = no prediction);
* ``<id>.scores.tif`` (``probabilities=True``): the blended class scores as a float32 COG,
  one band per class (softmax of the blended ``sem_seg``; average overviews; NaN = none);
* ``<id>.geojson`` and ``<id>.parquet`` (GeoParquet, needs ``pip install d2geo[region]``):
  the instances as polygons (models that predict instances);
* ``<id>.regions.geojson`` and ``<id>.regions.parquet`` (``polygons=True``, semantic models):
  the class map's connected regions as polygons (:mod:`d2geo.inference.polygons`: one feature per
  4-connected region of one class, properties ``class_id``, ``class``, ``area_m2``, ``scene``;
  no data and the classes of ``polygon_exclude`` left out, only ``polygon_classes`` when given,
  regions under ``min_area_m2`` dropped), made from the written COG ``polygon_strip_rows`` rows
  at a time (pieces cut at strip seams are joined); pixels the scene does not own are no data
  in the class map, so overlapping scenes give each region once;

and over all scenes ``mosaic.vrt`` (a GDAL VRT of every class map, in the CRS of the first
scene or ``mosaic_crs``; class maps in other CRSs enter through a warped VRT
``<id>.warped.vrt``, nearest neighbour) and ``manifest.json``.

A scene may be one file per modality on one grid (``{modality: path}``, e.g. Sentinel-2 L2A,
Sentinel-1 RTC and a DEM for TerraMind): its windows are stacked band-wise as
:func:`~d2geo.data.geotiff.read_modalities` does, and it owns the pixels where every modality
has data. Give the modalities' folders (``inputs={"S2L2A": "s2/", "S1RTC": "s1/", ...}``,
scenes matched by file name) or text-list lines of ``MODALITY=path`` entries.

Within a scene, windows go through the one window loop of d2geo,
:func:`d2geo.inference.loop.run_scene` (linear ramps over the overlap, arg-max of the weighted
mean; instances deduplicated by :func:`~d2geo.inference.instances.merge_instances`);
:func:`d2geo.inference.predict_scene` is this runner with one scene. Scenes wider than
``max_strip_width`` are cut into column strips processed one after another, each read with
``overlap`` pixels of context on either side (windows in the context are computed twice),
so the blending buffer, ``K x tile x (max_strip_width + 2 overlap)`` floats, does not grow
with the scene.

Across scenes (where footprints overlap) every ground point is predicted by exactly one
scene, its *owner*: of the scenes whose valid data cover the point, the one in which the
point lies farthest from the scene's edge, in metres (ties: the scene listed first). It is
the rule that blending follows within a scene (a window's edge gets no weight where another
window sees the place from further inside) made exclusive, and the rule that
deduplication follows (the copy not cut by an edge wins). Pixels a scene does not own are
written as no data (255 / NaN) in its outputs, and an instance is kept by the scene that
owns the centre of its box. Ownership depends only on the list of scenes, never on which
process runs which scene, so any number of processes gives the same files.

Distributed runs use detectron2's :func:`~detectron2.engine.launch` (NCCL on GPUs, gloo on
CPUs); scenes are sharded across ranks (largest first, round-robin). Every output is
written to a temporary name and renamed when complete; a finished scene gets an entry in
``.d2geo-region/done/<id>.json`` with the sha256 of its inputs, of the model (weights,
config and every option that changes outputs) and of its outputs. A rerun skips the
scenes whose entry matches (resume after a kill), and redoes the others. One run at a time
writes to an output folder (a lock with its pid and host); output names that would collide
(with each other or with an input) are refused before any work.

Modules: :mod:`.inputs` (scenes, STAC), :mod:`.ownership`, :mod:`.manifest` (resume records,
lock), :mod:`.mosaic`, :mod:`.run` (the driver).

Memory and speed: a ``DataLoader`` reads ``batch_size`` windows per step ahead of the model
(``num_workers`` processes), the model sees ``batch_size`` windows per forward (under
bfloat16 autocast where the device computes bfloat16 natively, ``amp="auto"``: the policy of
:mod:`d2geo.precision`), the class
map is written in strips to a tiled GeoTIFF and converted to a COG by GDAL with a bounded
block cache (``GDAL_CACHEMAX``, 64 MB): the peak does not grow with the scene size.
Kept instances hold only their mask crops.
"""
from __future__ import annotations

from .inputs import RegionRequestError, RegionScene, collect_scenes, shard_scenes, stac_item_vrt
from .manifest import (
    STATE_DIR, OutputLock, OutputLockError, model_key, remove_stale_temporaries, run_key, scene_is_done,
)
from .mosaic import check_mosaic_crs, write_mosaic_vrt
from .ownership import Ownership, ownership
from .run import check_output_names, check_region_request, predict_region, scene_outputs

__all__ = ["RegionScene", "RegionRequestError", "collect_scenes", "shard_scenes", "stac_item_vrt", "STATE_DIR",
           "OutputLock", "OutputLockError", "model_key", "run_key", "remove_stale_temporaries", "scene_is_done",
           "check_mosaic_crs", "write_mosaic_vrt", "Ownership", "ownership", "predict_region", "scene_outputs",
           "check_output_names", "check_region_request"]
