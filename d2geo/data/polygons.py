"""Moved to :mod:`d2geo.inference.polygons`; these names stay here for a release."""
from d2geo.inference.polygons import (  # noqa: F401
    PolygonRequestError, polygonize_class_map, require_shapely, resolve_classes,
)

__all__ = ["polygonize_class_map", "resolve_classes", "require_shapely", "PolygonRequestError"]
