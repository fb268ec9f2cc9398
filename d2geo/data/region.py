"""Region-scale inference: many scenes, many processes, cloud-native outputs.

:func:`predict_region` runs a detectron2-style model over a list of scenes (GeoTIFFs,
one file per date, one file per modality, or STAC items) and writes, per scene, into one output folder:

* ``<id>.tif``: the class map as a Cloud-Optimized GeoTIFF (uint8, 512 px tiles, deflate,
  nearest-neighbour overviews until the image fits one tile, the colour table and class names of
  :mod:`d2geo.data.scene`; 255 = no prediction);
* ``<id>.scores.tif`` (``probabilities=True``): the blended class scores as a float32 COG,
  one band per class (softmax of the blended ``sem_seg``; average overviews; NaN = none);
* ``<id>.geojson`` and ``<id>.parquet`` (GeoParquet, needs ``pip install d2geo[region]``):
  the instances as polygons (models that predict instances);
* ``<id>.regions.geojson`` and ``<id>.regions.parquet`` (``polygons=True``, semantic models):
  the class map's connected regions as polygons (:mod:`d2geo.data.polygons`: one feature per
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

Within a scene, windows are blended exactly as :func:`d2geo.data.scene.predict_scene`
does (linear ramps over the overlap, arg-max of the weighted mean) and instances are
deduplicated with its :func:`~d2geo.data.scene.merge_instances`. Scenes wider than
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
scenes whose entry matches (resume after a kill), and redoes the others.

Memory and speed: a ``DataLoader`` reads ``batch_size`` windows per step ahead of the model
(``num_workers`` processes), the model sees ``batch_size`` windows per forward (under
bfloat16 autocast where the device computes bfloat16 natively, ``amp="auto"``), the class
map is written in strips to a tiled GeoTIFF and converted to a COG by GDAL with a bounded
block cache (``GDAL_CACHEMAX``, 64 MB): the peak does not grow with the scene size.
Kept instances hold only their mask crops.
"""
from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import logging
import math
import os
import time
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import escape

import numpy as np
import torch

from .files import TMP_MARK, atomic_path
from .geotiff import GeoTiffError, apply_affine, check_modality_grid, pixel_gsd
from .scene import (
    NODATA_CLASS, SceneInstance, SceneRequestError, _window_instances, _write_category_names, blend_weights,
    check_request, instances_to_geojson, merge_instances, model_outputs, read_scene_window, tile_windows,
)

logger = logging.getLogger(__name__)

__all__ = ["RegionScene", "collect_scenes", "stac_item_vrt", "shard_scenes", "ownership", "predict_region",
           "write_mosaic_vrt", "RegionRequestError", "STATE_DIR"]

#: hidden folder in the output folder with the manifest entries and STAC VRTs
STATE_DIR = ".d2geo-region"
GDAL_CACHE_MB = 64
#: a scene may lie this far (degrees) outside the area of use of the mosaic's CRS
MOSAIC_MARGIN_DEG = 10.0
COG_BLOCK = 512
_RASTER_EXT = (".tif", ".tiff", ".vrt", ".jp2")


class RegionRequestError(SceneRequestError):
    """A region request that cannot work (nothing was written)."""


# ----------------------------------------------------------------------------- scenes
@dataclasses.dataclass
class RegionScene:
    """One scene of a region: ``paths`` are its dates (one raster each, same grid), or with
    ``modalities`` (``{modality: path}``) its modalities' files, stacked band-wise."""

    id: str
    paths: list
    sources: list  # the files the scene was made from (STAC items and their assets included)
    crs: Any = None
    transform: Any = None
    height: int = 0
    width: int = 0
    gsd: float = 0.0  # metres per pixel (square root of the pixel area)
    modalities: dict | None = None  # one file per modality on one grid (read_modalities)

    @property
    def files(self):
        """What the readers and :func:`~d2geo.data.scene.check_request` take: the modality
        mapping, else the list of dates."""
        return self.modalities if self.modalities is not None else self.paths

    @property
    def km2(self) -> float:
        return self.height * self.width * self.gsd ** 2 / 1e6

    def footprint(self, crs=None):
        """Corners (4, 2) in ``crs`` (default: the scene's)."""
        xs, ys = apply_affine(self.transform, [0, self.width, self.width, 0], [0, 0, self.height, self.height])
        if crs is not None and crs != self.crs:
            from rasterio.warp import transform as warp

            xs, ys = warp(self.crs, crs, list(map(float, xs)), list(map(float, ys)))
        return np.stack([np.asarray(xs, float), np.asarray(ys, float)], axis=1)


def _is_stac_item(path: str) -> bool:
    if not path.lower().endswith(".json"):
        return False
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("type") == "Feature" and "assets" in doc


def _asset_band_names(asset: dict, key: str) -> list[str]:
    for field in ("eo:bands", "bands", "raster:bands"):
        bands = asset.get(field)
        if isinstance(bands, list) and bands and all(isinstance(b, dict) for b in bands):
            names = [b.get("name") or b.get("common_name") for b in bands]
            if all(names):
                return [str(n) for n in names]
    return [key]


def _asset_scale_offset(asset: dict, n: int) -> list[tuple[float | None, float | None]]:
    out = []
    bands = asset.get("raster:bands") or asset.get("bands") or []
    for i in range(n):
        b = bands[i] if i < len(bands) and isinstance(bands[i], dict) else {}
        out.append((b.get("scale", b.get("raster:scale")), b.get("offset", b.get("raster:offset"))))
    return out


