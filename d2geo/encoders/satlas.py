"""SatlasPretrain Swin-V2 encoders (Bastani et al., 2023; torchgeo's ``Swin_V2_B_Weights`` /
``Swin_V2_T_Weights``, terratorch's ``satlas_swin_*``): a hierarchical backbone.

The network is torchvision's ``swin_v2_b`` / ``swin_v2_t`` with the first convolution
replaced by one of the weights' band count, as torchgeo builds it; its checkpoints are
torchvision state dicts (``features.0.0.weight`` ...; the ImageNet-style ``head.*`` is not
loaded and is named as left out).

Unlike the ViT families this encoder is *hierarchical*: its four stages give maps at strides
4, 8, 16 and 32 with ``C, 2C, 4C, 8C`` channels (``out_strides`` / ``out_channels``), the
outputs of torchvision's ``features[1]``, ``[3]``, ``[5]``, ``[7]`` that Satlas's own FPN and
terratorch's ``out_indices=(1, 3, 5, 7)`` take. ``layers`` index stages (0..3), and
:class:`~d2geo.modeling.GeoBackbone` names them ``res2 .. res5``, so detectron2's ``FPN``
takes them directly, without a pyramid adapter. ``norm=True`` applies torchvision's final
LayerNorm to the last stage (the only stage it belongs to, as in torchvision's forward);
the other stages, and all with ``norm=False`` (Satlas's own use), are the raw stage outputs.

The ``_mi`` ("multi-image") weights come from Satlas models that ran this backbone on each
image of a short series and max-pooled the stage maps over the images before their heads;
the backbone itself is the same, so here, as in torchgeo, an ``_mi`` encoder takes one image
per forward (pool the maps of several images yourself if you want Satlas' multi-image use).

Inputs must be multiples of 32 (the coarsest stride), so that every stage's map is exactly
``H / stride`` and an FPN's top-down sums line up; the detectron2 backbone pads to that.

Export: torchvision's window attention decides in Python, from the map size, whether a
shifted block shifts along an axis (not when the padded map is one window wide), which
``torch.export`` / ``torch.jit.trace`` would freeze at the recorded size. While the model is
recorded (:func:`~d2geo.encoders.tracing.is_tracing`) the attention therefore runs
:func:`window_attention_v2`, the same computation with that decision, the cyclic shift and
the shift mask made of tensor operations, and one extra window of padding per axis (so that
no window count is 1 at the recorded size, which ``torch.export`` would specialise on): the
same features at every size, some extra work (docs/benchmarks-deployment.md). Eagerly it
runs torchvision's own code.
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from torchvision.models.swin_transformer import (PatchMergingV2, ShiftedWindowAttentionV2, SwinTransformer,
                                                 SwinTransformerBlockV2)

from .bands import SENSORS
from .base import EncoderInputError, GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["SatlasSwinEncoder", "SATLAS_PRETRAINED", "SATLAS_STATS", "window_attention_v2"]

_S2_MS = ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12")
_S2_RGB = ("B04", "B03", "B02")
_AERIAL = ("red", "green", "blue")
_S1 = ("VH", "VV")
#: Landsat 8/9 Level-1, all eleven OLI/TIRS bands in order (torchgeo's ``B01``..``B11``)
_LANDSAT = tuple(b.id for b in SENSORS["landsat-c2-l1"])
#: the input scaling of each band set (torchgeo's transforms): divide by 255 (8-bit RGB
#: previews, Sentinel-1 and aerial images as Satlas stored them; the Sentinel-2 sets' B04, B03,
#: B02 are ESA's 8-bit TCI file, not reflectance x 10 000: Satlas's Normalization.md), 8160
#: (Sentinel-2 L1C reflectance x 10 000 bands beyond RGB); Landsat Level-1 DNs: (x - 4000) / 16320
SATLAS_STATS = {
    "sentinel2_ms": InputStats("satlas-sentinel2", "sentinel-2-l1c", _S2_MS, (0.0,) * 9,
                               (255.0,) * 3 + (8160.0,) * 6, "dn"),
    "sentinel2_rgb": InputStats("satlas-sentinel2-rgb", "sentinel-2-l1c", _S2_RGB, (0.0,) * 3, (255.0,) * 3, "0-255"),
    "aerial": InputStats("satlas-aerial", None, _AERIAL, (0.0,) * 3, (255.0,) * 3, "0-255"),
    "sentinel1": InputStats("satlas-sentinel1", "sentinel-1", _S1, (0.0,) * 2, (255.0,) * 2, "0-255"),
    "landsat": InputStats("satlas-landsat", "landsat-c2-l1", _LANDSAT, (4000.0,) * 11, (16320.0,) * 11, "dn"),
}


def _axis(size: int, window: int, shift: int, device: torch.device):
    """One axis of a map of ``size`` tokens, split into ``n`` windows (the last one padded)
    plus one more window of padding: ``n``, the gather that performs torchvision's cyclic
    shift within the ``n`` windows (the extra one stays in place), its inverse, and the
    shift-mask region of every position (torchvision's slices ``[0, -window)``,
    ``[-window, -shift)``, ``[-shift, end)`` numbered 0, 1, 2; 3 for the extra window).
    torchvision does not shift an axis that is a single window: the shift is a tensor,
    zero then, so nothing branches on the size."""
    n = (size + window - 1) // window
    pos = torch.arange((n + 1) * window, device=device)
    end = pos[-1] + 1 - window  # n * window, as a tensor
    shift_t = (end > window).long() * shift
    inside = pos < end
    fwd = torch.where(inside, (pos + shift_t) % end, pos)
    back = torch.where(inside, (pos - shift_t) % end, pos)
    labels = (pos >= end - window).long() + (pos >= end - shift_t).long() + (~inside).long()
    return n, fwd, back, labels


def window_attention_v2(attn: ShiftedWindowAttentionV2, x: torch.Tensor) -> torch.Tensor:
    """torchvision's ``ShiftedWindowAttentionV2.forward`` on ``(B, H, W, C)`` with nothing
    decided in Python from ``H`` and ``W``: the per-axis shift is a tensor (zero where the
    padded axis is one window, as torchvision's branch has it), the cyclic shift an index
    gather, the mask built from region labels. Every axis gets one extra window of padding
    (so that no window count is ever 1, which ``torch.export`` would specialise on); the
    windows do not mix, and it is cropped with the rest of the padding. Same operations on
    the same values otherwise, so equal to torchvision's result at every size."""
    B, H, W, C = x.shape
    wh, ww = attn.window_size
    shifted = any(s > 0 for s in attn.shift_size)  # a non-shifted block never shifts or masks
    nh, fwd_h, back_h, lab_h = _axis(H, wh, attn.shift_size[0], x.device)
    nw, fwd_w, back_w, lab_w = _axis(W, ww, attn.shift_size[1], x.device)
    nh, nw = nh + 1, nw + 1
    pad_h, pad_w = nh * wh, nw * ww
    x = F.pad(x, (0, 0, 0, pad_w - W, 0, pad_h - H))
    if shifted:
        x = x.index_select(1, fwd_h).index_select(2, fwd_w)
    num_windows = nh * nw
    x = x.view(B, nh, wh, nw, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B * num_windows, wh * ww, C)
    heads = attn.num_heads
    qkv_bias = attn.qkv.bias
    if qkv_bias is not None:  # Swin-V2 has no key bias
        qkv_bias = qkv_bias.clone()
        length = qkv_bias.numel() // 3
        qkv_bias[length:2 * length].zero_()
    qkv = F.linear(x, attn.qkv.weight, qkv_bias)
    qkv = qkv.reshape(x.size(0), x.size(1), 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    scores = scores * torch.clamp(attn.logit_scale, max=math.log(100.0)).exp()
    scores = scores + attn.get_relative_position_bias()
    if shifted:
        region = (lab_h[:, None] * 4 + lab_w[None, :]).view(nh, wh, nw, ww)
        region = region.permute(0, 2, 1, 3).reshape(num_windows, wh * ww)
        differ = (region.unsqueeze(1) - region.unsqueeze(2)) != 0
        mask = torch.zeros(differ.shape, dtype=x.dtype, device=x.device).masked_fill(differ, -100.0)
        scores = scores.view(x.size(0) // num_windows, num_windows, heads, x.size(1), x.size(1))
        scores = (scores + mask.unsqueeze(1).unsqueeze(0)).view(-1, heads, x.size(1), x.size(1))
    scores = F.softmax(scores, dim=-1)
    scores = F.dropout(scores, p=attn.attention_dropout, training=attn.training)
    x = scores.matmul(v).transpose(1, 2).reshape(x.size(0), x.size(1), C)
    x = F.linear(x, attn.proj.weight, attn.proj.bias)
    x = F.dropout(x, p=attn.dropout, training=attn.training)
    x = x.view(B, nh, nw, wh, ww, C).permute(0, 1, 3, 2, 4, 5).reshape(B, pad_h, pad_w, C)
    if shifted:
        x = x.index_select(1, back_h).index_select(2, back_w)
    return x[:, :H, :W, :].contiguous()


class _WindowAttentionV2(ShiftedWindowAttentionV2):
    """torchvision's Swin-V2 window attention (same parameters and state-dict keys) that runs
    :func:`window_attention_v2` while the model is recorded."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_tracing():
            return window_attention_v2(self, x)
        return super().forward(x)


class SatlasSwinEncoder(GeoEncoder):
    """A Swin-V2 (torchvision) with the GeoEncoder interface, hierarchical outputs.

    Args:
        embed_dim: channels of the first stage (128 for Swin-V2-B, 96 for -T).
        depths, num_heads: blocks and heads per stage.
        window_size: attention window in tokens (8 for the published weights).
        bands / pretrained_bands: input bands, and the band order of the checkpoint's first
            convolution (bands the weights do not know start at zero).
        sensor / pretrained_sensor: the sensors whose band ids ``bands`` / ``pretrained_bands``
            use (``"landsat-c2-l1"`` for the Landsat weights, whose ``B10``/``B11`` are thermal,
            not Sentinel-2's cirrus/SWIR); ``None`` reads names as the band vocabulary does
            without a sensor.
        drop_path_rate: torchvision's ``stochastic_depth_prob`` (0 here: fine-tuning sets it).
    """

    num_prefix_tokens = 0
    patch_kernel_key = "features.0.0.weight"
    patch_size = 4

    def __init__(self, *, embed_dim: int, depths: Sequence[int], num_heads: Sequence[int],
                 window_size: int = 8, bands: Sequence[str] = _S2_MS, pretrained_bands: Sequence[str] = _S2_MS,
                 drop_path_rate: float = 0.0, patch_resample: str = "pinv", sensor: str | None = None,
                 pretrained_sensor: str | None = None):
        super().__init__()
        if isinstance(bands, str) or isinstance(pretrained_bands, str):
            raise ValueError("bands and pretrained_bands are sequences of band names, not a string")
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {tuple(depths)} and num_heads {tuple(num_heads)} differ in length")
        self.bands = tuple(bands)
        self.pretrained_bands = tuple(pretrained_bands)
        self.sensor, self.pretrained_sensor = sensor, pretrained_sensor
        self.patch_resample = patch_resample
        self.embed_dim = embed_dim
        self.depth = len(depths)
        self.out_strides = tuple(4 * 2**i for i in range(self.depth))
        self.out_channels = tuple(embed_dim * 2**i for i in range(self.depth))
        swin = SwinTransformer(
            patch_size=[4, 4], embed_dim=embed_dim, depths=list(depths), num_heads=list(num_heads),
            window_size=[window_size, window_size], stochastic_depth_prob=drop_path_rate,
            block=partial(SwinTransformerBlockV2, attn_layer=_WindowAttentionV2), downsample_layer=PatchMergingV2,
        )
        # torchgeo / Satlas: the first convolution takes the weights' bands
        swin.features[0][0] = nn.Conv2d(len(self.bands), embed_dim, kernel_size=4, stride=4)
        self.features = swin.features
        self.norm = swin.norm
        # stage i: the patch merging before it (none for stage 0) and its blocks
        self._stages = [nn.ModuleList([self.features[1]])] + [
            nn.ModuleList([self.features[2 * i], self.features[2 * i + 1]]) for i in range(1, self.depth)
        ]

    # -- structure ---------------------------------------------------------------------
    def get_blocks(self) -> Sequence[nn.Module]:
        """The four stages (patch merging + Swin blocks): the unit of freezing and lr decay."""
        return self._stages

    def final_norm_module(self) -> nn.Module:
        return self.norm

    def no_weight_decay(self) -> set[str]:
        # Swin-V2's attention temperatures and continuous position-bias MLPs (as timm's
        # swin v2 exempts them)
        return {n for n, p in self.named_parameters()
                if n.endswith("logit_scale") or (".cpb_mlp." in n and p.ndim > 1)}

    def set_window_attention(self, window_size, global_blocks=()) -> None:
        raise EncoderInputError(
            "Swin already attends within shifted windows (window_size=8 tokens); window_size is for the "
            "ViT families: leave it at 0 for Satlas")

    # -- forward -----------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, *, layers: int | Sequence[int] = -1, norm: bool = True,
                         metadata: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """``(B, C_i, H / s_i, W / s_i)`` maps of the requested stages ``i`` (0..3), in the order
        requested; ``norm=True`` applies the final norm to the last stage's map."""
        wanted = self.resolve_layers(layers)
        x = self.cast_input(self.check_input(x))
        self.check_metadata(metadata, x)
        H, W = x.shape[-2:]
        if x.shape[0] == 0:
            return [x.new_zeros((0, self.out_channels[i], H // self.out_strides[i], W // self.out_strides[i]))
                    for i in wanted]
        h = self.features[0](x)  # (B, H/4, W/4, C): channels-last, as torchvision keeps them
        taken = {}
        for i, stage in enumerate(self._stages):
            for module in stage:
                if self.grad_checkpointing and torch.is_grad_enabled():
                    h = torch.utils.checkpoint.checkpoint(module, h, use_reentrant=False)
                else:
                    h = module(h)
            if i in wanted:
                taken[i] = self.norm(h) if norm and i == self.depth - 1 else h
            if i == max(wanted):
                break
        return [taken[i].permute(0, 3, 1, 2).contiguous() for i in wanted]

    def forward(self, x: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> torch.Tensor:
        return self.forward_features(x, layers=-1, norm=True, metadata=metadata)[0]

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """torchvision Swin-V2 state dicts (torchgeo's Satlas files), under any prefix."""
        sd = strip_to_anchor(state_dict, "features.0.0.weight", top_level=())
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith("head."):
                out.ignore(k, "the ImageNet-style classification head, not the encoder")
                continue
            out[k] = v
        kernel = out.get("features.0.0.weight")
        if kernel.ndim != 4 or kernel.shape[-1] != 4:
            raise CheckpointError(f"the checkpoint's first convolution has shape {tuple(kernel.shape)}, not "
                                  f"a (C, bands, 4, 4) Swin patch kernel: is it a Satlas Swin checkpoint?")
        out["features.0.0.weight"] = self._adapt_checkpoint_patch_embed(
            kernel, "; pass pretrained_bands=[...] naming the checkpoint's bands in order (Satlas "
                    "multispectral Sentinel-2 weights take B04, B03, B02, B05, B06, B07, B08, B11, B12; "
                    "Landsat weights B1..B11 with pretrained_sensor='landsat-c2-l1')")
        return out


def _satlas(file: str) -> str:
    return f"hf://torchgeo/satlas@081d6607431bf36bdb59c223777cbb267131b8f2/{file}"


_SWIN_B = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), window_size=8)
_SWIN_T = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=8)
_PAGE = "https://github.com/allenai/satlaspretrain_models"
#: the published weights (torchgeo 0.8.1's Swin_V2_B/T_Weights), ``si`` one image, ``mi`` several
SATLAS_PRETRAINED = {
    "satlas_swinb_sentinel2_si_ms": ("sentinel2_swinb_si_ms-fe22a12c.pth", _SWIN_B, "sentinel2_ms"),
    "satlas_swinb_sentinel2_mi_ms": ("sentinel2_swinb_mi_ms-39c86721.pth", _SWIN_B, "sentinel2_ms"),
    "satlas_swinb_sentinel2_si_rgb": ("sentinel2_swinb_si_rgb-156a98d5.pth", _SWIN_B, "sentinel2_rgb"),
    "satlas_swinb_sentinel2_mi_rgb": ("sentinel2_swinb_mi_rgb-4efa210c.pth", _SWIN_B, "sentinel2_rgb"),
    "satlas_swinb_aerial_si": ("aerial_swinb_si-e4169eb1.pth", _SWIN_B, "aerial"),
    "satlas_swinb_aerial_mi": ("aerial_swinb_mi-326d69e1.pth", _SWIN_B, "aerial"),
    "satlas_swinb_sentinel1_si": ("sentinel1_swinb_si-3981c153.pth", _SWIN_B, "sentinel1"),
    "satlas_swinb_sentinel1_mi": ("sentinel1_swinb_mi-f6c43d97.pth", _SWIN_B, "sentinel1"),
    "satlas_swinb_landsat_si": ("landsat_swinb_si-4af978f6.pth", _SWIN_B, "landsat"),
    "satlas_swinb_landsat_mi": ("landsat_swinb_mi-6b4a1cda.pth", _SWIN_B, "landsat"),
    "satlas_swint_sentinel2_si_ms": ("sentinel2_swint_si_ms-bc68e396.pth", _SWIN_T, "sentinel2_ms"),
    "satlas_swint_sentinel2_mi_ms": ("sentinel2_swint_mi_ms-d8c659e3.pth", _SWIN_T, "sentinel2_ms"),
    "satlas_swint_sentinel2_si_rgb": ("sentinel2_swint_si_rgb-0c1a96e0.pth", _SWIN_T, "sentinel2_rgb"),
    "satlas_swint_sentinel2_mi_rgb": ("sentinel2_swint_mi_rgb-424d91f4.pth", _SWIN_T, "sentinel2_rgb"),
}
#: the license of the weights (torchgeo/satlas and allenai/satlas-pretrain on the Hugging Face Hub)
SATLAS_LICENSE = "Apache-2.0"

for _name, (_file, _arch, _stats) in SATLAS_PRETRAINED.items():
    _bands = SATLAS_STATS[_stats].bands
    _pre = PretrainedCfg(source=_satlas(_file), license=SATLAS_LICENSE, stats=(SATLAS_STATS[_stats],),
                         input_size=256, patch_size=4, page=_PAGE,
                         notes="SatlasPretrain Swin-V2 backbone; _mi: trained on image series (see the module)",
                         pinned_by="torchgeo 0.8.1's weights table (revision; the full sha256 is not public)")
    # Landsat ids are read as Landsat's (B10/B11 thermal); the other sets need no sensor
    _sensor = SATLAS_STATS[_stats].sensor if _stats == "landsat" else None
    register_encoder(_name, SatlasSwinEncoder, pretrained_cfg=_pre, bands=_bands, pretrained_bands=_bands,
                     sensor=_sensor, pretrained_sensor=_sensor, **_arch)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("satlas_test", like="satlas_swinb_sentinel2_si_ms", embed_dim=32, depths=(1, 1, 1, 1),
                      num_heads=(2, 2, 4, 4))  # Swin: stages 32..256 wide
