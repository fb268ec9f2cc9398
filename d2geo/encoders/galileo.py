"""Galileo (NASA Harvest) encoders: a ViT over channel-group tokens of Sentinel-2/-1 time series.

Galileo cuts each *channel group* of each date into ``p x p`` patches (one kernel per group:
Sentinel-1 VV+VH, Sentinel-2 RGB, red edge, NIR 10 m, NIR 20 m, SWIR, NDVI), so a sample of
``T`` dates, ``G`` groups and an ``h x w`` patch grid is ``T * G * h * w`` tokens. Every token
gets, concatenated over four quarters of the width:

1. a learned embedding of its channel group (``s_t_channel_embed``);
2. a fixed sine-cosine encoding of its date index ``0..T-1``;
3. a fixed encoding of its calendar month (``sin``/``cos`` of ``2 pi m / 12``);
4. a fixed 2-D sine-cosine encoding of the patch column (first half) and row (second half),
   the indices scaled by ``gsd * p / 10`` (the ground size of a patch over Galileo's 10 m).

There are no prefix tokens. Of the published models' other inputs, the encoder takes the
*space* group SRTM (``elevation`` in metres, a DEM, and ``slope`` in degrees; see
:mod:`.galileo_srtm`): one token per patch and no date, embedded by its own kernel
(``space_embed.SRTM``) and encoded, as upstream does, as its group embedding
(``sp_channel_embed``), zeros in the date and month quarters, and the same spatial encoding.
A DEM is static: its channel must be the same in every date (checked; the first date is
used). Without a ``slope`` channel the slope is derived from the elevation and ``gsd`` as
Galileo's pipeline defines it (``ee.Terrain.slope``). The other inputs (Dynamic World,
WorldCereal, ERA5, TerraClimate, VIIRS, LandScan, location) are refused by name. Upstream
leaves a missing group out of attention (masked tokens are removed); building the encoder with
fewer groups does exactly that.

Feature maps: :meth:`forward_features` keeps the ``(B, D, T, h, w)`` contract of the temporal
encoders. Each date's map is, per patch, the mean of that date's channel-group tokens and the
patch's space (SRTM) tokens, where a space token, which belongs to no date, counts ``1 / T`` in
every date (``(sum_g x[t, g] + sum_s x_s / T) / (G + S / T)``; after the final norm when
``norm=True``). So the mean over the dates, the backbone's ``temporal_fold="mean"``, is exactly
upstream's per-patch average of all tokens, space-time *and* space
(``Encoder.apply_mask_and_average_tokens_per_patch``), while every date's map still carries the
terrain for the folds that do not average (``"concat"``, ``"diff"``, ``"attention"``). The
alternatives were worse: a separate "date" for the space tokens breaks ``T = num_frames`` and
the folds; averaging the space tokens into date 0 only makes the dates unequal; leaving them
out of the maps loses the DEM from the features. Without SRTM the map is the mean over the
channel groups, as before. Token grids of any ``h x w`` are accepted (upstream asserts
``h == w``: a non-square grid is the square grid's top-left part, as upstream computes it with
the other patches masked out).

Metadata (see :mod:`d2geo.encoders.metadata`): ``timestamps`` ``(B, T)`` give the month of
each date (UTC); without them the encoder refuses, unless it was built with ``default_month``
(0 = January; used with a warning). ``gsd`` ``(B,)`` in metres; without it 10 m (Galileo's
``BASE_GSD``, Sentinel-2's finest) is used (with a warning when it derives the slope).
"""
from __future__ import annotations

import logging
import math
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.models.vision_transformer import Block

from .adapt import resize_patch
from .bands import BandError, match_bands, refuse_repeated_bands
from .base import EncoderInputError, GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .galileo_srtm import (GALILEO_ELEVATION_STATS, GALILEO_SLOPE_STATS, GALILEO_SRTM_BANDS, SRTM_GROUP,
                           UPSTREAM_SPACE_GROUPS, normalized_slope, parse_srtm_band, srtm_layout)
