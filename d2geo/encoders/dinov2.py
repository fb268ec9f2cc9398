"""DINOv2 ViT encoders (with and without registers) on timm's ``VisionTransformer``.

Position embeddings are resized exactly as facebookresearch/dinov2 does it, which timm
does not reproduce for the register-free variants: those interpolate with a scale factor
of ``(n + 0.1) / M`` and no antialiasing, the register variants to the exact size with
antialiasing (both bicubic, in float32).
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.layers import SwiGLUPacked
from timm.models.vision_transformer import VisionTransformer

from .bands import RGB_BANDS, expand_bands
from .base import GeoEncoder, SizeCache, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant
from .resize import bicubic_matrix, resize_table

logger = logging.getLogger(__name__)

__all__ = ["DINOv2Encoder", "RGB_BANDS", "IMAGENET_RGB_STATS"]

#: ImageNet statistics on a 0-255 scale (DINOv2's and DINOv3-LVD's input normalization)
IMAGENET_RGB_STATS = InputStats("rgb", None, RGB_BANDS, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375),
                                "0-255")

#: dot-free tensor names of the official and timm layouts
_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token", "register_tokens", "reg_token")
#: official training checkpoints with ``block_chunks``: ``blocks.<chunk>.<block>.``
_CHUNKED = re.compile(r"^blocks\.\d+\.(\d+)\.")


def _native_or(weights: torch.Tensor, native: torch.Tensor) -> torch.Tensor:
    """``weights``, or the identity (as ``(out, in)`` one-hot rows) where ``native``."""
    rows = torch.arange(weights.shape[0], device=weights.device)[:, None]
    cols = torch.arange(weights.shape[1], device=weights.device)[None, :]
    return torch.where(native, (rows == cols).to(weights.dtype), weights)


def dinov2_pos_matrices(grid: tuple[int, int], M: int, *, offset: float, antialias: bool,
                        device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two axis matrices that resize an ``M x M`` position table to ``grid`` the DINOv2
    way (:func:`interpolate_dinov2_pos`); the identity on the pretrained square grid."""
    h, w = grid
    wh = bicubic_matrix(h, M, offset=offset, antialias=antialias, device=device)
    ww = bicubic_matrix(w, M, offset=offset, antialias=antialias, device=device)
    if offset:  # the offset resize is no identity on the native grid: keep the table there
        native = (torch.ones_like(wh[:, 0]).sum() == M) & (torch.ones_like(ww[:, 0]).sum() == M)
        wh, ww = _native_or(wh, native), _native_or(ww, native)
    return wh, ww


def interpolate_dinov2_pos(pos: torch.Tensor, grid: tuple[int, int], *, offset: float,
                           antialias: bool, matrices: tuple[torch.Tensor, torch.Tensor] | None = None
                           ) -> torch.Tensor:
    """Resize a square ``(1, M*M, D)`` patch position table to ``grid`` the DINOv2 way.

    Equal to the official ``F.interpolate(..., mode="bicubic")`` call, written as two
    interpolation matrices (:mod:`.resize`) so that nothing branches in Python on the grid: a
    traced or ``torch.export``-ed model works at every input size. As in the official code,
    the table is returned unchanged on the pretrained square grid. ``matrices``: those of
    :func:`dinov2_pos_matrices` for this grid, if the caller keeps them.
    """
    n = pos.shape[1]
    M = math.isqrt(n)
    if M * M != n:
        raise ValueError(f"position table of {n} entries is not a square grid")
    if matrices is None:
        matrices = dinov2_pos_matrices(grid, M, offset=offset, antialias=antialias, device=pos.device)
    return resize_table(pos, *matrices)


