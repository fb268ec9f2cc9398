"""DINOv3 ViT encoders on timm's ``Eva`` (rotary position embeddings, 4 registers).

The official models (facebookresearch/dinov3 ``hub/backbones.py``) have a qkv bias whose
k part is masked to zero (``qkv.bias_mask``), so the encoders are built on timm's
``*_dinov3_qkvb`` variants, which carry the q and v biases. Their rotary embedding uses
the ``rope_embed.periods`` stored in the checkpoint (bfloat16 in the published files);
timm recomputes the periods in float32 and does not save them, so the encoder keeps them
as a saved buffer and loads them from official checkpoints.

RoPE needs no interpolation: any input whose sides are multiples of 16 works. The
satellite variant (``dinov3_vitl16_sat``, pretrained on SAT-493M) shares the ViT-L/16
architecture; only its weights and input statistics differ (``SAT_PIXEL_STATS``).
"""
from __future__ import annotations

import logging
import re
from typing import Any, Mapping, Sequence

import timm
import torch

from .bands import RGB_BANDS, expand_bands
from .base import GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .dinov2 import IMAGENET_RGB_STATS
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["DINOv3Encoder", "LVD_PIXEL_STATS", "SAT_PIXEL_STATS", "SAT493M_RGB_STATS"]

#: SAT-493M input statistics on a 0-255 scale (0.430, 0.411, 0.296 / 0.213, 0.156, 0.143 x 255)
SAT493M_RGB_STATS = InputStats("rgb", None, RGB_BANDS, (109.65, 104.805, 75.48), (54.315, 39.78, 36.465),
                               "0-255")
#: Input statistics on a 0-255 scale, as detectron2 configs take them.
LVD_PIXEL_STATS = {"mean": IMAGENET_RGB_STATS.mean, "std": IMAGENET_RGB_STATS.std}
SAT_PIXEL_STATS = {"mean": SAT493M_RGB_STATS.mean, "std": SAT493M_RGB_STATS.std}

#: dot-free tensor names of the official and timm layouts
_TOP_LEVEL = ("cls_token", "storage_tokens", "reg_token", "mask_token")
#: official name -> timm name
_RENAMES = ((r"\.ls1\.gamma$", ".gamma_1"), (r"\.ls2\.gamma$", ".gamma_2"),
            (r"^storage_tokens$", "reg_token"), (r"^rope_embed\.periods$", "rope.periods"),
            # the official SwiGLU (S+, H+, 7B): silu(w1 x) * (w2 x) -> w3; timm's fc1_g, fc1_x, fc2
            (r"\.mlp\.w1\.", ".mlp.fc1_g."), (r"\.mlp\.w2\.", ".mlp.fc1_x."), (r"\.mlp\.w3\.", ".mlp.fc2."))
#: official tensors that pretraining uses and the backbone does not, with the reason
_PRETRAINING_ONLY = {
    "mask_token": "the masked-patch token, used only in pretraining",
    "local_cls_norm.weight": "the local-crop class-token norm, used only in pretraining",
    "local_cls_norm.bias": "the local-crop class-token norm, used only in pretraining",
}


