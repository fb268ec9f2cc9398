"""CROMA encoders (Fuller et al., NeurIPS 2023; torchgeo's ``CROMA``, ``croma_base``,
``croma_large``): a Sentinel-2 ViT, a Sentinel-1 ViT, and a joint encoder that fuses them by
cross-attention.

Architecture
    Each image is cut into 8 x 8 patches by a linear patch embedding (here the equivalent
    convolution). There is no position embedding: every attention adds a 2-D ALiBi bias
    instead, ``-slope_h * d(i, j)`` for head ``h`` and the Euclidean distance ``d`` between the
    centres of patches ``i`` and ``j`` on the token grid (in patches), with the ALiBi slopes
    ``2 ** (-8 (k + 1) / H)``, ``k = 0 .. H-1``. Blocks are pre-norm (LayerNorm, attention with
    a bias-free qkv, GELU MLP of width 4 D), and each ViT ends in a LayerNorm (``norm_out``).
    The Sentinel-1 ViT and the joint encoder have half the blocks of the Sentinel-2 ViT
    (``depth // 2``). The joint encoder takes the normed Sentinel-1 tokens as queries; each of
    its blocks runs self-attention, cross-attention to the normed Sentinel-2 tokens (same
    ALiBi bias, one LayerNorm shared by queries and context, as upstream) and the MLP, and it
    ends in its own LayerNorm.

Modalities (``modality=``)
    ``"optical"``: the Sentinel-2 ViT; ``"sar"``: the Sentinel-1 ViT; ``"joint"``: both ViTs
    run to the end, then the joint encoder, whose blocks are the ones tapped (the joint
    features are the dense output, as upstream's ``joint_encodings``). In joint mode the two
    ViTs are, for taps, freezing and layer-wise lr decay, the "embedding" (layer 0) in front
    of the joint blocks.

Bands
    Pretrained bands: Sentinel-2's 12 bands without the cirrus band B10 (``B01`` .. ``B08``,
    ``B8A``, ``B09``, ``B11``, ``B12``, product order; upstream's "remove the cirrus band";
    the pretraining data, SSL4EO-S12, holds L1C and L2A, and the code does not say which),
    and Sentinel-1's ``VV``, ``VH``. A channel is named by its band (``"B04"``, ``"red"``,
    ``"VV"``) or ``"<MODALITY>:<band>"`` with ``MODALITY`` one of ``S2``, ``S2L1C``, ``S2L2A``
    (optical) or ``S1``, ``S1GRD``, ``S1RTC`` (SAR), the names
    :func:`d2geo.data.geotiff.read_modalities` gives the channels of one file per modality; a
    bare modality name stands for all its pretrained bands. Channels may come in any order and
    the two modalities interleaved; a subset of a modality's bands keeps the pretrained kernel
    of those bands (a band the weights do not know starts at zero, as in every d2geo family).

Input sizes
    Any size whose sides are multiples of 8, square or not: the bias is computed for the
    actual ``h x w`` token grid (upstream builds it once, for the square grid of a fixed
    ``image_size``; on square grids the two are the same). It is cached per grid, device and
    dtype. Its memory grows as ``H * (h w)^2``: 1 GiB in float32 for a 512 x 512 input.

Normalization
    CROMA scales each band to [0, 1] with its dataset's ``mean +- 2 std`` and clips. The
    pretrained table's statistics express that scaling as ``pixel_mean = mean - 2 std``,
    ``pixel_std = 4 std`` with SSL4EO-S12's published band statistics (the pretraining
    dataset): a starting point to replace with your data's; the clipping is not applied.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath

from .adapt import adapt_patch_embed
from .bands import BandError, match_bands, refuse_repeated_bands
from .base import EncoderInputError, GeoEncoder, SizeCache
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .modalities import MODALITY_SEP, PLATFORM_PREFIXES
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["CROMAEncoder", "CROMA_MODALITIES", "CROMA_OPTICAL_BANDS", "CROMA_SAR_BANDS", "CROMA_PRETRAINED",
           "alibi_2d", "alibi_slopes", "croma_bands", "croma_stats", "CROMA_S2_STATS", "CROMA_S1_STATS"]

#: the 12 Sentinel-2 bands of the optical encoder, in its kernel's order (B10, cirrus, removed)
CROMA_OPTICAL_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")
#: the Sentinel-1 polarizations of the SAR encoder, in its kernel's order
CROMA_SAR_BANDS = ("VV", "VH")
#: modality -> which of the two sensors it feeds
CROMA_MODALITIES = ("optical", "sar", "joint")
PATCH_SIZE = 8
#: the modality prefixes a channel name may carry (the Sentinel-2 and Sentinel-1 modalities of
#: the modality table and the platform prefixes S2, S1), by CROMA encoder
_ENCODER_OF = {"S2": "optical", "S1": "sar"}
_PREFIXES = {p.lower(): enc for p, enc in _ENCODER_OF.items()}
_PREFIXES.update({m.lower(): _ENCODER_OF[p] for p, ms in PLATFORM_PREFIXES.items() for m in ms})
_SENSOR = {"optical": "sentinel-2-l1c", "sar": "sentinel-1"}
_PRETRAINED_BANDS = {"optical": CROMA_OPTICAL_BANDS, "sar": CROMA_SAR_BANDS}
_UPSTREAM_KEYS = {"optical": "s2_encoder", "sar": "s1_encoder"}


# -- the 2-D ALiBi bias ----------------------------------------------------------------------
def alibi_slopes(num_heads: int) -> torch.Tensor:
    """CROMA's per-head ALiBi slopes ``(H,)`` float32: ``s ** (k + 1)``, ``s = 2 ** (-8 / H)``
    (defined here for powers of two, where CROMA's and torchgeo's constructions agree)."""
    start = 2 ** (-(2 ** -(math.log2(num_heads) - 3)))
    return torch.tensor([start ** (k + 1) for k in range(num_heads)], dtype=torch.float32)


def alibi_2d(num_heads: int, grid: Sequence[int], device=None) -> torch.Tensor:
    """The ``(1, H, h*w, h*w)`` float32 attention bias of an ``h x w`` token grid (row-major
    tokens): minus each head's slope times the distance between the patch centres. Tensor
    operations only, so a traced or exported model follows the input size."""
    h, w = grid
    idx = torch.arange(h * w, device=device)
    rows = torch.div(idx, w, rounding_mode="floor").float()
    cols = (idx % w).float()
    dist = ((rows[:, None] - rows[None]) ** 2 + (cols[:, None] - cols[None]) ** 2).sqrt()
    return (dist[None] * alibi_slopes(num_heads).to(dist.device)[:, None, None]).neg().unsqueeze(0)


# -- channel names -------------------------------------------------------------------------
def _split(name: str) -> tuple[str, str]:
    """``"S2L2A:B04"`` -> ``("optical", "B04")``; ``"VV"`` -> ``("sar", "VV")``."""
    if not isinstance(name, str):
        raise ValueError(f"band names must be strings, got {name!r}")
    if MODALITY_SEP in name:
        prefix, band = (s.strip() for s in name.split(MODALITY_SEP, 1))
        mod = _PREFIXES.get(prefix.lower())
        if mod is None:
            raise ValueError(
                f"channel {name!r} names the modality {prefix!r}, which CROMA does not have: prefix Sentinel-2 "
                f"bands with S2, S2L1C or S2L2A and Sentinel-1 bands with S1, S1GRD or S1RTC (e.g. 'S2L2A:B04', "
                f"'S1RTC:VV'), or give the bare band name")
        return mod, band
    return ("sar" if name.strip().lower() in ("vv", "vh") else "optical"), name.strip()


#: processing levels of one sensor that a channel prefix may name: never two in one stack
_LEVELS = {_ENCODER_OF[p]: ms for p, ms in PLATFORM_PREFIXES.items()}
#: the levels CROMA was pretrained on (SSL4EO-S12's Sentinel-2 L1C and Sentinel-1 GRD)
_PRETRAINED_LEVEL = {"optical": "S2L1C", "sar": "S1GRD"}


def _refuse_mixed_levels(bands: Sequence[str]) -> None:
    """Channels of one sensor from two processing levels (``S2L1C:`` and ``S2L2A:``, ``S1GRD:``
    and ``S1RTC:``) are two products, not one image: CROMA's encoders take one of them."""
    for mod, levels in _LEVELS.items():
        used = {}
        for b in bands:
            prefix = b.split(MODALITY_SEP, 1)[0].strip().upper() if MODALITY_SEP in b else ""
            if prefix in levels:
                used.setdefault(prefix, []).append(b)
        if len(used) > 1:
            raise ValueError(
                f"bands mix {' and '.join(used)} channels ({'; '.join(f'{k}: {v}' for k, v in used.items())}): "
                f"they are different processing levels of one sensor, and CROMA's {mod} encoder takes one image; "
                f"give all {mod} channels from one level (CROMA was pretrained on {_PRETRAINED_LEVEL[mod]})")


