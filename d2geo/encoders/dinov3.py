"""DINOv3 ViT encoders on timm's ``Eva`` (rotary position embeddings, 4 registers).

RoPE needs no interpolation: any input whose sides are multiples of 16 works. The
satellite variant (``dinov3_vitl16_sat``, pretrained on SAT-493M) shares the ViT-L/16
architecture; only its weights and input statistics differ (``SAT_PIXEL_STATS``).
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import timm
import torch
from timm.models.eva import checkpoint_filter_fn as _timm_eva_filter

from .adapt import adapt_patch_embed
from .base import GeoEncoder, is_tracing
from .checkpoint import CheckpointError, strip_to_anchor
from .dinov2 import RGB_BANDS
from .registry import register_encoder

__all__ = ["DINOv3Encoder", "LVD_PIXEL_STATS", "SAT_PIXEL_STATS"]

#: Input statistics on a 0-255 scale, as detectron2 configs take them.
LVD_PIXEL_STATS = {"mean": (123.675, 116.28, 103.53), "std": (58.395, 57.12, 57.375)}
SAT_PIXEL_STATS = {"mean": (109.65, 104.805, 75.48), "std": (54.315, 39.78, 36.465)}


class DINOv3Encoder(GeoEncoder):
    """A DINOv3 ViT with the :class:`GeoEncoder` interface.

    Args:
        timm_name: the timm architecture (``vit_large_patch16_dinov3`` ...).
        patch_size: run at another patch size; checkpoint kernels are resampled on load.
        bands: input band names; pretrained weights exist for red, green, blue.
        pixel_stats: the input statistics the weights were trained with (informative).
        **timm_kwargs: architecture overrides passed to ``timm.create_model``.
    """

    pretrained_bands = RGB_BANDS
    pretrained_patch_size = 16

    def __init__(self, *, timm_name: str, patch_size: int = 16, bands: Sequence[str] = RGB_BANDS,
                 img_size: int = 224, drop_path_rate: float = 0.0, patch_resample: str = "pinv",
                 pixel_stats: Mapping[str, Sequence[float]] = LVD_PIXEL_STATS, **timm_kwargs: Any):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.bands = tuple(bands)
        self.patch_resample = patch_resample
        self.pixel_stats = dict(pixel_stats)
        self.vit = timm.create_model(
            timm_name, pretrained=False, num_classes=0, global_pool="", img_size=img_size,
            patch_size=patch_size, in_chans=len(self.bands), drop_path_rate=drop_path_rate,
            dynamic_img_size=True, **timm_kwargs)
        self.embed_dim = self.vit.embed_dim
        self.depth = len(self.vit.blocks)
        self.patch_size = patch_size
        self.num_prefix_tokens = self.vit.num_prefix_tokens

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        tokens = self.vit.patch_embed(x)  # (B, h, w, D)
        grid = tuple(tokens.shape[1:3])
        if is_tracing() and self._traceable_rope():
            tokens, rope = self._pos_embed_traced(tokens)
        else:
            tokens, rope = self.vit._pos_embed(tokens)
        return self.vit.norm_pre(tokens), grid, rope

    def _traceable_rope(self) -> bool:
        vit = self.vit
        rope = getattr(vit, "rope", None)
        return (vit.pos_embed is None and vit.patch_drop is None and rope is not None
                and getattr(rope, "normalize_coords", None) == "separate"
                and getattr(rope, "grid_indexing", None) == "ij")

    def _pos_embed_traced(self, tokens: torch.Tensor):
        """timm's ``Eva._pos_embed`` for DINOv3 (no absolute table, RoPE on a centred grid),
        with the grid built from the traced sizes: timm turns them into Python floats, which
        freezes an exported model to one size."""
        vit, rope = self.vit, self.vit.rope
        B, h, w, D = tokens.shape
        axes = [(torch.arange(0.5, s, dtype=torch.float32) + rope.grid_offset) / s for s in (h, w)]
        coords = 2.0 * torch.stack(torch.meshgrid(axes, indexing="ij"), dim=-1) - 1.0
        sin, cos = rope._get_pos_embed_from_coords(coords.flatten(0, 1))
        prefix = [t.expand(B, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        x = vit.pos_drop(torch.cat(prefix + [tokens.reshape(B, h * w, D)], dim=1))
        return x, torch.cat([sin, cos], dim=-1)

    def _blocks(self):
        return self.vit.blocks

    def _run_block(self, block, x, rope):
        return block(x, rope=rope)

    def _final_norm(self, x):
        return self.vit.norm(x)

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official DINOv3 (``storage_tokens``, ``ls1.gamma``, ``qkv.bias``), timm and d2geo keys."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight")
        # timm converts the official names; resize the patch kernel ourselves afterwards.
        kernel = sd.pop("patch_embed.proj.weight")
        sd = _timm_eva_filter(sd, self.vit)
        try:
            sd["patch_embed.proj.weight"] = adapt_patch_embed(
                kernel, src_bands=self.pretrained_bands, dst_bands=self.bands,
                patch_size=self.patch_size, method=self.patch_resample)
        except ValueError as e:
            raise CheckpointError(
                f"{e}: upstream DINOv3 checkpoints are RGB, so this one was made for other bands; load "
                f"a fine-tuned d2geo model whole (train.init_checkpoint) instead of as encoder weights"
            ) from e
        return {f"vit.{k}": v for k, v in sd.items()}


_VARIANTS = {
    "dinov3_vits16": dict(timm_name="vit_small_patch16_dinov3"),
    "dinov3_vitb16": dict(timm_name="vit_base_patch16_dinov3"),
    "dinov3_vitl16": dict(timm_name="vit_large_patch16_dinov3"),
    "dinov3_vitl16_sat": dict(timm_name="vit_large_patch16_dinov3", pixel_stats=SAT_PIXEL_STATS),
}
for _name, _cfg in _VARIANTS.items():
    register_encoder(_name, DINOv3Encoder, **_cfg)
