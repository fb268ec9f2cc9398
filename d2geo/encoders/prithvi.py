"""NASA/IBM Prithvi-EO encoders (v1 and v2, with and without time/location encodings).

Prithvi is a plain ViT over a spatio-temporal input ``(B, C, T, H, W)``: a 3D
convolution cuts the input into ``(tubelet, p, p)`` cubes, a fixed 3D sine-cosine table
gives each cube its position, and the TL variants add sine-cosine encodings of the
acquisition date and of the tile centre, each weighted by a learned scale.

The position table is never read from a checkpoint. For a token grid ``(t, h, w)`` it is
built the way terratorch's ``PrithviViT`` builds it: the 3D sine-cosine table of the
reference grid ``(t, img_size / p, img_size / p)``, then, when ``(h, w)`` differs from the
reference, each time slice is resized to ``(h, w)`` by bicubic interpolation with aligned
corners (in float32). Tables are cached per grid, device and dtype.

Metadata for the TL variants (see :mod:`d2geo.encoders.metadata`):

* ``timestamps`` ``(B, T)`` become ``(year, day of year)`` per frame, in UTC, with the day
  of year counted from 1 (1 January is day 1), as in the Prithvi-EO-2.0 model card and
  inference example, which read it from HLS file names (``YYYYDDD``). Note that a few
  terratorch datasets count from 0 instead; feed timestamps, not day numbers, and the
  convention is fixed here.
* ``latlon`` ``(B, 2)`` is used as (latitude, longitude) in degrees, longitudes brought
  to -180..180 first (0..360 is accepted; the encoding is not periodic, so 350 and -10
  would otherwise differ).

A missing key means "unknown": that encoding is left out, as upstream does when its
coordinates are ``None`` (the TL models were pretrained with random metadata drop-out).
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from .bands import HLS_BANDS, expand_bands
from .base import EncoderInputError, GeoEncoder, SizeCache, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .metadata import check_metadata, warn_once
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = [
    "PrithviEncoder", "HLS_BANDS", "PRITHVI_V1_STATS", "PRITHVI_V2_STATS", "sincos_1d", "sincos_3d",
    "prithvi_pos_table", "timestamps_to_year_doy",
]


_COORD_KINDS = ("time", "location")
#: dot-free tensor names of the published layouts (v1 flat, v2, terratorch)
_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token", "decoder_pos_embed")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- fixed encodings ------------------------------------------------------------------------
def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """Sine-cosine encoding ``(M, dim)`` of the positions ``pos`` (any shape, flattened).

    The first half of the channels holds ``sin(pos * w_i)``, the second ``cos(pos * w_i)``,
    with ``w_i = 10000 ** (-i / (dim / 2))``. Computed in the dtype of ``pos``.
    """
    if dim % 2:
        raise ValueError(f"a sine-cosine encoding needs an even width, got {dim}")
    half = dim // 2
    freq = torch.arange(half, dtype=pos.dtype, device=pos.device) / half
    freq = 1.0 / 10000**freq
    angles = pos.reshape(-1, 1) * freq.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_3d(embed_dim: int, grid: Sequence[int]) -> torch.Tensor:
    """The Prithvi 3D sine-cosine table ``(t, h, w, embed_dim)`` in float64.

    Channels are split 6:6:4 (sixteenths of ``embed_dim``) between the column, row and
    frame index, in that order.
    """
    if embed_dim % 16:
        raise ValueError(f"Prithvi's 3D position table needs embed_dim divisible by 16, got {embed_dim}")
    t, h, w = grid
    d_hw, d_t = embed_dim // 16 * 6, embed_dim // 16 * 4

    def axis(n: int, dim: int) -> torch.Tensor:
        return sincos_1d(dim, torch.arange(n, dtype=torch.float64))

    cols = axis(w, d_hw).view(1, 1, w, d_hw).expand(t, h, w, d_hw)
    rows = axis(h, d_hw).view(1, h, 1, d_hw).expand(t, h, w, d_hw)
    frames = axis(t, d_t).view(t, 1, 1, d_t).expand(t, h, w, d_t)
    return torch.cat([cols, rows, frames], dim=-1)


def prithvi_pos_table(embed_dim: int, ref_hw: Sequence[int], grid: Sequence[int]) -> torch.Tensor:
    """Position table ``(t*h*w, embed_dim)`` (float32) of the token grid ``grid = (t, h, w)``.

    ``ref_hw`` is the reference token grid the model was configured for (``img_size / p``):
    the table is the sine-cosine table of ``(t, *ref_hw)``, bicubically resized per frame
    (aligned corners) when ``(h, w)`` differs.
    """
    t, h, w = grid
    H0, W0 = (int(g) for g in ref_hw)
    table = sincos_3d(embed_dim, (int(t), H0, W0)).float()
    # always resized (the identity when (h, w) is the reference grid: aligned corners put
    # every output on an input), so nothing branches on the grid and traced models resize
    table = F.interpolate(table.permute(0, 3, 1, 2), size=(h, w), mode="bicubic", align_corners=True)
    return table.permute(0, 2, 3, 1).reshape(-1, embed_dim).contiguous()


def timestamps_to_year_doy(timestamps: torch.Tensor) -> torch.Tensor:
    """``(..., 2)`` float32 ``(year, day of year)`` of epoch-second UTC ``timestamps``.

    The day of year starts at 1 on 1 January (366 on 31 December of a leap year).
    """
    flat = timestamps.detach().to("cpu", torch.float64).reshape(-1).tolist()
    out = []
    for s in flat:
        day = _EPOCH + timedelta(seconds=s)
        out.append((day.year, day.timetuple().tm_yday))
    coords = torch.tensor(out, dtype=torch.float32).reshape(*timestamps.shape, 2)
    return coords.to(timestamps.device)


class _CoordEncoding(nn.Module):
    """Sine-cosine encoding of two scalars per sample, times a (learned) scale.

    The first ``dim // 2`` channels encode the first scalar, the rest the second: (year,
    day of year) for time, (latitude, longitude) for location.
    """

    def __init__(self, dim: int, learn_scale: bool):
        super().__init__()
        self.dims = (dim // 2, dim - dim // 2)
        if learn_scale:
            self.scale = nn.Parameter(torch.full((1,), 0.1))
        else:
            self.register_buffer("scale", torch.ones(1), persistent=False)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """``coords (B, [T,] 2)`` float32 -> ``(B, [T,] dim)``."""
        lead = coords.shape[:-1]
        parts = [sincos_1d(d, coords[..., i]).reshape(*lead, d) for i, d in enumerate(self.dims)]
        return self.scale * torch.cat(parts, dim=-1)


# -- the encoder ----------------------------------------------------------------------------
class PrithviEncoder(GeoEncoder):
    """A Prithvi-EO ViT with the :class:`GeoEncoder` interface.

    Input ``(B, C, T, H, W)`` with ``T == num_frames``; a ``(B, C, H, W)`` image is accepted
    when ``num_frames == 1``. Output maps are ``(B, D, t, h, w)`` with
    ``t = num_frames // tubelet_size`` (see :func:`~d2geo.encoders.base.time_to_channels`
    for terratorch's 2-D layout).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture.
        patch_size: spatial patch size to run at. A checkpoint with another kernel size is
            resampled on load (``patch_resample``, see ``adapt.resize_patch``).
        img_size: the reference image size ``int`` or ``(H, W)``; the position table of
            any input size is interpolated from the table of the reference token grid
            ``img_size // patch_size``, as terratorch does with its ``img_size`` (224 for
            all published models).
        num_frames: frames ``T`` per sample. The published configs say 3 (v1) and 4 (v2,
            1 for tiny); terratorch's backbone factory defaults to 1, so pass
            ``num_frames=1`` for single images.
        tubelet_size: frames per patch (the 3D kernel depth); must divide ``num_frames``.
            Published checkpoints use 1; the TL encodings need 1.
        bands: names of the input bands, in order. Pretrained weights are selected by
            name from ``pretrained_bands`` (case-insensitive); bands the checkpoint does not
            know get zero weights, so the freshly loaded encoder gives exactly the
            pretrained features on the known bands, whatever the new bands hold, and learns
            their contribution when fine-tuned (``adapt.select_bands``).
        pretrained_bands: the band order of the checkpoint's patch embedding (the six HLS
            bands for all published checkpoints; set it for a fine-tuned checkpoint of
            other bands).
        coords_encoding: ``("time", "location")`` for the TL variants.
        coords_scale_learn: the TL encodings' weights are learned parameters
            (``temporal_embed_enc.scale``, ``location_embed_enc.scale`` in the
            checkpoints); otherwise they are fixed at 1.
        drop_path_rate: stochastic depth, the same rate in every block as upstream.
        pos_cache_size: how many position tables (grid, device, dtype) to keep.
    """

    input_ndim = 3
    num_prefix_tokens = 1
    patch_kernel_key = "patch_embed.proj.weight"

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 patch_size: int = 16, img_size: int | Sequence[int] = 224, num_frames: int = 1,
                 tubelet_size: int = 1, bands: Sequence[str] = HLS_BANDS,
                 pretrained_bands: Sequence[str] = HLS_BANDS, coords_encoding: Sequence[str] = (),
                 coords_scale_learn: bool = False, drop_path_rate: float = 0.0,
                 patch_resample: str = "pinv", pos_cache_size: int = 16):
        super().__init__()
        bands, pretrained_bands = expand_bands(bands), expand_bands(pretrained_bands)
        if num_frames < 1 or tubelet_size < 1:
            raise ValueError(f"num_frames ({num_frames}) and tubelet_size ({tubelet_size}) must be >= 1")
        if num_frames % tubelet_size:
            raise ValueError(
                f"num_frames={num_frames} is not divisible by tubelet_size={tubelet_size}: each "
                f"patch spans {tubelet_size} frames; use a num_frames that is a multiple of "
                f"{tubelet_size} or a tubelet_size that divides {num_frames}"
            )
        img_hw = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if len(img_hw) != 2 or any(s < patch_size for s in img_hw):
            raise ValueError(f"img_size {img_size} must be one size or (H, W), each >= patch_size {patch_size}")
        if embed_dim % 16:
            raise ValueError(f"Prithvi needs embed_dim divisible by 16 (3D position table), got {embed_dim}")
        coords_encoding = tuple(coords_encoding or ())
        unknown = set(coords_encoding) - set(_COORD_KINDS)
        if unknown:
            raise ValueError(f"unknown coords_encoding {sorted(unknown)}; use a subset of {_COORD_KINDS}")
        if "time" in coords_encoding and tubelet_size != 1:
            raise ValueError(
                f"the time encoding is per frame and needs tubelet_size=1, got {tubelet_size}; "
                f"use tubelet_size=1 or a variant without time encoding"
            )

        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.num_frames, self.tubelet_size = num_frames, tubelet_size
        self.img_size = img_hw
        self.bands = expand_bands(bands)
        self.pretrained_bands = pretrained_bands
        self.patch_resample = patch_resample
        self.coords_encoding = coords_encoding
        self.coords_scale_learn = coords_scale_learn
        self._pos_cache = SizeCache(pos_cache_size)

        self.patch_embed = nn.ModuleDict({
            "proj": nn.Conv3d(len(self.bands), embed_dim, kernel_size=(tubelet_size, patch_size, patch_size),
                              stride=(tubelet_size, patch_size, patch_size)),
        })
        self.temporal_embed_enc = _CoordEncoding(embed_dim, coords_scale_learn) if "time" in coords_encoding else None
        self.location_embed_enc = (_CoordEncoding(embed_dim, coords_scale_learn)
                                   if "location" in coords_encoding else None)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm,
                  drop_path=drop_path_rate)
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # MAE-style: the patch kernel as a linear layer, xavier linears, small cls token.
        w = self.patch_embed["proj"].weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.patch_embed["proj"].bias)
        nn.init.normal_(self.cls_token, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def token_frames(self) -> int:
        """Frames of the token grid: ``num_frames // tubelet_size``."""
        return self.num_frames // self.tubelet_size

    # -- position table ----------------------------------------------------------------
    def pos_embed_for(self, grid: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(t*h*w, D)`` position table of a token grid, from the per-grid cache (computed
        from the input size while recorded: the table must follow the traced input size)."""
        ref_hw = tuple(s // self.patch_size for s in self.img_size)
        if is_tracing():
            grid = (self.token_frames, *grid[1:])
        return self._pos_cache.get(lambda: (*(int(g) for g in grid), torch.device(device), dtype),
                                   lambda: prithvi_pos_table(self.embed_dim, ref_hw, grid).to(device=device, dtype=dtype))

    # -- input -------------------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Accept ``(B, C, H, W)`` for one-frame encoders, then check bands, size and frames."""
        if torch.is_tensor(x) and x.ndim == 4:
            if self.num_frames != 1:
                raise EncoderInputError(
                    f"got a 4-D image {tuple(x.shape)} but the encoder was built for "
                    f"num_frames={self.num_frames}; pass (B, C, T, H, W) with T={self.num_frames}, "
                    f"or build the encoder with num_frames=1"
                )
            x = x.unsqueeze(2)
        x = super().check_input(x)
        T = x.shape[2]
        if T % self.tubelet_size:
            raise EncoderInputError(
                f"input has {T} frames, not divisible by tubelet_size={self.tubelet_size}; give a "
                f"multiple of {self.tubelet_size} frames (the encoder expects {self.num_frames})"
            )
        if T != self.num_frames:
            raise EncoderInputError(
                f"input has {T} frames but the encoder was built for num_frames={self.num_frames}; "
                f"pass {self.num_frames} frames or build the encoder with num_frames={T}"
            )
        return x

    # -- GeoEncoder hooks --------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        B, C, T = x.shape[:3]
        # validated once where it entered (forward_features); a raw mapping is checked here
        meta = check_metadata(metadata, batch_size=B, num_frames=T, num_bands=C, device=x.device)
        tokens = self.patch_embed["proj"](x)  # (B, D, t, h, w)
        grid = tuple(tokens.shape[-3:])
        tokens = tokens.flatten(2).transpose(1, 2)
        tokens = tokens + self.pos_embed_for(grid, tokens.device, tokens.dtype)
        owner = type(self).__name__
        if self.temporal_embed_enc is not None:
            if "timestamps" in meta and is_tracing():
                raise EncoderInputError(
                    "Prithvi's (year, day of year) encoding cannot be traced or exported: the traced "
                    "model would keep this batch's dates; leave 'timestamps' out of the metadata of a "
                    "model to export (it then treats the date as unknown)")
            if "timestamps" in meta:
                coords = timestamps_to_year_doy(meta["timestamps"])  # (B, T, 2)
                enc = self.temporal_embed_enc(coords)  # (B, T, D)
                per_frame = grid[1] * grid[2]
                tokens = tokens + enc.repeat_interleave(per_frame, dim=1).to(tokens.dtype)
            else:
                warn_once(owner, "timestamps", "no time encoding (Prithvi-TL's 'unknown date')")
        if self.location_embed_enc is not None:
            if "latlon" in meta:
                enc = self.location_embed_enc(meta["latlon"].float())  # (B, D)
                tokens = tokens + enc.unsqueeze(1).to(tokens.dtype)
            else:
                warn_once(owner, "latlon", "no location encoding (Prithvi-TL's 'unknown location')")
        cls = self.cls_token.to(tokens.dtype).expand(B, -1, -1)  # its position entry is zero
        return torch.cat([cls, tokens], dim=1), grid, None

    # -- structure -------------------------------------------------------------------
    def get_blocks(self):
        return self.blocks

    def final_norm_module(self):
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {"cls_token"}  # the position table is computed, not a parameter

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """Prithvi v1 (flat), v2 (``encoder.``/``decoder.``), terratorch/Lightning and d2geo keys.

        Decoder weights, the mask token and the stored position tables are not loaded and
        are named in ``ignored`` (the table is recomputed for the configured frames and
        size); the patch kernel is adapted to ``bands`` and ``patch_size``.
        """
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        kernel = sd["patch_embed.proj.weight"]
        if kernel.ndim != 5:
            raise CheckpointError(
                f"the checkpoint's patch embedding has shape {tuple(kernel.shape)}, not a 3D "
                f"(D, C, t, p, p) kernel: it is not a Prithvi checkpoint (another model's, e.g. "
                f"DINOv2?); use the encoder it belongs to"
            )
        if kernel.shape[2] != self.tubelet_size:
            raise CheckpointError(
                f"the checkpoint's patches span {kernel.shape[2]} frame(s) but the encoder was built "
                f"with tubelet_size={self.tubelet_size}; build it with tubelet_size={kernel.shape[2]}"
            )
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        wanted_coords = {"temporal_embed_enc.": self.temporal_embed_enc,
                         "location_embed_enc.": self.location_embed_enc}
        for k, v in sd.items():
            if k.startswith("decoder") or k == "mask_token":
                out.ignore(k, "the MAE decoder, used only in pretraining")
                continue
            if k == "pos_embed":
                out.ignore(k, "the fixed sine-cosine position table, recomputed for each input grid")
                continue
            prefix = next((p for p in wanted_coords if k.startswith(p)), None)
            if prefix is not None and wanted_coords[prefix] is None:
                out.ignore(k, "a time/location encoding weight of a '_tl' checkpoint, which this "
                              "encoder (built without that encoding) does not use")
                continue
            if prefix is not None and not self.coords_scale_learn:
                out.ignore(k, "a learned encoding scale; this encoder fixes it at 1")
                continue
            out[k] = v
        if self.coords_scale_learn:
            for name, enc in wanted_coords.items():
                if enc is not None and f"{name}scale" not in out:
                    raise CheckpointError(
                        f"the checkpoint has no {name}scale: it is a Prithvi without "
                        f"time/location encodings; load it into the variant without '_tl'"
                    )
        out["patch_embed.proj.weight"] = self._adapt_checkpoint_patch_embed(
            kernel, "; pass pretrained_bands=[...] naming the checkpoint's bands")
        return out


# -- variants -------------------------------------------------------------------------------
_TL = dict(coords_encoding=("time", "location"), coords_scale_learn=True)
_VARIANTS = {
    "prithvi_eo_v1_100": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, num_frames=3),
    "prithvi_eo_v2_tiny_tl": dict(embed_dim=192, depth=12, num_heads=3, patch_size=16, num_frames=1, **_TL),
    "prithvi_eo_v2_100_tl": dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, num_frames=4, **_TL),
    "prithvi_eo_v2_300": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, num_frames=4),
    "prithvi_eo_v2_300_tl": dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, num_frames=4, **_TL),
    "prithvi_eo_v2_600": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14, num_frames=4),
    "prithvi_eo_v2_600_tl": dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14, num_frames=4, **_TL),
}
#: HLS statistics published with the weights (surface reflectance x 10 000)
PRITHVI_V1_STATS = InputStats("hls", "hls", HLS_BANDS, (775.0, 1081.0, 1229.0, 2497.0, 2204.0, 1611.0),
                              (1282.0, 1270.0, 1399.0, 1368.0, 1292.0, 1155.0), "dn")
