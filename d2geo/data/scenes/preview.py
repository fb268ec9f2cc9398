"""A picture of a split over a scene: the scene (decimated true colour), the split's regions
and its windows, coloured by part, read from the split file that ``register_geo_scenes``
writes (``<output_dir>/<name>_split.geojson``). Drawn by ``tools/show_split.py``."""
from __future__ import annotations

import json
import os

import numpy as np

from .errors import SceneError

__all__ = ["draw_split"]

PART_COLOURS = [(255, 80, 40), (40, 160, 255), (250, 220, 30), (190, 60, 240)]


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


def draw_split(split_file: str, scene_path: str, out_png: str, *, max_side: int = 1024,
               labels: str | None = None, max_windows: int | None = None) -> dict:
    """Draw ``scene_path`` with the regions and windows of ``split_file`` (at most
    ``max_windows`` per part, the first ones) and the outlines of ``labels`` (a vector file)
    into ``out_png``; returns ``{part: windows drawn}``."""
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
    name = os.path.abspath(scene_path)
    for feat in data["features"]:
        props, geom = feat["properties"], shapely.geometry.shape(feat["geometry"])
        c = colour[props["split"]]
        if props.get("kind") == "region":
            for ring in pixels(geom):
                draw.polygon(ring, fill=c + (40,), outline=c + (255,))
    if labels:
        import geopandas as gpd

        for geom in gpd.read_file(labels, engine="pyogrio").to_crs("EPSG:4326").geometry:
            for ring in pixels(geom):
                draw.line(ring, fill=(255, 255, 255, 200), width=1)
    for feat in data["features"]:
        props = feat["properties"]
        if props.get("kind") == "window" and os.path.abspath(props["scene"]) == name and (
                max_windows is None or counts[props["split"]] < max_windows):
            c, r, w, h = props["window"]
            draw.rectangle([c / f, r / f, (c + w) / f, (r + h) / f], outline=colour[props["split"]] + (255,))
            counts[props["split"]] += 1
    out = np.asarray(Image.alpha_composite(img, over).convert("RGB"))
    legend = ", ".join(f"{p}: {colour[p]}" for p in parts)
    save_png(out_png, out, text={"d2geo:split_parts": legend})
    return counts
