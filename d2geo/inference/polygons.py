"""Vector outputs of semantic models: a class map polygonized into one feature per connected
region (4-connected pixels of one class), with memory bounded by a strip of rows.

:func:`polygonize_class_map` reads the class map (a GeoTIFF, e.g. the COG that
:mod:`d2geo.inference.region` writes) ``strip_rows`` rows at a time, polygonizes each strip with
:func:`rasterio.features.shapes` in pixel coordinates (integers, so unions are exact), and
merges the pieces of a region that a strip seam cut: pieces of one class that share an edge
across the seam are joined with :func:`shapely.unary_union`. Only the pieces touching the
current seam are held between strips; finished polygons are kept as vector geometry (the
output itself). Polygons are normalized (:func:`shapely.normalize`) and sorted, so the result
does not depend on ``strip_rows``.

No data (255) is never polygonized; ``classes`` keeps only some classes, ``exclude`` drops some
(names or ids); ``min_area_m2`` drops specks (area in ground square metres: pixels times the
pixel area of the scene). Properties: ``class_id``, ``class``, ``area_m2`` (and whatever
``extra`` adds). Needs shapely (``pip install 'd2geo[region]'``).
"""
from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import numpy as np

from d2geo.data.geotiff import pixel_gsd

from .blend import NODATA_CLASS

logger = logging.getLogger(__name__)

__all__ = ["polygonize_class_map", "resolve_classes", "require_shapely", "PolygonRequestError"]


class PolygonRequestError(ValueError):
    """A polygon request that cannot work (unknown class names or ids)."""


def resolve_classes(selection: Sequence[str | int] | None, class_names: Sequence[str] | None,
                    n_classes: int | None = None, what: str = "--polygon-classes") -> set[int] | None:
    """Class ids of ``selection`` (names or ids); None when ``selection`` is None."""
    if selection is None:
        return None
    names = list(class_names) if class_names is not None else None
    out = set()
    for s in selection:
        if isinstance(s, (int, np.integer)) or (isinstance(s, str) and s.strip().isdigit()):
            i = int(s)
            n = len(names) if names is not None else n_classes
            if i < 0 or i == NODATA_CLASS or (n is not None and i >= n):
                raise PolygonRequestError(f"{what}: class id {i} is not a class of the model "
                                          f"(ids 0..{(n or 1) - 1}); use an id or a name of {names or 'its classes'}")
            out.add(i)
        elif names is not None and s in names:
            out.add(names.index(s))
        else:
            raise PolygonRequestError(f"{what}: {s!r} is not a class name" + (
                f" (the classes are {names}); use one of them or a class id" if names is not None else
                "; the class names are unknown: give --class-names, or use class ids"))
    return out


def require_shapely():
    try:
        import shapely
        import shapely.affinity
        import shapely.geometry
    except ImportError:  # pragma: no cover
        raise PolygonRequestError("polygons of a class map need shapely: pip install 'd2geo[region]'") from None
    return shapely


