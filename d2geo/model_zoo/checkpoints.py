"""``d2geo://`` and ``hf://`` checkpoint paths: see :mod:`d2geo.modeling.file_io`, where the
handlers live (importing ``d2geo.modeling`` registers them on detectron2's ``PathManager``)."""
from ..modeling.file_io import (  # noqa: F401
    DEFAULT_ZOO_URL,
    ChecksumError,
    D2GeoZooHandler,
    HFHubHandler,
    expected_digest,
    register_path_handlers,
    sha256_of,
    zoo_url,
)

__all__ = [
    "DEFAULT_ZOO_URL", "D2GeoZooHandler", "HFHubHandler", "ChecksumError", "sha256_of", "expected_digest",
    "zoo_url", "register_path_handlers",
]
