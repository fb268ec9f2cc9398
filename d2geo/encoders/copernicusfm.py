"""Copernicus-FM encoders (Wang et al., 2025; torchgeo's ``CopernicusFM``,
``copernicusfm_base``): one ViT for any Copernicus sensor, its patch kernel generated from
each band's wavelength **and bandwidth**, plus per-sample metadata embeddings.

**Patch embedding.** For the ``C`` input bands, Fourier codes of the centre wavelengths
(nanometres; scales ``100 nm .. 1e9 nm``) plus Fourier codes of the bandwidths (nanometres;
scales ``1 nm .. 1e9 nm``) go through DOFA's kernel generator to a ``(D, C, 16, 16)`` kernel
and a bias, both scaled by 0.01; the image is cut by a convolution with stride = patch size
**and padding 1**, as upstream does. A ``patch_size`` other than 16 (upstream's
``kernel_size=``) resamples the generated kernel by FlexiViT's pseudo-inverse resize (bicubic,
antialiased; timm's ``resample_patch_embed``, its matrix cached), as upstream does on every
call.

**Position table.** The checkpoint's 14 x 14 (+ class) table of the 224 px grid; other token
grids resize its patch part bicubically **with antialiasing** (``align_corners=False``),
exactly upstream's resize. Upstream only resizes to square grids (``sqrt`` of the token
count); an ``h x w`` grid here is the same interpolation to ``(h, w)``.

**Metadata** (d2geo's schema, :mod:`.metadata`, mapped to upstream's ``(lon, lat, time, area)``):

==================  ================================  ===================================
d2geo key           Copernicus-FM input               mapping
==================  ================================  ===================================
``latlon``          longitude, latitude (degrees)     ``lon + 180`` and ``lat + 90``, each
                                                      Fourier-coded (``1e-4 .. 720``) into
                                                      ``D/2`` values
``timestamps``      time, days since 1970-01-01       ``seconds / 86400`` (float64; one
                                                      time per sample), Fourier-coded
                                                      (``1 .. 365.25`` days)
``gsd``             area of one patch token, km^2     ``(gsd * patch_size / 1000) ** 2``
                                                      (metres -> km; Copernicus-Bench's
                                                      ``(16 * 10 / 1000) ** 2`` for S2),
                                                      Fourier-coded (``1e-3 .. 5.1e8``)
``wavelengths``     band centre wavelengths (nm)      micrometres x 1000
==================  ================================  ===================================

Each coded item goes through its linear layer (``coord_fc``, ``time_fc``, ``scale_fc``) and is
added to every position (class position included). A key that is absent uses the item's
learned "unknown" token. **Per sample**: upstream switches the whole batch to the unknown
token when any sample's value is NaN; here each sample gets its own code or the token (a NaN
in a validated :class:`~.metadata.Metadata` marks that sample's item unknown), so a sample's
features never depend on its batch mates; on batches that are all known or all unknown the two
agree. Patch areas below upstream's range (``gsd * patch_size < 31.6 m``, e.g. gsd < 1.98 m
at patch 16) are refused as upstream refuses them, with the fix (leave ``gsd`` out: unknown
token). Longitudes within 1e-4 degrees east of -180 (and latitudes within 1e-4 of the south
pole), which upstream's range assertion refuses, are coded normally.

**Bandwidths.** The band vocabulary (:mod:`.bands`) holds each band's bandwidth where it is
a fact of the band (Sentinel-2 MSI, Landsat OLI). Sentinel-1 bands use Copernicus-FM's SAR
convention (wavelength 5 cm = 5e7 nm, "bandwidth" 1 m = 1e9 nm: the values its configs give
VV and VH), not the vocabulary's optical stand-ins. The encoder is built with its bands
(``bands=``, ``sensor=``) or with ``wavelengths=`` and ``bandwidths=`` (micrometres);
``metadata["wavelengths"]`` (which carries no bandwidths) must then be those bands'
wavelengths (as the vocabulary or the encoder gives them), otherwise the batch is refused with
the fix. Sentinel-2 bands get the spectrum Copernicus-FM was pretrained with
(:data:`S2_SPECTRUM_NM`, its ``s2_toa`` values, which Copernicus-Bench's configs repeat): six of
its 13 centres differ from ESA's in the vocabulary (440, 490, 705, 860, 940, 1370 nm against
443, 493, 704, 865, 945, 1375 nm), and the model is fed the ones it learned from; the metadata
check still compares the vocabulary's wavelengths, which the data layer carries.

**Dense features** are the raw block outputs (``norm=False``), as Copernicus-FM's own
segmentation encoder (``models_dwv_seg.py``, taps 3/5/7/11 of the base model) uses them. The
published file carries no final norm (torchgeo creates a fresh ``fc_norm``); ``norm=True``
applies a fresh LayerNorm (weight 1, bias 0). Block norms use ``norm_eps=1e-6``, the official
Copernicus-FM models' value; torchgeo's ``copernicusfm_base`` builds them with PyTorch's
default 1e-5 (``norm_eps=1e-5`` reproduces it).

**Not supported**: the ``variable`` input mode (language embeddings of non-spectral variables
such as Sentinel-5P gases, from Llama 3.2); its ``patch_embed_variable.*`` weights are left
out by name and ``input_mode="variable"`` is refused.
"""
from __future__ import annotations

