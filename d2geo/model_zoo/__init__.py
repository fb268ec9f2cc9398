"""The d2geo model zoo: packaged LazyConfigs and ``d2geo://`` checkpoints.

>>> from d2geo import model_zoo
>>> cfg = model_zoo.get_config("dinov2/mask_rcnn_vitb14.py")
>>> model_zoo.list_configs()[:3]

Configs are the files under the repository's ``configs/`` directory; wheels carry a copy
in ``d2geo/model_zoo/configs`` (copied by ``setup.py`` at build time), and a source
checkout reads them in place. Importing this package (or ``d2geo.modeling``) registers the
``d2geo://`` and ``hf://`` handlers on detectron2's ``PathManager`` (see
:mod:`d2geo.modeling.file_io`), so ``train.init_checkpoint="d2geo://..."`` or
``"hf://<org>/<repo>/<file>"`` works in configs and detectron2 tools.
"""
from __future__ import annotations

import difflib
import logging
import os

from .checkpoints import (
    DEFAULT_ZOO_URL,
    ChecksumError,
    D2GeoZooHandler,
    HFHubHandler,
    register_path_handlers,
    zoo_url,
)

__all__ = [
    "get_config", "get_config_file", "list_configs", "config_root", "register_zoo_handler",
    "D2GeoZooHandler", "HFHubHandler", "ChecksumError", "DEFAULT_ZOO_URL", "zoo_url",
    "register_path_handlers", "find_backbone_nodes", "skip_encoder_weights", "RENAMED_CONFIGS",
]

logger = logging.getLogger(__name__)

#: old config paths -> their names now: each family's folder and fragment is named by its key
#: (the encoder-name prefix, the module name), e.g. ``dinov2/``. The old names still resolve
#: (with a deprecation warning in the log); they go in a later release.
RENAMED_CONFIGS = {
    "dino_v2/": "dinov2/",
    "dino_v3/": "dinov3/",
    "common/encoders/dino_v2.py": "common/encoders/dinov2.py",
    "common/encoders/dino_v3.py": "common/encoders/dinov3.py",
}

_HERE = os.path.dirname(os.path.abspath(__file__))
_PACKAGED = os.path.join(_HERE, "configs")
_SOURCE = os.path.join(os.path.dirname(os.path.dirname(_HERE)), "configs")


def config_root() -> str:
    """The directory the zoo's configs are read from."""
    for root in (_PACKAGED, _SOURCE):
        if os.path.isdir(os.path.join(root, "common")):
            return root
    raise RuntimeError(
        "d2geo's configs are not installed: reinstall d2geo (pip install .), whose build "
        f"copies configs/ into the package, or run from a source checkout (looked in {_PACKAGED} "
        f"and {_SOURCE})"
    )


def list_configs() -> list[str]:
    """Relative paths of the model configs (``family/name.py``; ``common/`` pieces excluded)."""
    root = config_root()
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("common", "__pycache__"))
        for f in sorted(filenames):
            if f.endswith(".py") and f != "__init__.py":
                out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(out)


def _renamed(config_path: str) -> str:
    for old, new in RENAMED_CONFIGS.items():
        if config_path.startswith(old):
            now = new + config_path[len(old):]
            logger.warning("d2geo model zoo: %r is now %r (the family's folder is named by its key, as its "
                           "encoders and module); the old name stops working in a later release", config_path, now)
            return now
    return config_path


def get_config_file(config_path: str) -> str:
    """The absolute path of a zoo config, e.g. ``"dinov2/mask_rcnn_vitb14.py"`` (the old
    folder names of :data:`RENAMED_CONFIGS` still resolve, with a deprecation warning)."""
    config_path = _renamed(config_path)
    root = config_root()
    path = os.path.join(root, *config_path.split("/"))
    if not os.path.isfile(path):
        close = difflib.get_close_matches(config_path, list_configs(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise RuntimeError(f"{config_path!r} is not a config of the d2geo model zoo.{hint} "
                           f"list_configs() gives them all.")
    return path


def get_config(config_path: str):
    """Load a zoo config as a detectron2 LazyConfig (``omegaconf.DictConfig``)."""
    from detectron2.config import LazyConfig

    if not config_path.endswith(".py"):
        raise ValueError(f"d2geo's zoo configs are LazyConfig .py files; got {config_path!r}")
    return LazyConfig.load(get_config_file(config_path))


def find_backbone_nodes(node, path=()) -> list:
    """``(config path, node)`` of every ``GeoBackbone`` LazyCall in a config tree."""
    from omegaconf import DictConfig, ListConfig

    from d2geo.modeling import GeoBackbone

    found = []
    if isinstance(node, DictConfig):
        target = node.get("_target_", None)
        if target is GeoBackbone or (isinstance(target, str) and target.endswith("GeoBackbone")):
            found.append((".".join(path), node))
        for key in node.keys():
            found += find_backbone_nodes(node[key], path + (str(key),))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += find_backbone_nodes(item, path + (str(i),))
    return found


def skip_encoder_weights(model_cfg) -> list[str]:
    """Build the config's encoders without loading (or downloading) their weights.

    For a model whose every weight comes from a whole-model checkpoint afterwards
    (evaluation, prediction): sets ``weights=None`` and ``pretrained=False`` on every
    ``GeoBackbone``; returns the config paths changed.
    """
    changed = []
    for path, node in find_backbone_nodes(model_cfg, ("model",)):
        if node.get("weights", None) is not None or node.get("pretrained", False):
            node.weights = None
            node.pretrained = False
            changed.append(path)
    return changed


def register_zoo_handler() -> None:
    """Register the ``d2geo://`` and ``hf://`` handlers on detectron2's PathManager (idempotent)."""
    register_path_handlers()


register_zoo_handler()
