"""GeoJSON polygons as detectron2 instance annotations in an image's pixel coordinates.

Which CRS a label file's coordinates are in, decided once here:

1. ``geojson_crs=`` (``geo["geojson_crs"]`` of a dataset) when given; a file whose own ``crs``
   member names another CRS is refused (one of the two is wrong);
2. else the file's ``crs`` member (GeoJSON 2008: ``{"type": "name", "properties": {"name":
   "urn:ogc:def:crs:EPSG::32633"}}``, or ``{"type": "EPSG", "properties": {"code": 32633}}``);
3. else RFC 7946's only CRS: longitude/latitude on WGS 84 (``OGC:CRS84``);
4. except that a file without a ``crs`` member whose coordinates cannot be geographic
   (beyond +-360 / +-180) is read in the image's CRS, with a warning, as d2geo did before
   (its synthetic data and older label files); an image without a CRS takes such files in its
   own coordinates.

Coordinates are always ``x, y`` (easting/longitude first), as GeoJSON writes them, whatever
axis order the CRS's definition has (pyproj ``always_xy``). They are reprojected to the image's
CRS, then mapped to pixels with the inverse of its transform.

Refused, naming the file and the feature: latitudes beyond +-90 in a geographic file (with
the hint that latitude and longitude look swapped when swapping them would fit), points PROJ
cannot reproject, and, when the image's size is known, a file none of whose features touches
the image (naming both extents, and the swap when the swapped features would touch it).

Polygon holes work: a polygon with holes becomes one "keyhole" ring (the exterior, then each
hole in the opposite orientation, joined to the exterior's first vertex by a cut traversed
once each way), which detectron2's polygon masks rasterize and measure as exterior minus
holes (pycocotools' even-odd fill; the shoelace area cancels the cut). Boxes span the exterior.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .geotiff import GeoTiffError, PathLike, apply_affine

logger = logging.getLogger(__name__)

__all__ = ["geojson_to_annotations", "geojson_file_crs", "keyhole_ring"]

_RFC7946 = "OGC:CRS84"
_LEGACY_WARNED: set = set()


def _crs(value, where: str):
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        return CRS.from_user_input(value)
    except CRSError as e:
        raise GeoTiffError(f"{where}: {value!r} is not a CRS PROJ knows ({e})") from None


def geojson_file_crs(geojson: Mapping[str, Any], source: str = "the GeoJSON"):
    """The CRS of a GeoJSON's own ``crs`` member (a pyproj CRS), or None when it has none."""
    member = geojson.get("crs")
    if member is None:
        return None
    if isinstance(member, str):
        return _crs(member, f"{source}'s crs member")
    if isinstance(member, Mapping):
        kind = str(member.get("type", "")).lower()
        props = member.get("properties") or {}
        if kind == "name" and "name" in props:
            return _crs(props["name"], f"{source}'s crs member")
        if kind == "epsg" and "code" in props:
            return _crs(f"EPSG:{props['code']}", f"{source}'s crs member")
    raise GeoTiffError(f"{source} has a crs member d2geo cannot read ({member!r}): write it as "
                       "{'type': 'name', 'properties': {'name': 'EPSG:<code>'}}, or reproject the file to "
                       "longitude/latitude (RFC 7946) and drop the member")


def _rings_of(geom: Mapping, index: int, source: str) -> list[list[np.ndarray]]:
    """``[[exterior, hole, ...], ...]`` per polygon, as (N, 2) float arrays."""
    kind = geom.get("type")
    if kind == "Polygon":
        polys = [geom["coordinates"]]
    elif kind == "MultiPolygon":
        polys = geom["coordinates"]
    else:
        raise GeoTiffError(f"{source}: feature {index} is a {kind}; only Polygon/MultiPolygon become instances")
    out = []
    for poly in polys:
        rings = [np.asarray([(float(p[0]), float(p[1])) for p in ring], dtype=np.float64).reshape(-1, 2)
                 for ring in poly]
        if rings and len(rings[0]):
            out.append(rings)
    return out


def _signed_area(pts: np.ndarray) -> float:
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def keyhole_ring(exterior: np.ndarray, holes: Sequence[np.ndarray] = ()) -> np.ndarray:
    """One ring covering ``exterior`` minus ``holes`` for even-odd filling (see the module docstring)."""
    def open_ring(r):
        r = np.asarray(r, dtype=np.float64)
        return r[:-1] if len(r) > 1 and np.array_equal(r[0], r[-1]) else r

    ext = open_ring(exterior)
    holes = [open_ring(h) for h in holes if len(open_ring(h)) >= 3]
    if not holes:
        return ext
    sign = np.sign(_signed_area(ext))
    parts = [ext, ext[:1]]
    for h in holes:
        if np.sign(_signed_area(h)) == sign:
            h = h[::-1]
        parts += [h, h[:1], ext[:1]]
    return np.concatenate(parts)


