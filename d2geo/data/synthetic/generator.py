"""A synthetic geospatial dataset written as real GeoTIFFs (for tests, demos and smoke training).

Tiles look like HLS surface reflectance: six bands (blue, green, red, nir_narrow,
swir_1, swir_2), int16 reflectance x 10 000 with the 0.0001 scale stored in the file,
nodata -9999, a UTM CRS (EPSG:32610 by default) and 10 m pixels, the acquisition time in
the ``TIFFTAG_DATETIME`` tag and (HLS-style ``YYYYDOY``) in the file name, band
descriptions and a ``SENSOR=hls`` tag.

Scenes hold four semantic classes with distinct but overlapping spectra: background
(soil/grass), water (smooth blobs), fields (rectangular parcels of vegetation whose NIR
follows a seasonal cycle) and buildings (small rotated rectangles, also the instances).
Bright bare-soil patches (labelled background) have nearly the spectrum of roofs, so
pixels alone do not separate them from buildings. Per-tile illumination gain, per-object
spectral jitter, pixel noise, semi-transparent clouds and nodata edges (as at a swath
border; labelled 255) keep the task learnable but not trivial. :func:`make_synthetic_dataset`
also mixes the land cover (``mixed_land_cover``, see :func:`render_tile`): grassland,
natural vegetation with a field's spectrum, dark surfaces as dark as water, turbid water,
three kinds of roof and a gain and haze per band and date. On the quickstart split a
per-pixel spectral MLP then reaches ~60 mIoU, while a small ViT that sees shapes and
context reaches 75 (README, Quickstart).

Layout written by :func:`make_synthetic_dataset`::

    root/<split>/images/tile_00000.2020245.tif           (one file per date when multi-temporal:
                                                        tile_00000.2020245.tif, tile_00000.2020275.tif, ...)
    root/<split>/masks/tile_00000_mask.tif               uint8 labels, 255 = no data
    root/<split>/geojson/tile_00000.geojson              buildings, scene CRS
    root/<split>/instances.json                          COCO, pixel polygons; multi-temporal
                                                        images also carry "file_names" (all dates)
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from dataclasses import dataclass, field

import cv2
import numpy as np

from d2geo.encoders.bands import HLS_BANDS

from ..geotiff import apply_affine

logger = logging.getLogger(__name__)

__all__ = ["GENERATOR_VERSION", "HLS_BANDS", "SEMSEG_CLASSES", "THING_CLASSES", "SIGNATURES", "Building", "SyntheticGeoDataset",
           "make_synthetic_dataset", "render_tile", "write_scene", "write_geotiff"]

#: bumped whenever the generator's output for given parameters changes (it keys the cache
#: of :mod:`d2geo.data.synthetic.cache`)
GENERATOR_VERSION = 2
SEMSEG_CLASSES = ("background", "water", "field", "building")
THING_CLASSES = ("building",)
NODATA = -9999
SCALE = 1e-4

#: mean reflectance per class and band (HLS band order)
SIGNATURES = {
    "background": np.array([0.06, 0.09, 0.12, 0.22, 0.28, 0.22]),
    "water": np.array([0.08, 0.07, 0.045, 0.025, 0.012, 0.008]),
    "field": np.array([0.035, 0.075, 0.045, 0.38, 0.21, 0.11]),
    "building": np.array([0.16, 0.17, 0.18, 0.21, 0.24, 0.22]),
    "cloud": np.array([0.55, 0.56, 0.58, 0.60, 0.45, 0.35]),
    # bare bright soil: labelled background, spectrally close to roofs (a confuser that
    # only shape and context tell apart)
    "bright_soil": np.array([0.15, 0.165, 0.185, 0.23, 0.28, 0.25]),
}

#: extra spectra of ``mixed_land_cover`` tiles (all labelled background but "sediment",
#: which is mixed into water)
LAND_COVER = {
    "grass": np.array([0.045, 0.085, 0.07, 0.29, 0.25, 0.14]),
    # natural vegetation (woods, scrub): the spectrum of a field in full growth
    "natural_vegetation": np.array([0.035, 0.072, 0.045, 0.34, 0.20, 0.10]),
    # wet soil, burn scars, asphalt: as dark as water in the visible bands
    "dark_surface": np.array([0.065, 0.065, 0.055, 0.045, 0.028, 0.018]),
    "sediment": np.array([0.10, 0.11, 0.09, 0.06, 0.03, 0.015]),
    # roofs other than the default bright one: red tiles, dark tar
    "tile_roof": np.array([0.09, 0.09, 0.17, 0.23, 0.29, 0.24]),
    "dark_roof": np.array([0.07, 0.07, 0.07, 0.08, 0.09, 0.08]),
}


@dataclass
class Building:
    """A rotated rectangle: centre (x, y) and size in pixels, angle in degrees."""

    cx: float
    cy: float
    w: float
    h: float
    angle: float = 0.0

    def polygon(self) -> np.ndarray:
        pts = cv2.boxPoints(((self.cx, self.cy), (self.w, self.h), self.angle))
        return pts.astype(np.float64)

    def corner_polygon(self) -> np.ndarray:
        """The polygon in corner coordinates ((0, 0) = top-left corner of the top-left pixel),
        the convention of COCO/detectron2 polygons and of the raster transform."""
        return self.polygon() + 0.5


def _smooth_field(rng, h, w, cells=4):
    small = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _random_buildings(rng, h, w, n, avoid):
    out = []
    for _ in range(n * 4):
        if len(out) == n:
            break
        bw, bh = rng.uniform(4, 10, size=2)
        cx, cy = rng.uniform(6, w - 6), rng.uniform(6, h - 6)
        b = Building(cx, cy, bw, bh, float(rng.uniform(0, 90)))
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [np.round(b.polygon()).astype(np.int32)], 1)
        if (m & avoid).any() or not m.any():
            continue
        avoid = avoid | cv2.dilate(m, np.ones((3, 3), np.uint8))
        out.append(b)
    return out


def render_tile(rng: np.random.Generator, height: int, width: int, *, num_frames: int = 1,
                day_of_year=(180,), buildings: list | None = None, max_buildings: int = 6,
                cloud_prob: float = 0.3, nodata_prob: float = 0.1, confuser_prob: float = 0.5,
                noise: float = 0.012, mixed_land_cover: bool = False):
    """Render one tile.

    ``mixed_land_cover`` adds what defeats a per-pixel spectral classifier: grassland mixed
    into the background (a smoothly varying amount per tile), patches of natural vegetation
    with a field's spectrum and of dark surfaces with water's visible spectrum (both
    labelled background: fields are rectangular parcels, water is smooth and the dark
    surfaces are not), turbid water, and roofs of three kinds (each building its own mix),
    some close to soil or to the dark surfaces. Each date also gets its own gain per band
    and haze, so absolute reflectances shift between tiles.

    Returns ``(reflectance (T, 6, H, W) float32 with NaN for nodata, labels (H, W) uint8
    with 255 = no data, buildings: list[Building])``.
    """
    h, w = height, width
    labels = np.zeros((h, w), np.uint8)
    water = _smooth_field(rng, h, w, cells=int(rng.integers(2, 5)))
    frac = rng.uniform(0.0, 0.3)
    if frac > 0.03:
        labels[water > np.quantile(water, 1 - frac)] = 1
    field_phase = {}
    for k in range(int(rng.integers(0, 4))):
        fh, fw = rng.integers(h // 6, h // 2), rng.integers(w // 6, w // 2)
        y0, x0 = rng.integers(0, h - fh), rng.integers(0, w - fw)
        region = labels[y0:y0 + fh, x0:x0 + fw]
        region[region == 0] = 2
        field_phase[k] = (y0, x0, fh, fw, rng.uniform(0, 2 * np.pi))
    if buildings is None:
        buildings = _random_buildings(rng, h, w, int(rng.integers(0, max_buildings + 1)),
                                      (labels == 1).astype(np.uint8))
    for b in buildings:
        cv2.fillPoly(labels, [np.round(b.polygon()).astype(np.int32)], 3)
    soil = np.zeros((h, w), bool)
    if rng.random() < confuser_prob:
        blob = _smooth_field(rng, h, w, cells=int(rng.integers(4, 7)))
        soil = (blob > np.quantile(blob, 1 - rng.uniform(0.05, 0.15))) & (labels == 0)

    # per-object jitter: one spectrum per class plus slow spatial variation
    spectra = {name: SIGNATURES[name] * rng.uniform(0.85, 1.15, size=6) for name in SIGNATURES}
    texture = 1.0 + 0.08 * _smooth_field(rng, h, w, cells=8)
    if mixed_land_cover:
        land = {name: LAND_COVER[name] * rng.uniform(0.85, 1.15, size=6) for name in LAND_COVER}
        grass = np.clip(0.35 * _smooth_field(rng, h, w, cells=int(rng.integers(3, 6))) + rng.uniform(-0.2, 0.9), 0, 1)
        free = (labels == 0) & ~soil
        patches = {}
        for name, prob in (("natural_vegetation", 0.6), ("dark_surface", 0.5)):
            patches[name] = np.zeros((h, w), bool)
            if rng.random() < prob:
                blob = _smooth_field(rng, h, w, cells=int(rng.integers(3, 6)))
                patches[name] = (blob > np.quantile(blob, 1 - rng.uniform(0.05, 0.2))) & free
                free &= ~patches[name]
        turbidity = rng.uniform(0.0, 0.7)
        # rough surfaces: fine texture on the patches, none on water
        rough = 1.0 + 0.2 * _smooth_field(rng, h, w, cells=max(8, h // 4))
        texture = np.where(patches["natural_vegetation"] | patches["dark_surface"], texture * rough, texture)
        texture = np.where(labels == 1, 1.0, texture).astype(np.float32)
        roofs = []
        for b in buildings:
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [np.round(b.polygon()).astype(np.int32)], 1)
            mix = rng.dirichlet((1.0, 0.5, 0.5))
            roof = mix[0] * spectra["building"] + mix[1] * land["tile_roof"] + mix[2] * land["dark_roof"]
            roofs.append(((m > 0) & (labels == 3), roof * rng.uniform(0.9, 1.1)))
    frames = []
    doys = list(day_of_year) if len(day_of_year) == num_frames else [180 + 30 * t for t in range(num_frames)]
    for t in range(num_frames):
        img = np.empty((6, h, w), np.float32)
        for cls, name in enumerate(SEMSEG_CLASSES):
            sel = labels == cls
            if sel.any():
                img[:, sel] = spectra[name][:, None]
        if soil.any():
            img[:, soil] = spectra["bright_soil"][:, None]
        if mixed_land_cover:
            bg = (labels == 0) & ~soil
            img[:, bg] = (spectra["background"][:, None] * (1 - grass[bg]) + land["grass"][:, None] * grass[bg])
            for name, sel in patches.items():
                if sel.any():
                    img[:, sel] = land[name][:, None]
            wat = labels == 1
            img[:, wat] = ((1 - turbidity) * spectra["water"] + turbidity * land["sediment"])[:, None]
            for sel, roof in roofs:
                img[:, sel] = roof[:, None]
        # crop phenology: fields get greener towards mid-season
        season = np.cos(2 * np.pi * (doys[t] - 200) / 365.0)
        field_sel = labels == 2
        img[3, field_sel] *= 0.75 + 0.25 * season
        img[2, field_sel] *= 1.2 - 0.2 * season
        img *= texture[None] * rng.uniform(0.9, 1.1)
        if mixed_land_cover:
            # atmosphere and calibration: a gain per band and a haze that brightens the short
            # wavelengths, different on every date
            img *= rng.uniform(0.8, 1.25, size=(6, 1, 1)).astype(np.float32)
            img += (rng.uniform(0.0, 0.05) * np.array([1.0, 0.7, 0.45, 0.2, 0.05, 0.0]))[:, None, None].astype(np.float32)
        img += rng.normal(0, noise, size=img.shape).astype(np.float32)
        if rng.random() < cloud_prob:
            alpha = np.clip(_smooth_field(rng, h, w, cells=3) * 0.6 + rng.uniform(-0.6, 0.1), 0, 0.85)
            img = img * (1 - alpha[None]) + SIGNATURES["cloud"][:, None, None] * alpha[None]
        frames.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    stack = np.stack(frames)
    if rng.random() < nodata_prob:
        # a swath edge: a wedge in one corner without data
        yy, xx = np.mgrid[0:h, 0:w]
        a, b = rng.uniform(0.2, 0.5) * w, rng.uniform(0.2, 0.5) * h
        wedge = (xx / a + yy / b) < 1.0
        stack[:, :, wedge] = np.nan
        labels[wedge] = 255
    return stack, labels, buildings


def write_geotiff(path, reflectance: np.ndarray, *, transform, crs="EPSG:32610",
                  when: _dt.datetime | None = None, band_names=HLS_BANDS) -> None:
    """Write ``(C, H, W)`` reflectance (NaN = nodata) as HLS-like int16 with scale 0.0001."""
    import rasterio

    c, h, w = reflectance.shape
    data = np.where(np.isfinite(reflectance), np.round(reflectance / SCALE), NODATA).astype(np.int16)
    profile = dict(driver="GTiff", width=w, height=h, count=c, dtype="int16", crs=crs,
                   transform=transform, nodata=NODATA)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.scales = (SCALE,) * c
        dst.offsets = (0.0,) * c
        for i, name in enumerate(band_names):
            dst.set_band_description(i + 1, name)
        tags = {"SENSOR": "hls"}
        if when is not None:
            tags["TIFFTAG_DATETIME"] = when.strftime("%Y:%m:%d %H:%M:%S")
        dst.update_tags(**tags)


def _write_mask(path, labels, *, transform, crs):
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1,
                       dtype="uint8", crs=crs, transform=transform, nodata=255) as dst:
        dst.write(labels[None])


def _polygon_geojson(buildings, transform):
    feats = []
    for b in buildings:
        pts = b.corner_polygon()
        xs, ys = apply_affine(transform, pts[:, 0], pts[:, 1])
        ring = [[float(x), float(y)] for x, y in zip(xs, ys)]
        ring.append(ring[0])
        feats.append({"type": "Feature", "properties": {"category_id": 0, "class": "building"},
                      "geometry": {"type": "Polygon", "coordinates": [ring]}})
    return {"type": "FeatureCollection", "features": feats}


def _coco_annotation(b: Building, ann_id: int, image_id: int, h: int, w: int):
    poly = b.corner_polygon()
    poly[:, 0] = poly[:, 0].clip(0, w)
    poly[:, 1] = poly[:, 1].clip(0, h)
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "segmentation": [poly.reshape(-1).round(3).tolist()],
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": float(cv2.contourArea(poly.astype(np.float32)))}


@dataclass
class SyntheticGeoDataset:
    """Paths of a generated dataset: per split, the image files (lists when multi-temporal)."""

    root: str
    splits: dict = field(default_factory=dict)
    bands: tuple = HLS_BANDS
    semseg_classes: tuple = SEMSEG_CLASSES
    thing_classes: tuple = THING_CLASSES
    num_frames: int = 1

    def split_dir(self, split: str) -> str:
        return os.path.join(self.root, split)

    def image_dir(self, split: str) -> str:
        """The folder the COCO json's ``file_name`` entries are relative to."""
        return os.path.join(self.root, split, "images")

    def coco_json(self, split: str) -> str:
        return os.path.join(self.root, split, "instances.json")

    def mask_file(self, split: str, image) -> str:
        """The label GeoTIFF of an image of ``split`` (a path, or the list of a time series)."""
        first = image[0] if isinstance(image, (list, tuple)) else image
        return os.path.join(self.root, split, "masks", f"{_tile_name(first)}_mask.tif")

    def semseg_pairs(self, split: str) -> list:
        """``(image or list of dates, label GeoTIFF)`` per tile of ``split``."""
        return [(image, self.mask_file(split, image)) for image in self.splits[split]]

    @classmethod
    def open(cls, root) -> "SyntheticGeoDataset":
        """A dataset that :func:`make_synthetic_dataset` wrote under ``root`` (found by its layout:
        the ``<split>/images`` folders; the dates of a tile become one time series)."""
        root = os.fspath(root)
        splits, num_frames = {}, 1
        for split in ("train", "val"):
            folder = os.path.join(root, split, "images")
            if not os.path.isdir(folder):
                continue
            tiles: dict[str, list] = {}
            for name in sorted(os.listdir(folder)):
                if name.endswith(".tif"):
                    tiles.setdefault(_tile_name(name), []).append(os.path.join(folder, name))
            num_frames = max([num_frames] + [len(v) for v in tiles.values()])
            splits[split] = [v if len(v) > 1 else v[0] for v in tiles.values()]
        if not splits:
            raise FileNotFoundError(f"no synthetic dataset in {root}: expected {root}/train/images or "
                                    f"{root}/val/images (the layout make_synthetic_dataset writes)")
        return cls(root=root, splits=splits, num_frames=num_frames)


