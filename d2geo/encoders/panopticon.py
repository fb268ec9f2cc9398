"""Panopticon (Waldmann et al., 2025, "Panopticon: Advancing Any-Sensor Foundation Models for
Earth Observation"; github.com/Panopticon-FM/panopticon, torchgeo's ``panopticon_vitb14``): a
DINOv2 ViT-B/14 whose patch embedding takes any set of optical and SAR channels.

Patch embedding (upstream's ``PanopticonPE``): every channel is cut into 14 x 14 patches by one
shared single-channel kernel (``attn_dim`` = 2304 wide), a channel code is added, and one learned
query cross-attends over the channels of each patch (16 heads, key and value projections, no query
or output projection), which turns any number of channels into one token; a linear layer maps it
to the ViT width. The channel code of an optical band is the sine-cosine code (sines first,
frequencies ``10000 ** (-k / (attn_dim / 2))``) of its wavelength in nanometres **floored to an
integer**; a SAR band has a learned code of (transmit, receive) polarization and orbit direction,
selected by upstream's ids -1..-12 (VV, VH, HH, HV for both orbits, then ascending, then
descending; Panopticon's ``sentinel1.yaml``). Upstream's published model uses the centre
wavelength only (its bandwidth mode is an appendix ablation and is not built here).

The attention is computed in an equivalent, cheaper order: the query is folded into the key
projection (``attn_dim x heads`` instead of ``attn_dim x attn_dim`` per channel and patch) and the
value projection is applied after the channel average (once per patch instead of once per
channel and patch). Softmax weights sum to one, so the result is the same up to rounding.

Trunk: timm's ``VisionTransformer`` as DINOv2's ViT-B/14 (LayerScale, no registers); the
published table is 37 x 37 (+ class) and other grids are resized as the official DINOv2 code does
(bicubic, scale factor ``(n + 0.1) / 37``; :mod:`.dinov2`). Upstream recommends 224 px inputs.

Channel ids: by band name, read through the band vocabulary (``sensor=`` disambiguates ids). For
Sentinel-2 and Landsat 8/9 bands the ids are the spectral-response means Panopticon's own sensor
configs (``dinov2/configs/data/satellites/{sentinel2,landsat9}.yaml``) trained with, which differ
from the nominal centres of :mod:`.bands` by up to 15 nm (Sentinel-2 B08: 827 vs 842); other
optical bands use the vocabulary's centre. An encoder built without bands takes
``metadata["wavelengths"]`` (micrometres, one per band, shared by the batch; optical bands only);
one built with bands checks that metadata wavelengths, where given (the GeoTIFF reader gives the
vocabulary's centres), are its bands' and refuses other bands.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from .bands import BandError, expand_bands, refuse_repeated_bands, sensor_band
from .adapt import resize_patch
from .base import EncoderInputError, SizeCache
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .dinov2 import DINOv2Encoder
from .metadata import check_wavelengths
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["PanopticonEncoder", "PANOPTICON_PRETRAINED", "PANOPTICON_SAR_IDS", "panopticon_channel_ids"]

_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token")
_ANCHOR = "patch_embed.conv3d.conv3d.weight"

#: upstream's SAR channel ids (``sentinel1.yaml``): (polarization, orbit) -> id
PANOPTICON_SAR_IDS = {
    (pol, orbit): -(1 + 4 * o + p)
    for o, orbit in enumerate(("both", "ascending", "descending"))
    for p, pol in enumerate(("vv", "vh", "hh", "hv"))
}
#: Panopticon's pretraining channel ids of optical bands (nm, the spectral-response means of its
#: sensor configs): Sentinel-2 MSI by band id, Landsat 8/9 OLI/TIRS by band id
_TRAINED_IDS_NM = {
    "sentinel-2": {
        "B01": 442.922568734037, "B02": 492.9971095687347, "B03": 559.5987534818435,
        "B04": 664.6300422881802, "B05": 704.0059319834206, "B06": 740.5521320760564,
        "B07": 782.4190761493182, "B08": 827.5394062383036, "B8A": 864.7801257644385,
        "B09": 945.0294901407692, "B10": 1373.3636762095748, "B11": 1613.8624163477282,
        "B12": 2203.6182057820033,
    },
    "landsat": {
        "B1": 442.6486977867469, "B2": 482.626742301136, "B3": 560.991848338365, "B4": 654.2860463136833,
        "B5": 864.6129891438968, "B6": 1608.7469945334756, "B7": 2203.5048261584875,
        "B8": 596.8190587207782, "B9": 1374.1802289606335, "B10": 10847.467021274, "B11": 12017.038582815621,
    },
}
_SENSORS_TRIED = ("sentinel-2-l1c", "landsat-c2-l1", "sentinel-1")


def _band_spec(band: str, sensor: str | None):
    """(sensor, spec) of ``band``: as ``sensor`` reads it, or as the first of Sentinel-2,
    Landsat, Sentinel-1 that knows it."""
    for s in ([sensor] if sensor else _SENSORS_TRIED):
        spec = sensor_band(s, band)
        if spec is not None:
            return s, spec
    raise BandError(f"band {band!r} is not in the band vocabulary"
                    f"{f' of {sensor}' if sensor else ''}; name a known band, or give "
                    f"metadata={{'wavelengths': [...]}} in micrometres")


def panopticon_channel_ids(bands: Sequence[str], sensor: str | None = None,
                           sar_orbit: str = "both") -> list[float]:
    """Upstream's channel ids of the named ``bands``: nanometres for optical bands (the
    pretraining configs' values for Sentinel-2 and Landsat, the vocabulary's centre otherwise),
    -1..-12 for SAR polarizations of ``sar_orbit`` (``both``, ``ascending``, ``descending``)."""
    if sar_orbit not in ("both", "ascending", "descending"):
        raise ValueError(f"sar_orbit {sar_orbit!r} is not one of 'both', 'ascending', 'descending'")
    ids = []
    for band in bands:
        s, spec = _band_spec(band, sensor)
        if s.startswith("sentinel-1"):
            ids.append(float(PANOPTICON_SAR_IDS[(spec.key, sar_orbit)]))
            continue
        family = "sentinel-2" if s.startswith("sentinel-2") else "landsat" if s.startswith("landsat") else None
        trained = _TRAINED_IDS_NM.get(family, {}).get(spec.id)
        ids.append(trained if trained is not None else spec.wavelength * 1000.0)
    return ids


class _ChannelAttnPatchEmbed(nn.Module):
    """Upstream's ``PanopticonPE`` (see the module docstring): ``(B, C, H, W)`` and ``C`` channel
    ids -> ``(B, H/p, W/p, embed_dim)`` tokens."""

    def __init__(self, attn_dim: int, embed_dim: int, patch_size: int, num_heads: int, grid: int):
        super().__init__()
        if attn_dim % num_heads or attn_dim % 2:
            raise ValueError(f"attn_dim {attn_dim} must be even and divisible by num_heads {num_heads}")
        self.attn_dim, self.num_heads, self.patch_size = attn_dim, num_heads, patch_size
        self.conv = nn.Conv2d(1, attn_dim, patch_size, stride=patch_size)  # one kernel for every channel
        d1 = attn_dim // 3
        self.sar_transmit = nn.Parameter(torch.zeros(2, d1))  # V, H
        self.sar_receive = nn.Parameter(torch.zeros(2, d1))  # V, H
        self.sar_orbit = nn.Parameter(torch.zeros(2, attn_dim - 2 * d1))  # ascending, descending
        self.query = nn.Parameter(torch.randn(1, 1, attn_dim))
        self.key = nn.Linear(attn_dim, attn_dim, bias=False)
        self.value = nn.Linear(attn_dim, attn_dim, bias=False)
        self.proj = nn.Linear(attn_dim, embed_dim)
        # what DINOv2Encoder reads and updates when it keeps a checkpoint's table
        self.grid_size = (grid, grid)
        self.img_size = (grid * patch_size, grid * patch_size)
        self.num_patches = grid * grid

    def _sar_table(self) -> torch.Tensor:
        """The 12 SAR codes, row ``-(id + 1)``: polarization (tx, rx) VV, VH, HH, HV within each
        orbit (both = the mean of the two, ascending, descending)."""
        tx = self.sar_transmit[[0, 0, 1, 1]]
        rx = self.sar_receive[[0, 1, 1, 0]]
        orbit = torch.stack([self.sar_orbit.mean(0), self.sar_orbit[0], self.sar_orbit[1]])
        pol = torch.cat([tx, rx], dim=1)
        return torch.cat([pol.repeat(3, 1), orbit.repeat_interleave(4, dim=0)], dim=1)

    def channel_codes(self, ids: torch.Tensor) -> torch.Tensor:
        """``(C,)`` float64 channel ids -> ``(C, attn_dim)`` codes."""
        sar = ids < 0
        k = torch.arange(self.attn_dim // 2, dtype=torch.float32, device=ids.device) / (self.attn_dim / 2.0)
        omega = 1.0 / 10000**k  # upstream's float32 frequencies
        angles = torch.floor(torch.where(sar, 0.0, ids))[:, None] * omega.double()[None, :]
        optical = torch.cat([angles.sin(), angles.cos()], dim=1).to(self.query.dtype)
        rows = (-(ids + 1)).clamp(min=0).long()
        return torch.where(sar[:, None], self._sar_table()[rows], optical)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p, D, n = self.patch_size, self.attn_dim, self.num_heads
        h, w = H // p, W // p
        t = self.conv(x.reshape(B * C, 1, H, W)).reshape(B, C, D, h * w)
        t = t.permute(0, 3, 1, 2) + self.channel_codes(ids).to(t.dtype)  # (B, L, C, D)
        hd = D // n
        q = self.query.reshape(n, hd, 1) * hd**-0.5
        qk = (self.key.weight.reshape(n, hd, D) * q).sum(1)  # (n, D): the query folded into the keys
        attn = (t @ qk.t().to(t.dtype)).softmax(dim=2)  # (B, L, C, n), over channels
        mixed = attn.transpose(2, 3) @ t  # (B, L, n, D): each head's channel average
        out = torch.einsum("blnd,ned->blne", mixed, self.value.weight.reshape(n, hd, D).to(t.dtype))
        return self.proj(out.reshape(B, h, w, D))


class PanopticonEncoder(DINOv2Encoder):
    """Panopticon ViT (see the module docstring).

    Args:
        embed_dim, depth, num_heads: the ViT (ViT-B/14: 768, 12, 12).
        attn_dim, attn_heads: width and heads of the channel cross-attention (2304, 16).
        img_size: as in :class:`DINOv2Encoder` (by default the checkpoint's 37 x 37 grid).
        bands: default input band names (optical and Sentinel-1 ``VV``/``VH``), in order.
        sensor: the sensor of ``bands`` (for reading band ids such as ``B08``).
        sar_orbit: the orbit code of the SAR bands: ``both`` (upstream's default ids -1, -2),
            ``ascending`` or ``descending``.
        patch_size: the patch size to run at; the published 14-pixel kernel is resampled on load
            with ``patch_resample`` (``pinv``: FlexiViT's pseudo-inverse, as for DINOv2).
        drop_path_rate: stochastic depth for fine-tuning.
    """

    patch_kernel_key = None  # one kernel shared by every channel: nothing to select by band
    checks_band_count = False  # checked against the channel ids instead

    def __init__(self, *, embed_dim: int = 768, depth: int = 12, num_heads: int = 12, attn_dim: int = 2304,
                 attn_heads: int = 16, patch_size: int = 14, pretrained_grid: int = 37,
                 img_size: int | None = None, bands: Sequence[str] = (), sensor: str | None = None,
                 sar_orbit: str = "both", drop_path_rate: float = 0.0, patch_resample: str = "pinv"):
        nn.Module.__init__(self)
        if img_size is not None and img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        grid = img_size // patch_size if img_size else pretrained_grid
        self.img_size_given = img_size is not None
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.pretrained_patch_size, self.pretrained_grid = 14, pretrained_grid
        self.patch_resample = patch_resample
        self.num_register_tokens, self.num_prefix_tokens = 0, 1
        self.interpolate_offset, self.interpolate_antialias = 0.1, False
        self._pos_matrices = SizeCache(16)
        self.bands = expand_bands(bands) if bands else ()
        self.sensor, self.sar_orbit = sensor, sar_orbit
        if self.bands:
            refuse_repeated_bands(self.bands, [_band_spec(b, sensor)[1] for b in self.bands],
                                  where="Panopticon's bands")
        #: the channel ids of ``bands`` (a list: a float64 buffer would follow ``.half()``)
        self.default_ids = panopticon_channel_ids(self.bands, sensor, sar_orbit) if self.bands else None
        #: the vocabulary's centres of ``bands`` (what a reader puts in metadata 'wavelengths')
        self._vocab_um = torch.tensor([_band_spec(b, sensor)[1].wavelength for b in self.bands], dtype=torch.float64)
        self.vit = VisionTransformer(
            img_size=grid * patch_size, patch_size=patch_size, in_chans=1, embed_dim=embed_dim, depth=depth,
            num_heads=num_heads, init_values=1e-5, dynamic_img_size=True, num_classes=0, global_pool="",
            drop_path_rate=drop_path_rate)
        self.vit.patch_embed = _ChannelAttnPatchEmbed(attn_dim, embed_dim, patch_size, attn_heads, grid)

    @property
    def in_chans(self) -> int:
        """Bands of the default channel ids; 0 when any band count is accepted."""
        return 0 if self.default_ids is None else len(self.default_ids)

    def _channel_ids(self, metadata: Mapping[str, Any] | None, num_bands: int, device) -> torch.Tensor:
        waves = metadata.get("wavelengths") if metadata is not None else None
        if self.default_ids is not None:
            if len(self.default_ids) != num_bands:
                raise EncoderInputError(
                    f"the encoder's bands {list(self.bands)} are {len(self.default_ids)} but the input has "
                    f"{num_bands} bands; build the encoder with bands=[...] naming the input's bands, in order")
            if waves is not None:  # the reader's wavelengths (bands.py centres) must be the encoder's bands'
                waves = torch.as_tensor(waves, dtype=torch.float64).flatten()
                if waves.shape != (num_bands,) or not torch.allclose(waves, self._vocab_um, atol=5e-4):
                    raise EncoderInputError(
                        f"metadata 'wavelengths' {[round(float(w), 4) for w in waves]} (um) are not those of the "
                        f"encoder's bands {list(self.bands)} ({[round(float(w), 4) for w in self._vocab_um]}): the "
                        f"input holds other bands; build the encoder with bands=[...] naming the input's bands")
            return torch.tensor(self.default_ids, dtype=torch.float64, device=device)
        if waves is None:
            raise EncoderInputError(
                "Panopticon encodes each channel by its wavelength (or SAR polarization) and has none for "
                "this batch: build the encoder with bands=[...] (names the band vocabulary knows, e.g. "
                "B04, B03, B02 or VV, VH), or pass metadata={'wavelengths': [...]} in micrometres")
        waves = torch.as_tensor(waves, dtype=torch.float64, device=device)
        if waves.shape != (num_bands,):
            raise EncoderInputError(
                f"metadata 'wavelengths' has shape {tuple(waves.shape)} but the input has {num_bands} bands; "
                f"give one wavelength (micrometres) per band, shared by the batch (batch one sensor at a time)")
        check_wavelengths(waves, where="metadata 'wavelengths'")  # optical only: SAR bands are named
        return torch.round(waves * 1e6) / 1000.0  # micrometres -> nm (0.493 -> 493.0, not 492.99..)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        vit = self.vit
        x = vit.patch_embed(x, self._channel_ids(metadata, x.shape[1], x.device))  # (B, h, w, D)
        B, h, w, D = x.shape
        x = torch.cat([vit.cls_token.expand(B, -1, -1), x.reshape(B, h * w, D)], dim=1) + self._pos((h, w))
        return vit.norm_pre(x), (h, w), None

    def no_weight_decay(self) -> set[str]:
        return {"vit.pos_embed", "vit.cls_token", "vit.patch_embed.query", "vit.patch_embed.sar_transmit",
                "vit.patch_embed.sar_receive", "vit.patch_embed.sar_orbit"}

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published teacher file (official DINOv2 names), torchgeo's wrapper (``model.``,
        timm names) and d2geo's own keys, under any prefix."""
        ours = not any(k.endswith(_ANCHOR) for k in state_dict) and any(
            k.endswith("patch_embed.conv.weight") for k in state_dict)
        sd = strip_to_anchor(state_dict, "patch_embed.conv.weight" if ours else _ANCHOR, top_level=_TOP_LEVEL)
        if "mask_token" in sd:
            sd.ignore("mask_token", "the masked-patch token, used only in pretraining")
        ignored, prefix = sd.ignored, sd.prefix
        renames = {"conv3d.conv3d.": "conv.", "chnfus.chnemb.embed_transmit": "sar_transmit",
                   "chnfus.chnemb.embed_receive": "sar_receive", "chnfus.chnemb.embed_orbit": "sar_orbit",
                   "chnfus.query": "query", "chnfus.xattn.inproj_k.": "key.", "chnfus.xattn.inproj_v.": "value.",
                   "proj.": "proj."}
        renames.update({n: n for n in ("conv.", "sar_transmit", "sar_receive", "sar_orbit", "query", "key.",
                                       "value.")})
        out = {}
        for k, v in self._from_official(sd).items():
            if k.startswith("patch_embed."):
                rest = k[len("patch_embed."):]
                old = next((o for o in renames if rest.startswith(o)), None)
                if old is None:
                    raise CheckpointError(
                        f"the checkpoint's {prefix}{k} is no part of the published Panopticon patch embedding "
                        f"(channel layer norm, key/value biases or the full-spectra mode are not built here)")
                k = "patch_embed." + renames[old] + rest[len(old):]
                if k == "patch_embed.conv.weight":
                    v = v.squeeze(2) if v.ndim == 5 else v  # (D, 1, 1, p, p) conv3d kernel -> (D, 1, p, p)
                    v = resize_patch(v, self.patch_size, self.patch_resample)  # 14 -> 16 for the pyramids
            out[k] = v
        if "pos_embed" in out:
            out["pos_embed"] = self._fit_pos_table(out["pos_embed"])
        return FilteredStateDict({f"vit.{k}": v for k, v in out.items()}, ignored=ignored, prefix=prefix)


#: Panopticon normalizes every band to zero mean and unit variance with the statistics of its
#: dataset; these are a neutral placeholder for the configs (use your data's statistics)
PANOPTICON_S2_STATS = InputStats("panopticon-s2-l2a-dn", "sentinel-2-l2a",
                                 ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
                                 (0.0,) * 10, (10000.0,) * 10, "dn")

PANOPTICON_PRETRAINED = {
    "panopticon_vitb14": PretrainedCfg(
        source="hf://lewaldm/panopticon@c8c2bb9555819e8b2bcedf5b3b00e3bf531554e7/panopticon_vitb14_teacher.pth",
        license="Apache-2.0", stats=(PANOPTICON_S2_STATS,), input_size=224, patch_size=14,
        page="https://github.com/Panopticon-FM/panopticon",
        notes=("any optical and SAR bands (channel ids from the band names); pretrained on standard-normal "
               "normalized 224 px inputs: the listed statistics are a Sentinel-2 placeholder, use your data's; "
               "the published position table is 37 x 37 (518 px), resized per input size"),
        pinned_by=("torchgeo's Panopticon_Weights.VIT_BASE14 (torchgeo main, commit 7ea0616d, "
                   "torchgeo/models/panopticon.py: the Hub revision); no public source states a sha256; "
                   "license from torchgeo's docs/api/weights/agnostic.csv and the publishers' repository")),
}

register_encoder("panopticon_vitb14", PanopticonEncoder, pretrained_cfg=PANOPTICON_PRETRAINED["panopticon_vitb14"],
                 embed_dim=768, depth=12, num_heads=12, attn_dim=2304, attn_heads=16)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("panopticon_test", like="panopticon_vitb14", embed_dim=64, depth=4, num_heads=4,
                      attn_dim=48, attn_heads=4)
