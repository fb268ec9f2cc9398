"""SSL4EO-S12 ViT-S/16 encoders: 13-band Sentinel-2 L1C, self-supervised with MAE, DINO,
MoCo-v3 and FG-MAE (Wang et al., 2022; torchgeo's ``ViTSmall16_Weights.SENTINEL2_ALL_*``).

The network is timm's ``vit_small_patch16_224`` with 13 input bands, which is what
torchgeo builds (``timm.create_model('vit_small_patch16_224', in_chans=13)`` followed by
``load_state_dict(strict=False)``): a class token, a learned position table of the 14 x 14
grid of 224 px, LayerNorm (eps 1e-6) blocks and a final norm. Other input sizes resample
the table with timm's ``resample_abs_pos_embed`` (bicubic, antialiased), as timm's
``dynamic_img_size=True`` model does at run time.

Published checkpoints are in timm's layout, some without the final norm (torchgeo tolerates
``norm.weight`` / ``norm.bias`` missing and keeps the fresh LayerNorm, weight 1 and bias 0):
a checkpoint without them gets exactly that here too, said in the log. Classification heads,
MAE decoders and mask tokens are left out by name.

Pretrained bands are Sentinel-2 L1C in the product order (``B01`` .. ``B08``, ``B8A``,
``B09``, ``B10``, ``B11``, ``B12``), top-of-atmosphere reflectance x 10 000; the weights were
trained on DN / 10 000 (torchgeo's ``_zhu_xlab_transforms``), so the configs use mean 0 and
std 10 000 for every band.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from .base import GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant
from .resize import resample_abs_pos_embed

logger = logging.getLogger(__name__)

__all__ = ["TimmViTEncoder", "SSL4EOEncoder", "S2_L1C_BANDS", "SSL4EO_PRETRAINED", "SSL4EO_STATS"]

#: Sentinel-2 L1C bands in product order: the input order of every SSL4EO-S12 13-band checkpoint
S2_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: the input scaling the weights were trained with: DN / 10 000 (mean 0, std 10 000 per band)
SSL4EO_STATS = InputStats("ssl4eo-s12-l1c", "sentinel-2-l1c", S2_L1C_BANDS, (0.0,) * 13, (10000.0,) * 13, "dn")

_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token")


class TimmViTEncoder(GeoEncoder):
    """A timm ``VisionTransformer`` (class token, learned absolute positions) as a GeoEncoder.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture.
        patch_size: the patch size to run at; a checkpoint trained with another kernel size
            is resampled on load (``patch_resample``).
        img_size: the image size of the position table (224 for the published weights);
            other input sizes resample it at run time as timm does.
        bands: names of the input bands, in order; pretrained weights are selected from
            ``pretrained_bands`` by name (bands the weights do not know start at zero).
        pretrained_bands: the band order of the checkpoint's patch embedding.
        drop_path_rate: stochastic depth for fine-tuning.
    """

    num_prefix_tokens = 1
    #: the model's name in timm / torchgeo, for messages
    upstream_name = "timm VisionTransformer"
    patch_kernel_key = "vit.patch_embed.proj.weight"
    #: whether the position table is a learned parameter (else computed per forward and a
    #: checkpoint's stored table is left out)
    learned_positions = True

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 patch_size: int = 16, img_size: int = 224, bands: Sequence[str] = S2_L1C_BANDS,
                 pretrained_bands: Sequence[str] = S2_L1C_BANDS, drop_path_rate: float = 0.0,
                 patch_resample: str = "pinv", **vit_kwargs: Any):
        super().__init__()
        if isinstance(bands, str) or isinstance(pretrained_bands, str):
            raise ValueError("bands and pretrained_bands are sequences of band names, not a string")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.img_size = img_size
        self.bands = tuple(bands)
        self.pretrained_bands = tuple(pretrained_bands)
        self.patch_resample = patch_resample
        self.vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=len(self.bands), embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            dynamic_img_size=True, num_classes=0, global_pool="", drop_path_rate=drop_path_rate,
            **vit_kwargs,
        )

    # -- GeoEncoder hooks --------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        vit = self.vit
        x = vit.patch_embed(x)  # (B, h, w, D): timm's dynamic-size layout
        h, w = x.shape[1:3]
        x = self._pos_embed_recorded(x) if is_tracing() and vit.pos_embed is not None else vit._pos_embed(x)
        x = vit.norm_pre(vit.patch_drop(x))
        return x, (h, w), None

    def _pos_embed_recorded(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``_pos_embed`` (dynamic size) with the antialiased resize as interpolation
        matrices (:mod:`.resize`), so that the TorchScript ONNX exporter can write it."""
        vit = self.vit
        B, H, W, C = x.shape
        prefix = [t.expand(B, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        pos = resample_abs_pos_embed(vit.pos_embed, (H, W), vit.patch_embed.grid_size,
                                     num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens)
        x = x.reshape(B, H * W, C)
        if vit.no_embed_class:
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        return vit.pos_drop(x)

    # structure (the encoder contract)
    def get_blocks(self) -> Sequence[nn.Module]:
        return self.vit.blocks

    def final_norm_module(self) -> nn.Module:
        return self.vit.norm

    def no_weight_decay(self) -> set[str]:
        return {"vit.pos_embed", "vit.cls_token"}

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """timm-layout checkpoints, under any prefix (``module.base_encoder.``, ``teacher.``,
        ``backbone.``, d2geo's ``vit.``)."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith(("head.", "fc_norm.", "decoder", "mask_token")) or k == "mask_token":
                out.ignore(k, "a classification head or MAE decoder part, not the encoder")
                continue
            if k == "pos_embed" and not self.learned_positions:
                out.ignore(k, "the stored position table; this model computes its table for every input")
                continue
            out[f"vit.{k}"] = self._convert(k, v)
        for name, fill in (("weight", 1.0), ("bias", 0.0)):
            key = f"vit.norm.{name}"
            if key not in out:
                logger.info("%s: the checkpoint has no norm.%s; the final norm keeps its fresh value %g, "
                            "as torchgeo's strict=False load leaves it", type(self).__name__, name, fill)
                out[key] = torch.full_like(self.vit.norm.weight, fill)
        return out

    def _convert(self, key: str, value: torch.Tensor) -> torch.Tensor:
        if key == "patch_embed.proj.weight":
            return self._adapt_kernel(value)
        if key == "pos_embed":
            return self._check_pos_table(value)
        return value

    def _adapt_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        return self._adapt_checkpoint_patch_embed(
            kernel, "; pass pretrained_bands=[...] naming the checkpoint's bands in order")

    def _check_pos_table(self, pos: torch.Tensor) -> torch.Tensor:
        n = pos.shape[1] - self.num_prefix_tokens if pos.ndim == 3 else -1
        M = math.isqrt(max(n, 0))
        if M * M != n:
            raise CheckpointError(f"the checkpoint's pos_embed {tuple(pos.shape)} is not a class "
                                  f"position plus a square grid of positions")
        if M * self.patch_size != self.img_size:
            raise CheckpointError(
                f"the checkpoint's position table is a {M}x{M} grid ({M * self.patch_size} px at patch "
                f"{self.patch_size}) but the encoder was built with img_size={self.img_size}; build it "
                f"with img_size={M * self.patch_size} (other input sizes are resampled at run time)"
            )
        return pos


class SSL4EOEncoder(TimmViTEncoder):
    """SSL4EO-S12 ViT-S/16 on Sentinel-2 L1C (see the module docstring)."""

    upstream_name = "torchgeo vit_small_patch16_224"


def _hf(repo: str, rev: str, filename: str) -> str:
    return f"hf://{repo}@{rev}/{filename}"


def _entry(source: str, method: str, page: str, sha256: str | None = None) -> PretrainedCfg:
    by = ("torchgeo 0.8.1's weights table (revision); the sha256 is the Hub's LFS object id, whose first 8 hex digits end the file name (torchgeo's convention)" if sha256 else
          "torchgeo 0.8.1's weights table (revision; no public sha256, the file name has no digest)")
    return PretrainedCfg(source=source, license="CC-BY-4.0", stats=(SSL4EO_STATS,), input_size=224, patch_size=16,
                         page=page, notes=f"{method} on SSL4EO-S12 (Sentinel-2 L1C, 13 bands)", sha256=sha256,
                         pinned_by=by)


_SSL4EO = "https://github.com/zhu-xlab/SSL4EO-S12"
#: the published weights (torchgeo 0.8.1's ``ViTSmall16_Weights.SENTINEL2_ALL_*``); the file
#: names end in the first 8 hex digits of their sha256 (torchgeo's convention)
SSL4EO_PRETRAINED = {
    "ssl4eo_s12_vits16_mae": _entry(
        _hf("wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b", "B13_vits16_mae_ep99_enc.pth"),
        "MAE", _SSL4EO),
    "ssl4eo_s12_vits16_dino": _entry(
        _hf("torchgeo/vit_small_patch16_224_sentinel2_all_dino", "5b41dd418a79de47ac9f5be3e035405a83818a62",
            "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth"), "DINO", _SSL4EO,
        "36bcc1273227252faf98e1d9f32c35166d3612d30dc0c15812c29bed6da9a7d5"),
    "ssl4eo_s12_vits16_moco": _entry(
        _hf("torchgeo/vit_small_patch16_224_sentinel2_all_moco", "1cb683f6c14739634cdfaaceb076529adf898c74",
            "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"), "MoCo-v3", _SSL4EO,
        "67c9032df0449ae37f93c51696bcae0c6dc3485103deb44b4669e9897b90409c"),
    "ssl4eo_s12_vits16_fgmae": _entry(
        _hf("wangyi111/FGMAE", "24dd3077d7a99ecd454eaec7adb83d045d7fa122", "B13_vits16_fgmae_ep99_enc.pth"),
        "FG-MAE", "https://github.com/zhu-xlab/FGMAE"),
}

_VITS16 = dict(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224)
#: the larger Sentinel-2 MAE / FG-MAE encoders (torchgeo's ``ViTBase16_Weights``,
#: ``ViTLarge16_Weights``, ``ViTHuge14_Weights`` ``.SENTINEL2_ALL_MAE`` / ``_FGMAE``: timm's
#: ``vit_{base,large}_patch16_224`` / ``vit_huge_patch14_224`` with 13 input bands)
_LARGER = {
    "vitb16": (dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224), "ep99", "ep99"),
    "vitl16": (dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224), "ep99", "ep99"),
    "vith14": (dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14, img_size=224), "ep199", "ep399"),
}
_ARCH = {name: _VITS16 for name in SSL4EO_PRETRAINED}
for _arch, (_dims, _mae_ep, _fgmae_ep) in _LARGER.items():
    SSL4EO_PRETRAINED[f"ssl4eo_s12_{_arch}_mae"] = _entry(
        _hf("wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b", f"B13_{_arch}_mae_{_mae_ep}_enc.pth"),
        "MAE", _SSL4EO)
    SSL4EO_PRETRAINED[f"ssl4eo_s12_{_arch}_fgmae"] = _entry(
        _hf("wangyi111/FGMAE", "24dd3077d7a99ecd454eaec7adb83d045d7fa122", f"B13_{_arch}_fgmae_{_fgmae_ep}_enc.pth"),
        "FG-MAE", "https://github.com/zhu-xlab/FGMAE")
    _ARCH[f"ssl4eo_s12_{_arch}_mae"] = _ARCH[f"ssl4eo_s12_{_arch}_fgmae"] = _dims
for _name, _pre in SSL4EO_PRETRAINED.items():
    register_encoder(_name, SSL4EOEncoder, pretrained_cfg=_pre, **_ARCH[_name])

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("ssl4eo_test", like="ssl4eo_s12_vits16_dino", embed_dim=64, depth=4, num_heads=4, img_size=64)
