"""SatlasPretrain ResNet-50 / ResNet-152 Sentinel-2 encoders (torchgeo's
``ResNet50_Weights.SENTINEL2_*_SATLAS`` / ``ResNet152_Weights.SENTINEL2_*_SATLAS``): a
hierarchical backbone on timm's ResNet.

torchgeo builds them as ``timm.create_model("resnet50" | "resnet152", in_chans=...)`` and
loads the published state dict (timm's, equally torchvision's, names: ``conv1``, ``bn1``,
``layer1..4``; an ImageNet-style ``fc`` is not loaded and is named as left out). The four
stages ``layer1..layer4`` give maps at strides 4, 8, 16, 32 with 256, 512, 1024, 2048 channels
(``out_strides`` / ``out_channels``); ``layers`` index them (0..3) and
:class:`~d2geo.modeling.GeoBackbone` names them ``res2 .. res5`` for detectron2's ``FPN``, as
for Satlas' Swin (``satlas.py``). A ResNet has no final norm: ``norm`` changes nothing.

Batch norm: ``freeze_bn=True`` (the default, as detectron2's own ResNets fine-tune with
``FrozenBN``) keeps the published statistics and affine parameters fixed (torchvision's
``FrozenBatchNorm2d`` as timm's ``norm_layer``; a fresh build starts with identity norms, no
zeroed last norm per block); the checkpoints' ``num_batches_tracked`` counters are then named
as left out. ``freeze_bn=False`` trains them as plain ``BatchNorm2d``.

The bands, their scaling and the ``_si`` / ``_mi`` (one image / image series) weights are
those of the Swin-V2 files (``SATLAS_STATS`` in ``satlas.py``). Inputs are multiples of 32.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import timm
import torch
import torch.nn as nn
import torch.utils.checkpoint
from torchvision.ops.misc import FrozenBatchNorm2d

from .adapt import adapt_patch_embed
from .bands import BandError
from .base import EncoderInputError, GeoEncoder
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import PretrainedCfg, register_encoder, register_test_variant
from .satlas import SATLAS_LICENSE, SATLAS_STATS, _satlas

logger = logging.getLogger(__name__)

__all__ = ["SatlasResNetEncoder", "SATLAS_RESNET_PRETRAINED"]

_STAGES = ("layer1", "layer2", "layer3", "layer4")


class _FrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's frozen batch norm with the ``device`` / ``dtype`` arguments timm passes."""

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__(num_features, eps=eps)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)


