"""Scenes (their grids and footprints) and vector labels (class ids, repaired geometries and a
spatial index per CRS).

A *scene* is one GeoTIFF/COG, or several files on one grid that are the dates of one scene.
:func:`open_scenes` accepts paths, folders (every ``*.tif``/``*.tiff`` in it is a scene),
text lists (one scene per line; several files on a line, separated by spaces or commas,
are its dates; relative paths are relative to the list), local STAC item JSON files (their
raster data assets stacked band-wise, named by ``eo:bands``, in a VRT kept in
:func:`stac_dir`, as ``predict_region`` reads items: :mod:`d2geo.data.stac`) and lists of any of
these (a list or tuple inside the list is the dates of one scene). Only the headers are read.

:class:`LabelSet` holds the labels of one or more vector files (anything GDAL reads through
pyogrio: GeoPackage, GeoJSON, Shapefile, GeoParquet, FlatGeobuf) in EPSG:4326, each feature
with its class id, source file and feature id. :meth:`LabelSet.in_crs` reprojects (pyproj,
through geopandas) the features that touch the scenes of one CRS once and keeps a shapely
STRtree of them, so a window's lookup is a tree query whatever the number of polygons.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import SceneError

logger = logging.getLogger(__name__)

__all__ = ["Scene", "open_scenes", "LabelSet", "read_labels", "class_table", "format_bounds"]

_RASTER_EXT = (".tif", ".tiff", ".vrt", ".jp2")


def format_bounds(bounds) -> str:
    return "(" + ", ".join(f"{v:.5f}" for v in bounds) + ")"


@dataclass(frozen=True)
class Scene:
    """One scene: its files (one per date), grid and band names."""

    paths: tuple
    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    band_names: tuple
    dtype: str

    @property
    def name(self) -> str:
        return os.path.basename(self.paths[0])

    @property
    def pixel_size(self) -> float:
        """Side of a pixel in CRS units (the larger of the two)."""
        return float(max(abs(self.transform.a), abs(self.transform.e)))

    def footprint(self):
        """The scene's outline in its CRS (a shapely polygon)."""
        import shapely

        t = self.transform
        corners = [t * (0, 0), t * (self.width, 0), t * (self.width, self.height), t * (0, self.height)]
        return shapely.Polygon(corners)

    def window_polygon(self, col: int, row: int, width: int, height: int):
        import shapely

        t = self.transform
        a, b, c, d, e, f = t.a, t.b, t.c, t.d, t.e, t.f  # plain floats: Affine's * is slow in loops
        return shapely.Polygon([(a * x + b * y + c, d * x + e * y + f) for x, y in
                                ((col, row), (col + width, row), (col + width, row + height), (col, row + height))])

    def window_transform(self, col: int, row: int):
        from rasterio.transform import Affine

        return self.transform * Affine.translation(col, row)


def _split_line(line: str, base: str) -> list[str]:
    parts = [p for p in line.replace(",", " ").split() if p]
    return [p if os.path.isabs(p) else os.path.join(base, p) for p in parts]


def _expand(item) -> list[list[str]]:
    """One scenes item -> a list of scenes, each a list of files (dates); a list or tuple
    inside the top-level list is the dates of one scene."""
    if isinstance(item, (list, tuple)):
        return [[os.fspath(p) for p in item]]
    path = os.fspath(item)
    if os.path.isdir(path):
        files = sorted(os.path.join(path, f) for f in os.listdir(path) if f.lower().endswith(_RASTER_EXT))
        if not files:
            raise SceneError(f"the scene folder {path} holds no .tif/.tiff files")
        return [[f] for f in files]
    if not os.path.exists(path):
        raise SceneError(f"scene not found: {path}")
    if path.lower().endswith(".txt"):
        with open(path, encoding="utf-8") as f:
            lines = [ln.strip() for ln in f if ln.strip() and not ln.lstrip().startswith("#")]
        return [[_stac_raster(p) for p in _split_line(ln, os.path.dirname(os.path.abspath(path)))] for ln in lines]
    return [[_stac_raster(path)]]


