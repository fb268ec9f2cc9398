"""Labels of one window: vector polygons clipped to it, in window pixel coordinates.

Semantic (``task="semantic"``): each window's dict carries ``scene_labels``, the clipped
polygons as WKB in window pixel coordinates with their class ids, in label order;
:func:`rasterize_window` (called by ``GeoDatasetMapper``) burns them with
``rasterio.features.rasterize``:

* a pixel takes a polygon's class when the polygon contains the pixel's centre
  (``all_touched=False``, the default), or when the polygon touches the pixel at all
  (``all_touched=True``: thin and small polygons survive, shapes grow by up to one pixel);
* where polygons overlap, **the later one wins** (later file in ``labels``, then later
  feature in the file): sort the features (e.g. by class) to choose which class wins;
* pixels covered by no polygon get ``background`` (a class id) or, by default, the ignore
  label 255; pixels where the image has no data are always 255.

A label *raster* (``labels="lulc.tif"``) is resampled onto the window's grid with nearest
neighbour (:func:`read_label_raster`); its values are the class ids.

Instances (``task="instance"``): each feature clipped to the window becomes an annotation
(``bbox`` in ``XYXY_ABS`` window pixels, ``segmentation`` as polygons, or as RLE when the
polygon has holes, which detectron2's polygon format cannot express). An object cut by the
window edge is kept when at least ``min_visible`` of its area (default 0.5) lies inside the
window and **dropped** otherwise (detectron2's Mask R-CNN has no ignore regions; windows
with dropped objects are logged at debug level). Multipolygons keep all their parts.
"""
from __future__ import annotations

import numpy as np

__all__ = ["window_shapes", "window_instances", "rasterize_window", "read_label_raster"]


def _to_pixels(geom, scene, col: int, row: int):
    """Scene-CRS geometry -> window pixel coordinates (x right, y down)."""
    import shapely

    inv = ~scene.window_transform(col, row)
    return shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.xoff, inv.yoff])


def _clip(labels, scene, window):
    """(positions, clipped geometries in scene CRS, full geometries) of the labels in ``window``."""
    import shapely

    col, row, w, h = window
    poly = scene.window_polygon(col, row, w, h)
    pos = labels.query(scene.crs, poly)
    geoms, ids, _, _ = labels.in_crs(scene.crs)
    if len(pos) == 0:
        return pos, [], [], ids
    full = geoms[pos]
    clipped = shapely.intersection(full, poly)
    return pos, clipped, full, ids


def _polygon_parts(geom):
    import shapely

    return [g for g in shapely.get_parts(geom) if g.geom_type == "Polygon" and not g.is_empty and g.area > 0] \
        if geom.geom_type != "Polygon" else ([geom] if geom.area > 0 else [])


def _array_to_pixels(geoms: np.ndarray, scene, col: int, row: int) -> np.ndarray:
    """Scene-CRS geometries -> window pixel coordinates, all at once."""
    import shapely

    inv = ~scene.window_transform(col, row)
    a, b, c, d, e, f = inv.a, inv.b, inv.c, inv.d, inv.e, inv.f

    def to_pixels(xy):
        return np.column_stack([a * xy[:, 0] + b * xy[:, 1] + c, d * xy[:, 0] + e * xy[:, 1] + f])

    return shapely.transform(geoms, to_pixels)


def window_shapes(labels, scene, window) -> list[tuple[bytes, int]]:
    """The semantic labels of ``window = (col, row, width, height)``: ``[(WKB in window
    pixels, class id), ...]`` in label order (later wins)."""
    import shapely

    pos, clipped, _, ids = _clip(labels, scene, window)
    if len(pos) == 0:
        return []
    clipped = np.asarray(clipped, dtype=object)
    # a polygon clipped along an edge may come back as a collection with lines or points
    odd = ~np.isin(shapely.get_type_id(clipped), (3, 6))
    for i in np.flatnonzero(odd):
        parts = _polygon_parts(clipped[i])
        clipped[i] = shapely.MultiPolygon(parts) if parts else shapely.Polygon()
    keep = shapely.area(clipped) > 0
    wkb = shapely.to_wkb(_array_to_pixels(clipped[keep], scene, window[0], window[1]))
    return [(g, int(v)) for g, v in zip(wkb, ids[pos[keep]])]


def rasterize_window(shapes, shape, *, all_touched: bool = False, background: int | None = None,
                     ignore_label: int = 255) -> np.ndarray:
    """Burn ``shapes`` (of :func:`window_shapes`) into a ``shape = (h, w)`` uint8 label array."""
    import shapely
    from rasterio import features
    from rasterio.transform import Affine

    fill = ignore_label if background is None else int(background)
    out = np.full(shape, fill, dtype=np.uint8)
    if shapes:
        features.rasterize(((shapely.from_wkb(g), int(v)) for g, v in shapes), out=out,
                           transform=Affine.identity(), all_touched=all_touched)
    return out


def _rle(parts, h: int, w: int) -> dict:
    import shapely
    from pycocotools import mask as mask_util

    m = rasterize_window([(shapely.to_wkb(p), 1) for p in parts], (h, w), background=0)
    rle = mask_util.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def window_instances(labels, scene, window, *, min_visible: float = 0.5) -> list[dict]:
    """detectron2 annotations (``XYXY_ABS`` boxes, polygon or RLE masks) of ``window``."""
    from detectron2.structures import BoxMode

    col, row, w, h = window
    pos, clipped, full, ids = _clip(labels, scene, window)
    annos = []
    for p, g, f in zip(pos, clipped, full):
        if g.is_empty or f.area <= 0 or g.area / f.area < min_visible:
            continue
        parts = [_to_pixels(q, scene, col, row) for q in _polygon_parts(g)]
        parts = [q for q in parts if q.area > 0]
        if not parts:
            continue
        x0 = min(q.bounds[0] for q in parts)
        y0 = min(q.bounds[1] for q in parts)
        x1 = max(q.bounds[2] for q in parts)
        y1 = max(q.bounds[3] for q in parts)
        if any(len(q.interiors) for q in parts):
            seg = _rle(parts, h, w)
        else:
            seg = [np.asarray(q.exterior.coords[:-1], dtype=np.float64).reshape(-1).round(3).tolist()
                   for q in parts]
        annos.append({"bbox": [x0, y0, x1, y1], "bbox_mode": BoxMode.XYXY_ABS, "segmentation": seg,
                      "category_id": int(ids[p]), "iscrowd": 0, "area": float(sum(q.area for q in parts))})
    return annos


def read_label_raster(path: str, crs, transform, shape) -> np.ndarray:
    """The label raster ``path`` resampled with nearest neighbour onto the grid
    ``(crs, transform, shape)``; pixels it does not cover or marks nodata are 255."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    out = np.full(shape, 255, dtype=np.uint8)
    with rasterio.open(path) as src:
        reproject(rasterio.band(src, 1), out, dst_transform=transform, dst_crs=crs, dst_nodata=255,
                  resampling=Resampling.nearest, src_nodata=src.nodata)
    return out