import logging
import math
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.layers import resample_abs_pos_embed, resample_patch_embed
from timm.models.vision_transformer import Block

from .bands import SENSORS, BandError, expand_bands, sensor_band
from .base import EncoderInputError, GeoEncoder
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .dofa import _KernelGenerator, _ResMLP
from .metadata import check_gsd, check_wavelengths
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant
from .resize import resample_abs_pos_embed as recorded_resample_abs_pos_embed
from .tracing import is_tracing

logger = logging.getLogger(__name__)

__all__ = ["CopernicusFMEncoder", "COPERNICUSFM_PRETRAINED", "fourier_expansion", "S2_SPECTRUM_NM",
           "SAR_WAVELENGTH_NM", "SAR_BANDWIDTH_NM"]

_TOP_LEVEL = ("cls_token", "pos_embed", "coord_token", "scale_token", "time_token")
#: the kernel size the generator makes (the published model's patch size)
KERNEL_SIZE = 16
#: width of the spectral codes and the kernel generator (all published models)
HYPER_DIM = 128
KERNEL_SCALE = 0.01
#: Copernicus-FM's encoding of SAR bands (its configs' VV/VH values), nanometres
SAR_WAVELENGTH_NM = 5e7
SAR_BANDWIDTH_NM = 1e9
_SAR_KEYS = ("vv", "vh", "hh", "hv")
#: Copernicus-FM's Sentinel-2 spectrum, nanometres (centre, bandwidth) by band id: the values
#: its pretraining fed the model for every Sentinel-2 image (``s2_toa`` in the official
#: ``engine_pretrain.py``; Copernicus-Bench's configs give the same). Six centres differ from
#: ESA's in the band vocabulary (440/490/705/860/940/1370 against 443/493/704/865/945/1375);
#: the model is fed the ones it learned from.
S2_SPECTRUM_NM = {
    "B01": (440.0, 20.0), "B02": (490.0, 65.0), "B03": (560.0, 35.0), "B04": (665.0, 30.0),
    "B05": (705.0, 15.0), "B06": (740.0, 15.0), "B07": (783.0, 20.0), "B08": (842.0, 115.0),
    "B8A": (860.0, 20.0), "B09": (940.0, 20.0), "B10": (1370.0, 30.0), "B11": (1610.0, 90.0),
    "B12": (2190.0, 180.0),
}
_S2_SPECS = frozenset(SENSORS["sentinel-2-l1c"])
#: Fourier scale ranges (upstream's ``FourierExpansion(lower, upper)``)
_WAVE_RANGE = (100.0, 1e9)  # nm
_BANDWIDTH_RANGE = (1.0, 1e9)  # nm
_COORD_RANGE = (1e-4, 720.0)  # degrees (shifted to be non-negative)
_AREA_RANGE = (1e-3, 5.1e8)  # km^2
_TIME_RANGE = (1.0, 365.25)  # days (not range-checked upstream)