class DINOv2Encoder(GeoEncoder):
    """A DINOv2 ViT with the :class:`GeoEncoder` interface.

    Args:
        embed_dim, depth, num_heads: the architecture.
        patch_size: the patch size to run at; a checkpoint trained with
            ``pretrained_patch_size`` is resampled on load (``patch_resample``).
        img_size: the image size the position table is kept at (a checkpoint's table is
            resized to it once, on load). By default the table keeps the grid of the
            checkpoint it is loaded from (37 x 37 tokens for the official ones, 16 x 16 for
            a timm model saved at 224 px), or 37 x 37 without weights. Other input sizes are
            interpolated from it at run time.
        num_register_tokens: 0 or 4.
        bands: names of the input bands, in order. Pretrained weights exist for
            red, green and blue; other names start at zero (see ``adapt.select_bands``).
        pretrained_bands: the checkpoint's bands (default red, green, blue).
        ffn: ``"mlp"`` or ``"swiglu"`` (ViT-g).
        drop_path_rate: stochastic depth for fine-tuning.
    """

    pretrained_bands = RGB_BANDS
    patch_kernel_key = "vit.patch_embed.proj.weight"
    #: the end of the message for a checkpoint kernel of another band count
    _kernel_fix = (": upstream DINOv2 checkpoints are RGB, so this one was made for other bands; load a "
                   "fine-tuned d2geo model whole (train.init_checkpoint) instead of as encoder weights")

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, patch_size: int = 14,
                 pretrained_patch_size: int = 14, pretrained_grid: int = 37,
                 img_size: int | None = None, num_register_tokens: int = 0,
                 bands: Sequence[str] = RGB_BANDS, ffn: str = "mlp", drop_path_rate: float = 0.0,
                 patch_resample: str = "pinv", pretrained_bands: Sequence[str] | None = None):
        super().__init__()
        if pretrained_bands is not None:  # multispectral DINOv2 weights (SoftCon); default RGB
            self.pretrained_bands = expand_bands(pretrained_bands)
        if img_size is not None and img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        grid = img_size // patch_size if img_size else pretrained_grid
        #: without an explicit img_size the position table takes the checkpoint's grid
        self.img_size_given = img_size is not None
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.pretrained_patch_size = pretrained_patch_size
        self.pretrained_grid = pretrained_grid
        self.patch_resample = patch_resample
        self.bands = expand_bands(bands)
        self.num_register_tokens = num_register_tokens
        self.num_prefix_tokens = 1 + num_register_tokens
        # The official hub models: registers go with exact-size antialiased resizing.
        self.interpolate_offset = 0.0 if num_register_tokens else 0.1
        self.interpolate_antialias = bool(num_register_tokens)
        self._pos_matrices = SizeCache(16)  # (h, w, M, device) -> the two axis matrices
        mlp = dict(mlp_ratio=2.66667 * 2, mlp_layer=SwiGLUPacked, act_layer=nn.SiLU) if ffn == "swiglu" else {}
        self.vit = VisionTransformer(
            img_size=grid * patch_size, patch_size=patch_size, in_chans=len(self.bands),
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, init_values=1e-5,
            reg_tokens=num_register_tokens, no_embed_class=num_register_tokens > 0,
            dynamic_img_size=True, num_classes=0, global_pool="", drop_path_rate=drop_path_rate,
            **mlp,
        )

    # -- GeoEncoder hooks --------------------------------------------------------------
    def _pos(self, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.vit.pos_embed
        cls_pos, patch_pos = (None, pos) if self.vit.no_embed_class else (pos[:, :1], pos[:, 1:])
        M = math.isqrt(patch_pos.shape[1])
        if not is_tracing() and tuple(grid) == (M, M):
            pass  # the pretrained grid: the table as it is (the official code returns it unchanged)
        else:  # the resize matrices of a grid are computed once (recorded models compute them)
            kw = dict(offset=self.interpolate_offset, antialias=self.interpolate_antialias)
            matrices = self._pos_matrices.get(
                lambda: (int(grid[0]), int(grid[1]), M, patch_pos.device),
                lambda: dinov2_pos_matrices(grid, M, device=patch_pos.device, **kw))
            patch_pos = interpolate_dinov2_pos(patch_pos, grid, matrices=matrices, **kw)
        return patch_pos if cls_pos is None else torch.cat([cls_pos, patch_pos], dim=1)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        vit = self.vit
        x = vit.patch_embed(x)  # (B, h, w, D)
        B, h, w, D = x.shape
        x = x.reshape(B, h * w, D)
        pos = self._pos((h, w))
        cls = vit.cls_token.expand(B, -1, -1)
        if vit.no_embed_class:  # registers: the cls position is folded into cls_token
            x = torch.cat([cls, vit.reg_token.expand(B, -1, -1), x + pos], dim=1)
        else:
            x = torch.cat([cls, x], dim=1) + pos
        x = vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))
        return x, (h, w), None

    # -- structure -------------------------------------------------------------------
    def get_blocks(self):
        return self.vit.blocks

    def final_norm_module(self):
        return self.vit.norm

    def no_weight_decay(self) -> set[str]:
        names = {"vit.pos_embed", "vit.cls_token", "vit.reg_token"}
        return {n for n, _ in self.named_parameters() if n in names}

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """Official hub, official training (``teacher.backbone.``, ``block_chunks``), timm and
        d2geo keys."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        if "mask_token" in sd:
            sd.ignore("mask_token", "the masked-patch token, used only in pretraining")
        ignored, prefix = sd.ignored, sd.prefix
        sd = self._from_official(sd)
        has_reg = "reg_token" in sd
        if has_reg != bool(self.num_register_tokens):
            raise CheckpointError(
                f"the checkpoint is a DINOv2 {'with' if has_reg else 'without'} registers but the "
                f"encoder was built {'with' if self.num_register_tokens else 'without'}: pick the "
                f"{'_reg' if has_reg else 'non-_reg'} variant"
            )
        sd["patch_embed.proj.weight"] = self._adapt_checkpoint_patch_embed(
            sd["patch_embed.proj.weight"], self._kernel_fix)
        if "pos_embed" in sd:
            sd["pos_embed"] = self._fit_pos_table(sd["pos_embed"])
        return FilteredStateDict({f"vit.{k}": v for k, v in sd.items()}, ignored=ignored, prefix=prefix)

    @staticmethod
    def _from_official(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Official names -> timm's: block chunks, registers, SwiGLU (ViT-g); timm keys pass."""
        out = {}
        for k, v in sd.items():
            if k == "mask_token":
                continue
            k = _CHUNKED.sub(r"blocks.\1.", k)
            k = re.sub(r"^(blocks\.\d+\.mlp)\.w12\.", r"\1.fc1.", k)
            k = re.sub(r"^(blocks\.\d+\.mlp)\.w3\.", r"\1.fc2.", k)
            out[k] = v
        if "register_tokens" in out:
            # official: the cls position is in pos_embed; timm's no_embed_class model folds it
            # into cls_token (registers have no position)
            if "cls_token" not in out or "pos_embed" not in out:
                raise CheckpointError("the checkpoint has register_tokens but no cls_token or pos_embed: "
                                      "is it complete?")
            out["reg_token"] = out.pop("register_tokens")
            pos = out.pop("pos_embed")
            out["cls_token"] = out["cls_token"] + pos[:, :1]
            out["pos_embed"] = pos[:, 1:]
        return out

    def _fit_pos_table(self, pos: torch.Tensor) -> torch.Tensor:
        """The checkpoint's table at its own grid, or resized once to an explicit ``img_size``."""
        prefix = 0 if self.vit.no_embed_class else 1
        n = pos.shape[1] - prefix
        M = math.isqrt(n)
        if M * M != n or pos.ndim != 3:
            raise CheckpointError(f"the checkpoint's pos_embed {tuple(pos.shape)} is not a square grid "
                                  f"of positions (plus {prefix} class position)")
        grid = tuple(self.vit.patch_embed.grid_size)
        if (M, M) == grid:
            return pos
        if not self.img_size_given:
            # keep the grid the checkpoint was saved at: resizing it to the default grid and
            # again to each input size would change the features
            logger.info("the checkpoint's position table is %dx%d: kept at that grid (img_size %d)",
                        M, M, M * self.patch_size)
            self.vit.pos_embed = nn.Parameter(torch.zeros(1, pos.shape[1], pos.shape[2],
                                                          dtype=self.vit.pos_embed.dtype,
                                                          device=self.vit.pos_embed.device))
            self.vit.patch_embed.grid_size = (M, M)
            self.vit.patch_embed.img_size = (M * self.patch_size, M * self.patch_size)
            self.vit.patch_embed.num_patches = M * M
            return pos
        patch = interpolate_dinov2_pos(pos[:, prefix:], grid, offset=self.interpolate_offset,
                                       antialias=self.interpolate_antialias)
        return torch.cat([pos[:, :prefix], patch], dim=1)


