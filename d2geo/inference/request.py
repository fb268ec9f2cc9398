"""The request check: a prediction request against the model and the scene, before any work.

:func:`check_request` refuses, naming the fix, a semantic model asked for instances (or the
reverse), a band list the file does not have or of another length than the model's input,
an output over the scene itself, an output folder that does not exist, two outputs on one
file, and multi-modality scenes whose files do not share one grid or whose channels are not
the model's. :func:`check_polygon_request` checks the class-map polygon options. Nothing is
read beyond the files' headers (and one pixel of a multi-modality scene).
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from d2geo.data.geotiff import (
    GeoTiffError, check_modality_grid, read_geotiff, read_modalities, resolve_band_indices,
)

from .windows import tile_windows

__all__ = ["SceneRequestError", "check_request", "check_polygon_request", "model_outputs", "model_pixel_mean",
           "scene_files", "read_scene_window"]


class SceneRequestError(GeoTiffError):
    """A prediction request that cannot work with this model or scene (nothing was written)."""


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


def _values(x) -> np.ndarray | None:
    """A torch tensor or an array of statistics as a flat float64 array; None when empty or absent."""
    if x is None or isinstance(x, (str, bytes)):
        return None
    if hasattr(x, "detach"):  # a torch tensor (imported by whoever made it)
        x = x.detach().cpu().double().numpy()
    try:
        a = np.asarray(x, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    return a if a.size > 0 else None


def model_pixel_mean(model):
    """The model's per-band input mean (d2geo's and detectron2's meta-architectures, or a model
    file's runtime: a tensor or an array), if any."""
    m = getattr(model, "module", model)
    mean = getattr(m, "pixel_mean", None)
    return mean if _values(mean) is not None else None


def _model_in_channels(model) -> int | None:
    mean = model_pixel_mean(model)
    return int(_values(mean).size) if mean is not None else None  # one value per band


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
    from d2geo.encoders.modalities import canonical_channel

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
                  regions_path: str | None = None, scale=None, geoparquet_path: str | None = None,
                  panoptic_paths: Sequence[str] = ()) -> dict:
    """Check a predict_scene request before any work; returns the scene's size, CRS and
    transform. ``scene_paths``: the scene's files (one, or one per date) or a mapping
    ``{modality: path}`` (see :func:`scene_files`). Raises :class:`SceneRequestError` (or
    FileNotFoundError) naming the fix. ``panoptic_paths``: the panoptic outputs besides the
    class map (checked by :func:`~d2geo.inference.panoptic.check_panoptic_request`)."""
    import rasterio

    scene_paths, modalities = scene_files(scene_paths)
    if (semseg_path is None and instances_path is None and regions_path is None and geoparquet_path is None
            and not panoptic_paths):
        raise ValueError("give semseg_path, instances_path, geoparquet_path and/or regions_path: there is nothing "
                         "to write")
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
    if geoparquet_path is not None:
        _check_output_path(geoparquet_path, "instances (GeoParquet)", (".parquet", ".geoparquet"), scene_paths)
    given = [os.path.abspath(p) for p in (semseg_path, instances_path, regions_path, geoparquet_path, *panoptic_paths)
             if p is not None]
    if len(set(given)) < len(given):
        raise SceneRequestError("two outputs (class map, instances, class-map polygons) would go to the same file: "
                                "give each its own file name")
    outputs = model_outputs(model)
    if outputs is not None:
        for path, key in ((semseg_path, "sem_seg"), (regions_path, "sem_seg"), (instances_path, "instances"),
                          (geoparquet_path, "instances")):
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


def check_polygon_request(class_names, polygon_classes, polygon_exclude, min_area_m2: float,
                          strip_rows: int) -> None:
    """The class-map polygon options (shapely present, class names or ids known, area and
    strip sizes in range), before any work."""
    from .polygons import PolygonRequestError, require_shapely, resolve_classes

    if strip_rows < 1:
        raise SceneRequestError(f"polygon_strip_rows={strip_rows}: use at least 1 row")
    if min_area_m2 < 0:
        raise SceneRequestError(f"min_area_m2={min_area_m2} is negative: use 0 (keep every region) or a positive "
                                f"area in square metres")
    try:
        require_shapely()
        resolve_classes(polygon_classes, class_names, what="--polygon-classes")
        resolve_classes(polygon_exclude, class_names, what="--polygon-exclude")
    except PolygonRequestError as e:
        raise SceneRequestError(str(e)) from None


def model_pixel_std(model):
    m = getattr(model, "module", model)
    std = getattr(m, "pixel_std", None)
    return std if _values(std) is not None else None


def check_input_units(model, paths: Sequence[str], modalities, *, height: int, width: int, tile: int,
                      overlap: int, bands=None, band_names=None, sensor=None, scale=None, allow: bool = False,
                      max_windows: int = 4):
    """The units check (:func:`d2geo.data.units.check_units`) on up to ``max_windows`` windows
    spread over the scene, read as the run reads them (invalid pixels left out), against the
    model's ``pixel_mean`` / ``pixel_std``, before the model sees any window. ``allow``: warn
    instead of raising (``--skip-units-check``). Returns the report (None: the model has no
    statistics)."""
    from rasterio.windows import Window

    from d2geo.data.units import check_units

    from .windows import window_shape

    mean, std = model_pixel_mean(model), model_pixel_std(model)
    if mean is None or std is None:
        return None
    wins = tile_windows(height, width, tile, overlap)
    pick = sorted({round(i * (len(wins) - 1) / max(max_windows - 1, 1)) for i in range(min(max_windows, len(wins)))})
    h, w = window_shape(height, width, tile)
    samples, names = [], None
    for i in pick:
        r, c = wins[i]
        s = read_scene_window(paths, modalities, Window(c, r, w, h), bands=bands, band_names=band_names,
                              sensor=sensor, scale=scale, fill=None)
        samples.append(s.image)
        names = s.band_names
    return check_units(samples, band_names=names, mean=_values(mean).tolist(), std=_values(std).tolist(),
                       source=paths[0], allow=allow, sensor=sensor if isinstance(sensor, str) else None)
