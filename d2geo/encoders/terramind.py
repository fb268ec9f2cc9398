"""TerraMind 1.0 encoders (IBM / ESA): one ViT over several raw-data modalities.

TerraMind cuts each input modality (Sentinel-2 L2A, L1C or RGB, Sentinel-1 GRD or RTC, a
DEM) into 16 x 16 patches with the modality's own linear patch embedding (no bias), adds
a fixed 2-D sine-cosine position table and the modality's learned embedding, and runs the
tokens of all modalities together through one transformer (pre-norm blocks with bias-free
LayerNorms and linears, SwiGLU feed-forward). This module builds that encoder from timm
blocks and loads the published checkpoints (``TerraMind_v1_{tiny,small,base,large}.pt``,
the whole encoder-decoder of pretraining; only the raw-data encoder is used here).

Bands and modalities
    Every input channel is named ``"<MODALITY>:<band>"``, e.g. ``"S2L2A:B04"``,
    ``"S1RTC:VV"``, ``"DEM"`` (a one-band modality may be named by itself), and a bare
    modality name stands for all its pretrained bands in order (``bands=["S2L2A", "S1RTC",
    "DEM"]`` is 15 channels). The channels of one modality go to that modality's patch
    embedding; bands of a modality may be a subset or another order of its pretrained
    bands, named by id, common name or alias (``B8A``, ``nir08``, ``nir_narrow``; the band
    vocabulary of :mod:`d2geo.encoders.bands`, read with the modality's sensor: ``nir`` is B08).
    Modalities are fed to the transformer in the order they first appear in ``bands``, as
    terratorch feeds them in the order of its input dict. A sample that combines files
    (one per modality) is read with :func:`d2geo.data.geotiff.read_modalities`, which names
    the stacked channels this way.

Position table
    The checkpoints store the table (``pos_emb``, a buffer); it is the MoCo-v3 2-D
    sine-cosine table of the 14 x 14 grid of a 224-pixel image, which this module computes
    with timm (``build_sincos2d_pos_embed(..., interleave_sin_cos=True)``), checking on load
    that the checkpoint's table is that one. Other grids use the table resized by bicubic
    interpolation (``align_corners=False``), as terratorch's ``interpolate_pos_encoding``.

Output
    Block outputs hold one token grid per modality; the feature map of a block is their
    mean over modalities (``merge="mean"``, terratorch's default ``merge_method``), their
    maximum (``"max"``) or their concatenation along the channels (``"concat"``: ``D`` times
    the number of modalities, the first modality's ``D`` channels first; ``feature_dim`` says
    the width, and the detectron2 backbone's ShapeSpec follows it). With ``norm=True`` the
    final norm is applied to each token before merging (terratorch applies it to the last
    block's output only, also before merging). There are no prefix tokens. terratorch's
    ``"dict"`` and ``None`` return per-modality token sequences, not maps, and are refused.
"""
from __future__ import annotations

import logging
import re
from functools import partial
from typing import Any, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import SwiGLU
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.vision_transformer import Block

from .bands import match_bands, refuse_repeated_bands
from .base import EncoderInputError, GeoEncoder, SizeCache, is_tracing
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .modalities import MODALITIES, MODALITY_SEP, Modality, canonical_channel, find_modality  # noqa: F401
from .registry import InputStats, PretrainedCfg, register_encoder, register_test_variant

logger = logging.getLogger(__name__)

__all__ = ["TerraMindEncoder", "TERRAMIND_MODALITIES", "TerraMindModality", "expand_terramind_bands",
           "split_band", "canonical_channel", "MERGE_METHODS", "TERRAMIND_V1_STATS", "TERRAMIND_V01_STATS",
           "terramind_stats"]

#: how the modalities' token grids become one feature map: terratorch's ``merge_method``
#: values that give one dense map per block (its "dict" and None give token sequences)
MERGE_METHODS = ("mean", "max", "concat")
#: TerraMind 1.0's raw-data modalities: the modality table (``modalities.py``), whose entries
#: carry TerraMind's checkpoint key of each (``.key``)
TerraMindModality = Modality
TERRAMIND_MODALITIES: dict[str, Modality] = MODALITIES
_BY_KEY = {m.key: m for m in TERRAMIND_MODALITIES.values()}


