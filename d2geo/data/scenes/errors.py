"""The error of scene registration (a :class:`~d2geo.data.geotiff.GeoTiffError`, so a ``ValueError``)."""
from __future__ import annotations

from ..geotiff import GeoTiffError

__all__ = ["SceneError"]


class SceneError(GeoTiffError):
    """Scenes, labels, windows or a split that cannot make a dataset; the message names the
    input and the fix. Raised before anything is registered or written."""
