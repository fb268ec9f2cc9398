"""Segmentation heads for d2geo pyramids, registered in detectron2's ``SEM_SEG_HEADS_REGISTRY``.

:class:`UperNetHead` is the UperNet decoder (Xiao et al., 2018) that terratorch and
PANGAEA use by default for geospatial segmentation: a pyramid pooling module (PPM) on the
coarsest level, a top-down FPN over the finer ones, all levels fused at the finest stride,
and a 1x1 classifier. It has :class:`~detectron2.modeling.SemSegFPNHead`'s interface
(``forward(features, targets) -> (logits or None, losses)``), so
:class:`~d2geo.modeling.GeoSemanticSegmentor` (or detectron2's ``SemanticSegmentor``) uses
it unchanged, from a LazyConfig (``configs/common/models/upernet_geo.py``) or from a yacs
config (``MODEL.SEM_SEG_HEAD.NAME: UperNetHead``, ``CONVS_DIM`` channels).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.config import configurable
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY

from ..encoders.tracing import is_tracing
from .pyramid import _fast_norm

__all__ = ["UperNetHead"]


def _conv_norm_relu(cin: int, cout: int, k: int, norm: str) -> Conv2d:
    """conv (no bias under a norm) -> norm -> ReLU, c2_msra init as detectron2's heads."""
    import fvcore.nn.weight_init as weight_init

    conv = Conv2d(cin, cout, kernel_size=k, padding=k // 2, bias=not norm,
                  norm=get_norm(_fast_norm(norm), cout), activation=F.relu)
    weight_init.c2_msra_fill(conv)
    return conv


