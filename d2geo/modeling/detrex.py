"""detrex glue (optional): detrex's DINO detector with d2geo inputs.

Importing this module needs detrex installed from its repository with the repository
root importable, because DINO's model code lives in detrex's ``projects/dino`` (detrex's
own configs import it the same way). :func:`detrex_projects_root` finds that root for an
editable detrex install.
"""
from __future__ import annotations

import math
import os
import sys

import torch


def detrex_projects_root() -> str | None:
    """The detrex checkout holding ``projects/`` (editable installs), or None."""
    try:
        import detrex
    except ImportError:
        return None
    for pkg_dir in getattr(detrex, "__path__", []):
        for root in (os.path.dirname(os.path.abspath(pkg_dir)), os.path.abspath(pkg_dir)):
            if os.path.isdir(os.path.join(root, "projects", "dino")):
                return root
    return None


def _import_dino():
    root = detrex_projects_root()
    if root and root not in sys.path:
        sys.path.append(root)
    try:
        from projects.dino.modeling import DINO
    except ImportError as e:
        raise ImportError(
            "d2geo.modeling.detrex needs detrex installed from its repository "
            "(github.com/IDEA-Research/detrex, `pip install -e .` in the checkout) so that "
            f"its projects/dino is importable ({e})"
        ) from e
    return DINO


DINO = _import_dino()

from .meta_arch import GeoInputMixin  # noqa: E402

from ..encoders.base import EncoderInputError  # noqa: E402

__all__ = ["GeoDINO", "detrex_projects_root", "encoder_tokens", "smallest_tile"]


def encoder_tokens(height: int, width: int, strides) -> int:
    """Tokens DINO's encoder sees for a padded ``height x width`` batch: one per cell of
    every feature level (``ceil(size / stride)`` cells a side)."""
    return sum(math.ceil(height / s) * math.ceil(width / s) for s in strides)


def smallest_tile(num_queries: int, strides, multiple: int = 1) -> int:
    """The smallest square tile side (a multiple of ``multiple``) with at least ``num_queries`` tokens."""
    side = multiple
    while encoder_tokens(side, side, strides) < num_queries:
        side += multiple
    return side


class GeoDINO(GeoInputMixin, DINO):
    """detrex's DINO with d2geo inputs: ``(C, H, W)`` or ``(C, T, H, W)`` images with any
    number of bands, per-band statistics, and acquisition metadata for the backbone.

    DINO normalizes with a closure over three-band statistics; this class keeps
    ``pixel_mean`` / ``pixel_std`` as per-band buffers instead, which
    :class:`~d2geo.modeling.meta_arch.GeoInputMixin` uses.
    """

    def __init__(self, *, pixel_mean, pixel_std, **kwargs):
        super().__init__(pixel_mean=[0.0, 0.0, 0.0], pixel_std=[1.0, 1.0, 1.0], **kwargs)
        if len(pixel_mean) != len(pixel_std):
            raise ValueError(f"pixel_mean has {len(pixel_mean)} bands but pixel_std has {len(pixel_std)}")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if self.select_box_nums_for_evaluation > self.num_queries * self.num_classes:
            raise ValueError(
                f"select_box_nums_for_evaluation={self.select_box_nums_for_evaluation} exceeds the "
                f"{self.num_queries * self.num_classes} (num_queries x num_classes) scores DINO ranks at "
                f"inference; set model.select_box_nums_for_evaluation <= "
                f"{self.num_queries * self.num_classes}")

    def _level_strides(self) -> list[int]:
        shapes = self.backbone.output_shape()
        names = getattr(self.neck, "in_features", None) or list(shapes)
        return [shapes[n].stride for n in names if n in shapes]

    def preprocess_image(self, batched_inputs):
        images = super().preprocess_image(batched_inputs)
        H, W = images.tensor.shape[-2:]
        strides = self._level_strides()
        tokens = encoder_tokens(int(H), int(W), strides)
        if tokens < self.num_queries:
            side = smallest_tile(self.num_queries, strides, multiple=max(strides))
            raise EncoderInputError(
                f"a {H}x{W} batch gives DINO's encoder {tokens} tokens (levels of stride {strides}) but "
                f"it selects num_queries={self.num_queries} of them (detrex fails with 'selected index "
                f"k out of range'): use tiles of at least {side}x{side} px, or size the queries to the "
                f"tile: model.num_queries<={tokens} (and model.select_box_nums_for_evaluation <= "
                f"num_queries x num_classes)")
        return images