def _tile_name(path) -> str:
    """``tile_00000`` of ``.../tile_00000.2020245.tif``."""
    return os.path.basename(os.fspath(path)).split(".")[0]


def make_synthetic_dataset(root, *, num_train: int = 64, num_val: int = 16, size: int = 64,
                           num_frames: int = 1, seed: int = 0, crs: str = "EPSG:32610",
                           gsd: float = 10.0, cloud_prob: float = 0.3, nodata_prob: float = 0.1,
                           confuser_prob: float = 0.5, mixed_land_cover: bool = True,
                           year: int = 2020) -> SyntheticGeoDataset:
    """Write a train/val synthetic dataset under ``root`` (layout in the module docstring);
    the rendering options are :func:`render_tile`'s."""
    from rasterio.transform import from_origin

    if size < 32:
        raise ValueError(f"tiles must be at least 32 px (got size={size})")
    rng = np.random.default_rng(seed)
    out = SyntheticGeoDataset(root=os.fspath(root), num_frames=num_frames)
    tile_idx = 0
    for split, count in (("train", num_train), ("val", num_val)):
        base = os.path.join(root, split)
        for sub in ("images", "masks", "geojson"):
            os.makedirs(os.path.join(base, sub), exist_ok=True)
        images, anns, files = [], [], []
        for i in range(count):
            name = f"tile_{tile_idx:05d}"
            # tiles sit on a grid in UTM zone 10N (California), 1 tile apart
            col, row = tile_idx % 50, tile_idx // 50
            transform = from_origin(500_000 + col * size * gsd, 4_200_000 - row * size * gsd, gsd, gsd)
            first_doy = int(rng.integers(1, 300))
            doys = [min(first_doy + 30 * t, 365) for t in range(num_frames)]
            stack, labels, buildings = render_tile(rng, size, size, num_frames=num_frames, day_of_year=doys,
                                                   cloud_prob=cloud_prob, nodata_prob=nodata_prob,
                                                   confuser_prob=confuser_prob, mixed_land_cover=mixed_land_cover)
            paths = []
            for t, doy in enumerate(doys):
                when = _dt.datetime(year, 1, 1, 18, 30) + _dt.timedelta(days=doy - 1)
                fname = f"{name}.{year}{doy:03d}.tif"
                write_geotiff(os.path.join(base, "images", fname), stack[t], transform=transform, crs=crs, when=when)
                paths.append(fname)
            _write_mask(os.path.join(base, "masks", f"{name}_mask.tif"), labels, transform=transform, crs=crs)
            with open(os.path.join(base, "geojson", f"{name}.geojson"), "w") as f:
                json.dump(_polygon_geojson(buildings, transform), f)
            img = {"id": tile_idx, "file_name": paths[0], "height": size, "width": size}
            if num_frames > 1:
                img["file_names"] = paths
            images.append(img)
            for b in buildings:
                anns.append(_coco_annotation(b, len(anns) + 1, tile_idx, size, size))
            files.append([os.path.join(base, "images", p) for p in paths] if num_frames > 1
                         else os.path.join(base, "images", paths[0]))
            tile_idx += 1
        coco = {"images": images, "annotations": anns,
                "categories": [{"id": 1, "name": "building"}]}
        with open(os.path.join(base, "instances.json"), "w") as f:
            json.dump(coco, f)
        out.splits[split] = files
    logger.info("wrote %d synthetic tiles under %s", tile_idx, root)
    return out


