"""AnySat (Astruc et al., 2025, "AnySat: One Earth Observation Model for Many Resolutions, Scales,
and Modalities"; github.com/gastruc/AnySat, the ``torch.hub`` model of its ``hubconf.py``).

AnySat cuts every input into patches of a fixed size **in metres** (``patch_size_m``, a multiple of
10 m) whatever the modality's resolution. Each patch is split into 10 m *sub-patches*: one pixel
of a 10 m time series (Sentinel-2, Sentinel-1), 5 x 5 cells of 10 px (2 m) of 0.2 m aerial
imagery. A per-modality projector turns every sub-patch into a token:

* time series (``s2``, ``s1-asc``): a lightweight temporal attention encoder (L-TAE) per pixel:
  a per-date MLP (Linear, GroupNorm(4), ReLU), an optional GroupNorm over (channels, dates), a
  sine code of the day of the year added, 16 heads of one learned query each attending over the
  dates (keys from a linear layer, values the head's slice of the channels), an MLP and a
  GroupNorm(16);
* aerial images (``aerial``): a 10 px convolution and an MLP (Linear, LayerNorm, ReLU).

A shared *spatial encoder* (a class token, sine codes of the sub-patch positions in metres,
transformer blocks with contextual relative position codes on the keys (iRPE, Euclidean buckets),
a LayerNorm) turns the sub-patches of every patch into one patch token (its class token). The
patch tokens, with sine codes of the patch positions times the scale (``patch_size_m / 10``) and a
class token, go through plain transformer blocks and a final cross-attention block whose queries
are a learned vector plus the patch codes (again with key iRPE); its output is AnySat's
``"patch"`` output, the feature map this encoder returns (stride ``patch_size_m / gsd`` pixels).
AnySat's ``"dense"`` output (patch tokens concatenated with the spatial encoder's sub-patch
tokens, ``2 x embed_dim`` at 10 m) is not built.

Upstream details kept as the published code computes them (the weights were trained so):
the iRPE's python path (the one the hub model runs without its optional compiled op) takes the
relative-position term of **every** head from the first head's query; aerial sub-patch tokens are
ordered by 10 m cell, then 2 m cell, while their position codes are in raster order of the 2 m
cells; the cross-attention block has no residual around its attention.

Inputs: one modality per encoder (``modality=``), or several (below). Time series take ``(B, C, T, H, W)`` and need
the dates (``metadata["timestamps"]``, read as the day of the year, 1 January = 0, as upstream's
``*_dates``; or ``default_doy=`` for a single-date encoder without timestamps); ``frames=1`` makes
a single-date Sentinel-2 encoder that takes ``(B, C, H, W)``. ``metadata["gsd"]`` is required and
must be the modality's resolution (10 m; 0.2 m for aerial): the projectors' sub-patches are fixed
in metres. Upstream's hub model asserts square inputs; here the patch grid may be rectangular
(position codes and relative-position buckets follow rows and columns), which agrees with upstream
wherever upstream runs (square grids).

Several modalities (upstream's multi-modal forward pass) for the 10 m time series: channels named
``"<MODALITY>:<band>"`` as :func:`d2geo.data.geotiff.read_modalities` stacks one file per modality
(``S2L2A`` -> ``s2``, ``S1RTC`` or ``S1GRD`` -> ``s1-asc``; a bare ``"S2L2A"`` is upstream's ten bands), e.g.
``bands=["S2L2A", "S1RTC"]``. Each modality has its own projector and shares the spatial encoder and the
patch codes; the patch tokens of all modalities (modality after modality, after the class token) go
through the trunk blocks as one sequence, and the cross-attention block's one query per patch attends
over every modality's tokens (their key iRPE buckets repeated per modality, as upstream): its output, the
feature map, is one vector per patch. Intermediate (trunk) taps, which upstream does not output as maps,
average each position's modality tokens. One tensor means one set of dates for both modalities (upstream
allows different dates per modality).
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.layers import Mlp
from timm.models.vision_transformer import Block

from .bands import BandError, expand_bands, sensor_band
from .base import EncoderInputError, GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor

from .metadata import check_gsd
from .modalities import MODALITY_SEP, find_modality
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["AnySatEncoder", "ANYSAT_MODALITIES", "ANYSAT_FROM_MODALITY", "ANYSAT_PRETRAINED", "anysat_buckets",
           "anysat_sincos", "day_of_year"]

#: the modalities built here: bands (upstream's channel order), native resolution (m), whether a
#: time series, the L-TAE's input GroupNorm, and the sub-patch side in the spatial encoder's
#: position codes (upstream's ``input_res``: metres between sub-patch codes)
ANYSAT_MODALITIES = {
    "s2": dict(bands=("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"), gsd=10.0,
               temporal=True, in_norm=True, code_res=10.0),
    "s1-asc": dict(bands=("VV", "VH"), gsd=10.0, temporal=True, in_norm=False, code_res=10.0),
    "aerial": dict(bands=("red", "green", "blue", "nir"), gsd=0.2, temporal=False, in_norm=False, code_res=2.0),
}
#: d2geo's modality names (``modalities.py``, the ``"<MODALITY>:<band>"`` channel prefixes) -> upstream's
ANYSAT_FROM_MODALITY = {"S2L2A": "s2", "S1GRD": "s1-asc", "S1RTC": "s1-asc"}
#: upstream's other projectors (present in the published file, not built here)
_UNBUILT = ("aerial-flair", "spot", "naip", "s1", "alos", "l7", "l8", "modis")
_RPE_ALPHA, _RPE_BETA, _RPE_GAMMA = 1.9, 3.8, 15.2  # iRPE ratio 1.9: alpha, beta, gamma = 1, 2, 8 x ratio
_RPE_BUCKETS = 2 * int(_RPE_BETA) + 2  # -beta..beta, plus the class token's bucket


def anysat_sincos(dim: int, h: int, w: int, step: float) -> torch.Tensor:
    """``(1 + h*w, dim)`` codes: zeros for the class token, then MAE's 2-D sine-cosine code of
    (column, row) x ``step`` for the cells in raster order (AnySat's ``get_2d_sincos_*``)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim / 4.0))
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
    parts = []
    for pos in (cols * step, rows * step):
        angle = pos.reshape(-1, 1) * omega[None]
        parts += [angle.sin(), angle.cos()]
    return torch.cat([torch.zeros(1, dim), torch.cat(parts, dim=1)])


def anysat_buckets(h: int, w: int) -> torch.Tensor:
    """``(1 + h*w, 1 + h*w)`` iRPE bucket ids of an ``h x w`` grid after a class token: the
    rounded Euclidean distance through the piecewise index (exact up to ``alpha``, logarithmic
    beyond, capped at ``beta``), shifted by ``beta``; the class token's rows and columns get the
    extra bucket."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    pos = torch.stack([rows.reshape(-1), cols.reshape(-1)], 1)
    dis = (pos[:, None] - pos[None]).square().sum(-1).float().sqrt().round()
    far = (_RPE_ALPHA + torch.log(dis.clamp(min=1e-6) / _RPE_ALPHA) / math.log(_RPE_GAMMA / _RPE_ALPHA)
           * (_RPE_BETA - _RPE_ALPHA)).round().clip(max=_RPE_BETA)
    idx = torch.where(dis <= _RPE_ALPHA, dis, far).long() + int(_RPE_BETA)
    out = torch.full((1 + h * w, 1 + h * w), _RPE_BUCKETS - 1, dtype=torch.long)
    out[1:, 1:] = idx
    return out


def day_of_year(timestamps: torch.Tensor) -> torch.Tensor:
    """Day of the year (1 January = 0) of UTC ``timestamps`` (seconds since the epoch), in tensor
    ops (traceable; the proleptic Gregorian calendar by Hinnant's ``civil_from_days``)."""
    days = torch.div(timestamps, 86400, rounding_mode="floor").long()
    z = days + 719468
    era = torch.div(z, 146097, rounding_mode="floor")
    doe = z - era * 146097  # day of the 400-year era
    yoe = torch.div(doe - doe // 1460 + doe // 36524 - doe // 146096, 365, rounding_mode="floor")
    doy_march = doe - (365 * yoe + yoe // 4 - yoe // 100)  # days since 1 March
    year = yoe + era * 400 + (doy_march >= 306).long()  # January and February belong to the next year
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return torch.where(doy_march >= 306, doy_march - 306, doy_march + 59 + leap.long())


def _key_rpe(q: torch.Tensor, table: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
    """Contextual key iRPE term ``(B, 1, Lq, Lk)``: the first head's query against the shared
    ``(1, head_dim, buckets)`` table, read at each pair's bucket (upstream's python path)."""
    look = q[:, 0] @ table[0]  # (B, Lq, nb)
    return torch.gather(look, 2, buckets.to(q.device)[None].expand(q.shape[0], -1, -1)).unsqueeze(1)


class _RPEAttention(nn.Module):
    """Self-attention with a key iRPE term (the spatial encoder's)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.rpe_k = nn.Module()
        self.rpe_k.lookup_table_weight = nn.Parameter(torch.zeros(1, dim // num_heads, _RPE_BUCKETS))

    def forward(self, x: torch.Tensor, buckets: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q = q * (C // self.num_heads) ** -0.5
        attn = q @ k.transpose(-2, -1) + _key_rpe(q, self.rpe_k.lookup_table_weight, buckets)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C))


class _SpatialBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _RPEAttention(dim, num_heads)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, buckets):
        x = x + self.attn(self.norm1(x), buckets)
        return x + self.mlp(self.norm2(x))


class _SpatialEncoder(nn.Module):
    """Sub-patch tokens ``(B*n, s, D)`` of ``side x side`` position codes -> one token per patch."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(_SpatialBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, side: int, step: float) -> torch.Tensor:
        codes = anysat_sincos(x.shape[-1], side, side, step).to(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + codes
        buckets = anysat_buckets(side, side)
        for blk in self.blocks:
            x = blk(x, buckets)
        return self.norm(x)[:, 0]


class _CrossBlock(nn.Module):
    """The last block: a learned query plus the patch codes attends over the tokens (no residual
    around the attention), then an MLP with its residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = nn.Module()
        self.attn.wk, self.attn.wv, self.attn.proj = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.attn.q_learned = nn.Parameter(torch.zeros(1, 1, dim))
        self.attn.rpe_k = nn.Module()
        self.attn.rpe_k.lookup_table_weight = nn.Parameter(torch.zeros(1, dim // num_heads, _RPE_BUCKETS))
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, grid: tuple[int, int], scale: int) -> torch.Tensor:
        """``x``: the class token, then ``M`` modalities' ``h * w`` patch tokens; one query per patch
        (and the class token) attends over all of them (upstream's ``forward_release``)."""
        a, (h, w) = self.attn, grid
        y = self.norm1(x)
        B, N, C = y.shape
        L, M = 1 + h * w, (N - 1) // (h * w)
        n, hd = self.num_heads, C // self.num_heads
        q = (a.q_learned + anysat_sincos(C, h, w, float(scale)).to(y)).reshape(1, L, n, hd).transpose(1, 2)
        q = q.expand(B, -1, -1, -1)
        k = a.wk(y).reshape(B, N, n, hd).transpose(1, 2)
        v = a.wv(y).reshape(B, N, n, hd).transpose(1, 2)
        buckets = anysat_buckets(h, w)
        if M > 1:  # every modality's patch tokens sit at the same positions: their key buckets repeat
            buckets = torch.cat([buckets[:, :1], buckets[:, 1:].repeat(1, M)], 1)
        attn = (q @ k.transpose(-2, -1)) * hd**-0.5 + _key_rpe(q, a.rpe_k.lookup_table_weight, buckets)
        x = a.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(B, L, C))
        return x + self.mlp(self.norm2(x))


class _LTAE(nn.Module):
    """Upstream's ``LTAE2d`` (see the module docstring): ``(B, T, C, H, W)`` and ``(B, T)`` days of
    the year -> ``(B, D, H, W)``."""

    def __init__(self, in_chans: int, dim: int, in_norm: bool, n_head: int = 16, d_k: int = 8, period: float = 367.0):
        super().__init__()
        widths = [in_chans, dim // 8, dim // 2, dim, dim * 2, dim]
        layers = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.GroupNorm(4, b), nn.ReLU(), nn.Dropout(0.0)]
        self.inconv = nn.Sequential(*layers)
        self.in_norm = nn.GroupNorm(n_head, dim) if in_norm else nn.Identity()
        self.n_head, self.d_k, self.period = n_head, d_k, period
        self.attention_heads = nn.Module()
        self.attention_heads.Q = nn.Parameter(torch.zeros(n_head, d_k))
        self.attention_heads.fc1_k = nn.Linear(dim, n_head * d_k)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GroupNorm(4, dim), nn.ReLU())
        self.out_norm = nn.GroupNorm(n_head, dim)

    def date_code(self, doy: torch.Tensor, dim: int) -> torch.Tensor:
        d = dim // self.n_head
        denom = self.period ** (2 * (torch.arange(d, device=doy.device) // 2).float() / d)
        t = doy[..., None].float() / denom
        t = torch.where(torch.arange(d, device=doy.device) % 2 == 0, t.sin(), t.cos())
        return t.repeat(*([1] * (t.ndim - 1)), self.n_head)

    def forward(self, x: torch.Tensor, doy: torch.Tensor) -> torch.Tensor:
        B, T, C, H, W = x.shape
        out = self.inconv(x.permute(0, 3, 4, 1, 2).reshape(-1, C)).reshape(B * H * W, T, -1)
        D = out.shape[-1]
        out = self.in_norm(out.transpose(1, 2)).transpose(1, 2)
        out = out + self.date_code(doy, D).repeat_interleave(H * W, dim=0).to(out)
        k = self.attention_heads.fc1_k(out).reshape(-1, T, self.n_head, self.d_k)
        attn = (torch.einsum("btnk,nk->bnt", k, self.attention_heads.Q) / self.d_k**0.5).softmax(-1)
        out = torch.einsum("bnt,btnc->bnc", attn, out.reshape(-1, T, self.n_head, D // self.n_head))
        out = self.out_norm(self.mlp(out.reshape(-1, D)))
        return out.reshape(B, H, W, D).permute(0, 3, 1, 2)


class _AerialProjector(nn.Module):
    """10 px convolution + MLP; sub-patch tokens of a ``scale x scale`` patch of 10 m cells, each
    cell's ``5 x 5`` 2 m tokens after it (upstream's order)."""

    def __init__(self, in_chans: int, dim: int, kernel: int = 10, res: float = 0.2):
        super().__init__()
        self.kernel, self.cells = kernel, int(10 / res) // kernel
        self.patch_embed = nn.Conv2d(in_chans, dim, kernel, stride=kernel, bias=False)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.LayerNorm(2 * dim), nn.ReLU(),
                                 nn.Linear(2 * dim, dim), nn.LayerNorm(dim), nn.ReLU())

    def forward(self, x: torch.Tensor, scale: int) -> torch.Tensor:
        t = self.patch_embed(x)  # (B, D, H/10, W/10)
        B, D, h, w = t.shape
        g, s = self.cells, scale
        t = t.reshape(B, D, h // (g * s), s, g, w // (g * s), s, g)  # (B, D, ph, si, gi, pw, sj, gj)
        t = t.permute(0, 2, 5, 3, 6, 4, 7, 1).reshape(-1, s * s * g * g, D)
        return self.mlp(t)


def _anysat_channels(bands: Sequence[str]) -> tuple[tuple[str, ...], dict[str, list[tuple[int, str]]]]:
    """``"<MODALITY>:<band>"`` channels (bare modality names: all of upstream's bands of it, in its order)
    -> (the channels, {upstream modality: [(channel, band)]}), modalities in the order they first appear."""
    out: list[str] = []
    for b in bands:
        spec = find_modality(b) if isinstance(b, str) and MODALITY_SEP not in b else None
        if spec is not None and spec.name in ANYSAT_FROM_MODALITY:
            own = ANYSAT_MODALITIES[ANYSAT_FROM_MODALITY[spec.name]]["bands"]
            out += [f"{spec.name}{MODALITY_SEP}{band}" for band in own]
        else:
            out.append(b)
    by_mod: dict[str, list[tuple[int, str]]] = {}
    source: dict[str, str] = {}
    for i, ch in enumerate(out):
        mod, sep, band = ch.partition(MODALITY_SEP) if isinstance(ch, str) else ("", "", "")
        spec = find_modality(mod.strip()) if sep else None
        if spec is None or spec.name not in ANYSAT_FROM_MODALITY:
            raise BandError(f"channel {ch!r} of {list(out)}: a multi-modal AnySat encoder takes channels named "
                            f"'<MODALITY>:<band>' of {', '.join(ANYSAT_FROM_MODALITY)} (e.g. 'S2L2A:B04', 'S1RTC:VV', "
                            f"as read_modalities names them), or bare modality names")
        up = ANYSAT_FROM_MODALITY[spec.name]
        if source.setdefault(up, spec.name) != spec.name:
            raise BandError(f"channels of {source[up]} and {spec.name} both feed AnySat's {up} projector; give one")
        found = sensor_band(spec.sensor, band.strip())
        bid = found.id.upper() if found is not None else None
        known = ANYSAT_MODALITIES[up]["bands"]
        if bid not in known or any(b == bid for _, b in by_mod.get(up, ())):
            raise BandError(f"channel {ch!r}: {'given twice' if bid in known else 'not one of'} AnySat's {up} bands "
                            f"{list(known)}")
        by_mod.setdefault(up, []).append((i, bid))
    return tuple(out), by_mod


class AnySatEncoder(GeoEncoder):
    """AnySat (see the module docstring) for one modality, or the 10 m series of several.

    Args:
        embed_dim, depth, num_heads: widths and depth (base: 768, 6, 12); the spatial encoder has
            ``depth`` blocks too and the trunk ``depth`` blocks plus the cross-attention block.
        modality: ``"s2"`` (default), ``"s1-asc"`` or ``"aerial"`` (upstream's names); unset with
            ``"<MODALITY>:<band>"`` channels, whose prefixes name the modalities.
        patch_size_m: the patch side in metres (a multiple of 10; upstream's ``patch_size``).
        frames: ``None`` for a time series ``(B, C, T, H, W)``; ``1``: a single-date encoder that
            takes ``(B, C, H, W)`` (time-series modalities).
        bands: the input bands, a subset of the modality's in any order (default: all of them);
            the first projector layer keeps the matching columns of a checkpoint; or
            ``"<MODALITY>:<band>"`` channels of Sentinel-2 and Sentinel-1 (``["S2L2A", "S1RTC"]``).
        default_doy: day of the year (1 January = 0) of inputs without ``timestamps`` metadata.
    """

    num_prefix_tokens = 1
    patch_kernel_key = None

    def __init__(self, *, embed_dim: int = 768, depth: int = 6, num_heads: int = 12, mlp_ratio: float = 4.0,
                 modality: str | None = None, patch_size_m: int = 40, frames: int | None = None,
                 bands: Sequence[str] = (), default_doy: int | None = None, ltae_heads: int = 16,
                 drop_path_rate: float = 0.0):
        super().__init__()
        multi = None
        if bands and any(isinstance(b, str) and (MODALITY_SEP in b or b.upper() in ANYSAT_FROM_MODALITY)
                         for b in bands):
            bands, multi = _anysat_channels(bands)
            if modality is not None and [modality] != list(multi):
                raise ValueError(f"modality={modality!r} but the channels {list(bands)} are of {list(multi)}: "
                                 f"leave modality unset, the channel prefixes name the modalities")
            modality = next(iter(multi))
        modality = "s2" if modality is None else modality
        if modality not in ANYSAT_MODALITIES:
            built = ", ".join(ANYSAT_MODALITIES)
            raise ValueError(f"AnySat modality {modality!r} is not built here (built: {built}"
                             f"{'; upstream also has ' + ', '.join(_UNBUILT) if modality in _UNBUILT else ''})")
        spec = ANYSAT_MODALITIES[modality]
        if patch_size_m <= 0 or patch_size_m % 10:
            raise ValueError(f"patch_size_m={patch_size_m}: AnySat's patches are a positive multiple of 10 m")
        if frames not in (None, 1) or (frames == 1 and not spec["temporal"]):
            raise ValueError(f"frames={frames!r}: give None (a time series) or 1 (single date) for a time-series "
                             f"modality, None for {modality!r}")
        if default_doy is not None and not 0 <= default_doy <= 365:
            raise ValueError(f"default_doy={default_doy} is not a day of the year (0 = 1 January .. 365)")
        if spec["temporal"] and (embed_dim % (8 * 4) or embed_dim % ltae_heads):
            raise ValueError(f"embed_dim={embed_dim}: the L-TAE projector needs a multiple of 32 (GroupNorm(4) of "
                             f"embed_dim / 8) and of ltae_heads={ltae_heads}")
        all_bands = spec["bands"]
        if multi is None:
            self.bands = expand_bands(bands) if bands else all_bands
            unknown = [b for b in self.bands if b not in all_bands]
            if unknown or len(set(self.bands)) != len(self.bands):
                raise ValueError(f"AnySat {modality} bands {list(self.bands)}: "
                                 f"{'unknown ' + str(unknown) if unknown else 'a band named twice'}; "
                                 f"name bands of {list(all_bands)} (upstream's order), each once")
            multi = {modality: [(i, b) for i, b in enumerate(self.bands)]}
        else:
            self.bands = tuple(bands)
        #: upstream's modalities in input order; per modality the input channels and their projector columns
        self.modalities = tuple(multi)
        self.channels = {m: [i for i, _ in cb] for m, cb in multi.items()}
        self.band_indices = {m: [ANYSAT_MODALITIES[m]["bands"].index(b) for _, b in cb] for m, cb in multi.items()}
        self.band_index = self.band_indices[modality]
        self.modality, self.native_gsd, self.code_res = modality, spec["gsd"], spec["code_res"]
        self.temporal_modality = spec["temporal"]
        self.input_ndim = 3 if spec["temporal"] and frames is None else 2
        self.default_doy = default_doy
        self.embed_dim, self.depth, self.scale = embed_dim, depth + 1, patch_size_m // 10
        self.patch_size_m = patch_size_m
        self.patch_size = int(round(patch_size_m / spec["gsd"]))
        if spec["temporal"]:
            self.projector = _LTAE(len(self.channels[modality]), embed_dim, spec["in_norm"], n_head=ltae_heads)
        else:
            self.projector = _AerialProjector(len(self.bands), embed_dim)
        #: the projectors of the further modalities (``s1-asc`` as ``s1_asc``); the first one is ``projector``
        self.more_projectors = nn.ModuleDict({m.replace("-", "_"): _LTAE(
            len(self.channels[m]), embed_dim, ANYSAT_MODALITIES[m]["in_norm"], n_head=ltae_heads)
            for m in self.modalities[1:]})
        self.spatial = _SpatialEncoder(embed_dim, depth, num_heads, mlp_ratio)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        dpr = torch.linspace(0, drop_path_rate, depth + 1).tolist()
        self.blocks = nn.ModuleList(
            [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dpr[i],
                   norm_layer=partial(nn.LayerNorm, eps=1e-6)) for i in range(depth)]
            + [_CrossBlock(embed_dim, num_heads, mlp_ratio)])
        self._no_norm = nn.Identity()

    # -- structure ---------------------------------------------------------------------------
    def get_blocks(self):
        return self.blocks

    def final_norm_module(self) -> nn.Module:
        return self._no_norm  # AnySat has no norm after the cross-attention block

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "spatial.cls_token", "blocks.%d.attn.q_learned" % (self.depth - 1)}

    def token_grid(self, x):
        p = self.patch_size
        return (x.shape[-2] // p, x.shape[-1] // p)

    def check_input(self, x):
        x = super().check_input(x)
        if self.input_ndim == 3 and x.shape[2] < 1:
            raise EncoderInputError("the time series has no dates (T = 0)")
        return x

    # -- forward -----------------------------------------------------------------------------
    def _days(self, metadata, batch: int, frames: int, device) -> torch.Tensor:
        ts = metadata.get("timestamps") if metadata is not None else None
        if ts is None:
            if self.default_doy is None:
                raise EncoderInputError(
                    f"AnySat's {self.modality} projector codes each date by its day of the year and this batch "
                    f"has no metadata 'timestamps'; pass metadata={{'timestamps': (B, T) seconds since the epoch}}, "
                    f"or build a single-date encoder with default_doy=<day of the year, 1 January = 0>")
            return torch.full((batch, frames), float(self.default_doy), device=device)
        ts = torch.as_tensor(ts).to(torch.float64).reshape(batch, -1)
        if ts.shape[1] != frames:
            raise EncoderInputError(f"metadata 'timestamps' has {ts.shape[1]} dates per sample but the input "
                                    f"has {frames}; give one timestamp per date")
        return day_of_year(ts.to(device)).float()

    def _check_gsd(self, metadata):
        gsd = metadata.get("gsd") if metadata is not None else None
        if gsd is None:
            raise EncoderInputError(
                f"AnySat cuts patches in metres and needs the ground sample distance: pass metadata={{'gsd': "
                f"{self.native_gsd:g}}} (metres per pixel; d2geo's GeoTIFF reader sets it from the file)")
        check_gsd(gsd)
        if is_tracing():
            return
        g = torch.as_tensor(gsd).to(torch.float64).flatten()
        bad = g[(g - self.native_gsd).abs() > 1e-3 * self.native_gsd]
        if bad.numel():
            raise EncoderInputError(
                f"metadata 'gsd' {float(bad[0]):g} m is not the {self.native_gsd:g} m AnySat's {self.modality} "
                f"projector takes (its sub-patches are fixed in metres); resample the input to "
                f"{self.native_gsd:g} m, or use the modality of that resolution")

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        self._check_gsd(metadata)
        B, s = x.shape[0], self.scale
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        codes = anysat_sincos(self.embed_dim, h, w, float(s)).to(x)
        if not self.temporal_modality:
            sub = self.projector(x, s)
            tokens = self.spatial(sub, int(s * 10 / self.code_res), self.code_res).reshape(B, h * w, -1) + codes[1:]
        else:
            series = x.permute(0, 2, 1, 3, 4) if x.ndim == 5 else x.unsqueeze(1)  # (B, T, C, H, W)
            doy = self._days(metadata, B, series.shape[1], x.device)
            parts = []
            for m in self.modalities:  # each modality: its projector, the shared spatial encoder, the patch codes
                proj = self.projector if m == self.modality else self.more_projectors[m.replace("-", "_")]
                chans = series if len(self.modalities) == 1 else series[:, :, self.channels[m]]
                fmap = proj(chans, doy)  # (B, D, H, W) at 10 m
                D = fmap.shape[1]
                sub = fmap.reshape(B, D, h, s, w, s).permute(0, 2, 4, 3, 5, 1).reshape(B * h * w, s * s, D)
                parts.append(self.spatial(sub, s, self.code_res).reshape(B, h * w, -1) + codes[1:])
            tokens = torch.cat(parts, 1)  # the modalities one after the other, as upstream
        tokens = torch.cat([self.cls_token.expand(B, -1, -1) + codes[:1], tokens], 1)
        return tokens, (h, w), (h, w)

    def _to_map(self, tokens: torch.Tensor, grid, norm: bool) -> torch.Tensor:
        M = (tokens.shape[1] - 1) // (grid[0] * grid[1])
        if M > 1:  # a trunk block's tokens of several modalities: averaged per position (upstream has no map here)
            tokens = torch.cat([tokens[:, :1], tokens[:, 1:].reshape(tokens.shape[0], M, -1, tokens.shape[2]).mean(1)],
                               1)
        return super()._to_map(tokens, grid, norm)

    def set_window_attention(self, window_size, global_blocks=()) -> None:
        if window_size and len(self.modalities) > 1:
            raise ValueError("window attention is not built for a multi-modal AnySat encoder (its tokens are "
                             "several modalities' grids and a class token); use one modality, or tiles")
        super().set_window_attention(window_size, global_blocks)

    def _run_block(self, block, x, ctx):
        return block(x, ctx, self.scale) if isinstance(block, _CrossBlock) else block(x)

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published file (``state_dict`` of upstream's ``AnyModule``: ``projector_<modality>.``,
        ``spatial_encoder.``, ``blocks.``, ``cls_token``) and d2geo's own keys, under any prefix."""
        ours = any(k.endswith("spatial.cls_token") for k in state_dict)
        sd = strip_to_anchor(state_dict, "spatial.cls_token" if ours else "spatial_encoder.cls_token",
                             top_level=("cls_token",))
        if ours:
            return sd
        for m in self.modalities:
            if not any(k.startswith(f"projector_{m}.") for k in sd):
                raise CheckpointError(f"the checkpoint has no projector_{m}: it cannot feed AnySat's {m} input "
                                      f"(this encoder takes {list(self.modalities)})")
        out, ignored = {}, dict(sd.ignored)
        for k, v in sd.items():
            if k.startswith("projector_"):
                m = next((m for m in self.modalities if k.startswith(f"projector_{m}.")), None)
                if m is None:
                    ignored[k] = f"the projector of another modality (this encoder takes {list(self.modalities)})"
                    continue
                rest = k[len(f"projector_{m}."):]
                if rest == "pad_parameter":
                    ignored[k] = "the padding value of masked dates (masks are not built here)"
                    continue
                base = "projector" if m == self.modality else f"more_projectors.{m.replace('-', '_')}"
                k = f"{base}." + (rest[len("patch_embed."):] if self.temporal_modality else rest)
                if k == f"{base}.inconv.0.weight":
                    v = v[:, self.band_indices[m]]  # the input's bands, in the input's order
                elif self.temporal_modality is False and k == "projector.patch_embed.weight":
                    v = v[:, self.band_index]
            elif k.startswith("spatial_encoder."):
                k = "spatial." + k[len("spatial_encoder."):].replace("predictor_blocks.", "blocks.").replace(
                    "predictor_norm.", "norm.")
            elif k.startswith("blocks.") or k == "cls_token":
                pass
            else:
                raise CheckpointError(f"the checkpoint's {sd.prefix}{k} is no part of the published AnySat model")
            out[k] = v
        return FilteredStateDict(out, ignored=ignored, prefix=sd.prefix)


#: AnySat standardizes every dataset with its own statistics; a neutral placeholder for the configs
ANYSAT_S2_STATS = InputStats("anysat-s2-l2a-dn", "sentinel-2-l2a", ANYSAT_MODALITIES["s2"]["bands"],
                             (0.0,) * 10, (10000.0,) * 10, "dn")

ANYSAT_PRETRAINED = {
    "anysat_base": PretrainedCfg(
        source="hf://g-astruc/AnySat/models/AnySat.pth", license="MIT", stats=(ANYSAT_S2_STATS,),
        # the encoder's default 40 m patches at Sentinel-2's 10 m; PASTIS-HD's 128 px Sentinel-2 tiles
        input_size=128, patch_size=4,
        page="https://github.com/gastruc/AnySat",
        notes=("one file for every modality (GeoPlex pretraining, JEPA); d2geo builds s2, s1-asc, aerial, one per "
               "encoder or s2 + s1-asc together, and keeps those projectors; the statistics are a Sentinel-2 "
               "placeholder "
               "(AnySat standardizes each dataset with its own); gsd metadata required"),
        unpinned_reason=("the publishers' hubconf.py (gastruc/AnySat e03e72e4) downloads resolve/main; no public "
                         "source (torchgeo, terratorch, the model card) states a Hub commit or a sha256 of "
                         "models/AnySat.pth")),
}

register_encoder("anysat_base", AnySatEncoder, pretrained_cfg=ANYSAT_PRETRAINED["anysat_base"],
                 embed_dim=768, depth=6, num_heads=12)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
# 3 blocks + the cross-attention block
register_test_variant("anysat_test", like="anysat_base", embed_dim=32, depth=3, num_heads=4)
