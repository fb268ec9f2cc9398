"""Pictures of GeoTIFF samples: colour composites, class maps, instances, panels and legends.

Used by ``tools/visualize.py`` (side-by-side panels: image | ground truth | prediction)
and by :func:`d2geo.inference.predict_scene` (a quick-look PNG next to every output).

* **Composites** are chosen by band name (``"true"``: red, green, blue; ``"false"``: NIR,
  red, green; ``"swir"``: SWIR 2, NIR, red; or any three names) and resolved against the
  file's band names with the sensor's aliases, so ``B04`` and ``red`` are the same band of
  ``sentinel-2-l2a``. Each band is stretched between percentiles of its valid pixels
  (2-98 by default); no-data pixels are black.
* **Classes** get one colour each: a colour of its own for common names (water is blue,
  building red, ...), else a fixed palette by index, so the same class has the same colour
  in every picture. A legend below the panels names every class.
* Pictures are enlarged by an integer ``scale`` with nearest-neighbour sampling, so every
  pixel of the tile stays a visible square; outlines are drawn after enlarging.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from .geotiff import GeoTiffError, resolve_band_indices

logger = logging.getLogger(__name__)

__all__ = [
    "COMPOSITES", "composite", "composite_channels", "class_colours", "colour_class_map", "enlarge",
    "PanelInstance", "draw_panel", "layout_panels", "LegendEntry", "save_png", "auto_scale",
]

#: composites by name: per channel (R, G, B), band names tried in order
COMPOSITES: dict[str, tuple[tuple[str, ...], ...]] = {
    "true": (("red",), ("green",), ("blue",)),
    "false": (("nir", "nir08", "nir_narrow"), ("red",), ("green",)),
    "swir": (("swir22", "swir_2"), ("nir08", "nir_narrow", "nir"), ("red",)),
}
COMPOSITE_TITLES = {"true": "true colour", "false": "false colour (NIR)", "swir": "SWIR"}

# colours of common class names (lower case); everything else takes PALETTE by class index
NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "background": (70, 70, 70), "no data": (0, 0, 0), "nodata": (0, 0, 0), "other": (70, 70, 70),
    "water": (30, 100, 220), "flood": (30, 100, 220), "flooded": (30, 100, 220),
    "flooded vegetation": (120, 210, 170), "trees": (30, 130, 40), "tree": (30, 130, 40),
    "forest": (30, 130, 40), "field": (240, 200, 60), "crops": (240, 200, 60), "cropland": (240, 200, 60),
    "building": (230, 30, 40), "buildings": (230, 30, 40), "built area": (230, 30, 40),
    "bare ground": (200, 170, 130), "bare": (200, 170, 130), "snow/ice": (235, 245, 255),
    "snow": (235, 245, 255), "clouds": (190, 190, 190), "cloud": (190, 190, 190),
    "rangeland": (190, 150, 100), "grass": (150, 210, 100), "burn scar": (160, 40, 140),
    "not burned": (70, 70, 70),
}
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
    (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
    (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0), (255, 215, 180),
    (0, 0, 128), (128, 128, 128),
)
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)


# -- composites ------------------------------------------------------------------------------
def composite(image: np.ndarray, channels: Sequence[int] = (0, 1, 2), *, valid: np.ndarray | None = None,
              percentiles=(2.0, 98.0)) -> np.ndarray:
    """``uint8 (H, W, 3)`` colour composite of three channels of a ``(C, H, W)`` or ``(C, T, H, W)``
    image (the first date of a time series), each stretched between its percentiles of the
    valid pixels; invalid pixels are black."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 4:
        img = img[:, 0]
    if img.ndim != 3:
        raise ValueError(f"expected a (C, H, W) or (C, T, H, W) image, got shape {img.shape}")
    if len(channels) != 3:
        raise ValueError(f"a composite needs 3 channels, got {list(channels)}")
    if max(channels) >= img.shape[0] or min(channels) < 0:
        raise ValueError(f"channels {list(channels)} out of range for an image with {img.shape[0]} bands")
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100, got {lo_p}, {hi_p}")
    h, w = img.shape[-2:]
    ok = np.ones((h, w), bool) if valid is None else np.asarray(valid, bool)
    ok = ok & np.all(np.isfinite(img[list(channels)]), axis=0)
    out = np.zeros((h, w, 3), np.uint8)
    for k, c in enumerate(channels):
        band = img[c]
        vals = band[ok]
        if vals.size == 0:
            continue
        lo, hi = np.percentile(vals, (lo_p, hi_p))
        if hi <= lo:
            hi = lo + 1e-6
        with np.errstate(invalid="ignore"):
            out[..., k] = np.where(ok, np.clip((band - lo) / (hi - lo), 0, 1) * 255, 0).astype(np.uint8)
    return out


