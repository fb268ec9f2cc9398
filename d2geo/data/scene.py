"""Kept only for :mod:`d2geo.data.scenes.scene_eval`, which still imports these two names from
here: they live in :mod:`d2geo.inference.windows` (scene inference is :mod:`d2geo.inference`).
Delete this module once ``scene_eval`` imports ``d2geo.inference.windows``, which it should not
either (data must not import inference): the window grid and blend weights belong below both."""
from d2geo.inference.windows import blend_weights, tile_windows  # noqa: F401

__all__ = ["tile_windows", "blend_weights"]