def stac_item_vrt(item_path: str, out_path: str, *, assets: Sequence[str] | None = None) -> list[str]:
    """Write a VRT stacking the raster assets of a local STAC item (one band per asset band,
    named as the item names them, its ``datetime`` as ``TIFFTAG_DATETIME``); returns the
    files read. Assets at coarser resolutions are resampled (bilinear) to the finest grid;
    assets must share the CRS and the extent (else :class:`RegionRequestError`)."""
    import rasterio

    with open(item_path, encoding="utf-8") as f:
        item = json.load(f)
    base = os.path.dirname(os.path.abspath(item_path))
    chosen = []
    for key, asset in item["assets"].items():
        if assets is not None and key not in assets:
            continue
        roles = asset.get("roles") or ["data"]
        mtype = str(asset.get("type", "image/tiff"))
        if "data" not in roles or not ("tiff" in mtype or "jp2" in mtype or "vrt" in mtype):
            continue
        href = asset["href"]
        if "://" in href and not href.startswith("file://"):
            raise RegionRequestError(f"{item_path}: asset {key!r} is remote ({href}); predict_region reads local "
                                     f"files: download the assets and point the hrefs at them")
        href = href[len("file://"):] if href.startswith("file://") else href
        chosen.append((key, asset, href if os.path.isabs(href) else os.path.join(base, href)))
    if assets is not None:
        missing = sorted(set(assets) - {k for k, _, _ in chosen})
        if missing:
            raise RegionRequestError(f"{item_path} has no raster data assets {missing}; it has "
                                     f"{sorted(item['assets'])}")
    if not chosen:
        raise RegionRequestError(f"{item_path} has no raster data assets (roles 'data', type image/tiff); "
                                 f"its assets are {sorted(item['assets'])}")
    infos = []
    for key, asset, path in chosen:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{item_path}: asset {key!r} points at {path}, which does not exist")
        with rasterio.open(path) as src:
            infos.append((key, asset, path, src.crs, src.transform, src.width, src.height, src.count,
                          src.dtypes[0], src.nodata, src.scales, src.offsets))
    crs0 = infos[0][3]
    finest = min(infos, key=lambda t: abs(t[4].a))
    _, _, _, _, t0, w0, h0 = finest[:7]
    bounds0 = (t0.c, t0.f, t0.c + t0.a * w0, t0.f + t0.e * h0)
    for key, _, path, crs, t, w, h, *_ in infos:
        if crs != crs0:
            raise RegionRequestError(f"{item_path}: asset {key!r} is in {crs}, {infos[0][0]!r} in {crs0}: "
                                     f"reproject the assets to one CRS first")
        b = (t.c, t.f, t.c + t.a * w, t.f + t.e * h)
        if max(abs(x - y) for x, y in zip(b, bounds0)) > abs(t.a) * 0.5:
            raise RegionRequestError(f"{item_path}: asset {key!r} covers {b}, {finest[0]!r} {bounds0}: the assets "
                                     f"must cover the same extent")
    dtypes = {i[8] for i in infos}
    dtype = {"uint8": "Byte", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32", "int32": "Int32",
             "float32": "Float32", "float64": "Float64"}
    vrt_dtype = dtype[infos[0][8]] if len(dtypes) == 1 else "Float32"
    props = item.get("properties", {})
    when = props.get("datetime") or props.get("start_datetime")
    meta = ""
    if when:
        from .geotiff import parse_time

        import datetime as _dt

        t = _dt.datetime.fromtimestamp(parse_time(str(when)), tz=_dt.timezone.utc)
        meta = (f'  <Metadata>\n    <MDI key="TIFFTAG_DATETIME">{t.strftime("%Y:%m:%d %H:%M:%S")}</MDI>\n'
                f'    <MDI key="STAC_ITEM">{escape(str(item.get("id", "")))}</MDI>\n  </Metadata>\n')
    bands_xml = []
    out_dir = os.path.dirname(os.path.abspath(out_path))
    n = 0
    for key, asset, path, crs, t, w, h, count, dt, nodata, scales, offsets in infos:
        names = _asset_band_names(asset, key)
        if len(names) != count:
            names = [f"{key}_{i + 1}" for i in range(count)] if count > 1 else [key]
        so = _asset_scale_offset(asset, count)
        rel = os.path.relpath(path, out_dir)
        for i in range(count):
            n += 1
            scale = so[i][0] if so[i][0] is not None else scales[i]
            offset = so[i][1] if so[i][1] is not None else offsets[i]
            nd = f"    <NoDataValue>{nodata!r}</NoDataValue>\n" if nodata is not None else ""
            src_nd = f"      <NODATA>{nodata!r}</NODATA>\n" if nodata is not None else ""
            bands_xml.append(
                f'  <VRTRasterBand dataType="{vrt_dtype}" band="{n}">\n'
                f"    <Description>{escape(names[i])}</Description>\n{nd}"
                f"    <Offset>{offset!r}</Offset>\n    <Scale>{scale!r}</Scale>\n"
                f'    <ComplexSource resampling="bilinear">\n'
                f'      <SourceFilename relativeToVRT="1">{escape(rel)}</SourceFilename>\n'
                f"      <SourceBand>{i + 1}</SourceBand>\n"
                f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
                f'      <DstRect xOff="0" yOff="0" xSize="{w0}" ySize="{h0}"/>\n{src_nd}'
                f"    </ComplexSource>\n  </VRTRasterBand>\n")
    gt = ", ".join(repr(float(v)) for v in (t0.c, t0.a, t0.b, t0.f, t0.d, t0.e))
    xml = (f'<VRTDataset rasterXSize="{w0}" rasterYSize="{h0}">\n  <SRS>{escape(crs0.to_wkt())}</SRS>\n'
           f"  <GeoTransform>{gt}</GeoTransform>\n{meta}" + "".join(bands_xml) + "</VRTDataset>\n")
    with atomic_path(out_path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(xml)
    return [item_path] + [p for _, _, p, *_ in infos]


def _scene_id(path: str) -> str:
    name = os.path.basename(path)
    for ext in _RASTER_EXT + (".json",):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def _read_list(path: str) -> list:
    base = os.path.dirname(os.path.abspath(path))
    groups: list = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = [p for p in line.replace(",", " ").split() if p]
            pairs = [p.partition("=") for p in parts]
            if any(sep for _, sep, _ in pairs):  # MODALITY=path entries: one file per modality
                if not all(sep and m and v for m, sep, v in pairs):
                    raise RegionRequestError(
                        f"{path}, line {n}: mixes MODALITY=path entries with plain paths ({line!r}); a line is "
                        f"either the dates of a scene (paths) or its modalities (S2L2A=a.tif S1RTC=b.tif ...)")
                mods: dict[str, str] = {}
                for m, _, v in pairs:
                    if m.lower() in {k.lower() for k in mods}:
                        raise RegionRequestError(f"{path}, line {n}: the modality {m} is named twice")
                    mods[m] = v if os.path.isabs(v) else os.path.join(base, v)
                groups.append(mods)
            else:
                groups.append([p if os.path.isabs(p) else os.path.join(base, p) for p in parts])
    return groups


def _modality_groups(inputs: Mapping[str, str]) -> list[dict[str, str]]:
    """Scenes of one file per modality from ``{modality: file or folder}``: files are one
    scene; folders are matched by file name (``S2L2A/x.tif`` with ``S1RTC/x.tif``, ...), the
    first modality's folder listing the scenes."""
    if not inputs:
        raise RegionRequestError("the modality inputs are empty: give {modality: folder or file}")
    kinds = {m: os.path.isdir(p) for m, p in inputs.items()}
    for m, p in inputs.items():
        if not os.path.exists(p):
            raise FileNotFoundError(f"the {m} input {p} does not exist")
    if len(set(kinds.values())) > 1:
        raise RegionRequestError(
            f"the modality inputs mix folders and files ({', '.join(f'{m}={p}' for m, p in inputs.items())}): give "
            f"a folder per modality (scenes matched by file name) or a file per modality (one scene)")
    if not next(iter(kinds.values())):
        return [{m: os.path.abspath(p) for m, p in inputs.items()}]
    listing = {m: sorted(os.path.basename(p) for p in glob.glob(os.path.join(d, "*"))
                         if p.lower().endswith(_RASTER_EXT)) for m, d in inputs.items()}
    (m0, names0), *others = listing.items()
    if not names0:
        raise RegionRequestError(f"the {m0} folder {inputs[m0]} holds no raster files ({', '.join(_RASTER_EXT)})")
    for m, names in others:
        missing = sorted(set(names0) - set(names))
        if missing:
            raise RegionRequestError(
                f"the {m} folder {inputs[m]} has no {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
                f"of the {m0} folder {inputs[m0]}: every scene needs a file of every modality, under the same file "
                f"name; add them, or move those {m0} files out")
        extra = sorted(set(names) - set(names0))
        if extra:
            logger.warning("%d file(s) of the %s folder %s have no %s file and are not predicted: %s", len(extra), m,
                           inputs[m], m0, ", ".join(extra[:5]) + (" ..." if len(extra) > 5 else ""))
    return [{m: os.path.abspath(os.path.join(inputs[m], name)) for m in inputs} for name in names0]


def collect_scenes(inputs, state_dir: str | None = None, *,
                   stac_assets: Sequence[str] | None = None) -> list[RegionScene]:
    """The scenes named by ``inputs``: raster files, folders (each raster file in it is a
    scene; ``*.json`` STAC items too), text files (one scene a line: one raster or STAC item,
    or several, one per date, separated by spaces or commas, or one file per modality as
    ``MODALITY=path`` entries; ``#`` starts a comment) and STAC item JSON files (their assets
    are stacked into a VRT in ``state_dir``). ``inputs`` may instead map modalities to folders
    (scenes matched by file name across them) or to files (one scene): ``{"S2L2A": "s2/",
    "S1RTC": "s1/", "DEM": "dem/"}``; a scene of modalities is stacked band-wise as
    :func:`~d2geo.data.geotiff.read_modalities` does, its files checked to share one grid."""
    import rasterio

    groups: list = []
    if isinstance(inputs, Mapping):
        groups = _modality_groups({str(m): os.fspath(p) for m, p in inputs.items()})
        inputs = ()
    elif isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    for inp in inputs:
        inp = os.fspath(inp)
        if os.path.isdir(inp):
            found = sorted(p for p in glob.glob(os.path.join(inp, "*"))
                           if p.lower().endswith(_RASTER_EXT) or _is_stac_item(p))
            if not found:
                raise RegionRequestError(f"the folder {inp} holds no raster files ({', '.join(_RASTER_EXT)}) and "
                                         f"no STAC item JSON: give the scenes' folder")
            groups.extend([p] for p in found)
        elif not os.path.isfile(inp):
            raise FileNotFoundError(f"scene input not found: {inp}")
        elif inp.lower().endswith(_RASTER_EXT) or _is_stac_item(inp):
            groups.append([inp])
        elif inp.lower().endswith(".json"):
            raise RegionRequestError(f"{inp} is JSON but not a STAC item (a Feature with assets): give STAC items, "
                                     f"raster files, folders or a text file listing them")
        else:
            groups.extend(_read_list(inp))
    if not groups:
        raise RegionRequestError("no scenes were given")
    scenes, seen = [], {}
    for group in groups:
        if isinstance(group, dict):  # one file per modality
            sid = _scene_id(next(iter(group.values())))
            if sid in seen:
                raise RegionRequestError(f"two scenes would write the same outputs {sid}.*: {seen[sid]} and "
                                         f"{next(iter(group.values()))}; rename one")
            seen[sid] = next(iter(group.values()))
            try:
                grid = check_modality_grid(group)
            except GeoTiffError as e:
                raise RegionRequestError(f"scene {sid}: {e}") from None
            if grid["crs"] is None:
                raise RegionRequestError(f"{grid['paths'][0]} has no CRS: region outputs need georeferenced scenes "
                                         f"(assign one with gdal_edit.py -a_srs)")
            crs, transform, h, w = grid["crs"], grid["transform"], grid["height"], grid["width"]
            scenes.append(RegionScene(sid, list(group.values()), list(group.values()), crs, transform, h, w,
                                      pixel_gsd(crs, transform, h, w), modalities=dict(group)))
            continue
        paths, sources = [], []
        for p in group:
            if not os.path.isfile(p):
                raise FileNotFoundError(f"scene file not found: {p}")
            if _is_stac_item(p):
                if state_dir is None:
                    raise ValueError("STAC items need a state_dir for their VRTs")
                vrt = os.path.join(state_dir, "stac", _scene_id(p) + ".vrt")
                os.makedirs(os.path.dirname(vrt), exist_ok=True)
                sources.extend(stac_item_vrt(p, vrt, assets=stac_assets))
                paths.append(vrt)
            else:
                paths.append(os.path.abspath(p))
                sources.append(os.path.abspath(p))
        sid = _scene_id(group[0])
        if sid in seen:
            raise RegionRequestError(f"two scenes would write the same outputs {sid}.*: {seen[sid]} and {group[0]}; "
                                     f"rename one")
        seen[sid] = group[0]
        with rasterio.open(paths[0]) as src:
            if src.crs is None:
                raise RegionRequestError(f"{paths[0]} has no CRS: region outputs need georeferenced scenes "
                                         f"(assign one with gdal_edit.py -a_srs)")
            crs, transform, h, w = src.crs, src.transform, src.height, src.width
        scenes.append(RegionScene(sid, paths, sources, crs, transform, h, w, pixel_gsd(crs, transform, h, w)))
    return scenes


def shard_scenes(scenes: Sequence[RegionScene], rank: int, world_size: int) -> list[RegionScene]:
    """This rank's scenes: largest first, dealt round-robin (deterministic)."""
    order = sorted(range(len(scenes)), key=lambda i: (-scenes[i].height * scenes[i].width, i))
    return [scenes[i] for k, i in enumerate(order) if k % world_size == rank]


# -------------------------------------------------------------------------- ownership
def _edge_distance(scene: RegionScene, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance in metres of points (in the scene's CRS) from the scene's edge (<0 outside)."""
    inv = ~scene.transform
    c, r = apply_affine(inv, xs, ys)
    d = np.minimum(np.minimum(c, scene.width - c), np.minimum(r, scene.height - r))
    return d * scene.gsd


def _lonlat_box(scene: RegionScene) -> tuple[float, float, float, float]:
    """West, south, east, north of the scene in degrees (its edges sampled, 16 points a side)."""
    from rasterio.warp import transform as warp

    t = np.linspace(0, 1, 17)
    cols = np.concatenate([t * scene.width, np.full(17, scene.width), t[::-1] * scene.width, np.zeros(17)])
    rows = np.concatenate([np.zeros(17), t * scene.height, np.full(17, scene.height), t[::-1] * scene.height])
    xs, ys = apply_affine(scene.transform, cols, rows)
    lon, lat = warp(scene.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    return min(lon), min(lat), max(lon), max(lat)


def _neighbours(scene: RegionScene, scenes: Sequence[RegionScene]) -> list[int]:
    """Indices of the scenes whose footprints overlap ``scene``'s (longitude/latitude boxes;
    scenes across the antimeridian are not matched)."""
    w, s_, e, n = _lonlat_box(scene)
    out = []
    for i, other in enumerate(scenes):
        if other.id == scene.id:
            continue
        ow, os_, oe, on = _lonlat_box(other)
        if ow < e and oe > w and os_ < n and on > s_:
            out.append(i)
    return out


class Ownership:
    """Which pixels of ``scene`` it owns among ``scenes`` (see the module docstring)."""

    def __init__(self, scene: RegionScene, scenes: Sequence[RegionScene]):
        self.scene = scene
        self.index = next(i for i, s in enumerate(scenes) if s.id == scene.id)
        self.others = [(i, scenes[i]) for i in _neighbours(scene, scenes)]

    def __bool__(self):
        return bool(self.others)

    def owned(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        """bool ``(height, width)``: the pixels of this block that this scene owns."""
        import rasterio
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform as warp
        from rasterio.windows import Window

        s = self.scene
        rr, cc = np.mgrid[row0:row0 + height, col0:col0 + width]
        xs, ys = apply_affine(s.transform, cc + 0.5, rr + 0.5)
        mine = _edge_distance(s, xs, ys)
        owned = np.ones((height, width), bool)
        for i, other in self.others:
            if other.crs == s.crs:
                ox, oy = xs, ys
            else:
                ox, oy = warp(s.crs, other.crs, xs.ravel(), ys.ravel())
                ox, oy = np.asarray(ox).reshape(xs.shape), np.asarray(oy).reshape(ys.shape)
            theirs = _edge_distance(other, ox, oy)
            wins = (theirs > mine) | ((theirs == mine) & (i < self.index))
            wins &= theirs > 0
            if not wins.any():
                continue
            # only where the other scene has data (every date) does it take the pixel
            valid = np.ones((height, width), bool)
            for path in other.paths:
                with rasterio.open(path) as src, WarpedVRT(
                        src, crs=s.crs, transform=s.transform, width=s.width, height=s.height,
                        resampling=rasterio.enums.Resampling.nearest) as vrt:
                    valid &= vrt.dataset_mask(window=Window(col0, row0, width, height)) > 0
            owned &= ~(wins & valid)
        return owned


def ownership(scene: RegionScene, scenes: Sequence[RegionScene]) -> Ownership:
    return Ownership(scene, scenes)


# ---------------------------------------------------------------------------- windows
class _WindowReader(torch.utils.data.Dataset):
    """Windows of one scene, read with :func:`read_geotiff` (a scene of modalities: stacked by
    :func:`~d2geo.data.geotiff.read_modalities`), in DataLoader workers."""

    def __init__(self, paths, windows, tile, read_kwargs, modalities=None):
        self.paths, self.windows, self.tile, self.kw = paths, windows, tile, read_kwargs
        self.modalities = modalities

    def __len__(self):
        return len(self.windows)

    def __getitem__(self, i):
        from rasterio.windows import Window

        row, col = self.windows[i]
        s = read_scene_window(self.paths, self.modalities, Window(col, row, self.tile, self.tile), **self.kw)
        meta = {k: (torch.as_tensor(v) if not isinstance(v, float) else v) for k, v in s.metadata.items()}
        return row, col, {"image": torch.as_tensor(s.image), "height": self.tile, "width": self.tile,
                          "metadata": meta}, s.valid


def _collate(batch):
    return batch


def _strips(width: int, max_width: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil(width / max_width))
    edges = [round(i * width / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def _sha256(path: str, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def _cpu_has_fast_bf16() -> bool:
    cpu = getattr(torch, "cpu", None)
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def _autocast(device_type: str, amp: str):
    """bfloat16 autocast: ``"auto"`` where the device computes in bfloat16 natively (CUDA GPUs
    with bf16, CPUs with AMX or AVX512-BF16), ``"bf16"`` always, ``"off"`` never."""
    if amp in (None, "off", "none", False):
        return contextlib.nullcontext()
    if amp not in ("auto", "bf16", "bfloat16"):
        raise ValueError(f"amp={amp!r}: use 'auto', 'bf16' or 'off'")
    if not torch.amp.is_autocast_available(device_type):
        return contextlib.nullcontext()
    if device_type == "cuda" and not torch.cuda.is_bf16_supported():
        return contextlib.nullcontext()  # bfloat16 only: float16 scores could overflow
    if amp == "auto" and device_type == "cpu" and not _cpu_has_fast_bf16():
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=torch.bfloat16)


def _to_cog(src_path: str, dst_path: str, resampling: str, blocksize: int = COG_BLOCK) -> None:
    import rasterio
    from rasterio.shutil import copy

    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB, GDAL_NUM_THREADS=1):
        copy(src_path, dst_path, driver="COG", compress="deflate", blocksize=blocksize,
             overview_resampling=resampling, overviews="auto", bigtiff="if_safer")


@dataclasses.dataclass
class RegionOptions:
    tile: int = 256
    overlap: int = 64
    batch_size: int = 4
    num_workers: int = 1
    bands: Sequence[str] | None = None
    band_names: Sequence[str] | None = None
    sensor: str | None = None
    scale: Any = None
    fill: str = "zero"
    class_names: Sequence[str] | None = None
    object_names: Sequence[str] | None = None
    probabilities: bool = False
    instances: bool | None = None  # None: when the model predicts instances
    semseg: bool | None = None  # None: when the model predicts sem_seg
    to_crs: str | None = None
    score_threshold: float = 0.5
    dedup_threshold: float = 0.5
    edge_margin: int = 2
    amp: str = "auto"  # bfloat16 autocast where the device has it natively; "bf16", "off"
    max_strip_width: int = 4096
    cog_blocksize: int = COG_BLOCK  # overviews are made until the image fits one block
    polygons: bool = False  # semantic models: the class map's regions as GeoJSON and GeoParquet
    polygon_classes: Sequence[str | int] | None = None  # only these classes (names or ids)
    polygon_exclude: Sequence[str | int] | None = None  # not these classes (names or ids)
    min_area_m2: float = 0.0  # regions smaller than this are dropped
    polygon_strip_rows: int = 1024  # rows of the class map polygonized at a time (memory)

    def output_key(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("num_workers")  # changes speed, not outputs
        d.pop("polygon_strip_rows")  # changes memory, not outputs (polygons are normalized and sorted)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


def _outputs_of(scene: RegionScene, out_dir: str, opts: RegionOptions, semseg: bool, instances: bool) -> dict:
    out = {}
    if semseg:
        out["class_map"] = os.path.join(out_dir, scene.id + ".tif")
        if opts.probabilities:
            out["scores"] = os.path.join(out_dir, scene.id + ".scores.tif")
        if opts.polygons:
            out["regions_geojson"] = os.path.join(out_dir, scene.id + ".regions.geojson")
            out["regions_geoparquet"] = os.path.join(out_dir, scene.id + ".regions.parquet")
    if instances:
        out["geojson"] = os.path.join(out_dir, scene.id + ".geojson")
        out["geoparquet"] = os.path.join(out_dir, scene.id + ".parquet")
    return out


@torch.no_grad()
def predict_region_scene(model, scene: RegionScene, scenes: Sequence[RegionScene], out_dir: str,
                         opts: RegionOptions, *, semseg: bool, instances: bool, device_type: str = "cpu",
                         on_windows=None) -> dict:
    """Predict one scene of a region into ``out_dir``; returns its output paths.

    ``on_windows(n)`` is called after each batch with the number of windows done."""
    import rasterio
    from rasterio.windows import Window

    from .render import class_colours

    outs = _outputs_of(scene, out_dir, opts, semseg, instances)
    own = ownership(scene, scenes)
    height, width, tile, overlap = scene.height, scene.width, opts.tile, opts.overlap
    weights = blend_weights(tile, overlap)
    read_kw = dict(bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, scale=opts.scale,
                   fill=opts.fill)
    tmpdir = os.path.join(out_dir, STATE_DIR, "tmp")
    os.makedirs(tmpdir, exist_ok=True)
    detections: list[SceneInstance] = []
    sem_dst = prob_dst = None
    names = None
    with contextlib.ExitStack() as stack:
        raw = {}
        if semseg:
            raw["class_map"] = _scratch(stack, tmpdir, scene.id + ".raw.tif")
            if opts.probabilities:
                raw["scores"] = _scratch(stack, tmpdir, scene.id + ".scores.raw.tif")

        def open_rasters(k: int) -> list[str]:
            nonlocal sem_dst, prob_dst
            if opts.class_names is not None and len(opts.class_names) != k:
                raise RegionRequestError(f"the model predicts {k} classes but {len(opts.class_names)} class names "
                                         f"were given ({list(opts.class_names)})")
            cls = list(opts.class_names) if opts.class_names is not None else [f"class {i}" for i in range(k)]
            prof = dict(driver="GTiff", width=width, height=height, crs=scene.crs, transform=scene.transform,
                        tiled=True, blockxsize=opts.cog_blocksize, blockysize=opts.cog_blocksize, compress="deflate",
                        bigtiff="if_safer")
            sem_dst = rasterio.open(raw["class_map"], "w", count=1, dtype="uint8", nodata=NODATA_CLASS,
                                    photometric="palette", **prof)
            cmap = {i: (*c, 255) for i, c in enumerate(class_colours(cls))}
            cmap[NODATA_CLASS] = (0, 0, 0, 0)
            sem_dst.write_colormap(1, cmap)
            sem_dst.set_band_description(1, "class")
            sem_dst.update_tags(1, class_names=json.dumps(cls))
            sem_dst.update_tags(scene=scene.id, d2geo_overlap_rule="owner: farthest from its scene edge")
            if "scores" in raw:
                prob_dst = rasterio.open(raw["scores"], "w", count=k, dtype="float32", nodata=float("nan"),
                                         predictor=3, **prof)
                for i, n in enumerate(cls):
                    prob_dst.set_band_description(i + 1, n)
                prob_dst.update_tags(scene=scene.id, scores="softmax of the blended sem_seg")
            return cls

        try:
            for a, b in _strips(width, opts.max_strip_width):
                r0c, r1c = max(0, a - overlap), min(width, b + overlap)
                rw = r1c - r0c
                wins = [(r, c + r0c) for r, c in tile_windows(height, rw, tile, overlap)]
                loader = torch.utils.data.DataLoader(
                    _WindowReader(scene.paths, wins, tile, read_kw, scene.modalities), batch_size=opts.batch_size,
                    shuffle=False,
                    num_workers=opts.num_workers, collate_fn=_collate,
                    prefetch_factor=2 if opts.num_workers > 0 else None,
                    persistent_workers=False)
                acc = wsum = valid_rows = None
                buf_top = 0

                def flush(until: int):
                    nonlocal acc, wsum, valid_rows, buf_top
                    n = min(until, height) - buf_top
                    if n <= 0 or acc is None:
                        return
                    lo, hi = a - r0c, b - r0c
                    a_, w_, v_ = acc[:, :n, lo:hi], wsum[:n, lo:hi], valid_rows[:n, lo:hi]
                    keep = (w_ > 0) & v_
                    if own:
                        keep &= own.owned(buf_top, a, n, b - a)
                    labels = np.argmax(a_, axis=0).astype(np.uint8)
                    labels[~keep] = NODATA_CLASS
                    sem_dst.write(labels[None], window=Window(a, buf_top, b - a, n))
                    if prob_dst is not None:
                        with np.errstate(invalid="ignore", divide="ignore"):
                            mean = a_ / w_[None]
                        mean = mean - mean.max(axis=0, keepdims=True)
                        p = np.exp(mean)
                        p /= p.sum(axis=0, keepdims=True)
                        p[:, ~keep] = np.nan
                        prob_dst.write(p.astype(np.float32), window=Window(a, buf_top, b - a, n))
                    acc = np.roll(acc, -n, axis=1)
                    acc[:, -n:] = 0
                    wsum = np.roll(wsum, -n, axis=0)
                    wsum[-n:] = 0
                    valid_rows = np.roll(valid_rows, -n, axis=0)
                    valid_rows[-n:] = False
                    buf_top += n

                current_row = None
                for batch in loader:
                    outputs = None
                    with _autocast(device_type, opts.amp):
                        outputs = model([item for _, _, item, _ in batch])
                    if len(outputs) != len(batch):
                        raise GeoTiffError(f"the model returned {len(outputs)} outputs for {len(batch)} inputs")
                    for (row, col, _, valid), out in zip(batch, outputs):
                        valid = np.asarray(valid)
                        if semseg:
                            if "sem_seg" not in out:
                                raise RegionRequestError(f"the model returns {sorted(out)}, not 'sem_seg'")
                            if row != current_row:
                                flush(row)
                                current_row = row
                            logits = out["sem_seg"].detach().float().cpu().numpy()
                            if logits.shape[-2:] != (tile, tile):
                                raise GeoTiffError(f"the model's sem_seg is {tuple(logits.shape)}, expected "
                                                   f"(K, {tile}, {tile})")
                            if acc is None:
                                k = logits.shape[0]
                                if sem_dst is None:
                                    names = open_rasters(k)
                                acc = np.zeros((k, tile, rw), np.float32)
                                wsum = np.zeros((tile, rw), np.float32)
                                valid_rows = np.zeros((tile, rw), bool)
                            r0 = row - buf_top
                            hh, ww = min(tile, height - row), min(tile, r1c - col)
                            w = weights[:hh, :ww] * valid[:hh, :ww]
                            c0 = col - r0c
                            acc[:, r0:r0 + hh, c0:c0 + ww] += logits[:, :hh, :ww] * w
                            wsum[r0:r0 + hh, c0:c0 + ww] += w
                            valid_rows[r0:r0 + hh, c0:c0 + ww] |= valid[:hh, :ww]
                        if instances:
                            if "instances" not in out:
                                raise RegionRequestError(f"the model returns {sorted(out)}, not 'instances'")
                            detections.extend(_window_instances(_float32(out["instances"]), row, col, tile, height,
                                                                width,
                                                                valid, opts.score_threshold, opts.edge_margin))
                    if on_windows is not None:
                        on_windows(len(batch), len(wins))
                if semseg:
                    flush(height)
        finally:
            for d in (sem_dst, prob_dst):
                if d is not None:
                    d.close()
        final = {}
        if semseg:
            final["class_map"] = stack.enter_context(atomic_path(outs["class_map"]))
            _to_cog(raw["class_map"], final["class_map"], "nearest", opts.cog_blocksize)
            final["aux"] = stack.enter_context(atomic_path(outs["class_map"] + ".aux.xml"))
            _write_category_names(final["aux"], names)
            if opts.probabilities:
                final["scores"] = stack.enter_context(atomic_path(outs["scores"]))
                _to_cog(raw["scores"], final["scores"], "average", opts.cog_blocksize)
            if opts.polygons:  # read back from the written COG, strip by strip
                from .polygons import PolygonRequestError, polygonize_class_map, resolve_classes

                try:
                    chosen = resolve_classes(opts.polygon_classes, names, what="--polygon-classes")
                    excluded = resolve_classes(opts.polygon_exclude, names, what="--polygon-exclude")
                except PolygonRequestError as e:
                    raise RegionRequestError(str(e)) from None
                fc = polygonize_class_map(
                    final["class_map"], class_names=names, classes=chosen, exclude=excluded,
                    min_area_m2=opts.min_area_m2, to_crs=opts.to_crs, strip_rows=opts.polygon_strip_rows,
                    extra={"scene": scene.id})
                final["regions_geojson"] = stack.enter_context(atomic_path(outs["regions_geojson"]))
                with open(final["regions_geojson"], "w", encoding="utf-8") as f:
                    json.dump(fc, f)
                final["regions_geoparquet"] = stack.enter_context(atomic_path(outs["regions_geoparquet"]))
                _write_geoparquet(fc, final["regions_geoparquet"], opts.to_crs or scene.crs,
                                  empty_columns=("class_id", "class", "area_m2", "scene"))
        kept = []
        if instances:
            kept = merge_instances(detections, opts.dedup_threshold)
            if own:
                kept = [d for d in kept if _owns_instance(own, d)]
            gj = instances_to_geojson(kept, scene.transform, scene.crs, to_crs=opts.to_crs,
                                      class_names=opts.object_names)
            for f in gj["features"]:
                f["properties"]["scene"] = scene.id
            final["geojson"] = stack.enter_context(atomic_path(outs["geojson"]))
            with open(final["geojson"], "w", encoding="utf-8") as f:
                json.dump(gj, f)
            final["geoparquet"] = stack.enter_context(atomic_path(outs["geoparquet"]))
            _write_geoparquet(gj, final["geoparquet"], opts.to_crs or scene.crs)
        # leaving the stack renames every output into place (class map last)
    logger.info("%s: %dx%d px, %.2f km^2%s", scene.id, height, width, scene.km2,
                f", {len(kept)} instances kept of {len(detections)} detections" if instances else "")
    return outs


def _float32(inst):
    """Instances with float32 scores, boxes and masks (autocast leaves some in bfloat16)."""
    for name in ("scores", "pred_masks"):
        if inst.has(name) and getattr(inst, name).is_floating_point():
            inst.set(name, getattr(inst, name).float())
    if inst.has("pred_boxes"):
        inst.pred_boxes.tensor = inst.pred_boxes.tensor.float()
    return inst


def _scratch(stack: contextlib.ExitStack, directory: str, name: str) -> str:
    """A scratch file name (removed when ``stack`` closes, whatever happens)."""
    import tempfile

    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=TMP_MARK + ".tif", dir=directory)
    os.close(fd)
    os.unlink(path)

    def remove():
        for p in (path, path + ".aux.xml", path + ".msk"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    stack.callback(remove)
    return path


def _owns_instance(own: Ownership, d: SceneInstance) -> bool:
    cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
    r, c = int(min(max(math.floor(cy), 0), own.scene.height - 1)), int(min(max(math.floor(cx), 0), own.scene.width - 1))
    return bool(own.owned(r, c, 1, 1)[0, 0])


def _write_geoparquet(geojson: dict, path: str, crs,
                      empty_columns: Sequence[str] = ("category_id", "score", "scene")) -> None:
    try:
        import geopandas as gpd
    except ImportError:
        raise RegionRequestError("GeoParquet output needs geopandas and pyarrow: pip install 'd2geo[region]' "
                                 "(or pass vectors without parquet: --no-parquet)") from None
    from rasterio.crs import CRS

    crs_s = CRS.from_user_input(crs).to_string()
    if geojson["features"]:
        gdf = gpd.GeoDataFrame.from_features(geojson["features"], crs=crs_s)
    else:
        gdf = gpd.GeoDataFrame({c: [] for c in empty_columns}, geometry=[], crs=crs_s)
    gdf.to_parquet(path, index=False)


# ---------------------------------------------------------------------------- manifest
def _done_path(out_dir: str, scene_id: str) -> str:
    return os.path.join(out_dir, STATE_DIR, "done", scene_id + ".json")


def _input_record(path: str, previous: dict | None = None) -> dict:
    st = os.stat(path)
    if previous and previous.get("size") == st.st_size and previous.get("mtime_ns") == st.st_mtime_ns:
        return dict(previous)  # unchanged file: the recorded hash stands
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _sha256(path)}


def scene_is_done(scene: RegionScene, out_dir: str, model_key: str) -> bool:
    """Whether ``scene``'s manifest entry matches its inputs, the model and its outputs."""
    try:
        with open(_done_path(out_dir, scene.id), encoding="utf-8") as f:
            entry = json.load(f)
    except (OSError, ValueError):
        return False
    if entry.get("model") != model_key or sorted(entry.get("inputs", {})) != sorted(scene.sources):
        return False
    for path, rec in entry["inputs"].items():
        if not os.path.isfile(path) or _input_record(path, rec)["sha256"] != rec["sha256"]:
            return False
    for rel, digest in entry.get("outputs", {}).items():
        p = os.path.join(out_dir, rel)
        if not os.path.isfile(p) or _sha256(p) != digest:
            return False
    return True


def _record_done(scene: RegionScene, out_dir: str, model_key: str, outputs: dict, seconds: float) -> None:
    files = [p for p in outputs.values()]
    if "class_map" in outputs:
        files.append(outputs["class_map"] + ".aux.xml")
    entry = {"scene": scene.id, "model": model_key, "inputs": {p: _input_record(p) for p in scene.sources},
             "outputs": {os.path.relpath(p, out_dir): _sha256(p) for p in files},
             "km2": scene.km2, "seconds": round(seconds, 3)}
    path = _done_path(out_dir, scene.id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(entry, f, indent=1, sort_keys=True)


def model_key(weights: str | None, config_text: str, overrides: Sequence[str], opts: RegionOptions) -> str:
    """sha256 of everything that changes the outputs: weights, config, overrides, options."""
    h = hashlib.sha256()
    h.update((_sha256(weights) if weights and os.path.isfile(weights) else str(weights)).encode())
    h.update(config_text.encode())
    h.update(json.dumps([list(overrides), opts.output_key()], sort_keys=True, default=str).encode())
    return h.hexdigest()


def remove_stale_temporaries(out_dir: str) -> int:
    """Delete temporary files a killed run left in ``out_dir`` (names with TMP_MARK)."""
    n = 0
    for d in (out_dir, os.path.join(out_dir, STATE_DIR, "tmp"), os.path.join(out_dir, STATE_DIR, "done"),
              os.path.join(out_dir, STATE_DIR, "stac")):
        for p in glob.glob(os.path.join(d, f".*{TMP_MARK}*")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
                n += 1
    return n


# ------------------------------------------------------------------------------ mosaic
def write_mosaic_vrt(scenes: Sequence[RegionScene], out_dir: str, *, crs=None, name: str = "mosaic.vrt") -> str:
    """A VRT over every scene's class map (``<id>.tif``) in ``crs`` (default: the first
    scene's); class maps in other CRSs enter through ``<id>.warped.vrt`` (nearest)."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.crs import CRS
    from rasterio.shutil import copy
    from rasterio.vrt import WarpedVRT

    maps = [(s, os.path.join(out_dir, s.id + ".tif")) for s in scenes]
    maps = [(s, p) for s, p in maps if os.path.isfile(p)]
    if not maps:
        raise RegionRequestError(f"no class maps in {out_dir} to mosaic")
    crs = CRS.from_user_input(crs) if crs is not None else maps[0][0].crs
    sources = []
    for s, p in maps:
        if s.crs == crs:
            src_path = p
        else:
            src_path = os.path.join(out_dir, s.id + ".warped.vrt")
            try:
                with rasterio.open(p) as src, WarpedVRT(src, crs=crs,
                                                        resampling=rasterio.enums.Resampling.nearest) as v:
                    with atomic_path(src_path) as tmp:
                        copy(v, tmp, driver="VRT")
                        _relative_sources(tmp, out_dir)
            except (rasterio.errors.RasterioError, CPLE_BaseError) as e:
                raise _mosaic_crs_error(s, crs, e) from None
        with rasterio.open(src_path) as src:
            sources.append((src_path, src.transform, src.width, src.height, s.crs == crs))
    # the finest pixel of the class maps already in the mosaic's CRS (else of the warped ones)
    native = [abs(t.a) for _, t, _, _, n in sources if n] or [abs(t.a) for _, t, _, _, _ in sources]
    res = min(native)
    sources = [x[:4] for x in sources]
    x0 = min(t.c for _, t, _, _ in sources)
    y1 = max(t.f for _, t, _, _ in sources)
    x1 = max(t.c + t.a * w for _, t, w, _ in sources)
    y0 = min(t.f + t.e * h for _, t, _, h in sources)
    width, height = int(math.ceil((x1 - x0) / res - 1e-6)), int(math.ceil((y1 - y0) / res - 1e-6))
    with rasterio.open(maps[0][1]) as first:
        cmap = first.colormap(1)
        names = first.tags(1).get("class_names")
    colors = "".join(f'      <Entry c1="{c[0]}" c2="{c[1]}" c3="{c[2]}" c4="{c[3]}"/>\n'
                     for _, c in sorted(cmap.items()))
    cats = ""
    if names:
        cats = "    <CategoryNames>\n" + "".join(
            f"      <Category>{escape(n)}</Category>\n" for n in json.loads(names)) + "    </CategoryNames>\n"
    srcs = []
    for path, t, w, h in sources:
        dx, dy = (t.c - x0) / res, (y1 - t.f) / res
        srcs.append(f'    <ComplexSource resampling="nearest">\n'
                    f'      <SourceFilename relativeToVRT="1">{escape(os.path.relpath(path, out_dir))}'
                    f"</SourceFilename>\n"
                    f"      <SourceBand>1</SourceBand>\n"
                    f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
                    f'      <DstRect xOff="{dx!r}" yOff="{dy!r}" xSize="{w * abs(t.a) / res!r}" '
                    f'ySize="{h * abs(t.e) / res!r}"/>\n'
                    f"      <NODATA>{NODATA_CLASS}</NODATA>\n    </ComplexSource>\n")
    xml = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n  <SRS>{escape(crs.to_wkt())}</SRS>\n'
           f"  <GeoTransform>{x0!r}, {res!r}, 0.0, {y1!r}, 0.0, {-res!r}</GeoTransform>\n"
           f'  <VRTRasterBand dataType="Byte" band="1">\n    <Description>class</Description>\n'
           f"    <NoDataValue>{NODATA_CLASS}</NoDataValue>\n    <ColorInterp>Palette</ColorInterp>\n"
           f"    <ColorTable>\n{colors}    </ColorTable>\n{cats}" + "".join(srcs) +
           "  </VRTRasterBand>\n</VRTDataset>\n")
    path = os.path.join(out_dir, name)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(xml)
    return path


def _mosaic_crs_error(scene: RegionScene, crs, e) -> RegionRequestError:
    return RegionRequestError(
        f"the class map of {scene.id} ({scene.crs}) cannot be warped into the mosaic's CRS {crs} ({e}): the scenes "
        f"lie too far apart for one projected CRS; choose one that covers them all, e.g. --mosaic-crs EPSG:4326 "
        f"(mosaic_crs=)")


def check_mosaic_crs(scenes: Sequence[RegionScene], crs=None) -> None:
    """Raise :class:`RegionRequestError` (before any work) when a scene cannot be warped into
    the mosaic's CRS (default: the first scene's)."""
    from rasterio.crs import CRS
    from rasterio.warp import calculate_default_transform

    import pyproj

    crs = CRS.from_user_input(crs) if crs is not None else scenes[0].crs
    epsg = crs.to_epsg()
    area = (pyproj.CRS.from_epsg(epsg) if epsg else pyproj.CRS.from_wkt(crs.to_wkt())).area_of_use
    for s in scenes:
        if s.crs == crs:
            continue
        if area is not None and not (area.west <= -180 and area.east >= 180):
            w, so, e, n = _lonlat_box(s)
            m = MOSAIC_MARGIN_DEG
            if w > area.east + m or e < area.west - m or so > area.north + m or n < area.south - m:
                raise _mosaic_crs_error(s, crs, f"it lies more than {m} degrees outside the area of use of "
                                                f"{crs} ({area.name})")
        try:
            left, top = apply_affine(s.transform, 0, 0)
            right, bottom = apply_affine(s.transform, s.width, s.height)
            calculate_default_transform(s.crs, crs, s.width, s.height, left=float(min(left, right)),
                                        bottom=float(min(top, bottom)), right=float(max(left, right)),
                                        top=float(max(top, bottom)))
        except Exception as e:  # GDAL's CPLE_* errors
            raise _mosaic_crs_error(s, crs, e) from None


def _relative_sources(vrt_path: str, out_dir: str) -> None:
    """Make the source file names of a VRT GDAL wrote relative to ``out_dir``."""
    import re

    text = open(vrt_path, encoding="utf-8").read()

    def rel(m):
        p = m.group(2)
        if os.path.isabs(p):
            p = os.path.relpath(p, out_dir)
        return f'<SourceDataset relativeToVRT="1">{escape(p)}</SourceDataset>'

    text = re.sub(r'<SourceDataset relativeToVRT="(\d)">([^<]*)</SourceDataset>', rel, text)
    with open(vrt_path, "w", encoding="utf-8") as f:
        f.write(text)


# ------------------------------------------------------------------------------ driver
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
            if sid not in self.counted and os.path.isfile(_done_path(self.out_dir, sid)):
                self.counted.add(sid)
                self.bar.update(km2)

    def close(self):
        if self.bar is not None:
            self.poll()
            self.bar.close()


def predict_region(model, inputs, out_dir: str, opts: RegionOptions | None = None, *,
                   key: str = "", rank: int = 0, world_size: int = 1, progress: bool = True,
                   overwrite: bool = False, device_type: str | None = None, barrier=None,
                   mosaic_crs=None) -> dict:
    """Predict every scene of ``inputs`` this rank is dealt (see the module docstring).

    ``key`` identifies the model and options in the manifest (:func:`model_key`);
    ``barrier`` is called once all this rank's scenes are written (the distributed
    barrier; rank 0 then writes ``mosaic.vrt`` and ``manifest.json``). Returns a summary."""
    opts = opts or RegionOptions()
    out_dir = os.path.abspath(out_dir)
    if not os.path.isdir(out_dir):
        raise RegionRequestError(f"the output folder {out_dir} does not exist: create it first (mkdir -p {out_dir})")
    state = os.path.join(out_dir, STATE_DIR)
    os.makedirs(os.path.join(state, "done"), exist_ok=True)
    scenes = collect_scenes(inputs, state)
    outputs = model_outputs(model)
    semseg = opts.semseg if opts.semseg is not None else (outputs is None or "sem_seg" in outputs)
    instances = opts.instances if opts.instances is not None else (outputs is not None and "instances" in outputs)
    if not semseg and not instances:
        raise RegionRequestError("nothing to write: the model predicts neither sem_seg nor instances")
    if opts.polygons and not semseg:
        raise RegionRequestError("polygons (--polygons) are made from the class map, but this model predicts no "
                                 "sem_seg: drop --polygons (instance models write their polygons anyway)")
    if opts.polygons:
        from .polygons import PolygonRequestError, require_shapely, resolve_classes

        if opts.polygon_strip_rows < 1:
            raise RegionRequestError(f"polygon_strip_rows={opts.polygon_strip_rows}: use at least 1 row")
        if opts.min_area_m2 < 0:
            raise RegionRequestError(f"min_area_m2={opts.min_area_m2} is negative: use 0 (keep every region) "
                                     f"or a positive area in square metres")
        try:  # names against the given class names, before any work
            require_shapely()
            resolve_classes(opts.polygon_classes, opts.class_names, what="--polygon-classes")
            resolve_classes(opts.polygon_exclude, opts.class_names, what="--polygon-exclude")
        except PolygonRequestError as e:
            raise RegionRequestError(str(e)) from None
    if instances or opts.polygons:
        try:
            import geopandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError:
            raise RegionRequestError("vector outputs are written as GeoJSON and GeoParquet, which needs geopandas "
                                     "and pyarrow: pip install 'd2geo[region]'") from None
    # the request against the model and every scene, before any work
    for s in scenes:
        check_request(model, s.files, semseg_path=os.path.join(out_dir, s.id + ".tif") if semseg else None,
                      instances_path=os.path.join(out_dir, s.id + ".geojson") if instances else None,
                      bands=opts.bands, band_names=opts.band_names, sensor=opts.sensor, tile=opts.tile,
                      overlap=opts.overlap, scale=opts.scale)
    if opts.cog_blocksize < 128 or opts.cog_blocksize % 16:
        raise RegionRequestError(f"cog_blocksize={opts.cog_blocksize}: GDAL's COG tiles are a multiple of 16 and at "
                                 f"least 128 px; use 256 or 512")
    if opts.max_strip_width < opts.tile:
        raise RegionRequestError(f"max_strip_width={opts.max_strip_width} is narrower than a window ({opts.tile}): "
                                 f"make it at least the tile size")
    if semseg:
        check_mosaic_crs(scenes, mosaic_crs)
    if device_type is None:
        params = list(getattr(model, "parameters", lambda: [])())
        device_type = params[0].device.type if params else "cpu"
    mine = shard_scenes(scenes, rank, world_size)
    todo = [s for s in mine if overwrite or not scene_is_done(s, out_dir, key)]
    skipped = [s.id for s in mine if s not in todo]
    if skipped:
        logger.info("rank %d: %d scene(s) already done (manifest matches): %s", rank, len(skipped),
                    ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""))
    # what the bar counts: scenes no rank has finished yet
    others = {s.id: s.km2 for s in scenes if s not in mine and not os.path.isfile(_done_path(out_dir, s.id))}
    pending = sum(s.km2 for s in todo) + sum(others.values())
    bar = _Progress(progress and rank == 0, pending, out_dir, others)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    done = []
    try:
        for s in todo:
            t0 = time.perf_counter()

            def on_windows(n, total, s=s):
                bar.add(s.km2 * n / max(total, 1) / max(len(_strips(s.width, opts.max_strip_width)), 1))

            outs = predict_region_scene(model, s, scenes, out_dir, opts, semseg=semseg, instances=instances,
                                        device_type=device_type, on_windows=on_windows)
            _record_done(s, out_dir, key, outs, time.perf_counter() - t0)
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
        if semseg:
            summary["mosaic"] = write_mosaic_vrt(scenes, out_dir, crs=mosaic_crs)
        entries = {}
        for s in scenes:
            with contextlib.suppress(OSError, ValueError), open(_done_path(out_dir, s.id), encoding="utf-8") as f:
                entries[s.id] = json.load(f)
        missing = [s.id for s in scenes if s.id not in entries]
        with atomic_path(os.path.join(out_dir, "manifest.json")) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"model": key, "scenes": entries, "missing": missing}, f, indent=1, sort_keys=True)
        summary["manifest"] = os.path.join(out_dir, "manifest.json")
    return summary
