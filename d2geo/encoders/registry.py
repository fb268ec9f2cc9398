"""Named encoder variants and their published weights.

``build_encoder(name)``, ``list_encoders()``; each family file registers its variants with
a :class:`PretrainedCfg` (like timm's pretrained cfgs): where the published weights are,
their revision and sha256 where the publisher states them, the license, the bands and
input statistics they were trained with, their native size and patch. Configs,
``d2geo.data.stats`` and the README read these tables instead of repeating the numbers.
"""
from __future__ import annotations

import difflib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch.nn as nn

__all__ = [
    "register_encoder", "build_encoder", "list_encoders", "get_encoder_config", "InputStats",
    "PretrainedCfg", "get_pretrained_cfg", "list_pretrained", "pretrained_sha256", "register_alias", "resolve_name",
    "register_test_variant", "is_test_variant", "encoder_family", "TEST_SUFFIX",
]

#: units of :class:`InputStats`
STATS_UNITS = ("0-255", "dn", "reflectance", "linear", "dB", "m", "degrees")


@dataclass(frozen=True)
class InputStats:
    """Per-band input statistics the weights were trained with.

    ``name``: what the statistics are of (Clay's platform names, ``"hls"``, ``"rgb"``);
    ``sensor``: the key of ``d2geo.encoders.SENSOR_BANDS`` their band names belong to
    (``None`` for plain RGB). ``units``: ``"0-255"`` (8-bit RGB), ``"dn"`` (digital numbers as stored, e.g. surface
    reflectance x 10 000), ``"reflectance"`` (0..1), ``"linear"`` (SAR backscatter power), ``"dB"`` (SAR backscatter
    in decibels), ``"m"`` (elevation in metres), ``"degrees"`` (terrain slope).
    """

    name: str
    sensor: str | None
    bands: tuple
    mean: tuple
    std: tuple
    units: str

    def __post_init__(self):
        if not (len(self.bands) == len(self.mean) == len(self.std)):
            raise ValueError(f"{self.name}: {len(self.bands)} bands but {len(self.mean)} means and "
                             f"{len(self.std)} stds")
        if self.units not in STATS_UNITS:
            raise ValueError(f"units {self.units!r} is not one of {STATS_UNITS}")