def write_scene(path, *, height: int = 256, width: int = 256, seed: int = 0, buildings: list | None = None,
                crs: str = "EPSG:32610", gsd: float = 10.0, origin=(500_000.0, 4_200_000.0),
                when: _dt.datetime | None = None, cloud_prob: float = 0.0, nodata_prob: float = 0.0,
                confuser_prob: float = 0.0):
    """Write one scene (several tiles wide) as a GeoTIFF; returns ``(labels, buildings, transform)``.

    ``buildings`` places buildings explicitly (e.g. straddling a tile border); the mask is
    written next to the scene as ``<path stem>_mask.tif``.
    """
    from rasterio.transform import from_origin

    rng = np.random.default_rng(seed)
    transform = from_origin(origin[0], origin[1], gsd, gsd)
    stack, labels, blds = render_tile(rng, height, width, buildings=buildings, max_buildings=max(4, height * width // 2000),
                                      cloud_prob=cloud_prob, nodata_prob=nodata_prob, confuser_prob=confuser_prob)
    write_geotiff(path, stack[0], transform=transform, crs=crs, when=when or _dt.datetime(2020, 9, 1, 18, 30))
    _write_mask(os.path.splitext(os.fspath(path))[0] + "_mask.tif", labels, transform=transform, crs=crs)
    return labels, blds, transform
