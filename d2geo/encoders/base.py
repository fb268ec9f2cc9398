"""The encoder contract shared by every family, and the checks on its input.

An encoder is a plain ``nn.Module`` (no detectron2 here) that turns an image, or a
time series of images, into a list of patch-token feature maps, one per requested
block. Families implement a few small hooks and declare their structure (see
:class:`GeoEncoder`); the base does the rest: layer selection, input validation,
activation checkpointing, token-to-map reshaping, and the per-parameter layer ids that
layer-wise lr decay and freezing use.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
import torch.utils.checkpoint

from . import windowing
from .adapt import BAND_RECORD, adapt_patch_embed, decode_bands, encode_bands, map_kernel_bands, resize_patch
from .bands import BandError
from .checkpoint import CheckpointError
from .errors import EncoderInputError
from .metadata import Metadata, check_metadata
from .tracing import SizeCache, is_tracing  # noqa: F401  (re-exported)

logger = logging.getLogger(__name__)

__all__ = ["EncoderInputError", "GeoEncoder", "is_tracing"]


class GeoEncoder(nn.Module):
    """Base class of all d2geo encoders.

    Subclasses set ``embed_dim``, ``depth``, ``patch_size``, ``num_prefix_tokens`` and
    ``bands`` (the band names the patch embedding expects, in order) and implement the
    forward hooks:

    * ``_embed(x, metadata) -> (tokens, grid, ctx)``: tokens ``(B, P + N, D)`` with the
      ``P`` prefix tokens first, ``grid`` the token grid (``(h, w)`` or ``(t, h, w)``)
      and ``ctx`` whatever the blocks need (rotary embeddings, ...);
    * ``_run_block(block, x, ctx)`` (the default calls ``block(x)``);

    and declare their structure, timm-style, so that nothing above the encoder has to
    know its parameter names:

    * :meth:`get_blocks`: the transformer blocks, in order;
    * :meth:`final_norm_module`: the norm applied after the last block;
    * :meth:`no_weight_decay`: names of the parameters that take no weight decay besides
      biases, norms and other 1-D parameters (position tables, prefix tokens, ...);
    * :meth:`checkpoint_filter_fn`: upstream checkpoint keys -> this module's keys.

    From these the base derives :meth:`param_layer_ids` (embeddings 0, block ``i`` ``i + 1``,
    the final norm ``depth + 1``) and :meth:`group_matcher` (the same, in the form timm's
    ``param_groups_layer_decay`` takes).
    """

    embed_dim: int
    depth: int
    patch_size: int
    num_prefix_tokens: int
    bands: tuple[str, ...]
    #: spatial dims of the input after batch and channel: 2 for images, 3 for (T, H, W)
    input_ndim: int = 2
    #: whether :meth:`check_input` checks the band count against ``bands`` (Clay checks it
    #: against the wavelengths instead)
    checks_band_count: bool = True
    grad_checkpointing: bool = False
    #: window attention (see :mod:`.windowing`): window in tokens (0 = off) and global blocks
    window_size: int | tuple[int, int] = 0
    global_blocks: tuple[int, ...] = ()
    #: hierarchical encoders (Swin) declare the stride and channels of each block's output
    #: (their blocks are stages; ``forward_features`` returns ``(B, out_channels[i], H / s_i,
    #: W / s_i)`` maps); plain ViTs leave them ``None``: every block at ``patch_size``, ``embed_dim``
    out_strides: tuple[int, ...] | None = None
    out_channels: tuple[int, ...] | None = None
    #: the state-dict key of the patch kernel whose input-channel axis holds ``bands`` (None:
    #: no per-band kernel, e.g. kernels generated from wavelengths); see :meth:`band_kernels`
    patch_kernel_key: str | None = None
    #: set while a d2geo-written checkpoint is filtered: its kernels are in the bands it
    #: records, not in ``pretrained_bands`` (see :func:`~.checkpoint.load_encoder_weights`)
    _kernels_as_saved: bool = False

    def _apply(self, fn, *args, **kwargs):
        # moving or casting the module: drop the per-size tensors of the old device/dtype
        for value in vars(self).values():
            if isinstance(value, SizeCache):
                value.clear()
        return super()._apply(fn, *args, **kwargs)

    @property
    def feature_dim(self) -> int:
        """Channels of the maps :meth:`forward_features` returns (plain ViTs): ``embed_dim``,
        unless a family merges several token grids into wider maps (TerraMind's ``"concat"``)."""
        return self.embed_dim

    @property
    def size_divisibility(self) -> int:
        """Input sides must be multiples of this: the patch size, or a hierarchical encoder's
        coarsest stride."""
        return max(self.out_strides) if self.out_strides else self.patch_size

    # -- structure (every family declares it) ---------------------------------------------
    def get_blocks(self) -> Sequence[nn.Module]:
        """The transformer blocks, in the order they run."""
        raise NotImplementedError

    def final_norm_module(self) -> nn.Module:
        """The norm after the last block (applied to every tap with ``norm=True``)."""
        raise NotImplementedError

    def no_weight_decay(self) -> set[str]:
        """Names (as in ``named_parameters()``) of parameters that must not be weight-decayed
        although they are not 1-D: position tables, prefix tokens, generator tokens."""
        raise NotImplementedError

    def checkpoint_filter_fn(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Convert an upstream (or d2geo) state dict to this module's keys and shapes."""
        raise NotImplementedError

    def param_layer_ids(self) -> dict[str, int]:
        """Layer id of every parameter: 0 for the embeddings (everything before the blocks),
        ``i + 1`` for block ``i``, ``depth + 1`` for the final norm."""
        blocks = list(self.get_blocks())
        layer_of = {id(p): i + 1 for i, block in enumerate(blocks) for p in block.parameters()}
        layer_of.update({id(p): len(blocks) + 1 for p in self.final_norm_module().parameters()})
        return {name: layer_of.get(id(p), 0) for name, p in self.named_parameters()}

    def group_matcher(self, coarse: bool = False) -> Callable[[str], int]:
        """timm's layer grouping: a function from parameter name to layer id (see
        :meth:`param_layer_ids`); ``coarse`` is accepted for timm and changes nothing."""
        ids = self.param_layer_ids()
        after = len(self.get_blocks()) + 1
        return lambda name: ids.get(name, after)

    # -- forward hooks ---------------------------------------------------------------------
    def _embed(self, x: torch.Tensor, metadata: Mapping[str, Any] | None):
        raise NotImplementedError

    def _run_block(self, block: nn.Module, x: torch.Tensor, ctx: Any) -> torch.Tensor:
        return block(x)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_norm_module()(x)

    # -- band names of saved patch kernels -----------------------------------------------------
    def band_kernels(self, bands: Sequence[str]) -> dict[str, tuple[list[str], str | None]]:
        """The per-band patch kernels of an encoder of this kind built with ``bands``: state-dict
        key -> (the band names along the kernel's input-channel axis, the sensor their ids
        belong to). One kernel of all ``bands`` at :attr:`patch_kernel_key` unless a family
        splits its input (CROMA, TerraMind: one kernel per sensor or modality)."""
        if self.patch_kernel_key is None:
            return {}
        return {self.patch_kernel_key: (list(bands), getattr(self, "sensor", None))}

    def map_band_kernels(self, state_dict: dict, saved: Sequence[str], prefix: str = "") -> None:
        """In place: the patch kernels of ``state_dict`` (this module's keys under ``prefix``),
        saved by an encoder built with the bands ``saved``, mapped by band name to this
        encoder's ``bands`` (reordered; bands the saved kernel lacks start at zero)."""
        saved = tuple(saved)
        if [b.lower() for b in saved] == [b.lower() for b in self.bands]:
            return
        ours = self.band_kernels(self.bands)
        for key, (src, sensor) in self.band_kernels(saved).items():
            if prefix + key in state_dict and key in ours:
                state_dict[prefix + key] = map_kernel_bands(state_dict[prefix + key], src, ours[key][0],
                                                            sensor=sensor)
        logger.info("%s: patch kernels saved for bands %s mapped by name to %s", type(self).__name__,
                    list(saved), list(self.bands))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.band_kernels(self.bands):  # checkpoints d2geo writes name their kernels' bands
            destination[prefix + BAND_RECORD] = encode_bands(self.bands)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # a d2geo-written state dict names its kernels' bands: map them by name (a whole-model
        # load through detectron2 or load_state_dict); one without names loads as saved
        record = state_dict.pop(prefix + BAND_RECORD, None)
        if record is not None and self.band_kernels(self.bands):
            try:
                self.map_band_kernels(state_dict, decode_bands(record), prefix)
            except (BandError, ValueError) as e:
                error_msgs.append(f"{prefix or type(self).__name__}: {e}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # -- helpers for families ----------------------------------------------------------------
    def _adapt_checkpoint_patch_embed(self, kernel: torch.Tensor, fix: str) -> torch.Tensor:
        """A checkpoint's patch kernel for this encoder's ``bands`` (selected by name from
        ``pretrained_bands``) and ``patch_size`` (resampled with ``patch_resample``); a kernel
        made for another band count is a :class:`CheckpointError` ending in ``fix``. A kernel
        of a d2geo-written checkpoint (:attr:`_kernels_as_saved`) keeps its bands: they are
        mapped by the names the checkpoint records afterwards."""
        if self._kernels_as_saved:
            return resize_patch(kernel, self.patch_size, getattr(self, "patch_resample", "pinv"))
        try:
            return adapt_patch_embed(kernel, src_bands=self.pretrained_bands, dst_bands=self.bands,
                                     patch_size=self.patch_size, method=self.patch_resample,
                                     src_sensor=getattr(self, "pretrained_sensor", None),
                                     dst_sensor=getattr(self, "sensor", None))
        except BandError:
            raise  # names the requested and the pretrained bands already
        except ValueError as e:
            raise CheckpointError(f"{e}{fix}") from e

    # -- public API ------------------------------------------------------------------
    @property
    def in_chans(self) -> int:
        return len(self.bands)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in the backward pass to save memory."""
        self.grad_checkpointing = enable

    def set_window_attention(self, window_size: int | Sequence[int] | None,
                             global_blocks: Sequence[int] = ()) -> None:
        """ViTDet-style window attention in all blocks but ``global_blocks`` (see :mod:`.windowing`)."""
        windowing.set_window_attention(self, window_size, global_blocks)

    def resolve_layers(self, layers: int | Sequence[int]) -> list[int]:
        """Turn block indices (negative ones count from the end) into positive ones, in order."""
        if isinstance(layers, int):
            layers = [layers]
        if len(layers) == 0:
            raise EncoderInputError(
                f"layers={list(layers)!r} asks for no feature map; give at least one block index "
                f"(0..{self.depth - 1}, or -1 for the last block)"
            )
        out = []
        for i in layers:
            j = i + self.depth if i < 0 else i
            if not 0 <= j < self.depth:
                raise EncoderInputError(
                    f"layer index {i} is out of range for an encoder with {self.depth} blocks; "
                    f"use 0..{self.depth - 1} or -1..-{self.depth}"
                )
            out.append(j)
        return out

    def forward_features(
        self,
        x: torch.Tensor,
        *,
        layers: int | Sequence[int] = -1,
        norm: bool = True,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[torch.Tensor]:
        """Patch-token feature maps of the requested blocks, in the order requested.

        Returns ``(B, D, h, w)`` maps for image encoders and ``(B, D, t, h, w)`` for
        temporal ones (``B`` may be 0: empty maps). Prefix tokens (cls, registers) are
        dropped. With ``norm=True`` the encoder's final norm is applied to every returned
        layer; with ``norm=False`` the raw block outputs are returned. ``x`` is cast to the
        weights' dtype; ``metadata`` (schema of :mod:`.metadata`) is validated here, once.
        """
        wanted = self.resolve_layers(layers)
        x = self.cast_input(self.check_input(x))
        metadata = self.check_metadata(metadata, x)
        if x.shape[0] == 0:  # an empty batch: empty maps of the right shape, from every family
            grid = self.token_grid(x)
            return [x.new_zeros((0, self.feature_dim, *grid)) for _ in wanted]
        tokens, grid, ctx = self._embed(x, metadata)
        last = max(wanted)
        taken: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.get_blocks()):
            run = windowing.block_runner(self, i, grid)
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens = torch.utils.checkpoint.checkpoint(
                    run, block, tokens, ctx, use_reentrant=False
                )
            else:
                tokens = run(block, tokens, ctx)
            if i in wanted:
                taken[i] = tokens
            if i == last:
                break
        return [self._to_map(taken[i], grid, norm) for i in wanted]

    def forward(self, x: torch.Tensor, metadata: Mapping[str, Any] | None = None) -> torch.Tensor:
        """The normed feature map of the last block."""
        return self.forward_features(x, layers=-1, norm=True, metadata=metadata)[0]

    # -- helpers ---------------------------------------------------------------------
    def _to_map(self, tokens: torch.Tensor, grid: Sequence[int], norm: bool) -> torch.Tensor:
        if norm:
            tokens = self._final_norm(tokens)
        patches = tokens[:, self.num_prefix_tokens :]
        B, _, D = patches.shape
        fmap = patches.reshape(B, *grid, D)
        # channels first with explicit non-negative dims: movedim(-1, 1) becomes a transpose
        # with a negative axis in ONNX, which onnxruntime rejects
        dims = (0, len(grid) + 1) + tuple(range(1, len(grid) + 1))
        return fmap.permute(dims).contiguous()

    def token_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """The token grid of the checked input ``x``: ``(H/p, W/p)``, with ``T/tubelet`` first
        for temporal encoders."""
        p = self.patch_size
        hw = (x.shape[-2] // p, x.shape[-1] // p)
        if self.input_ndim == 3:
            return (x.shape[2] // getattr(self, "tubelet_size", 1), *hw)
        return hw

    def cast_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the dtype of the encoder's weights (float16, bfloat16 and integer images
        such as uint16 DNs are cast, as the detectron2 meta-architectures do)."""
        weight = next((p for p in self.parameters() if p.is_floating_point()), None)
        dtype = weight.dtype if weight is not None else torch.float32
        return x if x.dtype == dtype else x.to(dtype)

    def check_metadata(self, metadata: Mapping[str, Any] | None, x: torch.Tensor) -> Metadata:
        """Validate ``metadata`` for the checked input ``x`` (once: a :class:`Metadata` that
        the meta-architecture validated is only matched against the batch)."""
        frames = x.shape[2] if self.input_ndim == 3 else None
        return check_metadata(metadata, batch_size=x.shape[0], num_frames=frames,
                              num_bands=x.shape[1], device=x.device)

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate the band count and the spatial size of ``x``."""
        if not torch.is_tensor(x):
            raise EncoderInputError(f"expected a torch.Tensor, got {type(x).__name__}")
        expected_ndim = 2 + self.input_ndim
        if x.ndim != expected_ndim:
            hint = ("; the encoder is single-frame: run a time series frame by frame, or use a "
                    "temporal encoder" if self.input_ndim == 2 and x.ndim == 5 else "")
            raise EncoderInputError(
                f"{type(self).__name__} takes a {expected_ndim}-D input "
                f"{'(B, C, T, H, W)' if self.input_ndim == 3 else '(B, C, H, W)'}, "
                f"got shape {tuple(x.shape)}{hint}"
            )
        if self.checks_band_count and x.shape[1] != self.in_chans:
            raise EncoderInputError(
                f"input has {x.shape[1]} bands but the encoder expects {self.in_chans} "
                f"({', '.join(self.bands)}); reorder or select the input bands, or build the "
                f"encoder with bands=[...] naming the bands you have"
            )
        H, W = x.shape[-2:]
        p = self.patch_size
        if H % p or W % p or H < p or W < p:
            raise EncoderInputError(
                f"input size {H}x{W} is not a positive multiple of the patch size {p}; "
                f"pad or resize it to a multiple of {p} (the detectron2 backbone pads for you)"
            )
        s = self.size_divisibility
        if self.out_strides and (H % s or W % s):  # hierarchical: every stage halves the map
            raise EncoderInputError(
                f"input size {H}x{W} is not a multiple of {s}, the coarsest stride of "
                f"{type(self).__name__}'s stages; pad it to a multiple of {s} (the detectron2 backbone "
                f"pads for you)")
        return x


def time_to_channels(fmap: torch.Tensor) -> torch.Tensor:
    """Fold the time axis of a ``(B, D, t, h, w)`` map into channels: ``(B, t*D, h, w)``.

    Channel ``i*D + d`` is channel ``d`` of frame ``i``, the layout terratorch's
    ``prepare_features_for_image_model`` hands to its image decoders.
    """
    if fmap.ndim != 5:
        raise EncoderInputError(f"expected a (B, D, t, h, w) map, got shape {tuple(fmap.shape)}")
    B, D, t, h, w = fmap.shape
    return fmap.transpose(1, 2).reshape(B, t * D, h, w)