@dataclass(frozen=True)
class PretrainedCfg:
    """Where a variant's published weights are, and what they were trained on.

    Args:
        source: ``hf://<org>/<repo>[@<revision>]/<file>`` or an ``https://`` URL; ``None``
            when no weights are published (``notes`` says why). A URL on a host that only a
            browser can download from (Google Drive, see ``hub.MANUAL_DOWNLOAD_HOSTS``) is
            listed as published, and ``pretrained=True`` says how to download it by hand.
        sha256: the file's sha256 where the publisher states one (checked after download);
            ``None``: not published.
        license: the weights' license (SPDX id or the publisher's name for it).
        stats: input statistics by sensor; the first entry is the default (its bands are
            the pretrained bands, in order).
        input_size: the image size the weights were pretrained at (pixels).
        patch_size: the pretrained patch size.
        num_frames: frames per sample in pretraining (temporal models).
        page: the publisher's page for the weights.
        notes: anything a user must know (e.g. why there is no source).
        pinned_by: the public source(s) the revision and sha256 were taken from.
        unpinned_reason: why the entry points at a moving target (an ``hf://`` source with
            no commit hash, a URL with no sha256): required for such entries (a test checks).
    """

    source: str | None
    license: str
    stats: tuple = ()
    sha256: str | None = None
    input_size: int | None = None
    patch_size: int | None = None
    num_frames: int | None = None
    page: str = ""
    notes: str = ""
    pinned_by: str = ""
    unpinned_reason: str = ""

    def __post_init__(self):
        if self.sha256 is not None and (len(self.sha256) != 64 or self.sha256.strip("0123456789abcdef")):
            raise ValueError(f"sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    @property
    def default_stats(self) -> InputStats | None:
        return self.stats[0] if self.stats else None

    @property
    def bands(self) -> tuple:
        return self.default_stats.bands if self.stats else ()

    @property
    def mean(self) -> tuple:
        return self.default_stats.mean if self.stats else ()

    @property
    def std(self) -> tuple:
        return self.default_stats.std if self.stats else ()

    def stats_for(self, name: str) -> InputStats:
        for s in self.stats:
            if s.name == name:
                return s
        raise KeyError(f"no input statistics named {name!r}; these weights have {[s.name for s in self.stats]}")

    @property
    def pinned(self) -> bool:
        """Whether what the source names cannot move: an ``hf://`` source at a commit hash, a
        URL with a sha256 (a URL has no revisions; the sha256 turns a changed file into an error)."""
        if self.source is None:
            return True
        if self.source.startswith("hf://"):
            rev = self.revision
            return rev is not None and len(rev) == 40 and not rev.strip("0123456789abcdef")
        return bool(self.sha256)

    @property
    def revision(self) -> str | None:
        if self.source and self.source.startswith("hf://"):
            from .hub import parse_hf_uri

            return parse_hf_uri(self.source).revision
        return None


@dataclass(frozen=True)
class _Entry:
    builder: Callable[..., nn.Module]
    config: Mapping[str, Any] = field(default_factory=dict)
    pretrained: PretrainedCfg | None = None
    #: a tiny variant for d2geo's tests (:func:`register_test_variant`), not a published model
    test_only: bool = False


logger = logging.getLogger(__name__)

_REGISTRY: dict[str, _Entry] = {}
#: old spellings of variant names -> current names (still resolved, logged as deprecated once)
_ALIASES: dict[str, str] = {}
_ALIASES_WARNED: set[str] = set()


def register_encoder(name: str, builder: Callable[..., nn.Module], *,
                     pretrained_cfg: PretrainedCfg | None = None, **config: Any) -> None:
    """Register ``name`` as ``builder(**config)``; overrides given at build time win.

    ``pretrained_cfg`` says where the variant's published weights are (``None``: the
    variant has no entry in the pretrained table).
    """
    if name in _REGISTRY:
        raise KeyError(f"encoder {name!r} is registered twice")
    if name.endswith(TEST_SUFFIX):
        raise KeyError(f"encoder names ending in {TEST_SUFFIX!r} are kept for test variants "
                       f"(register_test_variant): {name!r}")
    _REGISTRY[name] = _Entry(builder, dict(config), pretrained_cfg)


#: the name ending of the tiny test variants, one per family (``dinov2_test``: timm's ``test_vit``)
TEST_SUFFIX = "_test"
TEST_LICENSE = "none (test variant: random weights, nothing published)"


def register_test_variant(name: str, *, like: str, **arch: Any) -> None:
    """Register ``name`` (``<family>_test``) as the variant ``like`` shrunk to ``arch`` (e.g.
    ``embed_dim=64, depth=4, num_heads=4``), as timm registers ``test_vit``: the family's own
    code and structure at a size the tests build in milliseconds. It has no weights: its table
    entry has no source (nothing to pin), the input statistics of ``like`` (so configs and the
    units check work) and notes saying it is for tests. ``list_encoders()`` and
    ``--list-encoders`` leave test variants out unless asked (``tests=True``)."""
    if not name.endswith(TEST_SUFFIX):
        raise KeyError(f"a test variant's name ends in {TEST_SUFFIX!r}: {name!r}")
    if name in _REGISTRY:
        raise KeyError(f"encoder {name!r} is registered twice")
    base = _REGISTRY[like]
    real = base.pretrained
    cfg = PretrainedCfg(
        source=None, license=TEST_LICENSE, stats=real.stats if real else (),
        input_size=arch.get("img_size", real.input_size if real else None),
        patch_size=real.patch_size if real else None, num_frames=real.num_frames if real else None,
        notes=(f"TEST VARIANT, for d2geo's tests only: {like} shrunk to "
               f"{', '.join(f'{k}={v}' for k, v in arch.items())}, random weights; no weights are or will be "
               f"published for it. Use a real variant (list_encoders()) for any work"))
    _REGISTRY[name] = _Entry(base.builder, {**base.config, **arch}, cfg, test_only=True)


def encoder_family(name: str) -> str:
    """The family of the variant ``name``: the name of the module that defines it (``dinov2``,
    ``ssl4eo_data2vec``); its test variant is ``f"{encoder_family(name)}_test"``."""
    return _lookup(name).builder.__module__.rsplit(".", 1)[-1]


def is_test_variant(name: str) -> bool:
    """Whether ``name`` is a tiny test variant (:func:`register_test_variant`), not a real model."""
    return _lookup(name).test_only


def register_alias(old: str, new: str) -> None:
    """Keep the old name ``old`` of the variant ``new`` working (logged as deprecated once)."""
    if old in _REGISTRY or old in _ALIASES:
        raise KeyError(f"encoder name {old!r} is taken")
    if new not in _REGISTRY:
        raise KeyError(f"cannot alias {old!r} to {new!r}: no such encoder")
    _ALIASES[old] = new


def resolve_name(name: str) -> str:
    """The registered name of ``name`` (an old alias is mapped to its current name)."""
    if name in _ALIASES:
        new = _ALIASES[name]
        if name not in _ALIASES_WARNED:
            _ALIASES_WARNED.add(name)
            logger.warning("encoder name %r is deprecated: it is now %r (the old name still works)", name, new)
        return new
    return name


def list_encoders(pattern: str | None = None, *, tests: bool = False) -> list[str]:
    """Sorted names of the registered encoders, optionally filtered by an fnmatch pattern.

    ``tests``: include the tiny test variants (``<family>_test``, random weights, for tests only)."""
    import fnmatch

    names = sorted(n for n, e in _REGISTRY.items() if tests or not e.test_only)
    return [n for n in names if fnmatch.fnmatch(n, pattern)] if pattern else names


def get_encoder_config(name: str) -> dict[str, Any]:
    return dict(_lookup(name).config)


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The pretrained table entry of ``name`` (source, sha256, license, bands, statistics)."""
    cfg = _lookup(name).pretrained
    if cfg is None:
        raise KeyError(f"encoder {name!r} has no entry in its family's pretrained table")
    return cfg


def list_pretrained(pattern: str | None = None) -> list[str]:
    """Names of the variants whose weights are published (``source`` is not None)."""
    return [n for n in list_encoders(pattern) if _REGISTRY[n].pretrained and _REGISTRY[n].pretrained.source]


def pretrained_sha256(source: str) -> str | None:
    """The sha256 pinned for ``source`` by any pretrained table (None if it is not a known source)."""
    for entry in _REGISTRY.values():
        if entry.pretrained is not None and entry.pretrained.source == source and entry.pretrained.sha256:
            return entry.pretrained.sha256
    return None


def _published_weights(name: str, entry: _Entry) -> str:
    """Local path of ``name``'s published weights (downloaded and verified)."""
    from .checkpoint import CheckpointError
    from .hub import ManualDownloadError, manual_download_hint, needs_manual_download, resolve_weights

    cfg = entry.pretrained
    if cfg is None or cfg.source is None:
        why = f" ({cfg.notes})" if cfg is not None and cfg.notes else ""
        raise CheckpointError(
            f"pretrained=True: {name} has no published weights{why}. Pass weights=<path or hf://...> "
            f"to load a checkpoint you have, or pretrained=False to start from random weights. "
            f"Variants with published weights: {', '.join(list_pretrained())}"
        )
    if needs_manual_download(cfg.source):
        raise ManualDownloadError(
            f"pretrained=True: {name}'s published weights are shared at {cfg.source}, which d2geo cannot "
            f"download (a browser is needed): {manual_download_hint(cfg.source)}, e.g. "
            f"build_encoder({name!r}, pretrained=True, weights='/path/to/the/file.pth')")
    return resolve_weights(cfg.source, sha256=cfg.sha256)


def _lookup(name: str) -> _Entry:
    try:
        return _REGISTRY[resolve_name(name)]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise KeyError(
            f"unknown encoder {name!r}.{hint} list_encoders() gives all {len(list_encoders())} names."
        ) from None


def build_encoder(name: str, *, weights: str | os.PathLike | Mapping | None = None,
                  pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build the encoder ``name``, optionally loading weights in an upstream format.

    Args:
        weights: a local path, an ``hf://<org>/<repo>[@<revision>]/<file>`` path, an
            ``https://`` URL (see :mod:`d2geo.encoders.hub`) or an already-read mapping.
            Given together with ``pretrained=True`` it replaces the published source (as
            timm's ``pretrained_cfg_overlay=dict(file=...)`` does), e.g. to load a copy of
            the file you keep yourself.
        pretrained: load the variant's published weights (its pretrained table entry),
            downloaded once, checked against the pinned sha256, then read from the cache.
        overrides: replace entries of the variant's configuration (``patch_size``,
            ``img_size``, ``bands``, ``num_frames``, ``tubelet_size``, or the
            architecture itself for small test models).
    """
    from .checkpoint import load_encoder_weights
    from .hub import is_remote, resolve_weights

    from .licenses import record_weights_provenance

    name = resolve_name(name)
    entry = _lookup(name)
    given, published = weights, None
    if pretrained and weights is None:
        weights = _published_weights(name, entry)  # fetched before the (slow) build
        published = entry.pretrained.source
    elif is_remote(weights):
        if entry.pretrained is not None and weights == entry.pretrained.source:
            published = weights
        weights = resolve_weights(weights, sha256=pretrained_sha256(weights))
    elif pretrained:
        logger.info("%s: loading weights=%s instead of the published weights", name, weights)
    model = entry.builder(**{**entry.config, **overrides})
    if weights is not None:
        load_encoder_weights(model, weights)
        record_weights_provenance(model, name, given if published is None else weights, published,
                                  cfg=entry.pretrained)
    return model
