"""A d2geo encoder as a detectron2 :class:`~detectron2.modeling.Backbone`.

:class:`GeoBackbone` taps one or more transformer blocks of a
:class:`~d2geo.encoders.GeoEncoder` and returns them as feature maps.

Plain ViTs give single-stride maps (stride = patch size): feed them to
:class:`SimpleFeaturePyramid` (one tap, ViTDet style) or
:class:`~d2geo.modeling.pyramid.MultiLayerPyramid` (four taps) to get the ``p2..p6`` maps
detectron2's FPN heads expect. Hierarchical encoders (Satlas Swin-V2) declare a stride and
a channel count per stage (``encoder.out_strides`` / ``out_channels``): their taps are
already a pyramid and go to detectron2's own ``FPN`` (``in_features=["res2", ..., "res5"]``)
with no adapter in between.

Output names
    A ViT tap is named ``f"{out_feature_prefix}{i}"`` with ``i`` the non-negative block
    index, e.g. ``layers=(-1,)`` on a 12-block encoder gives ``"layer11"``. A hierarchical
    encoder's stage taps are named the detectron2 way, ``res<log2 stride>`` (``res2`` ..
    ``res5`` for strides 4 .. 32). Taps are returned in increasing block order. The
    pyramids find the names themselves, so configs rarely need to spell them out.

Acquisition metadata
    Metadata (timestamps, location, ground sample distance, band wavelengths; see
    :mod:`d2geo.encoders.metadata`) is per batch, but detectron2 calls
    ``backbone(images.tensor)`` with the image tensor only. The meta-architectures in
    :mod:`d2geo.modeling.meta_arch` therefore hand it over with :meth:`GeoBackbone.set_metadata`
    before every forward (``None`` when the batch has none); the backbone keeps it until it
    is replaced, and checks that its batch size matches the images it is used with.
"""
from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn as nn
from detectron2.layers import ShapeSpec
from detectron2.modeling.backbone import Backbone

from ..encoders import build_encoder
from ..encoders.base import EncoderInputError, GeoEncoder
from ..encoders.metadata import Metadata
from .temporal import TEMPORAL_FOLDS, TemporalAttentionPool, fold_time, resolve_frames

logger = logging.getLogger(__name__)

__all__ = ["GeoBackbone", "find_geo_backbones", "fold_time", "TEMPORAL_FOLDS"]


def find_geo_backbones(module: nn.Module) -> list["GeoBackbone"]:
    """Every :class:`GeoBackbone` inside ``module`` (itself included), outermost first."""
    return [m for m in module.modules() if isinstance(m, GeoBackbone)]