def composite_channels(band_names: Sequence[str], which: str | Sequence[str], sensor: str | None = None
                       ) -> tuple[list[int], list[str]]:
    """Indices (and names) of the three bands of a composite: ``"true"``, ``"false"``,
    ``"swir"`` (see :data:`COMPOSITES`) or three band names such as ``"B08,B04,B03"``."""
    if isinstance(which, str) and which.lower() in COMPOSITES:
        idx = []
        for choices in COMPOSITES[which.lower()]:
            for name in choices:
                try:
                    idx += resolve_band_indices(band_names, [name], sensor)
                    break
                except GeoTiffError:
                    continue
            else:
                raise GeoTiffError(
                    f"the {which!r} composite needs a {choices[0]!r} band (also tried {list(choices[1:])}); "
                    f"the image's bands are {list(band_names)}. Name the bands (--band-names B01,B02,... "
                    f"and --sensor sentinel-2-l2a, say) or give three band names instead")
        return idx, [band_names[i] for i in idx]
    names = [b.strip() for b in which.split(",")] if isinstance(which, str) else list(which)
    if len(names) != 3:
        raise GeoTiffError(f"a composite is 'true', 'false', 'swir' or three band names, got {which!r}")
    idx = resolve_band_indices(band_names, names, sensor, where="the image")
    return idx, [band_names[i] for i in idx]


# -- classes ----------------------------------------------------------------------------------
def class_colours(class_names: Sequence[str]) -> list[tuple[int, int, int]]:
    """One RGB colour per class: the colour of a common name, else the palette by index
    (skipping palette colours already taken by named classes)."""
    named = [NAMED_COLOURS.get(str(n).strip().lower()) for n in class_names]
    taken = {c for c in named if c is not None}
    free = [c for c in PALETTE if c not in taken]
    out = []
    for i, c in enumerate(named):
        out.append(c if c is not None else free[i % len(free)])
    return out


