"""``d2geo://`` and ``hf://`` checkpoint paths for detectron2's ``PathManager``.

Importing :mod:`d2geo.modeling` (or :mod:`d2geo.model_zoo`) registers both handlers, so
``DetectionCheckpointer``, ``train.init_checkpoint`` and every detectron2 tool read them.
``hf://`` paths are resolved by :mod:`d2geo.encoders.hub` (huggingface_hub's cache).

``d2geo://<relative path>`` names a file of the d2geo model zoo, e.g.
``d2geo://dinov2/dinov2_vitb14-1a2b3c4d.pth``. It resolves to

* ``$D2GEO_ZOO_MIRROR/<relative path>`` if the environment variable ``D2GEO_ZOO_MIRROR``
  names a local directory (an offline copy of the zoo; nothing is downloaded), or
* a download of ``$D2GEO_ZOO_URL/<relative path>`` (default :data:`DEFAULT_ZOO_URL`) into
  ``<iopath cache>/d2geo/<relative path>`` (the cache is ``$FVCORE_CACHE``, by default
  ``~/.torch/iopath_cache``), made with iopath's HTTP handler.

Zoo file names end in the first hex digits of the file's sha256
(``name-<hex>.pth``, as :mod:`tools/convert_checkpoint.py <convert_checkpoint>` writes
them). Downloads land in a private staging directory and only move to the cache once
their digest matches; a file that does not match is deleted and refused, so the cache
never holds a partial or corrupted file. Mirror files are checked the same way (once per
process).
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile

from iopath.common.file_io import HTTPURLHandler, PathHandler, PathManager as _IOPathManager
from iopath.common.file_io import file_lock, get_cache_dir

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ZOO_URL", "D2GeoZooHandler", "HFHubHandler", "ChecksumError", "sha256_of", "expected_digest",
    "zoo_url", "register_path_handlers",
]

#: where ``d2geo://`` files are downloaded from unless ``D2GEO_ZOO_URL`` says otherwise
DEFAULT_ZOO_URL = "https://huggingface.co/d2geo/model-zoo/resolve/main/"

_HASHED_NAME = re.compile(r"^.+-(?P<digest>[0-9a-f]{8,64})\.[A-Za-z0-9]+(?:\.[A-Za-z0-9]+)?$")


class ChecksumError(IOError):
    """A zoo file whose content does not match the sha256 digest in its name."""


def zoo_url() -> str:
    url = os.environ.get("D2GEO_ZOO_URL") or DEFAULT_ZOO_URL
    return url if url.endswith("/") else url + "/"


def sha256_of(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def expected_digest(name: str) -> str | None:
    """The sha256 prefix in a zoo file name (``stem-<hex>.ext``), or None."""
    m = _HASHED_NAME.match(os.path.basename(name))
    return m.group("digest") if m else None


def _verify(path: str, name: str) -> None:
    digest = expected_digest(name)
    if digest is None:
        logger.warning("%s has no sha256 suffix in its name (name-<hex>.pth): its content is "
                       "not verified", name)
        return
    actual = sha256_of(path)
    if not actual.startswith(digest):
        raise ChecksumError(
            f"{name}: the file's sha256 is {actual[:len(digest)]}..., but its name says "
            f"{digest}: the download is corrupted or truncated (or the zoo was changed). It was "
            f"not kept; try again, or check D2GEO_ZOO_URL / D2GEO_ZOO_MIRROR"
        )


class _ReadOnlyFileHandler(PathHandler):
    """A ``PathHandler`` for remote files read through a local copy: a subclass names its
    ``PREFIX`` and resolves a path to that copy in ``_get_local_path``; opening for writing
    is refused (with ``_READ_ONLY``, what the files are), and a path that cannot be resolved
    does not exist."""

    PREFIX: str
    _READ_ONLY: str

    def _get_supported_prefixes(self) -> list[str]:
        return [self.PREFIX]

    def _open(self, path: str, mode: str = "r", buffering: int = -1, **kwargs):
        if any(c in mode for c in "wax+"):
            raise ValueError(f"{self._READ_ONLY}; cannot open {path} with mode {mode!r}")
        self._check_kwargs(kwargs)
        return open(self._get_local_path(path), mode, buffering=buffering)

    def _exists(self, path: str, **kwargs) -> bool:
        try:
            return os.path.isfile(self._get_local_path(path, **kwargs))
        except (OSError, ValueError):
            return False

    def _isfile(self, path: str, **kwargs) -> bool:
        return self._exists(path, **kwargs)


class D2GeoZooHandler(_ReadOnlyFileHandler):
    """Resolves ``d2geo://`` paths (see the module docstring)."""

    PREFIX = "d2geo://"
    _READ_ONLY = "d2geo:// zoo files are read-only"

    def __init__(self) -> None:
        super().__init__()
        self._verified: dict[str, tuple[int, int]] = {}
        self._http = _IOPathManager()
        self._http.register_handler(HTTPURLHandler())

    @classmethod
    def relative_path(cls, path: str) -> str:
        rel = path[len(cls.PREFIX):]
        parts = rel.split("/")
        if (not rel or rel.startswith("/") or "\\" in rel or "?" in rel or "#" in rel
                or any(p in ("", ".", "..") for p in parts)):
            raise ValueError(
                f"{path!r} is not a valid zoo path: write d2geo://<dir>/<file>, e.g. "
                f"d2geo://dinov2/dinov2_vitb14-1a2b3c4d.pth"
            )
        return rel

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        self._check_kwargs(kwargs)
        rel = self.relative_path(path)
        mirror = os.environ.get("D2GEO_ZOO_MIRROR")
        if mirror:
            return self._from_mirror(mirror, rel)
        cache_root = os.path.join(get_cache_dir(), "d2geo")
        final = os.path.join(cache_root, *rel.split("/"))
        os.makedirs(os.path.dirname(final), exist_ok=True)
        with file_lock(final):
            if force or not os.path.isfile(final):
                self._download(zoo_url() + rel, final, rel)
        return final

    def _from_mirror(self, mirror: str, rel: str) -> str:
        local = os.path.join(mirror, *rel.split("/"))
        if not os.path.isfile(local):
            raise FileNotFoundError(
                f"d2geo://{rel} is not in the local zoo mirror D2GEO_ZOO_MIRROR={mirror} "
                f"(looked for {local}); copy the file there or unset D2GEO_ZOO_MIRROR to download it"
            )
        st = os.stat(local)
        stamp = (st.st_size, st.st_mtime_ns)
        if self._verified.get(local) != stamp:
            _verify(local, rel)
            self._verified[local] = stamp
        return local

    def _download(self, url: str, final: str, rel: str) -> None:
        staging = tempfile.mkdtemp(prefix=".download-", dir=os.path.dirname(final))
        try:
            logger.info("downloading d2geo://%s from %s", rel, url)
            tmp = self._http.get_local_path(url, force=True, cache_dir=staging)
            _verify(tmp, rel)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        logger.info("d2geo://%s cached in %s", rel, final)