def polygonize_class_map(path: str, *, class_names: Sequence[str] | None = None,
                         classes: set[int] | None = None, exclude: set[int] | None = None,
                         min_area_m2: float = 0.0, to_crs=None, strip_rows: int = 1024,
                         extra: dict | None = None, label: str | None = None) -> dict:
    """GeoJSON FeatureCollection of the connected regions of the class map at ``path``
    (see the module docstring), in ``to_crs`` or the class map's CRS; ``label`` names it in
    the log (default: ``path``)."""
    import rasterio
    from affine import Affine
    from rasterio.features import shapes
    from rasterio.warp import transform_geom
    from rasterio.windows import Window

    shapely = require_shapely()
    from shapely.geometry import shape

    if strip_rows < 1:
        raise PolygonRequestError(f"strip_rows={strip_rows}: use at least 1 row")
    with rasterio.open(path) as src:
        if class_names is None:
            tagged = src.tags(1).get("class_names")
            class_names = json.loads(tagged) if tagged else None
        crs, transform, height, width = src.crs, src.transform, src.height, src.width
        px_m2 = pixel_gsd(crs, transform, height, width) ** 2 if crs is not None else abs(transform.determinant)
        done: list[tuple[int, Any]] = []  # (class, polygon in pixel coordinates)
        open_: list[tuple[int, Any]] = []  # pieces touching the seam above the next strip
        for row0 in range(0, height, strip_rows):
            row1 = min(height, row0 + strip_rows)
            data = src.read(1, window=Window(0, row0, width, row1 - row0))
            keep = data != NODATA_CLASS
            if classes is not None:
                keep &= np.isin(data, list(classes))
            if exclude:
                keep &= ~np.isin(data, list(exclude))
            found = shapes(data, mask=keep, connectivity=4, transform=Affine.translation(0, row0))
            pieces = [(int(v), shape(g)) for g, v in found]
            top = [(c, p) for c, p in pieces if row0 > 0 and p.bounds[1] <= row0]
            rest = [(c, p) for c, p in pieces if not (row0 > 0 and p.bounds[1] <= row0)]
            merged = _merge_across_seam(shapely, open_, top) if (open_ or top) else []
            open_ = []
            for c, p in merged + rest:
                if row1 < height and p.bounds[3] >= row1:
                    open_.append((c, p))
                else:
                    done.append((c, p))
        done.extend(open_)
    feats = []
    for c, p in done:
        area = p.area * px_m2  # p is in pixels
        if area < min_area_m2:
            continue
        p = p.simplify(0)  # drops the vertices a seam left on straight edges (exact: integer coordinates)
        p = shapely.normalize(shapely.affinity.affine_transform(p, [transform.a, transform.b, transform.d,
                                                                    transform.e, transform.c, transform.f]))
        feats.append((c, p, area))
    feats.sort(key=lambda t: (t[0], t[1].bounds, t[2]))
    out_feats = []
    for c, p, area in feats:
        geom = shapely.geometry.mapping(p)
        if to_crs is not None and crs is not None:
            geom = transform_geom(crs, to_crs, geom)
        props = {"class_id": c, "class": class_names[c] if class_names is not None and c < len(class_names)
                 else f"class {c}", "area_m2": round(float(area), 3)}
        props.update(extra or {})
        out_feats.append({"type": "Feature", "properties": props, "geometry": _plain(geom)})
    fc: dict[str, Any] = {"type": "FeatureCollection", "features": out_feats}
    target = to_crs if to_crs is not None else crs
    if target is not None:
        from rasterio.crs import CRS

        fc["crs"] = {"type": "name", "properties": {"name": CRS.from_user_input(target).to_string()}}
    logger.info("polygonized %s: %d regions (%d px strips)", label or path, len(out_feats), strip_rows)
    return fc


def _plain(geom):
    """A GeoJSON mapping with lists (json.dump writes tuples too, but equal outputs compare equal)."""
    if isinstance(geom, dict):
        return {k: _plain(v) for k, v in geom.items()}
    if isinstance(geom, (list, tuple)):
        return [_plain(v) for v in geom]
    return geom


def _merge_across_seam(shapely, above: list, below: list) -> list:
    """Join pieces of one class that share an edge (not just a corner) across a seam."""
    items = above + below
    parent = list(range(len(items)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if above and below:
        tree = shapely.STRtree([p for _, p in above])
        for j, (c, p) in enumerate(below):
            for i in tree.query(p, predicate="intersects"):
                if above[i][0] == c and above[i][1].intersection(p).length > 0:
                    parent[find(len(above) + j)] = find(int(i))
    groups: dict[int, list[int]] = {}
    for k in range(len(items)):
        groups.setdefault(find(k), []).append(k)
    out = []
    for ks in groups.values():
        c = items[ks[0]][0]
        geom = items[ks[0]][1] if len(ks) == 1 else shapely.unary_union([items[k][1] for k in ks])
        out.append((c, geom))
    return out
