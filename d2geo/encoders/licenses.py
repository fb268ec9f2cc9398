"""The licenses of the weights an encoder started from, carried with the model.

``build_encoder`` records on the encoder it returns where its weights came from
(:data:`PROVENANCE_ATTR`: the variant, the source, its sha256 and license), and logs a
warning when those weights are licensed for non-commercial use only (Scale-MAE's
CC-BY-NC-4.0) or restricted to named uses (:data:`USE_RESTRICTED`: the OlmoEarth Artifact
License). :func:`weights_licenses` collects the records of every encoder inside a
model (a detectron2 model holds its encoder in a ``GeoBackbone``), e.g. to write them into
a training checkpoint (``GeoCheckpointer`` does, under ``"weights_licenses"``).
"""
from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # no torch at run time: the torch-free --model runs log the licenses too
    import torch.nn as nn


logger = logging.getLogger(__name__)

__all__ = ["PROVENANCE_ATTR", "is_non_commercial", "use_restrictions", "weights_licenses", "record_weights_provenance",
           "log_weights_licenses"]

#: the attribute of an encoder (or of a model restored from a training checkpoint) holding
#: the provenance of its starting weights
PROVENANCE_ATTR = "d2geo_weights_provenance"

_NC = re.compile(r"(^|[-_ ])NC([-_ ]|$)|non[- ]?commercial", re.I)
_WARNED: set[str] = set()


def is_non_commercial(license: str) -> bool:
    """Whether ``license`` (an SPDX id or a publisher's name for it) allows non-commercial use
    only, e.g. ``CC-BY-NC-4.0``."""
    return bool(_NC.search(license or ""))


#: licenses that allow commercial use but forbid named uses: license -> what they forbid
USE_RESTRICTED = {
    "OlmoEarth Artifact License": (
        "no military, defense, intelligence, surveillance or policing use and no extractive use (oil, gas, "
        "mining, deforestation); derivatives must carry these restrictions and cite Ai2 (its section 2-3)"),
}


def use_restrictions(license: str) -> str | None:
    """What ``license`` forbids besides non-commercial terms (``None``: nothing d2geo knows of)."""
    return USE_RESTRICTED.get(license or "")


def record_weights_provenance(encoder: nn.Module, name: str, weights: Any, pretrained_source: str | None,
                              cfg: Any = None) -> None:
    """Record on ``encoder`` where its weights came from and warn (once per variant) when they
    are for non-commercial use only. ``pretrained_source``: the table source the weights are
    (``None`` for a file of the user's own, whose license d2geo cannot know); ``cfg``: the
    variant's pretrained table entry (its ``sha256`` and ``license``), needed with a source."""
    record: dict[str, Any]
    if pretrained_source is not None:
        if cfg is None:
            raise ValueError(f"{name}: a published source needs its pretrained table entry (cfg=)")
        record = dict(encoder=name, source=pretrained_source, sha256=cfg.sha256, license=cfg.license)
        from .hub_moving import resolved_identity  # here: this module stays importable without torch

        moving = resolved_identity(weights) if cfg.sha256 is None else None
        if moving is not None:  # an unpinned entry: record exactly which file it was this time
            record.update(sha256=moving["sha256"], commit=moving["commit"])
        if is_non_commercial(cfg.license) and name not in _WARNED:
            _WARNED.add(name)
            logger.warning(
                "%s: the published weights are licensed %s: non-commercial use only. A model trained from "
                "them inherits that restriction (see d2geo.encoders.describe(%r))", name, cfg.license, name)
        elif use_restrictions(cfg.license) and name not in _WARNED:
            _WARNED.add(name)
            logger.warning(
                "%s: the published weights are licensed under the %s, which restricts use: %s. A model trained "
                "from them inherits that restriction (see d2geo.encoders.describe(%r))", name, cfg.license,
                use_restrictions(cfg.license), name)
    else:
        where = os.fspath(weights) if isinstance(weights, (str, os.PathLike)) else type(weights).__name__
        record = dict(encoder=name, source=where, sha256=None,
                      license="unknown (weights given by the user, not a published entry)")
    setattr(encoder, PROVENANCE_ATTR, record)


def weights_licenses(model: nn.Module) -> list[dict[str, Any]]:
    """The provenance records (``encoder``, ``source``, ``sha256``, ``license``) of the encoder
    weights ``model`` started from: one per encoder that loaded weights, plus those restored
    from a training checkpoint. Empty when every encoder started from random weights."""
    out: list[dict[str, Any]] = []
    for module in model.modules():
        found = getattr(module, PROVENANCE_ATTR, None)
        records = found if isinstance(found, list) else [found] if isinstance(found, Mapping) else []
        for record in records:
            if dict(record) not in out:
                out.append(dict(record))
    return out


def log_weights_licenses(records: Iterable[Mapping[str, Any]], where: str = "the model") -> list[str]:
    """Log the licenses of the encoder weights ``where`` started from (``records``: those of
    :func:`weights_licenses`, or a model file's ``weights`` field), one line each, saying when they
    allow non-commercial use only or restrict use; one line when there are none. The prediction
    tools call it once per run. Returns the logged lines."""
    lines = []
    for r in records or ():
        lic = str(r.get("license") or "unknown")
        line = f"encoder weights of {where}: {r.get('encoder', '?')} from {r.get('source', '?')}, license {lic}"
        if is_non_commercial(lic):
            line += ": non-commercial use only, and so is a model trained from them"
            logger.warning(line)
        elif use_restrictions(lic):
            line += f": restricts use ({use_restrictions(lic)})"
            logger.warning(line)
        else:
            logger.info(line)
        lines.append(line)
    if not lines:
        lines.append(f"encoder weights of {where}: no published weights recorded (trained from random weights or "
                     f"from a file of the user's own), so no license is known")
        logger.info(lines[0])
    return lines
