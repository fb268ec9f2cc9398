"""Clay v1 and v1.5 encoders (Clay-foundation/model), written for the GeoEncoder contract.

Clay has no fixed band list. Its patch embedding is generated at run time from the
centre wavelengths of the input bands: each wavelength (micrometres, as in Clay's
``configs/metadata.yaml``) gets a 1-D sine-cosine code, a small residual MLP and one
post-norm transformer layer (together with 128 learned kernel tokens and a bias token)
turn the codes into a ``patch x patch`` convolution kernel per band and a bias. The
token grid then gets a 2-D sine-cosine position code whose frequencies are scaled by
the ground sample distance, with 8 acquisition values (ISO week and UTC hour, latitude
and longitude, each as a sine and cosine) filling the last 8 channels. A cls token is
prepended and a pre-norm ViT (no qkv or projection bias) follows.

How our metadata schema maps onto Clay's inputs:

* ``wavelengths`` ``(C,)`` micrometres: passed to the kernel generator unchanged (Clay
  uses micrometres too). Required, unless the encoder was built with ``sensor=`` and
  ``bands=`` or with ``wavelengths=``. One batch holds one sensor.
* ``gsd`` ``(B,)`` metres: scales the position code. Upstream takes one value per batch;
  here every sample gets its own. Required unless the encoder was built with ``gsd=``.
* ``timestamps`` ``(B, 1)``: ISO week ``w`` and UTC hour ``h`` (whole hours) of the first
  and only frame give ``sin, cos`` of ``2 pi w / 52`` and of ``2 pi h / 24``. Missing ->
  zeros, Clay's "unknown" (pretraining zeroed time and location for 20% of the chips).
* ``latlon`` ``(B, 2)`` degrees: ``sin, cos`` of the latitude and of the longitude, in
  radians. Missing -> zeros. Order: see ``latlon_order`` below.

``latlon_order``: Clay's tutorials build ``[sin lat, cos lat, sin lon, cos lon]``, but the
chips Clay v1 and v1.5 were pretrained on were written by stacchip's ``prechip``, which
unpacks ``normalize_latlon``'s ``(lat, lon)`` pair into variables named ``lon_norm,
lat_norm``; the training datamodule then stacks ``lat_norm, lon_norm``, so the weights
saw ``[sin lon, cos lon, sin lat, cos lat]``. The default ``"lon_first"`` feeds what the
weights were trained on; ``"lat_first"`` reproduces the tutorials (and embeddings made
with them).

Input sizes: any ``H, W`` that are multiples of the patch size. Upstream assumes a square
token grid; here the position code of the token in row ``r`` and column ``c`` is the
one upstream gives that token in any square grid that contains it (the code depends on
``(r, c)`` and the gsd only), so the extension to ``h x w`` grids is exact on every
square crop.

Patch size: the kernel generator always makes 8 x 8 kernels (its output layer has
``8 * 8 * embed_dim`` units). Another ``patch_size`` resamples the generated kernel at
run time with :func:`d2geo.encoders.adapt.resize_patch` (FlexiViT pseudo-inverse by
default) and scales the gsd given to the position code by ``patch_size / 8`` so that
token positions keep their pretraining meaning (metres per 8 pixels).
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Attention
from timm.models.vision_transformer import Block

from .adapt import PATCH_RESAMPLE_METHODS, resize_patch
from .bands import band_wavelengths, expand_bands
from .base import EncoderInputError, GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .metadata import check_gsd, check_metadata, check_wavelengths, warn_once
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["ClayEncoder", "WavelengthPatchEmbed", "clay_time_code", "clay_latlon_code",
           "wavelength_code", "LATLON_ORDERS"]

#: patch size of the generated kernels (both released models)
PRETRAINED_PATCH_SIZE = 8
#: width of the wavelength codes and of the kernel-generator transformer
WAVE_DIM = 128
#: learned tokens the kernel generator attends with
NUM_KERNEL_TOKENS = 128
#: Clay scales every generated kernel by this constant before the convolution
KERNEL_SCALE = 0.02
#: acquisition values appended to the position code: week (2), hour (2), lat/lon (4)
NUM_META_CHANNELS = 8
LATLON_ORDERS = ("lon_first", "lat_first")
_TEMPERATURE = 10000
#: dot-free tensor names of the Clay layouts
_TOP_LEVEL = ("cls_token",)


# -- metadata encodings ----------------------------------------------------------------
def wavelength_code(wavelengths: torch.Tensor, dim: int = WAVE_DIM) -> torch.Tensor:
    """``(C,)`` wavelengths (micrometres) -> ``(C, dim)`` codes ``[sin(w f_k), cos(w f_k)]``.

    ``f_k = 10000 ** -(k / (dim/2 - 1))`` for ``k = 0 .. dim/2 - 1``.
    """
    half = dim // 2
    exponent = torch.arange(half, device=wavelengths.device) / (half - 1)
    freqs = 1.0 / (_TEMPERATURE ** exponent)
    angles = wavelengths.float()[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def clay_time_code(seconds: torch.Tensor) -> torch.Tensor:
    """``(B,)`` seconds since the Unix epoch (UTC) -> ``(B, 4)`` Clay time values.

    ``[sin(2 pi w / 52), cos(2 pi w / 52), sin(2 pi h / 24), cos(2 pi h / 24)]`` with ``w``
    the ISO week number and ``h`` the UTC hour (whole hours).
    """
    rows = []
    for t in seconds.detach().double().cpu().tolist():
        when = datetime.fromtimestamp(t, tz=timezone.utc)
        week = when.isocalendar()[1] * 2 * math.pi / 52
        hour = when.hour * 2 * math.pi / 24
        rows.append([math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)])
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4).float()


def clay_latlon_code(latlon: torch.Tensor, order: str = "lon_first") -> torch.Tensor:
    """``(B, 2)`` (latitude, longitude) degrees -> ``(B, 4)`` Clay location values."""
    if order not in LATLON_ORDERS:
        raise ValueError(f"unknown latlon_order {order!r}; use one of {LATLON_ORDERS}")
    rad = torch.deg2rad(latlon.detach().double().cpu())
    lat = torch.stack([rad[:, 0].sin(), rad[:, 0].cos()], dim=1)
    lon = torch.stack([rad[:, 1].sin(), rad[:, 1].cos()], dim=1)
    pair = (lon, lat) if order == "lon_first" else (lat, lon)
    return torch.cat(pair, dim=1).float()


# -- patch embedding -------------------------------------------------------------------
class _ResidualGeluMLP(nn.Module):
    """``x + gelu(fc2(gelu(fc1(x))))``, applied to the wavelength codes."""

    def __init__(self, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x):
        return x + F.gelu(self.fc2(F.gelu(self.fc1(x))))


class _KernelGenerator(nn.Module):
    """Wavelength codes ``(C, W)`` -> kernel rows ``(C, p*p*D)`` and a bias ``(D,)``."""

    def __init__(self, wave_dim: int, num_tokens: int, kernel_numel: int, embed_dim: int,
                 num_heads: int = 4):
        super().__init__()
        self.weight_tokens = nn.Parameter(torch.randn(num_tokens, wave_dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)
        # post-norm, GELU, feed-forward width 2048 (torch's default), no dropout
        self.mixer = nn.TransformerEncoderLayer(
            d_model=wave_dim, nhead=num_heads, activation="gelu", dropout=0.0,
            norm_first=False, batch_first=True)
        self.to_weight = nn.Linear(wave_dim, kernel_numel)
        self.to_bias = nn.Linear(wave_dim, embed_dim)

    def forward(self, codes: torch.Tensor):
        n = self.weight_tokens.shape[0]
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)  # unbatched
        mixed = self.mixer(seq)
        weight = self.to_weight(mixed[n:-1] + seq[n:-1])
        bias = self.to_bias(mixed[-1])
        return weight, bias


class WavelengthPatchEmbed(nn.Module):
    """Clay's wavelength-conditioned patch embedding (DOFA-style dynamic kernels)."""

    def __init__(self, embed_dim: int, kernel_size: int = PRETRAINED_PATCH_SIZE,
                 wave_dim: int = WAVE_DIM, num_tokens: int = NUM_KERNEL_TOKENS):
        super().__init__()
        self.embed_dim, self.kernel_size, self.wave_dim = embed_dim, kernel_size, wave_dim
        self.wave_mlp = _ResidualGeluMLP(wave_dim)
        self.generator = _KernelGenerator(wave_dim, num_tokens, kernel_size ** 2 * embed_dim,
                                          embed_dim)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def kernel(self, wavelengths: torch.Tensor, patch_size: int | None = None,
               method: str = "pinv") -> tuple[torch.Tensor, torch.Tensor]:
        """The ``(D, C, p, p)`` convolution kernel and ``(D,)`` bias for these bands."""
        codes = self.wave_mlp(wavelength_code(wavelengths, self.wave_dim))
        rows, bias = self.generator(codes)
        k = self.kernel_size
        weight = rows.reshape(-1, self.embed_dim, k, k).transpose(0, 1) * KERNEL_SCALE
        if patch_size is not None and patch_size != k:
            weight = resize_patch(weight, patch_size, method)
        return weight, bias

    def forward(self, x: torch.Tensor, wavelengths: torch.Tensor, patch_size: int | None = None,
                method: str = "pinv") -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, D, h, w)``."""
        weight, bias = self.kernel(wavelengths, patch_size, method)
        return F.conv2d(x, weight, bias, stride=weight.shape[-1])


# -- the encoder -----------------------------------------------------------------------
class ClayEncoder(GeoEncoder):
    """A Clay v1 / v1.5 encoder with the :class:`GeoEncoder` interface.

    Args:
        embed_dim, depth, num_heads, head_dim, mlp_ratio: the ViT.
        patch_size: the patch size to run at (the pretrained kernels are 8 x 8; see the
            module docstring for other sizes).
        bands, sensor: optional band names (and the sensor of
            :data:`~d2geo.encoders.metadata.SENSOR_BANDS` they belong to). With both, their
            wavelengths are the default when the metadata has none.
        wavelengths: default wavelengths (micrometres), instead of ``sensor`` + ``bands``.
        gsd: default ground sample distance in metres when the metadata has none.
        latlon_order: ``"lon_first"`` (what the pretrained weights saw) or ``"lat_first"``
            (Clay's tutorials); see the module docstring.
        drop_path_rate: stochastic depth for fine-tuning.
        patch_resample: ``"pinv"`` or ``"bicubic"`` for a ``patch_size`` other than 8.
    """

    num_prefix_tokens = 1

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, head_dim: int = 64,
                 mlp_ratio: float = 4.0, patch_size: int = PRETRAINED_PATCH_SIZE,
                 bands: Sequence[str] = (), sensor: str | None = None,
                 wavelengths: Sequence[float] | None = None, gsd: float | None = None,
                 latlon_order: str = "lon_first", drop_path_rate: float = 0.0,
                 patch_resample: str = "pinv"):
        super().__init__()
        if (embed_dim - NUM_META_CHANNELS) % 4:
            raise ValueError(f"embed_dim - {NUM_META_CHANNELS} must be a multiple of 4 for "
                             f"Clay's 2-D position code, got embed_dim={embed_dim}")
        if latlon_order not in LATLON_ORDERS:
            raise ValueError(f"unknown latlon_order {latlon_order!r}; use one of {LATLON_ORDERS}")
        if patch_resample not in PATCH_RESAMPLE_METHODS:
            raise ValueError(f"unknown patch_resample {patch_resample!r}; "
                             f"use one of {PATCH_RESAMPLE_METHODS}")
        check_gsd(gsd, where="gsd", error=ValueError)
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.pretrained_patch_size = PRETRAINED_PATCH_SIZE
        self.patch_resample = patch_resample
        self.latlon_order = latlon_order
        self.default_gsd = None if gsd is None else float(gsd)
        self.bands = expand_bands(bands)
        if wavelengths is not None:
            default = torch.as_tensor(wavelengths, dtype=torch.float32).flatten()
        elif sensor is not None:
            if not self.bands:
                raise ValueError("sensor= needs bands= naming the input bands in order")
            default = band_wavelengths(sensor, self.bands)
        else:
            default = None
        if default is not None and self.bands and len(self.bands) != len(default):
            raise ValueError(f"{len(self.bands)} bands but {len(default)} wavelengths given")
        check_wavelengths(default, where="wavelengths", error=ValueError)
        self.default_wavelengths = default

        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.patch_embed = WavelengthPatchEmbed(embed_dim, PRETRAINED_PATCH_SIZE)
        dpr = torch.linspace(0, drop_path_rate, depth).tolist() if depth else []
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio=mlp_ratio, drop_path=dpr[i],
                  norm_layer=nn.LayerNorm, act_layer=nn.GELU, attn_layer=nn.Identity)
            for i in range(depth)
        ])
        for blk in self.blocks:
            # Clay's attention: no qkv or output-projection bias (its MLP keeps its biases,
            # which timm's Block ties to proj_bias), heads of head_dim channels
            blk.attn = Attention(embed_dim, num_heads, attn_head_dim=head_dim, qkv_bias=False,
                                 proj_bias=False)
            blk.attn.fused_attn = True  # F.scaled_dot_product_attention
        self.norm = nn.LayerNorm(embed_dim)
        self._grid_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._table_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()

    @property
    def in_chans(self) -> int:
        """Bands of the default wavelengths or names; 0 when any band count is accepted."""
        if self.default_wavelengths is not None:
            return len(self.default_wavelengths)
        return len(self.bands)

    # -- input checks --------------------------------------------------------------------
    #: the band count is checked against the wavelengths (:meth:`_wavelengths`), not ``bands``
    checks_band_count = False

    def _wavelengths(self, metadata: Mapping[str, Any], num_bands: int) -> torch.Tensor:
        waves = metadata.get("wavelengths")
        if waves is None:
            if self.default_wavelengths is None:
                raise EncoderInputError(
                    "Clay needs the centre wavelength of every input band: pass "
                    "metadata={'wavelengths': ...} in micrometres, e.g. "
                    "d2geo.encoders.band_wavelengths('sentinel-2-l2a', ['blue', 'green', 'red']), "
                    "or build the encoder with sensor=... and bands=[...]")
            waves = self.default_wavelengths
            source = "the encoder's default wavelengths"
        else:
            source = "metadata 'wavelengths'"
        waves = torch.as_tensor(waves, dtype=torch.float32)
        if waves.ndim == 2:
            raise EncoderInputError(
                f"{source} has shape {tuple(waves.shape)}; Clay takes one wavelength per band, "
                f"shape (C,), shared by the whole batch: batch one sensor at a time (group the "
                f"samples by sensor, e.g. with a per-sensor sampler)")
        if waves.ndim != 1 or waves.numel() != num_bands:
            raise EncoderInputError(
                f"{source} gives {waves.numel()} wavelengths but the input has {num_bands} bands; "
                f"give one wavelength (micrometres) per input band, in the input's band order")
        check_wavelengths(waves, where=source)  # the shared unit check (nothing while tracing)
        return waves

    def encode_metadata(self, metadata: Mapping[str, Any] | None, batch_size: int,
                        num_bands: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Our schema -> Clay's inputs: wavelengths ``(C,)``, gsd ``(B,)``, 8 values ``(B, 8)``."""
        # validated once where it entered (forward_features); a raw mapping is checked here
        meta = check_metadata(metadata, batch_size=batch_size, num_bands=num_bands)
        waves = self._wavelengths(meta, num_bands)
        owner = type(self).__name__
        if "timestamps" in meta:
            ts = meta["timestamps"]
            if is_tracing():  # clay_time_code's calendar arithmetic would be frozen into the trace
                raise EncoderInputError(
                    "Clay's time code (ISO week, hour) cannot be traced or exported: the traced model "
                    "would keep this batch's times; leave 'timestamps' out of the metadata of a "
                    "model to export (it then treats time as unknown, as in Clay's pretraining)")
            if ts.shape[1] != 1:
                raise EncoderInputError(
                    f"metadata 'timestamps' has {ts.shape[1]} frames per sample; Clay encodes "
                    f"single acquisitions: give shape (B, 1), or run each frame separately")
            time = clay_time_code(ts[:, 0])
        else:
            warn_once(owner, "timestamps", "zeros (Clay's 'unknown' time)")
            time = torch.zeros(batch_size, 4)
        if "latlon" in meta:
            place = clay_latlon_code(meta["latlon"], self.latlon_order)
        else:
            warn_once(owner, "latlon", "zeros (Clay's 'unknown' location)")
            place = torch.zeros(batch_size, 4)
        if "gsd" in meta:
            gsd = meta["gsd"].float().cpu()
            check_gsd(gsd)
        elif self.default_gsd is not None:
            gsd = torch.full((batch_size,), self.default_gsd)
        else:
            raise EncoderInputError(
                "Clay needs the ground sample distance: pass metadata={'gsd': ...} in metres "
                "per pixel, shape (B,) (e.g. 10.0 for Sentinel-2, 0.6 for NAIP), or build the "
                "encoder with gsd=<metres>")
        return waves, gsd, torch.cat([time, place], dim=1)

    # -- position code -------------------------------------------------------------------
    def _grid(self, h: int, w: int, device: torch.device):
        key = (h, w, device)
        if key not in self._grid_cache:
            dim = self.embed_dim - NUM_META_CHANNELS
            n = dim // 4
            rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            exponent = torch.arange(n) / (n - 1)
            base = 1.0 / (_TEMPERATURE ** (2 * exponent / dim))
            self._grid_cache[key] = (cols.flatten().float().to(device),
                                     rows.flatten().float().to(device), base.to(device))
        return self._grid_cache[key]

    def _position_table(self, h: int, w: int, gsd: float, device: torch.device) -> torch.Tensor:
        """``(h*w, D-8)``: ``[sin(c f), cos(c f), sin(r f), cos(r f)]``, ``f = gsd * base``."""
        key = (h, w, gsd, device)
        table = self._table_cache.get(key)
        if table is None:
            cols, rows, base = self._grid(h, w, device)
            freqs = base * torch.tensor(gsd, dtype=torch.float32, device=device)
            x = cols[:, None] * freqs[None, :]
            y = rows[:, None] * freqs[None, :]
            table = torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=1)
            self._table_cache[key] = table
            while len(self._table_cache) > 16:
                self._table_cache.popitem(last=False)
        else:
            self._table_cache.move_to_end(key)
        return table

    def position_code(self, h: int, w: int, gsd: torch.Tensor, device: torch.device) -> torch.Tensor:
        """``(B, h*w, D-8)`` position code for per-sample gsd ``(B,)`` in metres."""
        if is_tracing():  # tensor operations only, so a traced model follows h, w and gsd
            dim = self.embed_dim - NUM_META_CHANNELS
            n = dim // 4
            rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                                        indexing="ij")
            exponent = torch.arange(n) / (n - 1)
            base = (1.0 / (_TEMPERATURE ** (2 * exponent / dim))).to(device)
            freqs = base[None, :] * gsd.to(device=device, dtype=torch.float32)[:, None]  # (B, n)
            x = cols.reshape(1, -1, 1).float() * freqs[:, None, :]
            y = rows.reshape(1, -1, 1).float() * freqs[:, None, :]
            return torch.cat([x.sin(), x.cos(), y.sin(), y.cos()], dim=-1)
        values = gsd.tolist()
        unique = sorted(set(values))
        tables = [self._position_table(h, w, g, device) for g in unique]
        if len(unique) == 1:
            return tables[0].unsqueeze(0).expand(len(values), -1, -1)
        index = torch.tensor([unique.index(g) for g in values], device=device)
        return torch.stack(tables)[index]

    # -- GeoEncoder hooks ------------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        B, C, H, W = x.shape
        waves, gsd, meta8 = self.encode_metadata(metadata, B, C)
        device = x.device
        scale = self.patch_size / self.pretrained_patch_size
        fmap = self.patch_embed(x, waves.to(device), self.patch_size, self.patch_resample)
        _, D, h, w = fmap.shape
        tokens = fmap.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major
        pos = self.position_code(h, w, gsd * scale if scale != 1 else gsd, device)
        meta8 = meta8.to(device)[:, None, :].expand(B, h * w, NUM_META_CHANNELS)
        tokens = tokens + torch.cat([pos, meta8], dim=-1)
        tokens = torch.cat([self.cls_token.expand(B, -1, -1).to(tokens.dtype), tokens], dim=1)
        return tokens, (h, w), None

    # -- structure -----------------------------------------------------------------------
    def get_blocks(self):
        return self.blocks

    def final_norm_module(self):
        return self.norm

    def no_weight_decay(self) -> set[str]:
        # the kernel generator's learned tokens are embeddings, like the cls token
        return {"cls_token", "patch_embed.generator.weight_tokens", "patch_embed.generator.bias_token"}

    # -- checkpoints ---------------------------------------------------------------------
    _UPSTREAM_ANCHOR = "patch_embedding.weight_generator.weight_tokens"
    _OWN_ANCHOR = "patch_embed.generator.weight_tokens"
    _RENAMES = (
        (r"^patch_embedding\.fclayer\.l1\.", "patch_embed.wave_mlp.fc1."),
        (r"^patch_embedding\.fclayer\.l2\.", "patch_embed.wave_mlp.fc2."),
        (r"^patch_embedding\.weight_generator\.encoder\.layers\.0\.", "patch_embed.generator.mixer."),
        (r"^patch_embedding\.weight_generator\.fc_weight\.", "patch_embed.generator.to_weight."),
        (r"^patch_embedding\.weight_generator\.fc_bias\.", "patch_embed.generator.to_bias."),
        (r"^patch_embedding\.weight_generator\.", "patch_embed.generator."),
        (r"^transformer\.layers\.(\d+)\.0\.norm\.", r"blocks.\1.norm1."),
        (r"^transformer\.layers\.(\d+)\.0\.to_qkv\.", r"blocks.\1.attn.qkv."),
        (r"^transformer\.layers\.(\d+)\.0\.to_out\.", r"blocks.\1.attn.proj."),
        (r"^transformer\.layers\.(\d+)\.1\.net\.0\.", r"blocks.\1.norm2."),
        (r"^transformer\.layers\.(\d+)\.1\.net\.1\.", r"blocks.\1.mlp.fc1."),
        (r"^transformer\.layers\.(\d+)\.1\.net\.3\.", r"blocks.\1.mlp.fc2."),
        (r"^transformer\.norm\.", "norm."),
    )

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """Clay Lightning checkpoints (``model.encoder.*``), bare encoders, and d2geo keys.

        The decoder (``model.decoder.*``), the distillation teacher (``model.teacher.*``)
        and the projection head (``model.proj.*``) are outside the encoder: not loaded, and
        named in ``ignored``.
        """
        if any(k.endswith(self._UPSTREAM_ANCHOR) for k in state_dict):
            sd = strip_to_anchor(state_dict, self._UPSTREAM_ANCHOR, top_level=_TOP_LEVEL)
            out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
            for key, value in sd.items():
                for pattern, repl in self._RENAMES:
                    new, n = re.subn(pattern, repl, key)
                    if n:
                        key = new
                        break
                out[key] = value
            return out
        if any(k.endswith(self._OWN_ANCHOR) for k in state_dict):
            return strip_to_anchor(state_dict, self._OWN_ANCHOR, top_level=_TOP_LEVEL)
        raise CheckpointError(
            f"not a Clay checkpoint: it has no {self._UPSTREAM_ANCHOR!r} (Clay's own format) nor "
            f"{self._OWN_ANCHOR!r} (d2geo's); first keys: {sorted(state_dict)[:6]}. Use the "
            f"clay-v1-base.ckpt / clay-v1.5.ckpt files of made-with-clay/Clay")