from .metadata import check_metadata, warn_once
from .modalities import MODALITY_SEP, PLATFORM_PREFIXES
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["GalileoEncoder", "GALILEO_GROUPS", "GALILEO_BANDS", "GALILEO_SRTM_BANDS", "GALILEO_S2_STATS",
           "GALILEO_S1_STATS", "GALILEO_ELEVATION_STATS", "GALILEO_SLOPE_STATS", "galileo_stats",
           "galileo_sincos_1d", "galileo_month_table", "galileo_spatial_table"]

BASE_GSD = 10.0
#: the space-time channel groups in the checkpoint's order: (name, sensor, band ids)
GALILEO_GROUPS = (
    ("S1", "S1", ("VV", "VH")),
    ("S2_RGB", "S2", ("B02", "B03", "B04")),
    ("S2_Red_Edge", "S2", ("B05", "B06", "B07")),
    ("S2_NIR_10m", "S2", ("B08",)),
    ("S2_NIR_20m", "S2", ("B8A",)),
    ("S2_SWIR", "S2", ("B11", "B12")),
    ("NDVI", None, ("NDVI",)),
)
#: every band the encoder takes, as channel names (Sentinel-2 first: the usual default)
GALILEO_BANDS = (
    "S2:B02", "S2:B03", "S2:B04", "S2:B05", "S2:B06", "S2:B07", "S2:B08", "S2:B8A", "S2:B11", "S2:B12",
    "S1:VV", "S1:VH")
_SENSOR = {"S2": "sentinel-2-l1c", "S1": "sentinel-1"}
#: inputs of the published models that this encoder does not take, by the names users give them
_UNSUPPORTED = {
    "Dynamic World (space group)": ("dw", "dynamic_world"),
    "WorldCereal (space group)": ("wc", "worldcereal"),
    "ERA5 (time group: temperature_2m, total_precipitation_sum)": ("era5", "temperature_2m",
                                                                   "total_precipitation_sum"),
    "TerraClimate (time group: def, soil, aet)": ("tc", "def", "soil", "aet"),
    "VIIRS (time group: avg_rad)": ("viirs", "avg_rad"),
    "LandScan (static group)": ("ls", "landscan"),
    "location (static group: x, y, z)": ("location",),
}
_TOP_LEVEL = ("pos_embed", "s_t_channel_embed", "sp_channel_embed", "t_channel_embed", "st_channel_embed")


# -- fixed encodings (as Galileo defines them) --------------------------------------------------
def galileo_sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Galileo's 1-D sine-cosine encoding ``(M, dim)`` of ``pos`` (flattened), float32.

    ``sin(pos * w_i)`` then ``cos(pos * w_i)`` with ``w_i = 10000 ** (-i / (2 * dim))``: note
    the ``2 * dim`` (MAE's tables use ``dim / 2``), as in the published model."""
    if dim % 2:
        raise ValueError(f"a sine-cosine encoding needs an even width, got {dim}")
    freq = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / dim / 2.0)
    angles = pos.reshape(-1, 1).float() * freq.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def galileo_month_table(dim: int) -> torch.Tensor:
    """``(12, dim)``: month ``m`` (0 = January) is ``sin(2 pi m / 12)`` in the first half of the
    channels and ``cos(2 pi m / 12)`` in the second."""
    angles = torch.arange(12, dtype=torch.float32) / (12 / (2 * math.pi))
    half = dim // 2
    return torch.cat([angles.sin()[:, None].expand(12, half), angles.cos()[:, None].expand(12, half)], dim=1)


