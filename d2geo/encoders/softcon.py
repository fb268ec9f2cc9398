"""SoftCon ViT-S/14 and ViT-B/14 (Wang et al., 2024: multi-label guided soft contrastive
pretraining on SSL4EO-S12), for Sentinel-2 L1C (13 bands) and Sentinel-1 GRD (VV, VH).

Which family: the architecture is DINOv2's ViT without registers (layer scale 1e-5, patch 14,
a learned position table of the 16 x 16 grid of 224 px): the publisher builds it with a copy of
facebookresearch/dinov2's ``vision_transformer`` (``vit_small(img_size=224, patch_size=14,
in_chans=13 or 2, init_values=1e-5, num_register_tokens=0)``, zhu-xlab/softcon's
``demo_encoding.ipynb``) and torchgeo 0.8.1 with timm's ``vit_{small,base}_patch14_dinov2
(in_chans=..., img_size=224)`` (``ViTSmall14_DINOv2_Weights`` / ``ViTBase14_DINOv2_Weights``
``.SENTINEL2_ALL_SOFTCON`` / ``.SENTINEL1_GRD_SOFTCON``). So :class:`SoftConEncoder` is the
dinov2 family's :class:`~d2geo.encoders.dinov2.DINOv2Encoder`, unchanged, with multispectral
pretrained bands; it has its own module (and ``softcon_*`` names) because its weights, bands,
statistics and reference differ from Meta's RGB DINOv2.

Other input sizes resample the position table as DINOv2's code does (bicubic, the 0.1 offset,
no antialiasing: the publisher's code); torchgeo's timm model takes 224 px only.

Inputs: Sentinel-2 L1C digital numbers normalized with SSL4EO-S12's per-band statistics
(torchgeo's ``_ssl4eo_s12_transforms_s2_stats``), Sentinel-1 GRD backscatter in dB with the
SSL4EO-S12 statistics (``_ssl4eo_s12_transforms_s1``).
"""
from __future__ import annotations

from .dinov2 import DINOv2Encoder
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant
from .ssl4eo import S2_L1C_BANDS, SSL4EO_S1_STATS

__all__ = ["SoftConEncoder", "SOFTCON_S2_STATS", "SOFTCON_PRETRAINED"]

#: SSL4EO-S12's Sentinel-2 L1C band statistics (digital numbers): torchgeo 0.8.1's ``_mean_s2`` /
#: ``_std_s2`` (``_ssl4eo_s12_transforms_s2_stats``), the normalization of the SoftCon S2 weights
SOFTCON_S2_STATS = InputStats(
    "ssl4eo-s12-l1c-band-stats", "sentinel-2-l1c", S2_L1C_BANDS,
    (1612.9, 1397.6, 1322.3, 1373.1, 1561.0, 2108.4, 2390.7, 2318.7, 2581.0, 837.7, 22.0, 2195.2, 1537.4),
    (791.0, 854.3, 878.7, 1144.9, 1127.5, 1164.2, 1276.0, 1249.5, 1345.9, 577.5, 47.5, 1340.0, 1142.9), "dn")


class SoftConEncoder(DINOv2Encoder):
    """A SoftCon ViT: DINOv2's ViT on Sentinel-2 L1C or Sentinel-1 bands (see the module docstring)."""

    _kernel_fix = ("; SoftCon's weights are per sensor: load the Sentinel-2 file (13 bands) into a softcon_*_s2 "
                   "variant and the Sentinel-1 file (VV, VH) into a softcon_*_s1 variant")


_REV = "bae909781911f8ec034b4b959992fae17b973c0c"  # torchgeo 0.8.1's weights table
_ARCH = {"vits14": dict(embed_dim=384, depth=12, num_heads=6), "vitb14": dict(embed_dim=768, depth=12, num_heads=12)}
_SENSORS = {"s2": ("B13", SOFTCON_S2_STATS, "Sentinel-2 L1C, 13 bands"),
            "s1": ("B2", SSL4EO_S1_STATS, "Sentinel-1 GRD, VV and VH in dB")}
SOFTCON_PRETRAINED: dict[str, PretrainedCfg] = {}
for _arch, _dims in _ARCH.items():
    for _sensor, (_prefix, _stats, _what) in _SENSORS.items():
        _name = f"softcon_{_arch}_{_sensor}"
        SOFTCON_PRETRAINED[_name] = PretrainedCfg(
            source=f"hf://wangyi111/softcon@{_REV}/{_prefix}_{_arch}_softcon_enc.pth",
            license="unstated",
            stats=(_stats,), input_size=224, patch_size=14, page="https://github.com/zhu-xlab/softcon",
            notes=(f"SoftCon on SSL4EO-S12 ({_what}); a DINOv2 ViT without registers. License: none found "
                   f"(zhu-xlab/softcon's README names none; its Hub page was not readable here): ask the authors "
                   f"before use beyond research"),
            pinned_by="torchgeo 0.8.1's weights table (revision; no public sha256, the file name has no digest)")
        register_encoder(_name, SoftConEncoder, pretrained_cfg=SOFTCON_PRETRAINED[_name], img_size=224,
                         patch_size=14, bands=_stats.bands, pretrained_bands=_stats.bands, **_dims)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("softcon_test", like="softcon_vits14_s2", embed_dim=64, depth=4, num_heads=4)
