"""Windows over a scene: where they start, how much each of their pixels weighs, column strips.

Windows step by ``tile - overlap``; the last row/column of windows is shifted to end at the
scene edge (so it may overlap more). In a dimension where the scene is smaller than the
tile the window shrinks to the scene (:func:`window_shape`): the model sees the whole scene
and pads it itself, as its own input pipeline does (in normalized space), instead of being
fed pixels that are not there.

Blending weights are a separable ramp: 1 in the centre, falling linearly to ~0 over
``overlap`` px at each edge, so no window edge carries full weight where another window
overlaps it.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["tile_windows", "blend_weights", "window_shape", "column_strips"]


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, stride))
    if starts[-1] != size - tile:
        starts.append(size - tile)
    return starts


def check_tiling(tile: int, overlap: int) -> None:
    if not isinstance(tile, (int, np.integer)) or tile <= 0:
        raise ValueError(f"tile must be a positive number of pixels, got {tile!r}")
    if not isinstance(overlap, (int, np.integer)) or not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap!r}")


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """Top-left corners ``(row, col)`` of windows covering the scene, row-major.

    A scene smaller than the tile gets one window (of :func:`window_shape`)."""
    check_tiling(tile, overlap)
    stride = tile - overlap
    return [(r, c) for r in _starts(height, tile, stride) for c in _starts(width, tile, stride)]


def window_shape(height: int, width: int, tile: int) -> tuple[int, int]:
    """``(rows, cols)`` of every window of a ``height x width`` scene: the tile, shrunk to the
    scene where the scene is smaller."""
    return min(tile, height), min(tile, width)


def _ramp(n: int, overlap: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float64) + 0.5
    if overlap <= 0:
        return np.ones(n)
    return np.minimum(1.0, np.minimum(i, n - i) / overlap)


def blend_weights(tile: int, overlap: int, width: int | None = None) -> np.ndarray:
    """``(tile, width or tile)`` weights: 1 in the centre, ramping linearly to ~0 over
    ``overlap`` px at each edge (every weight is positive)."""
    return np.outer(_ramp(tile, overlap), _ramp(tile if width is None else width, overlap)).astype(np.float32)


def column_strips(width: int, max_width: int) -> list[tuple[int, int]]:
    """``[(col0, col1), ...]``: the scene's columns cut into strips of at most ``max_width``."""
    n = max(1, math.ceil(width / max_width))
    edges = [round(i * width / n) for i in range(n + 1)]
    return [(edges[i], edges[i + 1]) for i in range(n)]