@SEM_SEG_HEADS_REGISTRY.register()
class UperNetHead(nn.Module):
    """UperNet decoder + per-pixel classifier over pyramid levels of increasing stride.

    Args:
        input_shape: the pyramid levels to use (name -> ShapeSpec), at least two; their
            strides must increase by factors of two (e.g. ``p2..p5``).
        num_classes: output classes.
        channels: width of every decoder conv (terratorch / mmseg default 512; 256 here).
        pool_scales: output sizes of the PPM's adaptive average pools on the coarsest level.
        norm: norm after every conv (``"GN"``, ``"BN"``, ``"SyncBN"``, ``"LN"``, ``""``).
            GN by default: the PPM's 1x1 pool makes BN useless at small per-GPU batches.
        dropout: dropout before the classifier (mmseg's ``dropout_ratio``).
        loss_weight: factor of the cross-entropy loss.
        ignore_value: label ignored by the loss.
        align_corners: of the bilinear resampling inside the decoder.
    """

    @configurable
    def __init__(self, input_shape: Mapping[str, ShapeSpec], *, num_classes: int, channels: int = 256,
                 pool_scales: Sequence[int] = (1, 2, 3, 6), norm: str = "GN", dropout: float = 0.1,
                 loss_weight: float = 1.0, ignore_value: int = -1, align_corners: bool = False):
        super().__init__()
        if len(input_shape) < 2:
            raise ValueError(f"UperNetHead needs at least two pyramid levels, got {list(input_shape)}; "
                             "use a pyramid backbone (MultiLayerPyramid / SimpleFeaturePyramid)")
        shapes = sorted(input_shape.items(), key=lambda kv: kv[1].stride)
        self.in_features = [k for k, _ in shapes]
        strides = [v.stride for _, v in shapes]
        if any(b != 2 * a for a, b in zip(strides, strides[1:])):
            raise ValueError(f"UperNetHead: the levels' strides {strides} ({self.in_features}) must double "
                             "from level to level")
        if not pool_scales or any(int(s) < 1 for s in pool_scales):
            raise ValueError(f"pool_scales={tuple(pool_scales)} must be positive pool sizes, e.g. (1, 2, 3, 6)")
        in_channels = [v.channels for _, v in shapes]
        self.in_channels = in_channels
        self.common_stride = strides[0]
        self.num_classes, self.loss_weight, self.ignore_value = num_classes, loss_weight, ignore_value
        self.align_corners = align_corners
        self.pool_scales = tuple(int(s) for s in pool_scales)

        top = in_channels[-1]
        self.ppm = nn.ModuleList(_conv_norm_relu(top, channels, 1, norm) for _ in self.pool_scales)
        self.ppm_bottleneck = _conv_norm_relu(top + len(self.pool_scales) * channels, channels, 3, norm)
        self.lateral_convs = nn.ModuleList(_conv_norm_relu(c, channels, 1, norm) for c in in_channels[:-1])
        self.fpn_convs = nn.ModuleList(_conv_norm_relu(channels, channels, 3, norm) for _ in in_channels[:-1])
        self.fpn_bottleneck = _conv_norm_relu(len(in_channels) * channels, channels, 3, norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.predictor = Conv2d(channels, num_classes, kernel_size=1)
        nn.init.normal_(self.predictor.weight, 0, 0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape: Mapping[str, ShapeSpec]):
        head = cfg.MODEL.SEM_SEG_HEAD
        return {
            "input_shape": {k: v for k, v in input_shape.items() if k in head.IN_FEATURES},
            "num_classes": head.NUM_CLASSES,
            "channels": head.CONVS_DIM,
            "pool_scales": tuple(head.get("POOL_SCALES", (1, 2, 3, 6))),
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "ignore_value": head.IGNORE_VALUE,
        }

    def _resize(self, x: torch.Tensor, size) -> torch.Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def _check_channels(self, feats: Sequence[torch.Tensor]) -> None:
        wrong = [f"{k}: {f.shape[1]} (head built for {c})"
                 for k, f, c in zip(self.in_features, feats, self.in_channels) if f.shape[1] != c]
        if wrong:
            raise ValueError(f"UperNetHead: the backbone's levels have other channel counts than its "
                             f"input_shape says ({'; '.join(wrong)}); set model.sem_seg_head.input_shape"
                             "[<level>].channels to the backbone's output_shape() widths (e.g. a Swin-V2-T "
                             "encoder's stages are 96, 192, 384, 768 wide, Swin-V2-B's 128 .. 1024)")

    def decode(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Fused decoder features ``(B, channels, H / s, W / s)`` at the finest stride ``s``."""
        missing = [k for k in self.in_features if k not in features]
        if missing:
            raise KeyError(f"UperNetHead expects pyramid levels {self.in_features} but {missing} are "
                           f"missing from the backbone's outputs ({list(features)})")
        feats = [features[k] for k in self.in_features]
        if not is_tracing():  # channel counts are fixed: a traced graph keeps the checked ones
            self._check_channels(feats)
        top = feats[-1]
        pooled = [top] + [self._resize(conv(F.adaptive_avg_pool2d(top, s)), top.shape[-2:])
                          for conv, s in zip(self.ppm, self.pool_scales)]
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats[:-1])]
        laterals.append(self.ppm_bottleneck(torch.cat(pooled, dim=1)))
        for i in range(len(laterals) - 1, 0, -1):  # top-down
            laterals[i - 1] = laterals[i - 1] + self._resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals[:-1])] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [self._resize(o, size) for o in outs[1:]]
        return self.fpn_bottleneck(torch.cat(outs, dim=1))

    def layers(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Class logits at the finest stride."""
        return self.predictor(self.dropout(self.decode(features)))

    def forward(self, features, targets=None):
        """Training: ``(None, {"loss_sem_seg": ...})``; inference: ``(logits at input scale, {})``."""
        x = self.layers(features)
        if self.training:
            if targets is None:
                raise ValueError("UperNetHead in training mode needs the targets (sem_seg label maps)")
            return None, self.losses(x, targets)
        return F.interpolate(x, scale_factor=self.common_stride, mode="bilinear", align_corners=False), {}

    def losses(self, predictions: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        predictions = F.interpolate(predictions.float(), scale_factor=self.common_stride, mode="bilinear",
                                    align_corners=False)
        loss = F.cross_entropy(predictions, targets, reduction="mean", ignore_index=self.ignore_value)
        return {"loss_sem_seg": loss * self.loss_weight}
