"""SSL4EO ViT encoders: SSL4EO-S12 13-band Sentinel-2 L1C, self-supervised with MAE, DINO,
MoCo-v3 and FG-MAE (Wang et al., 2022; torchgeo's ``ViTSmall16_Weights.SENTINEL2_ALL_*``, and
ViT-B/16, L/16, H/14 MAE and FG-MAE), the same MAE / FG-MAE encoders on Sentinel-1 GRD (VV,
VH in dB; ``*_s1``), and the SSL4EO-L Landsat ViT-S/16 (MoCo-v2, SimCLR; one per sensor and
processing level, ``ssl4eo_l_*``).

The network is timm's ``vit_small_patch16_224`` with 13 input bands, which is what
torchgeo builds (``timm.create_model('vit_small_patch16_224', in_chans=13)`` followed by
``load_state_dict(strict=False)``): a class token, a learned position table of the 14 x 14
grid of 224 px, LayerNorm (eps 1e-6) blocks and a final norm. Other input sizes resample
the table with timm's ``resample_abs_pos_embed`` (bicubic, antialiased), as timm's
``dynamic_img_size=True`` model does at run time.

Published checkpoints are in timm's layout, some without the final norm (torchgeo tolerates
``norm.weight`` / ``norm.bias`` missing and keeps the fresh LayerNorm, weight 1 and bias 0):
a checkpoint without them gets exactly that here too, said in the log. Classification heads,
MAE decoders and mask tokens are left out by name.

Pretrained bands are Sentinel-2 L1C in the product order (``B01`` .. ``B08``, ``B8A``,
``B09``, ``B10``, ``B11``, ``B12``), top-of-atmosphere reflectance x 10 000; the weights were
trained on DN / 10 000 (torchgeo's ``_zhu_xlab_transforms``), so the configs use mean 0 and
std 10 000 for every band.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
from timm.models.vision_transformer import VisionTransformer

from .base import GeoEncoder, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant
from .resize import resample_abs_pos_embed

logger = logging.getLogger(__name__)

__all__ = ["TimmViTEncoder", "SSL4EOEncoder", "S2_L1C_BANDS", "SSL4EO_PRETRAINED", "SSL4EO_STATS"]

#: Sentinel-2 L1C bands in product order: the input order of every SSL4EO-S12 13-band checkpoint
S2_L1C_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: the input scaling the weights were trained with: DN / 10 000 (mean 0, std 10 000 per band)
SSL4EO_STATS = InputStats("ssl4eo-s12-l1c", "sentinel-2-l1c", S2_L1C_BANDS, (0.0,) * 13, (10000.0,) * 13, "dn")

_TOP_LEVEL = ("cls_token", "pos_embed", "mask_token")


class TimmViTEncoder(GeoEncoder):
    """A timm ``VisionTransformer`` (class token, learned absolute positions) as a GeoEncoder.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture.
        patch_size: the patch size to run at; a checkpoint trained with another kernel size
            is resampled on load (``patch_resample``).
        img_size: the image size of the position table (224 for the published weights);
            other input sizes resample it at run time as timm does.
        bands: names of the input bands, in order; pretrained weights are selected from
            ``pretrained_bands`` by name (bands the weights do not know start at zero).
        pretrained_bands: the band order of the checkpoint's patch embedding.
        drop_path_rate: stochastic depth for fine-tuning.
        sensor: the key of ``d2geo.encoders.SENSORS`` whose band ids ``bands`` and
            ``pretrained_bands`` are (required where ids mean other bands elsewhere: Landsat TM/ETM+).
    """

    num_prefix_tokens = 1
    #: the model's name in timm / torchgeo, for messages
    upstream_name = "timm VisionTransformer"
    patch_kernel_key = "vit.patch_embed.proj.weight"
    #: whether the position table is a learned parameter (else computed per forward and a
    #: checkpoint's stored table is left out)
    learned_positions = True

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 patch_size: int = 16, img_size: int = 224, bands: Sequence[str] = S2_L1C_BANDS,
                 pretrained_bands: Sequence[str] = S2_L1C_BANDS, drop_path_rate: float = 0.0,
                 patch_resample: str = "pinv", sensor: str | None = None, **vit_kwargs: Any):
        super().__init__()
        if isinstance(bands, str) or isinstance(pretrained_bands, str):
            raise ValueError("bands and pretrained_bands are sequences of band names, not a string")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.img_size = img_size
        self.bands = tuple(bands)
        self.pretrained_bands = tuple(pretrained_bands)
        self.patch_resample = patch_resample
        # the sensor whose band ids both ``bands`` and ``pretrained_bands`` are read in (Landsat
        # TM's B4 is NIR, OLI's red): None reads them without one (Sentinel-2 ids, common names)
        self.sensor = self.pretrained_sensor = sensor
        self.vit = VisionTransformer(
            img_size=img_size, patch_size=patch_size, in_chans=len(self.bands), embed_dim=embed_dim,
            depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
            dynamic_img_size=True, num_classes=0, global_pool="", drop_path_rate=drop_path_rate,
            **vit_kwargs,
        )

    # -- GeoEncoder hooks --------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        vit = self.vit
        x = vit.patch_embed(x)  # (B, h, w, D): timm's dynamic-size layout
        h, w = x.shape[1:3]
        x = self._pos_embed_recorded(x) if is_tracing() and vit.pos_embed is not None else vit._pos_embed(x)
        x = vit.norm_pre(vit.patch_drop(x))
        return x, (h, w), None

    def _pos_embed_recorded(self, x: torch.Tensor) -> torch.Tensor:
        """timm's ``_pos_embed`` (dynamic size) with the antialiased resize as interpolation
        matrices (:mod:`.resize`), so that the TorchScript ONNX exporter can write it."""
        vit = self.vit
        B, H, W, C = x.shape
        prefix = [t.expand(B, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        pos = resample_abs_pos_embed(vit.pos_embed, (H, W), vit.patch_embed.grid_size,
                                     num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens)
        x = x.reshape(B, H * W, C)
        if vit.no_embed_class:
            x = torch.cat(prefix + [x + pos], dim=1)
        else:
            x = torch.cat(prefix + [x], dim=1) + pos
        return vit.pos_drop(x)

    # structure (the encoder contract)
    def get_blocks(self) -> Sequence[nn.Module]:
        return self.vit.blocks

    def final_norm_module(self) -> nn.Module:
        return self.vit.norm

    def no_weight_decay(self) -> set[str]:
        return {"vit.pos_embed", "vit.cls_token"}

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """timm-layout checkpoints, under any prefix (``module.base_encoder.``, ``teacher.``,
        ``backbone.``, d2geo's ``vit.``)."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            if k.startswith(("head.", "fc_norm.", "decoder", "mask_token")) or k == "mask_token":
                out.ignore(k, "a classification head or MAE decoder part, not the encoder")
                continue
            if k == "pos_embed" and not self.learned_positions:
                out.ignore(k, "the stored position table; this model computes its table for every input")
                continue
            out[f"vit.{k}"] = self._convert(k, v)
        for name, fill in (("weight", 1.0), ("bias", 0.0)):
            key = f"vit.norm.{name}"
            if key not in out:
                logger.info("%s: the checkpoint has no norm.%s; the final norm keeps its fresh value %g, "
                            "as torchgeo's strict=False load leaves it", type(self).__name__, name, fill)
                out[key] = torch.full_like(self.vit.norm.weight, fill)
        return out

    def _convert(self, key: str, value: torch.Tensor) -> torch.Tensor:
        if key == "patch_embed.proj.weight":
            return self._adapt_kernel(value)
        if key == "pos_embed":
            return self._check_pos_table(value)
        return value

    def _adapt_kernel(self, kernel: torch.Tensor) -> torch.Tensor:
        return self._adapt_checkpoint_patch_embed(
            kernel, "; pass pretrained_bands=[...] naming the checkpoint's bands in order")

    def _check_pos_table(self, pos: torch.Tensor) -> torch.Tensor:
        n = pos.shape[1] - self.num_prefix_tokens if pos.ndim == 3 else -1
        M = math.isqrt(max(n, 0))
        if M * M != n:
            raise CheckpointError(f"the checkpoint's pos_embed {tuple(pos.shape)} is not a class "
                                  f"position plus a square grid of positions")
        if M * self.patch_size != self.img_size:
            raise CheckpointError(
                f"the checkpoint's position table is a {M}x{M} grid ({M * self.patch_size} px at patch "
                f"{self.patch_size}) but the encoder was built with img_size={self.img_size}; build it "
                f"with img_size={M * self.patch_size} (other input sizes are resampled at run time)"
            )
        return pos


class SSL4EOEncoder(TimmViTEncoder):
    """SSL4EO-S12 ViT-S/16 on Sentinel-2 L1C (see the module docstring)."""

    upstream_name = "torchgeo vit_small_patch16_224"


def _hf(repo: str, rev: str, filename: str) -> str:
    return f"hf://{repo}@{rev}/{filename}"


def _entry(source: str, method: str, page: str, sha256: str | None = None, *, stats: InputStats = None,
           patch_size: int = 16, data: str = "SSL4EO-S12 (Sentinel-2 L1C, 13 bands)",
           license: str = "CC-BY-4.0", by: str = "") -> PretrainedCfg:
    by = by or ("torchgeo 0.8.1's weights table (revision); the sha256 is the Hub's LFS object id, whose first 8 hex digits end the file name (torchgeo's convention)" if sha256 else
          "torchgeo 0.8.1's weights table (revision; no public sha256, the file name has no digest)")
    return PretrainedCfg(source=source, license=license, stats=(stats or SSL4EO_STATS,), input_size=224,
                         patch_size=patch_size, page=page, notes=f"{method} on {data}", sha256=sha256, pinned_by=by)


_SSL4EO = "https://github.com/zhu-xlab/SSL4EO-S12"
#: the published weights (torchgeo 0.8.1's ``ViTSmall16_Weights.SENTINEL2_ALL_*``); the file
#: names end in the first 8 hex digits of their sha256 (torchgeo's convention)
SSL4EO_PRETRAINED = {
    "ssl4eo_s12_vits16_mae": _entry(
        _hf("wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b", "B13_vits16_mae_ep99_enc.pth"),
        "MAE", _SSL4EO),
    "ssl4eo_s12_vits16_dino": _entry(
        _hf("torchgeo/vit_small_patch16_224_sentinel2_all_dino", "5b41dd418a79de47ac9f5be3e035405a83818a62",
            "vit_small_patch16_224_sentinel2_all_dino-36bcc127.pth"), "DINO", _SSL4EO,
        "36bcc1273227252faf98e1d9f32c35166d3612d30dc0c15812c29bed6da9a7d5"),
    "ssl4eo_s12_vits16_moco": _entry(
        _hf("torchgeo/vit_small_patch16_224_sentinel2_all_moco", "1cb683f6c14739634cdfaaceb076529adf898c74",
            "vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"), "MoCo-v3", _SSL4EO,
        "67c9032df0449ae37f93c51696bcae0c6dc3485103deb44b4669e9897b90409c"),
    "ssl4eo_s12_vits16_fgmae": _entry(
        _hf("wangyi111/FGMAE", "24dd3077d7a99ecd454eaec7adb83d045d7fa122", "B13_vits16_fgmae_ep99_enc.pth"),
        "FG-MAE", "https://github.com/zhu-xlab/FGMAE"),
}

_VITS16 = dict(embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224)
#: the larger Sentinel-2 MAE / FG-MAE encoders (torchgeo's ``ViTBase16_Weights``,
#: ``ViTLarge16_Weights``, ``ViTHuge14_Weights`` ``.SENTINEL2_ALL_MAE`` / ``_FGMAE``: timm's
#: ``vit_{base,large}_patch16_224`` / ``vit_huge_patch14_224`` with 13 input bands)
_LARGER = {
    "vitb16": (dict(embed_dim=768, depth=12, num_heads=12, patch_size=16, img_size=224), "ep99", "ep99"),
    "vitl16": (dict(embed_dim=1024, depth=24, num_heads=16, patch_size=16, img_size=224), "ep99", "ep99"),
    "vith14": (dict(embed_dim=1280, depth=32, num_heads=16, patch_size=14, img_size=224), "ep199", "ep399"),
}
_ARCH = {name: _VITS16 for name in SSL4EO_PRETRAINED}
for _arch, (_dims, _mae_ep, _fgmae_ep) in _LARGER.items():
    SSL4EO_PRETRAINED[f"ssl4eo_s12_{_arch}_mae"] = _entry(
        _hf("wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b", f"B13_{_arch}_mae_{_mae_ep}_enc.pth"),
        "MAE", _SSL4EO, patch_size=_dims["patch_size"])
    SSL4EO_PRETRAINED[f"ssl4eo_s12_{_arch}_fgmae"] = _entry(
        _hf("wangyi111/FGMAE", "24dd3077d7a99ecd454eaec7adb83d045d7fa122", f"B13_{_arch}_fgmae_{_fgmae_ep}_enc.pth"),
        "FG-MAE", "https://github.com/zhu-xlab/FGMAE", patch_size=_dims["patch_size"])
    _ARCH[f"ssl4eo_s12_{_arch}_mae"] = _ARCH[f"ssl4eo_s12_{_arch}_fgmae"] = _dims

#: Sentinel-1 GRD (VV, VH in dB) statistics of SSL4EO-S12: torchgeo 0.8.1's ``_mean_s1`` /
#: ``_std_s1`` (``_ssl4eo_s12_transforms_s1``, from zhu-xlab/DeCUR's linear_BE_resnet.py),
#: the normalization of every SSL4EO-S12 / SoftCon Sentinel-1 encoder
SSL4EO_S1_STATS = InputStats("ssl4eo-s12-s1", "sentinel-1", ("VV", "VH"), (-12.59, -20.26), (5.26, 5.91), "dB")
#: Sentinel-1 MAE / FG-MAE encoders (torchgeo 0.8.1's ``ViT{Small16,Base16,Large16,Huge14}_Weights
#: .SENTINEL1_GRD_MAE`` / ``_FGMAE``): the Sentinel-2 architectures with 2 input bands; the files
#: sit beside the Sentinel-2 ones (``B2_`` instead of ``B13_``) at the same revisions
_S1_EPOCHS = {"vits16": ("ep99", "ep99"), **{a: (m, f) for a, (_, m, f) in _LARGER.items()}}
for _arch, (_mae_ep, _fgmae_ep) in _S1_EPOCHS.items():
    _dims = {**(_VITS16 if _arch == "vits16" else _LARGER[_arch][0]), "bands": ("VV", "VH"),
             "pretrained_bands": ("VV", "VH")}
    for _method, _repo, _rev, _ep, _page in (
            ("mae", "wangyi111/SSL4EO-S12", "75c72195d35201dc1fb210818993518c25da566b", _mae_ep, _SSL4EO),
            ("fgmae", "wangyi111/FGMAE", "24dd3077d7a99ecd454eaec7adb83d045d7fa122", _fgmae_ep,
             "https://github.com/zhu-xlab/FGMAE")):
        _name = f"ssl4eo_s12_{_arch}_{_method}_s1"
        SSL4EO_PRETRAINED[_name] = _entry(
            _hf(_repo, _rev, f"B2_{_arch}_{_method}_{_ep}_enc.pth"), {"mae": "MAE", "fgmae": "FG-MAE"}[_method],
            _page, stats=SSL4EO_S1_STATS, patch_size=_dims["patch_size"],
            data="SSL4EO-S12 (Sentinel-1 GRD, VV and VH in dB)")
        _ARCH[_name] = _dims

#: SSL4EO-L (Landsat) ViT-S/16 encoders, MoCo-v2 and SimCLR (torchgeo 0.8.1's
#: ``ViTSmall16_Weights.LANDSAT_*``): one per sensor and processing level, band lists as
#: torchgeo's ``_landsat_*_bands`` (Google Earth Engine's Collection 2 band names), read in the
#: sensor's own band vocabulary. The weights were trained on SSL4EO-L's 8-bit patches divided
#: by 255 (torchgeo's ``_ssl4eo_l_transforms``: mean 0, std 255). The sha256 values are the Git
#: LFS object ids the Hub's file pages of torchgeo/ssl4eo_landsat show ("Git LFS Details"; for
#: some files the page of the same content before its rename); each begins with the 8 hex
#: digits that end its file name (torchgeo's convention), which a test checks.
_SSL4EO_L = {  # split -> (sensor, bands, sha256 of the moco and simclr files)
    "tm_toa": ("landsat-tm", ("B1", "B2", "B3", "B4", "B5", "B6", "B7"),
               ("a1c967d85fa2dbe71996efee1332c68c62ca9a91544fa541d2106a0cbcf8a32a",
                "7c2d97997d718294249d48db085d4d648cfc04564a091a6e53650479faaa1143")),
    "etm_toa": ("landsat-etm", ("B1", "B2", "B3", "B4", "B5", "B6_VCID_1", "B6_VCID_2", "B7", "B8"),
                ("26d19bcfcaa6d7793d157a2c19eb329eca67cfd8523ce4cdd7014ff03b91b201",
                 "34fb12cbf294d64729e2d8c0b0313bdf63751d39fb2d2c0b45beb0442e44540f")),
    "etm_sr": ("landsat-etm", ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"),
               ("eaa4674e3551ba33d5ab66c7fe24040e16163ed8df50a24bcc82a223b2bd4262",
                "a14c466a25cf608efbc6e0f2c030c5bd7d1e43cd33a03042b529b55477aa089a")),
    "oli_tirs_toa": ("landsat-c2-l1", ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B9", "B10", "B11"),
                     ("c7c2cceb12f3b6517a48ef93b7c7613aa7e8c09325c6ee78017985fd5f2c36b7",
                      "ad43e9a4553f2519e5c3743ed5470eab1dbf20736b553dd3c9c16335d9388c32")),
    "oli_sr": ("landsat-c2", ("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"),
               ("c9b8898dc11bfa63e9372c549cf5d15d2e69dc1577a01df1511846a85b34825e",
                "4e8f61023fdb7f3aff2eb91efe4aab4f50bdf05f59b3a07afddf40d1195d6940")),
}
#: the input statistics of each SSL4EO-L split (8-bit values, divided by 255)
SSL4EO_L_STATS = {split: InputStats(f"ssl4eo-l-{split.replace('_', '-')}", sensor, bands, (0.0,) * len(bands),
                                    (255.0,) * len(bands), "0-255")
                  for split, (sensor, bands, _) in _SSL4EO_L.items()}
for _split, (_sensor, _bands, _hashes) in _SSL4EO_L.items():
    for _method, _sha in zip(("moco", "simclr"), _hashes):
        _name = f"ssl4eo_l_vits16_{_split}_{_method}"
        SSL4EO_PRETRAINED[_name] = _entry(
            _hf("torchgeo/ssl4eo_landsat", "1c88bb51b6e17a21dde5230738fa38b74bd74f76",
                f"vits16_landsat_{_split}_{_method}-{_sha[:8]}.pth"),
            {"moco": "MoCo-v2", "simclr": "SimCLR"}[_method], "https://github.com/microsoft/torchgeo", _sha,
            stats=SSL4EO_L_STATS[_split], license="CC0-1.0",  # the Hub repository's license (its README)
            by=("torchgeo 0.8.1's weights table (revision); the sha256 is the Git LFS object id shown on the "
                "Hub's page of the file (huggingface.co/torchgeo/ssl4eo_landsat, 'Git LFS Details')"),
            data=f"SSL4EO-L ({_sensor}, {_split.replace('_', ' ').upper()}, {len(_bands)} bands, 8-bit)")
        _ARCH[_name] = {**_VITS16, "bands": _bands, "pretrained_bands": _bands, "sensor": _sensor}
for _name, _pre in SSL4EO_PRETRAINED.items():
    register_encoder(_name, SSL4EOEncoder, pretrained_cfg=_pre, **_ARCH[_name])

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("ssl4eo_test", like="ssl4eo_s12_vits16_dino", embed_dim=64, depth=4, num_heads=4, img_size=64)
