"""Scale-MAE ViT-L/16 (Reed et al., 2023; torchgeo's ``ScaleMAE`` / ``ScaleMAELarge16_Weights``).

A timm ``VisionTransformer`` whose position table is not learned: a 2-D sine-cosine table
of the patch positions scaled by the ground sample distance. For the patch in row ``i`` and
column ``j`` the first half of the channels encodes ``j * res`` and the second half
``i * res`` (each half: sines then cosines at frequencies ``10000 ** (-k / (D / 4))``), the
class token gets a zero position, as in torchgeo's
``get_2d_sincos_pos_embed_with_resolution``. ``res`` is our ``gsd`` metadata (metres per
pixel, per sample; torchgeo's ``ScaleMAE(res=...)`` takes one value in metres for the
model). torchgeo builds the table for square inputs only (it takes the side from
``num_patches``); here it is built for any ``h x w`` grid the same way, which is the square
table's top-left ``h x w`` block (the table depends only on row, column and ``res``).

``gsd`` is required: without it the encoder does not guess (a wrong scale shifts every
position). The stored ``pos_embed`` of a checkpoint is not used (upstream recomputes it too)
and is named as left out.

The published weights (fMoW RGB, 224 px) take RGB on a 0-255 scale normalized with the
ImageNet statistics (torchgeo's ``_scale_mae_transforms``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch

from .base import EncoderInputError
from .bands import RGB_BANDS
from .registry import InputStats, PretrainedCfg, register_alias, register_encoder, register_test_variant
from .ssl4eo import TimmViTEncoder

logger = logging.getLogger(__name__)

__all__ = ["ScaleMAEEncoder", "gsd_sincos_table", "SCALE_MAE_PRETRAINED", "SCALE_MAE_STATS"]

#: the input scaling of the published weights: 0-255 RGB, ImageNet mean and std (x 255)
SCALE_MAE_STATS = InputStats("rgb", None, RGB_BANDS, (0.485 * 255, 0.456 * 255, 0.406 * 255),
                             (0.229 * 255, 0.224 * 255, 0.225 * 255), "0-255")


def _sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=pos.dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def gsd_sincos_table(embed_dim: int, grid: Sequence[int], gsd: torch.Tensor) -> torch.Tensor:
    """The Scale-MAE position table ``(B, h*w, embed_dim)`` of a token grid ``(h, w)`` for
    per-sample ground sample distances ``gsd (B,)``, in the dtype of ``gsd``."""
    if embed_dim % 4:
        raise ValueError(f"Scale-MAE's 2-D sine-cosine table needs embed_dim divisible by 4, got {embed_dim}")
    h, w = grid  # ints, or symbolic sizes while exported (int() would fix them)
    rows = torch.arange(h, dtype=gsd.dtype, device=gsd.device)
    cols = torch.arange(w, dtype=gsd.dtype, device=gsd.device)
    col_pos = cols.view(1, 1, w).expand(1, h, w) * gsd.view(-1, 1, 1)  # (B, h, w)
    row_pos = rows.view(1, h, 1).expand(1, h, w) * gsd.view(-1, 1, 1)
    half = embed_dim // 2
    table = torch.cat([_sincos_1d(half, col_pos), _sincos_1d(half, row_pos)], dim=1)
    return table.reshape(gsd.shape[0], h * w, embed_dim)


class ScaleMAEEncoder(TimmViTEncoder):
    """Scale-MAE: a ViT with GSD-scaled sine-cosine positions (see the module docstring).

    Needs ``metadata["gsd"]`` (metres per pixel, one value or one per sample) in every
    forward pass.
    """

    upstream_name = "torchgeo ScaleMAE"
    learned_positions = False

    def __init__(self, *, bands: Sequence[str] = RGB_BANDS, pretrained_bands: Sequence[str] = RGB_BANDS,
                 **kwargs: Any):
        super().__init__(bands=bands, pretrained_bands=pretrained_bands, pos_embed="none", **kwargs)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        gsd = metadata.get("gsd") if metadata is not None else None
        if gsd is None:
            raise EncoderInputError(
                "Scale-MAE scales its position table by the ground sample distance, and the batch has "
                "no 'gsd' metadata; pass metadata={'gsd': metres per pixel} (one value or one per image), "
                "or read the images with d2geo's GeoTIFF reader, which takes it from the file's transform"
            )
        vit = self.vit
        tokens = vit.patch_embed(x)  # (B, h, w, D)
        B, h, w, D = tokens.shape
        gsd = torch.as_tensor(gsd, device=x.device).to(torch.float32).reshape(-1).expand(B)
        pos = gsd_sincos_table(D, (h, w), gsd).to(tokens.dtype)
        cls = vit.cls_token.expand(B, -1, -1)
        tokens = torch.cat([cls, tokens.reshape(B, h * w, D) + pos], dim=1)  # the class position is zero
        tokens = vit.norm_pre(vit.patch_drop(vit.pos_drop(tokens)))
        return tokens, (h, w), None

    def no_weight_decay(self) -> set[str]:
        return {"vit.cls_token"}


#: the published weights (torchgeo 0.8.1's ``ScaleMAELarge16_Weights.FMOW_RGB``)
SCALE_MAE_PRETRAINED = {
    "scale_mae_vitl16": PretrainedCfg(
        source="hf://isaaccorley/vit_large_patch16_224_fmow_rgb_scalemae@9dc7f569424baeb780698352cf6e87638c882123/"
               "vit_large_patch16_224_fmow_rgb_scalemae-98ed9821.pth",
        license="CC-BY-NC-4.0", stats=(SCALE_MAE_STATS,), input_size=224, patch_size=16,
        sha256="386989c9cf349a5045c2ac76f7d0225ae3a54b2a2c158fa87e5df5103e5d9ed9",
        page="https://github.com/bair-climate-initiative/scale-mae",
        notes="Scale-MAE on fMoW RGB; needs gsd metadata",
        pinned_by=("torchgeo 0.8.1's weights table (revision); the sha256 is the Hub's LFS object id (the "
                   "file name's suffix 98ed9821 is not its prefix)")),
}

register_encoder("scale_mae_vitl16", ScaleMAEEncoder, pretrained_cfg=SCALE_MAE_PRETRAINED["scale_mae_vitl16"],
                 embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224)
register_alias("scalemae_vitl16", "scale_mae_vitl16")  # the earlier spelling

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("scale_mae_test", like="scale_mae_vitl16", embed_dim=64, depth=4, num_heads=4, img_size=64)