_VARIANTS = {
    "vits14": dict(embed_dim=384, depth=12, num_heads=6),
    "vitb14": dict(embed_dim=768, depth=12, num_heads=12),
    "vitl14": dict(embed_dim=1024, depth=24, num_heads=16),
    "vitg14": dict(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}


def _pretrained(arch: str, reg: bool) -> PretrainedCfg:
    # Meta's official files (facebookresearch/dinov2 hubconf); no digest is published.
    suffix = "_reg4" if reg else ""
    return PretrainedCfg(
        source=f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}/dinov2_{arch}{suffix}_pretrain.pth",
        license="Apache-2.0", stats=(IMAGENET_RGB_STATS,), input_size=518, patch_size=14,
        page="https://github.com/facebookresearch/dinov2",
        unpinned_reason=("Meta's download URL has no revisions and Meta publishes no sha256 (the files have "
                         "not changed since the 2023 release; a changed file would go unnoticed)"))


for _arch, _cfg in _VARIANTS.items():
    register_encoder(f"dinov2_{_arch}", DINOv2Encoder, pretrained_cfg=_pretrained(_arch, False), **_cfg)
    register_encoder(f"dinov2_{_arch}_reg", DINOv2Encoder, pretrained_cfg=_pretrained(_arch, True),
                     num_register_tokens=4, **_cfg)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("dinov2_test", like="dinov2_vits14_reg", embed_dim=64, depth=4, num_heads=4)
