"""Feature pyramids over a single-stride :class:`~d2geo.modeling.GeoBackbone`.

* :class:`SimpleFeaturePyramid`: detectron2's ViTDet pyramid (all levels from one tap),
  with a working padding constraint and a default ``in_feature``.
* :class:`MultiLayerPyramid`: four taps from increasing depths resampled to strides
  ``patch/4, patch/2, patch, 2*patch`` by default (ViT-Adapter / terratorch
  ``LearnedInterpolateToPyramidal`` style), each followed by SimpleFeaturePyramid's
  1x1 lateral and 3x3 output convs.

Both give ``p<log2 stride>`` maps (``p2..p5``, plus ``p6`` with ``LastLevelMaxPool``)
for detectron2's RPN, StandardROIHeads and SemSegFPNHead. Level names need
power-of-two strides, hence a power-of-two patch size (run DINOv2 at ``patch_size=16``;
its weights are resampled on load).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.layers.batch_norm import LayerNorm as _D2LayerNorm
from detectron2.modeling.backbone import Backbone
from detectron2.modeling.backbone.fpn import _assert_strides_are_log2_contiguous
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid as _D2SimpleFeaturePyramid

__all__ = ["SimpleFeaturePyramid", "MultiLayerPyramid", "ChannelLayerNorm", "fuse_channel_layer_norms"]


def _check_strides(net_stride: int, scale_factors: Sequence[float], what: str) -> list[int]:
    strides = []
    for s in scale_factors:
        stride = net_stride / s
        if stride != int(stride) or int(stride) < 1 or (int(stride) & (int(stride) - 1)):
            raise ValueError(
                f"{what}: backbone stride {net_stride} with scale factors {tuple(scale_factors)} gives "
                f"stride {stride:g}, but pyramid levels need power-of-two strides; use an encoder with a "
                "power-of-two patch size (e.g. encoder_kwargs=dict(patch_size=16) for DINOv2, whose "
                "14-pixel weights are resampled on load)"
            )
        strides.append(int(stride))
    return strides


def _single_input(net: Backbone, in_feature: str | None, what: str) -> str:
    names = list(net.output_shape())
    if in_feature is None:
        return names[-1]
    if in_feature not in names:
        raise ValueError(f"{what}: in_feature={in_feature!r} is not an output of the backbone ({names})")
    return in_feature


class ChannelLayerNorm(_D2LayerNorm):
    """detectron2's ``"LN"`` (a LayerNorm over the channels of ``(N, C, H, W)`` maps) on
    torch's fused ``layer_norm`` kernel.

    Same parameters, state-dict keys and result (to float rounding) as
    :class:`detectron2.layers.batch_norm.LayerNorm`, which builds the norm from eight
    element-wise ops and their backward; this runs one kernel each way plus two layout
    copies, 1.2-2x faster forward + backward on CPU (most at small maps, e.g. RoI
    features). The pyramids use it for ``norm="LN"``; heads can too
    (``conv_norm=ChannelLayerNorm``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"ChannelLayerNorm takes (N, C, H, W) maps, got shape {tuple(x.shape)}")
        y = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2).contiguous()


def fuse_channel_layer_norms(module: nn.Module) -> int:
    """Switch every detectron2 channel ``LayerNorm`` inside ``module`` (e.g. the ``"LN"``
    of ViTDet's box and mask heads) to :class:`ChannelLayerNorm`, in place; parameters
    and state dict are untouched. Returns how many were switched."""
    count = 0
    for m in module.modules():
        if type(m) is _D2LayerNorm:
            m.__class__ = ChannelLayerNorm
            count += 1
    return count


def _fast_norm(norm):
    """``"LN"`` -> :class:`ChannelLayerNorm`; any other norm spec unchanged."""
    return ChannelLayerNorm if norm == "LN" else norm


def _norm_or_identity(norm: str, channels: int) -> nn.Module:
    layer = get_norm(_fast_norm(norm), channels)
    return nn.Identity() if layer is None else layer


def _lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b) if a and b else max(a, b)


class SimpleFeaturePyramid(_D2SimpleFeaturePyramid):
    """detectron2's :class:`~detectron2.modeling.SimpleFeaturePyramid` with working padding.

    detectron2's class stores its divisibility under a misspelt key
    (``"size_divisiblity"``) and leaves ``size_divisibility`` at 0, so
    ``ImageList.from_tensors`` never pads and inputs that are not multiples of the
    coarsest stride break the pyramid. Here both are set to the least common multiple
    of the coarsest pyramid stride and the backbone's own divisibility (the patch size).

    ``in_feature`` defaults to the backbone's last output.
    """

    def __init__(self, net: Backbone, in_feature: str | None = None, out_channels: int = 256,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), top_block: nn.Module | None = None,
                 norm: str = "LN", square_pad: int = 0):
        in_feature = _single_input(net, in_feature, "SimpleFeaturePyramid")
        _check_strides(net.output_shape()[in_feature].stride, scale_factors, "SimpleFeaturePyramid")
        super().__init__(net, in_feature, out_channels, scale_factors, top_block=top_block,
                         norm=_fast_norm(norm), square_pad=square_pad)
        self._size_divisibility = _lcm(self._size_divisibility, int(getattr(net, "size_divisibility", 0)))

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}