def _extent(arrays) -> tuple:
    pts = np.concatenate([a.reshape(-1, 2) for a in arrays]) if arrays else np.zeros((0, 2))
    return tuple(float(v) for v in (*pts.min(0), *pts.max(0))) if len(pts) else None


def _fmt_extent(e, unit: str = "") -> str:
    return f"x {e[0]:.6g}..{e[2]:.6g}, y {e[1]:.6g}..{e[3]:.6g}{unit}"


def _touches(boxes, width: int, height: int) -> bool:
    return any(b[2] >= 0 and b[0] <= width and b[3] >= 0 and b[1] <= height for b in boxes)


def _feature_name(feat: Mapping, index: int) -> str:
    fid = feat.get("id", (feat.get("properties") or {}).get("id"))
    return f"feature {index}" + (f" (id {fid!r})" if fid is not None else "")


def geojson_to_annotations(geojson: Mapping[str, Any] | PathLike, transform, *, crs=None,
                           geojson_crs=None, category_key: str = "category_id",
                           class_names: Sequence[str] | None = None,
                           image_shape: tuple[int, int] | None = None) -> list[dict]:
    """Polygons of a GeoJSON FeatureCollection as detectron2 annotations in pixel coordinates.

    The CRS of the coordinates: ``geojson_crs``, else the file's ``crs`` member, else RFC
    7946's longitude/latitude (module docstring); they are reprojected to the image's ``crs``
    and mapped to pixels with the inverse of ``transform`` (0, 0 = top-left corner of the
    top-left pixel). Each feature's class is ``properties[category_key]``: an int id, or a name
    looked up in ``class_names``. Holes are kept (keyhole rings). ``image_shape`` (height,
    width of the whole image): a file none of whose features touches the image is refused.
    """
    source = os.fspath(geojson) if isinstance(geojson, (str, os.PathLike)) else "the GeoJSON"
    if isinstance(geojson, (str, os.PathLike)):
        with open(geojson, encoding="utf-8") as f:
            geojson = json.load(f)
    features = geojson.get("features") if isinstance(geojson, Mapping) else None
    if features is None:
        raise GeoTiffError(f"{source}: expected a GeoJSON FeatureCollection (a mapping with 'features')")
    file_crs = geojson_file_crs(geojson, source)
    given = None if geojson_crs is None else _crs(geojson_crs, "geojson_crs")
    if given is not None and file_crs is not None and not given.equals(file_crs, ignore_axis_order=True):
        raise GeoTiffError(f"{source} says its coordinates are in {file_crs.to_string()} (its crs member) but "
                           f"geojson_crs={geojson_crs!r} was given: drop one of the two (the right one wins)")
    src_crs = given or file_crs
    if (src_crs is not None) and crs is None:
        raise GeoTiffError(f"reprojecting GeoJSON needs the scene CRS: the image has none ({source} is in "
                           f"{src_crs.to_string()}); write the image's CRS into it, or give labels in its pixel grid")

    feats = []  # (index, feature, [[ext, holes...], ...]) in the file's coordinates
    for i, feat in enumerate(features):
        geom = feat.get("geometry")
        if geom:
            feats.append((i, feat, _rings_of(geom, i, source)))
    every = [r for _, _, polys in feats for rings in polys for r in rings]
    if src_crs is None and crs is not None and every:
        xy = np.concatenate(every)
        if np.all(np.abs(xy[:, 0]) <= 360) and np.all(np.abs(xy[:, 1]) <= 180):
            # geographic (latitudes beyond 90 are refused below, as swapped when they look so)
            src_crs = _crs(_RFC7946, "RFC 7946")
            logger.debug("%s has no crs member: read as RFC 7946 longitude/latitude", source)
        elif os.path.dirname(source) not in _LEGACY_WARNED:  # once per folder, not per file and epoch
            _LEGACY_WARNED.add(os.path.dirname(source))
            logger.warning("%s (and any other label file of its folder like it) has no crs member and its "
                           "coordinates are not longitude/latitude (RFC 7946's default): read in the image's "
                           "CRS (%s); write a crs member or pass geojson_crs= to say so", source,
                           crs.to_string() if hasattr(crs, "to_string") else crs)
    reproject = None
    if src_crs is not None:
        from pyproj import CRS, Transformer

        dst = CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)
        if src_crs.is_geographic:
            _check_latitudes(feats, source)
        if not src_crs.equals(dst, ignore_axis_order=True):
            reproject = Transformer.from_crs(src_crs, dst, always_xy=True)

    inv = ~transform
    annos, boxes = [], []
    for i, feat, polys in feats:
        props = feat.get("properties") or {}
        if category_key not in props:
            raise GeoTiffError(f"{source}: {_feature_name(feat, i)} has no property {category_key!r} "
                               f"(its properties: {sorted(props)})")
        cat = props[category_key]
        if isinstance(cat, str):
            if not class_names or cat not in class_names:
                raise GeoTiffError(f"{source}: {_feature_name(feat, i)} has class {cat!r}, not in class_names={class_names}")
            cat = list(class_names).index(cat)
        segs, exteriors = [], []
        for rings in polys:
            px = [_to_pixels(r, reproject, inv, source, feat, i) for r in rings]
            if len(px[0]) < 3:
                continue
            exteriors.append(px[0])
            segs.append(keyhole_ring(px[0], px[1:]).reshape(-1).tolist())
        if not segs:
            continue
        x0, y0, x1, y1 = _extent(exteriors)
        boxes.append((x0, y0, x1, y1))
        annos.append({"bbox": [x0, y0, x1, y1], "bbox_mode": _xyxy_abs(),
                      "segmentation": segs, "category_id": int(cat), "iscrowd": 0})
    if image_shape is not None and boxes and not _touches(boxes, image_shape[1], image_shape[0]):
        _refuse_disjoint(source, every, src_crs, crs, transform, image_shape, boxes, inv)
    return annos


