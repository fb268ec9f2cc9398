"""SSL4EO-S12 ViT-S/16 pretrained with data2vec (13-band Sentinel-2 L1C).

Unlike the MAE / DINO / MoCo SSL4EO-S12 weights (plain timm ViTs, ``ssl4eo.py``), the
data2vec ones come from a BEiT-style network (``models/data2vec/modeling_cyclical.py`` of
https://github.com/zhu-xlab/SSL4EO-S12, built on ``modeling_finetune.py``). The published
ViT-S/16 is ``beit_small_patch16_224`` with the arguments of ``pretrain_data2vec.py`` and of
the fine-tuning scripts (``linear_*_data2vec.py``), which are the same:

* 13 input bands, patch 16, width 384, 12 blocks, 6 heads, MLP ratio 4, LayerNorm eps 1e-6;
* no absolute position table (``use_abs_pos_emb=False``);
* ONE relative position bias table shared by all blocks (``use_shared_rel_pos_bias=True``,
  ``use_rel_pos_bias=False``), ``(27 * 27 + 3, 6)`` for the 14 x 14 grid of 224 px: the three
  extra rows are cls-to-token, token-to-cls and cls-to-cls;
* layer scale (``gamma_1`` / ``gamma_2``, initialised to 0.1);
* q and v biases, no k bias (``attn.q_bias`` / ``attn.v_bias`` beside a bias-free ``attn.qkv``);
* a final LayerNorm ``norm`` (the fine-tuning scripts replace it by mean pooling and a new
  ``fc_norm`` for classification; for dense features d2geo keeps the pretrained ``norm``).

The network here is timm's :class:`~timm.models.beit.Beit` in exactly that configuration
(its attention, block and shared bias are the official computation; the tests compare them
with the official file). The checkpoint layout is that of the pretraining model: a
training checkpoint ``{"model": ..., "model_ema": ..., "optimizer": ...}`` (the student under
``model``, which is what the official fine-tuning loads: ``--model_key model|module``) or the
bare state dict, in BEiT key names, with ``mask_token``, ``lm_head.*`` and the
``relative_position_index`` buffers, which are left out by name (timm builds the index itself).
A file without the final ``norm`` keeps a fresh one (weight 1, bias 0; logged), as the
SSL4EO-S12 files of the other methods do here.

Other input sizes: the official fine-tuning resizes the shared table once, when it builds
the model for another square input size (``linear_BE_data2vec.py``, as BEiT's
``run_class_finetuning.py``): the 2-D table of relative offsets is resampled per head with a
bicubic spline (``scipy.interpolate.interp2d(kind='cubic')``) from source offsets spaced in a
geometric progression onto the integer offsets of the new grid; the three cls rows are kept.
Non-square grids raise ``NotImplementedError`` there. d2geo does the same for every input
grid at run time, per axis (the progression of each axis from its own source and target
lengths, as timm's ``resize_rel_pos_bias_table`` generalises it; an axis whose length does
not change keeps its offsets, as the official code does when the size is unchanged), with
SciPy's documented exact replacement of ``interp2d`` on a grid (a not-a-knot cubic spline,
values outside the source offsets taken from the nearest one). The resampling is linear in
the table, so it is applied as two small matrices (cached per grid) and the table keeps
its gradient when fine-tuned at any size. timm's own ``Beit.set_input_size`` would resample
linearly unless ``TIMM_USE_SCIPY_INTERP=1``, and its SciPy path needs ``interp2d``, which
SciPy 1.14 removed; hence the matrices here. Because they are computed per grid in Python,
a traced or exported model holds the table of the size it was traced at: run at another
size, the traced graph refuses with the fix (trace again), ``torch.export`` fails its guard.

Input: the 13 L1C bands in product order, DN / 10 000 (the SSL4EO-S12 README: "input clip
to [0,1] by dividing 10000"), the statistics of ``ssl4eo.SSL4EO_STATS``.

Weights: the SSL4EO-S12 README links the backbone on Google Drive only, which serves a
confirmation page instead of the file to download clients; ``pretrained=True`` says how to
download it by hand, and ``weights=<path>`` loads it.
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn
from timm.models.beit import Beit, gen_relative_position_index

from .base import GeoEncoder
from .checkpoint import CheckpointError, FilteredStateDict, strip_to_anchor
from .registry import PretrainedCfg, register_encoder, register_test_variant
from .ssl4eo import S2_L1C_BANDS, SSL4EO_STATS

logger = logging.getLogger(__name__)

__all__ = ["SSL4EOData2vecEncoder", "resample_rel_pos_axis", "DATA2VEC_PRETRAINED"]

#: the three rows after the offset grid: cls-to-token, token-to-cls, cls-to-cls
_EXTRA = 3
_TOP_LEVEL = ("cls_token", "mask_token", "pos_embed")


def _source_offsets(src: int, dst: int) -> np.ndarray:
    """The official fine-tuning's source offsets for a table axis of ``src`` offsets resampled
    to ``dst``: ``1, 1 + q, 1 + q + q^2, ...`` either side of 0, with ``q`` in [1.01, 1.5]
    found by bisection so that the progression reaches ``dst // 2``."""
    def progression(r: float, n: int) -> float:
        return (1.0 - r ** n) / (1.0 - r)

    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if progression(q, src // 2) > dst // 2:
            hi = q
        else:
            lo = q
    dis, cur = [], 1.0
    for i in range(src // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    return np.array([-d for d in reversed(dis)] + [0.0] + dis)


def resample_rel_pos_axis(src: int, dst: int) -> np.ndarray:
    """The ``(dst, src)`` matrix that resamples one axis of a relative offset table from
    ``src`` to ``dst`` offsets (odd lengths ``2 * window - 1``), as the official fine-tuning
    does (see the module docstring); the identity when the length does not change."""
    if src == dst:
        return np.eye(src)
    from scipy.interpolate import make_interp_spline

    x = _source_offsets(src, dst)
    t = dst // 2
    target = np.clip(np.arange(-t, t + 0.1, 1.0), x[0], x[-1])  # outside: the nearest offset's value
    return make_interp_spline(x, np.eye(src), k=3)(target)


@torch.jit.script_if_tracing
def _check_traced_grid(x: torch.Tensor, patch_size: int, h: int, w: int) -> torch.Tensor:
    """In a traced model: refuse another grid than the one traced (the resampled table is
    baked in), with the fix, instead of a shape error inside attention."""
    if x.shape[-2] // patch_size != h or x.shape[-1] // patch_size != w:
        raise ValueError("this traced SSL4EO data2vec encoder was traced for a " + str(h) + "x" + str(w)
                         + " patch grid; its relative position table is resampled per grid when traced, "
                         "so trace or export it again at this input size (or run the eager model)")
    return x


class SSL4EOData2vecEncoder(GeoEncoder):
    """SSL4EO-S12 data2vec ViT (BEiT-style; see the module docstring) as a GeoEncoder.

    Args:
        embed_dim, depth, num_heads, mlp_ratio: the architecture.
        patch_size: the patch size to run at; a checkpoint kernel of another size is
            resampled on load (``patch_resample``).
        img_size: the image size of the shared relative position table (224: a 14 x 14 grid);
            other input sizes resample the table at run time.
        init_values: layer-scale initial value (0.1, the official fine-tuning's default; the
            pretraining ran with 1e-4; a checkpoint overwrites it).
        bands: names of the input bands in order; pretrained weights are picked from
            ``pretrained_bands`` by name.
        pretrained_bands: the band order of the checkpoint's patch embedding.
        drop_path_rate: stochastic depth for fine-tuning.
    """

    num_prefix_tokens = 1
    upstream_name = "SSL4EO-S12 data2vec beit_small_patch16_224"
    patch_kernel_key = "beit.patch_embed.proj.weight"

    def __init__(self, *, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 patch_size: int = 16, img_size: int = 224, init_values: float = 0.1,
                 bands: Sequence[str] = S2_L1C_BANDS, pretrained_bands: Sequence[str] = S2_L1C_BANDS,
                 drop_path_rate: float = 0.0, patch_resample: str = "pinv"):
        super().__init__()
        if isinstance(bands, str) or isinstance(pretrained_bands, str):
            raise ValueError("bands and pretrained_bands are sequences of band names, not a string")
        if img_size % patch_size:
            raise ValueError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if img_size // patch_size < 3:  # the table's cubic resampling needs 5 offsets per axis
            raise ValueError(f"img_size {img_size} gives a {img_size // patch_size}-patch table grid; the "
                             f"shared relative position table needs at least 3 patches per side")
        self.embed_dim, self.depth, self.patch_size, self.img_size = embed_dim, depth, patch_size, img_size
        self.bands = tuple(bands)
        self.pretrained_bands = tuple(pretrained_bands)
        self.patch_resample = patch_resample
        self.beit = Beit(
            img_size=img_size, patch_size=patch_size, in_chans=len(self.bands), num_classes=0,
            global_pool="", embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=True, init_values=init_values, use_abs_pos_emb=False, use_rel_pos_bias=False,
            use_shared_rel_pos_bias=True, use_fc_norm=False, drop_path_rate=drop_path_rate,
        )
        self.beit.patch_embed.strict_img_size = False  # any multiple of the patch size
        self.table_grid = tuple(self.beit.rel_pos_bias.window_size)
        self._grids: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._index: tuple | None = None

    # -- the shared relative position bias for any grid ---------------------------------
    def _grid_tensors(self, grid: tuple[int, int], device: torch.device, dtype: torch.dtype):
        """The two resampling matrices (small; cached per grid) and the ``(1+h*w)^2`` index
        (large: only the last grid's is kept, so multi-scale training does not pile them up)."""
        key = (grid, device, dtype)
        if key not in self._grids:
            (h0, w0), (h, w) = self.table_grid, grid
            my = torch.from_numpy(resample_rel_pos_axis(2 * h0 - 1, 2 * h - 1)).to(device, dtype)
            mx = torch.from_numpy(resample_rel_pos_axis(2 * w0 - 1, 2 * w - 1)).to(device, dtype)
            self._grids[key] = (my, mx)
        if self._index is None or self._index[0] != (grid, device):
            self._index = ((grid, device), gen_relative_position_index(grid).to(device))
        return (*self._grids[key], self._index[1])

    def relative_position_bias(self, grid: Sequence[int]) -> torch.Tensor:
        """The shared bias ``(heads, 1 + h*w, 1 + h*w)`` for a ``grid = (h, w)`` of patches."""
        grid = (int(grid[0]), int(grid[1]))
        rpb = self.beit.rel_pos_bias
        if grid == self.table_grid:
            return rpb()
        table = rpb.relative_position_bias_table
        (h0, w0), n = self.table_grid, grid[0] * grid[1] + 1
        my, mx, index = self._grid_tensors(grid, table.device, table.dtype)
        core = table[:-_EXTRA].reshape(2 * h0 - 1, 2 * w0 - 1, -1)
        core = torch.einsum("ay,bx,yxn->abn", my, mx, core).reshape(-1, table.shape[-1])
        resized = torch.cat([core, table[-_EXTRA:]], dim=0)
        return resized[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).contiguous()

    # -- GeoEncoder hooks --------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        b = self.beit
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        if torch.jit.is_tracing():
            x = _check_traced_grid(x, self.patch_size, int(grid[0]), int(grid[1]))
        x = b.patch_embed(x)  # (B, N, D)
        x = torch.cat([b.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return b.pos_drop(x), grid, self.relative_position_bias(grid)

    def _run_block(self, block: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return block(x, shared_rel_pos_bias=ctx)

    def get_blocks(self) -> Sequence[nn.Module]:
        return self.beit.blocks

    def final_norm_module(self) -> nn.Module:
        return self.beit.norm

    def no_weight_decay(self) -> set[str]:
        # the official fine-tuning exempts cls_token (and pos_embed, absent here); the shared
        # table is 2-D and decayed there (--disable_weight_decay_on_rel_pos_bias is off)
        return {"beit.cls_token"}

    def param_layer_ids(self) -> dict[str, int]:
        """As the base, except the shared table: the official layer decay gives it the last
        layer id (``get_num_layer_for_vit``: ``rel_pos_bias`` -> ``num_max_layer - 1``)."""
        ids = super().param_layer_ids()
        ids["beit.rel_pos_bias.relative_position_bias_table"] = self.depth + 1
        return ids

    # -- checkpoints -------------------------------------------------------------------
    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> FilteredStateDict:
        """The pretraining model's state dict (BEiT names), under any prefix."""
        sd = strip_to_anchor(state_dict, "patch_embed.proj.weight", top_level=_TOP_LEVEL)
        out = FilteredStateDict(ignored=sd.ignored, prefix=sd.prefix)
        per_block = [k for k in sd if k.startswith("blocks.") and k.endswith("attn.relative_position_bias_table")]
        if per_block or "pos_embed" in sd:
            what = "a relative position table in every block" if per_block else "an absolute position table"
            raise CheckpointError(
                f"the checkpoint has {what} ({(per_block or ['pos_embed'])[0]}): it is not the published "
                f"SSL4EO-S12 data2vec layout (one shared table, no absolute positions). A BEiT checkpoint "
                f"fine-tuned with use_rel_pos_bias or use_abs_pos_emb is another architecture")
        for k, v in sd.items():
            if k == "mask_token" or k.startswith("lm_head."):
                out.ignore(k, "a data2vec pretraining part (mask token, regression head), not the encoder")
            elif k.endswith("relative_position_index"):
                out.ignore(k, "the relative position index buffer (computed by the model)")
            elif k.startswith(("head.", "fc_norm.")):
                out.ignore(k, "a classification head, not the encoder")
            elif k == "patch_embed.proj.weight":
                out[f"beit.{k}"] = self._adapt_checkpoint_patch_embed(
                    v, "; pass pretrained_bands=[...] naming the checkpoint's bands in order")
            elif k == "rel_pos_bias.relative_position_bias_table":
                out[f"beit.{k}"] = self._check_table(v)
            else:
                out[f"beit.{k}"] = v
        for name, fill in (("weight", 1.0), ("bias", 0.0)):
            key = f"beit.norm.{name}"
            if key not in out:  # a backbone file saved without the pretraining model's final norm
                logger.info("%s: the checkpoint has no norm.%s; the final norm keeps its fresh value %g (the "
                            "official fine-tuning does not use it either: it pools and adds a new fc_norm)",
                            type(self).__name__, name, fill)
                out[key] = torch.full_like(self.beit.norm.weight, fill)
        return out

    def _check_table(self, table: torch.Tensor) -> torch.Tensor:
        own = self.beit.rel_pos_bias.relative_position_bias_table
        if table.ndim == 2 and table.shape == own.shape:
            return table
        n = table.shape[0] - _EXTRA if table.ndim == 2 else -1
        side = math.isqrt(max(n, 0))
        if n > 0 and side * side == n and side % 2 == 1 and table.shape[1] == own.shape[1]:
            grid = (side + 1) // 2
            raise CheckpointError(
                f"the checkpoint's shared relative position table is for a {grid}x{grid} grid "
                f"({grid * self.patch_size} px at patch {self.patch_size}) but the encoder was built with "
                f"img_size={self.img_size}; build it with img_size={grid * self.patch_size} (other input "
                f"sizes are resampled at run time)")
        raise CheckpointError(
            f"the checkpoint's rel_pos_bias.relative_position_bias_table {tuple(table.shape)} does not fit "
            f"the encoder's {tuple(own.shape)} (offsets x heads); is it a checkpoint of another variant?")


_GDRIVE_BACKBONE = "https://drive.google.com/file/d/1YecuYPAxl1NIzLmsmdbUROjCb5g0t80l/view"
#: the published backbone (the SSL4EO-S12 README's "backbone" link of the data2vec row)
DATA2VEC_PRETRAINED = PretrainedCfg(
    source=_GDRIVE_BACKBONE, license="CC-BY-4.0", stats=(SSL4EO_STATS,), input_size=224, patch_size=16,
    page="https://github.com/zhu-xlab/SSL4EO-S12",
    notes="data2vec on SSL4EO-S12 (Sentinel-2 L1C, 13 bands); shared on Google Drive only: download it "
          "by hand and pass weights=<path>",
    unpinned_reason="shared on Google Drive (no revisions, downloaded by hand) and no sha256 is published",
)

register_encoder("ssl4eo_s12_vits16_data2vec", SSL4EOData2vecEncoder, pretrained_cfg=DATA2VEC_PRETRAINED,
                 embed_dim=384, depth=12, num_heads=6, patch_size=16, img_size=224)

# tiny, random weights, for d2geo's tests only (timm's test_vit); hidden from list_encoders()
register_test_variant("ssl4eo_data2vec_test", like="ssl4eo_s12_vits16_data2vec", embed_dim=64, depth=4,
                      num_heads=4, img_size=64)