def galileo_spatial_table(dim: int, grid: Sequence[int], scale: torch.Tensor) -> torch.Tensor:
    """``(B, h, w, dim)``: the column index (first half) and the row index (second half) times
    each sample's ``scale`` (``gsd * patch / 10``), each through :func:`galileo_sincos_1d`."""
    h, w = grid  # sizes, not ints: an exported model follows the input size
    rows = torch.arange(h, device=scale.device).view(1, h, 1).expand(1, h, w)
    cols = torch.arange(w, device=scale.device).view(1, 1, w).expand(1, h, w)
    s = scale.float().view(-1, 1, 1)
    cols, rows = cols * s, rows * s  # (B, h, w)
    B = s.shape[0]
    out = torch.cat([galileo_sincos_1d(dim // 2, cols), galileo_sincos_1d(dim // 2, rows)], dim=1)
    return out.reshape(B, h, w, dim)


def _months(timestamps: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` long: the UTC month (0 = January) of epoch-second timestamps."""
    flat = timestamps.detach().to("cpu", torch.float64).reshape(-1).tolist()
    months = [datetime.fromtimestamp(s, tz=timezone.utc).month - 1 for s in flat]
    return torch.tensor(months, dtype=torch.long).reshape(timestamps.shape).to(timestamps.device)


# -- channel names ------------------------------------------------------------------------------
def _parse_band(name: str) -> tuple[str | None, str]:
    """``"S2L1C:B04"`` -> ``("S2", "B04")``; ``"VV"`` -> ``("S1", "VV")``; ``"NDVI"`` -> ``(None, "NDVI")``."""
    if not isinstance(name, str):
        raise BandError(f"band names must be strings, got {name!r}")
    low = name.strip().lower()
    for what, names in _UNSUPPORTED.items():
        if low in names or low.split(MODALITY_SEP)[0] in names:
            raise BandError(
                f"band {name!r} is a Galileo {what} input, which d2geo's Galileo encoder does not take: it "
                f"takes the space-time groups (Sentinel-2 B02..B12 without B01/B09/B10, Sentinel-1 VV/VH, "
                f"NDVI) and the SRTM space group (elevation, slope); drop the band")
    if low == "ndvi":
        return None, "NDVI"
    if MODALITY_SEP in name:
        prefix, band = (s.strip() for s in name.split(MODALITY_SEP, 1))
        for platform, levels in PLATFORM_PREFIXES.items():
            if prefix.lower() == platform.lower() or prefix.lower() in (m.lower() for m in levels):
                return platform, band
        raise BandError(f"channel {name!r} names the modality {prefix!r}, which Galileo does not take: prefix "
                        f"Sentinel-2 bands with S2, S2L1C or S2L2A and Sentinel-1 bands with S1, S1GRD or S1RTC")
    return ("S1" if low in ("vv", "vh") else "S2"), name.strip()


def _group_layout(bands: Sequence[str]) -> tuple[list[tuple[int, list[int]]], tuple[int, int | None] | None]:
    """For the channel names ``bands``: ``[(group index, [input channel of each group band])]`` in
    checkpoint group order, and the SRTM channels ``(elevation, slope or None)`` (None: no SRTM).
    A group with only some of its bands, or a band Galileo does not have, is a
    :class:`BandError` naming it."""
    refuse_repeated_bands(bands, bands, where="Galileo bands")
    levels: dict[str, set] = {}
    for name in bands:
        if isinstance(name, str) and MODALITY_SEP in name:
            prefix = name.split(MODALITY_SEP, 1)[0].strip().upper()
            for platform, names in PLATFORM_PREFIXES.items():
                if prefix in names:
                    levels.setdefault(platform, set()).add(prefix)
    mixed = {p: sorted(v) for p, v in levels.items() if len(v) > 1}
    if mixed:
        raise BandError(f"channels of one sensor from two processing levels ({mixed}): Galileo embeds each "
                        f"channel group as one image; take every band of a sensor from one level")
    where: dict[tuple, int] = {}
    srtm_names = []
    for i, name in enumerate(bands):
        srtm = parse_srtm_band(name) if isinstance(name, str) else None
        if srtm is not None:
            srtm_names.append((i, srtm))
            continue
        sensor, band = _parse_band(name)
        pool = [b for _, s, bs in GALILEO_GROUPS if s == sensor for b in bs]
        (hit,) = match_bands([band], pool, sensor=_SENSOR.get(sensor), available_sensor=_SENSOR.get(sensor),
                             where=f"Galileo's {sensor or 'NDVI'} bands")
        if hit is None:
            raise BandError(f"band {name!r} is not a Galileo input: Galileo takes Sentinel-2 "
                            f"{', '.join(GALILEO_GROUPS[1][2] + GALILEO_GROUPS[2][2] + ('B08', 'B8A', 'B11', 'B12'))} "
                            f"(no B01, B09, B10), Sentinel-1 VV and VH, NDVI, and SRTM elevation (a DEM) and "
                            f"slope; drop it")
        key = (sensor, pool[hit])
        if key in where:
            raise BandError(f"bands {bands[where[key]]!r} and {name!r} are the same Galileo band {pool[hit]}")
        where[key] = i
    layout, missing = [], []
    for g, (gname, sensor, gbands) in enumerate(GALILEO_GROUPS):
        have = [where.get((sensor, b)) for b in gbands]
        if all(h is None for h in have):
            continue
        if any(h is None for h in have):
            missing.append(f"{gname} needs {list(gbands)}, got only "
                           f"{[b for b, h in zip(gbands, have) if h is not None]}")
            continue
        layout.append((g, have))
    if missing:
        raise BandError("Galileo embeds channel groups whole: " + "; ".join(missing)
                        + "; give every band of a group or none of it")
    srtm = srtm_layout(srtm_names)
    if not layout:
        raise BandError("no Galileo space-time band given; name Sentinel-2 and/or Sentinel-1 bands (e.g. 'S2:B04', "
                        "'S1:VV')" + (": the SRTM group (a DEM) is taken beside them, not alone" if srtm else ""))
    return layout, srtm


class GalileoEncoder(GeoEncoder):
    """A Galileo encoder with the :class:`GeoEncoder` interface (space-time groups and SRTM).

    Input ``(B, C, T, H, W)`` (or ``(B, C, H, W)`` when ``num_frames == 1``), channels named by
    ``bands``; output ``(B, D, T, h, w)`` maps, per date the mean over the channel groups with
    the SRTM token shared out over the dates (see the module doc).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture (nano 128/4/8, tiny 192/12/3,
            base 768/12/12; MLP ratio 4).
        patch_size: patch size to run at (upstream's ``patch_size`` argument). The published
            kernels are ``max_patch_size`` (8); other sizes are resampled on load with FlexiViT's
            pseudo-inverse, as upstream resamples them on every call. Default: ``max_patch_size``.
        num_frames: dates per sample, at most ``max_sequence_length`` (24).
        bands: the input channels: Sentinel-2 bands (``"S2:B04"``, ``"S2L2A:B04"`` or bare ids),
            Sentinel-1 (``"S1:VV"``, ``"VV"``) and ``"NDVI"``; whole groups only. Optionally the
            SRTM space group: ``"elevation"`` (also ``"DEM"``, ``"DEM:DEM"``, ``"SRTM:elevation"``;
            metres) and ``"slope"`` (degrees; derived from the elevation and ``gsd`` when not
            given), the same in every date, normalized with :func:`galileo_stats`.
        default_month: the month (0 = January) used when metadata has no timestamps; ``None``:
            timestamps are required.
        drop_path_rate: stochastic depth, the same in every block as upstream.
    """

    input_ndim = 3
    num_prefix_tokens = 0
    tubelet_size = 1

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 patch_size: int | None = None, max_patch_size: int = 8, max_sequence_length: int = 24,
                 num_frames: int = 1, bands: Sequence[str] = GALILEO_BANDS, default_month: int | None = None,
                 drop_path_rate: float = 0.0, patch_resample: str = "pinv"):
        super().__init__()
        if embed_dim % 8:
            raise ValueError(f"Galileo splits embed_dim into four sine-cosine quarters: it must be divisible "
                             f"by 8, got {embed_dim}")
        if not 1 <= num_frames <= max_sequence_length:
            raise ValueError(f"num_frames={num_frames} must be 1..{max_sequence_length} (max_sequence_length)")
        patch_size = max_patch_size if patch_size is None else patch_size
        if patch_size < 1 or patch_size > max_patch_size:
            raise ValueError(f"patch_size={patch_size} must be 1..{max_patch_size} (max_patch_size)")
        if default_month is not None and not (isinstance(default_month, int) and 0 <= default_month < 12):
            raise ValueError(f"default_month={default_month!r} must be an int 0..11 (0 = January) or None")
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.max_patch_size, self.max_sequence_length = max_patch_size, max_sequence_length
        self.num_frames, self.default_month, self.patch_resample = num_frames, default_month, patch_resample
        self.bands = tuple(bands)
        self._layout, self._srtm = _group_layout(self.bands)
        q = embed_dim // 4
        self.space_time_embed = nn.ModuleDict({
            GALILEO_GROUPS[g][0]: nn.ModuleDict({"proj": nn.Conv2d(len(idx), embed_dim, patch_size, patch_size)})
            for g, idx in self._layout})
        self.s_t_channel_embed = nn.Parameter(torch.zeros(len(GALILEO_GROUPS), q))
        if self._srtm is not None:  # elevation and slope (given or derived): upstream's 2-channel kernel
            self.space_embed = nn.ModuleDict(
                {SRTM_GROUP: nn.ModuleDict({"proj": nn.Conv2d(2, embed_dim, patch_size, patch_size)})})
            self.sp_channel_embed = nn.Parameter(torch.zeros(1, q))  # the SRTM row of upstream's (3, q)
        self.register_buffer("time_table", galileo_sincos_1d(q, torch.arange(max_sequence_length)), persistent=False)
        self.register_buffer("month_table", galileo_month_table(q), persistent=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm, drop_path=drop_path_rate)
            for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def groups(self) -> list[str]:
        """The space-time channel groups this encoder embeds, in token order."""
        return [GALILEO_GROUPS[g][0] for g, _ in self._layout]

    @property
    def space_groups(self) -> list[str]:
        """The space groups this encoder embeds (``["SRTM"]`` or none), after the space-time tokens."""
        return [SRTM_GROUP] if self._srtm is not None else []

    @property
    def derives_slope(self) -> bool:
        """Whether the slope is derived from the elevation (no ``slope`` channel given)."""
        return self._srtm is not None and self._srtm[1] is None

    def set_window_attention(self, window_size, global_blocks=()) -> None:
        if window_size:
            raise EncoderInputError("Galileo's tokens are channel groups x dates x patches, not one patch grid: "
                                    "window attention does not apply; leave window_size unset")

    # -- input ---------------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(x) and x.ndim == 4:
            if self.num_frames != 1:
                raise EncoderInputError(
                    f"got a 4-D image {tuple(x.shape)} but the encoder was built for num_frames={self.num_frames}; "
                    f"pass (B, C, T, H, W) with T={self.num_frames}, or build it with num_frames=1")
            x = x.unsqueeze(2)
        x = super().check_input(x)
        if x.shape[2] != self.num_frames:
            raise EncoderInputError(f"input has {x.shape[2]} dates but the encoder was built for "
                                    f"num_frames={self.num_frames}; build it with num_frames={x.shape[2]}")
        return x

    def _month_of(self, meta: Mapping[str, Any], B: int, T: int, device) -> torch.Tensor:
        if "timestamps" in meta:
            if is_tracing():
                raise EncoderInputError("Galileo's month encoding cannot be traced: the traced model would keep "
                                        "this batch's months; build it with default_month=... and leave "
                                        "'timestamps' out of the metadata of a model to export")
            return _months(meta["timestamps"]).to(device)
        if self.default_month is None:
            raise EncoderInputError(
                "Galileo encodes the calendar month of every date and has no 'unknown month': give metadata "
                "'timestamps' (B, T) (the d2geo datasets read them from the GeoTIFF TIMESTAMPS tag), or build "
                "the encoder with default_month=0..11 to use one month for all dates")
        warn_once(type(self).__name__, "timestamps", f"month {self.default_month} (default_month) for every date")
        return torch.full((B, T), self.default_month, dtype=torch.long, device=device)

    # -- GeoEncoder hooks ------------------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        B, C, T, H, W = x.shape
        meta = check_metadata(metadata, batch_size=B, num_frames=T, num_bands=C, device=x.device)
        p = self.patch_size
        h, w = H // p, W // p
        frames = x.transpose(1, 2).reshape(B * T, C, H, W)
        toks = []
        for g, idx in self._layout:
            proj = self.space_time_embed[GALILEO_GROUPS[g][0]]["proj"]
            toks.append(proj(frames[:, idx]).reshape(B, T, -1, h, w))  # (B, T, D, h, w)
        tok = torch.stack(toks, dim=2).permute(0, 1, 2, 4, 5, 3)  # (B, T, G, h, w, D)
        G, q = len(toks), self.embed_dim // 4
        chan = self.s_t_channel_embed[[g for g, _ in self._layout]]  # (G, q)
        months = self._month_of(meta, B, T, x.device)
        gsd = meta["gsd"].to(torch.float32).reshape(-1).expand(B) if "gsd" in meta else \
            torch.full((B,), BASE_GSD, device=x.device)
        spatial = galileo_spatial_table(q, (h, w), gsd * p / BASE_GSD)  # (B, h, w, q)
        enc = torch.cat([
            chan.view(1, 1, G, 1, 1, q).expand(B, T, G, h, w, q),
            self.time_table[:T].view(1, T, 1, 1, 1, q).expand(B, T, G, h, w, q),
            self.month_table[months].view(B, T, 1, 1, 1, q).expand(B, T, G, h, w, q),
            spatial.view(B, 1, 1, h, w, q).expand(B, T, G, h, w, q),
        ], dim=-1)
        tok = (tok + enc.to(tok.dtype)).reshape(B, T * G * h * w, self.embed_dim)
        if self._srtm is not None:
            tok = torch.cat([tok, self._space_tokens(x, meta, spatial)], dim=1)
        return tok, (T, h, w), G

    def _space_tokens(self, x: torch.Tensor, meta, spatial: torch.Tensor) -> torch.Tensor:
        """``(B, h * w, D)``: the SRTM token of every patch with its encoding (group embedding,
        zeros for the date and month quarters, the spatial encoding), as upstream's ``space_embed``."""
        elev, slope = self._srtm
        idx = [elev] if slope is None else [elev, slope]
        static = x[:, idx]  # (B, 1|2, T, H, W)
        if static.shape[2] > 1 and not is_tracing() and not torch.equal(static, static[:, :, :1].expand_as(static)):
            names = ", ".join(repr(self.bands[i]) for i in idx)
            raise EncoderInputError(
                f"the SRTM channels ({names}) differ between the dates of a sample: Galileo's SRTM group is "
                f"static (one token per patch, no date); give the same DEM in every date")
        static = static[:, :, 0]  # (B, 1|2, H, W)
        if slope is None:
            if "gsd" in meta:
                gsd = meta["gsd"].to(torch.float32).reshape(-1).expand(x.shape[0])
            else:
                warn_once(type(self).__name__, "gsd",
                          f"{BASE_GSD:g} m per pixel to derive the slope from the elevation")
                gsd = torch.full((x.shape[0],), BASE_GSD, device=x.device)
            static = torch.cat([static, normalized_slope(static[:, 0], gsd)[:, None]], dim=1)
        B, h, w, q = spatial.shape
        tok = self.space_embed[SRTM_GROUP]["proj"](static).flatten(2).transpose(1, 2)  # (B, h * w, D)
        enc = torch.cat([self.sp_channel_embed.view(1, 1, q).expand(B, h * w, q),
                         spatial.new_zeros(B, h * w, 2 * q), spatial.reshape(B, h * w, q)], dim=-1)
        return tok + enc.to(tok.dtype)

    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int], norm: bool) -> torch.Tensor:
        if norm:
            tokens = self._final_norm(tokens)
        T, h, w = grid
        B, _, D = tokens.shape
        G, S = len(self._layout), len(self.space_groups)
        space_time = tokens[:, : T * G * h * w].reshape(B, T, G, h, w, D)
        if S == 0:
            fmap = space_time.mean(dim=2)  # mean over the channel groups
        else:  # a space token counts 1/T in every date: the mean over dates is upstream's per-patch average
            space = tokens[:, T * G * h * w:].reshape(B, S, h, w, D).sum(dim=1)
            fmap = (space_time.sum(dim=2) + space.unsqueeze(1) / T) / (G + S / T)
        return fmap.permute(0, 4, 1, 2, 3).contiguous()

    def get_blocks(self):
        return self.blocks

    def final_norm_module(self):
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {"s_t_channel_embed"} | ({"sp_channel_embed"} if self._srtm is not None else set())

    # -- checkpoints -----------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published ``encoder.pt`` layout (``space_time_embed.<group>.proj``, ``blocks.i.attn.q/k/v``,
        the ``.backbone`` some files carry) and d2geo's own (``attn.qkv``).

        Fused ``q``/``k``/``v`` become timm's ``qkv``; the fixed tables (``pos_embed``,
        ``month_embed``) are recomputed; an encoder built with SRTM loads ``space_embed.SRTM`` and
        the SRTM row of ``sp_channel_embed``; the other space, time and static embeddings and the
        kernels of groups this encoder does not take are named in ``ignored``; kernels are
        resampled to ``patch_size``."""
        sd = {k.replace(".backbone", ""): v for k, v in state_dict.items()}
        anchor = "blocks.0.norm1.weight"
        sd = strip_to_anchor(sd, anchor, top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        mine = set(self.groups)
        for k, v in sd.items():
            if k in ("pos_embed", "month_embed.weight"):
                out.ignore(k, "a fixed sine-cosine table, recomputed")
            elif k.startswith(("space_embed.", "sp_channel_embed")) and self._srtm is None:
                out.ignore(k, "an embedding of Galileo's space groups (SRTM, Dynamic World, WorldCereal): this "
                              "encoder was built without SRTM (add 'elevation' or 'DEM' to bands to use it)")
            elif k.startswith("space_embed.") and k.split(".")[1] != SRTM_GROUP:
                out.ignore(k, f"the kernel of the space group {k.split('.')[1]} (Dynamic World / WorldCereal), "
                              "which this encoder does not take")
            elif k == "sp_channel_embed":
                if v.ndim != 2 or v.shape[0] not in (1, len(UPSTREAM_SPACE_GROUPS)):
                    raise CheckpointError(f"{k} has shape {tuple(v.shape)}, not ({len(UPSTREAM_SPACE_GROUPS)}, D/4) "
                                          "(published) or (1, D/4) (d2geo): not a Galileo checkpoint")
                if v.shape[0] > 1:
                    out.ignore(f"{k}[1:]",
                               "the group embeddings of Dynamic World and WorldCereal (row 0, SRTM, is loaded)")
                out[k] = v[:1]
            elif k.startswith(("time_embed.", "static_embed.", "t_channel_embed", "st_channel_embed")):
                out.ignore(k, "an embedding of Galileo's time/static inputs, which this encoder does not take")
            elif k.startswith(("space_time_embed.", "space_embed.")):
                group = k.split(".")[1]
                if group not in mine and not k.startswith("space_embed."):
                    out.ignore(k, f"the kernel of channel group {group}, which this encoder was not built with")
                elif k.endswith("proj.weight"):
                    if v.ndim != 4:
                        raise CheckpointError(f"{k} has shape {tuple(v.shape)}, not a (D, C, p, p) kernel: "
                                              "not a Galileo checkpoint")
                    out[k] = resize_patch(v, self.patch_size, self.patch_resample)
                else:
                    out[k] = v
            elif ".attn.q." in k or ".attn.k." in k or ".attn.v." in k:
                continue  # fused below
            else:
                out[k] = v
        for i in range(self.depth):
            pre = f"blocks.{i}.attn."
            for kind in ("weight", "bias"):
                parts = [sd.get(f"{pre}{n}.{kind}") for n in "qkv"]
                if all(t is not None for t in parts):
                    out[f"{pre}qkv.{kind}"] = torch.cat(parts, dim=0)
        return out


# -- variants -----------------------------------------------------------------------------------
_VARIANTS = {
    "galileo_nano": dict(embed_dim=128, depth=4, num_heads=8),
    "galileo_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "galileo_base": dict(embed_dim=768, depth=12, num_heads=12),
}

# Statistics of config/normalization.json of github.com/nasaharvest/galileo (key "13": the 13
# space-time bands). Galileo normalises x -> (x - (mean - 2 std)) / (4 std): written here as the
# mean and std of that affine map (mean - 2 std, 4 std), so (x - mean') / std' is exactly it.
_S2_MEAN = (1395.3408730676722, 1338.4026921784578, 1343.09883810357, 1543.8607982512297, 2186.2022069512263,
            2525.0932853316694, 2410.3377187373408, 2750.2854646886753, 2234.911100061487, 1474.5311266077113)
_S2_STD = (917.7041440370853, 913.2988423581528, 1092.678723527555, 1047.2206083460424, 1048.0101611156767,
           1143.6903026819996, 1098.979177731649, 1204.472755085893, 1145.9774063078878, 980.2429840007796)
_S1_MEAN, _S1_STD = (-11.728724389184965, -18.85558188024017), (4.887145774840316, 5.730270320384293)


def _affine(mean, std):
    return tuple(m - 2 * s for m, s in zip(mean, std)), tuple(4 * s for s in std)


GALILEO_S2_STATS = InputStats("galileo-s2", "sentinel-2-l1c", GALILEO_BANDS[:10], *_affine(_S2_MEAN, _S2_STD), "dn")
GALILEO_S1_STATS = InputStats("galileo-s1", "sentinel-1", GALILEO_BANDS[10:], *_affine(_S1_MEAN, _S1_STD), "dB")
_STATS = (GALILEO_S2_STATS, GALILEO_S1_STATS, GALILEO_ELEVATION_STATS, GALILEO_SLOPE_STATS)


def galileo_stats(bands: Sequence[str]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of Galileo's normalization for ``bands`` (channel names as the
    encoder takes them), e.g. for ``model.pixel_mean/std``: the publisher's statistics of the
    Sentinel-2, Sentinel-1 and SRTM bands in the form ``(x - mean) / std``; NDVI, which
    upstream leaves as it is, mean 0 and std 1."""
    layout, srtm = _group_layout(list(bands))
    per_channel: dict[int, tuple[float, float]] = {}
    for g, idx in layout:
        gname, sensor, gbands = GALILEO_GROUPS[g]
        for i, band in zip(idx, gbands):
            if sensor is None:
                per_channel[i] = (0.0, 1.0)
                continue
            st = GALILEO_S2_STATS if sensor == "S2" else GALILEO_S1_STATS
            j = [b.split(MODALITY_SEP)[1] for b in st.bands].index(band)
            per_channel[i] = (st.mean[j], st.std[j])
    if srtm is not None:
        for i, st in zip(srtm, (GALILEO_ELEVATION_STATS, GALILEO_SLOPE_STATS)):
            if i is not None:
                per_channel[i] = (st.mean[0], st.std[0])
    return [per_channel[i][0] for i in range(len(bands))], [per_channel[i][1] for i in range(len(bands))]


_HF_REV = "f039dd5dde966a931baeda47eb680fa89b253e4e"
_GH_REV = "0f0b5b95ac81acef4b74cf4686dc877202f4541b"
_PAGE = "https://huggingface.co/nasaharvest/galileo"
_NOTES = ("Sentinel-2 L1C (COPERNICUS/S2_HARMONIZED) x 10 000 and Sentinel-1 GRD in dB, as exported from Earth "
          "Engine by the publisher, and SRTM elevation (m) with its slope (degrees, Earth Engine's "
          "ee.Terrain.slope at 10 m); statistics from the publisher's config/normalization.json, in Galileo's "
          "scaling (x - mean + 2 std) / (4 std), written as mean - 2 std and 4 std (hence negative means). "
          "Pretraining samples are 96 px x 12 dates (the publisher's DATASET_OUTPUT_HW, NUM_TIMESTEPS), "
          "cropped to grids of 4..12 patches a side with 3..12 dates at patch sizes 1..8 (its config's "
          "shape_time_combinations)")
_PRETRAINED = {
    "galileo_nano": PretrainedCfg(
        source=f"https://raw.githubusercontent.com/nasaharvest/galileo/{_GH_REV}/data/models/nano/encoder.pt",
        sha256="eab6acacf527886a508a555bc24efe4b4a2cf91b162e84cd1c4a1807e942180c", license="MIT",
        stats=_STATS, input_size=96, patch_size=8, num_frames=12,
        page="https://github.com/nasaharvest/galileo", notes=_NOTES,
        pinned_by=(f"the file data/models/nano/encoder.pt at commit {_GH_REV[:8]} of the publisher's GitHub "
                   "repository; its sha256 computed from that public file")),
}
for _size in ("tiny", "base"):
    _PRETRAINED[f"galileo_{_size}"] = PretrainedCfg(
        source=f"hf://nasaharvest/galileo@{_HF_REV}/models/{_size}/encoder.pt", license="MIT",
        stats=_STATS, input_size=96, patch_size=8, num_frames=12,
        page=_PAGE, notes=_NOTES,
        pinned_by=f"public GitHub projects pinning nasaharvest/galileo at {_HF_REV[:8]} as an immutable commit "
                  "(no public sha256 found; the Hub's LFS sha256 is checked after download)")
for _name, _cfg in _VARIANTS.items():
    register_encoder(_name, GalileoEncoder, pretrained_cfg=_PRETRAINED[_name], **_cfg)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("galileo_test", like="galileo_base", embed_dim=64, depth=4, num_heads=4)