PRITHVI_V2_STATS = InputStats("hls", "hls", HLS_BANDS, (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0),
                              (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0), "dn")


def _hub(repo: str, filename: str, stats: InputStats, cfg: dict, revision: str | None, sha256: str | None,
         pinned_by: str = "", unpinned_reason: str = "", notes: str = "") -> PretrainedCfg:
    at = f"@{revision}" if revision else ""
    return PretrainedCfg(
        source=f"hf://ibm-nasa-geospatial/{repo}{at}/{filename}", license="Apache-2.0", stats=(stats,),
        sha256=sha256, input_size=224, patch_size=cfg["patch_size"], num_frames=cfg["num_frames"],
        page=f"https://huggingface.co/ibm-nasa-geospatial/{repo}", notes=notes, pinned_by=pinned_by,
        unpinned_reason=unpinned_reason)


_NO_PUBLIC_PIN = ("no public source found gives a commit of this repository or the file's sha256; "
                  "the Hub's LFS sha256 is checked after each download")
# File names as terratorch's pretrained table has them (the v1 file is also published under
# its older name Prithvi_100M.pt, with the same sha256). Revisions and sha256 as pinned by the
# public projects named in ``pinned_by`` (the sha256 is each file's Git LFS object id).
_PRETRAINED = {
    "prithvi_eo_v1_100": ("Prithvi-EO-1.0-100M", "Prithvi_EO_V1_100M.pt", PRITHVI_V1_STATS,
                          "f3a9ea7a1723621b0aeceb4de993093704d712c5",
                          "7fac0c8a8693198e32a055e0c5a967f8b005f382182b63df1b29fdcd5c880731",
                          "the publisher's model card (sha256); revision as pinned by public GitHub projects "
                          "that load Prithvi_EO_V1_100M.pt"),
    "prithvi_eo_v2_tiny_tl": ("Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt", PRITHVI_V2_STATS,
                              "335eadc2c45ad5abe7bd307223e1c48c5b60c41b",
                              "d47326db9bad502b611f73e3e3f3a0e68b7b82640d67c22c795417f7209f8d70",
                              "public GitHub projects pinning this revision and the checkpoint's sha256"),
    "prithvi_eo_v2_100_tl": ("Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt", PRITHVI_V2_STATS, None, None, ""),
    "prithvi_eo_v2_300": ("Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt", PRITHVI_V2_STATS,
                          "9eb1b1102806593963daa333bcc491b1c6f8562f",
                          "faab2c8b776f0723f93431747603a7ec586a54fc45473613b4322c29752486e7",
                          "public GitHub projects pinning this revision and the LFS sha256 at it (the file is "
                          "unchanged since its first commit ebfff1d8; allenai's olmoearth_pretrain pins b2f2520a)"),
    "prithvi_eo_v2_300_tl": ("Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt", PRITHVI_V2_STATS,
                             "63adbd39c271da4c42f447e69b1a7c91a338cdc9",
                             "3629cedfbb350faafcb0dac902ae0d3c927e25ce8d9e0024aa1276ec66956ddb",
                             "public GitHub projects pinning this revision, sha256 and size (1326660716 bytes)"),
    "prithvi_eo_v2_600": ("Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt", PRITHVI_V2_STATS,
                          "87f15784813828dc37aa3197a143cd4689e4d080", None,
                          "allenai/olmoearth_pretrain's Prithvi v2 constants (revision only)"),
    "prithvi_eo_v2_600_tl": ("Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt", PRITHVI_V2_STATS,
                             "3d72adc6dfc4cc3862bf4f41da8c83db267193c9",
                             "7b92c53b0204a76bb775bd8930f045e05776251caa8c83f7367ed0b75b594702",
                             "public GitHub projects pinning this revision, sha256 and size (2638217218 bytes)"),
}
for _name, _cfg in _VARIANTS.items():
    _repo, _file, _stats, _rev, _sha, _by = _PRETRAINED[_name]
    register_encoder(_name, PrithviEncoder,
                     pretrained_cfg=_hub(_repo, _file, _stats, _cfg, _rev, _sha, _by, "" if _rev else _NO_PUBLIC_PIN),
                     img_size=224, **_cfg)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("prithvi_test", like="prithvi_eo_v2_300_tl", embed_dim=64, depth=4, num_heads=4)
