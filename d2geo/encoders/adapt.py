"""Adapting a pretrained patch embedding to other bands and another patch size."""
from __future__ import annotations

import difflib
import json
import logging
from typing import Sequence

import torch
import torch.nn.functional as F
from timm.layers import resample_patch_embed

from .bands import BandError, describe_bands, expand_bands, match_bands

logger = logging.getLogger(__name__)

__all__ = ["PATCH_RESAMPLE_METHODS", "select_bands", "resize_patch", "adapt_patch_embed", "BAND_RECORD",
           "encode_bands", "decode_bands", "map_kernel_bands"]

PATCH_RESAMPLE_METHODS = ("pinv", "bicubic")


def select_bands(weight: torch.Tensor, src: Sequence[str], dst: Sequence[str], *,
                 src_sensor: str | None = None, dst_sensor: str | None = None) -> torch.Tensor:
    """Reorder the input-channel axis (dim 1) of ``weight`` from bands ``src`` to ``dst``.

    Bands are matched through the band vocabulary (``d2geo.encoders.bands.match_bands``):
    ``B8A``, ``nir08`` and ``nir_narrow`` are one band, ``"rgb"`` is red, green, blue.
    Bands of ``dst`` that the pretrained weights know keep their weights; new bands start
    at zero (logged by name), so a freshly built encoder gives the pretrained features on
    the kept bands and learns the new bands' contribution during fine-tuning. A ``dst``
    that keeps none of the pretrained bands, or names a band ambiguously, is a
    :class:`~d2geo.encoders.bands.BandError` listing the bands the weights know.
    """
    src, dst = expand_bands(src), expand_bands(dst)
    if [b.lower() for b in dst] == [b.lower() for b in src]:
        return weight
    known = describe_bands(src, src_sensor)
    try:
        idx = match_bands(dst, src, sensor=dst_sensor, available_sensor=src_sensor, where="the pretrained weights")
    except BandError as e:
        raise BandError(f"{e}. The pretrained weights know: {known}") from None
    if all(i is None for i in idx):
        raise BandError(
            f"none of the bands {list(dst)} is one the pretrained weights know, so the whole "
            f"pretrained patch embedding would be dropped and the encoder would ignore its input. "
            f"The weights know: {known}. Name your bands with these names or their sensor ids "
            f"(e.g. B02, B8A), or build the encoder without pretrained weights"
        )
    out = weight.new_zeros((weight.shape[0], len(dst), *weight.shape[2:]))
    new = []
    for j, i in enumerate(idx):
        if i is None:
            new.append(dst[j])
        else:
            out[:, j] = weight[:, i]
    if new:
        src_l = [b.lower() for b in src]
        dst_l = [b.lower() for b in dst]
        close = {b: difflib.get_close_matches(b.lower(), src_l, n=1, cutoff=0.75) for b in new}
        typos = {b: m[0] for b, m in close.items()
                 if m and src_l.index(m[0]) not in idx and m[0] not in dst_l}
        if typos:  # a misspelt pretrained band would silently lose its pretrained weights
            logger.warning("patch embedding: bands %s are not pretrained bands and start at zero; "
                           "did you mean %s? (pretrained bands: %s)", sorted(typos),
                           ", ".join(f"{m!r} for {b!r}" for b, m in sorted(typos.items())), list(src))
        logger.info("patch embedding: new bands %s start at zero; kept pretrained bands %s",
                    new, {dst[j]: src[i] for j, i in enumerate(idx) if i is not None})
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
                      patch_size: int, method: str = "pinv", src_sensor: str | None = None,
                      dst_sensor: str | None = None) -> torch.Tensor:
    """Band selection, then patch resampling, of a checkpoint's patch-embedding kernel
    (``src_sensor`` / ``dst_sensor``: the sensors whose ids the band lists use, if any)."""
    src_bands, dst_bands = expand_bands(src_bands), expand_bands(dst_bands)
    if weight.shape[1] != len(src_bands):
        raise ValueError(
            f"the checkpoint's patch embedding has {weight.shape[1]} input bands but the "
            f"pretrained band list has {len(src_bands)} ({list(src_bands)})"
        )
    selected = select_bands(weight, src_bands, dst_bands, src_sensor=src_sensor, dst_sensor=dst_sensor)
    return resize_patch(selected, patch_size, method)


# -- the band record of d2geo-written checkpoints ------------------------------------------
#: the state-dict entry (beside an encoder's own tensors) that names the bands of its patch
#: kernels: UTF-8 JSON of the band list in a zero-padded uint8 tensor of a fixed length, so
#: that detectron2's shape check keeps it whatever the bands are
BAND_RECORD = "d2geo_bands"
_RECORD_BLOCK = 1024


def encode_bands(bands: Sequence[str]) -> torch.Tensor:
    """The band record of ``bands`` (see :data:`BAND_RECORD`)."""
    raw = json.dumps([str(b) for b in bands]).encode("utf-8")
    n = -(-len(raw) // _RECORD_BLOCK) * _RECORD_BLOCK
    out = torch.zeros(n, dtype=torch.uint8)
    out[:len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    return out


def decode_bands(record: torch.Tensor) -> tuple[str, ...]:
    """Band names from a band record; a record that does not read is a ``ValueError``."""
    raw = bytes(record.detach().cpu().to(torch.uint8).reshape(-1).tolist()).rstrip(b"\0")
    try:
        bands = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"the checkpoint's {BAND_RECORD!r} entry is not a band record ({e})") from None
    if not isinstance(bands, list) or not all(isinstance(b, str) for b in bands):
        raise ValueError(f"the checkpoint's {BAND_RECORD!r} entry is not a list of band names: {bands!r}")
    return tuple(bands)


def map_kernel_bands(weight: torch.Tensor, saved: Sequence[str], wanted: Sequence[str], *,
                     sensor: str | None = None) -> torch.Tensor:
    """A patch kernel whose input-channel axis (dim 1; a flattened ``(D, C * k)`` linear kernel
    is channel-major) holds the bands ``saved``, for the bands ``wanted``, by name: the
    same bands in another order are reordered, bands the kernel does not have start at zero
    (see :func:`select_bands`)."""
    if [b.lower() for b in saved] == [b.lower() for b in wanted]:
        return weight
    if weight.shape[1] != len(saved):
        if weight.ndim != 2 or weight.shape[1] % len(saved):
            raise ValueError(f"a patch kernel of shape {tuple(weight.shape)} does not hold the {len(saved)} "
                             f"bands its checkpoint names ({list(saved)})")
        k = weight.shape[1] // len(saved)
        out = select_bands(weight.reshape(weight.shape[0], len(saved), k), saved, wanted,
                           src_sensor=sensor, dst_sensor=sensor)
        return out.reshape(weight.shape[0], len(wanted) * k)
    return select_bands(weight, saved, wanted, src_sensor=sensor, dst_sensor=sensor)
