"""ViT-Adapter (Chen et al., ICLR 2023) around any d2geo ViT encoder: strides 4-32 for
detectron2 / detrex heads.

A convolutional **spatial prior module** (SPM) reads the image at strides 4, 8, 16 and 32.
The encoder's blocks are split into (by default four) equal groups; before each group an
**injector** adds multi-scale deformable cross-attention from the ViT tokens to the SPM's
stride 8/16/32 features (scaled by a learned ``gamma`` that starts at 0, so the freshly
built adapter leaves the pretrained features untouched), and after it an **extractor**
updates the SPM features by deformable attention to the ViT tokens, plus a convolutional
FFN. The outputs ``res2..res5`` are the SPM features plus the final ViT map resampled to
their size, each normed: detectron2's ResNet names and strides, so ``FPN(bottom_up=adapter,
in_features=["res2", "res3", "res4", "res5"])`` (Mask R-CNN, semantic FPN), ``UperNetHead``
and detrex's ``ChannelMapper`` take them as they take a ResNet's.

Encoders and metadata: the adapter drives the encoder through its ``GeoEncoder`` hooks
(``_embed``, ``_blocks``, window attention, final norm), so prefix tokens (cls, registers)
stay out of the interactions, Clay's metadata reaches its embedding unchanged (hand it over
with ``set_metadata`` as for the plain backbone; the d2geo meta-architectures do), and
Prithvi's time axis is kept: the SPM and the interactions run per time step (frames of a
tubelet averaged for the SPM) and every output level is folded over time with the wrapped
backbone's ``temporal_fold`` / ``temporal_frames``.

Multi-scale deformable attention: one parameterisation (``MSDeformAttn``, Deformable DETR's)
with two kernels: detrex's CUDA op (``detrex.layers.MultiScaleDeformableAttnFunction``) for
CUDA tensors where detrex is installed with its compiled ``_C``, and a pure-torch
``grid_sample`` kernel otherwise (CPU, or no detrex). Both give the same result.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling.backbone import Backbone

from ..encoders import windowing
from .backbone import GeoBackbone
from .pyramid import _fast_norm
from .temporal import TemporalAttentionPool, fold_time

logger = logging.getLogger(__name__)

__all__ = ["ViTAdapter", "MSDeformAttn", "ms_deform_attn_core", "SpatialPriorModule"]


def _detrex_function():
    try:
        from detrex import _C  # noqa: F401  (the compiled op must exist)
        from detrex.layers.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    except Exception:  # detrex missing, or built without its C++/CUDA extension
        return None
    return MultiScaleDeformableAttnFunction


def ms_deform_attn_core(value: torch.Tensor, shapes: Sequence[tuple[int, int]], locations: torch.Tensor,
                        weights: torch.Tensor) -> torch.Tensor:
    """Pure-torch multi-scale deformable attention.

    ``value (B, S, heads, d)`` holds the levels' maps flattened row-major one after the
    other (``shapes`` their ``(H, W)``); ``locations (B, Q, heads, L, P, 2)`` are ``(x, y)``
    in ``[0, 1]`` of each level; ``weights (B, Q, heads, L, P)``. Returns ``(B, Q, heads * d)``.
    Values are sampled bilinearly with zeros outside the map (``align_corners=False``).
    """
    B, _, heads, d = value.shape
    Q, P = locations.shape[1], locations.shape[4]
    out = value.new_zeros(B * heads, d, Q)
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[:, start:start + h * w].permute(0, 2, 3, 1).reshape(B * heads, d, h, w)
        start += h * w
        grid = locations[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(B * heads, Q, P, 2) * 2 - 1
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # Bh, d, Q, P
        wl = weights[:, :, :, lvl].permute(0, 2, 1, 3).reshape(B * heads, 1, Q, P)
        out = out + (sampled * wl).sum(-1)
    return out.reshape(B, heads * d, Q).transpose(1, 2)


class MSDeformAttn(nn.Module):
    """Multi-scale deformable cross-attention (Deformable DETR's parameterisation).

    Args:
        dim: query and input width.
        num_heads, num_levels, num_points: heads, value levels, sampling points per head and level.
        value_ratio: width of the projected values relative to ``dim`` (ViT-Adapter's
            ``deform_ratio``).
    """

    def __init__(self, dim: int, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 value_ratio: float = 1.0):
        super().__init__()
        vdim = int(dim * value_ratio)
        if vdim % num_heads:
            raise ValueError(f"MSDeformAttn: value width {vdim} (dim {dim} x value_ratio {value_ratio}) is not "
                             f"divisible by num_heads={num_heads}; choose deform_heads dividing it")
        self.dim, self.num_heads, self.num_levels, self.num_points = dim, num_heads, num_levels, num_points
        self.value_proj = nn.Linear(dim, vdim)
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.output_proj = nn.Linear(vdim, dim)
        self._reset_parameters()

    def _reset_parameters(self):
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([angles.cos(), angles.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.num_heads, 1, 1, 2).repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, query: torch.Tensor, reference: torch.Tensor, inputs: torch.Tensor,
                shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        """``query (B, Q, dim)``, ``reference (B, Q, 2)`` normalized ``(x, y)``, ``inputs (B, S, dim)``
        the levels of ``shapes`` flattened and concatenated -> ``(B, Q, dim)``."""
        B, Q, _ = query.shape
        if len(shapes) != self.num_levels or sum(h * w for h, w in shapes) != inputs.shape[1]:
            raise ValueError(f"MSDeformAttn got levels {list(shapes)} for {inputs.shape[1]} input tokens; "
                             f"it was built for {self.num_levels} levels")
        H, L, P = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(inputs).view(B, inputs.shape[1], H, -1)
        offsets = self.sampling_offsets(query).view(B, Q, H, L, P, 2)
        weights = self.attention_weights(query).view(B, Q, H, L * P).softmax(-1).view(B, Q, H, L, P)
        size = torch.tensor([[w, h] for h, w in shapes], dtype=query.dtype, device=query.device)
        locations = reference[:, :, None, None, None, :] + offsets / size[None, None, None, :, None, :]
        fn = _detrex_function() if value.is_cuda else None
        if fn is not None:
            shapes_t = torch.as_tensor(shapes, dtype=torch.long, device=value.device)
            starts = torch.cat([shapes_t.new_zeros(1), (shapes_t[:, 0] * shapes_t[:, 1]).cumsum(0)[:-1]])
            out = fn.apply(value.float(), shapes_t, starts, locations.float(), weights.float(), 64).to(value.dtype)
        else:
            out = ms_deform_attn_core(value, shapes, locations, weights)
        return self.output_proj(out)


def _reference_points(shapes: Sequence[tuple[int, int]], device, dtype) -> torch.Tensor:
    """``(sum h*w, 2)`` normalized ``(x, y)`` centres of every cell of every level."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=dtype),
                                torch.arange(w, device=device, dtype=dtype), indexing="ij")
        refs.append(torch.stack([(xs.reshape(-1) + 0.5) / w, (ys.reshape(-1) + 0.5) / h], -1))
    return torch.cat(refs)


