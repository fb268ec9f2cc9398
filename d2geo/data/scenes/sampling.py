"""Window samplers: where in which scene the windows of a split lie.

All windows are ``(col_off, row_off, width, height)`` in scene pixels, whole inside the
scene (never padded), inside the split's region (:mod:`.split`) and with at least
``min_valid`` of their pixels holding data (judged on a decimated GDAL mask of the scene).

* ``"grid"``: windows on a regular grid of ``stride`` px (the last row/column moved to end
  at the scene edge, as in ``tile_windows``), for evaluation and inference-like coverage;
* ``"random"``: ``count`` windows per epoch drawn uniformly: a scene with probability
  proportional to its area in the split, then a uniform offset, rejected when outside the
  region or without enough data;
* label-aware (``label_fraction``): that fraction of the random windows is placed on a
  label: a class drawn uniformly among the classes present (so rare classes do not
  starve), then one of its features, then a random point of it, and a window containing
  that point at a random offset.

Reproducibility: the windows of epoch ``e`` are a function of ``(seed, e)`` only (numpy
``default_rng([seed, e])``), identical on every process; :func:`shard` gives rank ``r`` of
``n`` its share ``windows[r::n]`` (detectron2's ``TrainingSampler`` does the same sharding
over the dataset list under ``launch``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import SceneError

logger = logging.getLogger(__name__)

__all__ = ["ValidMask", "grid_windows", "random_windows", "shard", "check_window_fits"]


def check_window_fits(scenes, size: int) -> None:
    for s in scenes:
        if size > s.width or size > s.height:
            raise SceneError(f"windows of {size} x {size} px are larger than scene {s.paths[0]} "
                             f"({s.width} x {s.height} px): use a smaller window (window=...)")


@dataclass
class ValidMask:
    """Where a scene holds data, decimated by ``factor`` (for sampling only, never for training data)."""

    mask: np.ndarray
    factor: int

    @classmethod
    def of(cls, scene, max_side: int = 512) -> "ValidMask":
        import rasterio

        factor = max(1, int(np.ceil(max(scene.width, scene.height) / max_side)))
        shape = (int(np.ceil(scene.height / factor)), int(np.ceil(scene.width / factor)))
        mask = np.ones(shape, dtype=bool)
        for p in scene.paths:
            with rasterio.open(p) as src:
                mask &= src.dataset_mask(out_shape=shape) > 0
        return cls(mask, factor)

    def fraction(self, col: int, row: int, w: int, h: int) -> float:
        f = self.factor
        sub = self.mask[row // f:max(row // f + 1, (row + h) // f), col // f:max(col // f + 1, (col + w) // f)]
        return float(sub.mean()) if sub.size else 0.0


def _starts(size: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def _inside(scene, region, window) -> bool:
    if region is None:
        return True
    return bool(region.covers(scene.window_polygon(*window)))


def grid_windows(scene, size: int, stride: int, *, region=None, valid: ValidMask | None = None,
                 min_valid: float = 0.5) -> list[tuple]:
    """Grid windows of one scene inside ``region`` (scene CRS; None = anywhere)."""
    if stride <= 0:
        raise SceneError(f"the grid stride must be positive, got {stride}")
    out = []
    for r in _starts(scene.height, size, stride):
        for c in _starts(scene.width, size, stride):
            w = (c, r, size, size)
            if _inside(scene, region, w) and (valid is None or valid.fraction(c, r, size, size) >= min_valid):
                out.append(w)
    return out


def _accept(scene, region, valid, window, min_valid) -> bool:
    return _inside(scene, region, window) and (valid is None or valid.fraction(*window) >= min_valid)


def random_windows(scenes, size: int, count: int, *, seed: int, epoch: int = 0, regions=None, valid=None,
                   min_valid: float = 0.5, labels=None, label_fraction: float = 0.0,
                   max_tries: int = 200) -> list[tuple[int, tuple]]:
    """``count`` windows ``(scene index, window)`` (see the module docstring)."""
    import shapely

    if count <= 0:
        raise SceneError(f"the random sampler needs count > 0 windows per epoch, got {count}")
    if not 0.0 <= label_fraction <= 1.0:
        raise SceneError(f"label_fraction must be in [0, 1], got {label_fraction}")
    regions = regions or [None] * len(scenes)
    valid = valid or [None] * len(scenes)
    rng = np.random.default_rng([int(seed), int(epoch)])
    areas = np.array([float(s.width * s.height) if r is None else
                      r.intersection(s.footprint()).area / s.pixel_size ** 2 for s, r in zip(scenes, regions)])
    if areas.sum() <= 0:
        raise SceneError("the split's region does not cover any scene")
    p = areas / areas.sum()
    n_label = int(round(label_fraction * count))
    out = []
    if n_label:
        # per class, the (scene, feature position) pairs of features inside the scene's region
        by_class: dict = {}
        for si, s in enumerate(scenes):
            geoms, ids, _, _ = labels.in_crs(s.crs)
            area = s.footprint() if regions[si] is None else regions[si].intersection(s.footprint())
            for j in labels.query(s.crs, area):
                by_class.setdefault(int(ids[j]), []).append((si, int(j)))
        if not by_class:
            raise SceneError("label_fraction > 0 but no label lies inside the split's region of any scene: "
                             "check the labels' extent or set label_fraction=0")
        classes = sorted(by_class)
        tries = 0
        while len(out) < n_label:
            tries += 1
            if tries > max_tries * n_label:
                raise SceneError(f"placed only {len(out)} of {n_label} label windows of {size} px in "
                                 f"{tries - 1} tries: the labels sit too close to the region or scene edges; "
                                 "lower label_fraction or the window size")
            cls = classes[rng.integers(len(classes))]
            si, j = by_class[cls][rng.integers(len(by_class[cls]))]
            s = scenes[si]
            geom = labels.in_crs(s.crs)[0][j]
            x0, y0, x1, y1 = geom.bounds
            pt = None
            for _ in range(20):
                x, y = rng.uniform(x0, x1), rng.uniform(y0, y1)
                if geom.contains(shapely.Point(x, y)):
                    pt = (x, y)
                    break
            if pt is None:
                rp = geom.representative_point()
                pt = (rp.x, rp.y)
            pc, pr = ~s.transform * pt
            c = int(np.clip(np.floor(pc) - rng.integers(size), 0, s.width - size))
            r = int(np.clip(np.floor(pr) - rng.integers(size), 0, s.height - size))
            if _accept(s, regions[si], valid[si], (c, r, size, size), min_valid):
                out.append((si, (c, r, size, size)))
    tries = 0
    while len(out) < count:
        tries += 1
        if tries > max_tries * count:
            raise SceneError(f"found only {len(out)} of {count} random windows of {size} px inside the split "
                             f"region with >= {min_valid:.0%} valid pixels in {tries - 1} tries: use smaller "
                             "windows, larger blocks, or a lower min_valid")
        si = int(rng.choice(len(scenes), p=p))
        s = scenes[si]
        w = (int(rng.integers(0, s.width - size + 1)), int(rng.integers(0, s.height - size + 1)), size, size)
        if _accept(s, regions[si], valid[si], w, min_valid):
            out.append((si, w))
    return out


def shard(windows: list, rank: int, world_size: int) -> list:
    """Rank ``rank``'s share of ``windows`` (disjoint across ranks, together all of them)."""
    if not 0 <= rank < world_size:
        raise SceneError(f"rank {rank} is not in [0, {world_size})")
    return windows[rank::world_size]