def stac_dir() -> str:
    """Where the VRTs of STAC item scenes are kept: ``$D2GEO_STAC_DIR``, else
    ``~/.cache/d2geo/stac``."""
    return os.environ.get("D2GEO_STAC_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "d2geo", "stac")


def _stac_raster(path: str) -> str:
    """``path``, or for a local STAC item JSON the VRT stacking its raster data assets (written
    once per item version into :func:`stac_dir`, named by the item's path, size and mtime)."""
    if not path.lower().endswith(".json"):
        return path
    from ..stac import StacError, is_stac_item, stac_item_vrt

    if not os.path.isfile(path):
        raise SceneError(f"scene not found: {path}")
    if not is_stac_item(path):
        raise SceneError(f"{path} is JSON but not a STAC item (a Feature with assets): give STAC items, "
                         "GeoTIFF/COG files, folders or text lists as scenes")
    import hashlib

    st = os.stat(path)
    key = hashlib.sha1(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:12]
    stem = os.path.splitext(os.path.basename(path))[0]
    vrt = os.path.join(stac_dir(), f"{stem}-{key}.vrt")
    if os.path.isfile(vrt):  # this version of the item was stacked before
        return vrt
    try:
        os.makedirs(os.path.dirname(vrt), exist_ok=True)
        stac_item_vrt(path, vrt, remote=True)
    except StacError as e:
        raise SceneError(str(e)) from None
    return vrt


def _open_one(paths: list[str]) -> Scene:
    import rasterio

    first = None
    for p in paths:
        if not os.path.isfile(p):
            raise SceneError(f"scene file not found: {p}")
        with rasterio.open(p) as src:
            info = dict(crs=src.crs, transform=src.transform, width=src.width, height=src.height,
                        count=src.count, band_names=tuple(d or "" for d in src.descriptions),
                        dtype=src.dtypes[0])
        if info["crs"] is None or info["transform"].is_identity:
            raise SceneError(f"{p} has no CRS or no geotransform: a scene must be georeferenced to place "
                             "vector labels on it (write them into the file, e.g. gdal_edit.py -a_srs/-a_ullr)")
        if first is None:
            first = info
        elif (info["crs"], info["width"], info["height"]) != (first["crs"], first["width"], first["height"]) \
                or not info["transform"].almost_equals(first["transform"]):
            raise SceneError(f"{p} is not on the grid of {paths[0]} (the dates of one scene share CRS, "
                             "transform and size): reproject the dates onto one grid first")
    return Scene(paths=tuple(paths), **first)


def open_scenes(scenes) -> list[Scene]:
    """Resolve ``scenes`` (see the module docstring) and read their headers; all scenes must
    hold the same bands (count and descriptions)."""
    if isinstance(scenes, (str, os.PathLike)):
        scenes = [scenes]
    groups = [g for item in scenes for g in _expand(item)]
    if not groups:
        raise SceneError("no scenes were given")
    out = [_open_one(g) for g in groups]
    ref = out[0]
    for s in out[1:]:
        if s.count != ref.count or s.band_names != ref.band_names:
            raise SceneError(
                f"scenes {ref.paths[0]} ({ref.count} bands {list(ref.band_names)}) and {s.paths[0]} "
                f"({s.count} bands {list(s.band_names)}) hold different bands: one dataset reads one band set; "
                "register them as separate datasets, or write them with the same bands")
    return out


# ---------------------------------------------------------------------------------- labels
def class_table(classes) -> dict:
    """``classes`` (a list of names, or a mapping of names/values to ids) -> ``{key: id}``;
    ids must be 0..K-1."""
    if isinstance(classes, Mapping):
        table = {k: int(v) for k, v in classes.items()}
    elif isinstance(classes, (list, tuple)) and classes:
        table = {k: i for i, k in enumerate(classes)}
    else:
        raise SceneError(f"classes must be a non-empty list of names or a mapping to ids, not {classes!r}")
    ids = sorted(set(table.values()))
    if ids != list(range(len(ids))):
        raise SceneError(f"class ids {ids} are not 0..{len(ids) - 1}: detectron2 needs contiguous ids from 0 "
                         "(map several values to one id if you merge classes)")
    return table


def class_names(table: dict) -> list[str]:
    """One name per id (the first key mapped to it)."""
    names = {}
    for k, v in table.items():
        names.setdefault(v, str(k))
    return [names[i] for i in range(len(names))]


def _feature_name(gdf, i) -> str:
    return f"feature {gdf.index[i]} of {gdf['_source'].iloc[i]}"


def _polygonal(geom):
    import shapely

    if geom is None or geom.is_empty:
        return None
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        return geom
    if geom.geom_type == "GeometryCollection":
        parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
        if not parts:
            return None
        return shapely.union_all(parts)
    return None


def _check_geometries(gdf, invalid: str):
    import shapely

    geoms = gdf.geometry.values
    kinds = gdf.geometry.geom_type.values
    for i, (g, k) in enumerate(zip(geoms, kinds)):
        if g is None or g.is_empty:
            raise SceneError(f"{_feature_name(gdf, i)} has an empty geometry: remove it or draw it")
        if k not in ("Polygon", "MultiPolygon"):
            raise SceneError(f"{_feature_name(gdf, i)} is a {k}: labels must be polygons (buffer points "
                             "and lines into polygons first, e.g. gdf.buffer(...) in a projected CRS)")
    bad = np.flatnonzero(~shapely.is_valid(np.asarray(geoms)))
    if len(bad) == 0:
        return gdf
    reasons = [f"{_feature_name(gdf, i)}: {shapely.is_valid_reason(geoms[i])}" for i in bad[:5]]
    if invalid == "raise":
        raise SceneError(f"{len(bad)} invalid geometries ({'; '.join(reasons)}): fix them (e.g. "
                         "shapely.make_valid) or pass invalid='repair'")
    fixed = list(geoms)
    for i in bad:
        g = _polygonal(shapely.make_valid(geoms[i]))
        if g is None or g.area == 0:
            raise SceneError(f"{_feature_name(gdf, int(i))} is invalid ({shapely.is_valid_reason(geoms[i])}) "
                             "and repairing it leaves no area: fix or remove it")
        fixed[i] = g
    logger.warning("repaired %d invalid label geometries with shapely.make_valid (%s%s)", len(bad),
                   "; ".join(reasons), ", ..." if len(bad) > 5 else "")
    gdf = gdf.copy()
    gdf.geometry = fixed
    return gdf


def _read_one(source, class_key, table, invalid):
    import geopandas as gpd

    if isinstance(source, gpd.GeoDataFrame):
        gdf, where = source.copy(), "the GeoDataFrame"
    else:
        where = os.fspath(source)
        if not os.path.isfile(where):
            raise SceneError(f"label file not found: {where}")
        gdf = gpd.read_file(where, engine="pyogrio", fid_as_index=True)
    if gdf.crs is None:
        raise SceneError(f"{where} has no CRS, so its coordinates cannot be placed on the scenes: write it with "
                         "its CRS (e.g. gdf.set_crs('EPSG:4326').to_file(...), or ogr2ogr -a_srs EPSG:4326)")
    gdf["_source"] = where
    if class_key is None:
        if len(set(table.values())) != 1:
            cols = [c for c in gdf.columns if c not in ("geometry", "_source")]
            raise SceneError(f"{where}: with {len(set(table.values()))} classes give class_key=, the column "
                             f"that holds each feature's class (columns: {cols})")
        gdf["_class_id"] = next(iter(table.values()))
    else:
        if class_key not in gdf.columns:
            raise SceneError(f"{where} has no column {class_key!r} (columns: "
                             f"{[c for c in gdf.columns if c not in ('geometry', '_source')]})")
        values = gdf[class_key]
        lookup = {}
        for k, v in table.items():
            lookup[k] = v
            lookup[str(k)] = v
        keys = [lookup.get(v, lookup.get(str(v))) for v in values]
        missing = values[[k is None for k in keys]]
        if len(missing):
            counts = missing.astype(str).value_counts()
            shown = {k: int(v) for k, v in counts.head(8).items()}
            raise SceneError(f"{where}: {class_key} values {shown} (value: features) are not in "
                             f"classes {list(table)}: add them to classes (or map them to an id there), or "
                             "remove those features")
        gdf["_class_id"] = np.asarray(keys, dtype=np.int64)
    gdf = _check_geometries(gdf, invalid)
    return gdf.to_crs("EPSG:4326")


def read_labels(labels, *, classes, class_key=None, invalid: str = "repair") -> "LabelSet":
    """Read vector label files (or GeoDataFrames) into a :class:`LabelSet`.

    ``invalid="repair"`` fixes invalid geometries with ``shapely.make_valid`` (logged, naming
    the features), ``"raise"`` refuses them naming the features.
    """
    import geopandas as gpd
    import pandas as pd

    if invalid not in ("repair", "raise"):
        raise SceneError(f"invalid must be 'repair' or 'raise', not {invalid!r}")
    table = class_table(classes)
    sources = labels if isinstance(labels, (list, tuple)) else [labels]
    frames = [_read_one(s, class_key, table, invalid) for s in sources]
    gdf = pd.concat([f[["geometry", "_class_id", "_source"] + [c for c in f.columns if c not in
                                                               ("geometry", "_class_id", "_source")]]
                     for f in frames])
    gdf = gpd.GeoDataFrame(gdf, geometry="geometry", crs="EPSG:4326")
    gdf["_fid"] = gdf.index
    gdf = gdf.reset_index(drop=True)
    return LabelSet(gdf=gdf, table=table)


@dataclass
class LabelSet:
    """Labels in EPSG:4326 with ``_class_id``; per-CRS copies with an STRtree (see the module docstring).

    Order matters: where polygons overlap in a semantic raster the later one (later file,
    then later feature) wins.
    """

    gdf: Any
    table: dict
    _by_crs: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.gdf)

    def in_crs(self, crs, footprints: Sequence = ()):
        """``(geometries (N,), class ids (N,), positions in gdf (N,), STRtree)`` of the
        features in ``crs`` that touch ``footprints`` (polygons in EPSG:4326; all when none)."""
        import shapely

        key = str(crs)
        if key not in self._by_crs:
            sel = np.arange(len(self.gdf))
            if footprints:
                tree4326 = self.gdf.sindex
                hits = tree4326.query(shapely.union_all(list(footprints)), predicate="intersects")
                sel = np.unique(hits)
            part = self.gdf.iloc[sel].to_crs(crs)
            geoms = np.asarray(part.geometry.values)
            self._by_crs[key] = (geoms, part["_class_id"].to_numpy(), sel, shapely.STRtree(geoms))
        return self._by_crs[key]

    def query(self, crs, polygon) -> np.ndarray:
        """Positions (into :meth:`in_crs`'s arrays) of the features intersecting ``polygon``
        (in ``crs``), in label order."""
        geoms, _, _, tree = self.in_crs(crs)
        return np.sort(tree.query(polygon, predicate="intersects"))


@functools.lru_cache(maxsize=64)
def _transformer(src: str, dst: str):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def reproject_geometry(geom, src_crs, dst_crs, max_segment: float | None = None):
    """``geom`` from ``src_crs`` to ``dst_crs`` (pyproj, always x/y order), its edges first
    cut into pieces of at most ``max_segment`` source units so curved edges stay close."""
    import shapely

    if str(src_crs) == str(dst_crs):
        return geom
    if max_segment:
        geom = shapely.segmentize(geom, max_segment)
    tr = _transformer(str(src_crs), str(dst_crs))
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def footprint_4326(scene: Scene):
    return reproject_geometry(scene.footprint(), scene.crs, "EPSG:4326",
                              max_segment=max(scene.width, scene.height) * scene.pixel_size / 16)
