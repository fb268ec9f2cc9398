"""The cache of generated synthetic datasets: one folder per registered prefix and parameters.

The first :func:`ensure_synthetic_dataset` of a prefix writes the files into::

    $D2GEO_DATASETS/d2geo_synth/<prefix>-<digest>/    (D2GEO_DATASETS defaults to ./datasets)

where ``digest`` identifies the generation parameters and the generator version. The
tiles are written to a temporary folder next to it that is renamed into place only when
complete, so an interrupted run never leaves a partial dataset; a complete one is reused
as it is (deterministic by seed, so every machine gets the same tiles), an incomplete one
(files deleted by hand) is generated again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Any, Callable

from .generator import GENERATOR_VERSION, SyntheticGeoDataset, make_synthetic_dataset

logger = logging.getLogger(__name__)

__all__ = ["BUILTIN_PREFIX", "BUILTIN_PARAMS", "synthetic_cache_root", "synthetic_dataset_dir",
           "ensure_synthetic_dataset"]

#: the quickstart datasets: ``d2geo_synth_{det,seg}_{train,val}``
BUILTIN_PREFIX = "d2geo_synth"
BUILTIN_PARAMS = dict(num_train=192, num_val=48, size=96, num_frames=1, seed=0)

_MANIFEST = "manifest.json"
_STALE_TMP_SECONDS = 3600.0
# prefix -> generation parameters (keyword arguments of make_synthetic_dataset); filled by
# :func:`d2geo.data.synthetic.register.register_synthetic`
_SPECS: dict[str, dict[str, Any]] = {}


# -- the cache --------------------------------------------------------------------------------
def synthetic_cache_root() -> str:
    """``$D2GEO_DATASETS/d2geo_synth`` (``./datasets/d2geo_synth`` when the variable is unset),
    read at every call so that the variable may be set after import."""
    return os.path.join(os.environ.get("D2GEO_DATASETS") or "datasets", "d2geo_synth")


def _digest(params: dict) -> str:
    blob = json.dumps({"generator": GENERATOR_VERSION, **params}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _spec(prefix: str) -> dict:
    if prefix not in _SPECS:
        raise KeyError(f"no synthetic dataset is registered under the prefix {prefix!r} "
                       f"(registered: {sorted(_SPECS)}); call register_synthetic({prefix!r}, ...) first")
    return _SPECS[prefix]


def synthetic_dataset_dir(prefix: str = BUILTIN_PREFIX) -> str:
    """Where the dataset registered under ``prefix`` is (or will be) generated."""
    return os.path.join(synthetic_cache_root(), f"{prefix}-{_digest(_spec(prefix))}")


def _read_manifest(path: str, params: dict) -> SyntheticGeoDataset | None:
    """The dataset in ``path`` if it is complete and was generated with ``params``, else None."""
    try:
        with open(os.path.join(path, _MANIFEST), encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError):
        return None
    if manifest.get("generator") != GENERATOR_VERSION or manifest.get("params") != params:
        return None
    splits = {}
    for split, files in manifest["splits"].items():
        splits[split] = [[os.path.join(path, p) for p in f] if isinstance(f, list) else os.path.join(path, f)
                         for f in files]
    ds = SyntheticGeoDataset(root=path, splits=splits, num_frames=params.get("num_frames", 1))
    wanted = [os.path.join(path, p) for p in manifest["files"]]
    missing = [p for p in wanted if not os.path.isfile(p)]
    if missing:
        logger.warning("synthetic dataset %s is incomplete (%d of %d files missing, e.g. %s): generating it again",
                       path, len(missing), len(wanted), missing[0])
        return None
    return ds


def write_dataset_once(final: str, make: Callable[[str], dict]) -> dict:
    """The manifest of the generated dataset in ``final``, writing it first if needed:
    ``make(tmp)`` fills a temporary sibling folder and returns the manifest, written last; the
    folder then becomes ``final`` in one rename. A ``final`` without a manifest (an interrupted
    run) is replaced; when a concurrent writer finishes first, its dataset is kept."""
    manifest = os.path.join(final, _MANIFEST)
    if not os.path.isfile(manifest):
        parent = os.path.dirname(final)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(final)}.tmp-", dir=parent)
        os.chmod(tmp, 0o755)  # mkdtemp's folder is private; the dataset is not
        try:
            data = make(tmp)
            with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
                json.dump(data, f)
            if os.path.isdir(final):  # incomplete leftovers
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not os.path.isfile(manifest):  # not a concurrent writer that finished first
                    raise
        finally:
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
    with open(manifest, encoding="utf-8") as f:
        return json.load(f)


def _remove_stale_tmp_dirs(parent: str, name: str) -> None:
    """Temporary folders of generations that were killed (not merely interrupted) long ago."""
    now = time.time()
    for entry in os.listdir(parent):
        if entry.startswith(f".{name}.tmp-"):
            path = os.path.join(parent, entry)
            try:
                if now - os.path.getmtime(path) > _STALE_TMP_SECONDS:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                pass


def ensure_synthetic_dataset(prefix: str = BUILTIN_PREFIX) -> SyntheticGeoDataset:
    """The generated dataset of ``prefix``: from the cache, or written now (see the module docstring)."""
    params = _spec(prefix)
    final = synthetic_dataset_dir(prefix)
    ds = _read_manifest(final, params)
    if ds is not None:
        return ds
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    if os.path.exists(final):  # incomplete or of other parameters: move it aside, then delete it
        aside = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        os.rename(final, os.path.join(aside, "old"))
        shutil.rmtree(aside, ignore_errors=True)
    _remove_stale_tmp_dirs(parent, name)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    os.chmod(tmp, 0o755)  # mkdtemp's folder is private; the dataset is not
    try:
        logger.info("generating the synthetic dataset %r (%d train + %d val tiles of %d px) in %s",
                    prefix, params["num_train"], params["num_val"], params["size"], final)
        start = time.perf_counter()
        generated = make_synthetic_dataset(tmp, **params)
        rel = {split: [[os.path.relpath(p, tmp) for p in f] if isinstance(f, list) else os.path.relpath(f, tmp)
                       for f in files] for split, files in generated.splits.items()}
        files = sorted(os.path.relpath(os.path.join(d, f), tmp)
                       for d, _, names in os.walk(tmp) for f in names)
        manifest = {"generator": GENERATOR_VERSION, "params": params, "splits": rel, "files": files}
        with open(os.path.join(tmp, _MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f)
        try:
            os.rename(tmp, final)
        except OSError:
            # another process (e.g. a second training process) finished the same dataset first
            if _read_manifest(final, params) is None:
                raise
        logger.info("synthetic dataset %r written in %.1f s", prefix, time.perf_counter() - start)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    ds = _read_manifest(final, params)
    if ds is None:  # pragma: no cover - only if the files vanish right after the rename
        raise RuntimeError(f"the synthetic dataset in {final} disappeared while it was being opened")
    return ds


