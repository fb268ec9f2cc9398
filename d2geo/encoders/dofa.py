"""DOFA encoders (Xiong et al., 2024; torchgeo's ``DOFA``, ``DOFABase16_Weights``,
``DOFALarge16_Weights``): one ViT for any sensor, its patch kernel generated from the band
wavelengths.

For the ``C`` input bands, a small transformer turns sine-cosine codes of the wavelengths (in
nanometres) into a ``(D, C, 16, 16)`` kernel and a bias, both scaled by 0.01, and the image
is cut into patches by a convolution with stride 16 **and padding 1**, as upstream does (the
patch grid is shifted by one pixel; an ``H x W`` input multiple of 16 still gives
``H/16 x W/16`` tokens). The position table is the checkpoint's fixed sine-cosine table of the
224 px grid (14 x 14 plus a class position); other input sizes resize its patch part
bicubically (``align_corners=False``, no antialiasing) to the token grid and keep the class
position, as DOFA's segmentation encoder does.

Dense features are the raw block outputs (``norm=False``, what DOFA's segmentation encoder
uses). The published checkpoints carry no final norm (torchgeo's classifier creates a fresh
``fc_norm``); ``norm=True`` applies such a fresh LayerNorm (weight 1, bias 0, eps 1e-6) to
every tap, trainable when fine-tuned.

Wavelengths: ``metadata["wavelengths"]`` (``(C,)`` micrometres, shared by the batch), or the
defaults the encoder was built with (``wavelengths=``, or ``bands=`` names, read through the
band vocabulary). Missing wavelengths are refused with the fix.
"""
from __future__ import annotations

import logging
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import Block

from .bands import BandError, band_wavelengths, expand_bands, refuse_repeated_bands
from .base import EncoderInputError, GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .metadata import check_wavelengths
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["DOFAEncoder", "DOFA_PRETRAINED", "DOFA_S2_STATS", "dofa_wave_code"]

_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token")
#: width of the wavelength codes and of the kernel-generator transformer (all published models)
WAVE_DIM = 128
#: learned tokens of the kernel generator (one per output row of the generated kernel)
NUM_WEIGHT_TOKENS = 128
#: DOFA scales the generated kernel and bias by this
KERNEL_SCALE = 0.01