#: TerraMind's inputs that are not raw data: token ids of its tokenizers (``tok_*``), land
#: cover and NDVI (which terratorch tokenizes), captions and coordinates (sequences)
_NOT_RAW = ("lulc", "ndvi", "caption", "coords", "coord", "det")


def _check_not_tokenized(name: str) -> None:
    low = name.strip().lower()
    base = low.split("@", 1)[0]
    if low.startswith("tok_") or base in _NOT_RAW or base.removeprefix("untok_") in _NOT_RAW:
        raise ValueError(
            f"{name!r} is one of TerraMind's tokenized or sequence modalities (LULC, NDVI, caption, coords and the "
            f"tok_* token-id inputs): terratorch feeds them as token ids of TerraMind's tokenizers, which the "
            f"generation side uses and d2geo does not include. d2geo's TerraMind encoder takes the raw-data "
            f"modalities {', '.join(TERRAMIND_MODALITIES)}; a land-cover map is a segmentation target (register "
            f"it as the dataset's label), an index such as NDVI can be computed from the S2 bands by the model")


def _modality(name: str, band: str) -> TerraMindModality:
    mod = find_modality(name)
    if mod is None:
        _check_not_tokenized(name)
        raise ValueError(
            f"band {band!r} names the modality {name!r}, which TerraMind 1.0 does not have; its raw-data "
            f"modalities are {', '.join(TERRAMIND_MODALITIES)} (name channels '<MODALITY>:<band>', "
            f"e.g. 'S2L2A:B04', 'S1RTC:VV', 'DEM')"
        )
    return mod


def split_band(name: str) -> tuple[str, str]:
    """``"S2L2A:B04"`` -> ``("S2L2A", "B04")``; ``"DEM"`` -> ``("DEM", "DEM")``."""
    if not isinstance(name, str):
        raise ValueError(f"band names must be strings, got {name!r}")
    if MODALITY_SEP in name:
        mod, band = name.split(MODALITY_SEP, 1)
        return _modality(mod.strip(), name).name, band.strip()
    mod = find_modality(name)
    if mod is not None and len(mod.bands) == 1:
        return mod.name, mod.bands[0]
    _check_not_tokenized(name)
    raise ValueError(
        f"band {name!r} does not say which TerraMind modality it belongs to: name it "
        f"'<MODALITY>:<band>' (e.g. 'S2L2A:{name}' or 'S2L1C:{name}'), or give a bare modality name "
        f"for all its bands; modalities: {', '.join(TERRAMIND_MODALITIES)}"
    )


def expand_terramind_bands(bands: Sequence[str]) -> tuple[str, ...]:
    """Channel names as ``"<MODALITY>:<band>"``; a bare modality name stands for all its bands."""
    if isinstance(bands, str):
        bands = [bands]
    out = []
    for b in bands:
        if not isinstance(b, str):
            raise ValueError(f"band names must be strings, got {b!r} in {list(bands)}")
        mod = find_modality(b)
        if mod is not None and MODALITY_SEP not in b:
            out.extend(f"{mod.name}{MODALITY_SEP}{x}" for x in mod.bands)
        else:
            m, band = split_band(b)
            out.append(f"{m}{MODALITY_SEP}{band}")
    seen = set()
    for b in out:
        if b.lower() in seen:
            raise ValueError(f"channel {b!r} is named twice in bands={list(bands)}")
        seen.add(b.lower())
    return tuple(out)


def _swiglu(in_features, hidden_features, act_layer=nn.SiLU, bias=True, drop=0.0, **_):
    # TerraMind's gated MLP has 2/3 of the plain MLP's hidden width (int(2 * 4D / 3))
    return SwiGLU(in_features, int(2 * hidden_features / 3), act_layer=act_layer, bias=bias, drop=drop)