class DINOv3Encoder(GeoEncoder):
    """A DINOv3 ViT with the :class:`GeoEncoder` interface.

    Args:
        timm_name: the timm architecture (``vit_large_patch16_dinov3_qkvb`` ...).
        qkv_bias: whether the official model has the (k-masked) qkv bias: all but the 7B, whose
            official definition has none (``qkv_bias=False``; timm's ``vit_7b_patch16_dinov3``).
        patch_size: run at another patch size; checkpoint kernels are resampled on load.
        bands: input band names; pretrained weights exist for red, green, blue.
        **timm_kwargs: architecture overrides passed to ``timm.create_model``.
    """

    pretrained_bands = RGB_BANDS
    patch_kernel_key = "vit.patch_embed.proj.weight"
    pretrained_patch_size = 16

    def __init__(self, *, timm_name: str, qkv_bias: bool = True, patch_size: int = 16, bands: Sequence[str] = RGB_BANDS,
                 img_size: int = 224, drop_path_rate: float = 0.0, patch_resample: str = "pinv",
                 **timm_kwargs: Any):
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.bands = expand_bands(bands)
        self.patch_resample = patch_resample
        self.vit = timm.create_model(
            timm_name, pretrained=False, num_classes=0, global_pool="", img_size=img_size,
            patch_size=patch_size, in_chans=len(self.bands), drop_path_rate=drop_path_rate,
            dynamic_img_size=True, **timm_kwargs)
        has_bias = getattr(self.vit.blocks[0].attn, "q_bias", None) is not None
        if has_bias != qkv_bias:
            raise ValueError(
                f"{timm_name} {'has' if has_bias else 'has no'} q/v attention biases, but qkv_bias={qkv_bias}: "
                f"the official DINOv3 models have them (timm's *_dinov3_qkvb architectures), except the 7B "
                f"(vit_7b_patch16_dinov3, qkv_bias=False)")
        self.qkv_bias = qkv_bias
        # the official model takes the rope periods from the checkpoint: keep them in ours
        rope = self.vit.rope
        rope.register_buffer("periods", rope.periods, persistent=True)
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

    def get_blocks(self):
        return self.vit.blocks

    def final_norm_module(self):
        return self.vit.norm

    def no_weight_decay(self) -> set[str]:
        # prefix tokens and position table named here: older timm's Eva leaves reg_token out
        names = {f"vit.{n}" for n in self.vit.no_weight_decay()} | {"vit.pos_embed", "vit.cls_token", "vit.reg_token"}
        return names & {n for n, _ in self.named_parameters()}

    def _run_block(self, block, x, rope):
        return block(x, rope=rope)

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """Official DINOv3 (``storage_tokens``, ``ls1.gamma``, ``qkv.bias`` with its
        ``bias_mask``, ``rope_embed.periods``; hub and ``teacher.backbone.`` training files),
        timm (``*_dinov3_qkvb``, and the bias-free ``*_dinov3`` whose biases are zero) and
        d2geo keys."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        official = "storage_tokens" in sd
        for k, v in sd.items():
            if k in _PRETRAINING_ONLY:
                out.ignore(k, _PRETRAINING_ONLY[k])
            elif k.endswith(".qkv.bias_mask") and k[: -len("_mask")] in sd:
                continue  # applied with its bias below
            elif k.endswith(".qkv.bias"):
                out.update(self._split_qkv_bias(k, v, sd.get(k + "_mask"), official))
            else:
                for pattern, repl in _RENAMES:
                    k = re.sub(pattern, repl, k)
                out[k] = v
        if official and "rope.periods" not in out:
            raise CheckpointError(
                "the checkpoint is in the official DINOv3 layout but has no rope_embed.periods, which "
                "the official model loads from it (they set its rotary frequencies): is it complete? "
                "Use the file as published")
        if "rope.periods" not in out:  # timm layouts do not save them: timm's own values
            out["rope.periods"] = self.vit.rope._compute_periods()
        blocks = range(len(self.vit.blocks))
        if self.qkv_bias and not official and not any(
                f"blocks.{i}.attn.{b}" in out for i in blocks for b in ("q_bias", "v_bias")):
            # timm's bias-free *_dinov3 models: what that model computes is zero biases
            logger.info("the checkpoint has no attention biases (timm's bias-free DINOv3 layout): "
                        "q and v biases are set to zero, as in that model")
            for i in blocks:
                attn = self.vit.blocks[i].attn
                out[f"blocks.{i}.attn.q_bias"] = torch.zeros_like(attn.q_bias)
                out[f"blocks.{i}.attn.v_bias"] = torch.zeros_like(attn.v_bias)
        kernel = out.pop("patch_embed.proj.weight")
        out["patch_embed.proj.weight"] = self._adapt_checkpoint_patch_embed(
            kernel,
            ": upstream DINOv3 checkpoints are RGB, so this one was made for other bands; load a "
            "fine-tuned d2geo model whole (train.init_checkpoint) instead of as encoder weights")
        return FilteredStateDict({f"vit.{k}": v for k, v in out.items()}, ignored=out.ignored, prefix=sd.prefix)

    @staticmethod
    def _split_qkv_bias(key: str, bias: torch.Tensor, mask: torch.Tensor | None,
                        official: bool) -> dict[str, torch.Tensor]:
        """The official ``qkv.bias`` times its ``bias_mask`` -> timm's ``q_bias`` and ``v_bias``."""
        if mask is None and official:
            raise CheckpointError(
                f"the checkpoint has {key} but no {key}_mask: the official DINOv3 models mask the k "
                f"part of the qkv bias with it and load it from the checkpoint; use the file as published")
        if mask is not None:
            if mask.shape != bias.shape or not torch.isfinite(mask).all():
                raise CheckpointError(f"{key}_mask has shape {tuple(mask.shape)} or non-finite values; "
                                      f"it should be {tuple(bias.shape)} zeros and ones")
            bias = bias * mask.to(bias.dtype)
        q, k, v = bias.chunk(3)
        if torch.count_nonzero(k):
            raise CheckpointError(
                f"{key} has a non-zero k bias after its mask: the DINOv3 architecture (official and "
                f"timm) has none, so this is a checkpoint of another model")
        stem = key[: -len("qkv.bias")]
        return {stem + "q_bias": q, stem + "v_bias": v}


