"""Sliding-window inference over GeoTIFF scenes far larger than one model input.

:func:`predict_scene` runs a detectron2-style model (``model(list_of_dicts)`` returning
``[{"sem_seg": (K, h, w)}, {"instances": Instances}, ...]``) over overlapping windows
of a scene and merges the results:

* **semantic**: each window's ``sem_seg`` output is weighted by a separable ramp that
  falls off over the overlap (see :func:`blend_weights`); the weighted outputs are
  summed and divided by the summed weights, then arg-maxed. Seams vanish because no
  window edge carries full weight where another window overlaps. The class map is written
  as a uint8 GeoTIFF with the scene's CRS and transform, 255 where the scene has no data.
* **instances**: masks are kept as crops in scene pixel coordinates. Detections from
  different windows are duplicates when they share a class and their masks (or boxes,
  for box-only models) overlap by more than ``dedup_threshold`` of the smaller one
  (intersection over minimum: a copy cut by a window edge is a subset of the whole
  object). Of duplicates the one not touching an interior window edge wins, then the
  higher score. Output: GeoJSON polygons in the scene CRS or EPSG:4326.

A scene may also be one file per modality on one grid (``{modality: path}``, e.g.
Sentinel-2 L2A, Sentinel-1 RTC and a DEM for TerraMind): each window is read from every
file and stacked band-wise (:func:`~d2geo.data.geotiff.read_modalities`, channels
``"<MODALITY>:<band>"``); the files' CRS, transform and size are checked first.

Before any window is read the request is checked against the model and the scene
(:func:`check_request`): a semantic model asked for instances, a band list the file does
not have or of another length than the model's input, an output over the scene itself,
an output folder that does not exist: each is an error that says what to change, and no
file is written. Every output is written to a temporary file beside its final name and
renamed when complete, so an interrupted run (an error, Ctrl-C) leaves no partial file.

The class map carries the class names and a colour table (GDAL reads both; QGIS shows
the classes by name and colour): the colour table in the GeoTIFF, the names as GDAL
category names in the ``<file>.aux.xml`` sidecar and as a ``class_names`` tag in the
file. Next to each output a quick-look PNG ``<output>.png`` shows the scene and the
result (``quicklook=False`` to skip it).

Memory: windows are read with rasterio windowed reads and the class map is written in
strips; the blending buffer holds ``K x tile x scene_width`` floats (one row of windows),
so memory grows with the scene width, never with its height. Kept instances hold only
their mask crops.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .files import TMP_MARK, atomic_path
from .geotiff import (
    GeoTiffError, apply_affine, check_modality_grid, read_geotiff, read_modalities, resolve_band_indices,
    translate_affine,
)

logger = logging.getLogger(__name__)

__all__ = ["tile_windows", "blend_weights", "SceneInstance", "merge_instances", "predict_scene",
           "instances_to_geojson", "check_request", "model_outputs", "SceneRequestError", "scene_files",
           "read_scene_window"]

NODATA_CLASS = 255


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(row, col)`` of windows covering the scene, row-major.

    Windows step by ``tile - overlap``; the last row/column is shifted to end at the scene
    edge (so it may overlap more). A scene smaller than the tile gets one padded window.
    """
    if tile <= 0:
        raise ValueError(f"tile must be positive, got {tile}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    stride = tile - overlap
    return [(r, c) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """``(tile, tile)`` weights: 1 in the centre, ramping linearly to ~0 over ``overlap`` px at each edge."""
    i = np.arange(tile, dtype=np.float64) + 0.5
    if overlap > 0:
        ramp = np.minimum(1.0, np.minimum(i, tile - i) / overlap)
    else:
        ramp = np.ones(tile)
    return np.outer(ramp, ramp).astype(np.float32)


@dataclass
class SceneInstance:
    """One detection in scene pixel coordinates: ``mask`` is a crop whose top-left is (x0, y0)."""

    category_id: int
    score: float
    box: np.ndarray  # x0, y0, x1, y1 in scene pixels
    x0: int
    y0: int
    mask: np.ndarray | None
    truncated: bool  # touches an interior edge of its window

    @property
    def area(self) -> float:
        if self.mask is not None:
            return float(self.mask.sum())
        return float(max(self.box[2] - self.box[0], 0) * max(self.box[3] - self.box[1], 0))


def _intersection(a: SceneInstance, b: SceneInstance) -> float:
    if a.mask is None or b.mask is None:
        x0, y0 = max(a.box[0], b.box[0]), max(a.box[1], b.box[1])
        x1, y1 = min(a.box[2], b.box[2]), min(a.box[3], b.box[3])
        return float(max(x1 - x0, 0) * max(y1 - y0, 0))
    ax1, ay1 = a.x0 + a.mask.shape[1], a.y0 + a.mask.shape[0]
    bx1, by1 = b.x0 + b.mask.shape[1], b.y0 + b.mask.shape[0]
    x0, y0, x1, y1 = max(a.x0, b.x0), max(a.y0, b.y0), min(ax1, bx1), min(ay1, by1)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    ma = a.mask[y0 - a.y0:y1 - a.y0, x0 - a.x0:x1 - a.x0]
    mb = b.mask[y0 - b.y0:y1 - b.y0, x0 - b.x0:x1 - b.x0]
    return float(np.logical_and(ma, mb).sum())


def merge_instances(instances: Sequence[SceneInstance], dedup_threshold: float = 0.5) -> list[SceneInstance]:
    """Drop duplicates across windows (see the module docstring); returns the kept ones."""
    order = sorted(instances, key=lambda d: (d.truncated, -d.score))
    kept: list[SceneInstance] = []
    boxes = np.zeros((0, 4))
    for cand in order:
        if cand.area <= 0:
            continue
        if len(kept):
            ov = ((np.minimum(boxes[:, 2], cand.box[2]) > np.maximum(boxes[:, 0], cand.box[0]))
                  & (np.minimum(boxes[:, 3], cand.box[3]) > np.maximum(boxes[:, 1], cand.box[1])))
            dup = False
            for j in np.nonzero(ov)[0]:
                other = kept[j]
                if other.category_id != cand.category_id:
                    continue
                inter = _intersection(cand, other)
                if inter / max(min(cand.area, other.area), 1e-9) > dedup_threshold:
                    dup = True
                    break
            if dup:
                continue
        kept.append(cand)
        boxes = np.vstack([boxes, cand.box[None]])
    return kept


def _window_instances(inst, row: int, col: int, tile: int, height: int, width: int, valid: np.ndarray,
                      score_threshold: float, edge_margin: int) -> list[SceneInstance]:
    out = []
    if len(inst) == 0:
        return out
    scores = inst.scores.detach().cpu().numpy() if inst.has("scores") else np.ones(len(inst))
    classes = inst.pred_classes.detach().cpu().numpy() if inst.has("pred_classes") else np.zeros(len(inst), int)
    boxes = inst.pred_boxes.tensor.detach().cpu().numpy() if inst.has("pred_boxes") else None
    masks = inst.pred_masks.detach().cpu().numpy() if inst.has("pred_masks") else None
    if boxes is None and masks is None:
        raise GeoTiffError("the model's instances have neither pred_boxes nor pred_masks")
    # interior edges: window edges that are not scene edges
    inner = (col > 0, row > 0, col + tile < width, row + tile < height)  # left, top, right, bottom
    for k in range(len(inst)):
        if scores[k] < score_threshold:
            continue
        if masks is not None:
            m = masks[k] > 0.5 if masks[k].dtype != bool else masks[k]
            m = m & valid
            ys, xs = np.nonzero(m)
            if len(ys) == 0:
                continue
            y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
            crop = m[y0:y1, x0:x1].copy()
            bx = np.array([x0, y0, x1, y1], dtype=np.float64)
        else:
            crop = None
            bx = boxes[k].astype(np.float64)
            x0, y0 = int(math.floor(bx[0])), int(math.floor(bx[1]))
        truncated = ((inner[0] and bx[0] <= edge_margin) or (inner[1] and bx[1] <= edge_margin)
                     or (inner[2] and bx[2] >= tile - edge_margin) or (inner[3] and bx[3] >= tile - edge_margin))
        gbox = bx + np.array([col, row, col, row], dtype=np.float64)
        if gbox[0] >= width or gbox[1] >= height:
            continue
        gbox[2], gbox[3] = min(gbox[2], width), min(gbox[3], height)
        if crop is not None:
            crop = crop[: height - (row + y0), : width - (col + x0)]
        out.append(SceneInstance(int(classes[k]), float(scores[k]), gbox, int(col + x0), int(row + y0),
                                 crop, bool(truncated)))
    return out


def instances_to_geojson(instances: Sequence[SceneInstance], transform, crs, *, to_crs=None,
                         class_names: Sequence[str] | None = None) -> dict:
    """GeoJSON FeatureCollection of instance polygons (masks) or boxes, in ``to_crs`` or the scene CRS."""
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    feats = []
    for inst in instances:
        if inst.mask is not None:
            t = translate_affine(transform, inst.x0, inst.y0)
            polys = [g for g, v in shapes(inst.mask.astype(np.uint8), mask=inst.mask, transform=t) if v == 1]
            if not polys:
                continue
            geom = polys[0] if len(polys) == 1 else {
                "type": "MultiPolygon", "coordinates": [p["coordinates"] for p in polys]}
        else:
            x0, y0, x1, y1 = inst.box
            xs, ys = apply_affine(transform, [x0, x1, x1, x0, x0], [y0, y0, y1, y1, y0])
            ring = [[float(a), float(b)] for a, b in zip(xs, ys)]
            geom = {"type": "Polygon", "coordinates": [ring]}
        if to_crs is not None and crs is not None:
            geom = transform_geom(crs, to_crs, geom)
        props = {"category_id": inst.category_id, "score": round(inst.score, 5)}
        if class_names is not None and 0 <= inst.category_id < len(class_names):
            props["class"] = class_names[inst.category_id]
        feats.append({"type": "Feature", "properties": props, "geometry": geom})
    out: dict[str, Any] = {"type": "FeatureCollection", "features": feats}
    target = to_crs if to_crs is not None else crs
    if target is not None:
        from rasterio.crs import CRS

        out["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
    return out


def _progress(iterable, total: int, enabled: bool):
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(iterable, total=total, desc="windows", unit="win")
        except ImportError:  # pragma: no cover
            pass
    return iterable


class SceneRequestError(GeoTiffError):
    """A predict_scene request that cannot work with this model or scene (nothing was written)."""


def model_outputs(model) -> set[str] | None:
    """What a detectron2-style model returns per image (``{"sem_seg"}``, ``{"instances"}``, both
    for panoptic models), judged by its parts; None when it cannot be told without running it."""
    m = getattr(model, "module", model)  # DDP
    declared = getattr(m, "output_keys", None)
    if declared:
        return set(declared)
    has_sem = hasattr(m, "sem_seg_head")
    has_inst = hasattr(m, "roi_heads") or hasattr(m, "proposal_generator") or hasattr(m, "transformer")
    if has_sem and has_inst:
        return {"sem_seg", "instances", "panoptic_seg"}
    if has_sem:
        return {"sem_seg"}
    if has_inst:
        return {"instances"}
    return None


def _model_in_channels(model) -> int | None:
    m = getattr(model, "module", model)
    mean = getattr(m, "pixel_mean", None)
    if isinstance(mean, torch.Tensor) and mean.numel() > 0:
        return int(mean.numel())  # one value per band (d2geo's and detectron2's meta-architectures)
    return None


def _model_bands(model) -> list[str] | None:
    """The band names the model's encoder was built for, when it names them."""
    m = getattr(model, "module", model)
    for mod in (m.modules() if hasattr(m, "modules") else ()):
        b = getattr(mod, "bands", None)
        if isinstance(b, (list, tuple)) and b and all(isinstance(x, str) for x in b):
            return list(b)
    return None


_KIND = {"sem_seg": "a class map (--out-semseg)", "instances": "instances (--out-geojson)"}


def _check_output_path(path: str, what: str, exts: Sequence[str], scene_paths: Sequence[str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise SceneRequestError(f"the folder of the {what} output {path} does not exist: create it first "
                                f"(mkdir -p {directory})")
    if not path.lower().endswith(tuple(exts)):
        raise SceneRequestError(f"the {what} output {path} should end with {' or '.join(exts)}")
    for sp in scene_paths:
        if os.path.abspath(sp) == os.path.abspath(path):
            raise SceneRequestError(f"the {what} output {path} is the scene itself: choose another file name")


def scene_files(scene) -> tuple[list[str], dict[str, str] | None]:
    """The files of a scene and its modalities: a path (one file), a list of paths (one file
    per date) or a mapping ``{modality: path}`` (one file per modality on one grid, stacked
    by :func:`~d2geo.data.geotiff.read_modalities`; the modality names of TerraMind's data and
    of the dataset dicts' ``modality_files``). Returns ``(paths, modalities or None)``."""
    if isinstance(scene, Mapping):
        if not scene:
            raise SceneRequestError("the scene's modality mapping is empty: give {modality: path}, e.g. "
                                    "{'S2L2A': 's2.tif', 'S1RTC': 's1.tif', 'DEM': 'dem.tif'}")
        mods = {str(m): os.fspath(p) for m, p in scene.items()}
        return list(mods.values()), mods
    if isinstance(scene, (str, os.PathLike)):
        return [os.fspath(scene)], None
    paths = [os.fspath(p) for p in scene]
    if not paths:
        raise SceneRequestError("no scene file was given")
    return paths, None


def read_scene_window(paths: Sequence[str], modalities: Mapping[str, str] | None, window, **kwargs):
    """One window of a scene (see :func:`scene_files`) as a GeoSample: the files of the
    modalities stacked band-wise, else the file or the dates of one scene."""
    if modalities is not None:
        return read_modalities(modalities, window=window, **kwargs)
    return read_geotiff(paths if len(paths) > 1 else paths[0], window=window, **kwargs)


def _canonical(names: Sequence[str]) -> list[str]:
    from d2geo.encoders.terramind import canonical_channel

    return [canonical_channel(n).lower() for n in names]


def _check_modality_request(model, modalities: Mapping[str, str], *, bands, band_names, sensor, scale) -> dict:
    """The grid and the stacked channel names of a multi-modality scene, checked against the model."""
    from rasterio.windows import Window

    for what, option in (("band_names", band_names), ("sensor", sensor)):
        if option is not None and not isinstance(option, Mapping):
            raise SceneRequestError(
                f"{what}={option!r} is one value for a scene of the modalities {list(modalities)}: give it per "
                f"modality, {what}={{modality: ...}} (--{what.replace('_', '-')} MODALITY=..., e.g. "
                f"--{what.replace('_', '-')} {next(iter(modalities))}=...)")
    try:
        info = check_modality_grid(modalities)
        # one pixel read: the stacked channel names, and every band, name and option checked
        probe = read_modalities(modalities, bands=bands, band_names=band_names, sensor=sensor, scale=scale,
                                window=Window(0, 0, 1, 1))
    except GeoTiffError as e:
        raise SceneRequestError(str(e)) from None
    names = list(probe.band_names)
    expected = _model_in_channels(model)
    known = _model_bands(model)
    how = ("--bands " + ",".join(bands)) if bands else ("every band of " + ", ".join(modalities) + ", in that order")
    if expected is not None and expected != len(names):
        raise SceneRequestError(
            f"the model takes {expected} bands but the modality files give {len(names)} ({how}: {', '.join(names)}): "
            f"choose the model's bands with --bands (bands=) as '<MODALITY>:<band>' names, in its training order"
            + (f" ({', '.join(known)})" if known else ""))
    if known is not None and len(known) == len(names) and all(":" in b for b in known) \
            and _canonical(known) != _canonical(names):
        raise SceneRequestError(
            f"the model takes the channels {', '.join(known)} but the modality files give {', '.join(names)} "
            f"({how}): give the modalities (--input) in the model's order, or select its channels with --bands "
            f"{','.join(known)}")
    info.update(count=len(names), band_names=names, modalities=dict(modalities))
    return info


def check_request(model, scene_paths, *, semseg_path: str | None = None,
                  instances_path: str | None = None, bands: Sequence[str] | None = None,
                  band_names=None, sensor=None, tile: int = 256, overlap: int = 64,
                  regions_path: str | None = None, scale=None) -> dict:
    """Check a predict_scene request before any work; returns the scene's size, CRS and
    transform. ``scene_paths``: the scene's files (one, or one per date) or a mapping
    ``{modality: path}`` (see :func:`scene_files`). Raises :class:`SceneRequestError` (or
    FileNotFoundError) naming the fix."""
    import rasterio

    scene_paths, modalities = scene_files(scene_paths)
    if semseg_path is None and instances_path is None and regions_path is None:
        raise ValueError("give semseg_path, instances_path and/or regions_path: there is nothing to write")
    tile_windows(1, 1, tile, overlap)  # tile/overlap range check
    for m, p in (modalities.items() if modalities else ((None, p) for p in scene_paths)):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"scene file not found: {p}" + (f" (the {m} file)" if m else ""))
    if semseg_path is not None:
        _check_output_path(semseg_path, "class map", (".tif", ".tiff"), scene_paths)
    if instances_path is not None:
        _check_output_path(instances_path, "instances", (".geojson", ".json"), scene_paths)
    if regions_path is not None:
        _check_output_path(regions_path, "class-map polygons", (".geojson", ".json"), scene_paths)
    given = [os.path.abspath(p) for p in (semseg_path, instances_path, regions_path) if p is not None]
    if len(set(given)) < len(given):
        raise SceneRequestError("two outputs (class map, instances, class-map polygons) would go to the same file: "
                                "give each its own file name")
    outputs = model_outputs(model)
    if outputs is not None:
        for path, key in ((semseg_path, "sem_seg"), (regions_path, "sem_seg"), (instances_path, "instances")):
            if path is not None and key not in outputs:
                have = " and ".join(_KIND.get(k, k) for k in sorted(outputs) if k in _KIND) or sorted(outputs)
                raise SceneRequestError(
                    f"{type(getattr(model, 'module', model)).__name__} predicts {have}, not {_KIND[key]}: "
                    f"drop that output, or use a model that predicts it")
    if modalities is not None:
        return _check_modality_request(model, modalities, bands=bands, band_names=band_names, sensor=sensor,
                                       scale=scale)
    with rasterio.open(scene_paths[0]) as src:
        info = {"height": src.height, "width": src.width, "crs": src.crs, "transform": src.transform,
                "count": src.count, "descriptions": src.descriptions}
    for p in scene_paths[1:]:
        with rasterio.open(p) as src:
            if (src.height, src.width) != (info["height"], info["width"]):
                raise SceneRequestError(f"the dates of a scene must share one grid: {p} is {src.height}x"
                                        f"{src.width}, {scene_paths[0]} is {info['height']}x{info['width']}")
    if band_names is not None and len(band_names) != info["count"]:
        raise SceneRequestError(f"{len(band_names)} band names were given for a file with {info['count']} "
                                f"bands ({scene_paths[0]}): name every band, in file order")
    names = list(band_names) if band_names is not None else [
        d or f"band{i + 1}" for i, d in enumerate(info["descriptions"])]
    n_in = info["count"]
    if bands is not None:
        resolve_band_indices(names, list(bands), sensor, where=scene_paths[0])
        n_in = len(bands)
    expected = _model_in_channels(model)
    if expected is not None and expected != n_in:
        known = _model_bands(model)
        raise SceneRequestError(
            f"the model takes {expected} bands but the scene gives {n_in} "
            f"({'--bands ' + ','.join(bands) if bands else 'all bands of ' + scene_paths[0]}): "
            f"choose the model's bands with --bands (bands=), in its training order"
            + (f" ({', '.join(known)}; with --sensor, a sensor's own band ids work too)" if known else "")
            + ("; a model of several modalities reads one file per modality: --input MODALITY=path (scene="
               "{modality: path})" if known and len({b.split(':', 1)[0] for b in known if ':' in b}) > 1 else ""))
    info["band_names"] = names
    return info


def _write_category_names(path: str, class_names: Sequence[str]) -> None:
    """GDAL category names of band 1 in the PAM sidecar ``<path>.aux.xml`` (GTiff keeps
    category names there; QGIS labels the colour table with them)."""
    from xml.sax.saxutils import escape

    cats = "".join(f"      <Category>{escape(str(n))}</Category>\n" for n in class_names)
    xml = ("<PAMDataset>\n  <PAMRasterBand band=\"1\">\n    <CategoryNames>\n" + cats +
           "    </CategoryNames>\n  </PAMRasterBand>\n</PAMDataset>\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write(xml)


def _preview_source(paths, modalities, names, band_names, sensor):
    """The file, band names and sensor the quick-look shows: the scene's first file, or of a
    multi-modality scene its optical file (S2RGB, S2L2A, S2L1C, else the first)."""
    if modalities is None:
        return paths, names, sensor
    import rasterio

    from d2geo.encoders.terramind import TERRAMIND_MODALITIES

    m = next((k for k in ("S2RGB", "S2L2A", "S2L1C") if k in modalities), next(iter(modalities)))
    spec = TERRAMIND_MODALITIES.get(m.upper())
    with rasterio.open(modalities[m]) as src:
        count, desc = src.count, src.descriptions
    own = (band_names or {}).get(m) if isinstance(band_names, Mapping) else None
    if own is None and spec is not None and count == len(spec.bands):
        own = spec.bands
    own = list(own) if own is not None else [d or f"band{i + 1}" for i, d in enumerate(desc)]
    msensor = sensor.get(m) if isinstance(sensor, Mapping) else None
    if msensor is None and spec is not None and spec.sensor is not None and spec.name != "S2RGB":
        msensor = spec.sensor
    return [modalities[m]], own, msensor


def _scene_preview(paths, band_names, sensor, max_side: int = 1024):
    """A decimated true-colour (else first-bands) composite of the scene and the decimation."""
    import rasterio

    from .render import composite, composite_channels

    with rasterio.open(paths[0]) as src:
        f = max(1, -(-max(src.height, src.width) // max_side))
        out_shape = (-(-src.height // f), -(-src.width // f))
        try:
            idx, _ = composite_channels(list(band_names), "true", sensor)
        except GeoTiffError:
            idx = [0, 1, 2] if src.count >= 3 else [0, 0, 0]
        data = src.read([i + 1 for i in idx], out_shape=(len(idx),) + out_shape, masked=True,
                        resampling=rasterio.enums.Resampling.nearest)
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    return composite(np.ma.filled(data.astype(np.float32), np.nan), (0, 1, 2), valid=valid), f


def _write_quicklook(png_path: str, paths, band_names, sensor, *, class_map_path: str | None = None,
                     instances: Sequence[SceneInstance] = (), class_names: Sequence[str] | None = None) -> None:
    import rasterio

    from .render import (
        PanelInstance, auto_scale, class_colours, draw_panel, layout_panels, legend_entries, save_png,
    )

    rgb, f = _scene_preview(paths, band_names, sensor)
    s = auto_scale(*rgb.shape[:2], target=256) if max(rgb.shape[:2]) < 512 else 1
    panels = [("scene", draw_panel(rgb, scale=s))]
    legend = []
    if class_map_path is not None:
        with rasterio.open(class_map_path) as src:
            labels = src.read(1, out_shape=rgb.shape[:2], resampling=rasterio.enums.Resampling.nearest)
        n = int(labels[labels != NODATA_CLASS].max()) + 1 if (labels != NODATA_CLASS).any() else 1
        names = list(class_names) if class_names else [f"class {i}" for i in range(n)]
        colours = class_colours(names)
        panels.append(("class map", draw_panel(rgb, scale=s, class_map=labels, colours=colours, alpha=0.75)))
        legend = legend_entries(names, colours, "classes")
    else:
        h, w = rgb.shape[:2]
        drawn = []
        for inst in instances:
            if inst.mask is not None:
                crop = inst.mask[::f, ::f]
                m = np.zeros((h, w), bool)
                y0, x0 = inst.y0 // f, inst.x0 // f
                crop = crop[: h - y0, : w - x0]
                m[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
                drawn.append(PanelInstance(inst.category_id, mask=m))
            else:
                drawn.append(PanelInstance(inst.category_id, box=[v / f for v in inst.box]))
        n = max([i.category_id for i in instances] + [0]) + 1
        names = list(class_names) if class_names else [f"object {i}" for i in range(n)]
        colours = class_colours(names)
        panels.append((f"{len(drawn)} instances", draw_panel(rgb, scale=s, instances=drawn, thing_colours=colours)))
        legend = legend_entries(names, colours, "objects")
    title = os.path.basename(paths[0]) + (f" (1:{f})" if f > 1 else "")
    text = "; ".join(f"{e.group}: {e.name} = #{'%02x%02x%02x' % tuple(e.colour)}" for e in legend)
    save_png(png_path, layout_panels([panels], legend=legend, row_titles=[title]), text={"legend": text})


@contextlib.contextmanager
def _deleted_after(path: str):
    """A temporary file name beside ``path``, deleted (with its .aux.xml) when the block ends."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=TMP_MARK + ".tif",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        yield tmp
    finally:
        for p in (tmp, tmp + ".aux.xml"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)


@torch.no_grad()
def predict_scene(model, scene, *, tile: int = 256, overlap: int = 64, bands: Sequence[str] | None = None,
                  band_names: Sequence[str] | None = None, sensor: str | None = None, scale=None,
                  fill="zero", semseg_path: str | None = None, instances_path: str | None = None,
                  to_crs: str | None = None, class_names: Sequence[str] | None = None,
                  object_names: Sequence[str] | None = None,
                  score_threshold: float = 0.5, dedup_threshold: float = 0.5, edge_margin: int = 2,
                  batch_size: int = 1, progress: bool = True, quicklook: bool = True,
                  regions_path: str | None = None, polygon_classes: Sequence[str | int] | None = None,
                  polygon_exclude: Sequence[str | int] | None = None, min_area_m2: float = 0.0,
                  polygon_strip_rows: int = 1024) -> dict:
    """Run ``model`` over ``scene``: a GeoTIFF, a list of one GeoTIFF per date, or a mapping
    ``{modality: path}`` of one GeoTIFF per modality on one grid (e.g. ``{"S2L2A": ..., "S1RTC":
    ..., "DEM": ...}`` for TerraMind), whose windows are stacked band-wise by
    :func:`~d2geo.data.geotiff.read_modalities` into channels ``"<MODALITY>:<band>"`` (every band
    of every file in the mapping's order, or ``bands``). The files must share CRS, transform and
    size (else a :class:`SceneRequestError` naming what differs); ``band_names``, ``sensor`` and
    ``scale`` are then given per modality (mappings; ``scale`` may also be one value for all).

    Writes the blended class map to ``semseg_path`` and the merged instances as GeoJSON
    to ``instances_path`` (in ``to_crs``, e.g. ``"EPSG:4326"``, else the scene CRS), each
    atomically, with a quick-look ``<output>.png`` beside each. ``class_names`` name the
    classes of the class map, ``object_names`` the instance classes (default: ``class_names``
    when there is no class map).
    ``regions_path`` (semantic models): the class map's connected regions as GeoJSON polygons
    (:func:`d2geo.data.polygons.polygonize_class_map`, read back ``polygon_strip_rows`` rows at a
    time; ``polygon_classes`` / ``polygon_exclude`` select classes by name or id, ``min_area_m2``
    drops specks); without ``semseg_path`` the class map goes to a temporary file.
    Returns a summary with the window count and the instances (``SceneInstance`` list).
    """
    import contextlib

    import rasterio
    from rasterio.windows import Window

    from .render import class_colours

    paths, modalities = scene_files(scene)
    if object_names is None and semseg_path is None:
        object_names = class_names
    info = check_request(model, modalities or paths, semseg_path=semseg_path, instances_path=instances_path,
                         bands=bands, band_names=band_names, sensor=sensor, tile=tile, overlap=overlap,
                         regions_path=regions_path, scale=scale)
    want_sem = semseg_path is not None or regions_path is not None
    if regions_path is not None:
        from .polygons import PolygonRequestError, require_shapely, resolve_classes

        try:  # shapely, and the names against the given class names, before any work
            require_shapely()
            resolve_classes(polygon_classes, class_names, what="--polygon-classes")
            resolve_classes(polygon_exclude, class_names, what="--polygon-exclude")
        except PolygonRequestError as e:
            raise SceneRequestError(str(e)) from None
        if min_area_m2 < 0 or polygon_strip_rows < 1:
            raise SceneRequestError(f"min_area_m2={min_area_m2}, polygon_strip_rows={polygon_strip_rows}: the area "
                                    f"is 0 or more square metres, the strip at least 1 row")
    height, width, crs, transform = info["height"], info["width"], info["crs"], info["transform"]
    windows = tile_windows(height, width, tile, overlap)
    weights = blend_weights(tile, overlap)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()

    sem_dst = None
    acc = wsum = None
    buf_top = 0
    scene_valid_rows = None
    detections: list[SceneInstance] = []
    n_classes = None
    names = None
    checked = False
    tmp: dict[str, str] = {}

    def flush(until: int):
        """Write rows [buf_top, until) of the class map and shift the buffer."""
        nonlocal buf_top, acc, wsum, scene_valid_rows
        n = min(until, height) - buf_top
        if n <= 0 or acc is None:
            return
        with np.errstate(invalid="ignore", divide="ignore"):
            labels = np.argmax(acc[:, :n], axis=0).astype(np.uint8)
        labels[(wsum[:n] <= 0) | ~scene_valid_rows[:n]] = NODATA_CLASS
        sem_dst.write(labels[None], window=Window(0, buf_top, width, n))
        acc = np.roll(acc, -n, axis=1)
        acc[:, -n:] = 0
        wsum = np.roll(wsum, -n, axis=0)
        wsum[-n:] = 0
        scene_valid_rows = np.roll(scene_valid_rows, -n, axis=0)
        scene_valid_rows[-n:] = False
        buf_top += n

    def open_class_map(k: int):
        nonlocal sem_dst, names
        if class_names is not None and len(class_names) != k:
            raise SceneRequestError(f"the model predicts {k} classes but {len(class_names)} class names were "
                                    f"given ({list(class_names)})")
        names = list(class_names) if class_names is not None else [f"class {i}" for i in range(k)]
        sem_dst = rasterio.open(tmp["semseg"], "w", driver="GTiff", width=width, height=height, count=1,
                                dtype="uint8", crs=crs, transform=transform, nodata=NODATA_CLASS,
                                compress="deflate", photometric="palette")
        cmap = {i: (*c, 255) for i, c in enumerate(class_colours(names))}
        cmap[NODATA_CLASS] = (0, 0, 0, 0)
        sem_dst.write_colormap(1, cmap)
        sem_dst.set_band_description(1, "class")
        sem_dst.update_tags(1, class_names=json.dumps(names))
        _write_category_names(tmp["semseg_aux"], names)

    with contextlib.ExitStack() as stack:
        # entered in this order, renamed in the reverse one: the class map appears last
        if instances_path is not None:
            tmp["instances"] = stack.enter_context(atomic_path(instances_path))
        if regions_path is not None:
            tmp["regions"] = stack.enter_context(atomic_path(regions_path))
        if semseg_path is not None:
            tmp["semseg"] = stack.enter_context(atomic_path(semseg_path))
            tmp["semseg_aux"] = stack.enter_context(atomic_path(semseg_path + ".aux.xml"))
        elif regions_path is not None:  # a class map to polygonize, deleted afterwards
            tmp["semseg"] = stack.enter_context(_deleted_after(regions_path + ".classes.tif"))
            tmp["semseg_aux"] = tmp["semseg"] + ".aux.xml"
        try:
            batch: list = []

            def run(batch):
                nonlocal acc, wsum, n_classes, scene_valid_rows, checked
                inputs = [item[2] for item in batch]
                outputs = model(inputs)
                if len(outputs) != len(inputs):
                    raise GeoTiffError(f"the model returned {len(outputs)} outputs for {len(inputs)} inputs")
                if not checked:  # models whose outputs model_outputs() could not tell
                    for path, key in ((semseg_path, "sem_seg"), (regions_path, "sem_seg"),
                                      (instances_path, "instances")):
                        if path is not None and key not in outputs[0]:
                            raise SceneRequestError(f"the model returns {sorted(outputs[0])}, not {key!r}: it "
                                                    f"cannot give {_KIND[key]}")
                    checked = True
                for (row, col, _, valid), out in zip(batch, outputs):
                    if want_sem:
                        logits = out["sem_seg"].detach().float().cpu().numpy()
                        if logits.shape[-2:] != (tile, tile):
                            raise GeoTiffError(f"the model's sem_seg is {tuple(logits.shape)}, expected (K, {tile}, {tile})")
                        if acc is None:
                            n_classes = logits.shape[0]
                            open_class_map(n_classes)
                            acc = np.zeros((n_classes, tile, width), np.float32)
                            wsum = np.zeros((tile, width), np.float32)
                            scene_valid_rows = np.zeros((tile, width), bool)
                        r0 = row - buf_top
                        hh, ww = min(tile, height - row), min(tile, width - col)
                        w = weights[:hh, :ww] * valid[:hh, :ww]
                        acc[:, r0:r0 + hh, col:col + ww] += logits[:, :hh, :ww] * w
                        wsum[r0:r0 + hh, col:col + ww] += w
                        scene_valid_rows[r0:r0 + hh, col:col + ww] |= valid[:hh, :ww]
                    if instances_path is not None:
                        detections.extend(_window_instances(out["instances"], row, col, tile, height, width,
                                                            valid, score_threshold, edge_margin))

            current_row = None
            for row, col in _progress(windows, len(windows), progress):
                if row != current_row:
                    if batch:
                        run(batch)
                        batch = []
                    if sem_dst is not None:
                        flush(row)
                    current_row = row
                sample = read_scene_window(paths, modalities, Window(col, row, tile, tile), bands=bands,
                                           band_names=band_names, sensor=sensor, scale=scale, fill=fill)
                item = {"image": torch.as_tensor(sample.image), "height": tile, "width": tile,
                        "metadata": {k: (torch.as_tensor(v) if not isinstance(v, float) else v)
                                     for k, v in sample.metadata.items()}}
                batch.append((row, col, item, sample.valid))
                if len(batch) >= batch_size:
                    run(batch)
                    batch = []
            if batch:
                run(batch)
            if sem_dst is not None:
                flush(height)
        finally:
            if sem_dst is not None:
                sem_dst.close()
            if was_training and hasattr(model, "train"):
                model.train()

        n_regions = None
        if regions_path is not None:
            from .polygons import polygonize_class_map, resolve_classes

            fc = polygonize_class_map(tmp["semseg"], class_names=names,
                                      classes=resolve_classes(polygon_classes, names, what="--polygon-classes"),
                                      exclude=resolve_classes(polygon_exclude, names, what="--polygon-exclude"),
                                      min_area_m2=min_area_m2, to_crs=to_crs, strip_rows=polygon_strip_rows)
            n_regions = len(fc["features"])
            with open(tmp["regions"], "w", encoding="utf-8") as f:
                json.dump(fc, f)
        kept = merge_instances(detections, dedup_threshold) if instances_path is not None else []
        if instances_path is not None:
            gj = instances_to_geojson(kept, transform, crs, to_crs=to_crs, class_names=object_names)
            with open(tmp["instances"], "w", encoding="utf-8") as f:
                json.dump(gj, f)
        if quicklook:
            qpaths, qbands, qsensor = _preview_source(paths, modalities, info["band_names"], band_names, sensor)
            if semseg_path is not None:
                qnames = list(class_names) if class_names is not None else None
                _write_quicklook(semseg_path + ".png", qpaths, qbands, qsensor,
                                 class_map_path=tmp["semseg"], class_names=qnames)
            if instances_path is not None:
                _write_quicklook(instances_path + ".png", qpaths, qbands, qsensor, instances=kept,
                                 class_names=object_names)
    logger.info("predicted %d windows of %s (%dx%d); %d instances kept of %d detections",
                len(windows), paths[0], height, width, len(kept), len(detections))
    return {"windows": len(windows), "detections": len(detections), "instances": kept,
            "semseg_path": semseg_path, "instances_path": instances_path, "regions_path": regions_path,
            "regions": n_regions,
            "quicklooks": [p + ".png" for p in (semseg_path, instances_path) if p is not None and quicklook]}
