"""DINOv3 ConvNeXt encoders (tiny, small, base, large, distilled from the 7B on LVD-1689M): a
hierarchical backbone on timm's ConvNeXt.

The official module (facebookresearch/dinov3 ``dinov3/models/convnext.py``) is the original
ConvNeXt: a 4x4 stride-4 stem with a channels-first LayerNorm, four stages of blocks
(7x7 depthwise conv, LayerNorm, Linear-GELU-Linear, layer scale ``gamma``), a LayerNorm and
2x2 stride-2 convolution between stages, and a final LayerNorm that its
``get_intermediate_layers(norm=True)`` applies to the last stage only (its ``norms`` are
identities for stages 0..2). timm's ``convnext_{tiny,small,base,large}`` with ``num_classes=0``
are the same computation (tests/encoders/test_dinov3_convnext.py checks it against the
official code); the final norm is timm's ``head.norm``, kept here as ``norm``.

Like Satlas' Swin (``satlas.py``) the four stages give maps at strides 4, 8, 16, 32 with
``dims`` channels (``out_strides`` / ``out_channels``); ``layers`` index stages (0..3) and
:class:`~d2geo.modeling.GeoBackbone` names them ``res2 .. res5`` for detectron2's ``FPN``.
``norm=True`` applies the final norm to the last stage, as the official code does. Inputs are
multiples of 32.

Checkpoint layouts read: Meta's ``.pth`` files (``downsample_layers.*``, ``stages.i.j.dwconv``,
``norm.*`` and its duplicate ``norms.3.*``), the Hugging Face transformers files of
``facebook/dinov3-convnext-*-pretrain-lvd1689m`` (``stages.i.downsample_layers.*``,
``stages.i.layers.j.depthwise_conv``, ``layer_norm.*``; ``model.stages`` as transformers 5
names them), timm's (``stem.*``, ``stages.i.blocks.j.conv_dw``, ``head.norm.*``) and d2geo's.
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import timm
import torch
import torch.nn as nn
import torch.utils.checkpoint

from .bands import RGB_BANDS, expand_bands
from .base import EncoderInputError, GeoEncoder
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .dinov2 import IMAGENET_RGB_STATS
from .registry import PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["DINOv3ConvNeXtEncoder", "DINOV3_CONVNEXT_SIZES"]

#: the official ``convnext_sizes`` (depths, dims) as timm's architectures
DINOV3_CONVNEXT_SIZES = {
    "tiny": dict(timm_name="convnext_tiny", depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(timm_name="convnext_small", depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(timm_name="convnext_base", depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
    "large": dict(timm_name="convnext_large", depths=(3, 3, 27, 3), dims=(192, 384, 768, 1536)),
}
_ANCHORS = {"d2geo/timm": "stem.0.weight", "official": "downsample_layers.0.0.weight",
            "transformers": "stages.0.downsample_layers.0.weight"}
#: official / transformers names -> timm's (applied in order, to names without the prefix)
_OFFICIAL = ((r"^downsample_layers\.0\.", "stem."), (r"^downsample_layers\.(\d+)\.", r"stages.\1.downsample."),
             (r"^stages\.(\d+)\.(\d+)\.", r"stages.\1.blocks.\2."), (r"\.dwconv\.", ".conv_dw."),
             (r"\.pwconv(\d)\.", r".mlp.fc\1."))
_TRANSFORMERS = ((r"^stages\.0\.downsample_layers\.", "stem."),
                 (r"^stages\.(\d+)\.downsample_layers\.", r"stages.\1.downsample."),
                 (r"^stages\.(\d+)\.layers\.", r"stages.\1.blocks."), (r"\.depthwise_conv\.", ".conv_dw."),
                 (r"\.layer_norm\.", ".norm."), (r"\.pointwise_conv(\d)\.", r".mlp.fc\1."),
                 (r"^layer_norm\.", "norm."))


class DINOv3ConvNeXtEncoder(GeoEncoder):
    """A DINOv3 ConvNeXt (timm's ConvNeXt) with the GeoEncoder interface, hierarchical outputs.

    Args:
        timm_name: timm's architecture (``convnext_tiny`` ...).
        depths, dims: blocks and channels per stage (the official ``convnext_sizes``).
        bands: input bands; the published weights are RGB (bands they do not know start at zero).
        drop_path_rate: stochastic depth (0 here: fine-tuning sets it).
    """

    num_prefix_tokens = 0
    patch_kernel_key = "stem.0.weight"
    patch_size = 4
    pretrained_bands = RGB_BANDS

    def __init__(self, *, timm_name: str = "convnext_tiny", depths: Sequence[int] = (3, 3, 9, 3),
                 dims: Sequence[int] = (96, 192, 384, 768), bands: Sequence[str] = RGB_BANDS,
                 drop_path_rate: float = 0.0, patch_resample: str = "pinv"):
        super().__init__()
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"a ConvNeXt has four stages: got depths {tuple(depths)} and dims {tuple(dims)}")
        self.bands = expand_bands(bands)
        self.patch_resample = patch_resample
        net = timm.create_model(timm_name, pretrained=False, num_classes=0, in_chans=len(self.bands),
                                depths=tuple(depths), dims=tuple(dims), drop_path_rate=drop_path_rate,
                                ls_init_value=1e-6)
        self.stem, self.stages, self.norm = net.stem, net.stages, net.head.norm
        self.embed_dim = dims[-1]
        self.depth = 4
        self.out_strides = (4, 8, 16, 32)
        self.out_channels = tuple(dims)

    # -- structure ---------------------------------------------------------------------
    def get_blocks(self) -> Sequence[nn.Module]:
        """The four stages (downsampling + blocks): the unit of freezing and lr decay."""
        return list(self.stages)

    def final_norm_module(self) -> nn.Module:
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return set()  # no position tables or tokens; norms and layer scales are 1-D

    def set_window_attention(self, window_size, global_blocks=()) -> None:
        raise EncoderInputError("a ConvNeXt has no attention; window_size is for the ViT families: leave it at 0")

    # -- forward -----------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor, *, layers: int | Sequence[int] = -1, norm: bool = True,
                         metadata: Mapping[str, Any] | None = None) -> list[torch.Tensor]:
        """``(B, dims[i], H / s_i, W / s_i)`` maps of the requested stages ``i`` (0..3), in the
        order requested; ``norm=True`` applies the final norm to the last stage's map."""
        wanted = self.resolve_layers(layers)
        x = self.cast_input(self.check_input(x))
        self.check_metadata(metadata, x)
        H, W = x.shape[-2:]
        if x.shape[0] == 0:
            return [x.new_zeros((0, self.out_channels[i], H // self.out_strides[i], W // self.out_strides[i]))
                    for i in wanted]
        h = self.stem(x)
        taken = {}
        for i, stage in enumerate(self.stages):
            if self.grad_checkpointing and torch.is_grad_enabled():
                h = torch.utils.checkpoint.checkpoint(stage, h, use_reentrant=False)
            else:
                h = stage(h)
            if i in wanted:
                taken[i] = self.norm(h) if norm and i == self.depth - 1 else h
            if i == max(wanted):
                break
        return [taken[i] for i in wanted]

    def forward(self, x: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> torch.Tensor:
        return self.forward_features(x, layers=-1, norm=True, metadata=metadata)[0]

    # -- checkpoints -------------------------------------------------------------------
    @staticmethod
    def _layout(state_dict: Mapping[str, torch.Tensor]) -> str:
        found = [name for name, anchor in _ANCHORS.items() if any(k.endswith(anchor) for k in state_dict)]
        if not found:
            raise CheckpointError(
                f"none of {sorted(_ANCHORS.values())} is in the checkpoint (first keys: {sorted(state_dict)[:6]}): "
                f"is it a DINOv3 ConvNeXt checkpoint (Meta's .pth, the Hugging Face transformers or timm file)?")
        return found[0]

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """Meta's, transformers', timm's and d2geo's layouts (see the module), under any prefix."""
        layout = self._layout(state_dict)
        if layout == "transformers":
            # transformers 5 saves the stages under ``model.`` and the final norm beside it
            state_dict = {re.sub(r"(^|\.)model\.stages\.", r"\1stages.", k): v for k, v in state_dict.items()}
        sd = strip_to_anchor(state_dict, _ANCHORS[layout], top_level=())
        rules = {"official": _OFFICIAL, "transformers": _TRANSFORMERS}.get(layout, ())
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if layout == "official" and k.startswith("norms."):
                twin = k.replace("norms.3.", "norm.")
                if twin not in sd or not torch.equal(sd[twin], v):
                    raise CheckpointError(f"{k} is not the same tensor as {twin}: the official ConvNeXt registers its "
                                          f"final norm twice (norm and norms.3); is the file complete?")
                out.ignore(k, f"the same tensor as {twin} (the official module registers its final norm twice)")
                continue
            if k.startswith("head.") and not k.startswith("head.norm."):
                out.ignore(k, "a classification head, not the encoder")
                continue
            for pattern, repl in rules:
                k = re.sub(pattern, repl, k)
            k = re.sub(r"^head\.norm\.", "norm.", k)
            out[k] = v
        kernel = out.get("stem.0.weight")
        if kernel is None or kernel.ndim != 4 or kernel.shape[-1] != 4:
            raise CheckpointError(f"the checkpoint's stem convolution has shape "
                                  f"{None if kernel is None else tuple(kernel.shape)}, not a (C, bands, 4, 4) "
                                  f"ConvNeXt stem: is it a DINOv3 ConvNeXt checkpoint?")
        out["stem.0.weight"] = self._adapt_checkpoint_patch_embed(
            kernel, ": the DINOv3 ConvNeXt weights are RGB; load a fine-tuned d2geo model whole "
                    "(train.init_checkpoint) instead of as encoder weights")
        return out


_PAGE = "https://github.com/facebookresearch/dinov3"
for _size, _arch in DINOV3_CONVNEXT_SIZES.items():
    _model = f"{_arch['timm_name']}.dinov3_lvd1689m"
    _pre = PretrainedCfg(
        source=f"hf://timm/{_model}/model.safetensors", license="DINOv3 License",
        stats=(IMAGENET_RGB_STATS,), input_size=224, patch_size=4, page=f"https://huggingface.co/timm/{_model}",
        notes=(f"distilled from the DINOv3 7B on LVD-1689M; Meta's file "
               f"dinov3_convnext_{_size}_pretrain_lvd1689m-*.pth (download form, {_PAGE}) and the Hub's facebook/dinov3-convnext-{_size}-pretrain-lvd1689m "
               f"(gated, transformers layout) load too, by path"),
        unpinned_reason=("no public source found gives a commit of timm's copy or its sha256 (Meta's file names "
                         "carry only an 8-digit hash prefix); the Hub's LFS sha256 is checked after each download"))
    register_encoder(f"dinov3_convnext_{_size}", DINOv3ConvNeXtEncoder, pretrained_cfg=_pre,
                     **_arch)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("dinov3_convnext_test", like="dinov3_convnext_base", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
