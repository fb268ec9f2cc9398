"""Adapting a pretrained patch embedding to other bands and another patch size."""
from __future__ import annotations

import difflib
import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import resample_patch_embed

logger = logging.getLogger(__name__)

__all__ = ["PATCH_RESAMPLE_METHODS", "select_bands", "resize_patch", "adapt_patch_embed"]

PATCH_RESAMPLE_METHODS = ("pinv", "bicubic")


def select_bands(weight: torch.Tensor, src: Sequence[str], dst: Sequence[str]) -> torch.Tensor:
    """Reorder the input-channel axis (dim 1) of ``weight`` from bands ``src`` to ``dst``.

    Bands of ``dst`` that the pretrained weights know keep their weights; new bands start
    at zero, so a freshly built encoder gives the pretrained features on the kept bands
    and learns the new bands' contribution during fine-tuning.
    """
    src_l = [b.lower() for b in src]
    if [b.lower() for b in dst] == src_l:
        return weight
    out = weight.new_zeros((weight.shape[0], len(dst), *weight.shape[2:]))
    new = []
    for j, band in enumerate(dst):
        if band.lower() in src_l:
            out[:, j] = weight[:, src_l.index(band.lower())]
        else:
            new.append(band)
    if new:
        close = {b: difflib.get_close_matches(b.lower(), src_l, n=1, cutoff=0.75) for b in new}
        typos = {b: m[0] for b, m in close.items() if m and m[0] not in [d.lower() for d in dst]}
        if typos:  # a misspelt pretrained band would silently lose its pretrained weights
            logger.warning("patch embedding: bands %s are not pretrained bands and start at zero; "
                           "did you mean %s? (pretrained bands: %s)", sorted(typos),
                           ", ".join(f"{m!r} for {b!r}" for b, m in sorted(typos.items())), list(src))
        logger.info("patch embedding: new bands %s start at zero (pretrained bands: %s)",
                    new, list(src))
    return out


def resize_patch(weight: torch.Tensor, size: int, method: str = "pinv") -> torch.Tensor:
    """Resample a conv patch-embedding kernel ``(D, C, [t,] p, p)`` to ``size x size``.

    ``pinv`` is FlexiViT's pseudo-inverse resize (timm's ``resample_patch_embed`` with its
    defaults): a patch resized with bicubic antialiased interpolation gives the same
    embedding as the original patch did. ``bicubic`` interpolates the kernel itself, as
    EVA's 14->16 conversion does.
    """
    if weight.shape[-1] == size and weight.shape[-2] == size:
        return weight
    lead = weight.shape[:-2]
    flat = weight.reshape(lead[0], -1, *weight.shape[-2:])
    if method == "pinv":
        out = resample_patch_embed(flat.float(), [size, size])
    elif method == "bicubic":
        out = F.interpolate(flat.float(), size=(size, size), mode="bicubic", align_corners=False)
    else:
        raise ValueError(f"unknown patch resample method {method!r}; use one of {PATCH_RESAMPLE_METHODS}")
    return out.to(weight.dtype).reshape(*lead, size, size)


def adapt_patch_embed(weight: torch.Tensor, *, src_bands: Sequence[str], dst_bands: Sequence[str],
                      patch_size: int, method: str = "pinv") -> torch.Tensor:
    """Band selection, then patch resampling, of a checkpoint's patch-embedding kernel."""
    if weight.shape[1] != len(src_bands):
        raise ValueError(
            f"the checkpoint's patch embedding has {weight.shape[1]} input bands but the "
            f"pretrained band list has {len(src_bands)} ({list(src_bands)})"
        )
    return resize_patch(select_bands(weight, src_bands, dst_bands), patch_size, method)