def _conv(cin, cout, stride, norm):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), get_norm(_fast_norm(norm), cout),
                         nn.ReLU(True))


class SpatialPriorModule(nn.Module):
    """Convolutional stem: features at strides 4, 8, 16, 32, each projected to ``dim``."""

    def __init__(self, in_chans: int, dim: int, inplanes: int = 64, norm: str = "GN"):
        super().__init__()
        self.stem = nn.Sequential(_conv(in_chans, inplanes, 2, norm), _conv(inplanes, inplanes, 1, norm),
                                  _conv(inplanes, inplanes, 1, norm), nn.MaxPool2d(3, 2, 1))
        self.down = nn.ModuleList([_conv(inplanes, 2 * inplanes, 2, norm), _conv(2 * inplanes, 4 * inplanes, 2, norm),
                                   _conv(4 * inplanes, 4 * inplanes, 2, norm)])
        widths = (inplanes, 2 * inplanes, 4 * inplanes, 4 * inplanes)
        self.proj = nn.ModuleList(nn.Conv2d(c, dim, 1) for c in widths)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for layer in self.down:
            feats.append(layer(feats[-1]))
        return [p(f) for p, f in zip(self.proj, feats)]


class _ConvFFN(nn.Module):
    """Linear -> 3x3 depthwise conv on each level's grid -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dw = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)

    def forward(self, x: torch.Tensor, shapes: Sequence[tuple[int, int]]) -> torch.Tensor:
        x = self.fc1(x)
        B, _, C = x.shape
        parts, start = [], 0
        for h, w in shapes:
            m = x[:, start:start + h * w].transpose(1, 2).reshape(B, C, h, w)
            parts.append(self.dw(m).flatten(2).transpose(1, 2))
            start += h * w
        return self.fc2(F.gelu(torch.cat(parts, 1)))


class _Interaction(nn.Module):
    """Injector (SPM -> ViT) before a group of blocks, extractor (ViT -> SPM) after it."""

    def __init__(self, dim, heads, points, value_ratio, ffn_ratio):
        super().__init__()
        self.inj_query_norm, self.inj_feat_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.injector = MSDeformAttn(dim, heads, 3, points, value_ratio)
        self.gamma = nn.Parameter(torch.zeros(dim))
        self.ext_query_norm, self.ext_feat_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.extractor = MSDeformAttn(dim, heads, 1, points, value_ratio)
        self.ffn_norm = nn.LayerNorm(dim)
        self.ffn = _ConvFFN(dim, max(1, int(dim * ffn_ratio))) if ffn_ratio > 0 else None

    def inject(self, x, c, vit_ref, c_shapes):
        return x + self.gamma * self.injector(self.inj_query_norm(x), vit_ref, self.inj_feat_norm(c), c_shapes)

    def extract(self, c, x, c_ref, vit_shape, c_shapes):
        c = c + self.extractor(self.ext_query_norm(c), c_ref, self.ext_feat_norm(x), [vit_shape])
        if self.ffn is not None:
            c = c + self.ffn(self.ffn_norm(c), c_shapes)
        return c


class ViTAdapter(Backbone):
    """ViT-Adapter over a :class:`GeoBackbone`'s encoder: outputs ``res2..res5`` (strides 4..32).

    Args:
        net: the :class:`GeoBackbone` (any ViT family; its ``layers`` are ignored: the adapter
            uses all blocks; its ``norm`` says whether the encoder's final norm is applied,
            its ``temporal_fold`` / ``temporal_frames`` fold Prithvi's time steps).
        num_interactions: groups of blocks (one injector + extractor each); must not exceed
            the encoder depth.
        deform_heads, deform_points: heads and sampling points of the deformable attentions
            (heads must divide ``embed_dim * value_ratio``).
        value_ratio: value width of the deformable attentions (ViT-Adapter's ``deform_ratio``).
        ffn_ratio: hidden width of the extractors' convolutional FFN (0: no FFN).
        spm_channels: width of the spatial prior module's stem.
        norm: norm of the SPM convs (``"GN"``, ``"BN"``, ``"SyncBN"``, ``"LN"``).
        out_norm: norm of the four outputs (``"LN"`` works for any width; ViT-Adapter uses BN).
        out_channels: if set, a 1x1 conv + ``out_norm`` maps every output (after the temporal
            fold) to this width; None keeps the encoder width (times the time steps for
            ``temporal_fold="concat"``).
        out_features: the outputs to return (default all of ``res2..res5``), e.g.
            ``["res3", "res4", "res5"]`` for detrex's DINO, whose ``ChannelMapper`` takes
            exactly the levels it maps.
    """

    def __init__(self, net: GeoBackbone, *, num_interactions: int = 4, deform_heads: int = 8,
                 deform_points: int = 4, value_ratio: float = 1.0, ffn_ratio: float = 0.25,
                 spm_channels: int = 64, norm: str = "GN", out_norm: str = "LN",
                 out_channels: int | None = None, out_features: Sequence[str] | None = None):
        super().__init__()
        if not isinstance(net, GeoBackbone):
            raise TypeError(f"ViTAdapter wraps a d2geo GeoBackbone, got {type(net).__name__}")
        enc = net.encoder
        if getattr(enc, "window_size", 0):
            logger.info("ViTAdapter: the encoder keeps its window attention settings")
        depth, dim = enc.depth, enc.embed_dim
        modalities = getattr(enc, "modalities", None)
        if modalities is not None and len(modalities) > 1:
            raise ValueError(
                f"ViTAdapter injects its spatial priors into one token grid per image, but {type(enc).__name__} "
                f"runs one grid per modality ({', '.join(modalities)}); use the multi-layer pyramid configs "
                f"(terramind/semantic_fpn_v1_base.py, terramind/upernet_v1_base.py), or an encoder of one modality")
        if not 1 <= num_interactions <= depth:
            raise ValueError(f"num_interactions={num_interactions} must be 1..{depth} (the encoder depth)")
        bounds = [round(depth * (i + 1) / num_interactions) for i in range(num_interactions)]
        self.groups = [(a, b) for a, b in zip([0] + bounds[:-1], bounds)]
        self.net = net
        self.spm = SpatialPriorModule(enc.in_chans, dim, spm_channels, norm)
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        nn.init.normal_(self.level_embed, std=0.02)
        self.interactions = nn.ModuleList(
            _Interaction(dim, deform_heads, deform_points, value_ratio, ffn_ratio) for _ in self.groups)
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)  # res3 -> stride 4, added to the stem's map
        self.out_norms = nn.ModuleList(get_norm(_fast_norm(out_norm), dim) or nn.Identity() for _ in range(4))

        channels = dim
        self.temporal_pools = None
        if net.temporal:
            kept = net.num_time_tokens if net.temporal_frames is None else len(net.temporal_frames)
            if net.temporal_fold == "concat":
                channels = dim * kept
            if net.temporal_fold == "attention":
                self.temporal_pools = nn.ModuleList(TemporalAttentionPool(dim) for _ in range(4))
        self.out_channels = out_channels
        self.out_proj = None
        if out_channels is not None:
            self.out_proj = nn.ModuleList(
                nn.Sequential(nn.Conv2d(channels, out_channels, 1, bias=not out_norm),
                              get_norm(_fast_norm(out_norm), out_channels) or nn.Identity()) for _ in range(4))
            channels = out_channels
        self._out_features = ["res2", "res3", "res4", "res5"]
        self._out_feature_strides = {n: 2 ** (i + 2) for i, n in enumerate(self._out_features)}
        self._out_feature_channels = {n: channels for n in self._out_features}
        if out_features is not None:
            unknown = [n for n in out_features if n not in self._out_features]
            if unknown or not out_features:
                raise ValueError(f"out_features={list(out_features)}: choose from {self._out_features}")
            self._out_features = [n for n in self._out_features if n in out_features]
        self._size_divisibility = math.lcm(32, net.patch_size)

    # -- detectron2 Backbone interface ----------------------------------------------------
    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net, enc = self.net, self.net.encoder
        x = net._check_input(x)
        net._check_metadata_batch(x.shape[0])
        x = enc.cast_input(enc.check_input(x))  # as GeoEncoder.forward_features does
        metadata = enc.check_metadata(net.metadata, x)
        if x.shape[0] == 0:  # an empty batch: empty maps of the right shape
            H, W = x.shape[-2:]
            return {n: x.new_zeros((0, self._out_feature_channels[n], -(-H // s), -(-W // s)))
                    for n, s in self._out_feature_strides.items() if n in self._out_features}
        tokens, grid, ctx = enc._embed(x, metadata)
        B, P = x.shape[0], enc.num_prefix_tokens
        t = grid[0] if len(grid) == 3 else 1
        h, w = grid[-2], grid[-1]
        D = tokens.shape[-1]

        frames = x
        if x.ndim == 5:  # (B, C, T, H, W): one SPM image per time step (tubelet frames averaged)
            C, T = x.shape[1], x.shape[2]
            frames = x.reshape(B, C, t, T // t, *x.shape[-2:]).mean(3).transpose(1, 2).reshape(B * t, C, *x.shape[-2:])
        c1, c2, c3, c4 = self.spm(frames)
        c_shapes = [tuple(m.shape[-2:]) for m in (c2, c3, c4)]
        c = torch.cat([m.flatten(2).transpose(1, 2) + self.level_embed[i] for i, m in enumerate((c2, c3, c4))], 1)
        vit_ref = _reference_points([(h, w)], x.device, c.dtype)[None].expand(B * t, -1, -1)
        c_ref = _reference_points(c_shapes, x.device, c.dtype)[None].expand(B * t, -1, -1)

        blocks = list(enc.get_blocks())
        for inter, (a, b) in zip(self.interactions, self.groups):
            patches = tokens[:, P:].reshape(B * t, h * w, D)
            patches = inter.inject(patches, c, vit_ref, c_shapes)
            tokens = torch.cat([tokens[:, :P], patches.reshape(B, t * h * w, D)], 1)
            for i in range(a, b):
                run = windowing.block_runner(enc, i, grid)
                if enc.grad_checkpointing and torch.is_grad_enabled():
                    tokens = torch.utils.checkpoint.checkpoint(run, blocks[i], tokens, ctx, use_reentrant=False)
                else:
                    tokens = run(blocks[i], tokens, ctx)
            patches = (enc._final_norm(tokens) if net.norm and b == enc.depth else tokens)[:, P:]
            c = inter.extract(c, patches.reshape(B * t, h * w, D), c_ref, (h, w), c_shapes)

        vit = patches.reshape(B * t, h, w, D).permute(0, 3, 1, 2)
        sizes = [(h2 * w2) for h2, w2 in c_shapes]
        c2, c3, c4 = (part.transpose(1, 2).reshape(B * t, D, *shape)
                      for part, shape in zip(c.split(sizes, 1), c_shapes))
        # the stem halves with rounding up, so 2x the stride-8 map covers the stride-4 one
        c1 = c1 + self.up(c2)[..., : c1.shape[-2], : c1.shape[-1]]
        outs = {}
        for i, (name, m) in enumerate(zip(("res2", "res3", "res4", "res5"), (c1, c2, c3, c4))):
            if name not in self._out_features:
                continue
            m = m + F.interpolate(vit, size=m.shape[-2:], mode="bilinear", align_corners=False)
            m = self.out_norms[i](m)
            if net.temporal:
                m = m.reshape(B, t, D, *m.shape[-2:]).transpose(1, 2)
                pool = None if self.temporal_pools is None else self.temporal_pools[i]
                m = fold_time(m, net.temporal_fold, net.temporal_frames, pool)
            if self.out_proj is not None:
                m = self.out_proj[i](m)
            outs[name] = m
        return outs
