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
from .base import GeoEncoder
from .checkpoint import CheckpointError, strip_to_anchor
from .dinov2 import IMAGENET_RGB_STATS, RGB_BANDS
from .registry import InputStats, PretrainedCfg, register_encoder

__all__ = ["DINOv3Encoder", "LVD_PIXEL_STATS", "SAT_PIXEL_STATS", "SAT493M_RGB_STATS"]

#: SAT-493M input statistics on a 0-255 scale (0.430, 0.411, 0.296 / 0.213, 0.156, 0.143 x 255)
SAT493M_RGB_STATS = InputStats("rgb", None, RGB_BANDS, (109.65, 104.805, 75.48), (54.315, 39.78, 36.465),
                               "0-255")
#: Input statistics on a 0-255 scale, as detectron2 configs take them.
LVD_PIXEL_STATS = {"mean": IMAGENET_RGB_STATS.mean, "std": IMAGENET_RGB_STATS.std}
SAT_PIXEL_STATS = {"mean": SAT493M_RGB_STATS.mean, "std": SAT493M_RGB_STATS.std}


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
        tokens, rope = self.vit._pos_embed(tokens)
        return self.vit.norm_pre(tokens), grid, rope

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

def _timm_copy(model: str, stats: InputStats, notes: str = "") -> PretrainedCfg:
    # timm's copies on the Hub need no signed link (Meta's own URLs expire, dinov3#129).
    # The ``_qkvb`` copies keep the official q/v biases (and a k bias of zero).
    return PretrainedCfg(
        source=f"hf://timm/{model}/model.safetensors", license="DINOv3 License",
        stats=(stats,), input_size=256, patch_size=16,
        page=f"https://huggingface.co/timm/{model}",
        notes=notes or "official files (Meta's download form) load too, by path or URL")


_PRETRAINED = {
    "dinov3_vits16": _timm_copy("vit_small_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitb16": _timm_copy("vit_base_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitl16": _timm_copy("vit_large_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitl16_sat": _timm_copy("vit_large_patch16_dinov3_qkvb.sat493m", SAT493M_RGB_STATS),
}
for _name, _cfg in _VARIANTS.items():
    register_encoder(_name, DINOv3Encoder, pretrained_cfg=_PRETRAINED[_name], **_cfg)
