"""ViTDet-style window attention for every d2geo encoder, with no new parameters.

``encoder.set_window_attention(window_size=14, global_blocks=(2, 5, 8, 11))`` makes all
blocks except ``global_blocks`` attend within non-overlapping windows of
``window_size x window_size`` patch tokens; the global blocks keep full attention and
carry information between windows. Nothing is added to the model (no relative position
tables), so every checkpoint loads as before and ``window_size=0`` restores the
pretrained behaviour exactly.

How a windowed block runs
    Only the attention is windowed, as in ViTDet: the block's ``attn`` module receives
    the tokens regrouped into windows, ``(B * nW, P + L, D)``, and its output is put back
    into the ``(B, P + N, D)`` layout before the residual and the MLP, which therefore
    never see padding. This works for any block whose attention module is ``block.attn``
    and takes an ``attn_mask`` keyword (timm's ``Block`` and ``EvaBlock``, i.e. every
    d2geo family). It is done with forward hooks on ``block.attn`` that exist only
    during the block call, so activation checkpointing recomputes the same thing. (So
    one encoder instance should not run windowed blocks from several threads at once.)

Padding
    When a window does not divide the token grid, the grid is padded at the bottom and
    right to a multiple of the window and the padded positions are masked out as keys
    (a boolean ``attn_mask``), so every real token attends to exactly the real tokens of
    its window. (ViTDet pads with zeros and lets tokens attend to them; masking keeps the
    result independent of the padding.) Padded queries are computed and dropped. A
    window larger than the grid is clipped to it: with a single window the block runs
    unchanged, i.e. exactly as global attention.

Prefix tokens (cls, registers)
    Every window gets a copy of the prefix tokens, so patch tokens keep attending to
    them and the prefix tokens attend to each window's tokens. The prefix outputs of the
    windows are then averaged, weighted by the number of real (unpadded) tokens in each
    window, so the cls / register tokens summarise the whole image after every block.
    This is an approximation of global attention for the prefix tokens (a softmax over
    windows is not the mean of per-window softmaxes); patch tokens are exact windowed
    attention.

Rotary embeddings (DINOv3)
    A ``rope`` keyword passed to the attention module, ``(N, C)`` or ``(B, 1, N, C)``
    over the patch tokens, is partitioned exactly like the tokens, so each token keeps
    its absolute rotary position inside its window.

Temporal grids (Prithvi)
    For a ``(t, h, w)`` grid the windows are spatial only and span all ``t`` token
    frames: a window holds ``t * ws * ws`` tokens, the same ``ws x ws`` area in every
    frame. This keeps attention across time (which Prithvi was pretrained with) and
    costs ``t`` times the tokens of an image window.
"""
from __future__ import annotations

import inspect
import logging
import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["set_window_attention", "windowed_blocks", "block_runner", "WindowLayout"]