#: Clay v1.5's input statistics by platform (its ``configs/metadata.yaml``; digital numbers
#: as the platforms store them, Sentinel-1 in linear power). The first is the default.
CLAY_STATS = (
    InputStats("sentinel-2-l2a", "sentinel-2-l2a",
               ("blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"),
               (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0),
               (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0), "dn"),
    InputStats("landsat-c2l2-sr", "landsat-c2", ("red", "green", "blue", "nir08", "swir16", "swir22"),
               (13705.0, 13310.0, 12474.0, 17801.0, 14615.0, 12701.0),
               (9578.0, 9408.0, 10144.0, 8277.0, 5300.0, 4522.0), "dn"),
    InputStats("landsat-c2l1", "landsat-c2", ("red", "green", "blue", "nir08", "swir16", "swir22"),
               (10678.0, 10563.0, 11083.0, 14792.0, 12276.0, 10114.0),
               (6025.0, 5411.0, 5468.0, 6746.0, 5897.0, 4850.0), "dn"),
    InputStats("naip", "naip", ("red", "green", "blue", "nir"),
               (110.16, 115.41, 98.15, 139.04), (47.23, 39.82, 35.43, 49.86), "dn"),
    InputStats("sentinel-1-rtc", "sentinel-1", ("vv", "vh"), (0.123273, 0.027337), (1.492154, 0.122182),
               "linear"),
)

