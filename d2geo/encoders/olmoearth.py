"""OlmoEarth (Ai2, 2025; github.com/allenai/olmoearth_pretrain, Hub ``allenai/OlmoEarth-v1-*``):
a multi-modal, multi-temporal ViT whose tokens are (position, band group) pairs.

Tokenization (upstream's ``MultiModalPatchEmbeddings`` with the default ``TokenizationConfig``):
each modality's bands are split into the band groups of upstream's ``ModalitySpec`` and every
group has its own patch embedding (an ``8 x 8`` kernel in the v1 files):

* ``sentinel2_l2a``: (B02 B03 B04 B08), (B05 B06 B07 B8A B11 B12), (B01 B09);
* ``sentinel1``: (VV VH);
* ``landsat``: (B8), (B1 B2 B3 B4 B5 B6 B7 B9 B10 B11).

All three share the 10 m pixel grid (upstream resamples every band to it). One encoder takes one
modality's bands stacked as ``(B, C, H, W)`` (one date) or, built with ``temporal=True``, a time
series ``(B, C, T, H, W)`` (upstream's multi-temporal input: one timestamp per date). A run at
patch size ``p`` other than the kernel's 8 resizes the *image* (bicubic, antialiased) by ``8 / p``
before the 8-pixel kernel, as upstream's ``FlexiPatchEmbed`` does; the token grid is ``(H / p, W / p)``.

Several modalities (upstream's multi-modal forward pass): channels named ``"<MODALITY>:<band>"`` as
:func:`d2geo.data.geotiff.read_modalities` stacks one file per modality (``S2L2A`` -> ``sentinel2_l2a``,
``S1RTC`` or ``S1GRD`` -> ``sentinel1``; a bare ``"S2L2A"`` is all its bands), e.g.
``bands=["S2L2A", "S1RTC"]`` (14 channels, any order, the modalities in the order they first appear).
Each modality's groups get that modality's patch embeddings and band-group codes; the tokens of all
modalities share the time, month and position codes (one ``timestamps`` and ``gsd`` per sample, as
upstream takes them) and go through the blocks as **one sequence**: every token attends to every
modality's tokens.

Encodings (upstream's ``CompositeEncodings``, absolute mode, the v1 files): each token gets, in four
quarters of its width, a learned code of its band group, the sine-cosine code of its date's index
in the series (0 for one date), the sine-cosine code of the acquisition month (from ``metadata["timestamps"]``,
UTC), and a 2-D sine-cosine code of its column and row scaled by ``gsd * p / 10`` (``gsd`` from
``metadata["gsd"]``, else the ``gsd`` argument, 10 m). No class or register tokens (the v1 encoders
have none); blocks are timm's pre-norm ViT blocks (upstream's separate q, k, v projections are
fused into timm's ``qkv`` on load) and a final layer norm.

Feature maps: the tokens of one position (one per band group) are **averaged** into one
``embed_dim`` vector per position, after the final norm when ``norm=True``, as upstream's
``pool_spatially`` with ``MEAN``: each modality's group tokens are averaged first, then the modalities'
averages (so Sentinel-1's one group weighs as much as Sentinel-2's three). For a series upstream also
averages the dates, d2geo keeps them: ``(B, D, T, h, w)``, ``.mean(2)`` gives upstream's. The map stride
is ``patch_size``.

Bands: an encoder built with a subset of a modality's bands zero-fills the absent bands of a group
that has some of its bands, drops the tokens of a group with none (upstream's handling of a
missing band group), and logs which (a warning: the weights saw complete groups).

Weights: the OlmoEarth Artifact License (use restrictions: no military, defense, surveillance or
extractive use; see :mod:`.licenses`), recorded in the pretrained table and warned when loaded.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from .bands import expand_bands
from .base import EncoderInputError, GeoEncoder
from .checkpoint import CheckpointError, FilteredStateDict
from .metadata import warn_once
from .olmoearth_multimodal import (OLMOEARTH_FROM_MODALITY, OLMOEARTH_MODALITIES, OLMOEARTH_S1_STATS,  # noqa: F401
                                   OLMOEARTH_S2_STATS, _band_ids, _is_multimodal, _split_channels,
                                   expand_olmoearth_channels, olmoearth_stats)
from .registry import PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["OlmoEarthEncoder", "OLMOEARTH_MODALITIES", "OLMOEARTH_PRETRAINED", "OLMOEARTH_FROM_MODALITY",
           "olmoearth_stats", "timestamps_to_month"]

BASE_GSD = 10.0  # metres: the resolution upstream's GSD ratio is relative to
KERNEL = 8  # the v1 files' patch kernel (upstream's max_patch_size)


def _sincos(pos: torch.Tensor, dim: int) -> torch.Tensor:
    """``(..., )`` positions -> ``(..., dim)``: sines then cosines, frequencies ``10000 ** (-k / 2dim)``
    (upstream's 1-D code)."""
    k = torch.arange(dim // 2, device=pos.device, dtype=torch.float32)
    omega = 1.0 / 10000 ** (k / dim / 2.0)
    angles = pos.to(torch.float32)[..., None] * omega
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _month_table(dim: int) -> torch.Tensor:
    """``(12, dim)``: month ``m`` (0 = January) as ``dim / 2`` copies of ``sin(2 pi m / 12)``, then
    of its cosine."""
    angles = torch.arange(12, dtype=torch.float32) / (12 / (2 * math.pi))
    return torch.cat([angles[:, None].sin().expand(12, dim // 2), angles[:, None].cos().expand(12, dim // 2)], 1)


def timestamps_to_month(timestamps: torch.Tensor) -> torch.Tensor:
    """Seconds since the Unix epoch (UTC) -> month index 0..11, in integer tensor arithmetic
    (the civil-from-days algorithm; traceable)."""
    z = torch.div(timestamps.to(torch.float64), 86400.0, rounding_mode="floor").to(torch.int64) + 719468
    era = torch.div(z, 146097, rounding_mode="floor")
    doe = z - era * 146097
    yoe = torch.div(doe - doe // 1460 + doe // 36524 - doe // 146096, 365, rounding_mode="floor")
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = torch.div(5 * doy + 2, 153, rounding_mode="floor")
    return torch.where(mp < 10, mp + 2, mp - 10)  # March-based -> 0 = January


class OlmoEarthEncoder(GeoEncoder):
    """OlmoEarth encoder (see the module docstring).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the ViT (v1 Nano 128/4/8, Tiny 192/12/3,
            Base 768/12/12, Large 1024/24/16).
        modality: ``sentinel2_l2a`` (default), ``sentinel1`` or ``landsat`` (upstream's names); with
            ``"<MODALITY>:<band>"`` channels leave it unset: their prefixes name the modalities.
        bands: the input's bands, in order (default: all of the modality's, in group order);
            any subset of the modality's bands (see the module docstring); or ``"<MODALITY>:<band>"``
            channels of several modalities (``["S2L2A", "S1RTC"]``), one encoder over all of them.
        sensor: the sensor the band names are read as (default: the modality's; each modality's own
            with ``"<MODALITY>:<band>"`` channels).
        patch_size: the token size in input pixels (1..8; the kernel is 8, other sizes resize the
            image as upstream does).
        gsd: the ground sample distance (m) used when the metadata has none.
        temporal: take ``(B, C, T, H, W)`` time series (upstream's multi-temporal input; maps
            ``(B, D, T, h, w)``) instead of one date ``(B, C, H, W)``.
        drop_path_rate: stochastic depth for fine-tuning.
    """

    num_prefix_tokens = 0

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 modality: str | None = None, bands: Sequence[str] = (), sensor: str | None = None,
                 patch_size: int = KERNEL, gsd: float = BASE_GSD, temporal: bool = False,
                 drop_path_rate: float = 0.0):
        super().__init__()
        #: ``temporal``: ``(B, C, T, H, W)`` time series (any T, one timestamp per date) -> ``(B, D, T, h, w)`` maps
        self.input_ndim = 3 if temporal else 2
        if not 1 <= patch_size <= KERNEL:
            raise ValueError(f"patch_size {patch_size} is outside OlmoEarth's 1..{KERNEL}")
        if embed_dim % 8:
            raise ValueError(f"embed_dim {embed_dim} must be a multiple of 8 (four sine-cosine quarters)")
        self.embed_dim, self.depth, self.patch_size, self.gsd = embed_dim, depth, patch_size, float(gsd)
        if bands and _is_multimodal(bands):  # "<MODALITY>:<band>" channels: the modalities come from them
            if sensor is not None:
                raise ValueError(f"sensor={sensor!r} with '<MODALITY>:<band>' channels: each modality's bands are "
                                 f"read as its own sensor (modalities.py); leave sensor unset")
            self.bands = expand_olmoearth_channels(bands)
            by_mod = _split_channels(self.bands)
            wanted = [] if modality is None else [modality] if isinstance(modality, str) else list(modality)
            if wanted and sorted(wanted) != sorted(by_mod):
                raise ValueError(f"modality={modality!r} but the channels {list(self.bands)} are of "
                                 f"{list(by_mod)}: leave modality unset, the channel prefixes name the modalities")
        else:
            modality = modality if modality is not None else "sentinel2_l2a"
            if not isinstance(modality, str):
                raise ValueError(f"modality={list(modality)}: several modalities need channels named "
                                 f"'<MODALITY>:<band>' (e.g. bands=['S2L2A', 'S1RTC'], as read_modalities names them)")
            if modality not in OLMOEARTH_MODALITIES:
                raise ValueError(f"OlmoEarth modality {modality!r} is not supported here; use one of "
                                 f"{', '.join(OLMOEARTH_MODALITIES)} (the modalities with image bands d2geo reads)")
            groups = OLMOEARTH_MODALITIES[modality][1]
            self.bands = expand_bands(bands) if bands else tuple(b for g in groups for b in g)
            by_mod = {modality: list(enumerate(_band_ids(modality, self.bands, sensor)))}
        self.sensor = sensor
        #: upstream's modalities, in input order; ``modality`` is the first (one-modality encoders)
        self.modalities = tuple(by_mod)
        self.modality = self.modalities[0]
        #: the band groups of all modalities, modality after modality (upstream's per-modality
        #: embeddings, flattened): (modality, group index within it, input channel per band or -1)
        self.group_specs = []
        for mod, chans in by_mod.items():
            ids = [bid for _, bid in chans]
            groups = OLMOEARTH_MODALITIES[mod][1]
            self.group_specs += [(mod, gi, [chans[ids.index(b)][0] if b in ids else -1 for b in g])
                                 for gi, g in enumerate(groups)]
            absent = [b for g in groups for b in g if b not in ids]
            if absent:
                logger.warning("OlmoEarth %s: bands %s are not in the input: absent bands of a partly present group "
                               "are zero-filled, groups with none (%s) are left out; the weights saw every band",
                               mod, absent, [g for g in groups if not set(g) & set(ids)])
        self.group_channels = [ch for _, _, ch in self.group_specs]
        self.used_groups = [i for i, ch in enumerate(self.group_channels) if max(ch) >= 0]
        #: per modality: the positions of its used groups among the used groups (for pooling)
        self.modality_slices = []
        for mod in self.modalities:
            pos = [k for k, g in enumerate(self.used_groups) if self.group_specs[g][0] == mod]
            self.modality_slices.append((pos[0], pos[-1] + 1))
        n = embed_dim // 4
        self.patch_embed = nn.ModuleList(nn.Conv2d(len(ch), embed_dim, KERNEL, stride=KERNEL)
                                         for ch in self.group_channels)
        self.channel_embed = nn.Parameter(torch.zeros(len(self.group_specs), n))
        self.register_buffer("month_table", _month_table(n), persistent=False)
        self.blocks = nn.Sequential(*[
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm,  # eps 1e-5, as upstream
                  drop_path=drop_path_rate * i / max(depth - 1, 1))
            for i in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)

    # -- structure ---------------------------------------------------------------------------
    def get_blocks(self):
        return self.blocks

    def final_norm_module(self):
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {"channel_embed"}

    # -- forward -----------------------------------------------------------------------------
    def _months(self, metadata: Mapping[str, Any] | None, batch: int, frames: int, device) -> torch.Tensor:
        ts = metadata.get("timestamps") if metadata is not None else None
        if ts is None:
            raise EncoderInputError(
                "OlmoEarth encodes the acquisition month and has no timestamps for this batch: pass "
                f"metadata={{'timestamps': (B, {frames}) seconds since the epoch}} (the GeoTIFF reader gives them)")
        ts = torch.as_tensor(ts).reshape(batch, -1)
        if ts.shape[1] != frames:
            hint = ("this OlmoEarth encoder takes one (B, C, H, W) image per sample; give one timestamp per sample, "
                    "or build it with temporal=True for (B, C, T, H, W) series" if self.input_ndim == 2 else
                    "give one timestamp per date")
            raise EncoderInputError(
                f"metadata 'timestamps' has {ts.shape[1]} dates per sample but the input has {frames}: {hint}")
        return timestamps_to_month(ts).to(device)  # (B, T)

    def _gsd(self, metadata: Mapping[str, Any] | None, batch: int, device) -> torch.Tensor:
        gsd = metadata.get("gsd") if metadata is not None else None
        if gsd is None:
            warn_once("olmoearth", "gsd", f"the encoder's gsd={self.gsd} m")
            return torch.full((batch,), self.gsd, device=device)
        return torch.as_tensor(gsd, dtype=torch.float32, device=device).reshape(batch)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        if x.ndim == 4:
            x = x[:, :, None]  # one date
        B, C, T, H, W = x.shape
        p = self.patch_size
        h, w = H // p, W // p
        x = x.transpose(1, 2).reshape(B * T, C, H, W)  # dates through the patch embedding as images
        if p != KERNEL:  # upstream resizes the image, not the kernel
            x = F.interpolate(x, size=(h * KERNEL, w * KERNEL), mode="bicubic", antialias=True)
        n = self.embed_dim // 4
        zeros = x.new_zeros(B * T, 1, *x.shape[-2:])
        tokens = []
        for g in self.used_groups:
            chans = [x[:, c:c + 1] if c >= 0 else zeros for c in self.group_channels[g]]
            tokens.append(self.patch_embed[g](torch.cat(chans, 1)).reshape(B, T, self.embed_dim, h, w))
        t = torch.stack(tokens, dim=1).permute(0, 1, 2, 4, 5, 3)  # (B, G, T, h, w, D)
        # the four encoding quarters: group code, time step, month, scaled 2-D position
        month = self.month_table.to(t.dtype)[self._months(metadata, B, T, x.device)]  # (B, T, n)
        step = _sincos(torch.arange(T, device=x.device), n).to(t.dtype)  # (T, n)
        ratio = self._gsd(metadata, B, x.device) * p / BASE_GSD  # (B,)
        cols = torch.arange(w, device=x.device, dtype=torch.float32)[None, None, :].expand(1, h, w)
        rows = torch.arange(h, device=x.device, dtype=torch.float32)[None, :, None].expand(1, h, w)
        pos = torch.cat([_sincos(cols * ratio[:, None, None], n // 2),
                         _sincos(rows * ratio[:, None, None], n // 2)], dim=-1).to(t.dtype)  # (B, h, w, n)
        G = len(self.used_groups)
        shape = (B, G, T, h, w, n)
        codes = torch.cat([
            self.channel_embed[self.used_groups].to(t.dtype)[None, :, None, None, None].expand(shape),
            step[None, None, :, None, None].expand(shape),
            month[:, None, :, None, None].expand(shape),
            pos[:, None, None].expand(shape),
            t.new_zeros(B, G, T, h, w, self.embed_dim - 4 * n)], dim=-1)
        # group-major sequence (upstream's is position-major; attention does not depend on the order), so
        # that the grid (G, T, h, w) windows like frames (see .windowing): a window holds every group and
        # date of its positions
        grid = (G, T, h, w) if self.input_ndim == 3 else (G, h, w)
        return (t + codes).reshape(B, G * T * h * w, self.embed_dim), grid, None

    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int], norm: bool) -> torch.Tensor:
        if norm:
            tokens = self._final_norm(tokens)
        B, _, D = tokens.shape
        tokens = tokens.reshape(B, *grid, D)
        # upstream's pool_spatially (MEAN): each modality's groups averaged, then the modalities averaged
        per_mod = [tokens[:, a:b].mean(1) for a, b in self.modality_slices]
        fmap = per_mod[0] if len(per_mod) == 1 else torch.stack(per_mod, 0).mean(0)  # (B, [T,] h, w, D)
        return (fmap.permute(0, 3, 1, 2) if fmap.ndim == 4 else fmap.permute(0, 4, 1, 2, 3)).contiguous()

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published ``weights.pth`` (the whole LatentMIM model: ``encoder.`` is loaded,
        ``target_encoder.`` and ``decoder.`` are not) and d2geo's own keys, under any prefix."""
        m = self.modality
        anchor = f"patch_embeddings.per_modality_embeddings.{m}.{m}__0.proj.weight"
        hits = sorted((k[: -len(anchor)] for k in state_dict if k.endswith(anchor)), key=len)
        if not hits:
            ours = sorted(k[: -len("patch_embed.0.weight")] for k in state_dict if k.endswith("patch_embed.0.weight"))
            if not ours:
                raise CheckpointError(f"no {anchor!r} in the checkpoint (first keys: {sorted(state_dict)[:6]}): "
                                      f"it is not an OlmoEarth checkpoint with {m} embeddings")
            prefix = ours[0]
            out = FilteredStateDict(prefix=prefix)
            for k, v in state_dict.items():
                if k.startswith(prefix):
                    out[k[len(prefix):]] = v
                else:
                    out.ignored[k] = f"outside the encoder (under {prefix!r})"
            return out
        prefix = next((p for p in hits if p.endswith("encoder.") and not p.endswith("target_encoder.")), hits[0])
        for mod in self.modalities[1:]:
            key = f"{prefix}patch_embeddings.per_modality_embeddings.{mod}.{mod}__0.proj.weight"
            if key not in state_dict:
                raise CheckpointError(f"the checkpoint has no {key!r}: it was not trained with {mod}, one of this "
                                      f"encoder's modalities {list(self.modalities)}")
        #: the first flat group index of each modality (see ``group_specs``)
        offset = {mod: next(i for i, (m2, _, _) in enumerate(self.group_specs) if m2 == mod) for mod in self.modalities}
        out = FilteredStateDict(prefix=prefix)
        codes = {}
        for k, v in state_dict.items():
            if not k.startswith(prefix):
                out.ignored[k] = ("outside the encoder (the pretraining decoder or target copy; "
                                  f"encoder under {prefix!r})")
                continue
            key = k[len(prefix):]
            pe = next((f"patch_embeddings.per_modality_embeddings.{mod}.{mod}__" for mod in self.modalities
                       if key.startswith(f"patch_embeddings.per_modality_embeddings.{mod}.{mod}__")), None)
            ce = key[len("composite_encodings.per_modality_channel_embeddings."):] \
                if key.startswith("composite_encodings.per_modality_channel_embeddings.") else None
            if pe is not None:
                mod = pe.split(".")[2]
                idx, rest = key[len(pe):].split(".", 1)
                if rest == "proj.weight" and v.ndim == 2:  # the linear layout: (D, p * p * c), pixels outer
                    c = len(OLMOEARTH_MODALITIES[mod][1][int(idx)])
                    v = v.reshape(v.shape[0], KERNEL, KERNEL, c).permute(0, 3, 1, 2)
                if rest not in ("proj.weight", "proj.bias"):
                    raise CheckpointError(
                        f"the checkpoint's {k} (a per-pixel or post-projection MLP) is not built here")
                out[f"patch_embed.{offset[mod] + int(idx)}.{rest[len('proj.'):]}"] = v
            elif key.startswith("patch_embeddings.per_modality_embeddings."):
                out.ignored[k] = f"the patch embedding of another modality (this encoder takes {list(self.modalities)})"
            elif ce in self.modalities:
                codes[ce] = v
            elif ce is not None:
                out.ignored[k] = ("the band-group codes of another modality (this encoder takes "
                                  f"{list(self.modalities)})")
            elif key == "composite_encodings.month_embed.weight":
                out.ignored[k] = "the fixed month table (computed here)"
            elif key.startswith(("project_and_aggregate.", "embedding_projector.")):
                out.ignored[k] = "the pretraining projection head"
            elif key.startswith("blocks."):
                parts = key.split(".")
                if parts[2] == "attn" and parts[3] in ("q", "k", "v"):
                    if parts[3] == "q":
                        base = ".".join(parts[:3])
                        out[f"blocks.{parts[1]}.attn.qkv.{parts[4]}"] = torch.cat(
                            [state_dict[f"{prefix}{base}.{n}.{parts[4]}"] for n in "qkv"], 0)
                    continue
                if parts[2] == "attn" and parts[3] in ("q_norm", "k_norm", "rope_mixed_freqs"):
                    raise CheckpointError(f"the checkpoint's {k}: q/k norms and RoPE are not part of the v1 encoders "
                                          f"built here")
                out[key] = v
            elif key.startswith("norm."):
                out[key] = v
            else:
                raise CheckpointError(f"the checkpoint's {k} is no part of the OlmoEarth v1 encoder built here "
                                      f"(register tokens, RoPE or band dropout variants are not supported)")
        if set(codes) == set(self.modalities):  # the modalities' group codes, in this encoder's order
            out["channel_embed"] = torch.cat([codes[mod] for mod in self.modalities], 0)
        return out


_LICENSE = "OlmoEarth Artifact License"
_SIZES = {"nano": (128, 4, 8), "tiny": (192, 12, 3), "base": (768, 12, 12), "large": (1024, 24, 16)}


def _entry(size: str) -> PretrainedCfg:
    repo = f"allenai/OlmoEarth-v1-{size.capitalize()}"
    return PretrainedCfg(
        source=f"hf://{repo}/weights.pth", license=_LICENSE, stats=(OLMOEARTH_S2_STATS, OLMOEARTH_S1_STATS),
        patch_size=KERNEL,
        input_size=256,
        page=f"https://huggingface.co/{repo}",
        notes=("use restrictions (OlmoEarth Artifact License s.2): no military, defense, intelligence, surveillance "
               "or policing use, no extractive (oil, gas, mining, deforestation) use; derivatives must carry them. "
               "The file is the whole LatentMIM model; only `encoder.` is loaded. Pretrained on 256 px tiles, "
               "cropped to 1..12 patches per side at patch sizes 1..8 under a 2250-token budget (phase-2 "
               "scripts). Statistics: upstream's (olmoearth_pretrain/data/norm_configs/computed.json, in its "
               "Normalizer's (x - (mean - 2 std)) / (4 std) form): Sentinel-2 L2A in DN, Sentinel-1 in dB"),
        pinned_by="olmoearth_pretrain's model_loader.ModelID (repository and file name, commit 0a8852ed)",
        unpinned_reason=("no public source this project can read states a Hub commit or sha256 for the "
                         "OlmoEarth v1 files (the Hub is not reachable from here)"))


OLMOEARTH_PRETRAINED = {f"olmoearth_v1_{s}": _entry(s) for s in _SIZES}

for _size, (_d, _depth, _heads) in _SIZES.items():
    register_encoder(f"olmoearth_v1_{_size}", OlmoEarthEncoder, pretrained_cfg=OLMOEARTH_PRETRAINED[
        f"olmoearth_v1_{_size}"], embed_dim=_d, depth=_depth, num_heads=_heads)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("olmoearth_test", like="olmoearth_v1_base", embed_dim=64, depth=4, num_heads=4)