def _as_pair(window_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(window_size, bool):
        raise ValueError(f"window_size must be an int or (height, width) in tokens, got {window_size!r}")
    if isinstance(window_size, int):
        pair = (window_size, window_size)
    else:
        try:
            pair = tuple(int(s) for s in window_size)
        except TypeError:
            raise ValueError(
                f"window_size must be an int or (height, width) in tokens, got {window_size!r}") from None
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(
            f"window_size must be a positive number of tokens or a pair of them, got {window_size!r}; "
            f"use window_size=0 to switch window attention off")
    return pair


def set_window_attention(encoder: nn.Module, window_size: int | Sequence[int] | None,
                         global_blocks: Sequence[int] = ()) -> None:
    """Switch window attention on (``window_size`` tokens, int or ``(h, w)``) or off (0/None).

    ``global_blocks`` are block indices (negative ones count from the end) that keep
    global attention. The setting lives in two plain attributes, ``window_size`` and
    ``global_blocks``, and does not touch the parameters or the state dict.
    """
    if not window_size:
        encoder.window_size, encoder.global_blocks = 0, ()
        logger.info("%s: global attention in every block", type(encoder).__name__)
        return
    pair = _as_pair(window_size)
    depth = encoder.depth
    if isinstance(global_blocks, int):
        global_blocks = (global_blocks,)
    resolved = []
    for i in global_blocks:
        j = int(i) + depth if int(i) < 0 else int(i)
        if not 0 <= j < depth:
            raise ValueError(
                f"global block {i} is out of range for an encoder with {depth} blocks; "
                f"use indices 0..{depth - 1} (or -1..-{depth})")
        resolved.append(j)
    resolved = tuple(sorted(set(resolved)))
    blocks = list(encoder.get_blocks())
    for j, block in enumerate(blocks):
        if j in resolved:
            continue
        attn = getattr(block, "attn", None)
        if attn is None or "attn_mask" not in inspect.signature(attn.forward).parameters:
            raise ValueError(
                f"block {j} of {type(encoder).__name__} ({type(block).__name__}) has no attention "
                f"module 'attn' taking an attn_mask keyword, which window attention needs; list it "
                f"in global_blocks or use timm's Block / EvaBlock")
    encoder.window_size, encoder.global_blocks = pair, resolved
    logger.info("%s: %dx%d window attention in blocks %s, global attention in %s",
                type(encoder).__name__, *pair, windowed_blocks(encoder), list(resolved))


def windowed_blocks(encoder: nn.Module) -> list[int]:
    """Indices of the blocks that run window attention (empty when it is off)."""
    if not getattr(encoder, "window_size", 0):
        return []
    return [i for i in range(encoder.depth) if i not in encoder.global_blocks]


def block_runner(encoder: nn.Module, index: int, grid: Sequence[int]) -> Callable:
    """The ``run(block, tokens, ctx)`` callable for block ``index`` on a token ``grid``."""
    if not getattr(encoder, "window_size", 0) or index in encoder.global_blocks:
        return encoder._run_block
    return partial(_run_windowed, encoder, tuple(int(g) for g in grid))


@dataclass(frozen=True)
class WindowLayout:
    """How ``(B, P + N, D)`` tokens on a grid ``(*frames, h, w)`` map to windows."""

    batch: int
    prefix: int
    frames: int  # product of the leading grid dims (t for Prithvi, 1 for images)
    hw: tuple[int, int]
    window: tuple[int, int]

    @classmethod
    def build(cls, grid: Sequence[int], window_size: tuple[int, int], batch: int,
              prefix: int) -> "WindowLayout":
        *lead, h, w = grid
        window = (min(window_size[0], h), min(window_size[1], w))
        return cls(batch, prefix, math.prod(lead), (h, w), window)

    @property
    def counts(self) -> tuple[int, int]:
        return (-(-self.hw[0] // self.window[0]), -(-self.hw[1] // self.window[1]))

    @property
    def num_windows(self) -> int:
        return self.counts[0] * self.counts[1]

    @property
    def padded(self) -> tuple[int, int]:
        return (self.counts[0] * self.window[0], self.counts[1] * self.window[1])

    @property
    def needs_padding(self) -> bool:
        return self.padded != self.hw

    @property
    def num_tokens(self) -> int:
        return self.frames * self.hw[0] * self.hw[1]

    # -- regrouping ------------------------------------------------------------------
    def _to_windows(self, grid_tokens: torch.Tensor) -> torch.Tensor:
        """``(B', T, h, w, C)`` -> ``(B' * nW, T * wh * ww, C)`` (zero padding)."""
        Bp, T, h, w, C = grid_tokens.shape
        Hp, Wp = self.padded
        if (Hp, Wp) != (h, w):
            grid_tokens = F.pad(grid_tokens, (0, 0, 0, Wp - w, 0, Hp - h))
        (nh, nw), (wh, ww) = self.counts, self.window
        x = grid_tokens.reshape(Bp, T, nh, wh, nw, ww, C).permute(0, 2, 4, 1, 3, 5, 6)
        return x.reshape(Bp * nh * nw, T * wh * ww, C)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, P + N, C)`` -> ``(B * nW, P + L, C)``, the prefix tokens copied into each window."""
        B, P, C = self.batch, self.prefix, x.shape[-1]
        h, w = self.hw
        if x.shape[:2] != (B, P + self.num_tokens):
            raise RuntimeError(
                f"window attention expected ({B}, {P + self.num_tokens}, C) tokens for a grid of "
                f"{self.frames}x{h}x{w} with {P} prefix tokens, got {tuple(x.shape)}")
        patches = self._to_windows(x[:, P:].reshape(B, self.frames, h, w, C))
        if not P:
            return patches
        prefix = x[:, :P].unsqueeze(1).expand(B, self.num_windows, P, C).reshape(-1, P, C)
        return torch.cat([prefix, patches], dim=1)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`partition`; prefix outputs are averaged over the windows."""
        B, P, C = self.batch, self.prefix, y.shape[-1]
        (nh, nw), (wh, ww), (h, w) = self.counts, self.window, self.hw
        Hp, Wp = self.padded
        T = self.frames
        patches = y[:, P:].reshape(B, nh, nw, T, wh, ww, C).permute(0, 3, 1, 4, 2, 5, 6)
        patches = patches.reshape(B, T, Hp, Wp, C)
        if (Hp, Wp) != (h, w):
            patches = patches[:, :, :h, :w]
        patches = patches.reshape(B, T * h * w, C)
        if not P:
            return patches
        prefix = y[:, :P].reshape(B, nh * nw, P, C)
        weights = self.window_weights(y.device, y.dtype)
        prefix = torch.einsum("bkpc,k->bpc", prefix, weights)
        return torch.cat([prefix, patches], dim=1)

    def window_weights(self, device, dtype) -> torch.Tensor:
        """``(nW,)`` share of the real tokens in each window (sums to 1)."""
        rows = self._real_extent(0).to(device=device, dtype=torch.float64)
        cols = self._real_extent(1).to(device=device, dtype=torch.float64)
        counts = (rows[:, None] * cols[None, :]).flatten()
        return (counts / counts.sum()).to(dtype)

    def _real_extent(self, axis: int) -> torch.Tensor:
        n, size, total = self.counts[axis], self.window[axis], self.hw[axis]
        start = torch.arange(n) * size
        return (total - start).clamp(max=size)

    def key_mask(self, device) -> torch.Tensor | None:
        """Boolean ``(B * nW, 1, 1, P + L)`` attention mask hiding padded keys, or None."""
        if not self.needs_padding:
            return None
        (nh, nw), (wh, ww), (h, w) = self.counts, self.window, self.hw
        rows = torch.arange(nh * wh, device=device) < h
        cols = torch.arange(nw * ww, device=device) < w
        valid = (rows[:, None] & cols[None, :]).reshape(nh, wh, nw, ww).permute(0, 2, 1, 3)
        valid = valid.reshape(nh * nw, 1, wh * ww).expand(-1, self.frames, -1).reshape(nh * nw, -1)
        valid = torch.cat([valid.new_ones(nh * nw, self.prefix), valid], dim=1)
        L = valid.shape[1]
        return valid.unsqueeze(0).expand(self.batch, -1, -1).reshape(-1, 1, 1, L)

    def partition_rope(self, rope: torch.Tensor) -> torch.Tensor:
        """Rotary table ``(N, C)`` or ``(B, 1, N, C)`` -> ``(B * nW, 1, L, C)``."""
        h, w = self.hw
        N, C = rope.shape[-2:]
        if N != self.num_tokens or rope.ndim not in (2, 4) or (rope.ndim == 4 and rope.shape[1] != 1):
            raise RuntimeError(
                f"window attention can partition a rotary table of shape (N, C) or (B, 1, N, C) "
                f"with N = {self.num_tokens} patch tokens, got {tuple(rope.shape)}")
        if rope.ndim == 4:
            rope = rope[:, 0]
            if rope.shape[0] == 1:
                rope = rope[0]
            elif rope.shape[0] != self.batch:
                raise RuntimeError(f"rotary table for batch {rope.shape[0]}, tokens for batch {self.batch}")
        if rope.ndim == 2:
            windows = self._to_windows(rope.reshape(1, self.frames, h, w, C))
            L = windows.shape[1]
            windows = windows.unsqueeze(0).expand(self.batch, -1, -1, -1).reshape(-1, L, C)
        else:
            windows = self._to_windows(rope.reshape(self.batch, self.frames, h, w, C))
        return windows.unsqueeze(1)


def _run_windowed(encoder: nn.Module, grid: tuple[int, ...], block: nn.Module,
                  x: torch.Tensor, ctx: Any) -> torch.Tensor:
    layout = WindowLayout.build(grid, encoder.window_size, x.shape[0], encoder.num_prefix_tokens)
    if layout.num_windows == 1:
        return encoder._run_block(block, x, ctx)

    def before(module, args, kwargs):
        if len(args) > 1:
            raise RuntimeError(
                f"window attention needs the attention module's extra inputs as keywords, "
                f"got {len(args)} positional ones")
        tokens = args[0] if args else kwargs.pop("x")
        if kwargs.get("attn_mask") is not None or kwargs.get("is_causal"):
            raise RuntimeError("window attention cannot be combined with another attention mask")
        kwargs["attn_mask"] = layout.key_mask(tokens.device)
        if kwargs.get("rope") is not None:
            kwargs["rope"] = layout.partition_rope(kwargs["rope"])
        return (layout.partition(tokens),), kwargs

    def after(module, args, kwargs, output):
        return layout.merge(output)

    attn = block.attn
    pre = attn.register_forward_pre_hook(before, with_kwargs=True, prepend=True)
    post = attn.register_forward_hook(after, with_kwargs=True, prepend=True)
    try:
        return encoder._run_block(block, x, ctx)
    finally:
        pre.remove()
        post.remove()