def fourier_expansion(x: torch.Tensor, lower: float, upper: float, dim: int) -> torch.Tensor:
    """``(...)`` values -> ``(..., dim)`` codes: sines then cosines of ``2 pi x / s`` for
    ``dim / 2`` scales ``s`` log-spaced from ``lower`` to ``upper``, computed in float64 and
    returned in float32 (upstream's ``FourierExpansion``, without its range assertion: the
    callers check the ranges and say what to fix)."""
    if dim % 2:
        raise ValueError(f"the Fourier code width must be even, got {dim}")
    x = x.double()
    scales = torch.logspace(math.log10(lower), math.log10(upper), dim // 2, base=10,
                            dtype=torch.float64, device=x.device)
    angles = x[..., None] * (2 * math.pi / scales)
    return torch.cat([angles.sin(), angles.cos()], dim=-1).float()


def _out_of_range(x: torch.Tensor, lower: float, upper: float) -> torch.Tensor:
    """Values upstream's range assertion refuses (zero passes, as there)."""
    a = x.abs()
    return ~(((a >= lower) & (a <= upper)) | (x == 0))


class _SpectralPatchEmbed(nn.Module):
    """Patch embedding whose kernel is generated from band wavelengths and bandwidths
    (upstream's ``DynamicPatchEmbed`` in ``spectral`` mode)."""

    def __init__(self, embed_dim: int, kernel_size: int = KERNEL_SIZE, hyper_dim: int = HYPER_DIM):
        super().__init__()
        self.embed_dim, self.kernel_size, self.hyper_dim = embed_dim, kernel_size, hyper_dim
        self.weight_generator = _KernelGenerator(hyper_dim, kernel_size * kernel_size * embed_dim, embed_dim)
        self.fclayer = _ResMLP(hyper_dim)
        self._resize_maps: dict = {}  # (patch size, device) -> (k*k, p*p); not state, not a buffer

    def _resize_map(self, patch_size: int, device) -> torch.Tensor:
        """FlexiViT's pseudo-inverse resize from ``k x k`` to ``p x p`` as a matrix: timm's
        ``resample_patch_embed`` applied to the basis kernels (it is linear), computed once."""
        key = (patch_size, str(device))
        m = self._resize_maps.get(key)
        if m is None and is_tracing() and (patch_size, "cpu") in self._resize_maps:
            # recorded: a constant moved to the device, not the resize that made it (the
            # TorchScript ONNX exporter has no _upsample_bicubic2d_aa)
            return self._resize_maps[(patch_size, "cpu")].to(device)
        if m is None:
            k = self.kernel_size
            with torch.inference_mode(False), torch.no_grad(), torch.autocast(torch.device(device).type, enabled=False):
                basis = torch.eye(k * k, device=device).reshape(k * k, 1, k, k)
                m = resample_patch_embed(basis, [patch_size, patch_size]).reshape(k * k, -1)
            self._resize_maps[key] = m
        return m

    def kernel(self, wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor,
               patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        codes = (fourier_expansion(wavelengths_nm, *_WAVE_RANGE, self.hyper_dim)
                 + fourier_expansion(bandwidths_nm, *_BANDWIDTH_RANGE, self.hyper_dim))
        weight, bias = self.weight_generator(self.fclayer(codes))
        k, D = self.kernel_size, self.embed_dim
        weight = weight.view(-1, k, k, D).permute(3, 0, 1, 2)  # (D, C, k, k)
        if patch_size != k:
            w = weight.reshape(D, -1, k * k).float() @ self._resize_map(patch_size, weight.device)
            weight = w.to(weight.dtype).reshape(D, -1, patch_size, patch_size)
        return weight * KERNEL_SCALE, bias.view(D) * KERNEL_SCALE

    def forward(self, x: torch.Tensor, wavelengths_nm: torch.Tensor, bandwidths_nm: torch.Tensor,
                patch_size: int) -> torch.Tensor:
        weight, bias = self.kernel(wavelengths_nm, bandwidths_nm, patch_size)
        return nn.functional.conv2d(x, weight.to(x.dtype), bias.to(x.dtype), stride=patch_size, padding=1)


class CopernicusFMEncoder(GeoEncoder):
    """Copernicus-FM ViT (see the module docstring).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the ViT.
        img_size: the size the position table was made for (224: 14 x 14 patches of 16).
        patch_size: the patch size the encoder cuts (16 native; others resample the generated
            kernel, upstream's ``kernel_size=``). The metadata area is per patch of this size.
        bands: default input band names (wavelengths and bandwidths from the band
            vocabulary, ``sensor`` disambiguating ids).
        sensor: the sensor of ``bands`` (e.g. ``"sentinel-2-l1c"``).
        wavelengths, bandwidths: default centre wavelengths and bandwidths in micrometres, one
            per input band (instead of, or overriding, the vocabulary's).
        norm_eps: epsilon of the block norms and the final norm (1e-6 as in the official
            models; torchgeo's ``copernicusfm_base`` uses 1e-5).
        input_mode: ``"spectral"`` (the only one supported).
        drop_path_rate: stochastic depth (the same in every block).
    """

    num_prefix_tokens = 1
    checks_band_count = False

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 img_size: int = 224, patch_size: int = KERNEL_SIZE, bands: Sequence[str] = (),
                 sensor: str | None = None, wavelengths: Sequence[float] | None = None,
                 bandwidths: Sequence[float] | None = None, norm_eps: float = 1e-6,
                 input_mode: str = "spectral", drop_path_rate: float = 0.0):
        super().__init__()
        if input_mode != "spectral":
            raise ValueError(
                f"input_mode={input_mode!r} is not supported: d2geo implements Copernicus-FM's 'spectral' "
                "mode only (band wavelengths and bandwidths); the 'variable' mode (Llama language embeddings "
                "of Sentinel-5P/DEM variable names) is left out. Use input_mode='spectral'")
        if img_size % KERNEL_SIZE:
            raise ValueError(f"img_size {img_size} is not a multiple of the checkpoint's patch size {KERNEL_SIZE}")
        if not isinstance(patch_size, int) or patch_size < 2:
            raise ValueError(f"patch_size must be an integer >= 2, got {patch_size!r}")
        self.embed_dim, self.depth, self.img_size, self.patch_size = embed_dim, depth, img_size, patch_size
        self.bands = expand_bands(bands) if bands else ()
        self._set_default_spectrum(sensor, wavelengths, bandwidths)
        self.patch_embed_spectral = _SpectralPatchEmbed(embed_dim)
        if patch_size != KERNEL_SIZE:  # the resize matrix now, so that no recording computes it
            self.patch_embed_spectral._resize_map(patch_size, "cpu")
        grid = img_size // KERNEL_SIZE
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        # the fixed sine-cosine table of the checkpoint (upstream: a parameter without grad)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, embed_dim), requires_grad=False)
        self.coord_fc = nn.Linear(embed_dim, embed_dim)
        self.scale_fc = nn.Linear(embed_dim, embed_dim)
        self.time_fc = nn.Linear(embed_dim, embed_dim)
        self.coord_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.scale_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.time_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        norm_layer = partial(nn.LayerNorm, eps=norm_eps)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=drop_path_rate, norm_layer=norm_layer)
            for _ in range(depth)
        ])
        self.norm = norm_layer(embed_dim)

    # -- wavelengths and bandwidths ----------------------------------------------------------
    def _set_default_spectrum(self, sensor, wavelengths, bandwidths) -> None:
        """Default wavelengths/bandwidths in nm (what the model gets) and the vocabulary's
        wavelengths in micrometres (what the data layer's metadata carries) of ``bands``."""
        n = len(self.bands)
        waves_nm = bws_nm = vocab_um = None
        if self.bands:
            specs = [_band_spec(b, sensor) for b in self.bands]
            vocab_um = torch.tensor([s.wavelength for s in specs], dtype=torch.float32)
            spectra = [_spectrum_nm(s) for s in specs]
            waves_nm = torch.tensor([w for w, _ in spectra], dtype=torch.float64)
            missing = [b for b, (_, bw) in zip(self.bands, spectra) if bw is None]
            if missing and bandwidths is None:
                raise ValueError(
                    f"the band vocabulary has no bandwidth for {missing}; Copernicus-FM needs each band's "
                    f"bandwidth: give bandwidths=[...] in micrometres, one per band")
            if not missing:
                bws_nm = torch.tensor([bw for _, bw in spectra], dtype=torch.float64)
        for name, given in (("wavelengths", wavelengths), ("bandwidths", bandwidths)):
            if given is None:
                continue
            t = torch.as_tensor(given, dtype=torch.float64).flatten() * 1000
            if n and t.numel() != n:
                raise ValueError(f"{n} bands but {t.numel()} {name} given")
            if name == "wavelengths":
                waves_nm = t
            else:
                bws_nm = t
        if (waves_nm is None) != (bws_nm is None):
            raise ValueError(
                "Copernicus-FM needs both the wavelengths and the bandwidths of the bands: give bands=[...] "
                "(names the band vocabulary knows) or both wavelengths=[...] and bandwidths=[...] in micrometres")
        if waves_nm is not None and waves_nm.numel() != bws_nm.numel():
            raise ValueError(f"{waves_nm.numel()} wavelengths but {bws_nm.numel()} bandwidths given")
        if waves_nm is not None:
            _check_spectrum(waves_nm, bws_nm, ValueError)
            check_wavelengths(waves_nm / 1000, where="wavelengths", microwave=True, error=ValueError)
        self.default_wavelengths_nm, self.default_bandwidths_nm = waves_nm, bws_nm
        self.vocabulary_wavelengths = vocab_um

    @property
    def in_chans(self) -> int:
        """Bands of the default spectrum; 0 when none was given."""
        return 0 if self.default_wavelengths_nm is None else len(self.default_wavelengths_nm)

    def _spectrum(self, metadata: Mapping[str, Any], num_bands: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.default_wavelengths_nm is None:
            raise EncoderInputError(
                "Copernicus-FM generates its patch kernel from each band's wavelength and bandwidth and the "
                "encoder has none: build it with bands=[...] (names the band vocabulary knows, with sensor=... "
                "for band ids) or with wavelengths=[...] and bandwidths=[...] in micrometres, one per band")
        waves, bws = self.default_wavelengths_nm, self.default_bandwidths_nm
        if waves.numel() != num_bands:
            raise EncoderInputError(
                f"the encoder was built for {waves.numel()} bands ({list(self.bands) or 'its wavelengths'}) but "
                f"the input has {num_bands}; build it with the input's bands (bands=[...] or wavelengths= and "
                f"bandwidths=)")
        given = metadata.get("wavelengths")
        if given is not None and not is_tracing():
            given = given.detach().to("cpu", torch.float64)
            ok = torch.allclose(given * 1000, waves, rtol=0, atol=1e-3)
            if not ok and self.vocabulary_wavelengths is not None:
                ok = torch.allclose(given, self.vocabulary_wavelengths.double(), rtol=0, atol=1e-6)
            if not ok:
                raise EncoderInputError(
                    f"metadata 'wavelengths' {given.tolist()} are not the wavelengths of the encoder's bands "
                    f"({list(self.bands) or (waves / 1000).tolist()}); Copernicus-FM also needs the bandwidths, "
                    f"which the metadata does not carry: build the encoder with this data's bands "
                    f"(encoder_kwargs bands=[...], sensor=...) or with its wavelengths= and bandwidths=")
        return waves.to(device), bws.to(device)

    # -- metadata --------------------------------------------------------------------------
    def _meta_embeddings(self, metadata: Mapping[str, Any], batch: int) -> torch.Tensor:
        """``(B, 1, D)``: the sum of the coded location, patch area and time, each through its
        linear layer; an absent item (or a sample's NaN) takes the item's learned token."""
        D = self.embed_dim

        def item(values, code_fn, token, fc):
            """``values`` ``(B, k)`` float64 or None -> ``fc(code or token)`` ``(B, 1, D)``."""
            if values is None:
                return fc(token).expand(batch, 1, D)
            unknown = values.isnan().any(dim=1)
            code = code_fn(torch.where(values.isnan(), torch.zeros_like(values), values))
            return fc(torch.where(unknown[:, None, None], token, code.to(token.dtype)[:, None]))

        def coord_code(lat_lon):
            half = D // 2
            code = torch.cat([fourier_expansion(lat_lon[:, 1] + 180, *_COORD_RANGE, half),
                              fourier_expansion(lat_lon[:, 0] + 90, *_COORD_RANGE, half)], dim=-1)
            return nn.functional.pad(code, (0, D - code.shape[-1]))  # odd widths: zeros, as upstream

        latlon = metadata.get("latlon")
        coord = item(None if latlon is None else latlon.double(), coord_code, self.coord_token, self.coord_fc)

        gsd, areas = metadata.get("gsd"), None
        if gsd is not None:
            gsd = gsd.double()
            check_gsd(gsd)
            areas = (gsd * self.patch_size / 1000.0) ** 2  # km^2 of one patch token
            bad = ~gsd.isnan() & ((gsd <= 0) | _out_of_range(areas, *_AREA_RANGE))
            if not is_tracing() and bad.any():
                g = float(gsd[bad][0])
                raise EncoderInputError(
                    f"metadata 'gsd' {g:g} m gives patch tokens of {(g * self.patch_size) ** 2:g} m^2, outside "
                    f"Copernicus-FM's area range {_AREA_RANGE[0]:g}..{_AREA_RANGE[1]:g} km^2 (it needs "
                    f"gsd * patch_size >= {math.sqrt(_AREA_RANGE[0]) * 1000:.1f} m and gsd > 0); leave 'gsd' "
                    f"out of the metadata (the learned unknown-area token is used) or give the gsd in metres")
            areas = areas[:, None]
        area = item(areas, lambda a: fourier_expansion(a[:, 0], *_AREA_RANGE, D), self.scale_token, self.scale_fc)

        ts, days = metadata.get("timestamps"), None
        if ts is not None:
            if ts.ndim == 2 and ts.shape[1] != 1:
                raise EncoderInputError(
                    f"metadata 'timestamps' has shape {tuple(ts.shape)}: Copernicus-FM is an image encoder and "
                    f"takes one acquisition time per sample; give shape (B, 1)")
            days = ts.reshape(batch, 1).double() / 86400.0  # days since 1970-01-01
        time = item(days, lambda t: fourier_expansion(t[:, 0], *_TIME_RANGE, D), self.time_token, self.time_fc)
        return coord + area + time

    # -- GeoEncoder hooks ------------------------------------------------------------------
    def _pos_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The table for ``grid`` (timm returns it unchanged on the native grid). While the
        model is recorded, the antialiased bicubic resize is written as two interpolation
        matrices (:mod:`.resize`, equal to torch's within float32 rounding): the TorchScript
        ONNX exporter has no ``_upsample_bicubic2d_aa``, and an exported model takes any grid."""
        g = self.img_size // KERNEL_SIZE
        if is_tracing():
            return recorded_resample_abs_pos_embed(self.pos_embed, grid, (g, g), num_prefix_tokens=1)
        return resample_abs_pos_embed(self.pos_embed, list(grid), [g, g], num_prefix_tokens=1,
                                      interpolation="bicubic", antialias=True)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        metadata = metadata if metadata is not None else {}
        waves, bws = self._spectrum(metadata, x.shape[1], x.device)
        tokens = self.patch_embed_spectral(x, waves, bws, self.patch_size)
        grid = tuple(tokens.shape[-2:])
        tokens = tokens.flatten(2).transpose(1, 2)
        pos = self._pos_table(grid).to(tokens.dtype) + self._meta_embeddings(metadata, x.shape[0]).to(tokens.dtype)
        cls = self.cls_token + pos[:, :1]
        return torch.cat([cls, tokens + pos[:, 1:]], dim=1), grid, None

    def get_blocks(self) -> Sequence[nn.Module]:
        return self.blocks

    def final_norm_module(self) -> nn.Module:
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {"cls_token", "coord_token", "scale_token", "time_token",
                "patch_embed_spectral.weight_generator.weight_tokens",
                "patch_embed_spectral.weight_generator.bias_token"}

    # -- checkpoints -------------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """torchgeo's Copernicus-FM files (and the official ones), under any prefix: the
        ``variable`` mode's ``patch_embed_variable.*`` and the classifier's ``fc_norm``/``head``
        are left out by name; a missing final norm starts fresh."""
        sd = strip_to_anchor(state_dict, "patch_embed_spectral.fclayer.w1.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith("patch_embed_variable."):
                out.ignore(k, "the 'variable' input mode (language embeddings), which d2geo leaves out")
            elif k.startswith(("head.", "fc_norm.")):
                out.ignore(k, "a classification head part, not the encoder")
            else:
                out[k] = v
        g = self.img_size // KERNEL_SIZE
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


def _spectrum_nm(spec) -> tuple[float, float | None]:
    """(centre, bandwidth) in nm that Copernicus-FM gets for a vocabulary band: its own SAR and
    Sentinel-2 conventions, else the vocabulary's facts (bandwidth None where it has none)."""
    if spec.key in _SAR_KEYS:
        return SAR_WAVELENGTH_NM, SAR_BANDWIDTH_NM
    if spec in _S2_SPECS:
        return S2_SPECTRUM_NM[spec.id]
    return spec.wavelength * 1000, None if spec.bandwidth is None else spec.bandwidth * 1000


def _band_spec(band: str, sensor: str | None):
    """The vocabulary's spec of ``band``: read with ``sensor``, else as Sentinel-2 (L1C), Landsat
    or Sentinel-1 reads it."""
    sensors = (sensor,) if sensor else ("sentinel-2-l1c", "landsat-c2", "sentinel-1")
    try:
        spec = next((b for b in (sensor_band(s, band) for s in sensors) if b is not None), None)
    except KeyError as e:
        raise ValueError(f"{e.args[0]}") from None
    except BandError as e:
        raise ValueError(f"{e}; give wavelengths=[...] and bandwidths=[...] in micrometres") from None
    if spec is None:
        where = sensor or "Sentinel-2, Landsat or Sentinel-1"
        raise ValueError(f"band {band!r} is not a band of {where} in the band vocabulary; name the bands "
                         f"with its names (sensor=... for band ids), or give wavelengths=[...] and "
                         f"bandwidths=[...] in micrometres")
    return spec


def _check_spectrum(waves_nm: torch.Tensor, bws_nm: torch.Tensor, error) -> None:
    for name, t, (lo, hi) in (("wavelength", waves_nm, _WAVE_RANGE), ("bandwidth", bws_nm, _BANDWIDTH_RANGE)):
        bad = (t <= 0) | _out_of_range(t, lo, hi) | ~torch.isfinite(t)
        if bad.any():
            raise error(
                f"a {name} of {float(t[bad][0]) / 1000:g} um is outside Copernicus-FM's range "
                f"{lo / 1000:g}..{hi / 1000:g} um; give {name}s in micrometres (e.g. 0.665 for red), "
                f"SAR bands as 5e4 um wavelength and 1e6 um bandwidth")


#: Copernicus-Bench's Sentinel-2 L1C statistics (DN; its EuroSAT-S2 config's, EuroSAT's band
#: statistics as SSL4EO-S12's EuroSAT loader gives them); Copernicus-FM normalizes each dataset
#: with its own statistics: a starting point, not the pretraining's
COPERNICUSFM_S2_STATS = InputStats(
    "copernicus-bench-s2-l1c-dn", "sentinel-2-l1c",
    ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"),
    (1353.7, 1117.2, 1041.8, 946.5, 1199.1, 2003.0, 2374.0, 2301.2, 2599.7, 732.1, 12.1, 1820.6, 1118.2),
    (897.3, 736.0, 684.8, 620.0, 791.9, 1341.3, 1595.4, 1545.5, 1750.1, 475.1, 98.3, 1216.5, 736.7), "dn")
#: Copernicus-Bench's EuroSAT-SAR statistics (backscatter in dB)
COPERNICUSFM_S1_STATS = InputStats("copernicus-bench-s1-db", "sentinel-1", ("VV", "VH"),
                                   (-12.548, -20.192), (5.257, 5.912), "dB")

#: the published weights (torchgeo 0.8.1's ``CopernicusFM_Base_Weights.CopernicusFM_ViT``; no
#: sha256 is published, the file name carries the first 8 hex digits of it)
COPERNICUSFM_PRETRAINED = {
    "copernicusfm_vitb16": PretrainedCfg(
        source=("hf://torchgeo/copernicus-fm@f395812cc990ba25a451dbb9c9e6d95c8482947e/"
                "CopernicusFM_ViT_base_varlang-085350e4.pth"),
        license="CC-BY-4.0", stats=(COPERNICUSFM_S2_STATS, COPERNICUSFM_S1_STATS), input_size=224,
        patch_size=16, page="https://github.com/zhu-xlab/Copernicus-FM",
        notes=("any bands with known wavelength and bandwidth (kernel generated from both); metadata: "
               "latlon, timestamps, gsd (area per patch); the 'variable' (language) mode is not supported; "
               "the statistics are Copernicus-Bench's per-dataset values, use your data's"),
        pinned_by="torchgeo 0.8.1's weights table (revision; the full sha256 is not public)"),
}

register_encoder("copernicusfm_vitb16", CopernicusFMEncoder,
                 pretrained_cfg=COPERNICUSFM_PRETRAINED["copernicusfm_vitb16"], embed_dim=768, depth=12, num_heads=12)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("copernicusfm_test", like="copernicusfm_vitb16", embed_dim=64, depth=4, num_heads=4, img_size=64)