def dofa_wave_code(wavelengths_um: torch.Tensor, dim: int = WAVE_DIM) -> torch.Tensor:
    """``(C,)`` wavelengths in micrometres -> ``(C, dim)`` sine-cosine codes of the wavelengths
    in nanometres (sines first; frequencies ``10000 ** (-k / (dim / 2))``), in float32."""
    pos = wavelengths_um.float().reshape(-1) * 1000
    omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    angles = pos[:, None] * omega[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _ResMLP(nn.Module):
    """``x + relu(w2(relu(w1(x))))`` on the wavelength codes (upstream's ``FCResLayer``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, dim)
        self.w2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.w2(F.relu(self.w1(x))))


class _KernelGenerator(nn.Module):
    """The wavelength-to-kernel transformer (upstream's ``TransformerWeightGenerator``)."""

    def __init__(self, dim: int, kernel_numel: int, embed_dim: int):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=4, activation="gelu", norm_first=False,
                                           batch_first=False, dropout=0.0)
        self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.fc_weight = nn.Linear(dim, kernel_numel)
        self.fc_bias = nn.Linear(dim, embed_dim)
        self.weight_tokens = nn.Parameter(torch.randn(NUM_WEIGHT_TOKENS, dim) * 0.02)
        self.bias_token = nn.Parameter(torch.randn(1, dim) * 0.02)

    def forward(self, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seq = torch.cat([self.weight_tokens, codes, self.bias_token], dim=0)
        out = self.transformer_encoder(seq)
        weight = self.fc_weight(out[NUM_WEIGHT_TOKENS:-1] + codes)  # (C, p*p*D)
        bias = self.fc_bias(out[-1])  # (D,)
        return weight, bias


class _DOFAPatchEmbed(nn.Module):
    """Patch embedding whose kernel is generated from the band wavelengths."""

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        self.embed_dim, self.patch_size = embed_dim, patch_size
        self.weight_generator = _KernelGenerator(WAVE_DIM, patch_size * patch_size * embed_dim, embed_dim)
        self.fclayer = _ResMLP(WAVE_DIM)

    def kernel(self, wavelengths_um: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = self.fclayer(dofa_wave_code(wavelengths_um))
        weight, bias = self.weight_generator(codes)
        p, D = self.patch_size, self.embed_dim
        weight = weight.view(-1, p, p, D).permute(3, 0, 1, 2)  # (D, C, p, p)
        return weight * KERNEL_SCALE, bias.view(D) * KERNEL_SCALE

    def forward(self, x: torch.Tensor, wavelengths_um: torch.Tensor) -> torch.Tensor:
        weight, bias = self.kernel(wavelengths_um)
        out = F.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=self.patch_size, padding=1)
        return out  # (B, D, h, w)


class DOFAEncoder(GeoEncoder):
    """DOFA ViT (see the module docstring).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the ViT.
        img_size: the size the position table was made for (224: 14 x 14 patches).
        bands: default input band names (their wavelengths come from the band vocabulary,
            ``sensor`` disambiguating ids); optional when ``wavelengths`` or metadata give them.
        sensor: the sensor of ``bands`` (e.g. ``"sentinel-2-l2a"``), for reading its band ids.
        wavelengths: default wavelengths in micrometres, one per input band.
        drop_path_rate: stochastic depth (the same in every block).
    """

    num_prefix_tokens = 1
    patch_size = 16
    #: the band count is checked against the wavelengths, not ``bands``
    checks_band_count = False

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 img_size: int = 224, bands: Sequence[str] = (), sensor: str | None = None,
                 wavelengths: Sequence[float] | None = None, drop_path_rate: float = 0.0):
        super().__init__()
        if img_size % self.patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of the patch size {self.patch_size}")
        self.embed_dim, self.depth, self.img_size = embed_dim, depth, img_size
        self.bands = expand_bands(bands) if bands else ()
        if wavelengths is not None:
            default = torch.as_tensor(wavelengths, dtype=torch.float32).flatten()
            if self.bands and len(self.bands) != len(default):
                raise ValueError(f"{len(self.bands)} bands but {len(default)} wavelengths given")
        elif self.bands:
            try:
                default = band_wavelengths(sensor, self.bands) if sensor else _vocabulary_wavelengths(self.bands)
            except (BandError, KeyError, ValueError) as e:
                raise ValueError(f"{e}; give wavelengths=[...] in micrometres, or sensor=... for band ids") from e
        else:
            default = None
        if self.bands:  # two names of one band would give two copies of one kernel
            refuse_repeated_bands(self.bands, [_vocabulary_spec(b, sensor) for b in self.bands],
                                  where="DOFA's bands")
        check_wavelengths(default, where="wavelengths", error=ValueError)
        self.default_wavelengths = default
        self.patch_embed = _DOFAPatchEmbed(embed_dim, self.patch_size)
        grid = img_size // self.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # the fixed sine-cosine table of the checkpoint (upstream: a parameter without grad)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=drop_path_rate,
                  norm_layer=partial(nn.LayerNorm, eps=1e-6))
            for _ in range(depth)
        ])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)

    @property
    def in_chans(self) -> int:
        """Bands of the default wavelengths; 0 when any band count is accepted."""
        return 0 if self.default_wavelengths is None else len(self.default_wavelengths)

    # -- wavelengths ---------------------------------------------------------------------
    def _wavelengths(self, metadata: Mapping[str, Any] | None, num_bands: int, device) -> torch.Tensor:
        waves = metadata.get("wavelengths") if metadata is not None else None
        source = "metadata 'wavelengths'"
        if waves is None:
            if self.default_wavelengths is None:
                raise EncoderInputError(
                    "DOFA generates its patch kernel from the band wavelengths and has none for this "
                    "batch: pass metadata={'wavelengths': [...]} in micrometres (one per band), or build "
                    "the encoder with bands=[...] (names the band vocabulary knows) or wavelengths=[...]")
            waves, source = self.default_wavelengths, "the encoder's default wavelengths"
        waves = torch.as_tensor(waves, dtype=torch.float32, device=device)
        if waves.ndim != 1 or waves.numel() != num_bands:
            raise EncoderInputError(
                f"{source} has shape {tuple(waves.shape)} but the input has {num_bands} bands; give one "
                f"wavelength (micrometres) per input band, shared by the batch (batch one sensor at a time)")
        check_wavelengths(waves, where=source)  # the shared unit check (nothing while tracing)
        return waves

    # -- GeoEncoder hooks ------------------------------------------------------------------
    def _pos_table(self, grid: tuple[int, int]) -> torch.Tensor:
        g = self.img_size // self.patch_size
        # the resize to the native grid is the identity, exactly (bicubic taps 0, 1, 0, 0), so a
        # recorded model resizes at every size and nothing branches on the traced grid
        if not is_tracing() and tuple(grid) == (g, g):
            return self.pos_embed
        cls_pos, patch = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        patch = patch.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(patch, size=tuple(grid), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, patch.flatten(2).transpose(1, 2)], dim=1)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        waves = self._wavelengths(metadata, x.shape[1], x.device)
        tokens = self.patch_embed(x, waves)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        pos = self._pos_table(grid).to(tokens.dtype)
        cls = (self.cls_token + pos[:, :1]).expand(x.shape[0], -1, -1)
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1), grid, None

    def get_blocks(self) -> Sequence[nn.Module]:
        return self.blocks

    def final_norm_module(self) -> nn.Module:
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "patch_embed.weight_generator.weight_tokens",
                "patch_embed.weight_generator.bias_token"}

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """torchgeo's DOFA files (and DOFA's own), under any prefix; ``fc_norm``/``head``
        (classifier parts) are left out by name, a missing final norm starts fresh."""
        sd = strip_to_anchor(state_dict, "patch_embed.fclayer.w1.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith(("head.", "fc_norm.", "decoder")) or k == "mask_token":
                out.ignore(k, "a classification head or pretraining decoder part, not the encoder")
                continue
            out[k] = v
        g = self.img_size // self.patch_size
        pos = out.get("pos_embed")
        if pos is not None and tuple(pos.shape[1:2]) != (g * g + 1,):
            raise CheckpointError(
                f"the checkpoint's pos_embed {tuple(pos.shape)} is not the {g}x{g} (+1) table of "
                f"img_size={self.img_size}; build the encoder with the img_size the checkpoint was made for "
                f"(other input sizes are resized at run time)")
        for name, fill in (("weight", 1.0), ("bias", 0.0)):
            if f"norm.{name}" not in out:
                out[f"norm.{name}"] = torch.full((self.embed_dim,), fill)
        return out


def _vocabulary_spec(band: str, sensor: str | None = None):
    """The band ``band`` names: as ``sensor`` reads it, or without a sensor as Sentinel-2 (L1C)
    reads it, else Landsat, else Sentinel-1 (the band vocabulary's readings); None if unknown."""
    from .bands import sensor_band

    try:
        if sensor:
            return sensor_band(sensor, band)
        return next((b for b in (sensor_band(s, band) for s in ("sentinel-2-l1c", "landsat-c2-l1", "sentinel-1"))
                     if b is not None), None)
    except (BandError, KeyError):
        return None


def _vocabulary_wavelengths(bands: Sequence[str]) -> torch.Tensor:
    """Wavelengths of band names given without a sensor (see :func:`_vocabulary_spec`)."""
    out = []
    for band in bands:
        spec = _vocabulary_spec(band)
        if spec is None:
            raise KeyError(f"band {band!r} is not in the band vocabulary")
        out.append(spec.wavelength)
    return torch.tensor(out, dtype=torch.float32)


#: Sentinel-2 L2A's ten 10/20 m bands as DN / 10 000: DOFA normalizes every dataset with its own
#: per-band statistics, so these are the configs' starting point, not the pretraining's
DOFA_S2_STATS = InputStats("dofa-s2-l2a-dn", "sentinel-2-l2a",
                           ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
                           (0.0,) * 10, (10000.0,) * 10, "dn")
_NOTES = ("any bands (kernel from the wavelengths); DOFA normalized each pretraining dataset with its own "
          "statistics: the listed ones are a Sentinel-2 placeholder, use your data's")


def _dofa(filename: str, sha256: str) -> PretrainedCfg:
    return PretrainedCfg(source=f"hf://torchgeo/dofa@b8db318b64a90b9e085ec04ba8851233c5893666/{filename}",
                         license="CC-BY-4.0", stats=(DOFA_S2_STATS,), input_size=224, patch_size=16, sha256=sha256,
                         page="https://github.com/zhu-xlab/DOFA", notes=_NOTES,
                         pinned_by="torchgeo 0.8.1's weights table (revision); the sha256 is the Hub's LFS object id, whose first 8 hex digits end the file name (torchgeo's convention)")


#: the published weights (torchgeo 0.8.1's ``DOFABase16_Weights`` / ``DOFALarge16_Weights``)
DOFA_PRETRAINED = {
    "dofa_vitb16": _dofa("dofa_base_patch16_224-a0275954.pth",
                         "a027595480a4b0641d0be330d876034439bcb6ead8b9ce10f4949227426856c6"),
    "dofa_vitl16": _dofa("dofa_large_patch16_224-0ff904d3.pth",
                         "0ff904d35418b0ae26e15812f2669f906a047f94517823bfbc3824eac9328291"),
}

register_encoder("dofa_vitb16", DOFAEncoder, pretrained_cfg=DOFA_PRETRAINED["dofa_vitb16"],
                 embed_dim=768, depth=12, num_heads=12)
register_encoder("dofa_vitl16", DOFAEncoder, pretrained_cfg=DOFA_PRETRAINED["dofa_vitl16"],
                 embed_dim=1024, depth=24, num_heads=16)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("dofa_test", like="dofa_vitb16", embed_dim=64, depth=4, num_heads=4, img_size=64)
