"""Ways to turn a temporal encoder's ``(B, D, t, h, w)`` maps into 2-D ``(B, C, h, w)`` maps.

Fixed folds (no parameters), applied per pixel over the time axis ``t``:

==============  ============  ==============================================================
mode            channels      meaning
==============  ============  ==============================================================
``concat``      ``t * D``     time steps stacked into channels, time-major (terratorch layout)
``mean``        ``D``         average over time
``max``         ``D``         maximum over time, per channel
``diff``        ``D``         last time step minus the first (change detection)
``attention``   ``D``         learned attention pooling, :class:`TemporalAttentionPool`
==============  ============  ==============================================================

Any mode can first keep a subset of the time steps (``frames=[0, 3]``; negative indices
count from the end), e.g. ``diff`` of the first and last of four dates, or ``concat`` of two.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

from ..encoders.base import time_to_channels

__all__ = ["TEMPORAL_FOLDS", "fold_time", "select_frames", "resolve_frames", "TemporalAttentionPool"]

TEMPORAL_FOLDS = ("concat", "mean", "max", "diff", "attention")


def resolve_frames(frames: Sequence[int] | None, num_steps: int) -> list[int] | None:
    """Non-negative time indices of ``frames`` for a series of ``num_steps`` (None: all).

    Raises ValueError naming the problem for an empty selection, an index out of range or a
    repeated index.
    """
    if frames is None:
        return None
    if isinstance(frames, int) or isinstance(frames, str):
        raise ValueError(f"frames={frames!r} must be a list of time indices, e.g. frames=[0, 3]")
    frames = list(frames)
    if not frames:
        raise ValueError("frames=[] selects no time step; give at least one index or frames=None for all")
    out = []
    for i in frames:
        if isinstance(i, bool) or not isinstance(i, int):
            raise ValueError(f"frames={frames}: time indices must be ints, got {i!r}")
        j = i + num_steps if i < 0 else i
        if not 0 <= j < num_steps:
            raise ValueError(
                f"frames={frames}: index {i} is out of range for {num_steps} time steps (after "
                f"tubelet folding); use indices 0..{num_steps - 1} or -1..-{num_steps}"
            )
        out.append(j)
    if len(set(out)) != len(out):
        raise ValueError(f"frames={frames} names the same time step twice ({out})")
    return out


def select_frames(x: torch.Tensor, frames: Sequence[int] | None) -> torch.Tensor:
    """Keep the time steps ``frames`` (in the order given) of a ``(B, D, t, h, w)`` map."""
    idx = resolve_frames(frames, x.shape[2])
    if idx is None or idx == list(range(x.shape[2])):
        return x
    return x[:, :, idx]


def fold_time(x: torch.Tensor, mode: str, frames: Sequence[int] | None = None,
              pool: nn.Module | None = None) -> torch.Tensor:
    """Turn a ``(B, D, t, h, w)`` feature map into a 2-D one (see the module docstring).

    ``frames`` keeps a subset of the time steps first. ``mode="attention"`` needs the
    learned ``pool`` (a :class:`TemporalAttentionPool`); :class:`~d2geo.modeling.GeoBackbone`
    owns one per tap.
    """
    if x.ndim != 5:
        raise ValueError(f"fold_time expects a (B, D, t, h, w) map, got shape {tuple(x.shape)}")
    if mode not in TEMPORAL_FOLDS:
        raise ValueError(f"temporal_fold={mode!r} is not one of {TEMPORAL_FOLDS}")
    x = select_frames(x, frames)
    if mode == "concat":
        return time_to_channels(x)
    if mode == "mean":
        return x.mean(dim=2)
    if mode == "max":
        return x.amax(dim=2)
    if mode == "diff":
        if x.shape[2] < 2:
            raise ValueError(
                f"temporal_fold='diff' (last minus first time step) needs at least two time steps, "
                f"got {x.shape[2]}; give a time series (num_frames >= 2 and tubelet_size < num_frames) "
                "or select two frames with temporal_frames=[first, last]"
            )
        return x[:, :, -1] - x[:, :, 0]
    if pool is None:
        raise ValueError("temporal_fold='attention' needs its learned pool (TemporalAttentionPool); "
                         "GeoBackbone builds one per tap")
    return pool(x)


def _sincos_positions(num_steps: int, dim: int, period: float, device, dtype) -> torch.Tensor:
    """``(num_steps, dim)`` sine-cosine encoding of the time index (sin on even channels)."""
    pos = torch.arange(num_steps, dtype=torch.float32, device=device).unsqueeze(1)
    half = torch.arange(0, dim, 2, dtype=torch.float32, device=device)
    angles = pos * torch.exp(half * (-math.log(period) / dim))
    table = torch.zeros(num_steps, dim, dtype=torch.float32, device=device)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table.to(dtype)


class TemporalAttentionPool(nn.Module):
    """Per-pixel attention pooling over time with learned master queries (L-TAE style).

    For each pixel and each of ``num_heads`` heads, the keys of the ``t`` time steps are a
    linear map of the layer-normed features plus a sine-cosine encoding of the time index;
    the head's learned query scores them (``softmax(q . k / sqrt(key_dim))`` over time), and
    the head's share of channels (``D / num_heads`` consecutive channels) is the
    attention-weighted sum of the *input* features. The output keeps the encoder's ``D``
    channels and feature space (a convex combination of time steps per head group), so the
    pyramid after it sees the same kind of features as with ``mean``.

    As in Garnot & Landrieu's L-TAE (the values are the input split into head groups, one
    master query per head), without the MLP on top. The queries start at zero, i.e. as the
    temporal mean.

    Args:
        channels: ``D``; must be divisible by ``num_heads``.
        num_heads: attention heads (channel groups).
        key_dim: width of queries and keys.
        period: period of the time-index encoding.
    """

    def __init__(self, channels: int, num_heads: int = 4, key_dim: int = 8, period: float = 1000.0):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"TemporalAttentionPool: channels={channels} is not divisible by "
                             f"num_heads={num_heads}; pick a num_heads that divides the encoder width")
        self.channels, self.num_heads, self.key_dim, self.period = channels, num_heads, key_dim, period
        self.norm = nn.LayerNorm(channels)
        self.key = nn.Linear(channels, num_heads * key_dim)
        self.query = nn.Parameter(torch.zeros(num_heads, key_dim))

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, heads, t, h, w)`` (they sum to 1 over ``t``)."""
        B, D, t, h, w = x.shape
        seq = x.permute(0, 3, 4, 2, 1)  # B, h, w, t, D
        seq = self.norm(seq) + _sincos_positions(t, D, self.period, x.device, seq.dtype)
        keys = self.key(seq).unflatten(-1, (self.num_heads, self.key_dim))  # B, h, w, t, H, k
        scores = (keys * self.query).sum(-1) / math.sqrt(self.key_dim)  # B, h, w, t, H
        return scores.softmax(dim=3).permute(0, 4, 3, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 5 or x.shape[1] != self.channels:
            raise ValueError(f"TemporalAttentionPool({self.channels}) takes (B, {self.channels}, t, h, w) "
                             f"maps, got shape {tuple(x.shape)}")
        B, D, t, h, w = x.shape
        attn = self.attention(x)  # B, H, t, h, w
        groups = x.reshape(B, self.num_heads, D // self.num_heads, t, h, w)
        return (groups * attn.unsqueeze(2)).sum(dim=3).reshape(B, D, h, w)