_VARIANTS = {
    "dinov3_vits16": dict(timm_name="vit_small_patch16_dinov3_qkvb"),
    "dinov3_vitb16": dict(timm_name="vit_base_patch16_dinov3_qkvb"),
    "dinov3_vitl16": dict(timm_name="vit_large_patch16_dinov3_qkvb"),
    "dinov3_vitl16_sat": dict(timm_name="vit_large_patch16_dinov3_qkvb"),
    # ViT-S+/16 and ViT-H+/16 (Meta's dinov3_vits16plus / dinov3_vith16plus: SwiGLU MLPs)
    "dinov3_vits16plus": dict(timm_name="vit_small_plus_patch16_dinov3_qkvb"),
    "dinov3_vith16plus": dict(timm_name="vit_huge_plus_patch16_dinov3_qkvb"),
    # ViT-7B/16 (Meta's dinov3_vit7b16: embed 4096, depth 40, 32 heads, SwiGLU aligned to 64, no
    # qkv bias, LayerNorm eps 1e-5, float32 rope periods); its SAT-493M sibling
    "dinov3_vit7b16": dict(timm_name="vit_7b_patch16_dinov3", qkv_bias=False),
    "dinov3_vit7b16_sat": dict(timm_name="vit_7b_patch16_dinov3", qkv_bias=False),
}


def _timm_copy(model: str, stats: InputStats, notes: str = "") -> PretrainedCfg:
    # timm's copies on the Hub need no signed link (Meta's own URLs expire, dinov3#129).
    # The ``_qkvb`` copies keep the official q/v biases (and a k bias of zero).
    return PretrainedCfg(
        source=f"hf://timm/{model}/model.safetensors", license="DINOv3 License",
        stats=(stats,), input_size=256, patch_size=16,
        page=f"https://huggingface.co/timm/{model}",
        notes=notes or "official files (Meta's download form) load too, by path or URL",
        unpinned_reason=("no public source found gives a commit of timm's copy or its sha256; the Hub's LFS "
                         "sha256 is checked after each download"))


_7B_NOTES = ("6.7 billion parameters (about 27 GB in float32: build it on a machine with that much memory); "
             "official files (Meta's download form) load too, by path or URL")
_PRETRAINED = {
    "dinov3_vits16": _timm_copy("vit_small_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitb16": _timm_copy("vit_base_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitl16": _timm_copy("vit_large_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vitl16_sat": _timm_copy("vit_large_patch16_dinov3_qkvb.sat493m", SAT493M_RGB_STATS),
    "dinov3_vits16plus": _timm_copy("vit_small_plus_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vith16plus": _timm_copy("vit_huge_plus_patch16_dinov3_qkvb.lvd1689m", IMAGENET_RGB_STATS),
    "dinov3_vit7b16": _timm_copy("vit_7b_patch16_dinov3.lvd1689m", IMAGENET_RGB_STATS, _7B_NOTES),
    "dinov3_vit7b16_sat": _timm_copy("vit_7b_patch16_dinov3.sat493m", SAT493M_RGB_STATS, _7B_NOTES),
}
for _name, _cfg in _VARIANTS.items():
    register_encoder(_name, DINOv3Encoder, pretrained_cfg=_PRETRAINED[_name], **_cfg)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("dinov3_test", like="dinov3_vitl16_sat", embed_dim=64, depth=4, num_heads=4)
