"""``register_geo_scenes``: whole scenes + vector labels -> detectron2 datasets of windows.

Everything is checked and every window is placed when the function is called, before
anything is registered or written: a bad input raises :class:`SceneError` naming the
problem and the fix, and leaves the catalogs and the disk as they were.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from .errors import SceneError
from .index import class_names, class_table, footprint_4326, format_bounds, open_scenes, read_labels
from .labels import window_instances, window_shapes
from .sampling import ValidMask, check_window_fits, grid_windows, random_windows
from .split import make_split

logger = logging.getLogger(__name__)

__all__ = ["register_geo_scenes", "build_scene_datasets"]

_RASTER_EXT = (".tif", ".tiff", ".vrt")


def _check_overlap(labels, scenes, prints) -> None:
    import shapely

    union = shapely.union_all(prints)
    hits = labels.gdf.sindex.query(union, predicate="intersects")
    if len(hits) == 0:
        raise SceneError(
            f"the labels ({len(labels)} features, extent {format_bounds(labels.gdf.total_bounds)} lon/lat) touch "
            f"none of the {len(scenes)} scenes (extent {format_bounds(union.bounds)} lon/lat): check that the "
            "label file's CRS is the one its coordinates are in, and that the labels belong to these scenes")
    outside = len(labels) - len(np.unique(hits))
    if outside:
        logger.warning("%d of %d label features lie outside every scene and are not used", outside, len(labels))


def _record(scene, window, k: int, geo: dict | None) -> dict:
    col, row, w, h = window
    d = {"file_name": scene.paths[0], "window": tuple(int(v) for v in window), "height": int(h), "width": int(w),
         "image_id": int(k)}
    if len(scene.paths) > 1:
        d["file_names"] = list(scene.paths)
    if geo:
        d["geo"] = dict(geo)
    return d


def build_scene_datasets(name: str, scenes, labels=None, *, task: str, classes, class_key: str | None = None,
                         window: int = 256, sampler: str = "random", count: int | None = None,
                         stride: int | None = None, label_fraction: float = 0.0, epochs: int = 1,
                         split=None, train_split: str = "train", seed: int = 0, background=None,
                         all_touched: bool = False, min_visible: float = 0.5, min_valid: float = 0.5,
                         invalid: str = "repair", output_dir: str | None = None, geo: dict | None = None):
    """The work of :func:`register_geo_scenes` without the registration: returns
    ``({dataset name: dataset dicts}, metadata, split plan or None, split file or None)``."""
    if task not in ("semantic", "instance"):
        raise SceneError(f"task must be 'semantic' or 'instance', not {task!r}")
    if sampler not in ("random", "grid"):
        raise SceneError(f"sampler must be 'random' or 'grid', not {sampler!r}")
    window = int(window)
    if window <= 0:
        raise SceneError(f"window must be a positive size in pixels, got {window}")
    table = class_table(classes)
    names_of_ids = class_names(table)
    if task == "semantic" and len(names_of_ids) > 255:
        raise SceneError(f"{len(names_of_ids)} semantic classes: label rasters are uint8 with 255 = ignore, so at "
                         "most 255 classes (ids 0..254)")
    scene_list = open_scenes(scenes)
    check_window_fits(scene_list, window)
    if background is not None and not isinstance(background, (int, np.integer)):
        if background not in table:
            raise SceneError(f"background={background!r} is not one of classes {list(table)}")
        background = table[background]

    label_raster, label_set = None, None
    if labels is None:
        raise SceneError("labels are needed: give vector files (GeoPackage, GeoJSON, ...) or a label raster")
    if isinstance(labels, (str, os.PathLike)) and os.fspath(labels).lower().endswith(_RASTER_EXT):
        if task != "semantic":
            raise SceneError(f"{labels} is a label raster; instances need vector labels (polygons)")
        label_raster = os.fspath(labels)
    else:
        label_set = read_labels(labels, classes=table, class_key=class_key, invalid=invalid)
        prints = [footprint_4326(s) for s in scene_list]
        _check_overlap(label_set, scene_list, prints)
        for crs in {str(s.crs) for s in scene_list}:
            label_set.in_crs(crs, [p for p, s in zip(prints, scene_list) if str(s.crs) == crs])

    window_m = window * max(s.pixel_size for s in scene_list)
    plan = make_split(split, scene_list, label_set, window_m=window_m, seed=seed)
    split_names = plan.names if plan is not None else [None]
    if plan is not None and train_split not in plan.names and sampler == "random":
        raise SceneError(f"the split has no {train_split!r} part (parts: {plan.names}): name the training part "
                         "with train_split=")
    valid = [ValidMask.of(s) for s in scene_list]

    datasets, record_windows = {}, []
    for part in split_names:
        regions = [None] * len(scene_list)
        if plan is not None:
            regions = [plan.region_in(part, s.crs, max_segment=window_m) for s in scene_list]
        dname = name if part is None else f"{name}_{part}"
        use = sampler if part is None or part == train_split else "grid"
        if use == "grid":
            step = int(stride or window)
            placed = [(i, w) for i, s in enumerate(scene_list)
                      for w in grid_windows(s, window, step, region=regions[i], valid=valid[i], min_valid=min_valid)]
        else:
            if not count:
                raise SceneError("sampler='random' needs count=, the number of windows per epoch")
            if all(r is not None and r.is_empty for r in regions):
                placed = []
            else:
                placed = [pw for e in range(int(epochs)) for pw in
                          random_windows(scene_list, window, int(count), seed=seed, epoch=e, regions=regions,
                                         valid=valid, min_valid=min_valid, labels=label_set,
                                         label_fraction=label_fraction if label_set is not None else 0.0)]
        if not placed:
            raise SceneError(
                f"split part {part or name!r} gets no window of {window} px"
                + (f" (its region: {plan.kind} split with a buffer of {plan.params.get('buffer', 0):g} m)"
                   if plan is not None else "")
                + ": use smaller windows, larger or more blocks, other fractions, or a smaller buffer")
        dicts, with_objects = [], 0
        for k, (i, w) in enumerate(placed):
            s = scene_list[i]
            d = _record(s, w, k, geo)
            if label_raster is not None:
                d["label_raster"] = label_raster
                with_objects += 1
            elif task == "semantic":
                d["scene_labels"] = window_shapes(label_set, s, w)
                d["scene_label_options"] = {"all_touched": bool(all_touched), "background": background}
                with_objects += bool(d["scene_labels"])
            else:
                d["annotations"] = window_instances(label_set, s, w, min_visible=min_visible)
                with_objects += bool(d["annotations"])
            d["geo"] = {**d.get("geo", {}), "num_classes": len(names_of_ids)}
            dicts.append(d)
            if plan is not None:
                record_windows.append((part, s.paths[0], w, footprint_4326_window(s, w)))
        if with_objects == 0:
            raise SceneError(f"none of the {len(dicts)} windows of {dname!r} contains a label: the labels lie "
                             "outside this part's windows; check their extent, the split, or use "
                             "label_fraction > 0")
        datasets[dname] = dicts
        logger.info("%s: %d windows of %d px (%s sampler), %d with labels", dname, len(dicts), window, use,
                    with_objects)

    meta = dict(task=task, ignore_label=255, window=window, scenes=[list(s.paths) for s in scene_list])
    if task == "semantic":
        meta.update(stuff_classes=names_of_ids, evaluator_type="sem_seg")
    else:
        meta.update(thing_classes=names_of_ids, evaluator_type="coco")
    split_file = None
    if plan is not None and output_dir:
        os.makedirs(output_dir, exist_ok=True)
        split_file = os.path.join(output_dir, f"{name}_split.geojson")
        plan.write(split_file, record_windows)
        meta["split_file"] = split_file
    return datasets, meta, plan, split_file


def footprint_4326_window(scene, w):
    from .index import reproject_geometry

    return reproject_geometry(scene.window_polygon(*w), scene.crs, "EPSG:4326")


def register_geo_scenes(name: str, scenes, labels=None, *, task: str, classes, class_key: str | None = None,
                        window: int = 256, sampler: str = "random", split=None, seed: int = 0,
                        **options) -> list[str]:
    """Register windows of whole scenes with vector (or raster) labels as detectron2 datasets.

    Args:
        name: dataset name; with a split, one dataset ``<name>_<part>`` per part.
        scenes: GeoTIFF/COG paths, folders, text lists (a line of several files = the
            dates of one scene), or a list of these (:func:`~.index.open_scenes`).
        labels: vector file(s) any CRS (GeoPackage, GeoJSON, Shapefile, GeoParquet,
            FlatGeobuf, or GeoDataFrames), or one label raster (semantic; values = ids).
        task: ``"semantic"`` or ``"instance"``.
        classes: class names (ids by position) or ``{name or value: id}``, ids 0..K-1.
        class_key: the label column holding each feature's class (may be left out with one class).
        window: window side in pixels.
        sampler: ``"random"`` (``count`` windows per epoch, ``epochs`` epochs drawn,
            ``label_fraction`` of them on labels) or ``"grid"`` (``stride``, default ``window``)
            for the training part (``train_split``, default ``"train"``); other parts use the grid.
        split: None, a dict (``blocks``/``column``/``polygons``, see :mod:`.split`) or a
            split file of an earlier run. With ``output_dir`` the split (regions and windows)
            is written to ``<output_dir>/<name>_split.geojson``.
        seed: seeds the split and the random windows.
        options: ``count``, ``stride``, ``label_fraction``, ``epochs``, ``train_split``,
            ``background`` (class of pixels under no polygon; default ignored, 255),
            ``all_touched``, ``min_visible`` (instances cut by the window edge: kept when at
            least this fraction is inside, else dropped), ``min_valid``, ``invalid``
            (``"repair"``/``"raise"``), ``output_dir``, ``geo`` (read options of the mapper).

    Returns the registered dataset names (one per split part). Nothing is registered or
    written when an input is bad.
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    datasets, meta, _, _ = build_scene_datasets(name, scenes, labels, task=task, classes=classes,
                                                class_key=class_key, window=window, sampler=sampler,
                                                split=split, seed=seed, **options)
    taken = [n for n in datasets if n in DatasetCatalog.list()]
    if taken:
        raise SceneError(f"datasets {taken} are already registered: pick another name or "
                         "DatasetCatalog.remove() them first")
    for dname, dicts in datasets.items():
        DatasetCatalog.register(dname, lambda dicts=dicts: dicts)
        MetadataCatalog.get(dname).set(**meta)
    return list(datasets)