def croma_bands(bands: Sequence[str]) -> tuple[str, ...]:
    """Channel names with bare modality names (``"S2L2A"``, ``"S1RTC"``) expanded to all the
    modality's pretrained bands (``"S2L2A:B01"`` ..)."""
    if isinstance(bands, str):
        bands = [bands]
    out = []
    for b in bands:
        if not isinstance(b, str):
            raise ValueError(f"band names must be strings, got {b!r} in {list(bands)}")
        mod = _PREFIXES.get(b.strip().lower())
        if mod is not None and MODALITY_SEP not in b:
            out.extend(f"{b.strip()}{MODALITY_SEP}{x}" for x in _PRETRAINED_BANDS[mod])
        else:
            out.append(b.strip())
    return tuple(out)


def _default_bands(modality: str) -> tuple[str, ...]:
    # the pretraining stack order: optical first, then SAR
    if modality == "joint":
        return CROMA_OPTICAL_BANDS + CROMA_SAR_BANDS
    return _PRETRAINED_BANDS[modality]


# -- modules ----------------------------------------------------------------------------------
class _Attention(nn.Module):
    """Pre-norm multi-head attention with an additive bias; cross-attention when ``cross``
    (one LayerNorm for queries and context, separate bias-free q, k, v projections)."""

    def __init__(self, dim: int, num_heads: int, cross: bool = False):
        super().__init__()
        self.num_heads, self.cross = num_heads, cross
        self.input_norm = nn.LayerNorm(dim)
        if cross:
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_k = nn.Linear(dim, dim, bias=False)
            self.to_v = nn.Linear(dim, dim, bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
        self.to_out = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, N, D = t.shape
        return t.view(B, N, self.num_heads, D // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        B, N, D = x.shape
        x = self.input_norm(x)
        if self.cross:
            context = self.input_norm(context)
            q, k, v = self._heads(self.to_q(x)), self._heads(self.to_k(context)), self._heads(self.to_v(context))
        else:
            q, k, v = self.to_qkv(x).view(B, N, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.to_out(out.transpose(1, 2).reshape(B, N, D))


class _FFN(nn.Module):
    def __init__(self, dim: int, mult: int = 4):
        super().__init__()
        self.input_norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.input_norm(x))


class CROMABlock(nn.Module):
    """A CROMA transformer block: biased self-attention, (joint blocks) biased cross-attention
    to a context, MLP, each pre-norm and residual."""

    def __init__(self, dim: int, num_heads: int, cross: bool = False, drop_path: float = 0.0):
        super().__init__()
        self.attn = _Attention(dim, num_heads)
        self.cross_attn = _Attention(dim, num_heads, cross=True) if cross else None
        self.ffn = _FFN(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, bias: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(x, bias))
        if self.cross_attn is not None:
            x = x + self.drop_path(self.cross_attn(x, bias, context))
        return x + self.drop_path(self.ffn(x))


class _CROMAViT(nn.Module):
    """One modality's ViT: patch embedding, blocks, final norm (upstream's ``ViT`` with its
    ``BaseTransformer``)."""

    def __init__(self, in_chans: int, dim: int, depth: int, num_heads: int, drop_path_rate: float):
        super().__init__()
        self.patch_embed = nn.Conv2d(in_chans, dim, PATCH_SIZE, stride=PATCH_SIZE)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([CROMABlock(dim, num_heads, drop_path=dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.patch_embed(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, checkpoint: bool = False) -> torch.Tensor:
        t = self.embed(x)
        for block in self.blocks:
            if checkpoint:
                t = torch.utils.checkpoint.checkpoint(block, t, bias, use_reentrant=False)
            else:
                t = block(t, bias)
        return self.norm(t)


class _JointEncoder(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, drop_path_rate: float):
        super().__init__()
        dpr = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([CROMABlock(dim, num_heads, cross=True, drop_path=dpr[i]) for i in range(depth)])
        self.norm = nn.LayerNorm(dim)


# -- the encoder ------------------------------------------------------------------------------
class CROMAEncoder(GeoEncoder):
    """A CROMA encoder (see the module docstring) with the :class:`GeoEncoder` interface.

    Input ``(B, C, H, W)``, ``H`` and ``W`` multiples of 8, the ``C`` channels named by
    ``bands``; output maps ``(B, D, H/8, W/8)``.

    Args:
        embed_dim, depth, num_heads: the architecture; ``depth`` is the Sentinel-2 ViT's, the
            Sentinel-1 ViT and the joint encoder have ``depth // 2`` blocks. ``num_heads`` must
            be a power of two (16 in the published models) dividing ``embed_dim``.
        modality: ``"optical"``, ``"sar"`` or ``"joint"``.
        bands: channel names (see the module docstring); default: the modality's pretrained
            bands (joint: the 12 optical bands, then VV, VH).
        drop_path_rate: stochastic depth, rising linearly over each encoder's blocks.
        bias_cache_size: how many attention biases (grid, device, dtype) to keep.
    """

    num_prefix_tokens = 0
    patch_size = PATCH_SIZE

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, modality: str = "optical",
                 bands: Sequence[str] | None = None, drop_path_rate: float = 0.0, bias_cache_size: int = 8):
        super().__init__()
        if modality not in CROMA_MODALITIES:
            raise ValueError(f"modality={modality!r} is not one of {CROMA_MODALITIES} (Sentinel-2, Sentinel-1, "
                             f"or both fused by the joint encoder)")
        if num_heads < 1 or num_heads & (num_heads - 1):
            raise ValueError(f"num_heads={num_heads}: CROMA's 2-D ALiBi slopes are defined for a power of two "
                             f"heads (the published models have 16); use 1, 2, 4, 8, 16, ...")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}; use a multiple "
                             f"of num_heads (the published models: 768 or 1024 with 16 heads)")
        half = depth // 2
        if modality != "optical" and half < 1:
            raise ValueError(f"depth={depth}: the Sentinel-1 ViT and the joint encoder have depth // 2 blocks, "
                             f"so modality={modality!r} needs depth >= 2")
        self.modality = modality
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.depth = depth if modality == "optical" else half
        self.bands = croma_bands(bands) if bands is not None else _default_bands(modality)
        if not self.bands:
            raise ValueError("bands is empty: name the input channels, or leave bands unset for the "
                             "modality's pretrained bands")
        self._bias_cache = SizeCache(bias_cache_size)

        # channel indices and band names of each sensor, in input order
        groups: dict[str, list[int]] = {"optical": [], "sar": []}
        names: dict[str, list[str]] = {"optical": [], "sar": []}
        for i, b in enumerate(self.bands):
            mod, band = _split(b)
            groups[mod].append(i)
            names[mod].append(band)
        needed = ("optical", "sar") if modality == "joint" else (modality,)
        _refuse_mixed_levels(self.bands)
        for mod in ("optical", "sar"):
            if mod not in needed and groups[mod]:
                other = "Sentinel-1" if mod == "sar" else "Sentinel-2"
                raise ValueError(
                    f"bands {[self.bands[i] for i in groups[mod]]} are {other} channels but modality={modality!r} "
                    f"takes only {'Sentinel-2' if modality == 'optical' else 'Sentinel-1'}; use modality='joint' "
                    f"for Sentinel-1 + Sentinel-2, or drop those channels")
            if mod in needed and not groups[mod]:
                what = "Sentinel-2 (optical)" if mod == "optical" else "Sentinel-1 (VV, VH)"
                raise ValueError(
                    f"modality={modality!r} needs {what} channels but bands={list(self.bands)} has none"
                    + ("; the joint encoder fuses both sensors: give both, or use modality='optical' / 'sar' "
                       "for one" if modality == "joint" else ""))
        for mod in needed:
            found = match_bands(names[mod], _PRETRAINED_BANDS[mod], sensor=_SENSOR[mod],
                                available_sensor=_SENSOR[mod], where=f"CROMA's {mod} bands")
            unknown = [b for b, j in zip(names[mod], found) if j is None]
            if unknown:
                hint = ("; B10 (cirrus) is not one of them: CROMA was pretrained without it, drop it"
                        if any(u.lower() in ("b10", "cirrus") for u in unknown) else "")
                raise ValueError(
                    f"CROMA's {mod} encoder has no band {', '.join(map(repr, unknown))}: its bands are "
                    f"{', '.join(_PRETRAINED_BANDS[mod])}{hint}")
            refuse_repeated_bands(names[mod], found, where=f"the {mod} channels")
        self._channels = {m: groups[m] for m in needed}
        self._band_names = {m: names[m] for m in needed}

        if modality in ("optical", "joint"):
            self.s2_encoder = _CROMAViT(len(groups["optical"]), embed_dim, depth, num_heads, drop_path_rate)
        if modality in ("sar", "joint"):
            self.s1_encoder = _CROMAViT(len(groups["sar"]), embed_dim, half, num_heads, drop_path_rate)
        if modality == "joint":
            self.joint_encoder = _JointEncoder(embed_dim, half, num_heads, drop_path_rate)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    # -- structure -------------------------------------------------------------------------
    def _main(self) -> nn.Module:
        return {"optical": getattr(self, "s2_encoder", None), "sar": getattr(self, "s1_encoder", None),
                "joint": getattr(self, "joint_encoder", None)}[self.modality]

    def get_blocks(self) -> Sequence[nn.Module]:
        return self._main().blocks

    def final_norm_module(self) -> nn.Module:
        return self._main().norm

    def no_weight_decay(self) -> set[str]:
        return set()  # no position tables or prefix tokens

    # -- attention bias ----------------------------------------------------------------------
    def attn_bias_for(self, grid: Sequence[int], device, dtype: torch.dtype) -> torch.Tensor:
        """The 2-D ALiBi bias ``(1, H, h*w, h*w)`` of a token grid (cached per grid, device, dtype;
        computed from the input size while recorded, so the recorded model works at every size)."""
        return self._bias_cache.get(lambda: (int(grid[0]), int(grid[1]), torch.device(device), dtype),
                                    lambda: alibi_2d(self.num_heads, grid, device).to(dtype))

    def set_window_attention(self, window_size, global_blocks: Sequence[int] = ()) -> None:
        if window_size:
            raise ValueError(
                "CROMA has no window attention: each attention carries a 2-D ALiBi bias over the whole token "
                "grid (which already favours near patches); leave window_size=0 and run large scenes tile by "
                "tile (predict_scene / predict_region)")
        super().set_window_attention(window_size, global_blocks)

    # -- forward hooks ---------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(x) and x.ndim == 4 and x.shape[1] != self.in_chans:
            per = ", ".join(f"{m}: {len(i)}" for m, i in self._channels.items())
            raise EncoderInputError(
                f"input has {x.shape[1]} channels but the CROMA {self.modality} encoder expects {self.in_chans} "
                f"({per}; {', '.join(self.bands)}); stack the bands in this order, or build the encoder with "
                f"bands=[...] naming the channels you have")
        return super().check_input(x)

    def _select(self, x: torch.Tensor, mod: str) -> torch.Tensor:
        idx = self._channels[mod]
        if idx == list(range(idx[0], idx[-1] + 1)):
            return x[:, idx[0]:idx[-1] + 1]
        return x[:, idx]

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        grid = (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)
        bias = self.attn_bias_for(grid, x.device, x.dtype)
        if self.modality == "joint":
            ckpt = self.grad_checkpointing and torch.is_grad_enabled()
            sar = self.s1_encoder(self._select(x, "sar"), bias, checkpoint=ckpt)
            optical = self.s2_encoder(self._select(x, "optical"), bias, checkpoint=ckpt)
            return sar, grid, (bias, optical)
        return self._main().embed(self._select(x, self.modality)), grid, (bias, None)

    def _run_block(self, block: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        bias, context = ctx
        return block(x, bias, context)

    # -- checkpoints -----------------------------------------------------------------------
    def band_kernels(self, bands: Sequence[str]) -> dict[str, tuple[list[str], str | None]]:
        """One kernel per sensor: ``s2_encoder`` (optical) and ``s1_encoder`` (SAR) bands."""
        out: dict[str, tuple[list[str], str | None]] = {}
        for b in bands:
            mod, band = _split(b)
            key = ("s2_encoder" if mod == "optical" else "s1_encoder") + ".patch_embed.weight"
            out.setdefault(key, ([], _SENSOR[mod]))[0].append(band)
        return out

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published ``CROMA_{base,large}.pt`` (sub-state-dicts ``s1_encoder``,
        ``s1_GAP_FFN``, ``s2_encoder``, ``s2_GAP_FFN``, ``joint_encoder``, read with dotted
        names), the state dict of torchgeo's ``CROMA`` module (the same names plus its
        ``attn_bias`` buffer), and d2geo's own keys, under any prefix.

        Loaded: the encoders ``modality`` uses (patch kernels selected by band name). Named as
        not loaded: the pooled-feature heads (``*_GAP_FFN``), the encoders of the other
        modality and upstream's fixed-size bias buffer."""
        anchors = [f"{_UPSTREAM_KEYS[m]}.{leaf}" for m in ("optical", "sar")
                   for leaf in ("linear_input.weight", "patch_embed.weight")]
        anchor = next((a for a in anchors if any(k.endswith(a) for k in state_dict)), None)
        if anchor is None:
            raise CheckpointError(
                f"no CROMA encoder in the checkpoint (no key ending in {' or '.join(anchors[:2])}; first keys: "
                f"{sorted(state_dict)[:6]}); is it a checkpoint of another model?")
        sd = strip_to_anchor(state_dict, anchor)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        used = {"s2_encoder": "optical" in self._channels, "s1_encoder": "sar" in self._channels,
                "joint_encoder": self.modality == "joint"}
        for k, v in sd.items():
            top, _, rest = k.partition(".")
            if k == "attn_bias":
                if v.ndim != 4 or v.shape[1] != self.num_heads:
                    raise CheckpointError(
                        f"the checkpoint's attn_bias {tuple(v.shape)} is not a bias of {self.num_heads} heads: it "
                        f"is of another architecture (build the encoder with its num_heads)")
                out.ignore(k, "upstream's attention bias of one fixed image size (recomputed for each input grid)")
            elif top in ("s1_GAP_FFN", "s2_GAP_FFN"):
                out.ignore(k, "the pooled-feature projection head (pretraining's contrastive loss), not the dense "
                              "encoder")
            elif top in used and not used[top]:
                out.ignore(k, f"the {top} of another modality than modality={self.modality!r}")
            elif top in ("s1_encoder", "s2_encoder"):
                out[self._vit_key(top, rest)] = self._convert(top, rest, v)
            elif top == "joint_encoder":
                out[self._joint_key(rest)] = v
            else:
                out[k] = v  # no place for it: reported as unknown
        return out

    @staticmethod
    def _vit_key(top: str, rest: str) -> str:
        m = re.match(r"^transformer\.layers\.(\d+)\.([01])\.(.+)$", rest)
        if m:
            i, part, name = m.groups()
            return f"{top}.blocks.{i}.{'attn' if part == '0' else 'ffn'}.{name}"
        if rest.startswith("transformer.norm_out."):
            return f"{top}.norm.{rest[len('transformer.norm_out.'):]}"
        if rest.startswith("linear_input."):
            return f"{top}.patch_embed.{rest[len('linear_input.'):]}"
        return f"{top}.{rest}"  # d2geo's own names

    @staticmethod
    def _joint_key(rest: str) -> str:
        m = re.match(r"^layers\.(\d+)\.([012])\.(.+)$", rest)
        if m:
            i, part, name = m.groups()
            return f"joint_encoder.blocks.{i}.{('attn', 'cross_attn', 'ffn')[int(part)]}.{name}"
        if rest.startswith("norm_out."):
            return f"joint_encoder.norm.{rest[len('norm_out.'):]}"
        return f"joint_encoder.{rest}"

    def _convert(self, top: str, rest: str, value: torch.Tensor) -> torch.Tensor:
        if rest != "linear_input.weight":
            return value  # d2geo's own kernel is in its encoder's band order already
        mod = "optical" if top == "s2_encoder" else "sar"
        src = _PRETRAINED_BANDS[mod]
        D, n = value.shape  # (D, C * 8 * 8), channel-major: the conv kernel (D, C, 8, 8)
        if n != len(src) * PATCH_SIZE ** 2:
            raise CheckpointError(
                f"the checkpoint's {top}.linear_input takes {n} values per patch, not {len(src)} bands x "
                f"{PATCH_SIZE} x {PATCH_SIZE} ({', '.join(src)}): it is not a CROMA checkpoint of the published "
                f"layout")
        value = value.reshape(D, len(src), PATCH_SIZE, PATCH_SIZE)
        wanted = self._band_names[mod]
        # the bands by name (the encoder matched them when it was built: ids, common names, aliases)
        idx = match_bands(wanted, src, sensor=_SENSOR[mod], available_sensor=_SENSOR[mod])
        try:
            return adapt_patch_embed(value, src_bands=src, dst_bands=[src[i] for i in idx],
                                     patch_size=PATCH_SIZE).contiguous()
        except BandError:
            raise
        except ValueError as e:  # pragma: no cover - the shapes were checked above
            raise CheckpointError(str(e)) from e


# -- published weights and input statistics ---------------------------------------------------
def _croma_form(name: str, sensor: str, bands: tuple, mean: tuple, std: tuple, units: str) -> InputStats:
    # CROMA's scaling (x - (mean - 2 std)) / (4 std), as pixel mean and std
    return InputStats(name, sensor, bands, tuple(round(m - 2 * s, 3) for m, s in zip(mean, std)),
                      tuple(round(4 * s, 3) for s in std), units)


#: SSL4EO-S12's Sentinel-2 L1C band statistics (DN) without B10, and its Sentinel-1 GRD (dB) ones,
#: in CROMA's scaling (see the module docstring): placeholders for your data's statistics
CROMA_S2_STATS = _croma_form(
    "croma-s2", "sentinel-2-l1c", CROMA_OPTICAL_BANDS,
    (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 2195.2, 1537.4),
    (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 1340.0, 1142.9), "dn")
CROMA_S1_STATS = _croma_form("croma-s1", "sentinel-1", CROMA_SAR_BANDS, (-12.59, -20.26), (5.26, 5.91), "dB")

def croma_stats(bands: Sequence[str]) -> tuple[list[float], list[float]]:
    """Per-channel ``(pixel_mean, pixel_std)`` of the pretrained table for CROMA channel names
    (bare modality names expanded), e.g. for ``model.pixel_mean/std`` of a joint config."""
    table = {"optical": CROMA_S2_STATS, "sar": CROMA_S1_STATS}
    mean, std = [], []
    for b in croma_bands(bands):
        mod, band = _split(b)
        (i,) = match_bands([band], _PRETRAINED_BANDS[mod], sensor=_SENSOR[mod], available_sensor=_SENSOR[mod])
        if i is None:
            raise ValueError(f"channel {b!r} is none of CROMA's {mod} bands ({', '.join(_PRETRAINED_BANDS[mod])})")
        mean.append(table[mod].mean[i])
        std.append(table[mod].std[i])
    return mean, std


_NOTES = ("Sentinel-2 (12 bands, no B10), Sentinel-1 (VV, VH) or both (modality='optical' | 'sar' | 'joint'); "
          "CROMA scales each band with its dataset's own mean +- 2 std: the listed statistics are SSL4EO-S12's "
          "in that form, a placeholder for your data's")


def _croma(filename: str, revision: str, sha256: str) -> PretrainedCfg:
    return PretrainedCfg(source=f"hf://torchgeo/croma@{revision}/{filename}", license="MIT", sha256=sha256,
                         stats=(CROMA_S2_STATS, CROMA_S1_STATS), input_size=120, patch_size=PATCH_SIZE,
                         page="https://github.com/antofuller/CROMA", notes=_NOTES,
                         pinned_by="torchgeo 0.8.1's weights table (revision); the sha256 is the Hub's LFS object id, whose first 8 hex digits end the file name (torchgeo's convention)")


#: the published weights (torchgeo 0.8.1's ``CROMABase_Weights`` / ``CROMALarge_Weights``; the
#: file names end in the first 8 hex digits of their sha256, torchgeo's convention)
CROMA_PRETRAINED = {
    "croma_base": _croma("CROMA_base-0238d814.pt", "387883f08af79d777167519c57cd826eda89a16f",
                         "0238d814b53108f3574bf1ea240e38a0a6edd46173816d9a6962070561893b63"),
    "croma_large": _croma("CROMA_large-921e69ad.pt", "92cb1a0f4e34c6c01558baf070197c01255382f6",
                          "921e69ad4069201298bb5c860dc332f31e0cb01df6864f294a79fa8f921915a7"),
}

register_encoder("croma_base", CROMAEncoder, pretrained_cfg=CROMA_PRETRAINED["croma_base"],
                 embed_dim=768, depth=12, num_heads=16)
register_encoder("croma_large", CROMAEncoder, pretrained_cfg=CROMA_PRETRAINED["croma_large"],
                 embed_dim=1024, depth=24, num_heads=16)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
# the joint encoder (the tapped one) has depth // 2 = 4 blocks
register_test_variant("croma_test", like="croma_base", embed_dim=64, depth=8, num_heads=4)