class MultiLayerPyramid(Backbone):
    """Pyramid from four backbone taps, shallowest at the finest level.

    Args:
        net: a backbone with (at least) four same-stride outputs, e.g.
            ``GeoBackbone(..., layers=(3, 5, 7, 11))``.
        out_channels: channels of every pyramid level.
        in_features: the four outputs of ``net`` to use, shallow to deep; defaults to
            its last four.
        scale_factors: resampling of the four taps, from ``{4, 2, 1, 0.5, 0.25}``; the
            default turns stride 16 into 4/8/16/32, ``(2, 1, 0.5, 0.25)`` does the same for
            stride 8 (Clay's patch size).
        top_block: optional extra levels on top (detectron2's ``LastLevelMaxPool`` for p6).
        norm: norm of the resampling and of the lateral / output convs (``"LN"``, ``"BN"``,
            ``"GN"``, ``""``).
        square_pad: if > 0, inputs are padded to this square size.
    """

    def __init__(self, net: Backbone, out_channels: int = 256, *, in_features: Sequence[str] | None = None,
                 scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5), top_block: nn.Module | None = None,
                 norm: str = "LN", square_pad: int = 0):
        super().__init__()
        self.scale_factors = tuple(float(s) for s in scale_factors)
        if len(self.scale_factors) != 4 or any(s not in (4.0, 2.0, 1.0, 0.5, 0.25) for s in self.scale_factors):
            raise ValueError(f"scale_factors={tuple(scale_factors)}: give four values from 4, 2, 1, 0.5, 0.25")
        if list(self.scale_factors) != sorted(self.scale_factors, reverse=True):
            raise ValueError(f"scale_factors={tuple(scale_factors)} must decrease (shallow taps make the fine levels)")
        shapes = net.output_shape()
        names = list(shapes)
        if in_features is None:
            if len(names) < 4:
                raise ValueError(
                    f"MultiLayerPyramid needs four backbone outputs but the backbone has {len(names)} "
                    f"({names}); build it with four layers, e.g. layers=(3, 5, 7, 11), or use "
                    "SimpleFeaturePyramid for a single tap"
                )
            in_features = names[-4:]
        in_features = list(in_features)
        if len(in_features) != 4 or any(n not in shapes for n in in_features):
            raise ValueError(f"in_features={in_features} must be four outputs of the backbone ({names})")
        net_strides = {shapes[n].stride for n in in_features}
        if len(net_strides) != 1:
            raise ValueError(
                f"MultiLayerPyramid needs same-stride inputs, got strides {sorted(net_strides)}: the backbone "
                "is already hierarchical (e.g. Satlas Swin); feed its res2..res5 outputs to detectron2's FPN "
                "(see configs/satlas/) instead of a ViT pyramid")
        net_stride = net_strides.pop()
        strides = _check_strides(net_stride, self.scale_factors, "MultiLayerPyramid")
        _assert_strides_are_log2_contiguous(strides)

        use_bias = norm == ""
        fast_norm = _fast_norm(norm)
        self.stages = []
        for name, scale, stride in zip(in_features, self.scale_factors, strides):
            dim = shapes[name].channels
            if scale == 4.0:
                ops = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2),
                       _norm_or_identity(norm, dim // 2), nn.GELU(),
                       nn.ConvTranspose2d(dim // 2, dim // 4, kernel_size=2, stride=2)]
                dim //= 4
            elif scale == 2.0:
                ops = [nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2)]
                dim //= 2
            elif scale == 1.0:
                ops = []
            else:
                k = int(round(1 / scale))
                ops = [nn.MaxPool2d(kernel_size=k, stride=k)]
            ops += [
                Conv2d(dim, out_channels, kernel_size=1, bias=use_bias, norm=get_norm(fast_norm, out_channels)),
                Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=use_bias,
                       norm=get_norm(fast_norm, out_channels)),
            ]
            stage = nn.Sequential(*ops)
            self.add_module(f"level_{int(math.log2(stride))}", stage)
            self.stages.append(stage)

        self.net = net
        self.in_features = in_features
        self.top_block = top_block
        self._out_feature_strides = {f"p{int(math.log2(s))}": s for s in strides}
        if top_block is not None:
            last = int(math.log2(strides[-1]))
            for s in range(last + 1, last + 1 + top_block.num_levels):
                self._out_feature_strides[f"p{s}"] = 2 ** s
        self._out_features = list(self._out_feature_strides)
        self._out_feature_channels = {n: out_channels for n in self._out_features}
        self._size_divisibility = _lcm(strides[-1], int(getattr(net, "size_divisibility", 0)))
        self._square_pad = square_pad

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility, "square_size": self._square_pad}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
                for n in self._out_features}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.net(x)
        results = [stage(feats[name]) for stage, name in zip(self.stages, self.in_features)]
        if self.top_block is not None:
            src = self.top_block.in_feature
            top_in = feats[src] if src in feats else results[self._out_features.index(src)]
            results.extend(self.top_block(top_in))
        return dict(zip(self._out_features, results))
