"""Bicubic resizes of position tables written as interpolation matrices.

``F.interpolate(mode="bicubic")`` (with or without ``antialias``) as two ``(out, in)``
matrices, one per axis: only tensor operations depend on the output size, so a traced,
``torch.export``-ed or ONNX-exported model follows the input size (and the TorchScript ONNX
exporter, which has no ``_upsample_bicubic2d_aa``, can write it). Outside recording the
matrices of a size are computed once per encoder (:class:`~.tracing.SizeCache`).
"""
from __future__ import annotations

import torch

__all__ = ["bicubic_matrix", "resize_table", "resample_abs_pos_embed"]


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel with parameter ``a`` (zero for ``|x| >= 2``)."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_matrix(out_len, in_len: int, *, offset: float = 0.0, antialias: bool,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """``(out_len, in_len)`` float32 weights of one axis of ``F.interpolate(mode="bicubic",
    align_corners=False)``.

    ``offset > 0``: the resize with ``scale_factor=(out_len + offset) / in_len``;
    ``offset == 0``: the resize to ``out_len``. Without ``antialias`` the four taps of
    ``a = -0.75`` are clamped at the border (torch's ``upsample_bicubic2d``); with it the
    kernel (``a = -0.5``) is widened by the downsampling ratio and its weights are
    normalised over the taps inside the input (torch's ``_upsample_bicubic2d_aa``).
    ``out_len`` may be a traced or symbolic size: only tensor operations depend on it.
    """
    dst = torch.arange(out_len, device=device, dtype=torch.float32)
    src_idx = torch.arange(in_len, device=device, dtype=torch.float32)
    # out_len as a tensor, so nothing branches on it; the scale in float64 then float32, as torch
    n_out = torch.ones_like(dst, dtype=torch.float64).sum()
    scale = (in_len / (n_out + offset)).to(torch.float32)  # input pixels per output pixel
    if antialias:
        center = scale * (dst + 0.5)
        inv = 1.0 / scale.clamp(min=1.0)
        weights = _cubic((src_idx[None, :] - center[:, None] + 0.5) * inv, -0.5)
        return weights / weights.sum(dim=1, keepdim=True)
    src = (dst + 0.5) * scale - 0.5
    base = src.floor()
    t = src - base
    weights = torch.zeros_like(dst)[:, None] * src_idx[None, :]
    for k in (-1, 0, 1, 2):
        idx = (base + k).clamp(0, in_len - 1)
        onehot = (idx[:, None] == src_idx[None, :]).to(torch.float32)
        weights = weights + _cubic(t - k, -0.75)[:, None] * onehot
    return weights


def resize_table(table: torch.Tensor, wh: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
    """A ``(1, Mh*Mw, D)`` table resized by the axis matrices ``wh`` ``(h, Mh)`` and ``ww``
    ``(w, Mw)`` to ``(1, h*w, D)``, computed in float32 and returned in the table's dtype."""
    grid = table.float().reshape(wh.shape[1], ww.shape[1], -1).permute(2, 0, 1)  # (D, Mh, Mw)
    out = torch.matmul(torch.matmul(wh, grid), ww.t())  # (D, h, w)
    return out.permute(1, 2, 0).reshape(1, -1, out.shape[0]).to(table.dtype)


def resample_abs_pos_embed(posemb: torch.Tensor, new_size, old_size, num_prefix_tokens: int = 1) -> torch.Tensor:
    """timm's ``resample_abs_pos_embed`` (bicubic, antialiased, the prefix tokens' entries kept)
    as interpolation matrices: what a recorded model runs instead (the TorchScript ONNX
    exporter has no ``_upsample_bicubic2d_aa``). Equal to timm's within float32 rounding."""
    n = num_prefix_tokens
    wh = bicubic_matrix(new_size[0], int(old_size[0]), antialias=True, device=posemb.device)
    ww = bicubic_matrix(new_size[1], int(old_size[1]), antialias=True, device=posemb.device)
    grid = resize_table(posemb[:, n:], wh, ww)
    return torch.cat([posemb[:, :n], grid], dim=1) if n else grid