def _xyxy_abs():
    from detectron2.structures import BoxMode

    return BoxMode.XYXY_ABS


def _to_pixels(ring, reproject, inv, source, feat, index):
    if reproject is not None:
        from pyproj.exceptions import ProjError

        try:
            x, y = reproject.transform(ring[:, 0], ring[:, 1], errcheck=True)
        except ProjError as e:
            raise GeoTiffError(f"{source}: {_feature_name(feat, index)} cannot be reprojected from "
                               f"{reproject.source_crs.to_string()} to the image's CRS ({e}); its first point is "
                               f"{ring[0].tolist()}") from None
        ring = np.stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)], axis=1)
    return np.stack(apply_affine(inv, ring[:, 0], ring[:, 1]), axis=1)


def _check_latitudes(feats, source) -> None:
    for i, feat, polys in feats:
        pts = np.concatenate([r for rings in polys for r in rings]) if polys else np.zeros((0, 2))
        bad = np.abs(pts[:, 1]) > 90
        if bad.any():
            p = pts[bad][0].tolist()
            swapped = np.all(np.abs(pts[:, 0]) <= 90) and np.all(np.abs(pts[:, 1]) <= 180)
            raise GeoTiffError(
                f"{source}: {_feature_name(feat, i)} has the point {p}, whose latitude (the second number) "
                f"is beyond +-90"
                + (": latitude and longitude look swapped. GeoJSON writes longitude first ([lon, lat], RFC "
                   "7946), whatever the CRS's official axis order; swap them in the file" if swapped else
                   ": the coordinates are not longitude/latitude; give the file's CRS (a crs member or "
                   "geojson_crs=)"))


def _refuse_disjoint(source, every, src_crs, crs, transform, image_shape, boxes, inv):
    h, w = image_shape
    cx, cy = apply_affine(transform, [0, w, w, 0], [0, 0, h, h])
    img = (float(np.min(cx)), float(np.min(cy)), float(np.max(cx)), float(np.max(cy)))
    lab = _extent(every)
    lab_px = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    crs_name = crs.to_string() if hasattr(crs, "to_string") else str(crs)
    where = src_crs.to_string() if src_crs is not None else f"the image's CRS {crs_name}"
    hint = ""
    if src_crs is not None and src_crs.is_geographic:
        try:
            from pyproj import CRS, Transformer

            t = Transformer.from_crs(src_crs, CRS.from_user_input(crs.to_wkt()), always_xy=True)
            sw = np.concatenate(every)[:, ::-1]
            x, y = t.transform(sw[:, 0], sw[:, 1])
            with np.errstate(invalid="ignore", over="ignore"):
                px = np.stack(apply_affine(inv, np.asarray(x), np.asarray(y)), axis=1)
            if np.all(np.isfinite(px)) and _touches([_extent([px])], w, h):
                hint = (" With x and y swapped the features would lie on the image: the file has latitude, "
                        "longitude where GeoJSON needs longitude, latitude (RFC 7946); swap them in the file.")
        except Exception:  # noqa: BLE001 - only a hint
            pass
    raise GeoTiffError(
        f"{source}: none of its {len(boxes)} features touches the image: the labels span {_fmt_extent(lab)} in "
        f"{where} (pixels {_fmt_extent(lab_px)}), the image spans {_fmt_extent(img)} in {crs_name} "
        f"(pixels 0..{w}, 0..{h}). Is the label file in another CRS than it says (a crs member, or "
        f"geojson_crs=; without either GeoJSON is longitude/latitude), or is it the labels of another image?"
        + hint)