class GeoBackbone(Backbone):
    """Feature maps of selected encoder blocks, at stride ``patch_size``.

    Args:
        encoder: a registered encoder name (see ``d2geo.encoders.list_encoders()``) or a
            :class:`~d2geo.encoders.GeoEncoder` instance.
        weights: checkpoint to load when ``encoder`` is a name (any upstream format the
            family reads): a local path, ``hf://<org>/<repo>[@<revision>]/<file>`` or an
            ``https://`` URL. With ``pretrained=True`` it replaces the published source.
        pretrained: load the variant's published weights from its pretrained table
            (downloaded once, sha256-checked, cached; see ``d2geo.encoders.hub``).
        layers: block indices to tap; negative ones count from the end.
        norm: apply the encoder's final norm to every tap.
        temporal_fold: how temporal encoders' ``(B, D, t, h, w)`` maps become 2-D:
            ``"concat"`` (channels ``D * t``, time-major), ``"mean"``, ``"max"``, ``"diff"``
            (last minus first time step) or ``"attention"`` (learned L-TAE-style pooling, one
            :class:`~d2geo.modeling.temporal.TemporalAttentionPool` per tap), all ``D``
            channels; see :mod:`d2geo.modeling.temporal`.
        temporal_frames: fold only these time steps (indices after tubelet folding, negative
            ones from the end, in the order given), e.g. ``[0, -1]``; None keeps all.
        temporal_heads: heads of the ``"attention"`` fold.
        freeze: ``"none"``, ``"all"``, or an int ``k``: the embedding (patch, position,
            prefix-token and metadata embeddings) and the first ``k`` blocks are frozen
            (``requires_grad=False``, and kept in eval mode so dropout / drop-path are off).
        drop_path_rate: stochastic depth passed to the encoder builder (name only).
        grad_checkpointing: recompute block activations in the backward pass.
        window_size: window attention (ViTDet style, no new parameters) in every block
            but ``global_blocks``; 0 keeps global attention everywhere.
        global_blocks: blocks that keep global attention when ``window_size`` is set.
        out_feature_prefix: output names are ``f"{prefix}{block_index}"``.
        peft: parameter-efficient fine-tuning with Hugging Face ``peft`` (``pip install
            'd2geo[peft]'``): a peft config (``peft.LoraConfig(r=8)``) or a dict
            ``dict(method="lora", r=8, lora_alpha=16, target_modules=["qkv", "proj"])``.
            Adapters are injected into the encoder in place; only they and (with
            ``peft_train_norms``) the encoder's norms train. Needs ``freeze="none"``. See
            :mod:`d2geo.modeling.peft_adapters`; :meth:`merge_peft` folds them in for export.
        peft_train_norms: keep the encoder's norm layers trainable under ``peft``.
        encoder_kwargs: further overrides for ``build_encoder`` (``bands``,
            ``patch_size``, ``num_frames``, or tiny architectures for tests).
    """

    def __init__(
        self,
        encoder: str | nn.Module,
        *,
        weights: Any = None,
        pretrained: bool = False,
        layers: int | Sequence[int] = (-1,),
        norm: bool = True,
        temporal_fold: str = "concat",
        temporal_frames: Sequence[int] | None = None,
        temporal_heads: int = 4,
        freeze: str | int = "none",
        drop_path_rate: float | None = None,
        grad_checkpointing: bool = False,
        window_size: int = 0,
        global_blocks: Sequence[int] = (),
        out_feature_prefix: str = "layer",
        peft: Any = None,
        peft_train_norms: bool = True,
        encoder_kwargs: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        encoder_kwargs = dict(encoder_kwargs or {})
        if isinstance(encoder, str):
            if drop_path_rate is not None:
                encoder_kwargs["drop_path_rate"] = drop_path_rate
            encoder = build_encoder(encoder, weights=weights, pretrained=pretrained, **encoder_kwargs)
        elif isinstance(encoder, nn.Module):
            given = [k for k, v in (("weights", weights), ("drop_path_rate", drop_path_rate)) if v is not None]
            given += ["pretrained"] if pretrained else []
            if given or encoder_kwargs:
                raise ValueError(
                    f"GeoBackbone got an encoder instance together with {given + sorted(encoder_kwargs)}; "
                    "those only apply when the encoder is given by name: build the encoder with "
                    "them instead (d2geo.encoders.build_encoder)"
                )
        else:
            raise TypeError(f"encoder must be an encoder name or an nn.Module, got {type(encoder).__name__}")
        if not isinstance(encoder, GeoEncoder):
            raise TypeError(
                f"{type(encoder).__name__} is not a d2geo GeoEncoder; wrap it in a GeoEncoder subclass "
                "(see d2geo/encoders/base.py)"
            )
        self.encoder = encoder
        if grad_checkpointing:
            encoder.set_grad_checkpointing(True)
        if window_size:
            encoder.set_window_attention(window_size, global_blocks=tuple(global_blocks))

        taps = encoder.resolve_layers(layers)
        if len(set(taps)) != len(taps):
            raise ValueError(f"layers={tuple(layers) if not isinstance(layers, int) else layers} "
                             f"names the same block twice ({taps})")
        self.layers = sorted(taps)
        self.norm = bool(norm)
        if self.layers[-1] < encoder.depth - 1:
            logger.warning(
                "GeoBackbone taps blocks %s of %d: blocks %d..%d never run and get no gradient "
                "(freeze or drop them, or use DistributedDataParallel(find_unused_parameters=True))",
                self.layers, encoder.depth, self.layers[-1] + 1, encoder.depth - 1)

        self.temporal = getattr(encoder, "input_ndim", 2) == 3
        if temporal_fold not in TEMPORAL_FOLDS:
            raise ValueError(f"temporal_fold={temporal_fold!r} is not one of {TEMPORAL_FOLDS}")
        self.temporal_fold = temporal_fold
        channels = getattr(encoder, "feature_dim", encoder.embed_dim)  # TerraMind's "concat": D x modalities
        self.num_time_tokens = 1
        if self.temporal:
            frames, tubelet = getattr(encoder, "num_frames", None), getattr(encoder, "tubelet_size", 1)
            if frames is None:
                raise ValueError(f"{type(encoder).__name__} is temporal but has no num_frames attribute")
            if frames % tubelet:
                raise ValueError(f"num_frames={frames} is not a multiple of tubelet_size={tubelet}")
            self.num_time_tokens = frames // tubelet
            self.temporal_frames = resolve_frames(temporal_frames, self.num_time_tokens)
            kept = self.num_time_tokens if self.temporal_frames is None else len(self.temporal_frames)
            if temporal_fold == "concat":
                channels *= kept
            if temporal_fold == "diff" and kept < 2:
                raise ValueError(
                    f"temporal_fold='diff' (last minus first time step) needs two time steps but the "
                    f"backbone keeps {kept}; use an encoder with num_frames >= 2 (num_frames / "
                    "tubelet_size time steps) and temporal_frames naming at least two"
                )
        elif temporal_frames is not None:
            raise ValueError(f"temporal_frames={temporal_frames} given but {type(encoder).__name__} is not "
                             "temporal (it returns 2-D maps); drop temporal_frames or use a temporal encoder")
        else:
            self.temporal_frames = None

        self.patch_size = int(encoder.patch_size)
        if self.temporal and temporal_fold == "attention":
            self.temporal_pools = nn.ModuleList(
                TemporalAttentionPool(encoder.embed_dim, num_heads=temporal_heads) for _ in self.layers)
        else:
            self.temporal_pools = None
        self._size_divisibility = int(encoder.size_divisibility)
        if encoder.out_strides is not None:  # hierarchical: a stride and width per stage
            strides = [int(encoder.out_strides[i]) for i in self.layers]
            if any(s & (s - 1) for s in strides):
                raise ValueError(f"{type(encoder).__name__} declares strides {strides}; stage outputs "
                                 "are named res<log2 stride> and need power-of-two strides")
            self._out_features = [f"res{int(math.log2(s))}" for s in strides]
            self._out_feature_channels = {n: int(encoder.out_channels[i])
                                          for n, i in zip(self._out_features, self.layers)}
            self._out_feature_strides = dict(zip(self._out_features, strides))
        else:
            self._out_features = [f"{out_feature_prefix}{i}" for i in self.layers]
            self._out_feature_channels = {n: channels for n in self._out_features}
            self._out_feature_strides = {n: self.patch_size for n in self._out_features}

        self.freeze = self._parse_freeze(freeze)
        self.peft_adapted: list[str] = []
        if peft is not None:
            if self.freeze != "none":
                raise ValueError(
                    f"GeoBackbone got peft=... together with freeze={freeze!r}; peft already freezes "
                    "every original encoder weight (only adapters and norms train): leave freeze='none'"
                )
            from .peft_adapters import apply_peft

            self.peft_adapted = apply_peft(encoder, peft, train_norms=peft_train_norms)
        self._apply_freeze()
        self._metadata: Mapping[str, Any] | None = None

    # -- detectron2 Backbone interface ----------------------------------------------------
    @property
    def size_divisibility(self) -> int:
        """The patch size, or a hierarchical encoder's coarsest stride."""
        return self._size_divisibility

    @property
    def padding_constraints(self) -> dict[str, int]:
        return {"size_divisibility": self._size_divisibility}

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {
            n: ShapeSpec(channels=self._out_feature_channels[n], stride=self._out_feature_strides[n])
            for n in self._out_features
        }

    @property
    def out_features(self) -> list[str]:
        return list(self._out_features)

    # -- metadata -------------------------------------------------------------------------
    def set_metadata(self, metadata: Mapping[str, Any] | None) -> None:
        """Metadata for the next forward passes (schema of ``d2geo.encoders.metadata``)."""
        if metadata is not None and not isinstance(metadata, Metadata):  # validated ones stay as they are
            metadata = dict(metadata)
        self._metadata = metadata

    @property
    def metadata(self) -> Mapping[str, Any] | None:
        return self._metadata

    @contextlib.contextmanager
    def use_metadata(self, metadata: Mapping[str, Any] | None) -> Iterator[None]:
        """``with backbone.use_metadata(md): backbone(x)``; restores the previous metadata."""
        previous = self._metadata
        self.set_metadata(metadata)
        try:
            yield
        finally:
            self._metadata = previous

    def _check_metadata_batch(self, batch_size: int) -> None:
        md = self._metadata
        if not md:
            return
        for key in ("timestamps", "latlon", "gsd"):
            value = md.get(key)
            if value is None:
                continue
            value = torch.as_tensor(value)
            if value.ndim == 0:  # one gsd for the whole batch
                continue
            if value.shape[0] != batch_size:
                raise EncoderInputError(
                    f"the backbone holds metadata {key!r} for {value.shape[0]} images but got a batch "
                    f"of {batch_size}; call set_metadata() with this batch's metadata (or None) before "
                    "every forward (the d2geo meta-architectures do this for you)"
                )

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self._check_input(x)
        self._check_metadata_batch(x.shape[0])
        maps = self.encoder.forward_features(x, layers=self.layers, norm=self.norm, metadata=self._metadata)
        out = {}
        for i, (name, fmap) in enumerate(zip(self._out_features, maps)):
            if fmap.ndim == 5:
                if (self.temporal_fold == "concat" or self.temporal_frames is not None) \
                        and fmap.shape[2] != self.num_time_tokens:
                    raise EncoderInputError(
                        f"the encoder returned {fmap.shape[2]} time steps but the backbone was built "
                        f"for {self.num_time_tokens} (num_frames / tubelet_size), so its 'concat' "
                        "channel count or its temporal_frames would be wrong; build the encoder "
                        "with num_frames matching the data, or use temporal_fold='mean'"
                    )
                pool = None if self.temporal_pools is None else self.temporal_pools[i]
                fmap = fold_time(fmap, self.temporal_fold, self.temporal_frames, pool)
            out[name] = fmap
        return out

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        want = 2 + self.encoder.input_ndim
        if self.temporal and x.ndim == 4:
            if self.num_time_tokens * getattr(self.encoder, "tubelet_size", 1) != 1:
                raise EncoderInputError(
                    f"{type(self.encoder).__name__} takes (B, C, T, H, W) time series with "
                    f"T={self.encoder.num_frames} but got a single-frame batch {tuple(x.shape)}; "
                    "give dataset images as (C, T, H, W) tensors"
                )
            x = x.unsqueeze(2)
        if x.ndim != want:
            layout = "(B, C, T, H, W)" if want == 5 else "(B, C, H, W)"
            hint = ("; this encoder is not temporal: select one frame or use a temporal encoder "
                    "(e.g. prithvi_eo_*)" if x.ndim == 5 else "")
            raise EncoderInputError(f"the backbone takes {layout} input, got shape {tuple(x.shape)}{hint}")
        H, W = x.shape[-2:]
        p = self._size_divisibility
        if H % p or W % p:
            what = "patch size" if p == self.patch_size else "encoder's coarsest stride"
            raise EncoderInputError(
                f"input size {H}x{W} is not a multiple of the {what} {p}. detectron2 meta-"
                "architectures pad to backbone.padding_constraints; when calling the backbone "
                "yourself, pad with detectron2.structures.ImageList.from_tensors(images, "
                "padding_constraints=backbone.padding_constraints)"
            )
        return x

    def merge_peft(self) -> int:
        """Fold the peft adapters into the encoder weights (plain layers, upstream keys) for
        export or a model-zoo file; returns the number of merged layers."""
        if not self.peft_adapted:
            return 0
        from .peft_adapters import merge_peft

        n = merge_peft(self.encoder)
        self.peft_adapted = []
        return n

    # -- freezing -------------------------------------------------------------------------
    def _parse_freeze(self, freeze: str | int) -> str | int:
        if isinstance(freeze, bool):
            raise ValueError("freeze must be 'none', 'all' or a number of blocks, not a bool")
        if isinstance(freeze, str):
            f = freeze.strip().lower()
            if f in ("none", "all"):
                return f
            if f.isdigit():
                freeze = int(f)
            else:
                raise ValueError(f"freeze={freeze!r}: use 'none', 'all' or a number of blocks 0..{self.encoder.depth}")
        if isinstance(freeze, int):
            if not 0 <= freeze <= self.encoder.depth:
                raise ValueError(
                    f"freeze={freeze} is out of range for an encoder with {self.encoder.depth} blocks; "
                    f"use 0..{self.encoder.depth} (0 freezes only the embeddings), 'none' or 'all'"
                )
            return freeze
        raise ValueError(f"freeze={freeze!r}: use 'none', 'all' or a number of blocks")

    def _trainable_modules(self) -> list[nn.Module]:
        """Encoder parts that stay trainable: the unfrozen blocks and the final norm."""
        if self.freeze == "none":
            return [self.encoder]
        if self.freeze == "all":
            return []
        return [*list(self.encoder.get_blocks())[self.freeze:], self.encoder.final_norm_module()]

    def frozen_modules(self) -> list[nn.Module]:
        """Encoder submodules kept in eval mode (all but the trainable blocks, the final norm
        and the containers holding them); empty for ``freeze='none'``."""
        if self.freeze == "none":
            return []
        keep = self._trainable_modules()
        inside = {id(m) for k in keep for m in k.modules()}
        keep_ids = {id(k) for k in keep}
        ancestors = set()  # containers of kept modules (the encoder, the block list, ...)
        for name, mod in self.encoder.named_modules():
            if id(mod) in keep_ids:
                parts = name.split(".") if name else []
                ancestors.update(".".join(parts[:j]) for j in range(len(parts)))
        return [m for n, m in self.encoder.named_modules() if id(m) not in inside and n not in ancestors]

    def _apply_freeze(self) -> None:
        if self.freeze == "none":
            return
        kept = {id(p) for k in self._trainable_modules() for p in k.parameters()}
        for p in self.encoder.parameters():
            if id(p) not in kept:
                p.requires_grad_(False)
        self.train(self.training)
        n_frozen = sum(p.numel() for p in self.encoder.parameters() if not p.requires_grad)
        logger.info("GeoBackbone: froze %s of %s encoder parameters (freeze=%r)", n_frozen,
                    sum(p.numel() for p in self.encoder.parameters()), self.freeze)

    def train(self, mode: bool = True) -> "GeoBackbone":
        super().train(mode)
        for mod in self.frozen_modules():
            mod.training = False
        return self