# v1: clay_mae_base trained at patch 8 on 224 px chips (configs/config.yaml at tag v1.0);
# v1.5: clay_mae_large, patch 8, 256 px chips (clay-v1.5.ckpt).
register_encoder(
    "clay_v1_base", ClayEncoder, embed_dim=768, depth=12, num_heads=12, head_dim=64, mlp_ratio=4.0,
    pretrained_cfg=PretrainedCfg(
        source="hf://made-with-clay/Clay-legacy/v1/clay-v1-base.ckpt", license="Apache-2.0",
        stats=CLAY_STATS, input_size=224, patch_size=8, page="https://huggingface.co/made-with-clay/Clay-legacy",
        notes="the statistics listed are Clay v1.5's metadata.yaml; check them against v1's for exact "
              "normalization",
        unpinned_reason=("no public source found gives a commit of made-with-clay/Clay-legacy or the file's "
                         "sha256; the Hub's LFS sha256 is checked after each download")))
register_encoder(
    "clay_v1_5_large", ClayEncoder, embed_dim=1024, depth=24, num_heads=16, head_dim=64, mlp_ratio=4.0,
    pretrained_cfg=PretrainedCfg(
        source="hf://made-with-clay/Clay@70200ebcccdf67bf2a0cb9984c77ddee26c10ed2/v1.5/clay-v1.5.ckpt",
        license="Apache-2.0", sha256="21432069250b9b3f9a65ffd0071c5ad56b793247285ab0604edf7f531d4798d0",
        stats=CLAY_STATS, input_size=256, patch_size=8, page="https://huggingface.co/made-with-clay/Clay",
        pinned_by="public GitHub projects pinning this revision and the LFS sha256 (x-linked-etag) at it"))

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("clay_test", like="clay_v1_5_large", embed_dim=72, depth=4, num_heads=4, head_dim=16)