def colour_class_map(labels: np.ndarray, colours: Sequence[tuple[int, int, int]], *,
                     ignore_label: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` colours of a class map and the mask of pixels with a known class."""
    labels = np.asarray(labels)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colours)] = np.asarray(colours, np.uint8)[:256]
    known = (labels != ignore_label) & (labels >= 0) & (labels < len(colours))
    return lut[np.clip(labels, 0, 255).astype(np.int64)], known


def enlarge(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor."""
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    scale = int(scale)
    return rgb if scale == 1 else np.repeat(np.repeat(rgb, scale, axis=0), scale, axis=1)


def auto_scale(height: int, width: int, target: int = 256) -> int:
    """The smallest integer factor that makes the short side at least ``target`` px."""
    return max(1, -(-target // max(1, min(height, width))))


# -- panels -----------------------------------------------------------------------------------
@dataclass
class PanelInstance:
    """One object to draw: a boolean mask (H, W) in tile pixels, or a box, with its class."""

    category_id: int
    mask: np.ndarray | None = None
    box: Sequence[float] | None = None  # x0, y0, x1, y1 in tile pixels
    corners: np.ndarray | None = None  # (N, 2) x, y of an outline (a rotated box's 4 corners), pixel corner coords
    score: float | None = None


def draw_panel(rgb: np.ndarray, *, scale: int = 1, class_map: np.ndarray | None = None,
               instances: Iterable[PanelInstance] = (), colours: Sequence[tuple[int, int, int]] = (),
               thing_colours: Sequence[tuple[int, int, int]] | None = None, alpha: float = 0.6,
               ignore_label: int = 255) -> np.ndarray:
    """The composite ``rgb`` enlarged by ``scale`` with a class map blended in (``alpha``) and
    instances filled (``0.75 * alpha``) and outlined in their class colour."""
    import cv2

    base = rgb.astype(np.float32)
    if class_map is not None:
        col, known = colour_class_map(class_map, colours, ignore_label=ignore_label)
        base = np.where(known[..., None], (1 - alpha) * base + alpha * col.astype(np.float32), base)
    thing_colours = list(thing_colours if thing_colours is not None else colours)
    instances = list(instances)
    for inst in instances:
        if inst.mask is not None:
            c = np.asarray(_colour(thing_colours, inst.category_id), np.float32)
            m = np.asarray(inst.mask, bool)
            base[m] = (1 - 0.75 * alpha) * base[m] + 0.75 * alpha * c
    out = np.ascontiguousarray(enlarge(np.clip(base, 0, 255).astype(np.uint8), scale))
    thick = max(1, min(scale - 1, 2 + scale // 4))
    for inst in instances:
        c = tuple(int(v) for v in _colour(thing_colours, inst.category_id))
        if inst.mask is not None:
            big = enlarge(np.asarray(inst.mask, np.uint8), scale)
            contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, c, thick)
        elif inst.corners is not None:
            # pixel corner coordinates -> cv2's pixel centres, in 1/16 px (shift=4)
            pts = np.round((np.asarray(inst.corners, np.float64) * scale - 0.5) * 16).astype(np.int32)
            cv2.polylines(out, [pts], True, c, thick, lineType=cv2.LINE_AA, shift=4)
        elif inst.box is not None:
            x0, y0, x1, y1 = (int(round(v * scale)) for v in inst.box)
            cv2.rectangle(out, (x0, y0), (max(x1 - 1, x0), max(y1 - 1, y0)), c, thick)
    return out


def _colour(colours, i):
    if 0 <= i < len(colours):
        return colours[i]
    return PALETTE[i % len(PALETTE)]


@dataclass
class LegendEntry:
    name: str
    colour: tuple[int, int, int]
    group: str = ""


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def _text_width(draw, text, font) -> int:
    x0, _, x1, _ = draw.textbbox((0, 0), text, font=font)
    return x1 - x0


def layout_panels(rows: Sequence[Sequence[tuple[str, np.ndarray]]], *, legend: Sequence[LegendEntry] = (),
                  row_titles: Sequence[str] | None = None, font_size: int = 14, gap: int = 6) -> np.ndarray:
    """One picture of ``rows`` of titled panels (each ``(title, rgb)``) side by side, an optional
    title above each row, and a legend of class colours and names at the bottom (wrapped to
    the width; each group, e.g. ground truth and prediction classes, on lines of its own)."""
    from PIL import Image, ImageDraw

    font = _font(font_size)
    small = _font(max(10, font_size - 2))
    line = font_size + 6
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    widths = [sum(p.shape[1] for _, p in r) + gap * (len(r) - 1) for r in rows]
    width = max(widths + [1]) + 2 * gap
    # legend lines, wrapped to the width
    legend_lines: list[list[tuple[int, LegendEntry]]] = []
    cur: list[tuple[int, LegendEntry]] = []
    x = gap
    group = None
    for e in legend:
        label = e.name if e.group == group or not e.group else f"{e.group}: {e.name}"
        w = line + _text_width(probe, label, small) + 2 * gap
        if cur and (x + w > width or (e.group and e.group != group)):
            legend_lines.append(cur)
            cur, x = [], gap
        cur.append((x, LegendEntry(label, e.colour, e.group)))
        x += w
        group = e.group
    if cur:
        legend_lines.append(cur)
    row_title_h = line if row_titles else 0
    height = gap + sum(row_title_h + line + max(p.shape[0] for _, p in r) + gap for r in rows)
    height += len(legend_lines) * line + (gap if legend_lines else 0)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = gap
    for k, r in enumerate(rows):
        if row_titles:
            draw.text((gap, y), row_titles[k], fill=TEXT, font=font)
            y += row_title_h
        x = gap
        for title, panel in r:
            draw.text((x, y), title, fill=TEXT, font=small)
            canvas.paste(Image.fromarray(panel), (x, y + line))
            x += panel.shape[1] + gap
        y += line + max(p.shape[0] for _, p in r) + gap
    for entries in legend_lines:
        for x, e in entries:
            draw.rectangle([x, y + 2, x + line - 6, y + line - 4], fill=e.colour, outline=TEXT)
            draw.text((x + line, y + 2), e.name, fill=TEXT, font=small)
        y += line
    return np.asarray(canvas)


def legend_entries(class_names: Sequence[str], colours: Sequence[tuple[int, int, int]], group: str = ""
                   ) -> list[LegendEntry]:
    return [LegendEntry(str(n), tuple(int(v) for v in c), group) for n, c in zip(class_names, colours)]


def save_png(path: str | os.PathLike, rgb: np.ndarray, *, text: Mapping[str, str] | None = None,
             colors: int | None = None) -> None:
    """Write ``rgb`` as a PNG atomically (a temporary file renamed into place), with ``text``
    as PNG text chunks (e.g. the legend, so a program can read what the colours mean);
    ``colors``: a palette PNG of at most that many colours (pictures for the docs)."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from .files import atomic_path

    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    info = PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v)
    with atomic_path(path) as tmp:
        image = Image.fromarray(np.ascontiguousarray(rgb))
        if colors is not None:
            image = image.quantize(colors=colors)
        image.save(tmp, format="PNG", pnginfo=info, optimize=True)