def sincos_table(embed_dim: int, grid: Sequence[int]) -> torch.Tensor:
    """TerraMind's fixed position table ``(h*w, D)`` of a square reference ``grid``, float32."""
    return build_sincos2d_pos_embed(list(grid), embed_dim, interleave_sin_cos=True)


class TerraMindEncoder(GeoEncoder):
    """A TerraMind 1.0 raw-data encoder with the :class:`GeoEncoder` interface.

    Input ``(B, C, H, W)`` with the ``C`` channels named by ``bands``; output maps
    ``(B, D, H/16, W/16)`` (modalities merged, see the module docstring).

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture (SwiGLU hidden width
            ``int(2 * embed_dim * mlp_ratio / 3)``).
        bands: channel names ``"<MODALITY>:<band>"`` or bare modality names (see the
            module docstring). Default: the 12 Sentinel-2 L2A bands.
        img_size: the reference image size (224 for all published weights): its token grid
            is the grid of the position table.
        merge: ``"mean"``, ``"max"`` or ``"concat"`` (channels) over the modalities' token
            grids (terratorch's ``merge_method``).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over the blocks
            (as terratorch).
        pos_cache_size: how many interpolated position tables (grid, device, dtype) to keep.
    """

    num_prefix_tokens = 0

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 bands: Sequence[str] = ("S2L2A",), img_size: int = 224, patch_size: int = 16,
                 merge: str = "mean", drop_path_rate: float = 0.0, pos_cache_size: int = 16):
        super().__init__()
        if merge not in MERGE_METHODS:
            what = ("returns per-modality token sequences (terratorch's 'dict' / None), which a dense "
                    "detectron2 head cannot take" if merge in ("dict", None, "none") else "is unknown")
            raise ValueError(
                f"merge={merge!r} {what}: use one of {', '.join(map(repr, MERGE_METHODS))} (mean or maximum over "
                f"the modalities, or their concatenation along the channels: embed_dim x modalities)")
        if embed_dim % 4:
            raise ValueError(f"TerraMind's 2-D position table needs embed_dim divisible by 4, got {embed_dim}")
        if patch_size != 16:
            raise ValueError(f"TerraMind 1.0 was pretrained with 16-pixel patches (its position table "
                             f"and kernels are for them); got patch_size={patch_size}")
        if not isinstance(img_size, int) or img_size < patch_size:
            raise ValueError(f"img_size must be one int >= patch_size ({patch_size}), got {img_size!r}")
        self.bands = expand_terramind_bands(bands)
        if not self.bands:
            raise ValueError("bands is empty: name at least one modality, e.g. bands=['S2L2A']")
        self.embed_dim, self.depth, self.patch_size = embed_dim, depth, patch_size
        self.img_size, self.merge = img_size, merge
        self._pos_cache = SizeCache(pos_cache_size)

        # channel indices of each modality, in order of first appearance
        groups: dict[str, list[int]] = {}
        for i, b in enumerate(self.bands):
            groups.setdefault(b.split(MODALITY_SEP, 1)[0], []).append(i)
        self.modalities = tuple(groups)
        self._channels = {m: idx for m, idx in groups.items()}
        for m, idx in groups.items():
            own = [self.bands[i].split(MODALITY_SEP, 1)[1] for i in idx]
            spec = TERRAMIND_MODALITIES[m]
            found = match_bands(own, spec.bands, sensor=spec.sensor, available_sensor=spec.sensor,
                                where=f"{m}'s bands")  # ids, common names and aliases (B8A = nir08)
            unknown = [b for b, i in zip(own, found) if i is None]
            if not unknown:
                refuse_repeated_bands(own, found, where=f"{m}'s channels")
            if unknown:
                raise ValueError(
                    f"{m} has no band {', '.join(map(repr, unknown))}: its bands are "
                    f"{', '.join(TERRAMIND_MODALITIES[m].bands)} ({TERRAMIND_MODALITIES[m].description})"
                    + ("; B10 (cirrus) is an L1C band: use S2L1C" if m == "S2L2A" and "b10" in
                       [u.lower() for u in unknown] else "")
                )

        self.patch_embed = nn.ModuleDict({
            m: nn.Conv2d(len(idx), embed_dim, patch_size, stride=patch_size, bias=False)
            for m, idx in groups.items()
        })
        self.mod_emb = nn.ParameterDict({m: nn.Parameter(torch.zeros(1, 1, embed_dim)) for m in groups})
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        norm = partial(nn.LayerNorm, eps=1e-6, bias=False)
        self.blocks = nn.ModuleList([
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=False, proj_bias=False, drop_path=dpr[i],
                  act_layer=nn.SiLU, norm_layer=norm, mlp_layer=_swiglu)
            for i in range(depth)
        ])
        self.norm = norm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        for w in self.patch_embed.values():
            nn.init.xavier_uniform_(w.weight.view(w.weight.shape[0], -1))
        for p in self.mod_emb.values():
            nn.init.normal_(p, std=0.02)
        for m in self.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)

    @property
    def feature_dim(self) -> int:
        """Channels of the feature maps: ``embed_dim``, times the number of modalities for
        ``merge="concat"``."""
        return self.embed_dim * (len(self.modalities) if self.merge == "concat" else 1)

    @property
    def ref_grid(self) -> tuple[int, int]:
        g = self.img_size // self.patch_size
        return g, g

    # -- position table ----------------------------------------------------------------
    def pos_embed_for(self, grid: Sequence[int], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The ``(h*w, D)`` position table of a token grid (cached per grid, device, dtype;
        while traced or exported always interpolated, so the recorded model follows the input
        size: bicubic resizing to the reference grid itself returns the table unchanged)."""
        def make():
            g0 = self.ref_grid
            table = sincos_table(self.embed_dim, g0).to(device)
            if is_tracing() or (int(grid[0]), int(grid[1])) != g0:
                h, w = grid[0], grid[1]
                table = table.reshape(1, *g0, -1).permute(0, 3, 1, 2)
                table = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
                table = table.permute(0, 2, 3, 1).reshape(h * w, -1)
            return table.to(dtype).contiguous()

        return self._pos_cache.get(lambda: (int(grid[0]), int(grid[1]), torch.device(device), dtype), make)

    # -- forward hooks -----------------------------------------------------------------
    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_tensor(x) and x.ndim == 4 and x.shape[1] != self.in_chans:
            per_mod = ", ".join(f"{m}: {len(i)}" for m, i in self._channels.items())
            raise EncoderInputError(
                f"input has {x.shape[1]} channels but the encoder expects {self.in_chans} "
                f"({per_mod}; {', '.join(self.bands)}); stack the modalities' bands in this order "
                f"(d2geo.data.geotiff.read_modalities does), or build the encoder with bands=[...] "
                f"naming the channels you have"
            )
        return super().check_input(x)

    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        B, _, H, W = x.shape
        grid = (H // self.patch_size, W // self.patch_size)
        pos = self.pos_embed_for(grid, x.device, x.dtype)
        tokens = []
        for m, idx in self._channels.items():
            xm = x[:, idx[0]:idx[-1] + 1] if idx == list(range(idx[0], idx[-1] + 1)) else x[:, idx]
            t = self.patch_embed[m](xm).flatten(2).transpose(1, 2)
            tokens.append(t + (pos + self.mod_emb[m].to(x.dtype)))
        return torch.cat(tokens, dim=1), (len(tokens), *grid), None

    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int], norm: bool) -> torch.Tensor:
        if norm:
            tokens = self._final_norm(tokens)
        M, h, w = grid
        B, _, D = tokens.shape
        t = tokens.reshape(B, M, h * w, D)
        if self.merge == "concat":  # (B, M, N, D) -> (B, M*D, h, w), the first modality's channels first
            return t.permute(0, 1, 3, 2).reshape(B, M * D, h, w).contiguous()
        t = t.mean(dim=1) if self.merge == "mean" else t.amax(dim=1)
        return t.transpose(1, 2).reshape(B, D, h, w).contiguous()

    # -- structure -------------------------------------------------------------------
    def get_blocks(self):
        return self.blocks

    def final_norm_module(self):
        return self.norm

    def no_weight_decay(self) -> set[str]:
        return {f"mod_emb.{m}" for m in self.mod_emb}

    # -- checkpoints -------------------------------------------------------------------
    def band_kernels(self, bands: Sequence[str]) -> dict[str, tuple[list[str], str | None]]:
        """One kernel per modality (``patch_embed.<modality>.weight``), of its bands."""
        out: dict[str, tuple[list[str], str | None]] = {}
        for b in expand_terramind_bands(bands):
            mod, band = b.split(MODALITY_SEP, 1)
            out.setdefault(f"patch_embed.{mod}.weight", ([], TERRAMIND_MODALITIES[mod].sensor))[0].append(band)
        return out

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The published TerraMind checkpoints (the pretraining encoder-decoder), terratorch
        fine-tuned checkpoints of ``TerraMindViT`` (under any prefix) and d2geo's own keys.

        Loaded: the patch embeddings and modality embeddings of the modalities in ``bands``
        (kernels selected by band name), the encoder blocks and the final norm. Named as
        not loaded: the decoder, the embeddings of the other modalities, the stored
        position tables (checked to be the table this module computes) and the bias-free
        LayerNorms' zero ``bias`` buffers (checked to be zero).
        """
        if any(k.endswith("encoder_norm.weight") for k in state_dict):
            return self._from_upstream(state_dict)
        sd = strip_to_anchor(state_dict, "blocks.0.norm1.weight")
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        for k, v in sd.items():
            out[k] = v  # d2geo keys: a kernel of other bands fails the shape check
        return out

    def _from_upstream(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        sd = strip_to_anchor(state_dict, "encoder_norm.weight")
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        used = {TERRAMIND_MODALITIES[m].key: m for m in self.modalities}
        for k, v in sd.items():
            emb = re.match(r"^encoder_embeddings\.([^.]+)\.(.+)$", k)
            blk = re.match(r"^encoder\.(\d+)\.(.+)$", k)
            if emb:
                key, name = emb.groups()
                if key not in used:
                    why = ("a modality the encoder was not built with (name its channels in bands=[...] "
                           "to use it)" if key in _BY_KEY else
                           "the embedding of a tokenized or sequence modality, which only generation uses")
                    out.ignore(k, why)
                elif name == "proj.weight":
                    out[f"patch_embed.{used[key]}.weight"] = self._kernel(v, used[key])
                elif name == "mod_emb":
                    out[f"mod_emb.{used[key]}"] = v
                elif name == "pos_emb":
                    self._check_pos_table(k, v)
                    out.ignore(k, "the fixed sine-cosine position table (recomputed, checked equal)")
                else:
                    out[k] = v  # no place for it: reported as unknown
            elif blk:
                i, name = blk.groups()
                if name in ("norm1.bias", "norm2.bias"):
                    self._check_zero(k, v)
                    out.ignore(k, "the zero bias buffer of a bias-free LayerNorm")
                    continue
                name = re.sub(r"^mlp\.fc1\.", "mlp.fc1_g.", name)
                name = re.sub(r"^mlp\.fc3\.", "mlp.fc1_x.", name)
                out[f"blocks.{i}.{name}"] = v
            elif k == "encoder_norm.weight":
                out["norm.weight"] = v
            elif k == "encoder_norm.bias":
                self._check_zero(k, v)
                out.ignore(k, "the zero bias buffer of a bias-free LayerNorm")
            elif k.startswith("decoder") or k == "mask_token":
                out.ignore(k, "the decoder, used only in pretraining and generation")
            elif k == "missing_mod_token":
                out.ignore(k, "the token terratorch's 'concat' merge puts in place of a modality missing from its "
                              "input; d2geo's input always holds every modality of bands")
            else:
                out[k] = v
        absent = [m for m in self.modalities if f"patch_embed.{m}.weight" not in out]
        if absent:
            has = sorted(_BY_KEY[key].name for key in {re.sub(r"^encoder_embeddings\.([^.]+)\..*$", r"\1", k)
                                                         for k in sd} if key in _BY_KEY)
            raise CheckpointError(
                f"the checkpoint has no raw-data embedding of {', '.join(absent)}: its weights were pretrained on "
                f"raw {', '.join(has) or 'no modality of bands'} only; drop {', '.join(absent)} from bands=[...] "
                f"(or load a checkpoint pretrained on it, e.g. TerraMind 1.0)")
        return out

    def _kernel(self, weight: torch.Tensor, mod: str) -> torch.Tensor:
        """A checkpoint's linear patch embedding ``(D, p*p*C)`` (pixel-major, channel-minor)
        as this encoder's conv kernel ``(D, C', p', p')`` for the modality's bands."""
        spec = TERRAMIND_MODALITIES[mod]
        C = len(spec.bands)
        D, n = weight.shape
        p = round((n / C) ** 0.5)
        if p * p * C != n:
            raise CheckpointError(
                f"the checkpoint's {mod} patch embedding takes {n} values per patch, which is not "
                f"p x p x {C} ({mod}'s bands {', '.join(spec.bands)}): it was made for another band "
                f"count; load a checkpoint of the published {mod} layout"
            )
        if p != self.patch_size:
            raise CheckpointError(
                f"the checkpoint's {mod} patch embedding is for {p}-pixel patches, not TerraMind 1.0's "
                f"{self.patch_size}: it is not a TerraMind 1.0 checkpoint")
        kernel = weight.reshape(D, p, p, C).permute(0, 3, 1, 2)
        wanted = [b.split(MODALITY_SEP, 1)[1] for b in (self.bands[i] for i in self._channels[mod])]
        # the bands by name, as the encoder matched them when it was built (ids, names, aliases)
        idx = match_bands(wanted, spec.bands, sensor=spec.sensor, available_sensor=spec.sensor)
        return kernel[:, idx].contiguous()

    def _check_pos_table(self, key: str, table: torch.Tensor) -> None:
        mine = sincos_table(self.embed_dim, self.ref_grid)
        if table.reshape(-1).numel() != mine.numel() or not torch.allclose(
                table.reshape(mine.shape).float(), mine, atol=1e-5):
            raise CheckpointError(
                f"{key} is not the 2-D sine-cosine table of a {self.img_size}-pixel image in "
                f"{self.patch_size}-pixel patches that TerraMind 1.0 uses: build the encoder with the "
                f"checkpoint's img_size/patch_size, or this is not a TerraMind 1.0 checkpoint"
            )

    @staticmethod
    def _check_zero(key: str, value: torch.Tensor) -> None:
        if value.abs().max() != 0:
            raise CheckpointError(
                f"{key} is not zero: TerraMind 1.0's LayerNorms have no bias (a zero buffer), so this "
                f"checkpoint is of another architecture and its features would differ"
            )


# -- published weights and input statistics ---------------------------------------------------
#: Per-modality input statistics of the TerraMind 1.0 pretraining (terratorch's
#: ``v1_pretraining_mean/std`` of the raw-data modalities), in the modality's band order
#: (channel names as the encoder takes them), in the units the modalities are stored in.
#: The first (S2L2A) is the default of the pretrained table.
TERRAMIND_V1_STATS = (
    InputStats("S2L2A", "sentinel-2-l2a", tuple(f"S2L2A{MODALITY_SEP}{b}" for b in MODALITIES["S2L2A"].bands),
               (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22,
                3162.988, 2424.884, 1857.648),
               (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829,
                1797.379, 1434.261, 1334.311), "dn"),
    InputStats("S2L1C", "sentinel-2-l1c", tuple(f"S2L1C{MODALITY_SEP}{b}" for b in MODALITIES["S2L1C"].bands),
               (2357.089, 2137.385, 2018.788, 2082.986, 2295.651, 2854.537, 3122.849, 3040.56, 3306.481,
                1473.847, 506.07, 2472.825, 1838.929),
               (1624.683, 1675.806, 1557.708, 1833.702, 1823.738, 1733.977, 1732.131, 1679.732, 1727.26,
                1024.687, 442.165, 1331.411, 1160.419), "dn"),
    InputStats("S2RGB", None, ("S2RGB:red", "S2RGB:green", "S2RGB:blue"), (87.271, 80.931, 66.667),
               (58.767, 47.663, 42.631), "0-255"),
    InputStats("S1GRD", "sentinel-1", ("S1GRD:VV", "S1GRD:VH"), (-12.599, -20.293), (5.195, 5.890), "dB"),
    InputStats("S1RTC", "sentinel-1", ("S1RTC:VV", "S1RTC:VH"), (-10.93, -17.329), (4.391, 4.459), "dB"),
    InputStats("DEM", None, ("DEM:DEM",), (670.665,), (951.272,), "m"),
)


#: (revision, sha256, public source) of each published file; the sha256 is the file's Git LFS
#: object id. TerraMind-1.0-tiny replaced TerraMind_v1_tiny.pt in place ("Updated 500B weights")
#: and keeps the earlier file as TerraMind_v1_tiny_200B.pt: both are variants here.
_PINS = {
    "tiny": ("2b5ac0a3ed7dd7e922ccfd595b56607f342df343",
             "e56ea9ebcd4451078b9ca4893d5cd8a89bbee376ae16829c3e7fbbbc76de0eba",
             "public GitHub projects pinning this revision, sha256 and size (211873402 bytes); they do not say "
             "whether this revision is before or after the 500B update, the sha256 fixes the file either way"),
    "small": ("960f7549bfe9d7a08946860042f83badd604c779",
              "755e9cce9483fd61334ef66c79f805406db5151a8b44a685c8fbbe023c684701",
              "public GitHub projects pinning this revision and the LFS sha256 at it (504231662 bytes)"),
    "base": ("fb96c70d0a5f68dcc44030b89cbfd8ec3fb0c67a",
             "83c3a0938067c83867a46e564443c2fa38383bf4f966d931b11cb025b847d7ec",
             "public GitHub projects pinning this revision and the LFS sha256 at it (1518713958 bytes)"),
}
_NO_PUBLIC_PIN = ("no public source found gives a commit of this repository for this file or its sha256; "
                  "the Hub's LFS sha256 is checked after each download")


def _pretrained(size: str, filename: str | None = None, notes: str = "") -> PretrainedCfg:
    # the pretraining encoder-decoder state dicts (plain tensors); only the raw-data encoder is
    # loaded. File names as terratorch's ``pretrained_weights``.
    repo = f"ibm-esa-geospatial/TerraMind-1.0-{size}"
    revision, sha256, by = _PINS.get(size, (None, None, "")) if filename is None else (None, None, "")
    at = f"@{revision}" if revision else ""
    return PretrainedCfg(source=f"hf://{repo}{at}/{filename or f'TerraMind_v1_{size}.pt'}", license="Apache-2.0",
                         stats=TERRAMIND_V1_STATS, input_size=224, patch_size=16, sha256=sha256,
                         page=f"https://huggingface.co/{repo}", pinned_by=by, notes=notes,
                         unpinned_reason="" if revision else _NO_PUBLIC_PIN)


def terramind_stats(bands: Sequence[str], stats: Sequence[InputStats] | None = None) -> tuple[list[float], list[float]]:
    """Per-channel pretraining mean and std of TerraMind 1.0 (or of ``stats``, e.g.
    ``TERRAMIND_V01_STATS``) for ``bands`` (channel names as the encoder takes them, bare
    modality names expanded), e.g. for ``model.pixel_mean/std``."""
    by_mod = {st.name: st for st in (stats or TERRAMIND_V1_STATS)}
    mean, std = [], []
    for b in expand_terramind_bands(bands):
        mod, band = b.split(MODALITY_SEP, 1)
        if mod not in by_mod:
            raise KeyError(f"these statistics have no {mod} (they cover {', '.join(by_mod)}): the weights were "
                           f"not pretrained on raw {mod}")
        spec, st = TERRAMIND_MODALITIES[mod], by_mod[mod]
        (i,) = match_bands([band], spec.bands, sensor=spec.sensor, available_sensor=spec.sensor)
        mean.append(st.mean[i])
        std.append(st.std[i])
    return mean, std


# -- variants -------------------------------------------------------------------------------
#: architectures as terratorch's ``terramind_v1_*`` registrations
_VARIANTS = {
    "terramind_v1_tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "terramind_v1_small": dict(embed_dim=384, depth=12, num_heads=6),
    "terramind_v1_base": dict(embed_dim=768, depth=12, num_heads=12),
    "terramind_v1_large": dict(embed_dim=1024, depth=24, num_heads=16),
}
for _name, _cfg in _VARIANTS.items():
    register_encoder(_name, TerraMindEncoder, pretrained_cfg=_pretrained(_name.rsplit("_", 1)[1]),
                     img_size=224, patch_size=16, mlp_ratio=4.0, **_cfg)
# the tiny model's first published weights (200B pretraining tokens), kept by the publisher
# under this name when TerraMind_v1_tiny.pt was replaced by the 500B-token weights
register_encoder("terramind_v1_tiny_200b", TerraMindEncoder,
                 pretrained_cfg=_pretrained("tiny", "TerraMind_v1_tiny_200B.pt",
                                            "the first release of TerraMind 1.0 tiny (200B pretraining tokens); "
                                            "terramind_v1_tiny is the 500B-token file that replaced it"),
                 img_size=224, patch_size=16, mlp_ratio=4.0, **_VARIANTS["terramind_v1_tiny"])

#: TerraMind 0.1 base (terratorch 1.2.13's ``terramind_v01_base``): the v1 base architecture,
#: pretrained with raw Sentinel-2 L2A only (its other inputs were tokenized) and its own
#: statistics (terratorch's ``v01_pretraining_mean/std['untok_sen2l2a@224']``)
TERRAMIND_V01_STATS = (
    InputStats("S2L2A", "sentinel-2-l2a", TERRAMIND_V1_STATS[0].bands,
               (794.311, 925.161, 1183.128, 1338.041, 1667.254, 2233.633, 2460.96, 2555.569, 2619.542, 2703.298,
                2406.497, 1841.645),
               (1164.883, 1205.586, 1223.713, 1399.638, 1403.298, 1378.513, 1434.924, 1491.141, 1454.089, 1660.395,
                1473.248, 1365.080), "dn"),
)
register_encoder(
    "terramind_v01_base", TerraMindEncoder, img_size=224, patch_size=16, mlp_ratio=4.0, bands=("S2L2A",),
    **_VARIANTS["terramind_v1_base"],
    pretrained_cfg=PretrainedCfg(
        # repository and file name as terratorch 1.2.13's ``pretrained_weights['terramind_v01_base']``
        source="hf://FAST-EO/TerraMind-0.1-base/TerraMind_v01_base.pt",
        license="unstated",
        stats=TERRAMIND_V01_STATS, input_size=224, patch_size=16, page="https://huggingface.co/FAST-EO",
        notes=("the pre-release TerraMind 0.1 base, raw Sentinel-2 L2A only; its repository is not public "
               "(terratorch warns that it needs an HF_TOKEN with access, and FAST-EO's Hub page lists no public "
               "models): set HF_TOKEN, or pass weights=<your copy>. License: not stated publicly (TerraMind 1.0 is "
               "Apache-2.0)"),
        unpinned_reason=("the repository is access-restricted: no public source gives a commit of it or the "
                         "file's sha256 (ibm-esa-geospatial publishes only TerraMind 1.0)")))
# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("terramind_test", like="terramind_v1_base", embed_dim=64, depth=4, num_heads=4)