class HFHubHandler(_ReadOnlyFileHandler):
    """Resolves ``hf://<org>/<repo>[@<revision>]/<file>`` with huggingface_hub.

    See :mod:`d2geo.encoders.hub`: the Hub's own cache and environment (``HF_ENDPOINT``,
    ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``, ``HF_TOKEN``), and the sha256 check (against a
    pretrained table's pin when the path is a published source, else the Hub's LFS sha256).
    """

    PREFIX = "hf://"
    _READ_ONLY = "hf:// files are read-only here"

    def _get_local_path(self, path: str, force: bool = False, **kwargs) -> str:
        from d2geo.encoders.hub import resolve_weights
        from d2geo.encoders.registry import pretrained_sha256

        self._check_kwargs(kwargs)
        return resolve_weights(path, sha256=pretrained_sha256(path))


def register_path_handlers(path_manager=None) -> None:
    """Register the ``d2geo://`` and ``hf://`` handlers on ``path_manager`` (default:
    detectron2's ``PathManager``). Idempotent."""
    if path_manager is None:
        from detectron2.utils.file_io import PathManager as path_manager
    for handler in (D2GeoZooHandler(), HFHubHandler()):
        prefix = handler._get_supported_prefixes()[0]
        if not isinstance(path_manager._path_handlers.get(prefix), type(handler)):
            path_manager.register_handler(handler, allow_override=True)
