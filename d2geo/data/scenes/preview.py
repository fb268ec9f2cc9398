"""A picture of a split over a scene: the scene (decimated true colour), the split's regions
and its windows, coloured by part, read from the split file that ``register_geo_scenes``
writes (``<output_dir>/<name>_split.geojson``), and with ``labels`` the labels each drawn
window carries: the vector labels burnt as training burns them (a pixel takes the class of
the polygon holding its centre, the later polygon wins) and shown, filled by class, inside
the drawn windows only. Drawn by ``tools/show_split.py``."""
from __future__ import annotations

import json
import os

import numpy as np

from .errors import SceneError

__all__ = ["draw_split"]

PART_COLOURS = [(255, 80, 40), (40, 160, 255), (250, 220, 30), (190, 60, 240)]
#: label classes, in the sorted order of their names
LABEL_COLOURS = [(255, 230, 0), (80, 220, 60), (0, 235, 255), (255, 255, 255), (230, 60, 200), (140, 90, 40)]


def _rgb(scene_path: str, max_side: int):
    """Decimated true colour of a scene (overviews may be used: this is a picture, not data)."""
    import rasterio

    from ..render import composite

    with rasterio.open(scene_path) as src:
        f = max(1.0, max(src.width, src.height) / max_side)
        shape = (int(round(src.height / f)), int(round(src.width / f)))
        names = [(d or "").lower() for d in src.descriptions]
        want = [n for n in ("red", "green", "blue") if n in names]
        idx = [names.index(n) + 1 for n in want] if len(want) == 3 else [min(3, src.count), min(2, src.count), 1]
        img = src.read(idx, out_shape=(3, *shape)).astype(np.float32)
        valid = src.dataset_mask(out_shape=shape) > 0
        return composite(img, (0, 1, 2), valid=valid), src.crs, src.transform, f


def _burnt_labels(labels: str, class_key: str | None, crs, picture_transform, shape):
    """(class index + 1 per picture pixel, 0 where none; class names) of a vector label file."""
    import geopandas as gpd
    from rasterio import features

    gdf = gpd.read_file(labels, engine="pyogrio")
    if gdf.crs is None:
        raise SceneError(f"{labels} has no CRS: write one into the file (e.g. ogr2ogr -a_srs EPSG:4326)")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty].to_crs(crs)
    key = class_key or ("class" if "class" in gdf.columns else None)
    if key is not None and key not in gdf.columns:
        raise SceneError(f"{labels} has no column {key!r}; its columns are {[c for c in gdf.columns if c != 'geometry']}")
    names = sorted(gdf[key].astype(str).unique()) if key else ["label"]
    ids = gdf[key].astype(str).map({n: i + 1 for i, n in enumerate(names)}) if key else [1] * len(gdf)
    burnt = features.rasterize(zip(gdf.geometry, ids), out_shape=shape, transform=picture_transform, fill=0,
                               dtype="uint16") if len(gdf) else np.zeros(shape, dtype=np.uint16)
    return burnt, names


def draw_split(split_file: str, scene_path: str, out_png: str, *, max_side: int = 1024,
               labels: str | None = None, max_windows: int | None = None, class_key: str | None = None) -> dict:
    """Draw ``scene_path`` with the regions and windows of ``split_file`` (at most
    ``max_windows`` per part, the first ones) and, inside the drawn windows, the labels of
    ``labels`` (a vector file) filled by ``class_key`` (default: its ``class`` column, else one
    colour) into ``out_png``; returns ``{part: windows drawn}``."""
    import shapely
    from PIL import Image, ImageDraw

    from ..render import save_png
    from .index import reproject_geometry

    try:
        with open(split_file, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as e:
        raise SceneError(f"cannot read the split file {split_file}: {e}") from None
    rgb, crs, transform, f = _rgb(scene_path, max_side)
    inv = ~transform
    img = Image.fromarray(rgb).convert("RGBA")
    over = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(over)
    parts = sorted({feat["properties"]["split"] for feat in data["features"]})
    colour = {p: PART_COLOURS[i % len(PART_COLOURS)] for i, p in enumerate(parts)}

    def pixels(geom):
        g = reproject_geometry(geom, "EPSG:4326", crs)
        out = []
        for part in shapely.get_parts(g):
            rings = [part.exterior] if part.geom_type == "Polygon" else []
            for ring in rings:
                out.append([tuple(np.array(inv * xy) / f) for xy in ring.coords])
        return out

    counts = {p: 0 for p in parts}
    name = os.path.realpath(scene_path)  # the split file names it by another path through a link
    for feat in data["features"]:
        props, geom = feat["properties"], shapely.geometry.shape(feat["geometry"])
        c = colour[props["split"]]
        if props.get("kind") == "region":
            for ring in pixels(geom):
                draw.polygon(ring, fill=c + (40,), outline=c + (255,))
    windows = []
    for feat in data["features"]:
        props = feat["properties"]
        if props.get("kind") == "window" and os.path.realpath(props["scene"]) == name and (
                max_windows is None or counts[props["split"]] < max_windows):
            windows.append((props["split"], props["window"]))
            counts[props["split"]] += 1
    legend = ", ".join(f"{p}: {colour[p]}" for p in parts)
    if labels:
        from rasterio.transform import Affine

        burnt, names = _burnt_labels(labels, class_key, crs, transform * Affine.scale(f), (img.size[1], img.size[0]))
        inside = np.zeros(burnt.shape, dtype=bool)
        for _, (c, r, w, h) in windows:
            inside[int(r / f):int(np.ceil((r + h) / f)), int(c / f):int(np.ceil((c + w) / f))] = True
        fill = np.zeros((*burnt.shape, 4), dtype=np.uint8)
        for i, n in enumerate(names):
            fill[(burnt == i + 1) & inside] = LABEL_COLOURS[i % len(LABEL_COLOURS)] + (170,)
        over = Image.alpha_composite(over, Image.fromarray(fill, "RGBA"))
        draw = ImageDraw.Draw(over)
        legend += "; labels: " + ", ".join(f"{n}: {LABEL_COLOURS[i % len(LABEL_COLOURS)]}" for i, n in enumerate(names))
    for part, (c, r, w, h) in windows:
        draw.rectangle([c / f, r / f, (c + w) / f, (r + h) / f], outline=colour[part] + (255,))
    out = np.asarray(Image.alpha_composite(img, over).convert("RGB"))
    save_png(out_png, out, text={"d2geo:split_parts": legend}, colors=128)
    return counts
