"""Geographic splits without leakage.

A split gives each split name a *region*; windows of a split lie wholly inside its region,
and regions of different splits are at least ``buffer`` metres apart (default: one window),
so no two windows of different splits overlap or touch. Three ways to make the regions
(the ``split=`` argument of ``register_geo_scenes``):

* ``{"blocks": N, "fractions": {"train": 0.8, "val": 0.2}, "seed": 0}``: square blocks of
  N metres on a grid in one projected CRS (``"crs"``, default the first scene's) over the
  scenes' footprints; the blocks are shuffled with the seed (default: the registration's) and dealt to the splits by
  their fractions (each split gets at least one block). A split's region is its blocks
  minus everything within ``buffer`` of another split's blocks;
* ``{"column": "split"}``: each label feature's split is in that column of the label file;
  a split's region reaches one window (``reach``, metres) around its features, minus
  everything within ``buffer`` of another split's features;
* ``{"polygons": {"train": geometry, "val": geometry}, "crs": ...}`` (shapely geometries,
  default EPSG:4326), or the path of a split file written by an earlier run: the regions
  are given (minus ``buffer`` around the others).

:meth:`SplitPlan.write` writes the regions (and the windows) as GeoJSON in EPSG:4326; give
that path as ``split=`` to reuse the split.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from .errors import SceneError
from .index import reproject_geometry

logger = logging.getLogger(__name__)

__all__ = ["SplitPlan", "make_split"]


@dataclass
class SplitPlan:
    """Regions per split in ``crs`` (see the module docstring)."""

    kind: str
    regions: dict
    crs: str
    params: dict = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def names(self) -> list[str]:
        return list(self.regions)

    def region_in(self, split: str, crs, max_segment: float):
        import shapely

        key = (split, str(crs))
        if key not in self._cache:
            g = reproject_geometry(self.regions[split], self.crs, crs, max_segment=max_segment)
            shapely.prepare(g)
            self._cache[key] = g
        return self._cache[key]

    def to_geojson(self, windows=None) -> dict:
        import shapely

        feats = []
        for name, g in self.regions.items():
            g4326 = reproject_geometry(g, self.crs, "EPSG:4326", max_segment=self.params.get("segment"))
            # the exact region in the split's CRS too: a round trip through EPSG:4326 moves edges
            # by ~1e-9 m, enough to flip windows that end exactly on them
            feats.append({"type": "Feature", "properties": {"kind": "region", "split": name, "crs": self.crs,
                                                            "native_wkt": shapely.to_wkt(g, rounding_precision=-1)},
                          "geometry": json.loads(shapely.to_geojson(g4326))})
        for split, scene, w, poly in windows or []:
            feats.append({"type": "Feature", "properties": {"kind": "window", "split": split, "scene": scene,
                                                            "window": list(w)},
                          "geometry": json.loads(shapely.to_geojson(poly))})
        return {"type": "FeatureCollection", "d2geo_split": {"kind": self.kind, "crs": self.crs, **self.params},
                "features": feats}

    def write(self, path: str, windows=None) -> None:
        from ..files import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_geojson(windows)))
        logger.info("wrote the %s split (%s) to %s", self.kind, ", ".join(self.names), path)


def _projected(crs) -> bool:
    from pyproj import CRS

    c = CRS.from_user_input(crs)
    return c.is_projected and c.axis_info[0].unit_name in ("metre", "meter")


def _separate(areas: dict, buffer: float) -> dict:
    import shapely

    out = {}
    for name, g in areas.items():
        others = [a for n, a in areas.items() if n != name]
        if others and buffer > 0:
            g = g.difference(shapely.union_all(others).buffer(buffer, join_style="mitre"))
        elif others:
            g = g.difference(shapely.union_all(others))
        out[name] = g
    return out


def _block_split(scenes, spec: dict, buffer: float) -> SplitPlan:
    import shapely

    size = float(spec["blocks"])
    fractions = spec.get("fractions", {"train": 0.8, "val": 0.2})
    seed = int(spec.get("seed", 0))
    crs = str(spec.get("crs") or scenes[0].crs)
    if not _projected(crs):
        raise SceneError(f"block splits need a projected CRS in metres; {crs} is not: pass split={{..., "
                         "'crs': 'EPSG:326xx'}} (a UTM zone of the area)")
    if size <= 0 or not fractions or any(f <= 0 for f in fractions.values()):
        raise SceneError(f"a block split needs blocks > 0 metres and positive fractions, got {size} and {fractions}")
    area = shapely.union_all([reproject_geometry(s.footprint(), s.crs, crs, max_segment=size / 4) for s in scenes])
    x0, y0, x1, y1 = area.bounds
    cells = [(i, j) for i in range(int(np.floor(x0 / size)), int(np.ceil(x1 / size)))
             for j in range(int(np.floor(y0 / size)), int(np.ceil(y1 / size)))]
    boxes = [shapely.box(i * size, j * size, (i + 1) * size, (j + 1) * size) for i, j in cells]
    keep = [k for k, b in enumerate(boxes) if b.intersection(area).area > 0]
    names = list(fractions)
    if len(keep) < len(names):
        raise SceneError(f"the scenes cover {len(keep)} blocks of {size:g} m, too few for the splits {names}: "
                         "use smaller blocks")
    order = np.random.default_rng(seed).permutation(len(keep))
    total = float(sum(fractions.values()))
    counts = [max(1, int(round(fractions[n] / total * len(keep)))) for n in names]
    while sum(counts) > len(keep):
        counts[int(np.argmax(counts))] -= 1
    counts[0] += len(keep) - sum(counts)
    assign, start = {}, 0
    for n, c in zip(names, counts):
        assign[n] = [keep[k] for k in order[start:start + c]]
        start += c
    areas = {n: shapely.union_all([boxes[k] for k in ks]).intersection(area) for n, ks in assign.items()}
    params = dict(blocks=size, fractions=fractions, seed=seed, buffer=buffer, segment=size / 4,
                  assignment={n: [list(cells[k]) for k in ks] for n, ks in assign.items()})
    return SplitPlan("blocks", _separate(areas, buffer), crs, params)


def _column_split(scenes, labels, spec: dict, buffer: float, reach: float) -> SplitPlan:
    import shapely

    key = spec["column"]
    if labels is None or key not in labels.gdf.columns:
        cols = [] if labels is None else [c for c in labels.gdf.columns if not c.startswith("_") and c != "geometry"]
        raise SceneError(f"split by column {key!r}, but the labels have no such column (columns: {cols})")
    crs = str(spec.get("crs") or scenes[0].crs)
    gdf = labels.gdf.to_crs(crs)
    values = gdf[key].astype(str)
    areas = {v: shapely.union_all(list(gdf.geometry[values == v])).buffer(reach, join_style="mitre")
             for v in sorted(values.unique())}
    return SplitPlan("column", _separate(areas, buffer), crs, dict(column=key, buffer=buffer, reach=reach))


def _polygon_split(spec, buffer: float) -> SplitPlan:
    import shapely

    if isinstance(spec, (str, os.PathLike)):
        path = os.fspath(spec)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, ValueError) as e:
            raise SceneError(f"cannot read the split file {path}: {e}") from None
        regions, crs = {}, "EPSG:4326"
        feats = [f for f in data.get("features", []) if (f.get("properties") or {}).get("kind", "region") == "region"
                 and "split" in (f.get("properties") or {})]
        native = feats and all("native_wkt" in f["properties"] for f in feats) and \
            len({f["properties"].get("crs") for f in feats}) == 1
        for feat in feats:
            props = feat["properties"]
            regions[str(props["split"])] = (shapely.from_wkt(props["native_wkt"]) if native
                                            else shapely.geometry.shape(feat["geometry"]))
        if native:
            crs = feats[0]["properties"]["crs"]
        if not regions:
            raise SceneError(f"the split file {path} holds no region features (properties kind='region', split=...)")
    else:
        regions = {str(k): (v if hasattr(v, "geom_type") else shapely.geometry.shape(v))
                   for k, v in spec["polygons"].items()}
        crs = str(spec.get("crs", "EPSG:4326"))
    if not _projected(crs) and buffer > 0:
        # buffer in metres: separate in the first region's UTM zone
        from pyproj.aoi import AreaOfInterest
        from pyproj.database import query_utm_crs_info

        b = shapely.union_all(list(regions.values())).bounds
        utm = query_utm_crs_info(datum_name="WGS 84", area_of_interest=AreaOfInterest(*b))[0]
        work = f"EPSG:{utm.code}"
        regions = {k: reproject_geometry(g, crs, work) for k, g in regions.items()}
        crs = work
    return SplitPlan("polygons", _separate(regions, buffer), crs, dict(buffer=buffer))


def make_split(split, scenes, labels, *, window_m: float, seed: int = 0) -> SplitPlan | None:
    """The :class:`SplitPlan` of a ``split=`` argument (None: no split); a block split without
    its own ``"seed"`` takes ``seed``."""
    if split is None:
        return None
    if isinstance(split, (str, os.PathLike)):
        return _polygon_split(split, 0.0)
    if not isinstance(split, dict):
        raise SceneError(f"split must be None, a split file or a dict with 'blocks', 'column' or 'polygons', "
                         f"not {split!r}")
    buffer = float(split.get("buffer", window_m))
    if buffer < window_m:
        raise SceneError(f"split buffer {buffer:g} m is less than one window ({window_m:g} m): windows of "
                         "different splits could overlap; leave buffer unset or make it larger")
    if "blocks" in split:
        return _block_split(scenes, {"seed": seed, **split}, buffer)
    if "column" in split:
        return _column_split(scenes, labels, split, buffer, float(split.get("reach", window_m)))
    if "polygons" in split:
        return _polygon_split(split, buffer)
    raise SceneError(f"split dict needs one of 'blocks', 'column', 'polygons'; got keys {list(split)}")