class SatlasResNetEncoder(GeoEncoder):
    """A timm ResNet with the GeoEncoder interface, hierarchical outputs.

    Args:
        timm_name: ``resnet50`` or ``resnet152`` (or any timm ResNet for tests).
        bands / pretrained_bands: input bands, and the band order of the checkpoint's first
            convolution (bands the weights do not know start at zero).
        freeze_bn: batch norms with fixed statistics and affine parameters (see the module).
        drop_path_rate: timm's stochastic depth (0 here: fine-tuning sets it).
        **timm_kwargs: architecture overrides for ``timm.create_model`` (tests).
    """

    num_prefix_tokens = 0
    patch_kernel_key = "conv1.weight"
    #: the stride of the stem (7x7 stride-2 convolution, stride-2 max pool): the first stage's
    patch_size = 4

    def __init__(self, *, timm_name: str = "resnet50", bands: Sequence[str] = SATLAS_STATS["sentinel2_ms"].bands,
                 pretrained_bands: Sequence[str] = SATLAS_STATS["sentinel2_ms"].bands, freeze_bn: bool = True,
                 drop_path_rate: float = 0.0, **timm_kwargs: Any):
        super().__init__()
        if isinstance(bands, str) or isinstance(pretrained_bands, str):
            raise ValueError("bands and pretrained_bands are sequences of band names, not a string")
        self.bands = tuple(bands)
        self.pretrained_bands = tuple(pretrained_bands)
        if freeze_bn:  # frozen norms that start at zero would never leave it: no zeroed last norm
            timm_kwargs = dict(norm_layer=_FrozenBatchNorm2d, zero_init_last=False, **timm_kwargs)
        net = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=len(self.bands),
                                drop_path_rate=drop_path_rate, **timm_kwargs)
        self.conv1, self.bn1, self.act1, self.maxpool = net.conv1, net.bn1, net.act1, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.norm = nn.Identity()  # a ResNet has no final norm
        self.freeze_bn = freeze_bn
        self.depth = 4
        self.out_strides = (4, 8, 16, 32)
        self.out_channels = tuple(int(f["num_chs"]) for f in net.feature_info[1:5])  # layer1..layer4
        self.embed_dim = self.out_channels[-1]

    def _stage(self, i: int) -> nn.Sequential:
        return getattr(self, _STAGES[i])

    # -- structure ---------------------------------------------------------------------
    def get_blocks(self) -> Sequence[nn.Module]:
        """The four stages ``layer1..layer4``: the unit of freezing and lr decay."""
        return [self._stage(i) for i in range(4)]

    def final_norm_module(self) -> nn.Module:
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return set()

    def set_window_attention(self, window_size, global_blocks=()) -> None:
        raise EncoderInputError("a ResNet has no attention; window_size is for the ViT families: leave it at 0")

    # -- forward -----------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, *, layers: int | Sequence[int] = -1, norm: bool = True,
                         metadata: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """``(B, out_channels[i], H / s_i, W / s_i)`` maps of the requested stages ``i`` (0..3),
        in the order requested (``norm``: no final norm to apply)."""
        wanted = self.resolve_layers(layers)
        x = self.cast_input(self.check_input(x))
        self.check_metadata(metadata, x)
        H, W = x.shape[-2:]
        if x.shape[0] == 0:
            return [x.new_zeros((0, self.out_channels[i], H // self.out_strides[i], W // self.out_strides[i]))
                    for i in wanted]
        h = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        taken = {}
        for i in range(4):
            stage = self._stage(i)
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(stage, h, use_reentrant=False)
            else:
                h = stage(h)
            if i in wanted:
                taken[i] = h
            if i == max(wanted):
                break
        return [taken[i] for i in wanted]

    def forward(self, x: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> torch.Tensor:
        return self.forward_features(x, layers=-1, metadata=metadata)[0]

    # -- checkpoints -------------------------------------------------------------------
    def _adapt_checkpoint_patch_embed(self, kernel: torch.Tensor, fix: str) -> torch.Tensor:
        # the stem is a 7x7 stride-2 convolution, not a patch kernel: bands are selected by
        # name, the kernel is never resampled
        if self._kernels_as_saved:
            return kernel
        try:
            return adapt_patch_embed(kernel, src_bands=self.pretrained_bands, dst_bands=self.bands,
                                     patch_size=kernel.shape[-1])
        except BandError:
            raise
        except ValueError as e:
            raise CheckpointError(f"{e}{fix}") from e

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """timm / torchvision ResNet state dicts (torchgeo's Satlas files), under any prefix."""
        sd = strip_to_anchor(state_dict, "conv1.weight", top_level=())
        own = set(self.state_dict())
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith("fc."):
                out.ignore(k, "the ImageNet-style classification layer, not the encoder")
            elif k.endswith("num_batches_tracked") and k not in own:
                out.ignore(k, "a batch-norm step counter; the batch norms are frozen (freeze_bn=True)")
            else:
                out[k] = v
        kernel = out["conv1.weight"]
        if kernel.ndim != 4 or kernel.shape[-1] != 7:
            raise CheckpointError(f"the checkpoint's conv1 has shape {tuple(kernel.shape)}, not a (64, bands, 7, 7) "
                                  f"ResNet stem: is it a Satlas ResNet checkpoint?")
        out["conv1.weight"] = self._adapt_checkpoint_patch_embed(
            kernel, "; pass pretrained_bands=[...] naming the checkpoint's bands in order (Satlas multispectral "
                    "Sentinel-2 weights take B04, B03, B02, B05, B06, B07, B08, B11, B12; RGB weights B04, B03, B02)")
        return out


#: the published weights (torchgeo 0.8.1's ResNet50_Weights / ResNet152_Weights ``SENTINEL2_*_SATLAS``)
SATLAS_RESNET_PRETRAINED = {
    f"satlas_{arch}_sentinel2_{images}_{kind}": (f"sentinel2_{arch}_{images}_{kind}-{suffix}.pth", arch,
                                                 f"sentinel2_{kind}")
    for arch, images, kind, suffix in (
        ("resnet50", "si", "ms", "1f454cc6"), ("resnet50", "mi", "ms", "da5413d2"),
        ("resnet50", "si", "rgb", "45fc6972"), ("resnet50", "mi", "rgb", "e79bb7fe"),
        ("resnet152", "si", "ms", "4500c6cb"), ("resnet152", "mi", "ms", "fd35b4bb"),
        ("resnet152", "si", "rgb", "f4d24c3c"), ("resnet152", "mi", "rgb", "67563ac5"))
}

for _name, (_file, _arch, _stats) in SATLAS_RESNET_PRETRAINED.items():
    _bands = SATLAS_STATS[_stats].bands
    _pre = PretrainedCfg(source=_satlas(_file), license=SATLAS_LICENSE, stats=(SATLAS_STATS[_stats],),
                         input_size=256, patch_size=4, page="https://github.com/allenai/satlaspretrain_models",
                         notes="SatlasPretrain ResNet backbone; _mi: trained on image series (see satlas.py)",
                         pinned_by="torchgeo 0.8.1's weights table (revision; the full sha256 is not public)")
    register_encoder(_name, SatlasResNetEncoder, pretrained_cfg=_pre, timm_name=_arch, bands=_bands,
                     pretrained_bands=_bands)

# tiny, random weights, for d2geo's tests only (timm's own test_resnet); hidden from list_encoders()
register_test_variant("satlas_resnet_test", like="satlas_resnet50_sentinel2_si_ms", timm_name="test_resnet")
