"""The blending buffer: window logits summed with their blend weights, finished rows flushed.

One :class:`BlendBuffer` serves a scene (or a column strip of it): :meth:`BlendBuffer.add`
adds a window's ``(K, h, w)`` logits times its weights (the ramp of
:func:`~d2geo.inference.windows.blend_weights` times the window's valid-data mask) into a
buffer of ``rows`` scene rows; :meth:`BlendBuffer.flush` turns the rows above a given row,
which no later window touches (windows come row-major), into labels (the arg-max of the
weighted sum) and optionally class scores (softmax of the weighted mean), and shifts the
buffer. Pixels no window saw with valid data are no data (:data:`NODATA_CLASS`, NaN scores);
an optional ``owner(row0, col0, rows, cols) -> bool mask`` marks the pixels this scene owns
(others are no data too). Memory: ``K x rows x (col1 - col0)`` floats.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["BlendBuffer", "FlushedRows", "NODATA_CLASS"]

#: the class maps' no-data value
NODATA_CLASS = 255


@dataclass
class FlushedRows:
    """Finished rows ``[row, row + labels.shape[0])`` of columns ``[col, col + labels.shape[1])``."""

    row: int
    col: int
    labels: np.ndarray  # uint8 (n, w), NODATA_CLASS where there is no prediction
    scores: np.ndarray | None  # float32 (K, n, w), NaN where there is no prediction


class BlendBuffer:
    """Weighted sums of window logits over ``rows`` rows of the scene columns ``[col0, col1)``.

    Args:
        n_classes: K, the logits' first dimension.
        height: rows of the scene (nothing is kept below it).
        rows: rows the buffer holds (a window's height: windows of one row start together).
        col0, col1: the scene columns the buffer covers (a strip; window parts outside are cut).
        out_cols: the columns :meth:`flush` returns (default ``(col0, col1)``): a strip read
            with context on either side returns only its own columns.
        owner: ``owner(row0, col0, rows, cols)`` -> bool mask of the pixels this scene owns.
        scores: also return the softmax of the weighted mean.
    """

    def __init__(self, n_classes: int, height: int, rows: int, col0: int, col1: int, *,
                 out_cols: tuple[int, int] | None = None, owner: Callable | None = None, scores: bool = False):
        if not 0 <= col0 < col1 or rows < 1 or n_classes < 1:
            raise ValueError(f"BlendBuffer: K={n_classes}, rows={rows}, columns [{col0}, {col1})")
        self.k, self.height, self.rows, self.col0, self.col1 = n_classes, height, rows, col0, col1
        self.out_cols = out_cols or (col0, col1)
        if not col0 <= self.out_cols[0] < self.out_cols[1] <= col1:
            raise ValueError(f"out_cols {self.out_cols} must lie in [{col0}, {col1})")
        self.owner, self.scores = owner, scores
        w = col1 - col0
        self.acc = np.zeros((n_classes, rows, w), np.float32)
        self.wsum = np.zeros((rows, w), np.float32)
        self.seen = np.zeros((rows, w), bool)  # valid data in some window
        self.top = 0  # scene row of the buffer's first row

    def add(self, row: int, col: int, logits: np.ndarray, weights: np.ndarray, valid: np.ndarray) -> None:
        """Add a window at scene ``(row, col)``: ``logits`` (K, h, w), ``weights`` and ``valid`` (h, w)."""
        if logits.shape[0] != self.k:
            raise ValueError(f"the window's logits have {logits.shape[0]} classes, the buffer {self.k}")
        if row < self.top:
            raise ValueError(f"window row {row} lies above the flushed rows (< {self.top}): add windows row-major")
        h, w = logits.shape[-2:]
        r0, r1 = row, min(row + h, self.height)
        c0, c1 = max(col, self.col0), min(col + w, self.col1)
        if r1 <= r0 or c1 <= c0:
            return
        if r1 - self.top > self.rows:
            raise ValueError(f"window rows [{row}, {row + h}) do not fit the buffer (rows {self.top}.."
                             f"{self.top + self.rows}): flush first")
        sl = (slice(r0 - row, r1 - row), slice(c0 - col, c1 - col))
        v = np.asarray(valid, bool)[sl]
        wt = weights[sl] * v
        b = (slice(r0 - self.top, r1 - self.top), slice(c0 - self.col0, c1 - self.col0))
        self.acc[(slice(None),) + b] += logits[(slice(None),) + sl] * wt
        self.wsum[b] += wt
        self.seen[b] |= v

    def flush(self, until: int) -> FlushedRows | None:
        """Rows ``[top, until)`` as labels (and scores); the buffer moves down past them."""
        n = min(until, self.height) - self.top
        if n <= 0:
            return None
        n = min(n, self.rows)
        lo, hi = self.out_cols[0] - self.col0, self.out_cols[1] - self.col0
        a, w = self.acc[:, :n, lo:hi], self.wsum[:n, lo:hi]
        keep = (w > 0) & self.seen[:n, lo:hi]
        if self.owner is not None:
            keep &= self.owner(self.top, self.out_cols[0], n, hi - lo)
        labels = np.argmax(a, axis=0).astype(np.uint8)
        labels[~keep] = NODATA_CLASS
        scores = None
        if self.scores:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = a / w[None]
            mean = mean - mean.max(axis=0, keepdims=True)
            scores = np.exp(mean)
            scores /= scores.sum(axis=0, keepdims=True)
            scores[:, ~keep] = np.nan
            scores = scores.astype(np.float32)
        out = FlushedRows(self.top, self.out_cols[0], labels, scores)
        for arr, axis in ((self.acc, 1), (self.wsum, 0), (self.seen, 0)):
            arr[...] = np.roll(arr, -n, axis=axis)
            idx = [slice(None)] * arr.ndim
            idx[axis] = slice(arr.shape[axis] - n, None)
            arr[tuple(idx)] = 0
        self.top += n
        return out
