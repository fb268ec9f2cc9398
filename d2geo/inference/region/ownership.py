"""Which scene predicts a ground point where scenes overlap: its *owner*.

Of the scenes whose valid data cover a point, the owner is the one in which the point lies
farthest from the scene's edge, in metres (ties: the scene listed first). It is the rule that
blending follows within a scene (a window's edge gets no weight where another window sees
the place from further inside) made exclusive, and the rule that deduplication follows (the
copy not cut by an edge wins). Ownership depends only on the list of scenes, never on which
process runs which scene, so any number of processes gives the same files.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from d2geo.data.geotiff import apply_affine

from .inputs import RegionScene

__all__ = ["Ownership", "ownership", "lonlat_box", "crosses_antimeridian"]


def _edge_distance(scene: RegionScene, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Distance in metres of points (in the scene's CRS) from the scene's edge (<0 outside)."""
    inv = ~scene.transform
    c, r = apply_affine(inv, xs, ys)
    d = np.minimum(np.minimum(c, scene.width - c), np.minimum(r, scene.height - r))
    return d * scene.gsd


def lonlat_box(scene: RegionScene) -> tuple[float, float, float, float]:
    """West, south, east, north of the scene in degrees (its edges sampled, 16 points a side)."""
    from rasterio.warp import transform as warp

    t = np.linspace(0, 1, 17)
    cols = np.concatenate([t * scene.width, np.full(17, scene.width), t[::-1] * scene.width, np.zeros(17)])
    rows = np.concatenate([np.zeros(17), t * scene.height, np.full(17, scene.height), t[::-1] * scene.height])
    xs, ys = apply_affine(scene.transform, cols, rows)
    lon, lat = warp(scene.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    return min(lon), min(lat), max(lon), max(lat)


def crosses_antimeridian(scene: RegionScene) -> tuple[float, float] | None:
    """``(west, east)`` longitudes (unwrapped, one beyond +-180) of a scene that crosses the
    antimeridian, else None."""
    from rasterio.warp import transform as warp

    t = np.linspace(0, 1, 17)
    cols = np.concatenate([t * scene.width, np.full(17, scene.width), t[::-1] * scene.width, np.zeros(17)])
    rows = np.concatenate([np.zeros(17), t * scene.height, np.full(17, scene.height), t[::-1] * scene.height])
    xs, ys = apply_affine(scene.transform, cols, rows)
    lon, _ = warp(scene.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    lon = np.rad2deg(np.unwrap(np.deg2rad(np.asarray(lon, float))))  # a walk along the edges: no 360 jumps
    if lon.max() > 180 or lon.min() < -180:
        return float(lon.min()), float(lon.max())
    return None


def _neighbours(scene: RegionScene, scenes: Sequence[RegionScene]) -> list[int]:
    """Indices of the scenes whose footprints overlap ``scene``'s (longitude/latitude boxes;
    scenes across the antimeridian are not matched)."""
    w, s_, e, n = lonlat_box(scene)
    out = []
    for i, other in enumerate(scenes):
        if other.id == scene.id:
            continue
        ow, os_, oe, on = lonlat_box(other)
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

    def __call__(self, row0: int, col0: int, height: int, width: int) -> np.ndarray:
        return self.owned(row0, col0, height, width)

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
